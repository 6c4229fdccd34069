//! The worker's proof of life, once a second from its run loop: a stuck loop goes quiet and the
//! supervisor (or systemd's watchdog) notices.

use super::HEARTBEAT;
use crate::shared::Shared;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Proof that the runtime's worker threads still run tasks: a task on them that notes the time
/// every quarter second.
///
/// A task spawned to probe them (as before) waits in the runtime's shared queue behind every
/// connection that is ready to run, and at 3000 busy readers on one core that wait passed the
/// probe's timeout: a saturated worker was killed as hung, dropping every session when it was
/// busiest. A timer-woken task runs next on the thread that fired its timer, so the sentinel
/// ticks however long the queue is, and stops only when the threads do.
pub(super) struct Sentinel {
    start: Instant,
    /// Milliseconds since `start` at its last tick.
    last: Arc<AtomicU64>,
}

impl Sentinel {
    pub(super) fn start() -> Sentinel {
        let start = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let tick = last.clone();
        // Not tracked: it ends with the runtime, not with the sessions.
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                tick.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        });
        Sentinel { start, last }
    }

    /// Whether it has ticked within the last two heartbeats.
    fn fresh(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        now.saturating_sub(self.last.load(Ordering::Relaxed)) < 2 * HEARTBEAT.as_millis() as u64
    }
}

/// One heartbeat: if the runtime's worker threads still run tasks (the sentinel ticks), tells
/// the supervisor. Injected hang and core-path panic faults fire here, on the loop that sends
/// the heartbeat, as a real deadlock or bug there would.
pub(super) async fn beat(shared: &Arc<Shared>, sentinel: &Sentinel) {
    if shared.faults.hang.load(Ordering::Relaxed) {
        tracing::error!("injected fault: the run loop hangs");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if shared.faults.panic_core.load(Ordering::Relaxed) {
        panic!("injected fault: panic on the worker's core path");
    }
    if sentinel.fresh() {
        shared.heartbeat();
        if shared.supervision.is_none() && std::env::var_os("WATCHDOG_USEC").is_some() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
    }
}
