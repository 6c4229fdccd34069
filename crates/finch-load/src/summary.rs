//! What a run measured, from every reader's record: totals, per-reader spreads, and the
//! server's cost.

use crate::reader::Record;
use serde::Serialize;
use std::time::Duration;

/// A run's figures, printed as one line of `key=value` or as JSON.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub readers: usize,
    pub played: usize,
    pub failed: usize,
    /// Readers the server closed before their deadline.
    pub cut: usize,
    pub wall_s: f64,
    pub bytes: u64,
    pub mbit_s: f64,
    /// Delivered RTP bytes / bytes due to the readers that played, in percent.
    pub delivered_pct: f64,
    /// Readers that played and got at least 99 % and 99.9 % of what was due to them.
    pub readers_ge_99: usize,
    pub readers_ge_99_9: usize,
    /// Per-reader received bytes.
    pub reader_bytes_min: u64,
    pub reader_bytes_p01: u64,
    pub reader_bytes_median: u64,
    pub reader_bytes_p99: u64,
    pub reader_bytes_max: u64,
    pub rtp_packets: u64,
    /// Packets missing in sequence gaps, and after a cut or stall.
    pub gaps: u64,
    pub tail: u64,
    /// How far readers' video fell behind real time (see `Record::behind_s`), and how many
    /// fell more than a second behind.
    pub behind_s_median: Option<f64>,
    pub behind_s_p99: Option<f64>,
    pub readers_behind_1s: usize,
    /// From PLAY's answer to the first keyframe packet.
    pub first_key_ms_median: Option<f64>,
    pub first_key_ms_p99: Option<f64>,
    /// From connecting to PLAY's answer.
    pub connect_ms_median: Option<f64>,
    pub connect_ms_p99: Option<f64>,
    /// From the run's start to the last reader's PLAY answer.
    pub all_connected_ms: Option<f64>,
    pub server_cpu_s: Option<f64>,
    pub cpu_s_per_gbit: Option<f64>,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_peak_kib: Option<u64>,
    /// (peak - before) / readers.
    pub server_kib_per_reader: Option<f64>,
    /// The load tool's own CPU over the run: near `wall_s` it was the bottleneck, not the
    /// server (it runs on one core).
    pub client_cpu_s: Option<f64>,
    /// The first few reasons readers failed.
    pub errors: Vec<String>,
}

/// The value at quantile `q` (0..=1) of sorted `v`, nearest rank.
fn quantile<T: Copy>(v: &[T], q: f64) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The server's side of a run, when its pid was given.
#[derive(Debug, Default, Clone, Copy)]
pub struct ServerCost {
    pub cpu_s: Option<f64>,
    pub rss_before_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    /// The load tool's own CPU seconds (not the server's, but reported with its cost).
    pub client_cpu_s: Option<f64>,
}

impl Summary {
    pub fn new(records: &[Record], wall: Duration, server: ServerCost) -> Summary {
        let played: Vec<&Record> = records.iter().filter(|r| r.played).collect();
        let bytes: u64 = played.iter().map(|r| r.bytes).sum();
        let due: u64 = played.iter().map(|r| r.expected_bytes()).sum();
        let gbit = bytes as f64 * 8.0 / 1e9;
        let mut per: Vec<u64> = played.iter().map(|r| r.bytes).collect();
        per.sort_unstable();
        let mut keys: Vec<f64> = played.iter().filter_map(|r| r.first_key).map(ms).collect();
        keys.sort_by(f64::total_cmp);
        let mut behind: Vec<f64> = played.iter().filter_map(|r| r.behind_s).collect();
        behind.sort_by(f64::total_cmp);
        let mut connects: Vec<f64> = played.iter().filter_map(|r| r.connect).map(ms).collect();
        connects.sort_by(f64::total_cmp);
        let all_connected = played
            .iter()
            .filter_map(|r| r.connect.map(|c| r.started + c))
            .max();
        let n = records.len();
        Summary {
            readers: n,
            played: played.len(),
            failed: n - played.len(),
            cut: played.iter().filter(|r| r.cut).count(),
            wall_s: wall.as_secs_f64(),
            bytes,
            mbit_s: gbit * 1000.0 / wall.as_secs_f64().max(1e-9),
            delivered_pct: if due == 0 {
                0.0
            } else {
                bytes as f64 * 100.0 / due as f64
            },
            readers_ge_99: played.iter().filter(|r| r.delivered() >= 0.99).count(),
            readers_ge_99_9: played.iter().filter(|r| r.delivered() >= 0.999).count(),
            reader_bytes_min: per.first().copied().unwrap_or(0),
            reader_bytes_p01: quantile(&per, 0.01).unwrap_or(0),
            reader_bytes_median: quantile(&per, 0.5).unwrap_or(0),
            reader_bytes_p99: quantile(&per, 0.99).unwrap_or(0),
            reader_bytes_max: per.last().copied().unwrap_or(0),
            rtp_packets: played.iter().map(|r| r.packets).sum(),
            gaps: played.iter().map(|r| r.gaps).sum(),
            tail: played.iter().map(|r| r.tail).sum(),
            behind_s_median: quantile(&behind, 0.5),
            behind_s_p99: quantile(&behind, 0.99),
            readers_behind_1s: behind.iter().filter(|&&b| b > 1.0).count(),
            first_key_ms_median: quantile(&keys, 0.5),
            first_key_ms_p99: quantile(&keys, 0.99),
            connect_ms_median: quantile(&connects, 0.5),
            connect_ms_p99: quantile(&connects, 0.99),
            all_connected_ms: all_connected.map(ms),
            server_cpu_s: server.cpu_s,
            cpu_s_per_gbit: server.cpu_s.filter(|_| gbit > 0.0).map(|c| c / gbit),
            server_rss_before_kib: server.rss_before_kib,
            server_rss_peak_kib: server.rss_peak_kib,
            server_kib_per_reader: match (server.rss_before_kib, server.rss_peak_kib) {
                (Some(a), Some(b)) if n > 0 => Some(b.saturating_sub(a) as f64 / n as f64),
                _ => None,
            },
            client_cpu_s: server.client_cpu_s,
            errors: records
                .iter()
                .filter_map(|r| r.error.clone())
                .take(3)
                .collect(),
        }
    }

    /// One line of `key=value`, `-` for what was not measured.
    pub fn line(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        let mut out = Vec::new();
        if let Some(map) = v.as_object() {
            for (k, v) in map {
                if k == "errors" {
                    continue;
                }
                let s = match v {
                    serde_json::Value::Null => "-".to_owned(),
                    serde_json::Value::Number(n) => match n.as_f64() {
                        Some(f) if n.is_f64() => format!("{f:.3}"),
                        _ => n.to_string(),
                    },
                    other => other.to_string(),
                };
                out.push(format!("{k}={s}"));
            }
        }
        out.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_reader_and_a_failed_one_show_in_the_figures() {
        let ok = |bytes| Record {
            played: true,
            bytes,
            packets: bytes / 100,
            connect: Some(Duration::from_millis(5)),
            first_key: Some(Duration::from_millis(20)),
            ..Record::default()
        };
        let mut cut = ok(50_000);
        cut.cut = true;
        cut.tail = 500;
        let failed = Record {
            error: Some("DESCRIBE: 404".into()),
            ..Record::default()
        };
        let s = Summary::new(
            &[ok(100_000), ok(100_000), cut, failed],
            Duration::from_secs(10),
            ServerCost {
                cpu_s: Some(0.5),
                rss_before_kib: Some(1000),
                rss_peak_kib: Some(1400),
                client_cpu_s: None,
            },
        );
        assert_eq!((s.played, s.failed, s.cut), (3, 1, 1));
        assert_eq!(s.readers_ge_99, 2);
        // 250 kB of 300 kB due.
        assert!(
            (s.delivered_pct - 250.0 / 3.0).abs() < 0.01,
            "{}",
            s.delivered_pct
        );
        assert_eq!((s.reader_bytes_min, s.reader_bytes_max), (50_000, 100_000));
        assert_eq!(s.server_kib_per_reader, Some(100.0));
        assert_eq!(s.errors, vec!["DESCRIBE: 404".to_owned()]);
        assert!(s.line().contains("readers_ge_99=2"), "{}", s.line());
        assert!(s.line().contains("cpu_s_per_gbit=250.000"), "{}", s.line());
    }
}
