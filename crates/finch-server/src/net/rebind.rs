//! What a reload that moves sockets must bind: the supervisor's side of a listen-address
//! change.
//!
//! Every socket the new config wants is matched against the held ones by role and local
//! address: a match is kept as it is (the running worker still listens on it, so binding it
//! again would fail, and its backlog must not be lost); the rest are bound anew. Held sockets
//! the new config does not want are let go. If any bind fails, nothing changes.

use super::{bind_one, wanted};
use finch_config::Config;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// Named descriptors, in the order the worker expects them.
pub type Sockets = Vec<(String, OwnedFd)>;

/// The sockets for `new`, reusing held ones whose role and address it still wants. On failure,
/// the reason and the held sockets, unchanged and in their order.
pub fn rebind(new: &Config, held: Sockets) -> Result<Sockets, (String, Sockets)> {
    let mut pool: Vec<Option<(String, OwnedFd)>> = held.into_iter().map(Some).collect();
    let addrs: Vec<Option<SocketAddr>> = pool
        .iter()
        .map(|s| s.as_ref().and_then(|(_, fd)| local_addr(fd)))
        .collect();
    // Where each output socket came from: a held one (by index) or a fresh bind.
    let mut out: Vec<(String, Result<usize, OwnedFd>)> = Vec::new();
    for (role, addr) in wanted(new) {
        let held = pool.iter().zip(&addrs).position(|(s, a)| {
            s.as_ref().is_some_and(|(n, _)| n == role.name()) && *a == Some(addr)
        });
        match held {
            Some(i) if !out.iter().any(|(_, src)| matches!(src, Ok(j) if *j == i)) => {
                out.push((role.name().to_owned(), Ok(i)));
            }
            _ => match bind_one(role, addr) {
                Ok(fd) => out.push((role.name().to_owned(), Err(fd))),
                Err(e) => {
                    let msg = format!("{:#}", DisplayChain(&e));
                    return Err((msg, pool.into_iter().flatten().collect()));
                }
            },
        }
    }
    Ok(out
        .into_iter()
        .filter_map(|(name, src)| match src {
            Ok(i) => pool
                .get_mut(i)
                .and_then(Option::take)
                .map(|(_, fd)| (name, fd)),
            Err(fd) => Some((name, fd)),
        })
        .collect())
}

fn local_addr(fd: &OwnedFd) -> Option<SocketAddr> {
    socket2::SockRef::from(fd).local_addr().ok()?.as_socket()
}

/// An error and its causes on one line (`a: b: c`).
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(addrs: &[&str], port: u16, rtp: u16) -> Config {
        let mut c = Config::default();
        c.rtsp.listen_addresses = addrs.iter().map(|a| a.to_string()).collect();
        c.rtsp.port = port;
        c.rtsp.rtp_port = rtp;
        c.admin.enabled = false;
        c.hls.enabled = false;
        c
    }

    fn free_port() -> u16 {
        loop {
            let p = std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
                & !1;
            if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            {
                return p;
            }
        }
    }

    #[test]
    fn keeps_what_stays_and_binds_what_is_new() {
        let port = free_port();
        let rtp = free_port();
        let old = config(&["127.0.0.1"], port, rtp);
        let held: Sockets = super::super::inherit::into_fds(super::super::bind(&old).unwrap());
        let held_addrs: Vec<_> = held
            .iter()
            .map(|(n, fd)| (n.clone(), local_addr(fd)))
            .collect();
        // Adding an address keeps the three held sockets (binding them again would fail).
        let more = config(&["127.0.0.1", "127.0.0.2"], port, rtp);
        let got = rebind(&more, held).unwrap();
        let names: Vec<_> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["rtsp", "rtsp", "rtp", "rtcp", "rtp", "rtcp"]);
        assert_eq!(
            (got[0].0.clone(), local_addr(&got[0].1)),
            held_addrs[0].clone()
        );
        // An address that cannot be bound leaves everything as it was.
        let bad = config(&["127.0.0.1", "192.0.2.1"], port, rtp);
        let (why, back) = rebind(&bad, got).unwrap_err();
        assert!(why.contains("192.0.2.1"), "{why}");
        assert_eq!(back.len(), 6);
    }
}
