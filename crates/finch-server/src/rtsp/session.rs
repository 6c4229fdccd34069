//! An RTSP session (RFC 2326 §3.9, the state machine of Appendix A) as a relay holds it.
//!
//! A publisher's session: announced (ANNOUNCE took the path) → tracks set up (SETUP
//! mode=record) → recording (RECORD). A reader's: ready (SETUP) → playing (PLAY) ⇄ paused
//! (PAUSE). TEARDOWN, a timeout or the connection closing ends either.
//!
//! Everything a session holds in the rest of the worker is held by a guard with a `Drop`: its
//! path ([`finch_relay::Publisher`]), its place in a stream ([`finch_relay::Reader`]), its UDP
//! routes ([`RouteSet`]) and its row in the session table ([`Entry`]). Dropping the session,
//! whatever ends it (a panic in its connection's task included), gives all of it back.

use crate::activity::Activity;
use crate::sessions::Entry;
use crate::udp::RouteSet;
use finch_relay::{Publisher, Reader, Stream};
use std::net::SocketAddr;
use std::sync::Arc;

/// How a set-up track reaches its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrackTransport {
    /// Interleaved in this connection.
    Tcp { rtp: u8, rtcp: u8 },
    /// To the client's UDP ports, from the shared pair `pair`.
    Udp {
        rtp: SocketAddr,
        rtcp: SocketAddr,
        pair: usize,
    },
}

impl TrackTransport {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            TrackTransport::Tcp { .. } => "tcp",
            TrackTransport::Udp { .. } => "udp",
        }
    }
}

/// The session this connection owns.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) path: String,
    pub(crate) activity: Activity,
    pub(crate) role: Role,
    /// Its UDP routes (empty without UDP).
    pub(crate) routes: Option<RouteSet>,
    pub(crate) entry: Entry,
}

/// What a session does.
pub(crate) enum Role {
    Publisher(Publishing),
    Reader(Reading),
}

/// A publisher's session.
pub(crate) struct Publishing {
    pub(crate) publisher: Publisher,
    pub(crate) tracks: Vec<Option<TrackTransport>>,
    pub(crate) recording: bool,
    /// When it announced (RECORD must follow within `rtsp.announce_timeout_secs`).
    pub(crate) since: std::time::Instant,
}

/// A reader's session.
pub(crate) struct Reading {
    pub(crate) stream: Arc<Stream>,
    pub(crate) tracks: Vec<Option<TrackTransport>>,
    pub(crate) state: ReadState,
}

/// Where a reader's session is.
pub(crate) enum ReadState {
    /// Set up, not playing yet.
    Ready,
    /// Playing: its place in the stream.
    Playing(Playing),
    /// Played, then paused: the next PLAY resumes at a keyframe, past the GOP cache it had.
    Paused,
}

/// A playing reader.
pub(crate) struct Playing {
    pub(crate) reader: Reader,
    /// Cached packets still to send paced over UDP (see `media`).
    pub(crate) paced: u64,
}

impl Session {
    /// Its role's name for the API.
    pub(crate) fn role_name(&self) -> &'static str {
        match self.role {
            Role::Publisher(_) => "publisher",
            Role::Reader(_) => "reader",
        }
    }

    /// The playing reader, if it plays.
    pub(crate) fn playing_mut(&mut self) -> Option<(&mut Playing, &[Option<TrackTransport>])> {
        match &mut self.role {
            Role::Reader(Reading {
                state: ReadState::Playing(p),
                tracks,
                ..
            }) => Some((p, tracks)),
            _ => None,
        }
    }
}
