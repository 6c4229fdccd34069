//! Reports from the worker to its supervisor, queued for the control channel's writer task.
//!
//! Two bounded queues: a lossy one for what may be dropped when the supervisor falls behind
//! (heartbeats, error-log entries), and a small one for what must arrive (Ready, Fatal, a
//! restart request, a reloaded config), which the writer always empties first. Neither ever
//! blocks the caller or spawns anything: when even the reliable queue is full, the supervisor
//! has stopped reading altogether, and the report is dropped with an error line.

use finch_control::ToSupervisor;
use tokio::sync::mpsc;

/// Lossy reports queued at most: heartbeats and log entries are small and read at once.
pub const LOSSY_QUEUE: usize = 1024;
/// Reports that must arrive, queued at most. They are rare (a handful per worker life).
pub const RELIABLE_QUEUE: usize = 64;

/// The sending side, cloned wherever the worker reports from.
#[derive(Clone, Debug)]
pub struct Reporter {
    lossy: mpsc::Sender<ToSupervisor>,
    reliable: mpsc::Sender<ToSupervisor>,
}

/// The receiving side, for the control channel's writer.
pub struct Reports {
    /// Lossy reports.
    pub lossy: mpsc::Receiver<ToSupervisor>,
    /// Reports that must arrive; read first.
    pub reliable: mpsc::Receiver<ToSupervisor>,
}

/// A connected pair.
pub fn channel() -> (Reporter, Reports) {
    let (lt, lr) = mpsc::channel(LOSSY_QUEUE);
    let (rt, rr) = mpsc::channel(RELIABLE_QUEUE);
    (
        Reporter {
            lossy: lt,
            reliable: rt,
        },
        Reports {
            lossy: lr,
            reliable: rr,
        },
    )
}

impl Reporter {
    /// Queues a report that may be dropped if the supervisor is behind.
    pub fn lossy(&self, msg: ToSupervisor) {
        let _ = self.lossy.try_send(msg);
    }

    /// Queues a report that must arrive. False when the channel has closed (no supervisor).
    pub fn reliable(&self, msg: ToSupervisor) -> bool {
        match self.reliable.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(m)) => {
                tracing::error!(report = ?m, "the supervisor reads no reports; this one is lost");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Whether the supervisor's side has gone.
    pub fn is_closed(&self) -> bool {
        self.reliable.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stuck_supervisor_costs_bounded_memory_and_no_tasks() {
        let (tx, mut rx) = channel();
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        for _ in 0..10_000 {
            tx.lossy(ToSupervisor::Heartbeat);
            tx.reliable(ToSupervisor::Restart);
        }
        assert_eq!(
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
            tasks,
            "reports must not spawn tasks"
        );
        assert_eq!(rx.lossy.len(), LOSSY_QUEUE);
        assert_eq!(rx.reliable.len(), RELIABLE_QUEUE);
        // What was queued first arrives.
        assert_eq!(rx.reliable.recv().await, Some(ToSupervisor::Restart));
    }
}
