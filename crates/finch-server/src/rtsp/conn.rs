//! One RTSP connection: the task that drives it, over any byte stream.
//!
//! The task reads requests and interleaved frames, answers each request (`methods`), and writes
//! the reader's media when its session plays (`media`). It is the only owner of the stream, so
//! responses and media never interleave mid-message: a PLAY response is queued before the first
//! media packet, and the connection is only ever closed between whole messages. Writes are
//! bounded by `write_timeout_secs`: a peer that stops reading is disconnected, and the stream
//! (not the source) absorbs the delay until then.
//!
//! Liveness (what keeps a session from timing out after `session_timeout_secs`): any request;
//! any interleaved frame or UDP datagram from the client (RTCP receiver reports, a publisher's
//! media); and, for a reader over TCP, every write of media the peer took. That last one is
//! gst-rtsp-server's rule: TCP acknowledges only what the peer reads, so a player that takes
//! its media is alive even if it never sends RTCP or a keep-alive (finch-load, some NVRs).
//! live555 and newer gortsplib cut such a reader after a minute; see ARCHITECTURE.md.

mod moving;

use super::media;
use super::session::{Role, Session, TrackTransport};
use crate::activity::Activity;
use crate::handover::Round;
use crate::shared::Shared;
use crate::stop::Stopped;
use bytes::{Bytes, BytesMut};
use finch_config::Config;
use finch_proto::rtsp::{Item, Parser, Response};
use finch_relay::{Ended, Kind, Packet};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

pub(crate) use moving::adopt;

/// The connection's state; `methods`, `publish` and `play` implement the requests on it.
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: Arc<Config>,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) session: Option<Session>,
    /// The path of the last DESCRIBE, for clients that resolve track URLs against the request URL.
    pub(crate) described: Option<String>,
    /// Cancelled to close this connection (kick, Idle, slow reader, shutdown).
    pub(crate) cancel: CancellationToken,
    /// Whether the connection is RTSPS.
    pub(crate) tls: bool,
    /// What it has been allowed (action, path): kept for its later requests.
    pub(crate) granted: Vec<(crate::auth::Action, String)>,
    out: BytesMut,
    close_after_write: bool,
    last_request: Activity,
    /// When the publisher's pending packets must be flushed to readers if no more arrive.
    flush_at: Option<Instant>,
    /// When the connection opened, and whether a whole request has come yet.
    opened: Instant,
    requested: bool,
    /// Since when the read buffer has held the start of a message that is not complete.
    partial_since: Option<Instant>,
    /// A request whose answer waits for an on-demand camera, and until when.
    pub(crate) waiting: Option<finch_proto::rtsp::Request>,
    pub(crate) wait_until: Option<Instant>,
    /// Whether that request waits for the previous worker's sessions (a graceful restart).
    pub(crate) waiting_handover: bool,
    /// Whether that request was retried for a cluster answer already (it is, once).
    pub(crate) cluster_answered: bool,
}

/// Responses queued before the connection stops parsing and writes them: bounds what pipelined
/// requests (each DESCRIBE answered with an SDP of up to `max_body_bytes`) can make us hold.
const MAX_PENDING_OUT: usize = 256 * 1024;

/// Media batches are at most this many packets: a frame or more per `writev`, few enough that
/// one connection does not hog its worker thread.
const BATCH: usize = 64;

/// What `run` returns when the connection moved to the next worker: its session must end
/// here without a word to the client.
const HANDED_OVER: &str = "handed over to the next worker";

/// Serves one accepted connection until it closes. `fault` makes the task panic (the operator's
/// `panic_task` fault); everything the connection held is given back as the panic unwinds.
/// (RTSPS: its TLS state cannot move to another process, so it never hands over.)
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut sock: S,
    peer: SocketAddr,
    local: SocketAddr,
    tls: bool,
    fault: CancellationToken,
) {
    let mut conn = Conn::new(shared, peer, local, tls);
    let reason = conn.run(&mut sock, fault, BytesMut::new(), None).await;
    conn.finish(reason);
}

/// Serves a plain TCP connection, which can move to the next worker on a graceful restart.
pub(crate) async fn serve_tcp(
    shared: Arc<Shared>,
    sock: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    fault: CancellationToken,
) {
    let conn = Conn::new(shared, peer, local, false);
    conn.serve_tcp(sock, BytesMut::new(), fault).await;
}

impl Conn {
    fn new(shared: Arc<Shared>, peer: SocketAddr, local: SocketAddr, tls: bool) -> Conn {
        let config = shared.config();
        let cancel = shared.shutdown.child_token();
        Conn {
            shared,
            config,
            peer,
            local,
            session: None,
            described: None,
            cancel,
            tls,
            granted: Vec::new(),
            out: BytesMut::with_capacity(1024),
            close_after_write: false,
            last_request: Activity::new(),
            flush_at: None,
            opened: Instant::now(),
            requested: false,
            partial_since: None,
            waiting: None,
            wait_until: None,
            waiting_handover: false,
            cluster_answered: false,
        }
    }

    /// Runs a plain TCP connection, new or taken over (`rbuf`: what it had read).
    async fn serve_tcp(mut self, mut sock: TcpStream, rbuf: BytesMut, fault: CancellationToken) {
        let _counted = self.shared.handover.movable();
        let fd = sock.as_raw_fd();
        let reason = self.run(&mut sock, fault, rbuf, Some(fd)).await;
        self.finish(reason);
    }

    fn finish(&mut self, reason: &'static str) {
        tracing::debug!(reason, "connection closed");
        if reason == HANDED_OVER {
            // Everything it held here goes quietly: the next worker serves it now.
            self.session = None;
        } else {
            self.end_session();
        }
    }
}

impl Conn {
    /// Drives the connection; `rbuf` holds what was read and not parsed yet (a connection taken
    /// over), `movable` the socket's descriptor if it can move to the next worker.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        sock: &mut S,
        fault: CancellationToken,
        mut rbuf: BytesMut,
        movable: Option<RawFd>,
    ) -> &'static str {
        let limits = finch_proto::rtsp::Limits {
            max_head_bytes: self.config.limits.max_head_bytes,
            max_headers: self.config.limits.max_headers,
            max_uri_bytes: self.config.limits.max_uri_bytes,
            max_body_bytes: self.config.limits.max_body_bytes,
            max_interleaved_bytes: self.config.limits.max_interleaved_bytes,
        };
        let mut parser = Parser::new(limits);
        let mut batch: Vec<Packet> = Vec::with_capacity(BATCH);
        let mut scratch = media::Scratch::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let timeout = Duration::from_secs(self.config.rtsp.session_timeout_secs);
        let write_timeout = Duration::from_secs(self.config.rtsp.write_timeout_secs);
        // Owned so a blocked write can race them while `self` is borrowed; cheap to poll on
        // every wake (see `stop`).
        let mut stopped = Stopped::new(self.cancel.clone());
        let mut faulted = Stopped::new(fault);
        // A graceful restart's rounds (see `handover`): each asks once.
        let mut round_publishers = Stopped::new(self.shared.handover.publishers.clone());
        let mut round_others = Stopped::new(self.shared.handover.others.clone());
        let (mut asked_publishers, mut asked_others) = (false, false);
        // A connection taken over may have a request to parse or a response to write first.
        let mut resumed = !rbuf.is_empty() || !self.out.is_empty();
        loop {
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(16 * 1024);
            }
            let mut more = false;
            let flush_at = self.flush_at;
            if std::mem::take(&mut resumed) {
                more = !rbuf.is_empty() && self.on_read(&mut parser, &mut rbuf);
            } else {
                tokio::select! {
                    biased;
                    _ = &mut stopped => return "closed by the server",
                    _ = &mut faulted => panic!("injected fault: panic in a connection task"),
                    _ = &mut round_publishers, if movable.is_some() && !asked_publishers => {
                        asked_publishers = true;
                        if self.answer_round(Round::Publishers, movable, &rbuf, sock, &mut batch, &mut scratch).await {
                            return HANDED_OVER;
                        }
                    }
                    _ = &mut round_others, if movable.is_some() && !asked_others => {
                        asked_others = true;
                        if self.answer_round(Round::Others, movable, &rbuf, sock, &mut batch, &mut scratch).await {
                            return HANDED_OVER;
                        }
                    }
                    r = sock.read_buf(&mut rbuf) => match r {
                        Ok(0) => return "peer closed",
                        Ok(_) => {
                            let before = parser.offset();
                            more = self.on_read(&mut parser, &mut rbuf);
                            // Progress (a whole message) resets the clock of a partial one.
                            if parser.offset() != before || rbuf.is_empty() {
                                self.partial_since = None;
                            }
                            if !rbuf.is_empty() {
                                self.partial_since.get_or_insert_with(Instant::now);
                            }
                        }
                        Err(_) => return "read error",
                    },
                    n = recv_media(&mut self.session, &mut batch) => {
                        match n {
                            Ok(_) => {}
                            Err(Ended::Closed) => return "stream ended",
                            Err(Ended::TooSlow) => return "reader too slow",
                        }
                        let udp = self.shared.udp.clone();
                        let Some(session) = self.session.as_mut() else {
                            batch.clear();
                            continue;
                        };
                        let activity = session.activity.clone();
                        let Some((playing, tracks)) = session.playing_mut() else {
                            batch.clear();
                            continue;
                        };
                        let written = {
                            let write = media::write(sock, udp.as_deref(), playing, tracks, &batch, &mut scratch);
                            let mut write = std::pin::pin!(write);
                            // Nearly always the socket takes the batch at once: no timer for that.
                            match poll_once(write.as_mut()).await {
                                Some(w) => Ok(w),
                                None => tokio::select! {
                                    _ = &mut stopped => return "closed by the server",
                                    w = tokio::time::timeout(write_timeout, write) => w,
                                },
                            }
                        };
                        batch.clear();
                        match written {
                            Ok(Ok(w)) => {
                                if w.tcp_bytes > 0 {
                                    // The peer took its media: it is alive (see the module docs).
                                    activity.touch();
                                }
                            }
                            Ok(Err(_)) => return "write error",
                            Err(_) => return "write timed out",
                        }
                    }
                    // (Sleeps built lazily: a disabled branch's future is still built on every wake.)
                    _ = sleep_for(Duration::from_millis(50)), if self.waiting.is_some() => {
                        // An on-demand camera is starting: answer once it is live or the wait is over.
                        let path = self.waiting.as_ref().and_then(|r| finch_proto::uri::request_path(&r.uri));
                        let live = path.as_ref().is_some_and(|p| self.shared.registry.live_stream(p).is_some());
                        // … or the cluster has answered a lookup or a claim.
                        let answered = !self.cluster_answered && path.as_ref().is_some_and(|p| {
                            self.shared.cluster.as_ref().is_some_and(|c| c.answered(p))
                        });
                        // … or, in a graceful restart, once the old worker's sessions are here.
                        let over = self.wait_until.is_some_and(|t| Instant::now() >= t)
                            || (self.waiting_handover && !self.shared.handover.expecting());
                        if live || over || answered {
                            self.cluster_answered |= answered;
                            if let Some(req) = self.waiting.take() {
                                let cseq = req.cseq().map(str::to_owned);
                                if let Some(resp) = self.handle(req) {
                                    self.write_response(cseq.as_deref(), resp);
                                }
                            }
                            // A request that waits on (for the camera its lookup found) keeps
                            // the deadline its handler set.
                            if self.waiting.is_none() {
                                self.wait_until = None;
                                self.waiting_handover = false;
                                self.cluster_answered = false;
                            }
                            more = true;
                        }
                    }
                    _ = sleep_until(flush_at), if flush_at.is_some() => {
                        self.flush_at = None;
                        if let Some(Session { role: Role::Publisher(p), .. }) = &self.session {
                            p.publisher.flush();
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
                        if let Some(why) = self.overdue() {
                            return why;
                        }
                    }
                }
            }
            // Responses are flushed in bounded slices: pipelined requests that would queue more
            // than MAX_PENDING_OUT wait in the read buffer until the client has taken these.
            loop {
                if !self.out.is_empty() {
                    let out = self.out.split();
                    let written = tokio::select! {
                        _ = &mut stopped => return "closed by the server",
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

    /// A deadline the client has missed (limits against slow and idle clients, and path
    /// squatting), counted and named; `None` if all is well.
    fn overdue(&mut self) -> Option<&'static str> {
        let l = &self.config.limits;
        let ip = self.peer.ip();
        if !self.requested && self.opened.elapsed().as_secs() >= l.first_request_timeout_secs {
            self.shared.refused("first_request_timeout_secs", ip);
            return Some("no request in time");
        }
        if self
            .partial_since
            .is_some_and(|t| t.elapsed().as_secs() >= l.request_timeout_secs)
        {
            self.shared.refused("request_timeout_secs", ip);
            return Some("request not completed in time");
        }
        let squatting = matches!(
            &self.session,
            Some(Session { role: Role::Publisher(p), .. })
                if !p.recording && p.since.elapsed().as_secs() >= self.config.rtsp.announce_timeout_secs
        );
        if squatting {
            self.shared.refused("announce_timeout_secs", ip);
            return Some("ANNOUNCE not followed by RECORD in time");
        }
        None
    }

    /// Handles what the read buffer holds; true if it stopped early because enough responses
    /// are waiting to be written.
    fn on_read(&mut self, parser: &mut Parser, rbuf: &mut BytesMut) -> bool {
        loop {
            if self.out.len() > MAX_PENDING_OUT || self.waiting.is_some() {
                // Later requests wait for the earlier ones' answers (RTSP answers in order).
                return self.out.len() > MAX_PENDING_OUT;
            }
            match parser.parse(rbuf) {
                Ok(None) => return false,
                Ok(Some(Item::Request(req))) => {
                    self.last_request.touch();
                    self.requested = true;
                    let cseq = req.cseq().map(str::to_owned);
                    let method = req.method.clone();
                    let started = Instant::now();
                    let resp = self.handle(req);
                    self.shared
                        .metrics
                        .observe_request(&method, started.elapsed().as_secs_f64());
                    match resp {
                        Some(resp) => self.write_response(cseq.as_deref(), resp),
                        None => return false,
                    }
                }
                Ok(Some(Item::Interleaved { channel, payload })) => {
                    self.on_interleaved(channel, payload)
                }
                Ok(Some(Item::Response(_))) => {
                    // Finch sends no requests on server connections; a stray response is ignored.
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bad request");
                    self.shared.metrics.bad_request(e.status().map(|s| s.0));
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
    fn write_response(&mut self, cseq: Option<&str>, mut resp: Response) {
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
        let Role::Publisher(p) = &session.role else {
            // A reader's RTCP receiver reports: a sign of life, already counted.
            return;
        };
        let track = p.tracks.iter().enumerate().find_map(|(i, t)| match t {
            Some(TrackTransport::Tcp { rtp, .. }) if *rtp == channel => Some((i, Kind::Rtp)),
            Some(TrackTransport::Tcp { rtcp, .. }) if *rtcp == channel => Some((i, Kind::Rtcp)),
            _ => None,
        });
        if let Some((i, kind)) = track {
            // The earliest deadline stands: a flush with nothing pending costs a lock, a
            // forgotten one leaves a frame unsent.
            if let Some(at) = p.publisher.push(i, kind, payload, Instant::now()) {
                self.flush_at = Some(self.flush_at.map_or(at, |f| f.min(at)));
            }
        }
    }

    /// Ends the session: everything it held goes with it (see `session`).
    pub(crate) fn end_session(&mut self) {
        if let Some(s) = self.session.take() {
            tracing::info!(session = %s.id, path = %s.path, "session ended");
        }
    }
}

/// Polls `f` once: its output if it is ready at once, else `None` (it stays pinned, to be
/// awaited further).
async fn poll_once<F: Future>(mut f: std::pin::Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

async fn sleep_for(d: Duration) {
    tokio::time::sleep(d).await;
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The next batch of a playing reader's packets; pends forever when not playing.
async fn recv_media(
    session: &mut Option<Session>,
    batch: &mut Vec<Packet>,
) -> Result<usize, Ended> {
    match session.as_mut().and_then(Session::playing_mut) {
        Some((p, _)) => p.reader.recv(batch, BATCH).await,
        None => std::future::pending().await,
    }
}
