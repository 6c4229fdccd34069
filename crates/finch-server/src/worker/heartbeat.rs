//! The worker's proof of life, once a second from its run loop: a stuck loop goes quiet and the
//! supervisor (or systemd's watchdog) notices.

use super::HEARTBEAT;
use crate::shared::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// One heartbeat: proves the runtime's worker threads still run tasks (a spawned probe must
/// complete), then tells the supervisor. Injected hang and core-path panic faults fire here,
/// on the loop that sends the heartbeat, as a real deadlock or bug there would.
pub(super) async fn beat(shared: &Arc<Shared>) {
    if shared.faults.hang.load(Ordering::Relaxed) {
        tracing::error!("injected fault: the run loop hangs");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if shared.faults.panic_core.load(Ordering::Relaxed) {
        panic!("injected fault: panic on the worker's core path");
    }
    if tokio::time::timeout(HEARTBEAT * 2, tokio::spawn(async {}))
        .await
        .is_ok()
    {
        shared.heartbeat();
        if shared.supervision.is_none() && std::env::var_os("WATCHDOG_USEC").is_some() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
    }
}
