//! The server state (DSS's `qtssSvrState`), one value in a `watch` channel.
//!
//! The accept loop, the admin API and the run loop all observe it. RefusingConnections answers
//! new RTSP connections with 503 and keeps existing sessions; Idle closes every session;
//! FatalError and ShuttingDown make the worker stop.

use serde::Serialize;

/// The server's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Binding, loading.
    Starting,
    /// Serving.
    Running,
    /// New connections get 503; existing sessions go on.
    RefusingConnections,
    /// Every session is closed; new connections are served.
    Idle,
    /// A fatal condition: the worker will exit 254 and be restarted.
    FatalError,
    /// Stopping.
    ShuttingDown,
}

impl ServerState {
    /// The name used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Starting => "starting",
            ServerState::Running => "running",
            ServerState::RefusingConnections => "refusing_connections",
            ServerState::Idle => "idle",
            ServerState::FatalError => "fatal_error",
            ServerState::ShuttingDown => "shutting_down",
        }
    }

    /// Whether new RTSP connections are accepted and served.
    pub fn accepts_connections(self) -> bool {
        matches!(self, ServerState::Running | ServerState::Idle)
    }

    /// Whether the worker is on its way out (FatalError, ShuttingDown): it stops accepting at
    /// once, so connections wait in the backlog for the next worker instead of being refused.
    pub fn is_stopping(self) -> bool {
        matches!(self, ServerState::FatalError | ServerState::ShuttingDown)
    }
}
