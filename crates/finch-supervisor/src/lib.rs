//! Finch's supervisor: DSS's parent process, with what hurt its users fixed.
//!
//! It binds nothing itself (the binary hands it the bound sockets) and never serves a client. It
//! starts the worker (`spawn`), hands it the sockets and the state that must outlive a worker
//! (the config that last validated, the restart history, the error ring), and watches it:
//!
//! - worker exits 254 (FatalError), dies by a signal, exits with another non-zero code, or goes
//!   silent past the heartbeat timeout: restart it, with the backoff of `restart`, recording why;
//!   when a worker *reports* FatalError the next one starts at once, while the old one drains;
//! - worker exits 255: it cannot run; the supervisor exits 255 too; exits 0: so does it;
//! - too many restarts in one streak: give up with exit 3, naming the last reasons;
//! - SIGTERM/SIGINT: stop the workers gracefully and exit 0; SIGHUP and SIGUSR1 are forwarded;
//!   SIGUSR2 (or the API) restarts the worker gracefully: the new one starts on the same
//!   sockets, the old one drains. Because the supervisor holds the listening sockets the whole
//!   time, connections arriving during any restart wait in the kernel backlog; none is refused.
//!
//! Layout: `restart` (the policy, sans-IO), `spawn` (starting a worker), `signals`, `pidfile`.

pub mod pidfile;
pub mod restart;
pub mod signals;
pub mod spawn;

use finch_config::Config;
use finch_control::{
    decode, ErrorEntry, Restart, ToSupervisor, ToWorker, MAX_ERRORS, MAX_RESTARTS,
};
use restart::{RestartPolicy, Settings};
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// Exit code: clean stop.
pub const EXIT_CLEAN: i32 = 0;
/// Exit code: the worker cannot run (DSS -1).
pub const EXIT_CANNOT_RUN: i32 = 255;
/// Exit code: the worker asks to be restarted (DSS -2).
pub const EXIT_RESTART_ME: i32 = 254;
/// Exit code: the crash-loop limit was reached.
pub const EXIT_GAVE_UP: i32 = 3;

/// Sockets as (name, descriptor) pairs in `LISTEN_FDNAMES` order.
pub type Sockets = Vec<(String, OwnedFd)>;

/// Rebinds for a changed config: given the old config, the new one and the sockets held now,
/// returns the sockets for the new config (reusing those whose addresses did not change: the
/// running worker still listens on them, so binding them again would fail).
pub type Binder = Box<dyn Fn(&Config, &Config, Sockets) -> Result<Sockets, (String, Sockets)>>;

/// What the supervisor needs from the binary.
pub struct Options {
    /// The binary's path on disk (an upgraded binary there is what the next worker runs).
    pub exe: PathBuf,
    /// The worker's arguments (the hidden subcommand and the config file).
    pub worker_args: Vec<OsString>,
    /// The effective config, validated.
    pub config: Config,
    /// The sockets, bound.
    pub sockets: Vec<(String, OwnedFd)>,
    /// How to bind sockets again when a reload changes their addresses.
    pub binder: Binder,
    /// Reopens the supervisor's own log file (SIGUSR1).
    pub reopen_logs: Box<dyn Fn()>,
}

/// How long a worker asked to stop may take before it is killed, beyond its drain timeout.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// After SIGABRT for a hang, how long before SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(2);

enum Event {
    Exited(u64, std::io::Result<ExitStatus>),
    Control(u64, ToSupervisor),
}

struct Worker {
    generation: u64,
    pid: u32,
    started: Instant,
    last_heartbeat: Instant,
    /// Reported Ready (its signal handlers are installed, it serves).
    ready: bool,
    /// Killed for silence: its death is a hang.
    hung_at: Option<Instant>,
    /// Since when it has been asked to stop or drain, or replaced after a fatal report: its exit
    /// is expected, and past the drain timeout it is killed.
    retiring: Option<Instant>,
    /// Still serving, but being replaced: told to drain once the next worker is ready.
    drain_when_ready: bool,
    /// Its last fatal-verbosity log entry, for the restart reason if it exits 254.
    fatal_message: Option<String>,
}

struct Supervisor {
    opts: Options,
    config_toml: String,
    policy: RestartPolicy,
    generation: u64,
    workers: Vec<Worker>,
    restarts: VecDeque<Restart>,
    restarts_total: u64,
    by_reason: BTreeMap<String, u64>,
    errors: VecDeque<ErrorEntry>,
    events: mpsc::Sender<Event>,
    next_start: Option<tokio::time::Instant>,
    notified_ready: bool,
    /// A SIGHUP that arrived while no worker was ready: delivered at the next Ready.
    pending_hup: bool,
}

/// Runs the supervisor until it stops; returns the process exit code.
pub fn run(opts: Options) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the supervisor's runtime");
            return EXIT_CANNOT_RUN;
        }
    };
    runtime.block_on(supervise(opts))
}

fn policy_for(c: &Config) -> RestartPolicy {
    RestartPolicy::new(Settings {
        initial: Duration::from_millis(c.supervisor.backoff_initial_ms),
        max: Duration::from_millis(c.supervisor.backoff_max_ms),
        stable_after: Duration::from_secs(c.supervisor.stable_after_secs),
        limit: c.supervisor.crash_loop_limit,
    })
}

async fn supervise(opts: Options) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1), Ok(mut usr2)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
    ) else {
        tracing::error!("cannot install the supervisor's signal handlers");
        return EXIT_CANNOT_RUN;
    };
    let _pid_file = match opts.config.supervisor.pid_file.as_str() {
        "" => None,
        path => match pidfile::PidFile::create(path.as_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(path, error = %e, "cannot write the pid file");
                return EXIT_CANNOT_RUN;
            }
        },
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let mut s = Supervisor {
        config_toml: toml::to_string(&opts.config).unwrap_or_default(),
        policy: policy_for(&opts.config),
        opts,
        generation: 0,
        workers: Vec::new(),
        restarts: VecDeque::new(),
        restarts_total: 0,
        by_reason: BTreeMap::new(),
        errors: VecDeque::new(),
        events: tx,
        next_start: None,
        notified_ready: false,
        pending_hup: false,
    };
    if let Err(code) = s.start_worker() {
        return code;
    }
    let mut check = tokio::time::interval(Duration::from_millis(250));
    loop {
        let next_start = s.next_start;
        tokio::select! {
            _ = term.recv() => return s.stop("SIGTERM").await,
            _ = int.recv() => return s.stop("SIGINT").await,
            _ = hup.recv() => s.forward(libc::SIGHUP),
            _ = usr1.recv() => {
                (s.opts.reopen_logs)();
                s.forward(libc::SIGUSR1);
            }
            _ = usr2.recv() => {
                tracing::info!("SIGUSR2: graceful worker restart");
                s.graceful_restart();
            }
            Some(ev) = rx.recv() => {
                if let Some(code) = s.on_event(ev) {
                    return s.finish(code).await;
                }
            }
            _ = async { tokio::time::sleep_until(next_start.unwrap_or_else(tokio::time::Instant::now)).await }, if next_start.is_some() => {
                s.next_start = None;
                if let Err(code) = s.start_worker() {
                    return s.finish(code).await;
                }
            }
            _ = check.tick() => {
                s.check_heartbeats();
                // The supervisor's own loop feeds systemd's watchdog: worker hangs are its job.
                if std::env::var_os("WATCHDOG_USEC").is_some() {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
}

impl Supervisor {
    fn heartbeat_timeout(&self) -> Duration {
        let c: Config = toml::from_str(&self.config_toml).unwrap_or_default();
        Duration::from_secs(c.supervisor.heartbeat_timeout_secs)
    }

    fn current_config(&self) -> Config {
        toml::from_str(&self.config_toml).unwrap_or_else(|_| self.opts.config.clone())
    }

    /// Starts the next generation. `Err` is the exit code when no worker can be started.
    fn start_worker(&mut self) -> Result<(), i32> {
        self.generation += 1;
        let init = ToWorker::Init {
            generation: self.generation,
            supervisor_pid: std::process::id(),
            config: self.config_toml.clone(),
            restarts: self.restarts.iter().cloned().collect(),
            restarts_total: self.restarts_total,
            restarts_by_reason: self
                .by_reason
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            errors: self.errors.iter().cloned().collect(),
        };
        let spawned = match spawn::spawn(
            &self.opts.exe,
            &self.opts.worker_args,
            &self.opts.sockets,
            &init,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker");
                return Err(EXIT_CANNOT_RUN);
            }
        };
        let generation = self.generation;
        tracing::info!(pid = spawned.pid, generation, "worker started");
        let now = Instant::now();
        self.workers.push(Worker {
            generation,
            pid: spawned.pid,
            started: now,
            last_heartbeat: now,
            ready: false,
            hung_at: None,
            retiring: None,
            drain_when_ready: false,
            fatal_message: None,
        });
        let events = self.events.clone();
        let mut child = spawned.child;
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = events.send(Event::Exited(generation, status)).await;
        });
        let events = self.events.clone();
        let control = spawned.control;
        tokio::spawn(async move {
            let Ok(()) = control.set_nonblocking(true) else {
                return;
            };
            let Ok(stream) = tokio::net::UnixStream::from_std(control) else {
                return;
            };
            let mut lines = tokio::io::BufReader::new(stream).lines();
            // The write half stays open inside `lines` until the worker exits: the worker
            // watches for its end to learn that the supervisor is gone.
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(msg) = decode::<ToSupervisor>(&line) {
                    if events.send(Event::Control(generation, msg)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    fn forward(&mut self, sig: i32) {
        let mut sent = false;
        for w in self
            .workers
            .iter()
            .filter(|w| w.retiring.is_none() && w.ready)
        {
            tracing::info!(pid = w.pid, signal = %signals::name(sig), "forwarding to the worker");
            signals::send(w.pid, sig);
            sent = true;
        }
        if !sent && sig == libc::SIGHUP {
            // No worker can take it now (backoff, start-up): the next one to be ready will.
            tracing::info!("SIGHUP: no worker ready; the reload waits for the next one");
            self.pending_hup = true;
        }
    }

    /// Starts a new worker; the serving one keeps serving until the new one is ready, then
    /// drains. If the new one fails first, the serving one stays.
    fn graceful_restart(&mut self) {
        if self.next_start.is_some() {
            // A restart is already scheduled (backoff): let it happen now instead of adding one.
            self.next_start = Some(tokio::time::Instant::now());
            return;
        }
        if self.workers.iter().any(|w| w.drain_when_ready) {
            tracing::info!("a graceful restart is already under way");
            return;
        }
        for w in self.workers.iter_mut().filter(|w| w.retiring.is_none()) {
            w.drain_when_ready = true;
        }
        self.record(Restart {
            at: now_rfc3339(),
            reason: "requested".into(),
            signal: None,
            exit_code: None,
            message: Some("graceful restart".into()),
        });
        if self.start_worker().is_err() {
            tracing::error!("the new worker could not be started; the current one keeps serving");
            for w in self.workers.iter_mut() {
                w.drain_when_ready = false;
            }
        }
    }

    fn record(&mut self, r: Restart) {
        tracing::warn!(reason = %r.reason, signal = ?r.signal, exit_code = ?r.exit_code, message = ?r.message, "worker restart");
        *self.by_reason.entry(r.reason.clone()).or_default() += 1;
        self.restarts_total += 1;
        if self.restarts.len() >= MAX_RESTARTS {
            self.restarts.pop_front();
        }
        self.restarts.push_back(r);
    }

    /// A worker failed: record why and schedule the next one. `Some(code)` means give up.
    fn on_failure(&mut self, started: Instant, r: Restart) -> Option<i32> {
        if !self.current_config().supervisor.auto_restart {
            tracing::error!(reason = %r.reason, "the worker failed and auto_restart is off");
            return Some(r.exit_code.filter(|c| *c != 0).unwrap_or(1));
        }
        let jitter = {
            let mut b = [0u8; 4];
            let _ = getrandom::fill(&mut b);
            f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX) * 2.0 - 1.0
        };
        match self.policy.on_failure(started, Instant::now(), jitter) {
            Some(delay) => {
                self.record(r);
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    streak = self.policy.streak(),
                    "restarting the worker"
                );
                self.next_start = Some(tokio::time::Instant::now() + delay);
                None
            }
            None => {
                let last: Vec<String> = self
                    .restarts
                    .iter()
                    .rev()
                    .take(3)
                    .map(|r| {
                        format!(
                            "{} ({})",
                            r.reason,
                            r.message
                                .clone()
                                .or(r.signal.clone())
                                .or(r.exit_code.map(|c| c.to_string()))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                tracing::error!(
                    limit = self.current_config().supervisor.crash_loop_limit,
                    last_reasons = ?last,
                    failed = %r.reason,
                    "crash loop: giving up"
                );
                eprintln!(
                    "finch: the worker failed {} times in a row without a stable run; giving up. Last reasons: {}; this time: {}",
                    self.policy.streak(),
                    last.join(", "),
                    r.message.or(r.signal).unwrap_or(r.reason)
                );
                Some(EXIT_GAVE_UP)
            }
        }
    }

    fn on_event(&mut self, ev: Event) -> Option<i32> {
        match ev {
            Event::Control(generation, msg) => self.on_control(generation, msg),
            Event::Exited(generation, status) => self.on_exit(generation, status),
        }
    }

    fn on_control(&mut self, generation: u64, msg: ToSupervisor) -> Option<i32> {
        let idx = self
            .workers
            .iter()
            .position(|w| w.generation == generation)?;
        match msg {
            ToSupervisor::Heartbeat => {
                self.workers[idx].last_heartbeat = Instant::now();
                if std::env::var_os("WATCHDOG_USEC").is_some() {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            }
            ToSupervisor::Ready => {
                self.workers[idx].last_heartbeat = Instant::now();
                self.workers[idx].ready = true;
                let now = Instant::now();
                for w in self.workers.iter_mut().filter(|w| w.drain_when_ready) {
                    tracing::info!(pid = w.pid, "new worker ready; draining the old one");
                    signals::send(w.pid, libc::SIGUSR2);
                    w.drain_when_ready = false;
                    w.retiring = Some(now);
                }
                if std::mem::take(&mut self.pending_hup) {
                    let pid = self.workers[idx].pid;
                    tracing::info!(
                        pid,
                        "delivering a SIGHUP that arrived while no worker was ready"
                    );
                    signals::send(pid, libc::SIGHUP);
                }
                if !self.notified_ready {
                    self.notified_ready = true;
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                }
            }
            ToSupervisor::Log { entry } => {
                if entry.verbosity == "fatal" {
                    self.workers[idx].fatal_message = Some(entry.message.clone());
                }
                if self.errors.len() >= MAX_ERRORS {
                    self.errors.pop_front();
                }
                self.errors.push_back(entry);
            }
            ToSupervisor::Fatal { message } => {
                let w = &mut self.workers[idx];
                if w.retiring.is_none() {
                    w.retiring = Some(Instant::now());
                    w.fatal_message = Some(message.clone());
                    let started = w.started;
                    let r = Restart {
                        at: now_rfc3339(),
                        reason: "fatal".into(),
                        signal: None,
                        exit_code: None,
                        message: Some(message),
                    };
                    return self.on_failure(started, r);
                }
            }
            ToSupervisor::Restart => {
                if self.workers[idx].retiring.is_none() {
                    tracing::info!("graceful worker restart requested through the API");
                    self.graceful_restart();
                }
            }
            ToSupervisor::Config { toml } => return self.on_config(toml),
        }
        None
    }

    /// A worker applied a reload: keep it for the next worker; rebind if sockets changed.
    fn on_config(&mut self, toml_text: String) -> Option<i32> {
        let Ok(new) = toml::from_str::<Config>(&toml_text) else {
            tracing::error!(
                "a worker reported a config the supervisor cannot read; keeping the old one"
            );
            return None;
        };
        let old = self.current_config();
        self.policy = {
            let mut p = policy_for(&new);
            // Keep the streak: a reload is not a stable run.
            for _ in 0..self.policy.streak() {
                let t = Instant::now();
                let _ = p.on_failure(t, t, 0.0);
            }
            p
        };
        let sockets_changed = old.rtsp.listen_addresses != new.rtsp.listen_addresses
            || old.rtsp.port != new.rtsp.port
            || old.rtsp.udp != new.rtsp.udp
            || old.rtsp.rtp_port != new.rtsp.rtp_port
            || old.admin.enabled != new.admin.enabled
            || old.admin.listen != new.admin.listen;
        if !sockets_changed {
            self.config_toml = toml_text;
            return None;
        }
        let held = std::mem::take(&mut self.opts.sockets);
        match (self.opts.binder)(&old, &new, held) {
            Ok(s) => {
                self.opts.sockets = s;
                self.config_toml = toml_text;
                tracing::info!(
                    "listen addresses changed: rebound; restarting the worker gracefully"
                );
                self.graceful_restart();
            }
            Err((e, held)) => {
                self.opts.sockets = held;
                // The next worker gets the new settings but the addresses that are bound.
                let mut kept = new;
                kept.rtsp.listen_addresses = old.rtsp.listen_addresses.clone();
                kept.rtsp.port = old.rtsp.port;
                kept.rtsp.udp = old.rtsp.udp;
                kept.rtsp.rtp_port = old.rtsp.rtp_port;
                kept.admin.enabled = old.admin.enabled;
                kept.admin.listen = old.admin.listen.clone();
                self.config_toml =
                    toml::to_string(&kept).unwrap_or_else(|_| self.config_toml.clone());
                tracing::error!(error = %e, "cannot bind the new listen addresses; keeping the old sockets");
            }
        }
        None
    }

    fn on_exit(&mut self, generation: u64, status: std::io::Result<ExitStatus>) -> Option<i32> {
        let idx = self
            .workers
            .iter()
            .position(|w| w.generation == generation)?;
        let w = self.workers.remove(idx);
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot wait for the worker");
                return None;
            }
        };
        use std::os::unix::process::ExitStatusExt;
        tracing::info!(pid = w.pid, generation, %status, "worker exited");
        if w.retiring.is_some() {
            return None;
        }
        if w.drain_when_ready {
            // It was being replaced; its replacement is starting already.
            tracing::warn!(
                pid = w.pid,
                "the worker being replaced died before its replacement was ready"
            );
            return None;
        }
        let replacing = self.workers.iter().any(|o| o.drain_when_ready);
        if replacing && !w.ready {
            // A graceful restart's new worker failed before it served: keep the old one.
            tracing::error!(pid = w.pid, %status, "the new worker failed before it was ready; the current one keeps serving");
            for o in self.workers.iter_mut() {
                o.drain_when_ready = false;
            }
            if let Some(r) = self.restarts.back_mut().filter(|r| r.reason == "requested") {
                r.message = Some(format!(
                    "graceful restart failed: the new worker ended ({status}) before it was ready; the old one kept serving"
                ));
            }
            return None;
        }
        let code = status.code();
        let signal = status.signal();
        if w.hung_at.is_some() {
            let r = Restart {
                at: now_rfc3339(),
                reason: "hang".into(),
                signal: signal.map(signals::name),
                exit_code: code,
                message: Some(format!(
                    "no heartbeat for {} s",
                    self.heartbeat_timeout().as_secs()
                )),
            };
            return self.on_failure(w.started, r);
        }
        match (code, signal) {
            (Some(0), _) => {
                tracing::info!("the worker stopped cleanly; the supervisor stops too");
                Some(EXIT_CLEAN)
            }
            (Some(EXIT_CANNOT_RUN), _) => {
                tracing::error!("the worker cannot run; not restarting it");
                Some(EXIT_CANNOT_RUN)
            }
            (Some(EXIT_RESTART_ME), _) => {
                // This worker's own fatal entry, never an older worker's.
                let message = w.fatal_message.clone();
                let r = Restart {
                    at: now_rfc3339(),
                    reason: "fatal".into(),
                    signal: None,
                    exit_code: Some(EXIT_RESTART_ME),
                    message,
                };
                self.on_failure(w.started, r)
            }
            (_, Some(sig)) => {
                let r = Restart {
                    at: now_rfc3339(),
                    reason: "signal".into(),
                    signal: Some(signals::name(sig)),
                    exit_code: None,
                    message: None,
                };
                self.on_failure(w.started, r)
            }
            (code, None) => {
                let r = Restart {
                    at: now_rfc3339(),
                    reason: "exit".into(),
                    signal: None,
                    exit_code: code,
                    message: None,
                };
                self.on_failure(w.started, r)
            }
        }
    }

    fn check_heartbeats(&mut self) {
        let config = self.current_config();
        let timeout = Duration::from_secs(config.supervisor.heartbeat_timeout_secs);
        let drain = Duration::from_secs(config.supervisor.drain_timeout_secs);
        let stable = Duration::from_secs(config.supervisor.stable_after_secs);
        let now = Instant::now();
        for w in self.workers.iter_mut() {
            match (w.hung_at, w.retiring) {
                (None, None) if now.duration_since(w.last_heartbeat) > timeout => {
                    tracing::error!(
                        pid = w.pid,
                        timeout_secs = timeout.as_secs(),
                        "worker silent: killing it (SIGABRT)"
                    );
                    w.hung_at = Some(now);
                    signals::send(w.pid, libc::SIGABRT);
                }
                (Some(at), _) if now.duration_since(at) > ABORT_GRACE => {
                    signals::send(w.pid, libc::SIGKILL);
                }
                (None, Some(since)) if now.duration_since(since) > drain + STOP_GRACE => {
                    // Asked to go and still here past its drain: it must not keep sockets and
                    // sessions forever.
                    tracing::warn!(
                        pid = w.pid,
                        "a retiring worker outlived its drain timeout; killing it"
                    );
                    signals::send(w.pid, libc::SIGKILL);
                    w.hung_at = Some(now);
                }
                _ => {}
            }
        }
        // A worker that has served long enough ends the crash streak, however it ends later
        // (CONTRACT.md: the streak resets after a stable run).
        if self
            .workers
            .iter()
            .any(|w| w.ready && w.retiring.is_none() && now.duration_since(w.started) >= stable)
        {
            self.policy.reset();
        }
    }

    /// Stops every worker and exits 0.
    async fn stop(mut self, why: &str) -> i32 {
        tracing::info!(signal = why, "stopping");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        self.next_start = None;
        let now = Instant::now();
        for w in self.workers.iter_mut() {
            w.retiring.get_or_insert(now);
        }
        self.finish(EXIT_CLEAN).await
    }

    /// Asks every remaining worker to stop, waits (killing stragglers), returns `code`.
    async fn finish(mut self, code: i32) -> i32 {
        let drain = Duration::from_secs(self.current_config().supervisor.drain_timeout_secs);
        for w in &self.workers {
            signals::send(w.pid, libc::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + drain + STOP_GRACE;
        while !self.workers.is_empty() {
            let ev = tokio::time::timeout_at(deadline, self.next_exit()).await;
            match ev {
                Ok(Some(g)) => self.workers.retain(|w| w.generation != g),
                _ => {
                    for w in &self.workers {
                        tracing::warn!(pid = w.pid, "worker did not stop in time; killing it");
                        signals::send(w.pid, libc::SIGKILL);
                    }
                    break;
                }
            }
        }
        code
    }

    /// The generation of a remaining worker that has exited. The event channel's receiver lives
    /// in the select loop, which has ended; the wait tasks still reap the children, so a reaped
    /// pid is a gone worker.
    async fn next_exit(&mut self) -> Option<u64> {
        loop {
            for w in &self.workers {
                let Ok(pid) = libc::pid_t::try_from(w.pid) else {
                    continue;
                };
                // SAFETY: kill with signal 0 only checks that the process exists.
                let alive = unsafe { libc::kill(pid, 0) } == 0;
                if !alive {
                    return Some(w.generation);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}
