//! Server nonces that need no table: a nonce is a timestamp, a unique salt (so two clients
//! challenged in the same second get different nonces, and their `nc` counts do not collide),
//! and an HMAC of both under a secret,
//! so any worker holding the secret (the supervisor hands the same one to each) recognises
//! nonces minted by another, and an old one is known to be old (RFC 7616 §3.3 suggests exactly
//! this). Replayed `nc` values are caught by [`NonceCounts`], a bounded table.
//!
//! Time and the salt are arguments (Unix seconds, a random number): nothing here reads a clock
//! or a random source.

use super::digest::{constant_time_eq, to_hex};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};

/// What a nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Minted by us and young enough.
    Fresh,
    /// Minted by us but expired: the client should retry with a new one (`stale=true`).
    Stale,
    /// Not ours (or tampered with, or from the future).
    Invalid,
}

/// Mints and checks nonces under one secret.
#[derive(Clone)]
pub struct Nonces {
    secret: Vec<u8>,
    expiry_secs: u64,
}

/// Nonces dated this far in the future are refused (clock differences between workers are
/// nil: they share a machine).
const FUTURE_SLACK_SECS: u64 = 60;

impl Nonces {
    /// Nonces under `secret`, valid `expiry_secs`.
    pub fn new(secret: &[u8], expiry_secs: u64) -> Nonces {
        Nonces {
            secret: secret.to_vec(),
            expiry_secs,
        }
    }

    fn mac(&self, ts: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return String::new();
        };
        m.update(ts.as_bytes());
        to_hex(&m.finalize().into_bytes()[..16])
    }

    /// A nonce minted at `now` (Unix seconds) with a `salt` unique to it: 16 hex digits of
    /// time, 16 of salt, 32 of MAC.
    pub fn mint(&self, now: u64, salt: u64) -> String {
        let head = format!("{now:016x}{salt:016x}");
        let mac = self.mac(&head);
        format!("{head}{mac}")
    }

    /// Checks a nonce a client sent back.
    pub fn check(&self, nonce: &str, now: u64) -> NonceCheck {
        if nonce.len() != 64 || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (head, mac) = nonce.split_at(32);
        if !constant_time_eq(self.mac(head).as_bytes(), mac.as_bytes()) {
            return NonceCheck::Invalid;
        }
        let ts = &head[..16];
        let Ok(minted) = u64::from_str_radix(ts, 16) else {
            return NonceCheck::Invalid;
        };
        if minted > now.saturating_add(FUTURE_SLACK_SECS) {
            return NonceCheck::Invalid;
        }
        if now.saturating_sub(minted) > self.expiry_secs {
            return NonceCheck::Stale;
        }
        NonceCheck::Fresh
    }
}

/// The highest `nc` seen per nonce, for the nonces seen last: a response whose `nc` is not
/// above the last one for its nonce is a replay (RFC 2617 §3.2.2). Bounded: the oldest nonce
/// is forgotten first, which only lets its client's next request through as if fresh.
pub struct NonceCounts {
    last: HashMap<String, u32>,
    order: VecDeque<String>,
    capacity: usize,
}

impl NonceCounts {
    /// A table for `capacity` nonces.
    pub fn new(capacity: usize) -> NonceCounts {
        NonceCounts {
            last: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `nc` (8 hex digits) for `nonce`; false if it is not above the last one seen.
    pub fn accept(&mut self, nonce: &str, nc: &str) -> bool {
        let Ok(n) = u32::from_str_radix(nc, 16) else {
            return false;
        };
        if nc.len() != 8 || n == 0 {
            return false;
        }
        match self.last.get_mut(nonce) {
            Some(prev) if n <= *prev => false,
            Some(prev) => {
                *prev = n;
                true
            }
            None => {
                if self.order.len() >= self.capacity {
                    if let Some(old) = self.order.pop_front() {
                        self.last.remove(&old);
                    }
                }
                self.order.push_back(nonce.to_owned());
                self.last.insert(nonce.to_owned(), n);
                true
            }
        }
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_live_then_go_stale_and_forgeries_fail() {
        let n = Nonces::new(b"secret", 300);
        let nonce = n.mint(1_000_000, 7);
        assert_ne!(
            nonce,
            n.mint(1_000_000, 8),
            "two challenges in one second differ"
        );
        assert_eq!(n.check(&nonce, 1_000_000), NonceCheck::Fresh);
        assert_eq!(n.check(&nonce, 1_000_300), NonceCheck::Fresh);
        assert_eq!(n.check(&nonce, 1_000_301), NonceCheck::Stale);
        // Another worker with the same secret knows it; one with another secret does not.
        assert_eq!(
            Nonces::new(b"secret", 300).check(&nonce, 1_000_001),
            NonceCheck::Fresh
        );
        assert_eq!(
            Nonces::new(b"other", 300).check(&nonce, 1_000_001),
            NonceCheck::Invalid
        );
        // A changed timestamp breaks the MAC.
        let forged = format!("{:016x}{}", 2_000_000u64, &nonce[16..]);
        assert_eq!(forged.len(), nonce.len());
        assert_eq!(n.check(&forged, 2_000_000), NonceCheck::Invalid);
        assert_eq!(n.check("short", 0), NonceCheck::Invalid);
        assert_eq!(
            n.check(&n.mint(5_000, 1), 1_000),
            NonceCheck::Invalid,
            "from the future"
        );
    }

    #[test]
    fn a_replayed_nc_is_refused_and_the_table_is_bounded() {
        let mut t = NonceCounts::new(2);
        assert!(t.accept("a", "00000001"));
        assert!(!t.accept("a", "00000001"), "replay");
        assert!(t.accept("a", "00000002"));
        assert!(!t.accept("a", "zz"));
        assert!(!t.accept("a", "00000000"));
        assert!(t.accept("b", "00000001"));
        assert!(t.accept("c", "00000001"));
        assert_eq!(t.len(), 2);
    }
}
