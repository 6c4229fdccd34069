//! Sending a reader's datagrams for one batch in as few system calls and as few trips through
//! the network stack as the kernel allows: `sendmmsg(2)` for the batch, and within it UDP
//! segmentation offload (`UDP_SEGMENT`, Linux 4.18+) for runs of equal-size packets to one
//! destination, which is what a video frame is (full-size RTP packets and a shorter last one):
//! the stack then routes and builds one large datagram and splits it at the device, or the NIC
//! does. No crate wraps these for tokio sockets; this is the product's hot path.

use socket2::SockAddr;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Messages per call and iovecs per call (the arrays live on the stack).
const MAX_MSGS: usize = 64;
const MAX_IOV: usize = 256;
/// At most this many segments, and bytes, in one offloaded datagram (the kernel allows 64 KiB
/// less headers; UDP_MAX_SEGMENTS is 64 on older kernels).
const MAX_SEGMENTS: usize = 64;
const MAX_GSO_BYTES: usize = 60_000;

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;

/// Cleared the first time the kernel refuses an offloaded datagram (no UDP_SEGMENT, or a device
/// path that cannot take it): from then on every packet is a message of its own.
static GSO: AtomicBool = AtomicBool::new(true);

/// A run of datagrams to one destination sent as one message: `msgs[start..end]`, with the
/// segment size when it is more than one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    start: usize,
    end: usize,
    segment: Option<u16>,
}

/// Splits `msgs` into messages: runs of one destination whose packets all have the first one's
/// size except perhaps a shorter last one, when `gso`; single packets otherwise.
fn groups(msgs: &[(&[u8], SocketAddr)], gso: bool) -> Vec<Group> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < msgs.len() {
        let (first, to) = msgs[i];
        let size = first.len();
        let mut end = i + 1;
        let mut bytes = size;
        if gso && size > 0 && size <= usize::from(u16::MAX) {
            while end < msgs.len()
                && end - i < MAX_SEGMENTS
                && msgs[end].1 == to
                && msgs[end].0.len() <= size
                && bytes + msgs[end].0.len() <= MAX_GSO_BYTES
                // Only the last may be shorter.
                && msgs[end - 1].0.len() == size
            {
                bytes += msgs[end].0.len();
                end += 1;
            }
        }
        out.push(Group {
            start: i,
            end,
            segment: (end - i > 1).then_some(size as u16),
        });
        i = end;
    }
    out
}

/// Sends every datagram of `msgs` from `sock`, in order, waiting while its send buffer is full.
/// Returns how many went out; a datagram the kernel refuses (ICMP from a closed port surfacing
/// as ECONNREFUSED, say) is skipped, as a `send_to` error would be.
pub async fn send_all(sock: &UdpSocket, msgs: &[(&[u8], SocketAddr)]) -> usize {
    let addrs: Vec<SockAddr> = msgs.iter().map(|(_, a)| SockAddr::from(*a)).collect();
    let mut gso = GSO.load(Relaxed);
    let mut all = groups(msgs, gso);
    let mut done = 0;
    let mut sent = 0;
    while done < all.len() {
        let r = sock
            .async_io(Interest::WRITABLE, || {
                sendmmsg(sock.as_raw_fd(), msgs, &addrs, &all[done..])
            })
            .await;
        match r {
            Ok(n) => {
                sent += all[done..done + n]
                    .iter()
                    .map(|g| g.end - g.start)
                    .sum::<usize>();
                done += n.max(1);
            }
            Err(e) if gso && all[done].segment.is_some() && is_gso_refusal(&e) => {
                tracing::info!(error = %e, "UDP segmentation offload refused; sending packet by packet");
                GSO.store(false, Relaxed);
                gso = false;
                let from = all[done].start;
                all = groups(&msgs[from..], false)
                    .into_iter()
                    .map(|g| Group {
                        start: g.start + from,
                        end: g.end + from,
                        segment: None,
                    })
                    .collect();
                done = 0;
            }
            // The message at `done` failed (the kernel reports it only when it is first).
            Err(_) => done += 1,
        }
    }
    sent
}

fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
    )
}

/// One control message: UDP_SEGMENT with its u16, padded as CMSG_SPACE(2) is.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Cmsg([u8; 24]);

fn sendmmsg(
    fd: i32,
    msgs: &[(&[u8], SocketAddr)],
    addrs: &[SockAddr],
    groups: &[Group],
) -> io::Result<usize> {
    // SAFETY: zeroed iovec, mmsghdr and control buffers are valid (null pointers, zero lengths).
    let mut iov: [libc::iovec; MAX_IOV] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; MAX_MSGS] = unsafe { std::mem::zeroed() };
    let mut ctl = [Cmsg([0; 24]); MAX_MSGS];
    let (mut n, mut v) = (0, 0);
    for g in groups {
        let segs = g.end - g.start;
        if n == MAX_MSGS || v + segs > MAX_IOV {
            break;
        }
        let first_iov = v;
        for (data, _) in &msgs[g.start..g.end] {
            iov[v].iov_base = data.as_ptr() as *mut libc::c_void;
            iov[v].iov_len = data.len();
            v += 1;
        }
        let h = &mut hdrs[n].msg_hdr;
        h.msg_iov = &mut iov[first_iov];
        h.msg_iovlen = segs as _;
        h.msg_name = addrs[g.start].as_ptr() as *mut libc::c_void;
        h.msg_namelen = addrs[g.start].len();
        if let Some(size) = g.segment {
            let c = &mut ctl[n];
            // SAFETY: `c` is 8-aligned and large enough for CMSG_SPACE(2); CMSG_FIRSTHDR of a
            // header whose control points at it yields its start.
            unsafe {
                h.msg_control = c.0.as_mut_ptr().cast();
                h.msg_controllen = libc::CMSG_SPACE(2) as _;
                let cm = libc::CMSG_FIRSTHDR(h);
                (*cm).cmsg_level = SOL_UDP;
                (*cm).cmsg_type = UDP_SEGMENT;
                (*cm).cmsg_len = libc::CMSG_LEN(2) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), size);
            }
        }
        n += 1;
    }
    // SAFETY: the first `n` headers point at live buffers, addresses and control messages that
    // outlive the call; the kernel only reads them (and writes `msg_len`).
    let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_to_one_reader_is_one_offloaded_message() {
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5002".parse().unwrap();
        let full = [0u8; 1400];
        let short = [0u8; 300];
        // Video: three full packets and a short last one; then audio to another port; then a
        // full packet after a short one, which cannot join its run.
        let msgs: Vec<(&[u8], SocketAddr)> = vec![
            (&full, a),
            (&full, a),
            (&full, a),
            (&short, a),
            (&short, b),
            (&full, a),
        ];
        let g = groups(&msgs, true);
        assert_eq!(
            g,
            vec![
                Group {
                    start: 0,
                    end: 4,
                    segment: Some(1400)
                },
                Group {
                    start: 4,
                    end: 5,
                    segment: None
                },
                Group {
                    start: 5,
                    end: 6,
                    segment: None
                },
            ]
        );
        assert!(groups(&msgs, false).iter().all(|g| g.end - g.start == 1));
    }

    #[tokio::test]
    async fn a_batch_reaches_each_destination_in_order_as_the_packets_it_was() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (pa, pb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // Per frame: 30 full packets and a short one to `a` (offloaded), two to `b`.
        let mut bodies: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        for frame in 0..3u8 {
            for i in 0..31u8 {
                let len = if i == 30 { 500 } else { 1200 };
                bodies.push((vec![frame * 40 + i; len], pa));
            }
            bodies.push((vec![frame; 200], pb));
            bodies.push((vec![frame; 210], pb));
        }
        let msgs: Vec<(&[u8], SocketAddr)> = bodies.iter().map(|(d, t)| (&d[..], *t)).collect();
        assert_eq!(send_all(&tx, &msgs).await, msgs.len());
        eprintln!("UDP segmentation offload in use: {}", GSO.load(Relaxed));
        let mut buf = [0u8; 2048];
        for frame in 0..3u8 {
            for i in 0..31u8 {
                let n = a.recv(&mut buf).await.unwrap();
                let len = if i == 30 { 500 } else { 1200 };
                assert_eq!(
                    (n, buf[0]),
                    (len, frame * 40 + i),
                    "segments arrive as packets"
                );
            }
            for len in [200, 210] {
                let n = b.recv(&mut buf).await.unwrap();
                assert_eq!((n, buf[0]), (len, frame));
            }
        }
    }
}
