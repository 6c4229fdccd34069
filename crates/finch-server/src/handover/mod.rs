//! Handing live sessions to the next worker on a graceful restart, so that no client notices.
//!
//! The supervisor starts the next worker with `_FINCH_ADOPT=1`; that worker listens on an
//! abstract Unix socket named after the supervisor (`take`). When the old worker is told to
//! drain, it connects there (`give`) and, if the next worker speaks its state format, pauses its
//! connections in two rounds: publishers first (each stops reading at a message boundary and
//! flushes its last frame to the readers), then readers of the paths whose publisher moves
//! (each writes what its queue still holds, so it stands at the stream's head) and connections
//! with no session yet. Every paused connection hands the giver its state ([`Moved`]: session
//! id, path, role, tracks, what is read but not parsed, what is queued but not written, the
//! stream's RTP numbering) and its socket's descriptor, and waits for the verdict. The giver
//! sends them all at once (`wire`: SCM_RIGHTS); the taker re-creates every session (publishers'
//! paths first, their readers joined at the next packet), starts their tasks, and answers how
//! many it adopted. Then the old connections end without a word on the wire, and the old
//! worker exits once nothing is left; if anything fails before the answer, they resume as if
//! nothing had happened, and drain as before.
//!
//! UDP sessions move too: their media goes from the shared socket pairs, which the next worker
//! holds as well (same pairs, same order), so what moves is the client's addresses and the
//! routes. The old worker stops reading those sockets when the handover begins, and the next
//! one starts reading them only once it has the sessions (`Handover::settled`): a UDP
//! publisher's datagrams meanwhile wait in the kernel for their new owner.
//!
//! A pulled path moves without its camera session: the next worker gets the path's stream
//! (numbering, cache) and holds it as if its camera had just gone away, its moved readers
//! waiting in it; then it pulls the camera itself (only once it has the sessions), and the
//! camera's stream continues the same numbering from its next keyframe, as after any camera
//! drop within grace. The readers stall for that reconnect, never reconnect themselves.
//!
//! What cannot move drains as before: RTSPS (TLS state does not transfer).

mod give;
mod take;
mod wire;

use finch_relay::Numbering;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub(crate) use give::give;
pub(crate) use take::{adopting, listen};

/// The state format. A worker that does not speak the giver's version refuses it all, and the
/// old worker drains as before.
pub(crate) const VERSION: u32 = 2;

pub use finch_control::ADOPT_ENV;

/// The abstract socket the next worker of this supervisor listens on.
pub(crate) fn socket_name(supervisor_pid: u32) -> String {
    format!("finch-handover-{supervisor_pid}")
}

/// One connection as it moves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Moved {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    /// Bytes read from the client and not parsed yet (the start of its next message).
    pub(crate) unparsed: Vec<u8>,
    /// Bytes queued for the client and not written yet (responses).
    pub(crate) unsent: Vec<u8>,
    pub(crate) described: Option<String>,
    /// What it has been allowed: (action, path).
    pub(crate) granted: Vec<(String, String)>,
    pub(crate) requested: bool,
    pub(crate) session: Option<MovedSession>,
}

/// A session as it moves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MovedSession {
    pub(crate) id: String,
    pub(crate) path: String,
    /// When it was created (ms since the Unix epoch).
    pub(crate) since_ms: u64,
    /// Per track of the stream: how it reaches its peer, if set up.
    pub(crate) tracks: Vec<Option<MovedTrack>>,
    pub(crate) role: MovedRole,
}

/// How a set-up track reaches its peer: interleaved channels, or the client's UDP ports and
/// the shared pair that serves them (the next worker has the same pairs, in the same order).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub(crate) enum MovedTrack {
    Tcp {
        rtp: u8,
        rtcp: u8,
    },
    Udp {
        rtp: SocketAddr,
        rtcp: SocketAddr,
        pair: usize,
    },
}

/// What the session does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum MovedRole {
    Publisher {
        /// The SDP its stream was announced with.
        sdp: String,
        recording: bool,
        numbering: Numbering,
        /// Its stream's last sender reports and GOP cache, so new readers in the next worker
        /// start at once, as they would have here.
        reports: Vec<Cached>,
        cache: Vec<Cached>,
    },
    Reader {
        /// `ready`, `playing` or `paused`.
        state: String,
    },
}

/// A pulled path's stream as it moves (its camera session does not).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MovedPath {
    pub(crate) path: String,
    pub(crate) sdp: String,
    pub(crate) numbering: Numbering,
    pub(crate) reports: Vec<Cached>,
    pub(crate) cache: Vec<Cached>,
}

/// A cached packet as it moves (in readers' numbering).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Cached {
    pub(crate) track: usize,
    pub(crate) rtcp: bool,
    pub(crate) key: bool,
    pub(crate) data: Vec<u8>,
}

impl Cached {
    pub(crate) fn of(p: &finch_relay::Packet) -> Cached {
        Cached {
            track: p.track,
            rtcp: p.is_rtcp(),
            key: p.key,
            data: p.data().to_vec(),
        }
    }

    pub(crate) fn packet(self, at: std::time::Instant) -> finch_relay::Packet {
        let kind = if self.rtcp {
            finch_relay::Kind::Rtcp
        } else {
            finch_relay::Kind::Rtp
        };
        finch_relay::Packet::new(self.track, kind, self.key, at, self.data.into())
    }
}

impl Moved {
    pub(crate) fn role(&self) -> &'static str {
        match self.session.as_ref().map(|s| &s.role) {
            Some(MovedRole::Publisher { .. }) => "publisher",
            Some(MovedRole::Reader { .. }) => "reader",
            None => "connection",
        }
    }
}

/// A connection's answer to a round.
pub(crate) enum Answer {
    /// Not moving this round (not eligible, or not its round).
    Decline,
    /// Paused: its state and socket; it waits for the verdict (true: moved, end quietly).
    Paused {
        moved: Box<Moved>,
        fd: RawFd,
        verdict: oneshot::Sender<bool>,
    },
}

/// Which round a connection is asked in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    Publishers,
    Others,
}

/// The worker's side of a handover in progress: the rounds' signals, where answers go, and
/// the connections that could answer.
#[derive(Default)]
pub struct Handover {
    pub(crate) publishers: CancellationToken,
    pub(crate) others: CancellationToken,
    answers: Mutex<Option<mpsc::UnboundedSender<Answer>>>,
    /// Paths whose publisher is moving: their readers follow.
    moving: Mutex<HashSet<String>>,
    /// Plain-TCP connections alive (each answers each round once).
    movable: AtomicUsize,
    /// What this worker took over from its predecessor, for its restart entry.
    pub(crate) took: Mutex<Option<String>>,
    /// Until when this worker expects its predecessor's sessions (see [`Handover::expecting`]).
    expecting_until: Mutex<Option<std::time::Instant>>,
    /// Fired once this worker has its predecessor's sessions, or expects none: only then does
    /// it read the shared UDP sockets (until then the old worker's UDP publishers' datagrams
    /// wait in the kernel for whichever worker will own them, instead of being split).
    pub settled: CancellationToken,
}

impl Handover {
    /// Counts a connection that can move while the guard lives.
    pub(crate) fn movable(self: &Arc<Self>) -> MovableGuard {
        self.movable.fetch_add(1, Ordering::Relaxed);
        MovableGuard(self.clone())
    }

    /// Whether the previous worker's sessions are on their way: a request for a path that is
    /// not here yet waits for them rather than getting 404 (its publisher may be among them).
    pub(crate) fn expecting(&self) -> bool {
        self.expecting_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| std::time::Instant::now() < t)
    }

    fn expect(&self, until: Option<std::time::Instant>) {
        *self
            .expecting_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = until;
    }

    /// Whether a reader of this path may follow its publisher.
    pub(crate) fn path_moving(&self, path: &str) -> bool {
        self.moving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(path)
    }

    /// Delivers a connection's answer; gives it back if nobody listens any more.
    pub(crate) fn answer(&self, a: Answer) -> Result<(), Answer> {
        let tx = self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match tx {
            Some(tx) => tx.send(a).map_err(|e| e.0),
            None => Err(a),
        }
    }
}

/// Keeps a connection counted in [`Handover::movable`].
pub(crate) struct MovableGuard(Arc<Handover>);

impl Drop for MovableGuard {
    fn drop(&mut self) {
        self.0.movable.fetch_sub(1, Ordering::Relaxed);
    }
}
