//! One RTSP connection: the task that drives it.
//!
//! The task reads requests and interleaved frames, answers each request (`methods`), and writes
//! the reader's media when its session plays. It is the only owner of the socket, so responses and
//! media never interleave mid-message: a PLAY response is queued before the first media packet.
//! Writes are bounded by `write_timeout_secs`; a peer that stops reading is disconnected, and its
//! queue (not the publisher) absorbs the delay until then.
//!
//! A connection, an RTSP session and a path are three things with three owners: the connection
//! owns at most one session (`Session`), the registry owns paths, the stream owns its readers.

use crate::activity::Activity;
use crate::server::Server;
use crate::stream::{Packet, Stream};
use crate::udp::RouteKey;
use bytes::{Bytes, BytesMut};
use finch_config::Config;
use finch_proto::rtsp::{write_interleaved_header, Item, Parser, Response};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How a set-up track reaches its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrackTransport {
    /// Interleaved in this connection.
    Tcp { rtp: u8, rtcp: u8 },
    /// To the client's UDP ports, from the shared server ports.
    Udp { rtp: SocketAddr, rtcp: SocketAddr },
}

impl TrackTransport {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            TrackTransport::Tcp { .. } => "tcp",
            TrackTransport::Udp { .. } => "udp",
        }
    }
}

/// What a session does.
pub(crate) enum Role {
    /// ANNOUNCE/RECORD.
    Publisher {
        stream: Arc<Stream>,
        tracks: Vec<Option<TrackTransport>>,
    },
    /// DESCRIBE/SETUP/PLAY.
    Reader {
        stream: Arc<Stream>,
        tracks: Vec<Option<TrackTransport>>,
    },
}

/// The RTSP session this connection owns.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) path: String,
    pub(crate) activity: Activity,
    pub(crate) role: Role,
    pub(crate) udp_routes: Vec<RouteKey>,
}

/// A playing reader's queue.
pub(crate) struct Playing {
    pub(crate) id: u64,
    pub(crate) rx: mpsc::Receiver<Packet>,
    pub(crate) tracks: Vec<Option<TrackTransport>>,
    pub(crate) stream: Arc<Stream>,
    /// Cached packets still to send paced over UDP (see `UDP_BURST_PACKETS_PER_MS`).
    pub(crate) paced: usize,
}

/// The connection's state; `methods` implements the requests on it.
pub(crate) struct Conn {
    pub(crate) server: Arc<Server>,
    pub(crate) config: Arc<Config>,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) session: Option<Session>,
    pub(crate) playing: Option<Playing>,
    /// The path of the last DESCRIBE, for clients that resolve track URLs against the request URL.
    pub(crate) described: Option<String>,
    /// The session played before and was paused (its next PLAY skips the GOP cache).
    pub(crate) paused: bool,
    /// Cancelled to close this connection (kick, Idle, slow reader, shutdown).
    pub(crate) cancel: CancellationToken,
    out: BytesMut,
    close_after_write: bool,
    last_request: Activity,
}

/// Responses queued before the connection stops parsing and writes them: bounds what pipelined
/// requests (each DESCRIBE answered with an SDP of up to `max_body_bytes`) can make us hold.
const MAX_PENDING_OUT: usize = 256 * 1024;

/// The GOP cache reaches a UDP reader at most this many packets per millisecond (about 90 Mbit/s
/// of 1400-byte packets): sent at once, a 2 s GOP overflows a typical 208 KiB socket receive
/// buffer and the player loses packets of the very keyframe it joined for (measured: 0.15 % loss
/// over 1000 UDP readers unpaced, none paced). TCP needs no pacing: its flow control paces.
const UDP_BURST_PACKETS_PER_MS: usize = 8;

/// Media batches are at most this many packets: enough to amortise a `writev`, few enough that
/// one connection does not hog its worker thread.
const BATCH: usize = 64;

/// Serves one accepted connection until it closes.
pub(crate) async fn serve(server: Arc<Server>, sock: TcpStream, peer: SocketAddr) {
    let local = sock.local_addr().unwrap_or(peer);
    let config = server.config();
    let cancel = server.shutdown.child_token();
    let mut conn = Conn {
        server,
        config,
        peer,
        local,
        session: None,
        playing: None,
        described: None,
        paused: false,
        cancel,
        out: BytesMut::with_capacity(1024),
        close_after_write: false,
        last_request: Activity::new(),
    };
    let reason = conn.run(sock).await;
    tracing::debug!(reason, "connection closed");
    conn.end_session();
}

impl Conn {
    async fn run(&mut self, mut sock: TcpStream) -> &'static str {
        let limits = finch_proto::rtsp::Limits {
            max_head_bytes: self.config.limits.max_head_bytes,
            max_headers: self.config.limits.max_headers,
            max_uri_bytes: self.config.limits.max_uri_bytes,
            max_body_bytes: self.config.limits.max_body_bytes,
            max_interleaved_bytes: self.config.limits.max_interleaved_bytes,
        };
        let mut parser = Parser::new(limits);
        let mut rbuf = BytesMut::with_capacity(16 * 1024);
        let mut batch: Vec<Packet> = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let timeout = Duration::from_secs(self.config.rtsp.session_timeout_secs);
        let write_timeout = Duration::from_secs(self.config.rtsp.write_timeout_secs);
        // Cloned so a blocked write can race it while `self` is borrowed.
        let cancel = self.cancel.clone();
        loop {
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(16 * 1024);
            }
            let mut more = false;
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return "closed by the server",
                r = sock.read_buf(&mut rbuf) => match r {
                    Ok(0) => return "peer closed",
                    Ok(_) => more = self.on_read(&mut parser, &mut rbuf),
                    Err(_) => return "read error",
                },
                n = recv_media(&mut self.playing, &mut batch) => {
                    if n == 0 {
                        return "stream ended";
                    }
                    let written = tokio::select! {
                        _ = cancel.cancelled() => return "closed by the server",
                        w = tokio::time::timeout(write_timeout, self.write_media(&mut sock, &batch)) => w,
                    };
                    batch.clear();
                    match written {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return "write error",
                        Err(_) => return "write timed out",
                    }
                }
                _ = tick.tick() => {
                    let idle = match &self.session {
                        Some(s) => s.activity.idle(),
                        None => self.last_request.idle(),
                    };
                    if idle > timeout {
                        tracing::info!(idle_secs = idle.as_secs(), "session timed out");
                        return "session timed out";
                    }
                }
            }
            // Responses are flushed in bounded slices: pipelined requests that would queue more
            // than MAX_PENDING_OUT wait in the read buffer until the client has taken these.
            loop {
                if !self.out.is_empty() {
                    let out = self.out.split();
                    let written = tokio::select! {
                        _ = cancel.cancelled() => return "closed by the server",
                        w = tokio::time::timeout(write_timeout, sock.write_all(&out)) => w,
                    };
                    if !matches!(written, Ok(Ok(()))) {
                        return "write error";
                    }
                }
                if self.close_after_write {
                    return "closed after an error";
                }
                if !more {
                    break;
                }
                more = self.on_read(&mut parser, &mut rbuf);
            }
        }
    }

    /// Handles what the read buffer holds; true if it stopped early because enough responses
    /// are waiting to be written.
    fn on_read(&mut self, parser: &mut Parser, rbuf: &mut BytesMut) -> bool {
        loop {
            if self.out.len() > MAX_PENDING_OUT {
                return true;
            }
            match parser.parse(rbuf) {
                Ok(None) => return false,
                Ok(Some(Item::Request(req))) => {
                    self.last_request.touch();
                    let cseq = req.cseq().map(str::to_owned);
                    let method = req.method.as_str().to_owned();
                    let started = std::time::Instant::now();
                    let resp = self.handle(req);
                    self.server
                        .metrics
                        .request_seconds
                        .get_or_create(&vec![("method".to_owned(), method)])
                        .observe(started.elapsed().as_secs_f64());
                    self.write_response(cseq.as_deref(), resp);
                }
                Ok(Some(Item::Interleaved { channel, payload })) => {
                    self.on_interleaved(channel, payload)
                }
                Ok(Some(Item::Response(_))) => {
                    // Finch sends no requests on server connections; a stray response is ignored.
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bad request");
                    let status_label = e.status().map_or("closed".to_owned(), |s| s.0.to_string());
                    self.server
                        .metrics
                        .bad_requests
                        .get_or_create(&vec![("status".to_owned(), status_label)])
                        .inc();
                    if let Some(status) = e.status() {
                        self.write_response(e.cseq.as_deref(), Response::new(status));
                    }
                    if !e.recoverable {
                        self.close_after_write = true;
                        return false;
                    }
                }
            }
        }
    }

    /// Adds the headers every response carries and queues it for writing.
    pub(crate) fn write_response(&mut self, cseq: Option<&str>, mut resp: Response) {
        if let Some(c) = cseq {
            resp.headers.set("CSeq", c);
        }
        resp.headers
            .set("Server", concat!("Finch/", env!("CARGO_PKG_VERSION")));
        if resp.status >= 400 {
            tracing::debug!(status = resp.status, "error response");
        }
        resp.write(&mut self.out);
    }

    fn on_interleaved(&mut self, channel: u8, payload: Bytes) {
        let Some(session) = &self.session else {
            return;
        };
        session.activity.touch();
        if let Role::Publisher { stream, tracks } = &session.role {
            for (i, t) in tracks.iter().enumerate() {
                match t {
                    Some(TrackTransport::Tcp { rtp, .. }) if *rtp == channel => {
                        return stream.push(i, false, payload);
                    }
                    Some(TrackTransport::Tcp { rtcp, .. }) if *rtcp == channel => {
                        return stream.push(i, true, payload);
                    }
                    _ => {}
                }
            }
        }
        // A reader's RTCP receiver reports: a sign of life, already counted.
    }

    async fn write_media(&mut self, sock: &mut TcpStream, batch: &[Packet]) -> std::io::Result<()> {
        let Some(playing) = &self.playing else {
            return Ok(());
        };
        let mut headers: Vec<[u8; 4]> = Vec::with_capacity(batch.len());
        let mut bodies: Vec<&Bytes> = Vec::with_capacity(batch.len());
        let mut bytes = 0u64;
        let mut sent = 0u64;
        let mut paced = playing.paced;
        for p in batch {
            match playing.tracks.get(p.track).copied().flatten() {
                Some(TrackTransport::Tcp { rtp, rtcp }) => {
                    let ch = if p.rtcp { rtcp } else { rtp };
                    if let Some(h) = write_interleaved_header(ch, p.data.len()) {
                        headers.push(h);
                        bodies.push(&p.data);
                        bytes += p.data.len() as u64;
                        sent += 1;
                    }
                }
                Some(TrackTransport::Udp { rtp, rtcp }) => {
                    if let Some(udp) = &self.server.udp {
                        let (socket, to) = if p.rtcp {
                            (&udp.rtcp, rtcp)
                        } else {
                            (&udp.rtp, rtp)
                        };
                        // A UDP send error concerns this datagram only (ICMP from a closed port);
                        // the session's timeout decides whether the reader is gone.
                        if socket.send_to(&p.data, to).await.is_ok() {
                            bytes += p.data.len() as u64;
                            sent += 1;
                        }
                        if paced > 0 {
                            paced -= 1;
                            if paced % UDP_BURST_PACKETS_PER_MS == 0 {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                    }
                }
                None => {}
            }
        }
        let counters = &playing.stream.counters;
        counters.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        counters.packets_out.fetch_add(sent, Ordering::Relaxed);
        if let Some(p) = self.playing.as_mut() {
            p.paced = paced;
        }
        if headers.is_empty() {
            return Ok(());
        }
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 * headers.len());
        for (h, b) in headers.iter().zip(&bodies) {
            slices.push(IoSlice::new(h));
            slices.push(IoSlice::new(b));
        }
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        while !rest.is_empty() {
            let n = sock.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut rest, n);
        }
        Ok(())
    }

    /// Frees the session: leaves the stream, unpublishes the path, drops UDP routes.
    pub(crate) fn end_session(&mut self) {
        if let Some(p) = self.playing.take() {
            p.stream.leave(p.id);
        }
        let Some(s) = self.session.take() else {
            return;
        };
        if let Some(udp) = &self.server.udp {
            udp.remove(&s.id, &s.udp_routes);
        }
        self.paused = false;
        if let Role::Publisher { .. } = s.role {
            self.server.registry.unpublish(&s.path, &s.id);
        }
        self.server.remove_session(&s.id);
        tracing::info!(session = %s.id, path = %s.path, "session ended");
    }
}

/// The next batch of a playing reader's packets; pends forever when not playing. 0 means the
/// stream has ended.
async fn recv_media(playing: &mut Option<Playing>, batch: &mut Vec<Packet>) -> usize {
    match playing {
        Some(p) => p.rx.recv_many(batch, BATCH).await,
        None => std::future::pending().await,
    }
}
