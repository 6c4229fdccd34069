//! Signs of life for session timeouts, shared between a session and the UDP receive loops.
//!
//! Any request, any RTCP (from a reader) and any media (from a publisher) refreshes it. It holds
//! coarse milliseconds since the process started, so touching it is one relaxed atomic store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// When a session last showed a sign of life.
#[derive(Debug, Clone)]
pub struct Activity(Arc<AtomicU64>);

impl Activity {
    /// Alive now.
    pub fn new() -> Self {
        Activity(Arc::new(AtomicU64::new(now_ms())))
    }

    /// A sign of life.
    pub fn touch(&self) {
        self.0.store(now_ms(), Ordering::Relaxed);
    }

    /// How long since the last sign of life.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.0.load(Ordering::Relaxed)))
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}
