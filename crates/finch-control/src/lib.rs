//! The control channel between the supervisor and its worker.
//!
//! A Unix stream socket pair, one JSON message per line. The supervisor sends one
//! [`ToWorker::Init`] when the worker starts (the config that last validated, the restart history
//! and the error ring, which must survive worker restarts); the worker sends heartbeats from its
//! run loop, its error-log entries, and what only the supervisor can act on (a fatal error, a
//! restart request, a reloaded config).
//!
//! Both sides only serialise and parse here; who reads and writes the socket is theirs.

use serde::{Deserialize, Serialize};

/// The descriptor number of the control socket in the worker, in this environment variable.
/// (Not `FINCH_`-prefixed: those are config overrides.)
pub const CONTROL_FD_ENV: &str = "_FINCH_CONTROL_FD";

/// Set in a worker started to replace a serving one: it waits for that worker's sessions
/// (a graceful restart's handover).
pub const ADOPT_ENV: &str = "_FINCH_ADOPT";

/// The message of a graceful restart's entry once the new worker took sessions over.
pub fn handed_over_message(publishers: usize, readers: usize, connections: usize) -> String {
    format!("graceful restart: handed over publishers={publishers} readers={readers} connections={connections}")
}

/// Restart history kept: the most recent entries.
pub const MAX_RESTARTS: usize = 100;
/// Error-log entries kept in the ring.
pub const MAX_ERRORS: usize = 200;

/// Why a worker was restarted (CONTRACT.md: `GET /api/v1/server` `restarts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    /// When (RFC 3339).
    pub at: String,
    /// `signal`, `fatal`, `hang`, `exit` or `requested`.
    pub reason: String,
    /// The signal that killed the worker (`SIGSEGV`), if any.
    pub signal: Option<String>,
    /// The worker's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The fatal message, or what the supervisor saw.
    pub message: Option<String>,
}

/// One error-log entry (CONTRACT.md: `GET /api/v1/errors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// When (RFC 3339).
    pub at: String,
    /// `fatal`, `warning`, `message`, `assert` or `debug`.
    pub verbosity: String,
    /// The text.
    pub message: String,
}

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Sent once, first.
    Init {
        /// 1 for the first worker, then one more per start.
        generation: u64,
        /// The supervisor's pid.
        supervisor_pid: u32,
        /// The effective config that last validated, as TOML (no environment to apply).
        config: String,
        /// Restart history, oldest first.
        restarts: Vec<Restart>,
        /// Restarts since the supervisor started.
        restarts_total: u64,
        /// Restarts by reason, for the metrics.
        restarts_by_reason: Vec<(String, u64)>,
        /// The error ring, oldest first.
        errors: Vec<ErrorEntry>,
        /// The secret Digest nonces are minted under (hex), the same for every worker so a
        /// nonce survives a restart.
        auth_secret: String,
    },
}

/// Worker → supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToSupervisor {
    /// The run loop is alive.
    Heartbeat,
    /// Serving (sockets taken, state Running).
    Ready,
    /// An error-log entry, for the ring the next worker gets.
    Log {
        /// The entry.
        entry: ErrorEntry,
    },
    /// The worker reached FatalError and is draining: start the next one now.
    Fatal {
        /// The fatal message.
        message: String,
    },
    /// An operator asked for a graceful restart (API).
    Restart,
    /// This worker took over its predecessor's connections on a graceful restart.
    HandedOver {
        publishers: usize,
        readers: usize,
        /// Connections without a session yet.
        connections: usize,
    },
    /// A reload was validated and applied: the config a restarted worker must use.
    Config {
        /// The effective config as TOML.
        toml: String,
    },
}

/// One message as a line.
pub fn encode<T: Serialize>(msg: &T) -> String {
    let mut s = serde_json::to_string(msg).unwrap_or_default();
    s.push('\n');
    s
}

/// Parses one line.
pub fn decode<'a, T: Deserialize<'a>>(line: &'a str) -> Option<T> {
    serde_json::from_str(line.trim_end()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_lines() {
        let m = ToSupervisor::Fatal {
            message: "boom".into(),
        };
        let line = encode(&m);
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        assert_eq!(decode::<ToSupervisor>(&line), Some(m));
        let init = ToWorker::Init {
            generation: 2,
            supervisor_pid: 1,
            config: "[rtsp]\nport = 1\n".into(),
            restarts: vec![Restart {
                at: "2026-01-01T00:00:00Z".into(),
                reason: "signal".into(),
                signal: Some("SIGKILL".into()),
                exit_code: None,
                message: None,
            }],
            restarts_total: 1,
            restarts_by_reason: vec![("signal".into(), 1)],
            errors: vec![],
            auth_secret: "00ff".into(),
        };
        assert_eq!(decode::<ToWorker>(&encode(&init)), Some(init));
        assert_eq!(decode::<ToSupervisor>("garbage"), None);
    }
}
