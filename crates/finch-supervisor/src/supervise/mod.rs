//! The supervisor's watch loop: signals, the workers' control messages and exits, heartbeat
//! checks and scheduled restarts, and what each does to the table of workers. What a failure
//! leads to is in `failures`.

mod failures;

use crate::restart::RestartPolicy;
use crate::worker::{Phase, Worker};
use crate::{pidfile, policy_for, signals, spawn, Options, EXIT_CANNOT_RUN, EXIT_CLEAN};
use finch_config::Config;
use finch_control::{decode, ErrorEntry, Restart, ToSupervisor, ToWorker, MAX_ERRORS};
use std::collections::{BTreeMap, VecDeque};
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// How long a worker asked to stop may take before it is killed, beyond its drain timeout.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// After SIGABRT for a hang, how long before SIGKILL.
const ABORT_GRACE: Duration = Duration::from_secs(2);

pub(crate) enum Event {
    Exited(u64, std::io::Result<ExitStatus>),
    Control(u64, ToSupervisor),
}

/// Why no worker could be started.
enum StartError {
    /// The very first worker: the server cannot run (exit 255).
    First,
    /// A later one: a transient failure to retry with backoff.
    Later(String),
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
    /// The Digest nonce secret every worker gets (hex): made once, so nonces outlive workers.
    auth_secret: String,
}

pub(crate) async fn supervise(opts: Options) -> i32 {
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
    // Written once the sockets are bound (the binary bound them before calling us).
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
        auth_secret: random_hex_secret(),
    };
    if s.start_worker().is_err() {
        return EXIT_CANNOT_RUN;
    }
    let mut check = tokio::time::interval(Duration::from_millis(250));
    loop {
        let next_start = s.next_start;
        let code = tokio::select! {
            _ = term.recv() => Some(s.stop("SIGTERM")),
            _ = int.recv() => Some(s.stop("SIGINT")),
            _ = hup.recv() => { s.forward(libc::SIGHUP); None }
            _ = usr1.recv() => {
                (s.opts.reopen_logs)();
                s.forward(libc::SIGUSR1);
                None
            }
            _ = usr2.recv() => {
                tracing::info!("SIGUSR2: graceful worker restart");
                s.graceful_restart();
                None
            }
            Some(ev) = rx.recv() => s.on_event(ev),
            _ = async { tokio::time::sleep_until(next_start.unwrap_or_else(tokio::time::Instant::now)).await }, if next_start.is_some() => {
                s.next_start = None;
                s.restart_after_failure()
            }
            _ = check.tick() => {
                s.check_heartbeats();
                // The supervisor's own loop feeds systemd's watchdog: worker hangs are its job.
                if std::env::var_os("WATCHDOG_USEC").is_some() {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
                None
            }
        };
        if let Some(code) = code {
            return s.finish(code, &mut rx).await;
        }
    }
}

/// 32 random bytes as hex.
fn random_hex_secret() -> String {
    let mut b = [0u8; 32];
    if getrandom::fill(&mut b).is_err() {
        // Nothing a client can cause; a time-derived secret still makes nonces expire.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b[..16].copy_from_slice(&t.to_le_bytes());
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Supervisor {
    fn current_config(&self) -> Config {
        toml::from_str(&self.config_toml).unwrap_or_else(|_| self.opts.config.clone())
    }

    fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.current_config().supervisor.heartbeat_timeout_secs)
    }

    /// Starts the next generation.
    fn start_worker(&mut self) -> Result<(), StartError> {
        let generation = self.generation + 1;
        let init = ToWorker::Init {
            generation,
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
            auth_secret: self.auth_secret.clone(),
        };
        let replacing = self
            .workers
            .iter()
            .any(|w| matches!(w.phase, Phase::Replacing { ready: true }));
        let spawned = match spawn::spawn(
            &self.opts.exe,
            &self.opts.worker_args,
            &self.opts.sockets,
            &init,
            replacing,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker");
                return Err(if self.generation == 0 {
                    StartError::First
                } else {
                    StartError::Later(format!("cannot start the worker: {e}"))
                });
            }
        };
        self.generation = generation;
        tracing::info!(pid = spawned.pid, generation, "worker started");
        // The pidfd is opened now, before the wait task below can reap the process.
        self.workers.push(Worker::new(generation, spawned.pid));
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

    /// The scheduled restart after a failure. A spawn that fails now (EAGAIN, a binary being
    /// replaced mid-upgrade) is one more failure of the streak, retried after its backoff.
    fn restart_after_failure(&mut self) -> Option<i32> {
        match self.start_worker() {
            Ok(()) => None,
            Err(StartError::First) => Some(EXIT_CANNOT_RUN),
            Err(StartError::Later(message)) => {
                let r = Restart {
                    at: now_rfc3339(),
                    reason: "exit".into(),
                    signal: None,
                    exit_code: None,
                    message: Some(message),
                };
                self.on_failure(Instant::now(), r)
            }
        }
    }

    fn forward(&mut self, sig: i32) {
        let mut sent = false;
        for w in self.workers.iter().filter(|w| w.serving()) {
            tracing::info!(pid = w.pid, signal = %signals::name(sig), "forwarding to the worker");
            w.signal(sig);
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
        if self
            .workers
            .iter()
            .any(|w| matches!(w.phase, Phase::Replacing { .. }))
        {
            tracing::info!("a graceful restart is already under way");
            return;
        }
        for w in self.workers.iter_mut() {
            w.phase = match w.phase {
                Phase::Starting => Phase::Replacing { ready: false },
                Phase::Serving => Phase::Replacing { ready: true },
                other => other,
            };
        }
        self.record(Restart {
            at: now_rfc3339(),
            reason: "requested".into(),
            signal: None,
            exit_code: None,
            message: Some("graceful restart".into()),
        });
        if let Err(e) = self.start_worker() {
            let why = match e {
                StartError::First => "the first worker could not be started".to_owned(),
                StartError::Later(m) => m,
            };
            tracing::error!("{why}; the current worker keeps serving");
            self.cancel_replacement(&format!("graceful restart failed: {why}"));
        }
    }

    /// A graceful restart's new worker did not come: the old ones serve on.
    fn cancel_replacement(&mut self, message: &str) {
        for w in self.workers.iter_mut() {
            if let Phase::Replacing { ready } = w.phase {
                w.phase = if ready {
                    Phase::Serving
                } else {
                    Phase::Starting
                };
            }
        }
        if let Some(r) = self.restarts.back_mut().filter(|r| r.reason == "requested") {
            r.message = Some(message.to_owned());
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
            ToSupervisor::Ready => self.on_ready(idx),
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
                // The worker's error log entry for it: kept here, so it outlives the worker.
                if self.errors.len() >= MAX_ERRORS {
                    self.errors.pop_front();
                }
                self.errors.push_back(ErrorEntry {
                    at: now_rfc3339(),
                    verbosity: "fatal".into(),
                    message: message.clone(),
                });
                let w = &mut self.workers[idx];
                if !w.leaving() {
                    w.phase = Phase::Retiring {
                        since: Instant::now(),
                        killed: false,
                    };
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
                if !self.workers[idx].leaving() {
                    tracing::info!("graceful worker restart requested through the API");
                    self.graceful_restart();
                }
            }
            ToSupervisor::Config { toml } => self.on_config(toml),
            ToSupervisor::HandedOver {
                publishers,
                readers,
                connections,
            } => {
                tracing::info!(
                    publishers,
                    readers,
                    connections,
                    "sessions handed over to the new worker"
                );
                if let Some(r) = self.restarts.back_mut().filter(|r| r.reason == "requested") {
                    r.message = Some(finch_control::handed_over_message(
                        publishers,
                        readers,
                        connections,
                    ));
                }
            }
        }
        None
    }

    fn on_ready(&mut self, idx: usize) {
        let now = Instant::now();
        if let Some(w) = self.workers.get_mut(idx) {
            w.last_heartbeat = now;
            if w.phase == Phase::Starting {
                w.phase = Phase::Serving;
            }
        }
        let new_generation = self.workers.get(idx).map(|w| w.generation);
        for w in self.workers.iter_mut() {
            if Some(w.generation) != new_generation && matches!(w.phase, Phase::Replacing { .. }) {
                tracing::info!(pid = w.pid, "new worker ready; draining the old one");
                w.signal(libc::SIGUSR2);
                w.phase = Phase::Retiring {
                    since: now,
                    killed: false,
                };
            }
        }
        if std::mem::take(&mut self.pending_hup) {
            if let Some(w) = self.workers.get(idx) {
                tracing::info!(
                    pid = w.pid,
                    "delivering a SIGHUP that arrived while no worker was ready"
                );
                w.signal(libc::SIGHUP);
            }
        }
        if !self.notified_ready {
            self.notified_ready = true;
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        }
    }

    /// A worker applied a reload: keep it for the next worker; rebind if sockets changed.
    fn on_config(&mut self, toml_text: String) {
        let Ok(new) = toml::from_str::<Config>(&toml_text) else {
            tracing::error!(
                "a worker reported a config the supervisor cannot read; keeping the old one"
            );
            return;
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
            || old.rtsps.enabled != new.rtsps.enabled
            || old.rtsps.port != new.rtsps.port
            || old.admin.enabled != new.admin.enabled
            || old.admin.listen != new.admin.listen
            || old.hls.enabled != new.hls.enabled
            || old.hls.listen != new.hls.listen;
        if !sockets_changed {
            self.config_toml = toml_text;
            return;
        }
        let held = std::mem::take(&mut self.opts.sockets);
        match (self.opts.binder)(&new, held) {
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
                kept.rtsps.enabled = old.rtsps.enabled;
                kept.rtsps.port = old.rtsps.port;
                kept.admin.enabled = old.admin.enabled;
                kept.admin.listen = old.admin.listen.clone();
                kept.hls.enabled = old.hls.enabled;
                kept.hls.listen = old.hls.listen.clone();
                self.config_toml =
                    toml::to_string(&kept).unwrap_or_else(|_| self.config_toml.clone());
                tracing::error!(error = %e, "cannot bind the new listen addresses; keeping the old sockets");
            }
        }
    }

    /// Marks every worker as leaving and returns the clean exit code.
    fn stop(&mut self, why: &str) -> i32 {
        tracing::info!(signal = why, "stopping");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        self.next_start = None;
        let now = Instant::now();
        for w in self.workers.iter_mut() {
            if !w.leaving() {
                w.phase = Phase::Retiring {
                    since: now,
                    killed: false,
                };
            }
        }
        EXIT_CLEAN
    }

    /// Asks every remaining worker to stop and waits for their exits (as the wait tasks report
    /// them), killing stragglers at the deadline; returns `code`.
    async fn finish(mut self, code: i32, rx: &mut mpsc::Receiver<Event>) -> i32 {
        let drain = Duration::from_secs(self.current_config().supervisor.drain_timeout_secs);
        for w in &self.workers {
            w.signal(libc::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + drain + STOP_GRACE;
        if !self.await_exits(rx, deadline).await {
            for w in &self.workers {
                tracing::warn!(pid = w.pid, "worker did not stop in time; killing it");
                w.signal(libc::SIGKILL);
            }
            // Give the kills a moment to be reaped, then go regardless.
            let later = tokio::time::Instant::now() + Duration::from_secs(1);
            self.await_exits(rx, later).await;
        }
        code
    }

    /// Takes workers out of the table as their exits arrive; true once none is left.
    async fn await_exits(
        &mut self,
        rx: &mut mpsc::Receiver<Event>,
        deadline: tokio::time::Instant,
    ) -> bool {
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Event::Exited(g, _))) => self.workers.retain(|w| w.generation != g),
                Ok(Some(Event::Control(..))) => {}
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }
}
