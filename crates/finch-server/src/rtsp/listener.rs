//! The RTSP accept loop.
//!
//! One task per listening socket. Each accepted connection gets its own task and a span
//! `conn{id, peer}`; an error on one connection never reaches the loop. The worker's connection
//! limit (`limits.max_connections`, one count for all listeners, read from the config in force
//! so a reload applies it) and the server state decide whether a new connection is served or
//! answered 503. Accept errors (such as running out of descriptors) back off instead of
//! spinning.

use super::conn;
use crate::shared::Shared;
use crate::udp::canonical;
use finch_proto::rtsp::{Response, Status};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Connections being answered 503 at once.
const MAX_REFUSALS: usize = 64;

/// A counted connection: one of `limits.max_connections` while it lives, whatever ends it.
struct Slot(Arc<Shared>);

impl Slot {
    /// A slot if the worker is below its limit.
    fn take(shared: &Arc<Shared>) -> Option<Slot> {
        let limit = shared.config().limits.max_connections as u64;
        shared
            .connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(shared.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts until the server shuts down.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    // Refusing costs a task and a descriptor for up to a few seconds; past this many at once,
    // a connection is closed without a word so a flood cannot exhaust descriptors.
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut backoff = Duration::from_millis(5);
    let mut states = shared.state.subscribe();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            _ = states.wait_for(|s| s.is_stopping()) => return,
            a = listener.accept() => a,
        };
        let (sock, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let peer = canonical(peer);
        let local = sock.local_addr().map_or(peer, canonical);
        shared.metrics.accepted();
        let state = *states.borrow();
        let id = shared.next_conn_id();
        let span = tracing::info_span!("conn", id, %peer);
        // One accepted just as the worker began to stop is served all the same: refusing it
        // would fail a client the next worker could have served.
        let accepts = state.accepts_connections() || state.is_stopping();
        // Counted before the task runs, so a drain that starts now waits for it.
        let slot = if accepts { Slot::take(&shared) } else { None };
        match (accepts, slot) {
            (true, Some(slot)) => {
                let shared = shared.clone();
                let fault = CancellationToken::new();
                *shared
                    .faults
                    .latest_conn
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(fault.clone());
                tracker.spawn(
                    async move {
                        // Held by the task, so even a panic in it gives the slot back.
                        let _slot = slot;
                        conn::serve(shared, sock, peer, local, fault).await;
                    }
                    .instrument(span),
                );
            }
            (accepting, _) => {
                let why = if accepting {
                    "connection limit reached"
                } else {
                    state.as_str()
                };
                tracing::debug!(parent: &span, why, "refusing connection with 503");
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tracker.spawn(async move {
                        refuse(sock).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// Answers 503 to whatever the client sends first, then closes.
async fn refuse(mut sock: TcpStream) {
    let mut resp = Response::new(Status::SERVICE_UNAVAILABLE);
    resp.headers
        .set("Server", concat!("Finch/", env!("CARGO_PKG_VERSION")));
    let mut buf = bytes::BytesMut::new();
    // Read the first request so the 503 can echo its CSeq: clients match responses by it.
    let mut req = bytes::BytesMut::with_capacity(2048);
    let mut parser = finch_proto::rtsp::Parser::new(finch_proto::rtsp::Limits::default());
    let read = tokio::time::timeout(Duration::from_secs(2), async {
        use tokio::io::AsyncReadExt;
        loop {
            match sock.read_buf(&mut req).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => match parser.parse(&mut req) {
                    Ok(Some(finch_proto::rtsp::Item::Request(r))) => {
                        return r.cseq().map(str::to_owned)
                    }
                    Ok(None) if req.len() < 4096 => continue,
                    _ => return None,
                },
            }
        }
    })
    .await;
    if let Ok(Some(cseq)) = read {
        resp.headers.set("CSeq", cseq);
    }
    resp.write(&mut buf);
    let _ = tokio::time::timeout(Duration::from_secs(2), sock.write_all(&buf)).await;
}
