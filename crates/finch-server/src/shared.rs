//! What every room of the worker shares: the config in force, the path registry, the UDP
//! transport, the session table, the server state, the error log and the metrics.
//!
//! It holds data and small accessors only; the behaviour lives in the rooms (`rtsp`, `udp`,
//! `admin`, `worker`), which all look at one [`Shared`].

use crate::auth::Auth;
use crate::errorlog::{ErrorLog, Verbosity};
use crate::metrics::{Metrics, Snapshot};
use crate::report::Reporter;
use crate::sessions::Sessions;
use crate::state::ServerState;
use crate::udp::Udp;
use finch_config::Config;
use finch_control::{Restart, ToSupervisor};
use finch_relay::{Registry, RelayParams};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the supervisor told this worker when it started (none in `--foreground`).
#[derive(Debug, Clone, Default)]
pub struct Supervision {
    /// The worker's generation (1 for the first).
    pub generation: u64,
    /// The supervisor's pid.
    pub supervisor_pid: u32,
    /// Restart history, oldest first.
    pub restarts: Vec<Restart>,
    /// Restarts since the supervisor started.
    pub restarts_total: u64,
    /// Restarts by reason.
    pub restarts_by_reason: Vec<(String, u64)>,
}

/// Re-reads the config from where it came from (file, environment, flags) and validates it.
pub type Reloader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Faults an operator may inject (`debug.fault_injection`).
#[derive(Debug, Default)]
pub struct Faults {
    /// Block the run loop forever (no more heartbeats).
    pub hang: AtomicBool,
    /// Panic on the run loop.
    pub panic_core: AtomicBool,
    /// The most recently accepted RTSP connection's fault trigger: cancelling it makes that
    /// connection's task panic.
    pub latest_conn: Mutex<Option<CancellationToken>>,
}

/// A hook taking one argument.
pub type Hook<T> = Option<Box<dyn Fn(T) + Send + Sync>>;

/// What the binary plugs in: terminal and log-file concerns the library does not own.
#[derive(Default)]
pub struct Hooks {
    /// Prints one status line (DSS's terminal output).
    pub status_line: Hook<String>,
    /// Reopens the log file (SIGUSR1, after log rotation).
    pub reopen_logs: Hook<()>,
    /// Applies a reloaded config's log settings (level).
    pub apply_log_config: Hook<Arc<Config>>,
    /// Log lines dropped so far because their destination could not keep up.
    pub log_lines_dropped: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
}

/// How this worker is tied to a supervisor and to its config's sources.
#[derive(Default)]
pub struct Link {
    /// The binary's hooks.
    pub hooks: Hooks,
    /// The error ring a previous worker left.
    pub errors: Vec<finch_control::ErrorEntry>,
    /// Supervisor facts.
    pub supervision: Option<Supervision>,
    /// Reports to the supervisor.
    pub reporter: Option<Reporter>,
    /// How to reload the config.
    pub reloader: Option<Reloader>,
    /// The Digest nonce secret from the supervisor (else a random one).
    pub auth_secret: Option<Vec<u8>>,
}

/// The worker's shared state.
pub struct Shared {
    /// The error log (DSS's ErrorLog role).
    pub errors: ErrorLog,
    /// Supervisor facts, if supervised.
    pub supervision: Option<Supervision>,
    reporter: Option<Reporter>,
    /// How to reload the config.
    pub reloader: Option<Reloader>,
    /// Injected faults.
    pub faults: Faults,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The binary's hooks.
    pub hooks: Hooks,
    config: RwLock<Arc<Config>>,
    /// Paths and their streams.
    pub registry: Arc<Registry>,
    /// Who may do what.
    pub auth: Auth,
    /// The RTSPS acceptor in force.
    pub tls: crate::tls::Tls,
    /// The pulled paths' runners.
    pub pulls: crate::pull::Pulls,
    /// HLS muxers.
    pub hls: crate::hls::Hls,
    /// This node's part in a cluster (`None` standalone).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Wrong admin tokens per address.
    pub(crate) admin_failures: Mutex<crate::auth::failures::Failures>,
    /// The shared UDP sockets, if UDP is on.
    pub udp: Option<Arc<Udp>>,
    /// Live RTSP sessions.
    pub sessions: Arc<Sessions>,
    /// A graceful restart's handover of sessions to the next worker.
    pub handover: Arc<crate::handover::Handover>,
    /// The server state.
    pub state: watch::Sender<ServerState>,
    /// Fired when the worker stops: every connection hangs off it.
    pub shutdown: CancellationToken,
    /// When the worker started.
    pub started_at: SystemTime,
    next_conn: AtomicU64,
    /// Open RTSP connections (all listeners together).
    pub connections: AtomicU64,
    /// Open RTSP connections per client address (entries at zero are removed).
    pub per_ip: Mutex<HashMap<IpAddr, usize>>,
    limit_logged: Mutex<HashMap<&'static str, Instant>>,
}

impl Shared {
    /// The shared state of a worker with this config.
    pub fn new(
        config: Config,
        udp: Option<Arc<Udp>>,
        shutdown: CancellationToken,
        link: Link,
    ) -> Shared {
        let state = watch::Sender::new(ServerState::Starting);
        let secret = link.auth_secret.unwrap_or_else(crate::auth::random_secret);
        let budget = config.limits.max_gop_cache_total_bytes;
        let cluster = crate::cluster::Cluster::new(&config.cluster, config.rtsp.port);
        let metrics = Metrics::new();
        if cluster.is_some() {
            metrics.enable_cluster();
        }
        Shared {
            auth: Auth::new(&config, &secret),
            per_ip: Mutex::new(HashMap::new()),
            tls: crate::tls::Tls::default(),
            pulls: crate::pull::Pulls::default(),
            hls: crate::hls::Hls::default(),
            cluster,
            admin_failures: Mutex::new(crate::auth::failures::Failures::new()),
            limit_logged: Mutex::new(HashMap::new()),
            errors: ErrorLog::new(link.errors, link.reporter.clone(), state.clone()),
            supervision: link.supervision,
            reporter: link.reporter,
            reloader: link.reloader,
            faults: Faults::default(),
            metrics,
            hooks: link.hooks,
            config: RwLock::new(Arc::new(config)),
            registry: Registry::with_budget(budget),
            udp,
            sessions: Arc::new(Sessions::default()),
            handover: Arc::default(),
            state,
            shutdown,
            started_at: SystemTime::now(),
            next_conn: AtomicU64::new(1),
            connections: AtomicU64::new(0),
        }
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the config in force (new connections and sessions see it).
    pub fn set_config(&self, config: Config) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }

    /// Sends a report that must reach the supervisor, if there is one; never waits. False when
    /// there is no supervisor to hear it.
    pub fn report(&self, msg: ToSupervisor) -> bool {
        match &self.reporter {
            Some(r) if !r.is_closed() => r.reliable(msg),
            _ => false,
        }
    }

    /// A heartbeat (lossy: the next one follows in a second).
    pub fn heartbeat(&self) {
        if let Some(r) = &self.reporter {
            r.lossy(ToSupervisor::Heartbeat);
        }
    }

    /// Fan-out settings from the config in force.
    pub fn relay_params(&self) -> RelayParams {
        let c = self.config();
        RelayParams {
            reader_queue_packets: c.relay.reader_queue_packets,
            slow_reader_max_dropped_packets: c.relay.slow_reader_max_dropped_packets,
            gop_cache: c.relay.gop_cache,
            gop_cache_max_bytes: c.relay.gop_cache_max_bytes,
            gop_cache_max_packets: c.relay.gop_cache_max_packets,
            max_readers: c.limits.max_readers_per_path,
        }
    }

    /// A new connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Open RTSP connections.
    pub fn connection_count(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// An input refused for passing `limit` (its config key): counted, and logged at most once
    /// a second per limit, so a flood cannot flood the log too.
    pub fn refused(&self, limit: &'static str, peer: IpAddr) {
        self.metrics.limit_refusal(limit);
        let now = Instant::now();
        let mut logged = self.limit_logged.lock().unwrap_or_else(|e| e.into_inner());
        let due = logged
            .get(limit)
            .is_none_or(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1));
        if due {
            logged.insert(limit, now);
            drop(logged);
            tracing::warn!(limit, %peer, "refused: a limit was reached (further refusals this second are only counted)");
        }
    }

    /// Closes every session and path (state Idle).
    pub fn go_idle(&self) {
        self.sessions.kick_all();
        self.registry.close_all();
    }

    /// What the metrics read now.
    pub fn snapshot(&self) -> Snapshot {
        let paths = self.registry.list();
        let (mut tcp, mut udp, mut hls) = (0, 0, 0);
        for p in &paths {
            for r in p.stream.readers() {
                match r.transport {
                    "udp" => udp += 1,
                    "hls" => hls += 1,
                    _ => tcp += 1,
                }
            }
        }
        Snapshot {
            state: *self.state.borrow(),
            connections: self.connection_count(),
            publishers: self.sessions.count("publisher"),
            readers_sessions: self.sessions.count("reader"),
            paths: paths.len(),
            readers: (tcp, udp),
            hls: crate::metrics::HlsSnapshot {
                muxers: hls,
                viewers: self.hls.viewer_count(),
                bytes_held: self.hls.bytes_held(),
            },
            totals: self.registry.totals(),
            errors: Verbosity::ALL
                .iter()
                .map(|v| (*v, self.errors.count(*v)))
                .collect(),
            restarts: self
                .supervision
                .as_ref()
                .map(|s| s.restarts_by_reason.clone()),
            log_dropped: self.hooks.log_lines_dropped.as_ref().map_or(0, |f| f()),
            cluster: self
                .cluster
                .as_ref()
                .map(|c| (c.redis_up(), c.nodes_seen(), c.owned_count())),
        }
    }
}
