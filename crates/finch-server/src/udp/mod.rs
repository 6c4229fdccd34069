//! The shared UDP transport: one RTP and one RTCP socket for every session (RFC 2326 §12.39
//! `server_port`), packets told apart by the peer's address.
//!
//! A publisher's UDP SETUP adds routes from its client RTP/RTCP addresses to its stream and track;
//! a reader's adds routes that only count as signs of life (receiver reports, hole punching).
//! Each route belongs to one session: another session cannot take or remove it.
//!
//! The receive loops read into one reusable buffer and copy each datagram once into a `Bytes`
//! of its exact size, which the stream then fans out without further copies. Splitting datagrams
//! off a shared chunk instead would save that copy but let one cached packet pin a whole chunk
//! of every publisher's traffic, breaking the GOP cache's memory bound.

use crate::activity::Activity;
use crate::stream::Stream;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Where a datagram from a known address goes.
#[derive(Clone)]
pub enum Route {
    /// A publisher's media for a track.
    Publish {
        /// The stream.
        stream: Arc<Stream>,
        /// The track.
        track: usize,
        /// The publisher's session.
        activity: Activity,
    },
    /// A reader's RTCP or hole punching: only a sign of life.
    Read {
        /// The reader's session.
        activity: Activity,
    },
}

/// A route key: which socket (RTP or RTCP) and the peer's address.
pub type RouteKey = (bool, SocketAddr);

/// Why a route could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Another session receives from or sends to that address already.
    #[error("the address is in use by another session")]
    Taken,
    /// The peer's address family cannot be reached from the shared sockets.
    #[error("the UDP sockets cannot reach this address family")]
    Unreachable,
}

/// The shared sockets and the routing table.
pub struct Udp {
    /// The RTP socket (even port).
    pub rtp: Arc<UdpSocket>,
    /// The RTCP socket (RTP port + 1).
    pub rtcp: Arc<UdpSocket>,
    /// The RTP port, as told to clients.
    pub rtp_port: u16,
    routes: RwLock<HashMap<RouteKey, (String, Route)>>,
}

/// The largest UDP datagram.
const MAX_DATAGRAM: usize = 65536;

impl Udp {
    /// Wraps two bound sockets.
    ///
    /// Both must be non-blocking tokio sockets.
    pub fn new(rtp: UdpSocket, rtcp: UdpSocket) -> std::io::Result<Udp> {
        let rtp_port = rtp.local_addr()?.port();
        Ok(Udp {
            rtp: Arc::new(rtp),
            rtcp: Arc::new(rtcp),
            rtp_port,
            routes: RwLock::new(HashMap::new()),
        })
    }

    /// Whether media can be sent to this peer from the shared sockets.
    pub fn reaches(&self, peer: &SocketAddr) -> bool {
        match self.rtp.local_addr() {
            // An IPv4 socket cannot send to IPv6 peers; an IPv6 one bound to `::` is dual-stack.
            Ok(local) => local.is_ipv6() || peer.is_ipv4(),
            Err(_) => false,
        }
    }

    /// Adds (or refreshes) a route owned by `session`.
    pub fn add(&self, session: &str, key: RouteKey, route: Route) -> Result<(), RouteError> {
        if !self.reaches(&key.1) {
            return Err(RouteError::Unreachable);
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        match routes.get(&key) {
            Some((owner, _)) if owner != session => Err(RouteError::Taken),
            _ => {
                routes.insert(key, (session.to_owned(), route));
                Ok(())
            }
        }
    }

    /// Removes the routes of `session` among `keys`.
    pub fn remove(&self, session: &str, keys: &[RouteKey]) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            if routes.get(k).is_some_and(|(owner, _)| owner == session) {
                routes.remove(k);
            }
        }
    }

    /// Whether `key` is free for `session` (unused, or its own).
    pub fn available(&self, session: &str, key: &RouteKey) -> bool {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_none_or(|(owner, _)| owner == session)
    }

    fn route(&self, key: &RouteKey) -> Option<Route> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|(_, r)| r.clone())
    }

    /// Runs both receive loops until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let rtp = tokio::spawn(self.clone().recv_loop(false, cancel.clone()));
        let rtcp = tokio::spawn(self.recv_loop(true, cancel));
        let _ = tokio::join!(rtp, rtcp);
    }

    async fn recv_loop(self: Arc<Self>, rtcp: bool, cancel: CancellationToken) {
        let socket = if rtcp {
            self.rtcp.clone()
        } else {
            self.rtp.clone()
        };
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, from) = tokio::select! {
                _ = cancel.cancelled() => return,
                r = socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // ICMP port unreachable from a reader that went away surfaces here on
                        // Linux; it concerns one peer, not the socket.
                        tracing::debug!(error = %e, rtcp, "UDP receive error");
                        continue;
                    }
                },
            };
            let data = Bytes::copy_from_slice(&buf[..n]);
            match self.route(&(rtcp, from)) {
                Some(Route::Publish {
                    stream,
                    track,
                    activity,
                }) => {
                    activity.touch();
                    stream.push(track, rtcp, data);
                }
                Some(Route::Read { activity }) => activity.touch(),
                None => tracing::trace!(%from, rtcp, "datagram from an unknown address"),
            }
        }
    }
}
