//! The shared UDP transport: one RTP and one RTCP socket per listen address for every session
//! (RFC 2326 §12.39 `server_port`), packets told apart by the peer's address.
//!
//! - `routes`: which peer address feeds which stream (publishers) or only shows a reader is
//!   alive (receiver reports); each route belongs to one session.
//! - `recv`: the receive loops.
//!
//! A client is served from the pair bound to the address it reached the RTSP listener on (so
//! media comes from the address it expects), else from a pair of its family. An IPv6 socket is
//! IPv6-only (see `net`), so an IPv4 client that only an IPv6 pair could serve is refused at
//! SETUP (461, it can fall back to TCP) instead of being answered 200 and sent nothing.

mod mmsg;
mod recv;
mod routes;

pub use routes::{Route, RouteSet, Routes};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// One listen address's RTP/RTCP pair.
pub struct Pair {
    /// The RTP socket (even port).
    pub rtp: Arc<UdpSocket>,
    /// The RTCP socket (RTP port + 1).
    pub rtcp: Arc<UdpSocket>,
    local: SocketAddr,
    v6only: bool,
}

impl Pair {
    /// Whether this pair can send to `peer` (already canonical: IPv4 peers as IPv4).
    fn reaches(&self, peer: &SocketAddr) -> bool {
        match (self.local.is_ipv4(), peer.is_ipv4()) {
            (true, true) => true,
            (false, false) => true,
            // A dual-stack IPv6 socket bound to `::` (inherited from systemd, say) reaches IPv4
            // peers through mapped addresses; one bound to a specific IPv6 address never does.
            (false, true) => !self.v6only && self.local.ip().is_unspecified(),
            (true, false) => false,
        }
    }

    /// The address to send to from this pair.
    fn destination(&self, peer: SocketAddr) -> SocketAddr {
        match peer {
            SocketAddr::V4(v4) if self.local.is_ipv6() => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            other => other,
        }
    }
}

/// The shared sockets and the routing table.
pub struct Udp {
    pairs: Vec<Pair>,
    /// The RTP port, as told to clients (the same on every address).
    pub rtp_port: u16,
    routes: Arc<Routes>,
    limits: Arc<recv::Limits>,
}

/// An address as a client would name it: IPv4-mapped IPv6 addresses as plain IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Udp {
    /// Wraps bound pairs (non-blocking tokio sockets); `None` when there are none.
    pub fn new(pairs: Vec<(UdpSocket, UdpSocket)>) -> std::io::Result<Option<Udp>> {
        let mut out = Vec::new();
        for (rtp, rtcp) in pairs {
            let local = rtp.local_addr()?;
            let v6only = local.is_ipv6() && socket2::SockRef::from(&rtp).only_v6()?;
            out.push(Pair {
                rtp: Arc::new(rtp),
                rtcp: Arc::new(rtcp),
                local,
                v6only,
            });
        }
        let Some(first) = out.first() else {
            return Ok(None);
        };
        Ok(Some(Udp {
            rtp_port: first.local.port(),
            pairs: out,
            routes: Arc::new(Routes::default()),
            limits: Arc::new(recv::Limits::default()),
        }))
    }

    /// Datagrams from publishers longer than this are dropped (`limits.max_interleaved_bytes`).
    pub fn set_max_packet(&self, max: usize) {
        self.limits
            .max_packet
            .store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// Where dropped oversized datagrams are counted.
    pub fn count_oversized_in(&self, counter: prometheus_client::metrics::counter::Counter) {
        let _ = self.limits.oversized.set(counter);
    }

    /// The routing table.
    pub fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    /// The pair that serves a client at `peer` who reached the RTSP listener at `local`; `None`
    /// if no pair can reach it.
    pub fn pair_for(&self, local: IpAddr, peer: SocketAddr) -> Option<usize> {
        let peer = canonical(peer);
        let local = local.to_canonical();
        let fits = |p: &Pair| p.reaches(&peer);
        self.pairs
            .iter()
            .position(|p| fits(p) && p.local.ip() == local)
            .or_else(|| {
                self.pairs.iter().position(|p| {
                    fits(p) && p.local.ip().is_unspecified() && p.local.is_ipv4() == peer.is_ipv4()
                })
            })
            .or_else(|| self.pairs.iter().position(fits))
    }

    /// Sends one datagram from a pair's RTP or RTCP socket. An error concerns this datagram
    /// only (ICMP from a closed port); the session's timeout decides whether the peer is gone.
    pub async fn send(&self, pair: usize, rtcp: bool, data: &[u8], to: SocketAddr) -> bool {
        let Some(p) = self.pairs.get(pair) else {
            return false;
        };
        let socket = if rtcp { &p.rtcp } else { &p.rtp };
        socket.send_to(data, p.destination(to)).await.is_ok()
    }

    /// How many socket pairs there are (the same, in the same order, in every worker).
    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    /// Sends datagrams from a pair's RTP or RTCP socket in as few system calls as the kernel
    /// allows (`sendmmsg`); how many went out. As with [`Udp::send`], an error concerns its
    /// datagram only.
    pub async fn send_batch(
        &self,
        pair: usize,
        rtcp: bool,
        msgs: &mut [(&[u8], SocketAddr)],
    ) -> usize {
        let Some(p) = self.pairs.get(pair) else {
            return 0;
        };
        for m in msgs.iter_mut() {
            m.1 = p.destination(m.1);
        }
        let socket = if rtcp { &p.rtcp } else { &p.rtp };
        mmsg::send_all(socket, msgs).await
    }

    /// Runs the receive loops of every pair until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut loops = Vec::new();
        for p in &self.pairs {
            for (socket, rtcp) in [(p.rtp.clone(), false), (p.rtcp.clone(), true)] {
                loops.push(tokio::spawn(recv::recv_loop(
                    socket,
                    rtcp,
                    self.routes.clone(),
                    self.limits.clone(),
                    cancel.clone(),
                )));
            }
        }
        for l in loops {
            let _ = l.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(addr: &str, v6only: bool) -> (UdpSocket, UdpSocket) {
        let bind = |a: SocketAddr| {
            let s =
                socket2::Socket::new(socket2::Domain::for_address(a), socket2::Type::DGRAM, None)
                    .unwrap();
            if a.is_ipv6() {
                s.set_only_v6(v6only).unwrap();
            }
            s.bind(&a.into()).unwrap();
            s.set_nonblocking(true).unwrap();
            UdpSocket::from_std(s.into()).unwrap()
        };
        let a: SocketAddr = addr.parse().unwrap();
        (bind(a), bind(a))
    }

    #[tokio::test]
    async fn a_client_is_served_by_a_pair_that_reaches_it_or_by_none() {
        let v4: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        let udp = Udp::new(vec![
            pair("127.0.0.1:0", false).await,
            pair("[::1]:0", true).await,
        ])
        .unwrap()
        .unwrap();
        assert_eq!(udp.pair_for(v4.ip(), v4), Some(0));
        assert_eq!(udp.pair_for(v6.ip(), v6), Some(1));
        // IPv6-only: an IPv4 client has no way in.
        let only6 = Udp::new(vec![pair("[::1]:0", true).await])
            .unwrap()
            .unwrap();
        assert_eq!(only6.pair_for(v4.ip(), v4), None);
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        assert_eq!(only6.pair_for(mapped.ip(), mapped), None);
        // Bound to ::1, even without IPV6_V6ONLY: no IPv4 either.
        let loop6 = Udp::new(vec![pair("[::1]:0", false).await])
            .unwrap()
            .unwrap();
        assert_eq!(loop6.pair_for(v4.ip(), v4), None);
        // Dual-stack (as systemd may hand one over): IPv4 through a mapped address.
        let dual = Udp::new(vec![pair("[::]:0", false).await])
            .unwrap()
            .unwrap();
        assert_eq!(dual.pair_for(mapped.ip(), mapped), Some(0));
        assert!(Udp::new(Vec::new()).unwrap().is_none());
    }
}
