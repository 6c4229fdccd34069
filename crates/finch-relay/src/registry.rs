//! The path registry: which paths exist, which source holds each, and their streams.
//!
//! A source takes a path with [`Registry::announce`] and gets a [`Publisher`] handle: the only
//! way to feed, go live on, or give up that path. Dropping the handle gives the path up (closing
//! its stream, which ends its readers), so a source's owner that ends in any way, a panic
//! included, can never leave a path taken.
//!
//! A second source on a taken path is refused ([`AnnounceError::Busy`]; RTSP answers 455, see
//! ARCHITECTURE.md).

use crate::counters::Totals;
use crate::packet::Kind;
use crate::path::{PathEntry, PathState, SourceInfo};
use crate::ring::Budget;
use crate::stream::{RelayParams, Stream};
use bytes::Bytes;
use finch_proto::sdp::Sdp;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

/// Why a source could not take a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// Another source holds it.
    #[error("path {0:?} already has a source")]
    Busy(String),
}

/// All paths.
pub struct Registry {
    paths: Mutex<HashMap<String, PathEntry>>,
    /// Totals of streams that have ended, so counters never go back.
    retired: Mutex<Totals>,
    /// The memory every stream's ring counts against.
    budget: Arc<Budget>,
}

impl Registry {
    /// An empty registry without a shared memory bound.
    pub fn new() -> Arc<Registry> {
        Registry::with_budget(usize::MAX)
    }

    /// An empty registry whose streams together hold at most `max_bytes`.
    pub fn with_budget(max_bytes: usize) -> Arc<Registry> {
        Arc::new(Registry {
            paths: Mutex::new(HashMap::new()),
            retired: Mutex::new(Totals::default()),
            budget: Budget::new(max_bytes),
        })
    }

    /// The shared memory bound.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, PathEntry>> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retire(&self, stream: &Stream) {
        stream.close();
        let t = stream.totals();
        let mut r = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        *r = r.plus(t);
    }

    /// Traffic since the registry was made: ended streams plus live ones. Read under the paths
    /// lock, as streams are retired under it, so a scrape never sees a stream in neither sum.
    pub fn totals(&self) -> Totals {
        let paths = self.lock();
        let mut t = *self.retired.lock().unwrap_or_else(|e| e.into_inner());
        for p in paths.values() {
            t = t.plus(p.stream.totals());
        }
        t
    }

    /// Takes `name` for a source and creates its stream.
    pub fn announce(
        self: &Arc<Self>,
        name: &str,
        source: SourceInfo,
        sdp: Sdp,
        params: RelayParams,
    ) -> Result<Publisher, AnnounceError> {
        let mut paths = self.lock();
        if paths.contains_key(name) {
            return Err(AnnounceError::Busy(name.to_owned()));
        }
        let stream = Arc::new(Stream::with_budget(sdp, params, Some(self.budget.clone())));
        let id = source.id.clone();
        paths.insert(
            name.to_owned(),
            PathEntry {
                name: name.to_owned(),
                source,
                stream: stream.clone(),
                state: PathState::Announced,
                since: SystemTime::now(),
            },
        );
        Ok(Publisher {
            registry: self.clone(),
            name: name.to_owned(),
            id,
            stream,
        })
    }

    /// Updates a path's entry if `id` holds it.
    fn update(&self, name: &str, id: &str, f: impl FnOnce(&mut PathEntry)) -> bool {
        match self.lock().get_mut(name) {
            Some(p) if p.source.id == id => {
                f(p);
                true
            }
            _ => false,
        }
    }

    /// Gives a path up, if `id` holds it: the path goes and its readers end.
    fn unpublish(&self, name: &str, id: &str) {
        let mut paths = self.lock();
        if paths.get(name).is_some_and(|p| p.source.id == id) {
            if let Some(p) = paths.remove(name) {
                self.retire(&p.stream);
                drop(paths);
                tracing::info!(path = name, "source left, path closed");
            }
        }
    }

    /// The stream of a live path.
    pub fn live_stream(&self, name: &str) -> Option<Arc<Stream>> {
        self.lock()
            .get(name)
            .filter(|p| p.is_live())
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

    /// How many paths there are.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Closes every path (the server going idle or stopping). Their publishers' handles stay
    /// valid but no longer hold anything.
    pub fn close_all(&self) {
        let mut paths = self.lock();
        for (_, p) in paths.drain() {
            self.retire(&p.stream);
        }
    }
}

/// A source's hold on its path. Dropping it gives the path up.
pub struct Publisher {
    registry: Arc<Registry>,
    name: String,
    id: String,
    stream: Arc<Stream>,
}

impl Publisher {
    /// The path's name.
    pub fn path(&self) -> &str {
        &self.name
    }

    /// The path's stream.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Relays one packet (see [`Stream::push`]): when to flush if nothing else comes.
    pub fn push(&self, track: usize, kind: Kind, data: Bytes, at: Instant) -> Option<Instant> {
        self.stream.push(track, kind, data, at)
    }

    /// Wakes readers for what is pending (see [`Stream::flush`]).
    pub fn flush(&self) {
        self.stream.flush();
    }

    /// Media is flowing: readers may find the path. False if the path is no longer this
    /// source's (the server went idle).
    pub fn go_live(&self) -> bool {
        self.registry
            .update(&self.name, &self.id, |p| p.state = PathState::Live)
    }

    /// Records how the source's media arrives.
    pub fn set_transport(&self, transport: &'static str) {
        self.registry.update(&self.name, &self.id, |p| {
            p.source.transport = Some(transport)
        });
    }

    /// The same source announcing again: its new description replaces the old one in one step
    /// (no other source can take the path in between), and the old stream's readers end.
    pub fn reannounce(&mut self, sdp: Sdp, params: RelayParams) -> bool {
        let stream = Arc::new(Stream::with_budget(
            sdp,
            params,
            Some(self.registry.budget.clone()),
        ));
        let mut old = None;
        let replaced = self.registry.update(&self.name, &self.id, |p| {
            old = Some(std::mem::replace(&mut p.stream, stream.clone()));
            p.state = PathState::Announced;
            p.source.transport = None;
        });
        if let Some(old) = old {
            self.registry.retire(&old);
        }
        if replaced {
            self.stream = stream;
        }
        replaced
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.registry.unpublish(&self.name, &self.id);
    }
}
