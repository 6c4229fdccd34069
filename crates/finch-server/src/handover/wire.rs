//! The handover's wire between the two workers: a Unix stream socket, each message an 8-byte
//! header (JSON length, descriptor count; big-endian u32s) that carries the connection's
//! socket as SCM_RIGHTS, then the JSON. Blocking: both ends run it on a blocking thread, and it
//! lasts milliseconds. Hand-written on libc because std has no SCM_RIGHTS yet and the one call
//! pair is smaller than a crate for it.

use super::Moved;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// No message is larger (a connection's state is a few KiB; a publisher's, its GOP cache).
const MAX_MESSAGE: usize = 64 << 20;

/// Old worker → new worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Give {
    Hello {
        version: u32,
    },
    Path {
        path: Box<super::MovedPath>,
    },
    Session {
        moved: Box<Moved>,
    },
    /// Where an HLS muxer left off, so the next worker's continues its media sequence.
    Hls {
        path: String,
        resume: Box<finch_hls::Resume>,
    },
    End,
}

/// New worker → old worker.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Reply {
    Welcome,
    Refused {
        why: String,
    },
    Adopted {
        publishers: usize,
        readers: usize,
        connections: usize,
        /// The sessions it could not take (their order among the `Session` messages): they
        /// stay with the old worker and drain there.
        #[serde(default)]
        refused: Vec<usize>,
    },
}

/// Sends `msg`, with `fd` attached if given.
pub(super) fn send<T: Serialize>(sock: &UnixStream, msg: &T, fd: Option<RawFd>) -> io::Result<()> {
    let json = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&(json.len() as u32).to_be_bytes());
    head[4..].copy_from_slice(&u32::from(fd.is_some()).to_be_bytes());
    let mut iov = libc::iovec {
        iov_base: head.as_mut_ptr().cast(),
        iov_len: head.len(),
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if let Some(fd) = fd {
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        // SAFETY: the control buffer is CMSG_SPACE(one fd) long, so its first header fits.
        unsafe {
            let cm = libc::CMSG_FIRSTHDR(&hdr);
            (*cm).cmsg_level = libc::SOL_SOCKET;
            (*cm).cmsg_type = libc::SCM_RIGHTS;
            (*cm).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: `hdr` points at live buffers; the kernel only reads them.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut w = sock;
    // The descriptor went with the first byte; the rest of the header is plain data.
    w.write_all(&head[n as usize..])?;
    w.write_all(&json)
}

/// Receives one message and the descriptor that came with it; `None` at the end of the stream.
pub(super) fn recv<T: for<'de> Deserialize<'de>>(
    sock: &UnixStream,
) -> io::Result<Option<(T, Option<OwnedFd>)>> {
    let mut head = [0u8; 8];
    let mut iov = libc::iovec {
        iov_base: head.as_mut_ptr().cast(),
        iov_len: head.len(),
    };
    // Room for a few descriptors: a peer that sends more than one gets them closed, not leaked.
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(4 * std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: as in `send`.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = space as _;
    // SAFETY: `hdr` points at live, writable buffers of the lengths it states.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote, within `msg_controllen`.
    unsafe {
        let mut cm = libc::CMSG_FIRSTHDR(&hdr);
        while !cm.is_null() {
            if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cm).cast::<RawFd>();
                let count = ((*cm).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cm = libc::CMSG_NXTHDR(&hdr, cm);
        }
    }
    if n == 0 {
        return Ok(None);
    }
    let mut r = sock;
    r.read_exact(&mut head[n as usize..])?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::other(format!("a {len}-byte message")));
    }
    let mut json = vec![0u8; len];
    r.read_exact(&mut json)?;
    let msg = serde_json::from_slice(&json).map_err(io::Error::other)?;
    Ok(Some((msg, fds.into_iter().next())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_carries_its_socket_across() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, mut y) = UnixStream::pair().unwrap();
        send(&a, &Give::Hello { version: 7 }, None).unwrap();
        send(&a, &Give::End, Some(x.as_raw_fd())).unwrap();
        drop(x);
        let (m, fd) = recv::<Give>(&b).unwrap().unwrap();
        assert!(matches!(m, Give::Hello { version: 7 }) && fd.is_none());
        let (m, fd) = recv::<Give>(&b).unwrap().unwrap();
        assert!(matches!(m, Give::End));
        // The descriptor that arrived is the same socket: what is written to it reaches `y`.
        let mut moved = UnixStream::from(fd.expect("a descriptor"));
        moved.write_all(b"still here").unwrap();
        let mut got = [0u8; 10];
        y.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"still here");
        drop(a);
        assert!(recv::<Give>(&b).unwrap().is_none());
    }

    #[test]
    fn garbage_and_oversized_messages_are_errors_not_panics() {
        // Not JSON of a known message.
        let (a, b) = UnixStream::pair().unwrap();
        let mut w = &a;
        w.write_all(&[0, 0, 0, 5, 0, 0, 0, 0]).unwrap();
        w.write_all(b"hello").unwrap();
        assert!(recv::<Give>(&b).is_err());
        // A length past the bound is refused before anything is allocated for it.
        w.write_all(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).unwrap();
        let e = recv::<Give>(&b).unwrap_err();
        assert!(e.to_string().contains("byte message"), "{e}");
        // A header cut short by the peer going away.
        w.write_all(&[0, 0]).unwrap();
        drop(a);
        assert!(recv::<Give>(&b).is_err());
    }
}
