//! Failed logins per address (CONTRACT.md "Failed logins"): after `fail_limit` wrong
//! credentials within `fail_window_secs`, the address is refused (403) until its window ends.
//! Only wrong credentials count, not a first request without any (every client sends one).
//!
//! The table is bounded: when full, expired windows go first, then the oldest, so a flood of
//! addresses costs memory for at most `MAX_ADDRESSES` of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses tracked at most.
const MAX_ADDRESSES: usize = 16384;

struct Window {
    start: Instant,
    failures: u32,
    logged: bool,
}

/// What a new failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failed {
    /// Counted; the address may try again.
    Counted,
    /// This one reached the limit: log it (once per window).
    NowBlocked,
    /// Already blocked.
    Blocked,
}

/// Failures per address.
pub(crate) struct Failures {
    windows: HashMap<IpAddr, Window>,
}

impl Failures {
    pub(crate) fn new() -> Failures {
        Failures {
            windows: HashMap::new(),
        }
    }

    /// Whether `ip` is refused now.
    pub(crate) fn blocked(&self, ip: IpAddr, now: Instant, limit: u32, window: Duration) -> bool {
        self.windows
            .get(&ip)
            .is_some_and(|w| now.saturating_duration_since(w.start) < window && w.failures >= limit)
    }

    /// Records one failure from `ip`.
    pub(crate) fn fail(
        &mut self,
        ip: IpAddr,
        now: Instant,
        limit: u32,
        window: Duration,
    ) -> Failed {
        if !self.windows.contains_key(&ip) && self.windows.len() >= MAX_ADDRESSES {
            self.windows
                .retain(|_, w| now.saturating_duration_since(w.start) < window);
            if self.windows.len() >= MAX_ADDRESSES {
                if let Some(oldest) = self
                    .windows
                    .iter()
                    .min_by_key(|(_, w)| w.start)
                    .map(|(ip, _)| *ip)
                {
                    self.windows.remove(&oldest);
                }
            }
        }
        let w = self.windows.entry(ip).or_insert(Window {
            start: now,
            failures: 0,
            logged: false,
        });
        if now.saturating_duration_since(w.start) >= window {
            *w = Window {
                start: now,
                failures: 0,
                logged: false,
            };
        }
        w.failures = w.failures.saturating_add(1);
        if w.failures < limit {
            Failed::Counted
        } else if !w.logged {
            w.logged = true;
            Failed::NowBlocked
        } else {
            Failed::Blocked
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_blocks_for_the_rest_of_the_window_then_lifts() {
        let mut f = Failures::new();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let other: IpAddr = "127.0.0.1".parse().unwrap();
        let t = Instant::now();
        let w = Duration::from_secs(60);
        assert_eq!(f.fail(ip, t, 3, w), Failed::Counted);
        assert_eq!(f.fail(ip, t, 3, w), Failed::Counted);
        assert!(!f.blocked(ip, t, 3, w));
        assert_eq!(f.fail(ip, t, 3, w), Failed::NowBlocked);
        assert_eq!(f.fail(ip, t, 3, w), Failed::Blocked);
        assert!(f.blocked(ip, t + Duration::from_secs(59), 3, w));
        assert!(
            !f.blocked(other, t, 3, w),
            "another address is not affected"
        );
        assert!(!f.blocked(ip, t + w, 3, w), "the window ended");
        assert_eq!(f.fail(ip, t + w, 3, w), Failed::Counted, "a new window");
    }

    #[test]
    fn the_table_is_bounded() {
        let mut f = Failures::new();
        let t = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            f.fail(ip, t, 10, Duration::from_secs(60));
        }
        assert!(f.len() <= MAX_ADDRESSES);
    }
}
