//! Prometheus metrics (`GET /metrics`), with the `prometheus-client` crate.
//!
//! Hot paths stay as they are: the relay already counts per stream with relaxed atomics, and the
//! registry keeps the totals of streams that ended. Values are read when the endpoint is
//! scraped; counters only ever move forward (a scrape adds the growth since the last one).
//! Request latency is the one thing observed as it happens, once per RTSP request.

use crate::errorlog::Verbosity;
use crate::server::Server;
use crate::state::ServerState;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The worker's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    build_info: Family<Labels, Gauge>,
    state: Family<Labels, Gauge>,
    connections: Gauge,
    connections_total: Counter,
    sessions: Family<Labels, Gauge>,
    paths: Gauge,
    readers: Family<Labels, Gauge>,
    packets: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    dropped: Counter,
    kicked: Counter,
    errors: Family<Labels, Counter>,
    restarts: Family<Labels, Counter>,
    /// RTSP request latency by method.
    pub request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
    /// Requests that broke a limit or could not be parsed, by status.
    pub bad_requests: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("finch")),
            build_info: Family::default(),
            state: Family::default(),
            connections: Gauge::default(),
            connections_total: Counter::default(),
            sessions: Family::default(),
            paths: Gauge::default(),
            readers: Family::default(),
            packets: Family::default(),
            bytes: Family::default(),
            dropped: Counter::default(),
            kicked: Counter::default(),
            errors: Family::default(),
            restarts: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            bad_requests: Family::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register("build_info", "Build information", m.build_info.clone());
            r.register(
                "server_state",
                "The server state (1 for the current one)",
                m.state.clone(),
            );
            r.register(
                "rtsp_connections",
                "Open RTSP connections",
                m.connections.clone(),
            );
            r.register(
                "rtsp_connections_accepted",
                "RTSP connections accepted",
                m.connections_total.clone(),
            );
            r.register("sessions", "RTSP sessions by role", m.sessions.clone());
            r.register("paths", "Published paths", m.paths.clone());
            r.register("readers", "Readers by transport", m.readers.clone());
            r.register(
                "rtp_packets",
                "RTP/RTCP packets relayed, by direction",
                m.packets.clone(),
            );
            r.register(
                "rtp_bytes",
                "RTP/RTCP bytes relayed, by direction",
                m.bytes.clone(),
            );
            r.register(
                "packets_dropped_slow_reader",
                "Packets dropped because a reader fell behind",
                m.dropped.clone(),
            );
            r.register(
                "readers_disconnected_slow",
                "Readers disconnected for falling too far behind",
                m.kicked.clone(),
            );
            r.register(
                "errors",
                "Error-log entries by verbosity (this worker)",
                m.errors.clone(),
            );
            r.register(
                "worker_restarts",
                "Worker restarts by reason (kept by the supervisor)",
                m.restarts.clone(),
            );
            r.register(
                "rtsp_request_duration_seconds",
                "RTSP request handling time by method",
                m.request_seconds.clone(),
            );
            r.register(
                "rtsp_bad_requests",
                "Requests refused by the parser, by status",
                m.bad_requests.clone(),
            );
        }
        m.build_info
            .get_or_create(&labels(&[("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        m
    }

    /// A connection was accepted.
    pub fn accepted(&self) {
        self.connections_total.inc();
    }

    /// Connections accepted so far.
    pub fn accepted_total(&self) -> u64 {
        self.connections_total.get()
    }

    /// The Prometheus text exposition, with values read now.
    pub fn render(&self, server: &Server) -> String {
        let current = *server.state.borrow();
        for s in [
            ServerState::Starting,
            ServerState::Running,
            ServerState::RefusingConnections,
            ServerState::Idle,
            ServerState::FatalError,
            ServerState::ShuttingDown,
        ] {
            self.state
                .get_or_create(&labels(&[("state", s.as_str())]))
                .set(i64::from(s == current));
        }
        self.connections
            .set(server.connections.load(Ordering::Relaxed) as i64);
        let sessions = server.list_sessions();
        for role in ["publisher", "reader"] {
            let n = sessions.iter().filter(|s| s.role == role).count();
            self.sessions
                .get_or_create(&labels(&[("role", role)]))
                .set(n as i64);
        }
        let paths = server.registry.list();
        self.paths.set(paths.len() as i64);
        let (mut tcp, mut udp) = (0i64, 0i64);
        let totals = server.registry.totals();
        for p in &paths {
            for r in p.stream.readers() {
                if r.transport == "udp" {
                    udp += 1;
                } else {
                    tcp += 1;
                }
            }
        }
        self.readers
            .get_or_create(&labels(&[("transport", "tcp")]))
            .set(tcp);
        self.readers
            .get_or_create(&labels(&[("transport", "udp")]))
            .set(udp);
        advance(
            &self.packets.get_or_create(&labels(&[("direction", "in")])),
            totals.packets_in,
        );
        advance(
            &self.packets.get_or_create(&labels(&[("direction", "out")])),
            totals.packets_out,
        );
        advance(
            &self.bytes.get_or_create(&labels(&[("direction", "in")])),
            totals.bytes_in,
        );
        advance(
            &self.bytes.get_or_create(&labels(&[("direction", "out")])),
            totals.bytes_out,
        );
        advance(&self.dropped, totals.packets_dropped);
        advance(&self.kicked, totals.readers_kicked);
        for v in Verbosity::ALL {
            advance(
                &self
                    .errors
                    .get_or_create(&labels(&[("verbosity", v.as_str())])),
                server.errors.count(v),
            );
        }
        if let Some(sup) = &server.supervision {
            for reason in ["signal", "fatal", "hang", "exit", "requested"] {
                let n = sup
                    .restarts_by_reason
                    .iter()
                    .find(|(r, _)| r == reason)
                    .map_or(0, |(_, n)| *n);
                advance(
                    &self.restarts.get_or_create(&labels(&[("reason", reason)])),
                    n,
                );
            }
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Moves a counter up to `total` (never down).
fn advance(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_only_move_forward() {
        let c = Counter::default();
        advance(&c, 10);
        advance(&c, 7);
        advance(&c, 12);
        assert_eq!(c.get(), 12);
    }
}
