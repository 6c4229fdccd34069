//! Prometheus metrics (`GET /metrics`), with the `prometheus-client` crate.
//!
//! Hot paths stay as they are: the relay already counts per stream with relaxed atomics, and the
//! registry keeps the totals of streams that ended. Values are read when the endpoint is
//! scraped; counters only ever move forward (a scrape adds the growth since the last one).
//! Request latency is the one thing observed as it happens, once per RTSP request.
//!
//! Every label value comes from a fixed set (methods, statuses, states, reasons), never from
//! what a client sent, so no input can grow the exposition.
//!
//! Rendering takes a [`Snapshot`] of the worker, so this module depends on nothing above it.

use crate::errorlog::Verbosity;
use crate::state::ServerState;
use finch_proto::rtsp::Method;
use finch_relay::Totals;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
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
    log_dropped: Counter,
    auth_failures: Family<Labels, Counter>,
    limit_refusals: Family<Labels, Counter>,
    source_reconnects: Family<Labels, Counter>,
    handed_over: Family<Labels, Counter>,
    hls_muxers: Gauge,
    hls_viewers: Gauge,
    hls_bytes_held: Gauge,
    hls_requests: Family<Labels, Counter>,
    hls_refused: Family<Labels, Counter>,
    hls_bytes_sent: Counter,
    hls_part_delay: Gauge<f64, std::sync::atomic::AtomicU64>,
    cluster_redis_up: Gauge,
    cluster_nodes: Gauge,
    cluster_owned: Gauge,
    cluster_lookups: Family<Labels, Counter>,
    cluster_claims: Family<Labels, Counter>,
}

/// What the metrics read from the worker at scrape time.
pub struct Snapshot {
    /// The server state.
    pub state: ServerState,
    /// Open RTSP connections.
    pub connections: u64,
    /// Sessions by role.
    pub publishers: usize,
    /// Reader sessions.
    pub readers_sessions: usize,
    /// Published paths.
    pub paths: usize,
    /// Readers by transport: (tcp, udp).
    pub readers: (usize, usize),
    /// Traffic totals.
    pub totals: Totals,
    /// Error-log entries by verbosity.
    pub errors: Vec<(Verbosity, u64)>,
    /// Worker restarts by reason, when supervised.
    pub restarts: Option<Vec<(String, u64)>>,
    /// Log lines dropped because the log sink could not keep up.
    pub log_dropped: u64,
    /// The cluster, when this node is in one: (Redis answered, nodes registered, paths owned).
    pub cluster: Option<(bool, u64, usize)>,
    /// HLS.
    pub hls: HlsSnapshot,
}

/// HLS's figures at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct HlsSnapshot {
    /// Running muxers.
    pub muxers: usize,
    /// Addresses seen lately.
    pub viewers: usize,
    /// Bytes held.
    pub bytes_held: usize,
}

/// The metrics label of a request method: unknown methods share one, so a client sending
/// thousands of made-up methods cannot grow memory or the exposition.
pub fn method_label(m: &Method) -> &str {
    match m {
        Method::Other(_) => "other",
        known => known.as_str(),
    }
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
            log_dropped: Counter::default(),
            auth_failures: Family::default(),
            limit_refusals: Family::default(),
            source_reconnects: Family::default(),
            handed_over: Family::default(),
            hls_muxers: Gauge::default(),
            hls_viewers: Gauge::default(),
            hls_bytes_held: Gauge::default(),
            hls_requests: Family::default(),
            hls_refused: Family::default(),
            hls_bytes_sent: Counter::default(),
            hls_part_delay: Gauge::default(),
            cluster_redis_up: Gauge::default(),
            cluster_nodes: Gauge::default(),
            cluster_owned: Gauge::default(),
            cluster_lookups: Family::default(),
            cluster_claims: Family::default(),
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
            r.register(
                "auth_failures",
                "Requests refused by authentication or authorization, by reason",
                m.auth_failures.clone(),
            );
            r.register(
                "source_reconnects",
                "Failed pulls of a camera (each is retried), by path",
                m.source_reconnects.clone(),
            );
            r.register(
                "sessions_handed_over",
                "Sessions (and connections without one) this worker took over from the previous one on a graceful restart, by role",
                m.handed_over.clone(),
            );
            r.register(
                "hls_muxers",
                "Paths being muxed for HLS viewers",
                m.hls_muxers.clone(),
            );
            r.register(
                "hls_viewers",
                "Addresses that requested HLS in the last 10 s",
                m.hls_viewers.clone(),
            );
            r.register(
                "hls_bytes_held",
                "Bytes of segments and parts the HLS muxers hold",
                m.hls_bytes_held.clone(),
            );
            r.register(
                "hls_requests",
                "HLS requests answered, by what they asked for",
                m.hls_requests.clone(),
            );
            r.register(
                "hls_refused",
                "HLS requests refused, by reason",
                m.hls_refused.clone(),
            );
            r.register(
                "hls_part_delay_seconds",
                "From the arrival of the newest HLS part's first frame to the part being listed",
                m.hls_part_delay.clone(),
            );
            r.register(
                "hls_bytes_sent",
                "Bytes of playlists, segments and parts sent",
                m.hls_bytes_sent.clone(),
            );
            r.register(
                "limit_refusals",
                "Inputs refused for passing a limit, by the limit's config key",
                m.limit_refusals.clone(),
            );
            r.register(
                "log_lines_dropped",
                "Log lines dropped because the log's destination could not keep up",
                m.log_dropped.clone(),
            );
        }
        m.build_info
            .get_or_create(&labels(&[("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        m
    }

    /// Registers the `finch_cluster_*` metrics (a node in a cluster has them; standalone not).
    pub fn enable_cluster(&self) {
        let mut r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        r.register(
            "cluster_redis_up",
            "Whether Redis answered this node's last operation",
            self.cluster_redis_up.clone(),
        );
        r.register(
            "cluster_nodes",
            "Nodes registered in the cluster at the last refresh, this one included",
            self.cluster_nodes.clone(),
        );
        r.register(
            "cluster_owned_paths",
            "Paths this node holds the claim on",
            self.cluster_owned.clone(),
        );
        r.register(
            "cluster_lookups",
            "Lookups of a path that is not local, by result (found: pulled from its owner)",
            self.cluster_lookups.clone(),
        );
        r.register(
            "cluster_claims",
            "A publisher's claims on its path, by result",
            self.cluster_claims.clone(),
        );
    }

    /// Counts an HLS request answered (`playlist`, `blocking_playlist`, `init`, `segment`,
    /// `part`, `page`).
    pub fn hls_request(&self, kind: &'static str) {
        self.hls_requests
            .get_or_create(&labels(&[("file", kind)]))
            .inc();
    }

    /// Counts an HLS request refused (`max_connections`, `bad_parameter`, `blocking_timeout`).
    pub fn hls_refused(&self, reason: &'static str) {
        self.hls_refused
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }

    /// Records how long the newest part's first frame waited to be listed.
    pub fn hls_part_delay(&self, d: std::time::Duration) {
        self.hls_part_delay.set(d.as_secs_f64());
    }

    /// Counts bytes sent to HLS players.
    pub fn hls_sent(&self, bytes: usize) {
        self.hls_bytes_sent.inc_by(bytes as u64);
    }

    /// Counts a lookup of a path that is not local (`found` or `absent`).
    pub fn cluster_lookup(&self, result: &'static str) {
        self.cluster_lookups
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    /// Counts a publisher's claim (`won`, `lost` or `unreachable`).
    pub fn cluster_claim(&self, result: &'static str) {
        self.cluster_claims
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    /// A connection was accepted.
    pub fn accepted(&self) {
        self.connections_total.inc();
    }

    /// Connections accepted so far.
    pub fn accepted_total(&self) -> u64 {
        self.connections_total.get()
    }

    /// Observes one RTSP request's handling time.
    pub fn observe_request(&self, method: &Method, secs: f64) {
        self.request_seconds
            .get_or_create(&labels(&[("method", method_label(method))]))
            .observe(secs);
    }

    /// Counts a request the parser refused, by the status it got (`closed` for none).
    pub fn bad_request(&self, status: Option<u16>) {
        let label = status.map_or("closed".to_owned(), |s| s.to_string());
        self.bad_requests
            .get_or_create(&vec![("status".to_owned(), label)])
            .inc();
    }

    /// Counts a request refused by authentication (`reason` from a fixed set).
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
    }

    /// Counts a failed pull of `path` (a configured path: the label set is the config's).
    pub fn source_reconnect(&self, path: &str) {
        self.source_reconnects
            .get_or_create(&labels(&[("path", path)]))
            .inc();
    }

    /// Counts a connection taken over from the previous worker (`publisher`, `reader` or
    /// `connection`).
    pub fn handed_over(&self, role: &'static str) {
        self.handed_over
            .get_or_create(&labels(&[("role", role)]))
            .inc();
    }

    /// The counter of refusals for one limit, to hand to a loop that counts on its own.
    pub fn limit_counter(&self, limit: &'static str) -> Counter {
        self.limit_refusals
            .get_or_create(&labels(&[("limit", limit)]))
            .clone()
    }

    /// Counts an input refused for passing a limit (`limit`: its config key).
    pub fn limit_refusal(&self, limit: &'static str) {
        self.limit_refusals
            .get_or_create(&labels(&[("limit", limit)]))
            .inc();
    }

    /// The Prometheus text exposition of `snap`.
    pub fn render(&self, snap: &Snapshot) -> String {
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
                .set(i64::from(s == snap.state));
        }
        self.connections.set(snap.connections as i64);
        if let Some((up, nodes, owned)) = snap.cluster {
            self.cluster_redis_up.set(i64::from(up));
            self.cluster_nodes.set(nodes as i64);
            self.cluster_owned.set(owned as i64);
        }
        for (role, n) in [
            ("publisher", snap.publishers),
            ("reader", snap.readers_sessions),
        ] {
            self.sessions
                .get_or_create(&labels(&[("role", role)]))
                .set(n as i64);
        }
        self.paths.set(snap.paths as i64);
        self.hls_muxers.set(snap.hls.muxers as i64);
        self.hls_viewers.set(snap.hls.viewers as i64);
        self.hls_bytes_held.set(snap.hls.bytes_held as i64);
        for (transport, n) in [
            ("tcp", snap.readers.0),
            ("udp", snap.readers.1),
            ("hls", snap.hls.muxers),
        ] {
            self.readers
                .get_or_create(&labels(&[("transport", transport)]))
                .set(n as i64);
        }
        let t = &snap.totals;
        for (family, dir, total) in [
            (&self.packets, "in", t.packets_in),
            (&self.packets, "out", t.packets_out),
            (&self.bytes, "in", t.bytes_in),
            (&self.bytes, "out", t.bytes_out),
        ] {
            advance(&family.get_or_create(&labels(&[("direction", dir)])), total);
        }
        advance(&self.dropped, t.packets_dropped);
        advance(&self.kicked, t.readers_kicked);
        for (v, n) in &snap.errors {
            advance(
                &self
                    .errors
                    .get_or_create(&labels(&[("verbosity", v.as_str())])),
                *n,
            );
        }
        if let Some(by_reason) = &snap.restarts {
            for reason in ["signal", "fatal", "hang", "exit", "requested"] {
                let n = by_reason
                    .iter()
                    .find(|(r, _)| r == reason)
                    .map_or(0, |(_, n)| *n);
                advance(
                    &self.restarts.get_or_create(&labels(&[("reason", reason)])),
                    n,
                );
            }
        }
        advance(&self.log_dropped, snap.log_dropped);
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

    #[test]
    fn made_up_methods_share_one_label() {
        let m = Metrics::new();
        for i in 0..10_000 {
            m.observe_request(&Method::from_token(&format!("M{i}")), 0.001);
        }
        m.observe_request(&Method::Options, 0.001);
        let snap = Snapshot {
            state: ServerState::Running,
            connections: 0,
            publishers: 0,
            readers_sessions: 0,
            paths: 0,
            readers: (0, 0),
            totals: Totals::default(),
            errors: Vec::new(),
            restarts: None,
            log_dropped: 0,
            cluster: None,
            hls: HlsSnapshot::default(),
        };
        let text = m.render(&snap);
        assert_eq!(
            text.matches("method=\"other\"").count(),
            text.matches("method=\"OPTIONS\"").count()
        );
        assert!(text.len() < 20_000, "{} bytes", text.len());
        assert!(
            !text.contains("finch_cluster"),
            "standalone shows cluster metrics"
        );
        m.enable_cluster();
        m.cluster_claim("lost");
        let text = m.render(&Snapshot {
            cluster: Some((true, 3, 2)),
            ..snap
        });
        for line in [
            "finch_cluster_redis_up 1",
            "finch_cluster_nodes 3",
            "finch_cluster_owned_paths 2",
            "finch_cluster_claims_total{result=\"lost\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
