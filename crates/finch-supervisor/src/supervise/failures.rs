//! What the supervisor does when a worker fails: record why, decide (the restart policy)
//! whether and when the next one starts, and notice the failures a worker cannot report
//! itself: its exit, and its silence.

use super::{now_rfc3339, Supervisor, ABORT_GRACE, STOP_GRACE};
use crate::worker::Phase;
use crate::{signals, EXIT_CANNOT_RUN, EXIT_CLEAN, EXIT_GAVE_UP, EXIT_RESTART_ME};
use finch_control::{Restart, MAX_RESTARTS};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

impl Supervisor {
    pub(super) fn record(&mut self, r: Restart) {
        tracing::warn!(reason = %r.reason, signal = ?r.signal, exit_code = ?r.exit_code, message = ?r.message, "worker restart");
        *self.by_reason.entry(r.reason.clone()).or_default() += 1;
        self.restarts_total += 1;
        if self.restarts.len() >= MAX_RESTARTS {
            self.restarts.pop_front();
        }
        self.restarts.push_back(r);
    }

    /// A worker failed: record why and schedule the next one. `Some(code)` means give up.
    pub(super) fn on_failure(&mut self, started: Instant, r: Restart) -> Option<i32> {
        if !self.current_config().supervisor.auto_restart {
            tracing::error!(reason = %r.reason, "the worker failed and auto_restart is off");
            return Some(r.exit_code.filter(|c| *c != 0).unwrap_or(1));
        }
        let jitter = {
            let mut b = [0u8; 4];
            let _ = getrandom::fill(&mut b);
            f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX) * 2.0 - 1.0
        };
        if let Some(delay) = self.policy.on_failure(started, Instant::now(), jitter) {
            self.record(r);
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                streak = self.policy.streak(),
                "restarting the worker"
            );
            self.next_start = Some(tokio::time::Instant::now() + delay);
            return None;
        }
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

    pub(super) fn on_exit(
        &mut self,
        generation: u64,
        status: std::io::Result<ExitStatus>,
    ) -> Option<i32> {
        let idx = self
            .workers
            .iter()
            .position(|w| w.generation == generation)?;
        // Out of the table at once: nothing signals it from here on.
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
        match w.phase {
            Phase::Retiring { .. } => return None,
            Phase::Replacing { .. } => {
                // It was being replaced; its replacement is starting already.
                tracing::warn!(
                    pid = w.pid,
                    "the worker being replaced died before its replacement was ready"
                );
                return None;
            }
            Phase::Starting
                if self
                    .workers
                    .iter()
                    .any(|o| matches!(o.phase, Phase::Replacing { .. })) =>
            {
                // A graceful restart's new worker failed before it served: keep the old one.
                tracing::error!(pid = w.pid, %status, "the new worker failed before it was ready; the current one keeps serving");
                self.cancel_replacement(&format!(
                    "graceful restart failed: the new worker ended ({status}) before it was ready; the old one kept serving"
                ));
                return None;
            }
            _ => {}
        }
        let code = status.code();
        let signal = status.signal();
        if let Phase::Hung { .. } = w.phase {
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
        let r = match (code, signal) {
            (Some(0), _) => {
                tracing::info!("the worker stopped cleanly; the supervisor stops too");
                return Some(EXIT_CLEAN);
            }
            (Some(EXIT_CANNOT_RUN), _) => {
                tracing::error!("the worker cannot run; not restarting it");
                return Some(EXIT_CANNOT_RUN);
            }
            (Some(EXIT_RESTART_ME), _) => Restart {
                at: now_rfc3339(),
                reason: "fatal".into(),
                signal: None,
                exit_code: Some(EXIT_RESTART_ME),
                // This worker's own fatal entry, never an older worker's.
                message: w.fatal_message.clone(),
            },
            (_, Some(sig)) => Restart {
                at: now_rfc3339(),
                reason: "signal".into(),
                signal: Some(signals::name(sig)),
                exit_code: None,
                message: None,
            },
            (code, None) => Restart {
                at: now_rfc3339(),
                reason: "exit".into(),
                signal: None,
                exit_code: code,
                message: None,
            },
        };
        self.on_failure(w.started, r)
    }

    pub(super) fn check_heartbeats(&mut self) {
        let config = self.current_config();
        let timeout = Duration::from_secs(config.supervisor.heartbeat_timeout_secs);
        let drain = Duration::from_secs(config.supervisor.drain_timeout_secs);
        let stable = Duration::from_secs(config.supervisor.stable_after_secs);
        let now = Instant::now();
        for w in self.workers.iter_mut() {
            match w.phase {
                Phase::Hung { since } if now.duration_since(since) > ABORT_GRACE => {
                    w.signal(libc::SIGKILL);
                }
                Phase::Retiring {
                    since,
                    killed: false,
                } if now.duration_since(since) > drain + STOP_GRACE => {
                    // Asked to go and still here past its drain: it must not keep sockets and
                    // sessions forever.
                    tracing::warn!(
                        pid = w.pid,
                        "a retiring worker outlived its drain timeout; killing it"
                    );
                    w.signal(libc::SIGKILL);
                    w.phase = Phase::Retiring {
                        since,
                        killed: true,
                    };
                }
                Phase::Starting | Phase::Serving | Phase::Replacing { .. }
                    if now.duration_since(w.last_heartbeat) > timeout =>
                {
                    tracing::error!(
                        pid = w.pid,
                        timeout_secs = timeout.as_secs(),
                        "worker silent: killing it (SIGABRT)"
                    );
                    w.phase = Phase::Hung { since: now };
                    w.signal(libc::SIGABRT);
                }
                _ => {}
            }
        }
        // A worker that has served long enough ends the crash streak, however it ends later
        // (CONTRACT.md: the streak resets after a stable run).
        if self
            .workers
            .iter()
            .any(|w| w.serving() && now.duration_since(w.started) >= stable)
        {
            self.policy.reset();
        }
    }
}
