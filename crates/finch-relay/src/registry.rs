//! The path registry: which paths exist, which source holds each, and their streams.
//!
//! A source takes a path with [`Registry::announce`] and gets a [`Publisher`] handle: the only
//! way to feed, go live on, or give up that path. Dropping the handle gives the path up (closing
//! its stream, which ends its readers, or leaves it away for its grace period), so a source's
//! owner that ends in any way, a panic included, can never leave a path taken.
//!
//! A second source on a taken path is refused ([`AnnounceError::Busy`]; RTSP answers 455, see
//! ARCHITECTURE.md).

use crate::counters::Totals;
use crate::packet::Kind;
use crate::path::{Evict, PathEntry, PathState, Policy, SourceInfo};
use crate::ring::Budget;
use crate::stream::{Feed, RelayParams, Stream};
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

    /// Takes `name` for a source. A path whose source is away (its grace running) is continued
    /// by a source with compatible tracks; a live one is taken over if `policy.takeover`, the
    /// old source being evicted; else it is refused.
    pub fn announce(
        self: &Arc<Self>,
        name: &str,
        source: SourceInfo,
        sdp: Sdp,
        params: RelayParams,
        policy: Policy,
    ) -> Result<Publisher, AnnounceError> {
        let mut paths = self.lock();
        let id = source.id.clone();
        let mut evicted = None;
        let mut retired = None;
        let mut feed = None;
        if let Some(p) = paths.get_mut(name) {
            let away = matches!(p.state, PathState::Away { .. });
            let takeover = policy.takeover && p.source.id != id;
            if !(away || takeover) {
                return Err(AnnounceError::Busy(name.to_owned()));
            }
            if !away {
                evicted = Some(p.source.evict.clone());
            }
            match p.stream.new_source(&sdp) {
                Ok(f) => {
                    tracing::info!(path = name, "a new source continues the stream");
                    p.source = source.clone();
                    p.state = PathState::Announced;
                    p.policy = policy;
                    feed = Some(f);
                }
                Err(_) => {
                    tracing::info!(
                        path = name,
                        "the new source's tracks differ: its readers are closed"
                    );
                    retired = paths.remove(name);
                }
            }
        }
        let feed = match feed {
            Some(f) => f,
            None => {
                let stream = Arc::new(Stream::with_budget(sdp, params, Some(self.budget.clone())));
                let f = stream.feed();
                paths.insert(
                    name.to_owned(),
                    PathEntry {
                        name: name.to_owned(),
                        source,
                        stream,
                        state: PathState::Announced,
                        since: SystemTime::now(),
                        policy,
                    },
                );
                f
            }
        };
        drop(paths);
        if let Some(old) = retired {
            self.retire(&old.stream);
        }
        if let Some(Evict(Some(evict))) = evicted {
            evict();
        }
        Ok(Publisher {
            registry: self.clone(),
            name: name.to_owned(),
            id,
            feed,
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

    /// The source `id` left: with a grace period the path is away and its readers wait; else
    /// the path goes and its readers end.
    fn release(&self, name: &str, id: &str, now: Instant) {
        let mut paths = self.lock();
        let Some(p) = paths.get_mut(name).filter(|p| p.source.id == id) else {
            return;
        };
        if !p.policy.grace.is_zero() && !p.stream.is_closed() {
            p.stream.flush();
            p.state = PathState::Away {
                until: now + p.policy.grace,
            };
            tracing::info!(
                path = name,
                grace_secs = p.policy.grace.as_secs(),
                "source left; its readers wait for it"
            );
            return;
        }
        if let Some(p) = paths.remove(name) {
            self.retire(&p.stream);
            drop(paths);
            tracing::info!(path = name, "source left, path closed");
        }
    }

    /// Closes the paths whose grace has run out; their names.
    pub fn expire(&self, now: Instant) -> Vec<String> {
        let mut paths = self.lock();
        let gone: Vec<String> = paths
            .values()
            .filter(|p| matches!(p.state, PathState::Away { until } if until <= now))
            .map(|p| p.name.clone())
            .collect();
        for name in &gone {
            if let Some(p) = paths.remove(name) {
                self.retire(&p.stream);
                tracing::info!(path = %name, "no source came back within the grace; path closed");
            }
        }
        gone
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
    feed: Feed,
}

impl Publisher {
    /// The path's name.
    pub fn path(&self) -> &str {
        &self.name
    }

    /// The path's stream.
    pub fn stream(&self) -> &Arc<Stream> {
        self.feed.stream()
    }

    /// This source's right to push (for a receive loop that needs its own).
    pub fn feed(&self) -> Feed {
        self.feed.clone()
    }

    /// Relays one packet (see [`Stream::push`]): when to flush if nothing else comes.
    pub fn push(&self, track: usize, kind: Kind, data: Bytes, at: Instant) -> Option<Instant> {
        self.feed.push(track, kind, data, at)
    }

    /// Wakes readers for what is pending (see [`Stream::flush`]).
    pub fn flush(&self) {
        self.feed.flush();
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
            self.feed = stream.feed();
        }
        replaced
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.registry.release(&self.name, &self.id, Instant::now());
    }
}
