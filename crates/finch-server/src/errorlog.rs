//! The error log, after DSS's `QTSServerInterface::LogError`.
//!
//! Every message goes to each sink (DSS's ErrorLog role): the tracing log (stderr or file), an
//! in-memory ring served by `GET /api/v1/errors` (and handed to the supervisor, so it survives a
//! worker restart), and a counter per verbosity for the metrics. A message at **fatal** verbosity
//! also sets the server state to FatalError: that is the one and only way an error restarts the
//! worker, and [`ErrorLog::fatal`] is the one call that does it. Which conditions are fatal is
//! listed in ARCHITECTURE.md; an ordinary error is logged, counted and rate-limited, nothing more.

use crate::report::Reporter;
use crate::state::ServerState;
use finch_control::{ErrorEntry, ToSupervisor, MAX_ERRORS};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};
use tokio::sync::watch;

/// DSS's verbosities, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// The server cannot go on: FatalError, restart.
    Fatal = 0,
    /// Something was lost or refused; the server goes on.
    Warning = 1,
    /// Worth telling an operator.
    Message = 2,
    /// A broken expectation that was survived.
    Assert = 3,
    /// Detail.
    Debug = 4,
}

impl Verbosity {
    /// All of them, in order.
    pub const ALL: [Verbosity; 5] = [
        Verbosity::Fatal,
        Verbosity::Warning,
        Verbosity::Message,
        Verbosity::Assert,
        Verbosity::Debug,
    ];

    /// The name used by the API and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verbosity::Fatal => "fatal",
            Verbosity::Warning => "warning",
            Verbosity::Message => "message",
            Verbosity::Assert => "assert",
            Verbosity::Debug => "debug",
        }
    }
}

/// More than this many entries in one second are counted but not written to the log.
const LOG_LINES_PER_SEC: u32 = 20;

/// The error log and its sinks.
pub struct ErrorLog {
    ring: Mutex<VecDeque<ErrorEntry>>,
    counts: [AtomicU64; 5],
    rate: Mutex<(Option<Instant>, u32, u64)>,
    supervisor: Option<Reporter>,
    state: watch::Sender<ServerState>,
}

impl ErrorLog {
    /// An error log that starts from `errors` (the ring a previous worker left) and forwards new
    /// entries to the supervisor, if there is one.
    pub fn new(
        errors: Vec<ErrorEntry>,
        supervisor: Option<Reporter>,
        state: watch::Sender<ServerState>,
    ) -> ErrorLog {
        ErrorLog {
            ring: Mutex::new(errors.into_iter().collect()),
            counts: Default::default(),
            rate: Mutex::new((None, 0, 0)),
            supervisor,
            state,
        }
    }

    /// Logs at fatal verbosity and sets FatalError: the worker will stop and be restarted.
    pub fn fatal(&self, message: impl Into<String>) {
        let message = message.into();
        self.log(Verbosity::Fatal, &message);
        self.state.send_replace(ServerState::FatalError);
        if let Some(s) = &self.supervisor {
            s.reliable(ToSupervisor::Fatal { message });
        }
    }

    /// Logs an ordinary error (warning verbosity). Never changes the server state.
    pub fn error(&self, message: impl Into<String>) {
        self.log(Verbosity::Warning, &message.into());
    }

    /// Hands one message to every sink.
    pub fn log(&self, verbosity: Verbosity, message: &str) {
        self.counts[verbosity as usize].fetch_add(1, Ordering::Relaxed);
        let entry = ErrorEntry {
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            verbosity: verbosity.as_str().to_owned(),
            message: message.to_owned(),
        };
        {
            let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
            if ring.len() >= MAX_ERRORS {
                ring.pop_front();
            }
            ring.push_back(entry.clone());
        }
        if let Some(s) = &self.supervisor {
            // Best effort: a full control queue must never block the caller. A fatal entry goes
            // as the reliable `Fatal` report instead (see `fatal`): sent first, it is what the
            // supervisor keeps, where a lossy entry queued behind it could die with the worker.
            if verbosity != Verbosity::Fatal {
                s.lossy(ToSupervisor::Log { entry });
            }
        }
        if verbosity != Verbosity::Fatal && !self.admit_line() {
            return;
        }
        match verbosity {
            Verbosity::Fatal => tracing::error!(verbosity = "fatal", "{message}"),
            Verbosity::Warning => tracing::error!("{message}"),
            Verbosity::Message => tracing::warn!("{message}"),
            Verbosity::Assert => tracing::warn!(verbosity = "assert", "{message}"),
            Verbosity::Debug => tracing::debug!("{message}"),
        }
    }

    /// Rate limit for log lines: the ring and the counters still see every entry.
    fn admit_line(&self) -> bool {
        let mut r = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if r.0
            .is_none_or(|start| now.duration_since(start).as_secs() >= 1)
        {
            if r.2 > 0 {
                tracing::warn!(
                    suppressed = r.2,
                    "error log lines suppressed in the last second"
                );
            }
            *r = (Some(now), 0, 0);
        }
        r.1 += 1;
        if r.1 > LOG_LINES_PER_SEC {
            r.2 += 1;
            return false;
        }
        true
    }

    /// The ring, oldest first.
    pub fn entries(&self) -> Vec<ErrorEntry> {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// How many entries of a verbosity were logged by this worker.
    pub fn count(&self, v: Verbosity) -> u64 {
        self.counts[v as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_fatal_changes_the_state() {
        let state = watch::Sender::new(ServerState::Running);
        let (tx, mut rx) = crate::report::channel();
        let log = ErrorLog::new(Vec::new(), Some(tx), state.clone());
        for _ in 0..50 {
            log.error("a camera went away");
        }
        log.log(Verbosity::Assert, "odd");
        assert_eq!(*state.borrow(), ServerState::Running);
        assert_eq!(log.count(Verbosity::Warning), 50);
        log.fatal("cannot go on");
        assert_eq!(*state.borrow(), ServerState::FatalError);
        assert_eq!(log.entries().last().unwrap().verbosity, "fatal");
        // The lossy queue is full of log entries; the fatal report still arrives.
        for _ in 0..crate::report::LOSSY_QUEUE {
            log.error("more");
        }
        assert!(matches!(
            rx.reliable.recv().await,
            Some(ToSupervisor::Fatal { .. })
        ));
    }

    #[test]
    fn ring_is_bounded_and_keeps_the_newest() {
        let log = ErrorLog::new(Vec::new(), None, watch::Sender::new(ServerState::Running));
        for i in 0..(MAX_ERRORS + 10) {
            log.log(Verbosity::Debug, &format!("m{i}"));
        }
        let e = log.entries();
        assert_eq!(e.len(), MAX_ERRORS);
        assert_eq!(e.last().unwrap().message, format!("m{}", MAX_ERRORS + 9));
    }
}
