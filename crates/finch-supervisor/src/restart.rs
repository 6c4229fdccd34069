//! The restart policy (CONTRACT.md "Restart policy"), as a sans-IO state machine.
//!
//! Within one crash streak, the backoff before restart n is 0, then `backoff_initial_ms`,
//! doubling up to `backoff_max_ms`, each with ±20 % jitter. A worker that ran
//! `stable_after_secs` before it died ends the streak. More than `crash_loop_limit` restarts in
//! one streak: give up. Graceful restarts never go through here. Time and randomness are
//! arguments, so the policy is tested without sleeping.

use std::time::{Duration, Instant};

/// The policy's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Backoff before the second restart of a streak.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
    /// A run this long ends the streak.
    pub stable_after: Duration,
    /// Restarts allowed in one streak.
    pub limit: u32,
}

/// Where the policy stands.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    settings: Settings,
    streak: u32,
}

impl RestartPolicy {
    /// A fresh policy.
    pub fn new(settings: Settings) -> Self {
        RestartPolicy {
            settings,
            streak: 0,
        }
    }

    /// A worker started at `started` failed at `now`. Returns the delay before the next start,
    /// or `None` to give up. `jitter` is uniform in [-1, 1].
    pub fn on_failure(&mut self, started: Instant, now: Instant, jitter: f64) -> Option<Duration> {
        if now.saturating_duration_since(started) >= self.settings.stable_after {
            self.streak = 0;
        }
        self.streak += 1;
        if self.streak > self.settings.limit {
            return None;
        }
        if self.streak == 1 {
            return Some(Duration::ZERO);
        }
        let doublings = (self.streak - 2).min(31);
        let base = self
            .settings
            .initial
            .saturating_mul(1u32 << doublings)
            .min(self.settings.max);
        Some(base.mul_f64(1.0 + 0.2 * jitter.clamp(-1.0, 1.0)))
    }

    /// Restarts in the current streak.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// A worker has run stably: the streak is over.
    pub fn reset(&mut self) {
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(limit: u32) -> RestartPolicy {
        RestartPolicy::new(Settings {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            limit,
        })
    }

    #[test]
    fn backoff_doubles_from_zero_and_caps() {
        let mut p = policy(100);
        let t = Instant::now();
        let delays: Vec<u128> = (0..12)
            .map(|_| p.on_failure(t, t, 0.0).unwrap().as_millis())
            .collect();
        assert_eq!(
            delays,
            vec![0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
    }

    #[test]
    fn jitter_stays_within_20_percent() {
        let mut p = policy(100);
        let t = Instant::now();
        p.on_failure(t, t, 0.0);
        assert_eq!(p.on_failure(t, t, 1.0), Some(Duration::from_millis(120)));
        assert_eq!(p.on_failure(t, t, -1.0), Some(Duration::from_millis(160)));
    }

    #[test]
    fn gives_up_past_the_limit_and_a_stable_run_resets() {
        let mut p = policy(3);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(p.on_failure(t, t, 0.0).is_some());
        }
        assert_eq!(p.on_failure(t, t, 0.0), None);
        let mut p = policy(3);
        for _ in 0..3 {
            p.on_failure(t, t, 0.0);
        }
        let later = t + Duration::from_secs(61);
        assert_eq!(p.on_failure(t, later, 0.0), Some(Duration::ZERO));
        assert_eq!(p.streak(), 1);
    }
}
