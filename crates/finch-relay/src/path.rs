//! A path (`live/cam1`) and the source that feeds it.
//!
//! A path has at most one source: a publisher session (ANNOUNCE/RECORD) or a pulled camera
//! (and later a peer node). Its life: a source *announces* it (the path is taken but has no media
//! yet, so readers don't see it), the source goes *live* (RECORD, or PLAY towards a camera), and
//! when the source leaves the path is removed, which closes its stream and so ends every reader;
//! or, with a grace period (`publisher_grace_secs`), the path is *away*: its readers stay, and a
//! source that comes back within the grace continues the same stream.

use crate::stream::Stream;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What kind of source feeds a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A client pushing with ANNOUNCE/RECORD.
    Publisher,
    /// A camera Finch pulls as an RTSP client.
    Pull,
}

impl SourceKind {
    /// The name used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Publisher => "publisher",
            SourceKind::Pull => "pull",
        }
    }
}

/// Who feeds a path.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// Its kind.
    pub kind: SourceKind,
    /// Its id: the publisher's session id. Only the source with this id may change the path.
    pub id: String,
    /// Its address.
    pub peer: SocketAddr,
    /// `tcp` or `udp`, once known.
    pub transport: Option<&'static str>,
    /// How to make this source stop when another takes the path over (`override_publisher`).
    pub evict: Evict,
}

/// A hook that makes a source stop (it closes the publisher's connection, say).
#[derive(Clone, Default)]
pub struct Evict(pub Option<Arc<dyn Fn() + Send + Sync>>);

impl fmt::Debug for Evict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Evict(..)"
        } else {
            "Evict(none)"
        })
    }
}

/// What happens when a path's source leaves, or another wants the path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// How long readers wait for a source to come back (0: they are closed at once).
    pub grace: Duration,
    /// Whether a new source takes a live path over instead of being refused.
    pub takeover: bool,
}

/// Where a path is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    /// Taken by a source that has not started sending (ANNOUNCE without RECORD yet).
    Announced,
    /// Media is flowing; readers find it.
    Live,
    /// The source left; readers stay until `until` for one to come back.
    Away {
        /// When the grace ends.
        until: Instant,
    },
}

/// One path, as the registry and the admin API see it.
#[derive(Clone)]
pub struct PathEntry {
    /// The path name (`live/cam1`).
    pub name: String,
    /// Who feeds it.
    pub source: SourceInfo,
    /// The stream.
    pub stream: Arc<Stream>,
    /// Where it is in its life.
    pub state: PathState,
    /// When its source announced it.
    pub since: SystemTime,
    /// What happens when the source leaves.
    pub policy: Policy,
}

impl PathEntry {
    /// Whether readers may find it.
    pub fn is_live(&self) -> bool {
        self.state == PathState::Live
    }
}
