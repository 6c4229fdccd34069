//! A cluster of Finch nodes sharing one path registry in Redis (CONTRACT.md "Cluster").
//!
//! Each node keeps its own record (`node → advertise_url`, load) and a claim on every path it
//! holds a source for, with a TTL it refreshes: a node that dies drops out on its own. A
//! publisher's ANNOUNCE claims its path atomically first, so a second publisher on another node
//! gets 455. A DESCRIBE for a path that is not here but is owned elsewhere starts an on-demand
//! pull from the owner (the `pull` room's machinery; one per path, however many readers), which
//! is not itself registered. Redis being away never stops a node serving what it holds: every
//! operation is bounded, a claim that cannot be checked is allowed, and the keeper re-registers
//! everything when Redis is back.
//!
//! RTSP handlers are synchronous, so lookups and claims run as tasks whose answers the
//! connection picks up on its next turn (see `answered`), like a DESCRIBE waiting for a camera.

mod store;

pub use store::{Claimed, NodeRecord};

use crate::shared::Shared;
use finch_config::{ClusterConfig, CLUSTER_USER};
use finch_relay::{PathState, SourceKind};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::Store;
use tokio_util::sync::CancellationToken;

/// A lookup of a path that is not local.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    Pending,
    /// Another node has it; a pull from it is set up.
    Pulling,
    /// No node has it (or Redis could not say).
    Absent,
}

/// What an ANNOUNCE's claim came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Still asking Redis.
    Pending,
    /// The path is this node's.
    Won,
    /// Another node publishes it.
    Lost(String),
    /// Redis did not answer: the publisher is let in (a node serves what it holds).
    Unreachable,
}

/// What a DESCRIBE for a path that is not local should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Find {
    /// Wait: Redis is being asked.
    Pending,
    /// Wait for the pull from the owner, like an on-demand camera.
    Pulling,
    /// Nobody has it: 404.
    Absent,
}

/// One node's view of the cluster.
pub struct Cluster {
    /// This node's id.
    pub node_id: String,
    /// How others reach this node.
    pub advertise_url: String,
    ttl: Duration,
    secret: String,
    store: Store,
    up: AtomicBool,
    /// Whether Redis has answered at least once (or failed once): the first state is logged.
    known: AtomicBool,
    /// Answers, with when they came: every request waiting on the path reads them while fresh.
    lookups: Mutex<HashMap<String, (Lookup, Instant)>>,
    claims: Mutex<HashMap<String, (Claim, Instant)>>,
    /// Paths this node has claimed in Redis.
    owned: Mutex<HashSet<String>>,
    nodes_seen: AtomicU64,
    /// Bytes received at the last refresh, for the node's bitrate.
    last_in: Mutex<Option<(Instant, u64)>>,
    /// Stops the keeper (the worker is stopping or handing over).
    stop: CancellationToken,
}

/// How long an answer from Redis serves requests that waited for it, or come right after.
const FRESH: Duration = Duration::from_secs(1);

/// This machine's name, for the default node id and URL.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Cluster {
    /// The cluster side of a worker with this config, or `None` standalone (or with a Redis URL
    /// the client refuses, which is logged).
    pub fn new(config: &ClusterConfig, rtsp_port: u16) -> Option<Arc<Cluster>> {
        if !config.enabled() {
            return None;
        }
        let host = hostname();
        let store = match Store::new(&config.redis_url) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cluster.redis_url cannot be used; running standalone");
                return None;
            }
        };
        Some(Arc::new(Cluster {
            node_id: config.node_id_or(&host, rtsp_port),
            advertise_url: config.advertise_url_or(&host, rtsp_port),
            ttl: Duration::from_secs(config.ttl_secs),
            secret: config.secret.clone(),
            store,
            up: AtomicBool::new(false),
            known: AtomicBool::new(false),
            lookups: Mutex::default(),
            claims: Mutex::default(),
            owned: Mutex::default(),
            nodes_seen: AtomicU64::new(0),
            last_in: Mutex::new(None),
            stop: CancellationToken::new(),
        }))
    }

    /// Whether Redis answered the last operation.
    pub fn redis_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Nodes registered at the last refresh, this one included.
    pub fn nodes_seen(&self) -> u64 {
        self.nodes_seen.load(Ordering::Relaxed)
    }

    /// Paths this node holds claims on.
    pub fn owned_count(&self) -> usize {
        lock(&self.owned).len()
    }

    /// Records whether Redis answered; a change is logged once.
    fn saw<T>(&self, r: &Result<T, store::StoreError>) {
        let up = r.is_ok();
        let was = self.up.swap(up, Ordering::Relaxed);
        let first = !self.known.swap(true, Ordering::Relaxed);
        match (up, was, first) {
            (true, false, _) => {
                tracing::info!(node = %self.node_id, "cluster: Redis reachable; registering this node's paths")
            }
            (false, true, _) | (false, _, true) => {
                if let Err(e) = r {
                    tracing::warn!(node = %self.node_id, error = %e, "cluster: Redis unreachable; serving local paths and retrying")
                }
            }
            _ => {}
        }
    }

    /// The URL this node pulls `path` from a node advertised at `base` with, carrying the
    /// cluster credential when there is one.
    fn pull_url(&self, base: &str, path: &str) -> String {
        let base = base.trim_end_matches('/');
        let url = format!("{base}/{path}");
        if self.secret.is_empty() {
            return url;
        }
        match url.split_once("://") {
            Some((scheme, rest)) => format!(
                "{scheme}://{CLUSTER_USER}:{}@{rest}",
                finch_proto::uri::percent_encode_userinfo(&self.secret)
            ),
            None => url,
        }
    }

    /// Where `path` is, for a pull that lost its owner: the URL of the node that owns it now.
    pub async fn locate(&self, path: &str) -> Option<String> {
        let r = self.store.owner(path).await;
        self.saw(&r);
        match r {
            Ok(Some((node, rec))) if node != self.node_id => {
                Some(self.pull_url(&rec.advertise_url, path))
            }
            _ => None,
        }
    }

    /// A DESCRIBE found no local stream on `path`: ask Redis (in a task), or give the answer a
    /// task left.
    pub fn find(self: &Arc<Self>, shared: &Arc<Shared>, path: &str) -> Find {
        let mut lookups = lock(&self.lookups);
        lookups.retain(|_, (l, at)| *l == Lookup::Pending || at.elapsed() < FRESH);
        match lookups.get(path) {
            Some((Lookup::Pending, _)) => return Find::Pending,
            Some((Lookup::Pulling, _)) => return Find::Pulling,
            Some((Lookup::Absent, _)) => return Find::Absent,
            None => {}
        }
        lookups.insert(path.to_owned(), (Lookup::Pending, Instant::now()));
        drop(lookups);
        let (me, shared, path) = (self.clone(), shared.clone(), path.to_owned());
        tokio::spawn(async move {
            let answer = match me.locate(&path).await {
                Some(url) => {
                    tracing::info!(path, from = %finch_proto::uri::redact(&url), "cluster: pulling a path another node publishes");
                    shared.pulls.add_cluster(&shared, &path, url);
                    shared.metrics.cluster_lookup("found");
                    Lookup::Pulling
                }
                None => {
                    shared.metrics.cluster_lookup("absent");
                    Lookup::Absent
                }
            };
            lock(&me.lookups).insert(path, (answer, Instant::now()));
        });
        Find::Pending
    }

    /// An ANNOUNCE on `path`: claim it in Redis (in a task), or give the answer a task left.
    pub fn claim(self: &Arc<Self>, shared: &Arc<Shared>, path: &str, take_over: bool) -> Claim {
        let mut claims = lock(&self.claims);
        claims.retain(|_, (c, at)| *c == Claim::Pending || at.elapsed() < FRESH);
        if let Some((c, _)) = claims.get(path) {
            return c.clone();
        }
        claims.insert(path.to_owned(), (Claim::Pending, Instant::now()));
        drop(claims);
        let (me, shared, path) = (self.clone(), shared.clone(), path.to_owned());
        tokio::spawn(async move {
            let r = me.store.claim(&path, &me.node_id, me.ttl, take_over).await;
            me.saw(&r);
            let answer = match r {
                Ok(Claimed::Ours) => {
                    lock(&me.owned).insert(path.clone());
                    Claim::Won
                }
                Ok(Claimed::Theirs(node)) => Claim::Lost(node),
                Err(_) => Claim::Unreachable,
            };
            shared.metrics.cluster_claim(match answer {
                Claim::Won => "won",
                Claim::Lost(_) => "lost",
                _ => "unreachable",
            });
            lock(&me.claims).insert(path, (answer, Instant::now()));
        });
        Claim::Pending
    }

    /// Whether a lookup or claim on `path` has an answer a waiting request should pick up.
    pub fn answered(&self, path: &str) -> bool {
        lock(&self.lookups)
            .get(path)
            .is_some_and(|(l, at)| *l != Lookup::Pending && at.elapsed() < FRESH)
            || lock(&self.claims)
                .get(path)
                .is_some_and(|(c, at)| *c != Claim::Pending && at.elapsed() < FRESH)
    }

    /// The nodes for `GET /api/v1/cluster`: from Redis, or `Err` with this node alone.
    pub async fn nodes(&self) -> Result<Vec<(String, NodeRecord, Vec<String>)>, String> {
        let r = self.store.nodes().await;
        self.saw(&r);
        r.map_err(|e| e.to_string())
    }

    /// Keeps this node's record and claims fresh until stopped: every second it claims new
    /// local paths and gives up gone ones, and refreshes everything every third of the TTL.
    pub async fn keep(self: Arc<Self>, shared: Arc<Shared>) {
        let every = (self.ttl / 3).max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_full: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let full = last_full.is_none_or(|t| t.elapsed() >= every) || !self.redis_up();
            if self.refresh(&shared, full).await && full {
                last_full = Some(Instant::now());
            }
        }
    }

    /// One pass of the keeper; false if Redis failed.
    async fn refresh(&self, shared: &Arc<Shared>, full: bool) -> bool {
        let local = local_sources(shared);
        let owned: HashSet<String> = lock(&self.owned).clone();
        if full {
            let snap = shared.snapshot();
            let record = NodeRecord {
                advertise_url: self.advertise_url.clone(),
                readers: (snap.readers.0 + snap.readers.1 + snap.hls.muxers) as u64,
                publishers: snap.publishers as u64,
                bitrate_in: self.bitrate_in(snap.totals.bytes_in),
            };
            let r = self.store.register(&self.node_id, &record, self.ttl).await;
            self.saw(&r);
            if r.is_err() {
                return false;
            }
            if let Ok(n) = self.store.nodes().await {
                self.nodes_seen.store(n.len() as u64, Ordering::Relaxed);
            }
        }
        for (path, publisher, evict) in &local {
            if !full && owned.contains(path) {
                continue;
            }
            let r = self.store.claim(path, &self.node_id, self.ttl, false).await;
            self.saw(&r);
            match r {
                Ok(Claimed::Ours) => {
                    lock(&self.owned).insert(path.clone());
                }
                Ok(Claimed::Theirs(node)) => {
                    lock(&self.owned).remove(path);
                    if *publisher {
                        // Another node took the path over (override_publisher) or won it while
                        // Redis was away: one owner only, so this publisher goes.
                        tracing::warn!(path, owner = %node, "cluster: another node owns this path now; closing the local publisher");
                        if let Some(f) = &evict.0 {
                            f();
                        }
                    }
                }
                Err(_) => return false,
            }
        }
        for path in owned {
            if local.iter().any(|(p, _, _)| *p == path) {
                continue;
            }
            let r = self.store.release(&path, &self.node_id).await;
            self.saw(&r);
            if r.is_err() {
                return false;
            }
            lock(&self.owned).remove(&path);
        }
        true
    }

    /// Bits per second received since the last refresh.
    fn bitrate_in(&self, bytes_in: u64) -> u64 {
        let now = Instant::now();
        let last = lock(&self.last_in).replace((now, bytes_in));
        match last {
            Some((t, b)) if now > t => {
                let secs = now.duration_since(t).as_secs_f64();
                (bytes_in.saturating_sub(b) as f64 * 8.0 / secs) as u64
            }
            _ => 0,
        }
    }

    /// A clean stop: stops the keeper and removes this node and its claims from Redis.
    pub async fn leave(&self) {
        self.stop.cancel();
        let owned: Vec<String> = lock(&self.owned).drain().collect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for p in &owned {
                let _ = self.store.release(p, &self.node_id).await;
            }
            let _ = self.store.unregister(&self.node_id).await;
        })
        .await;
        tracing::info!(node = %self.node_id, paths = owned.len(), "cluster: left the registry");
    }

    /// A graceful restart: the next worker (same node) keeps the claims; this one stops
    /// touching them.
    pub fn hand_over(&self) {
        self.stop.cancel();
    }
}

/// The paths this node holds a source for (not pulls from other nodes): (path, whether it is a
/// publisher, how to evict it).
fn local_sources(shared: &Arc<Shared>) -> Vec<(String, bool, finch_relay::Evict)> {
    shared
        .registry
        .list()
        .into_iter()
        .filter(|e| !matches!(e.state, PathState::Away { .. }))
        .filter(|e| !shared.pulls.is_cluster(&e.name))
        .map(|e| {
            let publisher = e.source.kind == SourceKind::Publisher;
            (e.name, publisher, e.source.evict)
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(secret: &str) -> Arc<Cluster> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        Cluster::new(
            &ClusterConfig {
                redis_url: "redis://127.0.0.1:1".into(),
                node_id: "a".into(),
                secret: secret.into(),
                ..Default::default()
            },
            8554,
        )
        .unwrap()
    }

    #[test]
    fn pull_urls_carry_the_cluster_credential_only_when_there_is_one() {
        assert_eq!(
            cluster("").pull_url("rtsp://10.0.0.2:8554/", "live/cam1"),
            "rtsp://10.0.0.2:8554/live/cam1"
        );
        assert_eq!(
            cluster("s3:cr@t").pull_url("rtsp://10.0.0.2:8554", "live/cam1"),
            "rtsp://finch-cluster:s3%3Acr%40t@10.0.0.2:8554/live/cam1"
        );
    }

    #[test]
    fn standalone_has_no_cluster() {
        assert!(Cluster::new(&ClusterConfig::default(), 8554).is_none());
    }
}
