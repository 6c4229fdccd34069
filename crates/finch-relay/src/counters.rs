//! Traffic counters, kept where the work happens so that no two tasks write the same one.
//!
//! A stream's source writes its `in` counters; each reader writes its own [`ReaderStats`] (one
//! allocation per reader, so readers on different cores never share a cache line). Totals are
//! summed when someone asks (the admin API, a metrics scrape), not on the packet path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What one reader has been sent and lost.
#[derive(Debug, Default)]
pub struct ReaderStats {
    /// Bytes written to it.
    pub bytes_out: AtomicU64,
    /// Packets written to it.
    pub packets_out: AtomicU64,
    /// Packets it skipped for falling behind.
    pub packets_dropped: AtomicU64,
}

/// A stream's counters: the source's traffic, plus what readers that have left were sent.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes received from the source.
    pub bytes_in: AtomicU64,
    /// Packets received from the source.
    pub packets_in: AtomicU64,
    /// Readers disconnected for falling too far behind.
    pub readers_kicked: AtomicU64,
    /// Out-going totals of readers that have left.
    pub(crate) left: ReaderStats,
}

/// Traffic totals, for the metrics and the status line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Packets from sources.
    pub packets_in: u64,
    /// Bytes from sources.
    pub bytes_in: u64,
    /// Packets to readers.
    pub packets_out: u64,
    /// Bytes to readers.
    pub bytes_out: u64,
    /// Packets dropped for slow readers.
    pub packets_dropped: u64,
    /// Readers disconnected as too slow.
    pub readers_kicked: u64,
}

impl Totals {
    /// Adds a stream's source counters and its departed readers.
    pub(crate) fn add_counters(&mut self, c: &Counters) {
        self.packets_in += c.packets_in.load(Relaxed);
        self.bytes_in += c.bytes_in.load(Relaxed);
        self.readers_kicked += c.readers_kicked.load(Relaxed);
        self.add_reader(&c.left);
    }

    /// Adds one reader's counters.
    pub(crate) fn add_reader(&mut self, r: &ReaderStats) {
        self.packets_out += r.packets_out.load(Relaxed);
        self.bytes_out += r.bytes_out.load(Relaxed);
        self.packets_dropped += r.packets_dropped.load(Relaxed);
    }

    /// The sum of two totals.
    pub fn plus(mut self, o: Totals) -> Totals {
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        self.packets_dropped += o.packets_dropped;
        self.readers_kicked += o.readers_kicked;
        self
    }
}

impl ReaderStats {
    /// Moves this reader's counts into `into` (a reader leaving its stream).
    pub(crate) fn retire_into(&self, into: &ReaderStats) {
        into.bytes_out
            .fetch_add(self.bytes_out.load(Relaxed), Relaxed);
        into.packets_out
            .fetch_add(self.packets_out.load(Relaxed), Relaxed);
        into.packets_dropped
            .fetch_add(self.packets_dropped.load(Relaxed), Relaxed);
    }
}
