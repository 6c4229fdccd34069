//! The HLS listener, plain or over TLS (`hls.tls`, with the `[rtsps]` certificate). TLS
//! handshakes run in their own tasks, a bounded number at once and each within a timeout, so
//! a client that never finishes one holds up nobody else's.

use crate::shared::Shared;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// The client's address, over either listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, TcpListener>) -> Self {
        Peer(*s.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(s: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*s.remote_addr())
    }
}

/// Handshakes in progress at once.
const HANDSHAKES: usize = 256;
/// A handshake not done by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections whose TLS handshake is done.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` until `stop`, shaking hands with the acceptor in force at each
    /// connection (a reload's new certificate applies to the next one).
    pub(crate) fn new(tcp: TcpListener, shared: Arc<Shared>, stop: CancellationToken) -> Self {
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        let slots = Arc::new(Semaphore::new(HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = tcp.accept() => a,
                };
                let Ok((sock, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue; // Too many handshakes at once: this one is dropped.
                };
                let Some(acceptor) = shared.tls.acceptor() else {
                    continue;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await
                    {
                        let _ = tx.send((s, peer)).await;
                    }
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop stopped: so does the server, by its shutdown signal.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
