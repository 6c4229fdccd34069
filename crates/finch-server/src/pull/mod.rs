//! Pulled paths (CONTRACT.md "Pulled paths"): Finch as the RTSP client of a camera, one pull
//! per camera however many read it.
//!
//! - `client`: the control connection (TCP or TLS, requests, the camera's challenges).
//! - `session`: one pull from DESCRIBE to TEARDOWN, relaying the camera's packets as they came.
//! - this module: a runner per pulled path (always on, or on demand while someone reads) that
//!   retries a failed pull with exponential backoff and jitter, and the table of them, kept in
//!   step with the config, whose status the API shows. In a cluster, the table also holds
//!   on-demand pulls of paths another node owns: they come and go with their readers, and
//!   follow the path to its new owner when the old one goes.

mod client;
mod session;

use crate::shared::Shared;
use finch_config::{Config, PathConfig};
use finch_proto::uri::RtspUrl;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a pull failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// The camera could not be reached (refused, unreachable, TLS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The camera did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The camera refused a request.
    #[error("{0} to {1}")]
    Status(u16, String),
    /// The camera's description is not usable.
    #[error("bad SDP: {0}")]
    BadSdp(String),
    /// The camera sent no media.
    #[error("no media for {0} s")]
    NoMedia(u64),
    /// The connection broke.
    #[error("connection lost: {0}")]
    Connection(String),
    /// A publisher holds the path.
    #[error("the path is taken: {0}")]
    Busy(String),
    /// UDP brought nothing from the camera's address (a firewall, NAT, a camera that sends
    /// from another address): in `auto`, TCP is tried next.
    #[error("no packet over UDP from the camera's address")]
    UdpSilent,
}

/// Where a pull is (the API's `source.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    /// Connecting to the camera.
    Connecting,
    /// Media is flowing.
    Ready,
    /// Waiting to retry after a failure.
    Waiting,
    /// On demand, and nobody reads.
    Idle,
}

impl PullState {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Connecting => "connecting",
            PullState::Ready => "ready",
            PullState::Waiting => "waiting",
            PullState::Idle => "idle",
        }
    }
}

/// A pull's status, for the API.
#[derive(Debug, Clone)]
pub struct Status {
    /// The camera's URL, password redacted.
    pub url: String,
    /// Where it is.
    pub state: PullState,
    /// Failures so far.
    pub reconnects: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

struct Entry {
    config: PathConfig,
    /// A pull from another node of the cluster, not from the config.
    cluster: bool,
    status: Arc<Mutex<Status>>,
    demand: Arc<Notify>,
    cancel: CancellationToken,
}

/// Every pulled path's runner.
#[derive(Default)]
pub struct Pulls {
    entries: Mutex<HashMap<String, Entry>>,
    tracker: TaskTracker,
}

/// Backoff before retry n: 0.5 s doubling to 30 s, ±20 % jitter; reset after a minute of
/// pulling (mediamtx waits a fixed 5 s: too slow for a blip, too fast for a dead camera).
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const STABLE: Duration = Duration::from_secs(60);
const CLUSTER_BACKOFF_MAX: Duration = Duration::from_secs(2);

fn backoff(failures: u32) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    let jitter = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX) * 0.4 - 0.2;
    base.mul_f64(1.0 + jitter)
}

impl Pulls {
    /// Starts runners for the config's pulled paths and stops those it no longer has (or has
    /// changed: they restart with the new settings).
    pub fn sync(&self, shared: &Arc<Shared>, config: &Config) {
        let wanted: Vec<(String, PathConfig)> = config
            .paths
            .0
            .iter()
            .filter(|(_, p)| p.is_pulled())
            .cloned()
            .collect();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|name, e| {
            let keep = e.cluster || wanted.iter().any(|(n, p)| n == name && *p == e.config);
            if !keep {
                e.cancel.cancel();
            }
            keep
        });
        for (name, cfg) in wanted {
            if entries.contains_key(&name) {
                continue;
            }
            if let Some(url) = RtspUrl::parse(&cfg.source) {
                let entry = self.start(shared, &name, cfg, url, false);
                entries.insert(name, entry);
            }
        }
    }

    /// Starts a runner for `path` and returns its entry.
    fn start(
        &self,
        shared: &Arc<Shared>,
        path: &str,
        cfg: PathConfig,
        url: RtspUrl,
        cluster: bool,
    ) -> Entry {
        let status = Arc::new(Mutex::new(Status {
            url: finch_proto::uri::redact(&cfg.source).into_owned(),
            state: if cfg.source_on_demand {
                PullState::Idle
            } else {
                PullState::Connecting
            },
            reconnects: 0,
            last_error: None,
        }));
        let entry = Entry {
            config: cfg.clone(),
            cluster,
            status: status.clone(),
            demand: Arc::new(Notify::new()),
            cancel: shared.shutdown.child_token(),
        };
        self.tracker.spawn(runner(
            shared.clone(),
            path.to_owned(),
            cfg,
            url,
            cluster,
            status,
            entry.demand.clone(),
            entry.cancel.clone(),
        ));
        entry
    }

    /// Pulls `path` from another node of the cluster at `url`, on demand, and asks it to start
    /// (an existing pull of the path is only asked). Its settings are the path's own, if the
    /// config has the path, but always on demand and over TCP.
    pub fn add_cluster(&self, shared: &Arc<Shared>, path: &str, url: String) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get(path) {
            e.demand.notify_one();
            return;
        }
        let Some(parsed) = RtspUrl::parse(&url) else {
            return;
        };
        let config = shared.config();
        let cfg = PathConfig {
            source: url,
            source_on_demand: true,
            source_transport: "tcp".into(),
            ..config.paths.find(path).unwrap_or_default()
        };
        let entry = self.start(shared, path, cfg, parsed, true);
        entry.demand.notify_one();
        entries.insert(path.to_owned(), entry);
    }

    /// Whether `path` is pulled from another node of the cluster.
    pub fn is_cluster(&self, path: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(path).is_some_and(|e| e.cluster)
    }

    /// Drops the cluster pull of `path` whose status is `status` (its runner ended).
    fn remove_cluster(&self, path: &str, status: &Arc<Mutex<Status>>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries
            .get(path)
            .is_some_and(|e| e.cluster && Arc::ptr_eq(&e.status, status))
        {
            entries.remove(path);
        }
    }

    /// Asks an on-demand pull to start; false if `path` has none.
    pub fn demand(&self, path: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(path) {
            Some(e) if e.config.source_on_demand => {
                e.demand.notify_one();
                true
            }
            _ => false,
        }
    }

    /// How long a DESCRIBE may wait for this on-demand path's camera.
    pub fn start_timeout(&self, path: &str) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(path)
            .map(|e| Duration::from_secs(e.config.source_on_demand_start_timeout_secs))
    }

    /// Every pulled path's status, by name.
    pub fn statuses(&self) -> Vec<(String, Status)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<(String, Status)> = entries
            .iter()
            .map(|(n, e)| {
                (
                    n.clone(),
                    e.status.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Stops every pull (the worker is stopping) and waits for their TEARDOWNs, at most `limit`.
    pub async fn stop(&self, limit: Duration) {
        for e in self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            e.cancel.cancel();
        }
        self.tracker.close();
        let _ = tokio::time::timeout(limit, self.tracker.wait()).await;
    }
}

/// One pulled path, for as long as the config has it (or, from another node, for as long as
/// someone reads it).
#[allow(clippy::too_many_arguments)]
async fn runner(
    shared: Arc<Shared>,
    path: String,
    mut cfg: PathConfig,
    mut url: RtspUrl,
    cluster: bool,
    status: Arc<Mutex<Status>>,
    demand: Arc<Notify>,
    cancel: CancellationToken,
) {
    let set = |state: PullState| {
        status.lock().unwrap_or_else(|e| e.into_inner()).state = state;
    };
    // Media from an rtsps:// camera stays inside its TLS connection.
    let mut tcp = cfg.source_transport == "tcp" || url.tls;
    let mut failures = 0u32;
    let mut last_reason: Option<String> = None;
    // A DESCRIBE that asked for this pull waits until then for it.
    let mut wanted_until = Instant::now();
    let mut idle = cfg.source_on_demand;
    loop {
        if idle {
            set(PullState::Idle);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = demand.notified() => {}
            }
            wanted_until =
                Instant::now() + Duration::from_secs(cfg.source_on_demand_start_timeout_secs);
        }
        // A failed pull from another node retries without new demand: its readers, or the
        // DESCRIBE that asked, are waiting.
        idle = cfg.source_on_demand && !cluster;
        set(PullState::Connecting);
        let started = Instant::now();
        let udp = !tcp && cfg.source_transport != "tcp";
        // Not raced with `cancel`: the session stops itself, with a TEARDOWN once playing.
        let result = session::run(&shared, &path, &cfg, &url, udp, &status, &cancel).await;
        let error = match result {
            Ok(session::End::Stopped) => return,
            Ok(session::End::Idle) => {
                tracing::info!(
                    path,
                    "nobody reads the on-demand path any more; pull stopped"
                );
                if cluster {
                    shared.pulls.remove_cluster(&path, &status);
                    return;
                }
                failures = 0;
                continue;
            }
            Err(PullError::UdpSilent) if cfg.source_transport == "auto" => {
                tracing::info!(path, "no packet over UDP from the camera; pulling over TCP");
                tcp = true;
                // At once, on demand too: whoever asked is still waiting.
                idle = false;
                continue;
            }
            Err(PullError::Status(461, _)) if cfg.source_transport == "auto" && !tcp => {
                tracing::info!(path, "the camera does not send over UDP; pulling over TCP");
                tcp = true;
                idle = false;
                continue;
            }
            Err(e) => e,
        };
        if started.elapsed() >= STABLE {
            failures = 0;
        }
        failures += 1;
        let reason = error.to_string();
        {
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            s.reconnects += 1;
            s.last_error = Some(reason.clone());
            s.state = PullState::Waiting;
        }
        shared.metrics.source_reconnect(&path);
        if cluster {
            // The owner may be gone, or the path published on another node now.
            let located = match &shared.cluster {
                Some(c) => c.locate(&path).await,
                None => None,
            };
            match located.and_then(|u| Some((RtspUrl::parse(&u)?, u))) {
                Some((parsed, u)) => {
                    url = parsed;
                    cfg.source = u;
                    status.lock().unwrap_or_else(|e| e.into_inner()).url =
                        finch_proto::uri::redact(&cfg.source).into_owned();
                }
                None if readers(&shared, &path) == 0 && Instant::now() >= wanted_until => {
                    tracing::info!(
                        path,
                        "cluster: no node publishes the path any more; pull stopped"
                    );
                    shared.pulls.remove_cluster(&path, &status);
                    return;
                }
                // Readers wait within their grace, or a DESCRIBE for its pull (the path may
                // be announced on its owner but not live yet): keep looking for an owner.
                None => {}
            }
        }
        let wait = if cluster {
            // Another node is close by and readers are waiting: retry soon.
            backoff(failures).min(CLUSTER_BACKOFF_MAX)
        } else {
            backoff(failures)
        };
        // Logged once per change of reason: a dead camera is not a log flood.
        if last_reason.as_deref() != Some(reason.as_str()) {
            tracing::warn!(path, camera = %finch_proto::uri::redact(&cfg.source), reason, retry_in_ms = wait.as_millis() as u64, "pull failed; retrying");
            last_reason = Some(reason);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Readers on `path`, waiting or playing.
fn readers(shared: &Shared, path: &str) -> usize {
    shared
        .registry
        .get(path)
        .map_or(0, |e| e.stream.reader_count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_to_thirty() {
        let within = |n: u32, want_ms: f64| {
            let got = backoff(n).as_secs_f64() * 1000.0;
            got >= want_ms * 0.8 - 1.0 && got <= want_ms * 1.2 + 1.0
        };
        assert!(within(1, 500.0));
        assert!(within(2, 1000.0));
        assert!(within(4, 4000.0));
        assert!(within(7, 30000.0));
        assert!(within(40, 30000.0));
    }
}
