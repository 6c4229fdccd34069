//! A path (`live/cam1`) and the source that feeds it.
//!
//! A path has at most one source: a publisher session today (ANNOUNCE/RECORD), a pulled camera
//! or a peer node later. Its life: a source *announces* it (the path is taken but has no media
//! yet, so readers don't see it), the source goes *live* (RECORD), and the path is removed when
//! the source leaves, which closes its stream and so ends every reader.

use crate::stream::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// What kind of source feeds a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A client pushing with ANNOUNCE/RECORD.
    Publisher,
}

impl SourceKind {
    /// The name used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Publisher => "publisher",
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
}

/// Where a path is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    /// Taken by a source that has not started sending (ANNOUNCE without RECORD yet).
    Announced,
    /// Media is flowing; readers find it.
    Live,
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
}

impl PathEntry {
    /// Whether readers may find it.
    pub fn is_live(&self) -> bool {
        self.state == PathState::Live
    }
}
