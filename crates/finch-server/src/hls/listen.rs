//! The HLS listener, plain or over TLS (`hls.tls`, with the `[rtsps]` certificate), with at
//! most `hls.max_connections` connections open (one more gets a bare 503 and is closed). TLS
//! handshakes run in their own tasks, a bounded number at once and each within a timeout, so
//! a client that never finishes one holds up nobody else's.

use crate::shared::Shared;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// The client's address, over either listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl<L> Connected<IncomingStream<'_, Limited<L>>> for Peer
where
    L: Listener<Addr = SocketAddr>,
    L::Io: Unpin,
{
    fn connect_info(s: IncomingStream<'_, Limited<L>>) -> Self {
        Peer(*s.remote_addr())
    }
}

/// An open connection's place among `hls.max_connections`, given back when it closes.
pub(crate) struct Counted<Io> {
    io: Io,
    shared: Arc<Shared>,
}

impl<Io> Drop for Counted<Io> {
    fn drop(&mut self) {
        self.shared.hls.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Counted<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Counted<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A listener that keeps at most `hls.max_connections` (the config in force) open.
pub(crate) struct Limited<L> {
    inner: L,
    shared: Arc<Shared>,
}

impl<L> Limited<L> {
    pub(crate) fn new(inner: L, shared: Arc<Shared>) -> Self {
        Limited { inner, shared }
    }
}

const REFUSAL: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

impl<L> Listener for Limited<L>
where
    L: Listener<Addr = SocketAddr>,
    L::Io: Unpin,
{
    type Io = Counted<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (mut io, addr) = self.inner.accept().await;
            let max = self.shared.config().hls.max_connections as u64;
            let hls = &self.shared.hls;
            if hls.in_flight.fetch_add(1, Ordering::Relaxed) < max {
                let shared = self.shared.clone();
                return (Counted { io, shared }, addr);
            }
            hls.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.shared.metrics.hls_refused("max_connections");
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), io.write_all(REFUSAL)).await;
            });
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
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
