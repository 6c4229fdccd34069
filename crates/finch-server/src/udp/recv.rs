//! The UDP receive loops: one per shared socket.
//!
//! Each reads into one reusable buffer and copies the datagram once into a `Bytes` of its exact
//! size, which the stream then fans out without further copies. Splitting datagrams off a shared
//! chunk instead would save that copy but let one cached packet pin a whole chunk of every
//! publisher's traffic, breaking the stream's memory bound.

use super::routes::{Route, Routes};
use bytes::Bytes;
use finch_relay::{Feed, Kind};
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The largest UDP datagram.
const MAX_DATAGRAM: usize = 65536;

/// What a publisher's datagram may be.
#[derive(Debug)]
pub(super) struct Limits {
    /// Longer ones are dropped.
    pub(super) max_packet: AtomicUsize,
    /// `finch_limit_refusals_total{limit="max_interleaved_bytes"}`, once the metrics exist.
    pub(super) oversized: OnceLock<Counter>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet: AtomicUsize::new(MAX_DATAGRAM),
            oversized: OnceLock::new(),
        }
    }
}

pub(super) async fn recv_loop(
    socket: Arc<UdpSocket>,
    rtcp: bool,
    routes: Arc<Routes>,
    limits: Arc<Limits>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let kind = if rtcp { Kind::Rtcp } else { Kind::Rtp };
    // Streams with packets waiting for a frame end, and when to flush them if none comes.
    let mut pending: Vec<(Feed, Instant)> = Vec::new();
    loop {
        let next_flush = pending.iter().map(|(_, at)| *at).min();
        let (n, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next_flush.unwrap_or_else(Instant::now).into()), if next_flush.is_some() => {
                let now = Instant::now();
                pending.retain(|(stream, at)| {
                    if *at <= now {
                        stream.flush();
                    }
                    *at > now
                });
                continue;
            }
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
        let from = super::canonical(from);
        match routes.lookup(&(rtcp, from)) {
            Some(Route::Publish {
                feed,
                track,
                activity,
            }) => {
                activity.touch();
                if n > limits.max_packet.load(Relaxed) {
                    if let Some(c) = limits.oversized.get() {
                        c.inc();
                    }
                    continue;
                }
                let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                let flush = feed.push(track, kind, data, Instant::now());
                let slot = pending
                    .iter()
                    .position(|(f, _)| Arc::ptr_eq(f.stream(), feed.stream()));
                match (flush, slot) {
                    (Some(at), None) => pending.push((feed, at)),
                    (None, Some(i)) => {
                        pending.swap_remove(i);
                    }
                    _ => {}
                }
            }
            Some(Route::Read { activity }) => activity.touch(),
            None => tracing::trace!(%from, rtcp, "datagram from an unknown address"),
        }
    }
}
