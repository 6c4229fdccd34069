//! The shared UDP transport: one RTP and one RTCP socket for every session (RFC 2326 §12.39
//! `server_port`), packets told apart by the peer's address.
//!
//! A publisher's UDP SETUP adds routes from its client RTP/RTCP addresses to its stream and track;
//! a reader's adds routes that only count as signs of life (receiver reports, hole punching).
//! The receive loops read each datagram once into a large shared buffer and split it off as a
//! `Bytes` (no copy), which the stream then fans out.

use crate::activity::Activity;
use crate::stream::Stream;
use bytes::BytesMut;
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

/// The shared sockets and the routing table.
pub struct Udp {
    /// The RTP socket (even port).
    pub rtp: Arc<UdpSocket>,
    /// The RTCP socket (RTP port + 1).
    pub rtcp: Arc<UdpSocket>,
    /// The RTP port, as told to clients.
    pub rtp_port: u16,
    routes: RwLock<HashMap<RouteKey, Route>>,
}

/// Datagrams are received into chunks of this size; a chunk is replaced once less than a
/// maximum datagram fits, so at most 64 KiB of each MiB is left unused.
const CHUNK: usize = 1 << 20;
const MAX_DATAGRAM: usize = 65536;

impl Udp {
    /// Wraps two bound sockets.
    pub fn new(rtp: UdpSocket, rtcp: UdpSocket) -> std::io::Result<Udp> {
        let rtp_port = rtp.local_addr()?.port();
        Ok(Udp {
            rtp: Arc::new(rtp),
            rtcp: Arc::new(rtcp),
            rtp_port,
            routes: RwLock::new(HashMap::new()),
        })
    }

    /// Adds a route.
    pub fn add(&self, key: RouteKey, route: Route) {
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, route);
    }

    /// Removes routes.
    pub fn remove(&self, keys: &[RouteKey]) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        for k in keys {
            routes.remove(k);
        }
    }

    fn route(&self, key: &RouteKey) -> Option<Route> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
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
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            if buf.capacity() - buf.len() < MAX_DATAGRAM {
                buf = BytesMut::with_capacity(CHUNK);
            }
            let from = tokio::select! {
                _ = cancel.cancelled() => return,
                r = socket.recv_buf_from(&mut buf) => match r {
                    Ok((_, from)) => from,
                    Err(e) => {
                        // ICMP port unreachable from a reader that went away surfaces here on
                        // Linux; it concerns one peer, not the socket.
                        tracing::debug!(error = %e, rtcp, "UDP receive error");
                        buf.clear();
                        continue;
                    }
                },
            };
            let data = buf.split().freeze();
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
