//! DSS's status line: every `stats_interval_secs`, one line of what the server is doing, with a
//! header every 20 lines, for an operator watching a terminal.

use crate::shared::Shared;
use finch_relay::Totals;
use std::time::{Duration, Instant};

/// The header, in DSS's spirit (RTP and RTSP connections, kbit/s, packets/s …).
pub const HEADER: &str =
    "    Readers RTSP-Conns      Paths   kBits/Sec    Pkts/Sec    TotConn     TotBytes   Dropped";

/// Produces status lines from successive readings; takes `now` so it is tested without waiting.
#[derive(Debug)]
pub struct StatusLines {
    last: Option<(Instant, Totals)>,
    printed: u32,
}

/// One reading of the server.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// Readers playing.
    pub readers: usize,
    /// Open RTSP connections.
    pub connections: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Published paths.
    pub paths: usize,
    /// Traffic totals.
    pub totals: Totals,
}

impl Default for StatusLines {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusLines {
    /// No reading yet.
    pub fn new() -> Self {
        StatusLines {
            last: None,
            printed: 0,
        }
    }

    /// The lines to print for this reading (the header first, every 20 lines).
    pub fn next(&mut self, now: Instant, r: Reading) -> Vec<String> {
        let (kbits, pkts) = match self.last {
            Some((at, prev)) => {
                let secs = now
                    .saturating_duration_since(at)
                    .max(Duration::from_millis(1))
                    .as_secs_f64();
                let bytes = (r.totals.bytes_in + r.totals.bytes_out)
                    .saturating_sub(prev.bytes_in + prev.bytes_out);
                let packets = (r.totals.packets_in + r.totals.packets_out)
                    .saturating_sub(prev.packets_in + prev.packets_out);
                (bytes as f64 * 8.0 / 1000.0 / secs, packets as f64 / secs)
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, r.totals));
        let mut out = Vec::new();
        if self.printed.is_multiple_of(20) {
            out.push(HEADER.to_owned());
        }
        self.printed += 1;
        out.push(format!(
            "{:>11} {:>10} {:>10} {:>11.0} {:>11.0} {:>10} {:>12} {:>9}",
            r.readers,
            r.connections,
            r.paths,
            kbits,
            pkts,
            r.accepted,
            r.totals.bytes_in + r.totals.bytes_out,
            r.totals.packets_dropped
        ));
        out
    }
}

/// DSS's status line, every `log.stats_interval_secs` (0: off), through the binary's hook.
pub(super) fn print(shared: &Shared, status: &mut StatusLines, ticks: u64) {
    let every = shared.config().log.stats_interval_secs;
    let Some(print) = &shared.hooks.status_line else {
        return;
    };
    if every == 0 || !ticks.is_multiple_of(every) {
        return;
    }
    let paths = shared.registry.list();
    let reading = Reading {
        readers: paths.iter().map(|p| p.stream.reader_count()).sum(),
        connections: shared.connection_count(),
        accepted: shared.metrics.accepted_total(),
        paths: paths.len(),
        totals: shared.registry.totals(),
    };
    for line in status.next(Instant::now(), reading) {
        print(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_difference_between_readings() {
        let mut s = StatusLines::new();
        let t = Instant::now();
        let mut r = Reading {
            readers: 2,
            connections: 3,
            accepted: 3,
            paths: 1,
            totals: Totals::default(),
        };
        let first = s.next(t, r);
        assert_eq!(first[0], HEADER);
        r.totals.bytes_out = 125_000; // 1 Mbit
        r.totals.packets_out = 100;
        let second = s.next(t + Duration::from_secs(1), r);
        assert_eq!(second.len(), 1);
        let cols: Vec<&str> = second[0].split_whitespace().collect();
        assert_eq!(cols[..5], ["2", "3", "1", "1000", "100"]);
    }
}
