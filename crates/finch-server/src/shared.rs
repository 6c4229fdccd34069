//! What every connection shares: the config in force, the path registry, the UDP transport, the
//! session table and the server state.

use crate::errorlog::ErrorLog;
use crate::registry::Registry;
use crate::state::ServerState;
use crate::stream::RelayParams;
use crate::udp::Udp;
use finch_config::Config;
use finch_control::{Restart, ToSupervisor};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// An RTSP session as the admin API sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// The path.
    pub path: String,
    /// `publisher` or `reader`.
    pub role: &'static str,
    /// The client's address.
    pub peer: SocketAddr,
    /// `tcp`, `udp`, or `None` before SETUP.
    pub transport: Option<&'static str>,
    /// When it was created.
    pub since: SystemTime,
    /// Cancelling it closes the session's connection.
    pub kick: CancellationToken,
}

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

/// Faults an operator may inject (`debug.fault_injection`), observed by the run loop.
#[derive(Debug, Default)]
pub struct Faults {
    /// Block the run loop forever (no more heartbeats).
    pub hang: AtomicBool,
    /// Panic on the run loop.
    pub panic_core: AtomicBool,
}

/// The worker's shared state.
pub struct Server {
    /// The error log (DSS's ErrorLog role).
    pub errors: ErrorLog,
    /// Supervisor facts, if supervised.
    pub supervision: Option<Supervision>,
    /// Reports to the supervisor, if supervised.
    pub to_supervisor: Option<mpsc::Sender<ToSupervisor>>,
    /// How to reload the config.
    pub reloader: Option<Reloader>,
    /// Injected faults.
    pub faults: Faults,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// The binary's hooks.
    pub hooks: Hooks,
    config: RwLock<Arc<Config>>,
    /// Paths and their streams.
    pub registry: Registry,
    /// The shared UDP sockets, if UDP is on.
    pub udp: Option<Arc<Udp>>,
    sessions: Mutex<HashMap<String, SessionInfo>>,
    /// The server state.
    pub state: watch::Sender<ServerState>,
    /// Fired when the worker stops.
    pub shutdown: CancellationToken,
    /// When the worker started.
    pub started_at: SystemTime,
    next_conn: AtomicU64,
    /// Open RTSP connections.
    pub connections: AtomicU64,
}

impl Server {
    /// A server with this config.
    pub fn new(
        config: Config,
        udp: Option<Arc<Udp>>,
        shutdown: CancellationToken,
        link: Link,
    ) -> Server {
        let state = watch::Sender::new(ServerState::Starting);
        Server {
            errors: ErrorLog::new(link.errors, link.to_supervisor.clone(), state.clone()),
            supervision: link.supervision,
            to_supervisor: link.to_supervisor,
            reloader: link.reloader,
            faults: Faults::default(),
            metrics: crate::metrics::Metrics::new(),
            hooks: link.hooks,
            config: RwLock::new(Arc::new(config)),
            registry: Registry::default(),
            udp,
            sessions: Mutex::new(HashMap::new()),
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

    /// Sends a report to the supervisor, if there is one; never waits, never loses it (see
    /// [`crate::errorlog::send_reliably`]). False when there is no supervisor.
    pub fn report(&self, msg: ToSupervisor) -> bool {
        match &self.to_supervisor {
            Some(s) if !s.is_closed() => {
                crate::errorlog::send_reliably(s, msg);
                true
            }
            _ => false,
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
            max_readers: c.limits.max_readers_per_path,
        }
    }

    /// A new connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionInfo>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers or updates a session.
    pub fn put_session(&self, info: SessionInfo) {
        self.sessions().insert(info.id.clone(), info);
    }

    /// Sets a session's transport.
    pub fn set_session_transport(&self, id: &str, transport: &'static str) {
        if let Some(s) = self.sessions().get_mut(id) {
            s.transport = Some(transport);
        }
    }

    /// Forgets a session.
    pub fn remove_session(&self, id: &str) {
        self.sessions().remove(id);
    }

    /// Every session, sorted by id.
    pub fn list_sessions(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self.sessions().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Closes one session; false if there is none by that id.
    pub fn kick_session(&self, id: &str) -> bool {
        match self.sessions().get(id) {
            Some(s) => {
                s.kick.cancel();
                true
            }
            None => false,
        }
    }

    /// Closes every session (state Idle).
    pub fn kick_all_sessions(&self) {
        for s in self.sessions().values() {
            s.kick.cancel();
        }
    }
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
    pub to_supervisor: Option<mpsc::Sender<ToSupervisor>>,
    /// How to reload the config.
    pub reloader: Option<Reloader>,
}

/// A new random session id: 16 hex digits, unguessable so one client cannot act on another's
/// session.
pub fn new_session_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // The OS RNG failing is not something a client can cause; fall back to a clock-derived
        // value so the server keeps serving.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (t as u64).to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02X}")).collect()
}
