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
use std::net::IpAddr;
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

/// A counted connection: one of `limits.max_connections`, and of its address's
/// `limits.max_connections_per_ip`, while it lives, whatever ends it.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Slot {
    /// A slot for a connection taken over from the previous worker: it was admitted there
    /// under the same limits, so none refuses it here.
    pub(crate) fn adopted(shared: &Arc<Shared>, ip: IpAddr) -> Slot {
        shared.connections.fetch_add(1, Ordering::Relaxed);
        *shared
            .per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ip)
            .or_insert(0) += 1;
        Slot {
            shared: shared.clone(),
            ip,
        }
    }

    /// A slot, or the limit that is full.
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Result<Slot, &'static str> {
        let limits = shared.config().limits.clone();
        let total = limits.max_connections as u64;
        shared
            .connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < total).then_some(n + 1)
            })
            .map_err(|_| "max_connections")?;
        let mut per_ip = shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if limits.max_connections_per_ip > 0 && *n >= limits.max_connections_per_ip {
            if *n == 0 {
                per_ip.remove(&ip);
            }
            drop(per_ip);
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            return Err("max_connections_per_ip");
        }
        *n += 1;
        Ok(Slot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Accepts until the server shuts down; with `tls`, each connection first completes a TLS
/// handshake (within `limits.first_request_timeout_secs`) and is then served as any other.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tracker: TaskTracker,
    stop: CancellationToken,
    tls: bool,
) {
    // Refusing costs a task and a descriptor for up to a few seconds; past this many at once,
    // a connection is closed without a word so a flood cannot exhaust descriptors.
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut backoff = Duration::from_millis(5);
    let mut states = shared.state.subscribe();
    loop {
        let accepted = tokio::select! {
            // Stopping first: once the worker is on its way out it takes no more connections
            // (they wait in the backlog for the next worker). Unbiased, a connection could be
            // taken after its stop had already closed every connection, and be cut.
            biased;
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
        let span = tracing::info_span!("conn", id, %peer, tls);
        // One accepted just as the worker began to stop is served all the same: refusing it
        // would fail a client the next worker could have served.
        let accepts = state.accepts_connections() || state.is_stopping();
        // Counted before the task runs, so a drain that starts now waits for it.
        let slot = if accepts {
            Slot::take(&shared, peer.ip())
        } else {
            Err(state.as_str())
        };
        match slot {
            Ok(slot) => {
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
                        if !tls {
                            return conn::serve_tcp(shared, sock, peer, local, fault).await;
                        }
                        let Some(acceptor) = shared.tls.acceptor() else {
                            return;
                        };
                        let limit =
                            Duration::from_secs(shared.config().limits.first_request_timeout_secs);
                        match tokio::time::timeout(limit, acceptor.accept(sock)).await {
                            Ok(Ok(stream)) => {
                                conn::serve(shared, stream, peer, local, true, fault).await
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => {
                                shared.refused("first_request_timeout_secs", peer.ip());
                            }
                        }
                    }
                    .instrument(span),
                );
            }
            Err(why) => {
                if accepts {
                    shared.refused(why, peer.ip());
                }
                tracing::debug!(parent: &span, why, "refusing connection with 503");
                if tls {
                    // No handshake, no words: the client sees the connection closed.
                    continue;
                }
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
