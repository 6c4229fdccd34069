//! Receiving UDP datagrams in batches with `recvmmsg(2)`: one system call for up to a batch of
//! the packets a server sent in a burst (a video frame), so that a thousand UDP readers in one
//! process cost the tool a fraction of what one `recv` per packet would.

use std::io;
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Reused receive buffers.
pub struct Batch {
    bufs: Vec<u8>,
    lens: Vec<usize>,
    size: usize,
}

/// At most this many datagrams per call (the header array lives on the stack).
const MAX: usize = 64;

impl Batch {
    /// Room for `n` (at most 64) datagrams of up to `size` bytes.
    pub fn new(n: usize, size: usize) -> Batch {
        let n = n.clamp(1, MAX);
        Batch {
            bufs: vec![0; n * size],
            lens: vec![0; n],
            size,
        }
    }

    /// Waits for datagrams and takes what is queued, up to the batch; returns how many.
    pub async fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        loop {
            sock.readable().await?;
            match sock.try_io(Interest::READABLE, || self.recvmmsg(sock.as_raw_fd())) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// Datagram `i` of the last `recv`.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = i * self.size;
        &self.bufs[start..start + self.lens[i]]
    }

    fn recvmmsg(&mut self, fd: i32) -> io::Result<usize> {
        let n = self.lens.len();
        // SAFETY: zeroed iovec and mmsghdr are valid (null pointers, zero lengths).
        let mut iov: [libc::iovec; MAX] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
        for (i, chunk) in self.bufs.chunks_mut(self.size).take(n).enumerate() {
            iov[i].iov_base = chunk.as_mut_ptr().cast();
            iov[i].iov_len = chunk.len();
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs[..n]` point at `n` iovecs over live, disjoint parts of `self.bufs`,
        // all of which outlive the call; the kernel writes at most `iov_len` bytes to each.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for (len, h) in self.lens.iter_mut().zip(&hdrs).take(got) {
            *len = h.msg_len as usize;
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_arrives_in_one_batch_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        for i in 0..10u8 {
            tx.send_to(&[i; 100], to).await.unwrap();
        }
        let mut b = Batch::new(64, 2048);
        let mut seen = Vec::new();
        while seen.len() < 10 {
            let n = b.recv(&rx).await.unwrap();
            for i in 0..n {
                assert_eq!(b.get(i).len(), 100);
                seen.push(b.get(i)[0]);
            }
        }
        assert_eq!(seen, (0..10).collect::<Vec<u8>>());
    }
}
