//! The path registry: which paths exist, who publishes on each, and their streams.
//!
//! A path has at most one publisher. ANNOUNCE reserves the path for the announcing session (a
//! second ANNOUNCE gets 455, see ARCHITECTURE.md); RECORD makes it ready, and only then do
//! DESCRIBE and SETUP from readers find it. When the publisher leaves, the path is removed and its
//! stream closed, which ends every reader's queue.

use crate::stream::{RelayParams, Stream};
use finch_proto::sdp::Sdp;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Who feeds a path.
#[derive(Debug, Clone)]
pub struct Source {
    /// `publisher` or `pull`.
    pub kind: &'static str,
    /// The publisher's session id.
    pub session: String,
    /// Its address.
    pub peer: SocketAddr,
    /// `tcp` or `udp`, once SETUP chose.
    pub transport: Option<&'static str>,
}

/// One path.
#[derive(Clone)]
pub struct PathEntry {
    /// The path name (`live/cam1`).
    pub name: String,
    /// Who feeds it.
    pub source: Source,
    /// The stream.
    pub stream: Arc<Stream>,
    /// Whether media is flowing (RECORD done).
    pub ready: bool,
    /// When the publisher announced it.
    pub since: SystemTime,
}

/// Why a publisher could not take a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// Another session publishes there.
    #[error("path {0:?} already has a publisher")]
    Busy(String),
}

/// Traffic totals, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Packets from publishers.
    pub packets_in: u64,
    /// Bytes from publishers.
    pub bytes_in: u64,
    /// Packets to readers.
    pub packets_out: u64,
    /// Bytes to readers.
    pub bytes_out: u64,
    /// Packets dropped for slow readers.
    pub packets_dropped: u64,
    /// Readers disconnected as too slow.
    pub readers_kicked: u64,
}

impl Totals {
    fn add(&mut self, c: &crate::stream::Counters) {
        use std::sync::atomic::Ordering::Relaxed;
        self.packets_in += c.packets_in.load(Relaxed);
        self.bytes_in += c.bytes_in.load(Relaxed);
        self.packets_out += c.packets_out.load(Relaxed);
        self.bytes_out += c.bytes_out.load(Relaxed);
        self.packets_dropped += c.packets_dropped.load(Relaxed);
        self.readers_kicked += c.readers_kicked.load(Relaxed);
    }
}

/// All paths.
#[derive(Default)]
pub struct Registry {
    paths: Mutex<HashMap<String, PathEntry>>,
    /// Totals of streams that have ended, so counters never go back.
    retired: Mutex<Totals>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PathEntry>> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retire(&self, stream: &Stream) {
        stream.close();
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(&stream.counters);
    }

    /// Traffic since the worker started: ended streams plus live ones. Read under the paths
    /// lock, as streams are retired under it, so a scrape never sees a stream in neither sum.
    pub fn totals(&self) -> Totals {
        let paths = self.lock();
        let mut t = *self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for p in paths.values() {
            t.add(&p.stream.counters);
        }
        t
    }

    /// Reserves `name` for a publisher and creates its stream.
    pub fn announce(
        &self,
        name: &str,
        source: Source,
        sdp: Sdp,
        params: RelayParams,
    ) -> Result<Arc<Stream>, AnnounceError> {
        let mut paths = self.lock();
        if let Some(existing) = paths.get(name) {
            if existing.source.session != source.session {
                return Err(AnnounceError::Busy(name.to_owned()));
            }
            // The same session announcing again replaces its own description.
            let old = existing.stream.clone();
            self.retire(&old);
        }
        let stream = Arc::new(Stream::new(sdp, params));
        paths.insert(
            name.to_owned(),
            PathEntry {
                name: name.to_owned(),
                source,
                stream: stream.clone(),
                ready: false,
                since: SystemTime::now(),
            },
        );
        Ok(stream)
    }

    /// Records the publisher's transport (`tcp`/`udp`).
    pub fn set_transport(&self, name: &str, session: &str, transport: &'static str) {
        if let Some(p) = self.lock().get_mut(name) {
            if p.source.session == session {
                p.source.transport = Some(transport);
            }
        }
    }

    /// RECORD: the path is live.
    pub fn set_ready(&self, name: &str, session: &str) -> bool {
        match self.lock().get_mut(name) {
            Some(p) if p.source.session == session => {
                p.ready = true;
                true
            }
            _ => false,
        }
    }

    /// The publisher left: remove the path and end its readers.
    pub fn unpublish(&self, name: &str, session: &str) {
        let mut paths = self.lock();
        if paths.get(name).is_some_and(|p| p.source.session == session) {
            if let Some(p) = paths.remove(name) {
                self.retire(&p.stream);
                drop(paths);
                tracing::info!(path = name, "publisher left, path closed");
            }
        }
    }

    /// The stream of a ready path.
    pub fn ready_stream(&self, name: &str) -> Option<Arc<Stream>> {
        self.lock()
            .get(name)
            .filter(|p| p.ready)
            .map(|p| p.stream.clone())
    }

    /// One path.
    pub fn get(&self, name: &str) -> Option<PathEntry> {
        self.lock().get(name).cloned()
    }

    /// Every path, sorted by name.
    pub fn list(&self) -> Vec<PathEntry> {
        let mut v: Vec<PathEntry> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Closes every path (server going idle or stopping).
    pub fn close_all(&self) {
        let mut paths = self.lock();
        for (_, p) in paths.drain() {
            self.retire(&p.stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RelayParams {
        RelayParams {
            reader_queue_packets: 16,
            slow_reader_max_dropped_packets: 10,
            gop_cache: true,
            gop_cache_max_bytes: 1000,
            max_readers: 10,
        }
    }

    fn source(session: &str) -> Source {
        Source {
            kind: "publisher",
            session: session.into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            transport: None,
        }
    }

    #[test]
    fn one_publisher_per_path() {
        let r = Registry::default();
        let sdp = Sdp::parse(b"v=0\r\n").unwrap();
        r.announce("a", source("s1"), sdp.clone(), params())
            .unwrap();
        assert_eq!(
            r.announce("a", source("s2"), sdp.clone(), params()).err(),
            Some(AnnounceError::Busy("a".into()))
        );
        assert!(r.ready_stream("a").is_none(), "not ready before RECORD");
        assert!(!r.set_ready("a", "s2"));
        assert!(r.set_ready("a", "s1"));
        let stream = r.ready_stream("a").unwrap();
        r.unpublish("a", "s2");
        assert!(r.get("a").is_some(), "only the publisher can unpublish");
        r.unpublish("a", "s1");
        assert!(r.get("a").is_none());
        assert!(stream.closed.is_cancelled());
        r.announce("a", source("s2"), sdp, params()).unwrap();
    }
}
