//! The config schema: structs, defaults (the documented ones) and validation.
//!
//! Every struct is `#[serde(default, deny_unknown_fields)]`: a missing key takes its default, a
//! misspelt key is refused rather than silently ignored. Keys carry their unit.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The whole config.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// RTSP listener and sessions.
    pub rtsp: RtspConfig,
    /// RTSP over TLS.
    pub rtsps: RtspsConfig,
    /// The admin HTTP server.
    pub admin: AdminConfig,
    /// Low-Latency HLS for browsers.
    pub hls: crate::hls::HlsConfig,
    /// Users and what they may do.
    pub auth: crate::auth::AuthConfig,
    /// Input limits.
    pub limits: LimitsConfig,
    /// Fan-out and GOP cache.
    pub relay: RelayConfig,
    /// Logging.
    pub log: LogConfig,
    /// The supervisor process.
    pub supervisor: SupervisorConfig,
    /// Debugging aids.
    pub debug: DebugConfig,
    /// Several nodes sharing paths through Redis.
    pub cluster: crate::cluster::ClusterConfig,
    /// Per-path settings, first match wins.
    pub paths: Paths,
}

/// `[rtsp]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtspConfig {
    /// Addresses the RTSP listener binds, IPv4 or IPv6, without the port.
    pub listen_addresses: Vec<String>,
    /// The RTSP TCP port.
    pub port: u16,
    /// Whether RTP/AVP over UDP unicast is offered.
    pub udp: bool,
    /// The server's shared RTP port; RTCP uses the next one.
    pub rtp_port: u16,
    /// A session with no sign of life for this long is closed.
    pub session_timeout_secs: u64,
    /// A connection whose socket cannot take more data for this long is closed.
    pub write_timeout_secs: u64,
    /// An ANNOUNCE not followed by RECORD within this frees the path.
    pub announce_timeout_secs: u64,
}

impl Default for RtspConfig {
    fn default() -> Self {
        RtspConfig {
            listen_addresses: vec!["0.0.0.0".to_owned()],
            port: 8554,
            udp: true,
            rtp_port: 8000,
            session_timeout_secs: 60,
            write_timeout_secs: 10,
            announce_timeout_secs: 10,
        }
    }
}

/// `[rtsps]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtspsConfig {
    /// Whether RTSP over TLS is served.
    pub enabled: bool,
    /// Its TCP port, on `rtsp.listen_addresses`.
    pub port: u16,
    /// The certificate chain (PEM).
    pub cert_file: String,
    /// Its private key (PEM).
    pub key_file: String,
}

impl Default for RtspsConfig {
    fn default() -> Self {
        RtspsConfig {
            enabled: false,
            port: 8322,
            cert_file: String::new(),
            key_file: String::new(),
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Whether the admin HTTP server runs.
    pub enabled: bool,
    /// Its listen address.
    pub listen: String,
    /// The secret every endpoint but /healthz and /metrics needs (Bearer token, or the password
    /// of Basic auth) when `listen` is not a loopback address; empty for none.
    pub token: String,
    /// `Host` headers the API answers (`name` or `name:port`); empty: the listen address plus
    /// `localhost`, `127.0.0.1` and `[::1]` with its port. Anything else gets 403 (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: "127.0.0.1:8080".to_owned(),
            token: String::new(),
            allowed_hosts: Vec::new(),
        }
    }
}

impl AdminConfig {
    /// Whether requests must carry the token: always when one is set, and a non-loopback
    /// listener without one is refused by `validate`.
    pub fn requires_token(&self) -> bool {
        !self.token.is_empty()
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest RTSP request line plus headers.
    pub max_head_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Longest request URI.
    pub max_uri_bytes: usize,
    /// Largest request body (an ANNOUNCE's SDP).
    pub max_body_bytes: usize,
    /// Largest interleaved ($) frame.
    pub max_interleaved_bytes: usize,
    /// Most RTSP connections at once; more are refused.
    pub max_connections: usize,
    /// Most readers on one path.
    pub max_readers_per_path: usize,
    /// Most RTSP connections from one address; 0: no limit.
    pub max_connections_per_ip: usize,
    /// Most RTSP sessions on one connection (Finch holds one per connection).
    pub max_sessions_per_connection: usize,
    /// Most tracks in one session (and in an ANNOUNCE's SDP).
    pub max_tracks_per_session: usize,
    /// Most paths at once.
    pub max_paths: usize,
    /// Most publishing sessions from one address; 0: no limit.
    pub max_publishers_per_ip: usize,
    /// A request not complete this long after its first byte closes the connection.
    pub request_timeout_secs: u64,
    /// A connection with no complete request this long after it opened is closed.
    pub first_request_timeout_secs: u64,
    /// All paths' GOP caches together hold at most this many bytes.
    pub max_gop_cache_total_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_head_bytes: 8192,
            max_headers: 64,
            max_uri_bytes: 2048,
            max_body_bytes: 65536,
            max_interleaved_bytes: 32768,
            max_connections: 10000,
            max_readers_per_path: 5000,
            max_connections_per_ip: 0,
            max_sessions_per_connection: 1,
            max_tracks_per_session: 16,
            max_paths: 10000,
            max_publishers_per_ip: 0,
            request_timeout_secs: 10,
            first_request_timeout_secs: 10,
            max_gop_cache_total_bytes: 1 << 30,
        }
    }
}

/// `[relay]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// How many packets a reader may fall behind live before it skips ahead to a newer keyframe.
    pub reader_queue_packets: usize,
    /// A reader that skips this many packets without being sent one in between is disconnected.
    pub slow_reader_max_dropped_packets: u64,
    /// Whether new readers start at the last keyframe.
    pub gop_cache: bool,
    /// The GOP cache's bound in bytes, counting each packet's overhead; a longer GOP is not cached.
    pub gop_cache_max_bytes: usize,
    /// The GOP cache's bound in packets; a longer GOP is not cached.
    pub gop_cache_max_packets: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            reader_queue_packets: 1024,
            slow_reader_max_dropped_packets: 3000,
            gop_cache: true,
            gop_cache_max_bytes: 8 * 1024 * 1024,
            gop_cache_max_packets: 8192,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// error, warn, info, debug or trace (or a tracing filter such as `finch_server=debug`).
    pub level: String,
    /// text or json.
    pub format: String,
    /// A file to append to; empty means stderr.
    pub file: String,
    /// Print a status line every N seconds in the foreground; 0 turns it off.
    pub stats_interval_secs: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: "text".to_owned(),
            file: String::new(),
            stats_interval_secs: 0,
        }
    }
}

/// `[supervisor]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// Restart a worker that crashed or reached FatalError.
    pub auto_restart: bool,
    /// Backoff before the second restart of a streak (the first is immediate).
    pub backoff_initial_ms: u64,
    /// The backoff cap.
    pub backoff_max_ms: u64,
    /// A worker that ran this long ends the crash streak.
    pub stable_after_secs: u64,
    /// Restarts within one streak before the supervisor gives up (exit 3).
    pub crash_loop_limit: u32,
    /// A worker silent for this long is killed and restarted.
    pub heartbeat_timeout_secs: u64,
    /// How long a stopping worker may drain its sessions.
    pub drain_timeout_secs: u64,
    /// Where to write the pid; empty for none.
    pub pid_file: String,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            auto_restart: true,
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
            stable_after_secs: 60,
            crash_loop_limit: 10,
            heartbeat_timeout_secs: 10,
            drain_timeout_secs: 5,
            pid_file: String::new(),
        }
    }
}

/// `[debug]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// Enables `POST /api/v1/debug/fault`. Never in production.
    pub fault_injection: bool,
}

/// `[paths."pattern"]`: settings for the paths a pattern matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathConfig {
    /// `publisher` (clients push with ANNOUNCE/RECORD) or a camera's `rtsp://` or `rtsps://`
    /// URL to pull.
    pub source: String,
    /// How to pull: `auto` (UDP, falling back to TCP), `tcp` or `udp`.
    pub source_transport: String,
    /// Pull only while someone reads.
    pub source_on_demand: bool,
    /// How long a DESCRIBE waits for an on-demand camera (then 503).
    pub source_on_demand_start_timeout_secs: u64,
    /// How long after the last reader leaves an on-demand pull stops.
    pub source_on_demand_close_after_secs: u64,
    /// A camera that sends no media for this long has failed.
    pub source_read_timeout_secs: u64,
    /// While the source is away, its readers stay this long for it to come back.
    pub publisher_grace_secs: u64,
    /// A new authorised publisher replaces the live one instead of getting 455.
    pub override_publisher: bool,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig {
            source: "publisher".to_owned(),
            source_transport: "auto".to_owned(),
            source_on_demand: false,
            source_on_demand_start_timeout_secs: 10,
            source_on_demand_close_after_secs: 10,
            source_read_timeout_secs: 10,
            publisher_grace_secs: 0,
            override_publisher: false,
        }
    }
}

impl PathConfig {
    /// Whether the path is pulled from a camera.
    pub fn is_pulled(&self) -> bool {
        self.source.starts_with("rtsp://") || self.source.starts_with("rtsps://")
    }
}

/// The path tables in file order (the first pattern that matches a path wins).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Paths(pub Vec<(String, PathConfig)>);

impl Paths {
    /// The settings for a path name: the first matching pattern, or the defaults when there are
    /// no path tables at all. `None` means the config lists paths and this one is not among them.
    pub fn find(&self, name: &str) -> Option<PathConfig> {
        if self.0.is_empty() {
            return Some(PathConfig::default());
        }
        self.0
            .iter()
            .find(|(pattern, _)| glob_match(pattern, name))
            .map(|(_, c)| c.clone())
    }
}

/// `*` matches any run of characters except `/`, `**` any run at all; everything else literally.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p {
            [] => n.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=n.len()).any(|i| go(rest, &n[i..])),
            [b'*', rest @ ..] => {
                let limit = n.iter().position(|c| *c == b'/').unwrap_or(n.len());
                (0..=limit).any(|i| go(rest, &n[i..]))
            }
            [c, rest @ ..] => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

impl Serialize for Paths {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Paths {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Paths;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of path patterns")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Paths, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, PathConfig>()? {
                    out.push((k, v));
                }
                Ok(Paths(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A value that is out of range: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The dotted key (`rtsp.port`, `paths."live/*".source`).
    pub key: Vec<String>,
    /// What is wrong with it.
    pub reason: String,
}

impl Config {
    /// Checks what types alone cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), Invalid> {
        fn bad(key: &[&str], reason: impl Into<String>) -> Result<(), Invalid> {
            Err(Invalid {
                key: key.iter().map(|s| s.to_string()).collect(),
                reason: reason.into(),
            })
        }
        let r = &self.rtsp;
        if r.listen_addresses.is_empty() {
            return bad(
                &["rtsp", "listen_addresses"],
                "must list at least one address",
            );
        }
        for a in &r.listen_addresses {
            if a.parse::<std::net::IpAddr>().is_err() {
                return bad(
                    &["rtsp", "listen_addresses"],
                    format!("{a:?} is not an IP address"),
                );
            }
        }
        if r.udp && r.rtp_port == u16::MAX {
            return bad(
                &["rtsp", "rtp_port"],
                "RTCP needs rtp_port + 1, so 65535 is too high",
            );
        }
        if r.udp && !r.rtp_port.is_multiple_of(2) {
            return bad(
                &["rtsp", "rtp_port"],
                "must be even (RFC 3550 §11: RTP even, RTCP odd)",
            );
        }
        if !(5..=86400).contains(&r.session_timeout_secs) {
            return bad(
                &["rtsp", "session_timeout_secs"],
                "must be between 5 and 86400",
            );
        }
        if !(1..=3600).contains(&r.announce_timeout_secs) {
            return bad(
                &["rtsp", "announce_timeout_secs"],
                "must be between 1 and 3600",
            );
        }
        if !(1..=3600).contains(&r.write_timeout_secs) {
            return bad(
                &["rtsp", "write_timeout_secs"],
                "must be between 1 and 3600",
            );
        }
        match self.admin.listen.parse::<std::net::SocketAddr>() {
            Err(_) => {
                return bad(
                    &["admin", "listen"],
                    "must be an address:port such as 127.0.0.1:8080",
                );
            }
            Ok(a) if self.admin.enabled && !a.ip().is_loopback() && self.admin.token.is_empty() => {
                return bad(
                    &["admin", "listen"],
                    "is not a loopback address: set admin.token so the API is not open to the network",
                );
            }
            Ok(_) => {}
        }
        let t = &self.rtsps;
        if t.enabled {
            if t.cert_file.is_empty() || t.key_file.is_empty() {
                return bad(
                    &["rtsps", "cert_file"],
                    "RTSPS needs cert_file and key_file (PEM)",
                );
            }
            if t.port == r.port {
                return bad(&["rtsps", "port"], "must differ from rtsp.port");
            }
        }
        if let Err((key, reason)) = crate::auth::validate(&self.auth) {
            let mut k = vec!["auth".to_owned()];
            k.extend(key);
            return Err(Invalid { key: k, reason });
        }
        if let Err((key, reason)) = crate::hls::validate(&self.hls) {
            return bad(&["hls", key], reason);
        }
        if self.hls.enabled && self.hls.tls && (t.cert_file.is_empty() || t.key_file.is_empty()) {
            return bad(
                &["hls", "tls"],
                "HTTPS uses the [rtsps] certificate: set rtsps.cert_file and rtsps.key_file",
            );
        }
        if let Err((key, reason)) = crate::cluster::validate(&self.cluster) {
            return bad(&["cluster", key], reason);
        }
        if self
            .auth
            .users
            .iter()
            .any(|u| u.user == crate::cluster::CLUSTER_USER)
        {
            return bad(
                &["auth", "users"],
                format!(
                    "{:?} is the name nodes of a cluster use",
                    crate::cluster::CLUSTER_USER
                ),
            );
        }
        for (i, h) in self.admin.allowed_hosts.iter().enumerate() {
            if h.is_empty() || h.contains(['/', ' ']) {
                return Err(Invalid {
                    key: vec!["admin".into(), "allowed_hosts".into(), i.to_string()],
                    reason: format!("{h:?} is not a host or host:port"),
                });
            }
        }
        let l = &self.limits;
        for (key, v, min, max) in [
            ("max_head_bytes", l.max_head_bytes, 256, 1 << 20),
            ("max_headers", l.max_headers, 4, 1024),
            ("max_uri_bytes", l.max_uri_bytes, 64, 1 << 16),
            ("max_body_bytes", l.max_body_bytes, 0, 16 << 20),
            (
                "max_interleaved_bytes",
                l.max_interleaved_bytes,
                1500,
                65535,
            ),
            ("max_connections", l.max_connections, 1, 1 << 20),
            ("max_readers_per_path", l.max_readers_per_path, 1, 1 << 20),
            (
                "max_connections_per_ip",
                l.max_connections_per_ip,
                0,
                1 << 20,
            ),
            // Finch holds one session per connection; a request for another gets 453.
            (
                "max_sessions_per_connection",
                l.max_sessions_per_connection,
                1,
                1,
            ),
            ("max_tracks_per_session", l.max_tracks_per_session, 1, 255),
            ("max_paths", l.max_paths, 1, 1 << 20),
            ("max_publishers_per_ip", l.max_publishers_per_ip, 0, 1 << 20),
            (
                "request_timeout_secs",
                l.request_timeout_secs as usize,
                1,
                3600,
            ),
            (
                "first_request_timeout_secs",
                l.first_request_timeout_secs as usize,
                1,
                3600,
            ),
            (
                "max_gop_cache_total_bytes",
                l.max_gop_cache_total_bytes,
                1 << 20,
                1 << 40,
            ),
        ] {
            if !(min..=max).contains(&v) {
                return bad(&["limits", key], format!("must be between {min} and {max}"));
            }
        }
        let rl = &self.relay;
        if !(16..=1 << 20).contains(&rl.reader_queue_packets) {
            return bad(
                &["relay", "reader_queue_packets"],
                "must be between 16 and 1048576",
            );
        }
        if rl.slow_reader_max_dropped_packets == 0 {
            return bad(
                &["relay", "slow_reader_max_dropped_packets"],
                "must be at least 1",
            );
        }
        if rl.gop_cache_max_bytes > 1 << 30 {
            return bad(&["relay", "gop_cache_max_bytes"], "must be at most 1 GiB");
        }
        if !(16..=1 << 20).contains(&rl.gop_cache_max_packets) {
            return bad(
                &["relay", "gop_cache_max_packets"],
                "must be between 16 and 1048576",
            );
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log.level.as_str())
            && !self.log.level.contains('=')
        {
            return bad(
                &["log", "level"],
                "must be error, warn, info, debug, trace or a filter such as finch_server=debug",
            );
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return bad(&["log", "format"], "must be text or json");
        }
        let s = &self.supervisor;
        if s.backoff_max_ms < s.backoff_initial_ms {
            return bad(
                &["supervisor", "backoff_max_ms"],
                "must not be below backoff_initial_ms",
            );
        }
        if s.heartbeat_timeout_secs == 0 {
            return bad(
                &["supervisor", "heartbeat_timeout_secs"],
                "must be at least 1",
            );
        }
        for (pattern, p) in &self.paths.0 {
            if pattern.is_empty() || pattern.starts_with('/') {
                return bad(
                    &["paths", pattern],
                    "a path pattern has no leading slash and is not empty",
                );
            }
            if p.source != "publisher" && !p.is_pulled() {
                return bad(
                    &["paths", pattern, "source"],
                    "must be \"publisher\" or an rtsp:// or rtsps:// URL",
                );
            }
            if p.is_pulled() {
                if pattern.contains('*') {
                    return bad(
                        &["paths", pattern, "source"],
                        "a pulled path is one path, not a pattern",
                    );
                }
                let rest = p.source.split_once("://").map_or("", |(_, r)| r);
                let authority = rest.split('/').next().unwrap_or_default();
                let host = authority.rsplit('@').next().unwrap_or_default();
                if host.is_empty() {
                    return bad(&["paths", pattern, "source"], "the URL has no host");
                }
            }
            if !["auto", "tcp", "udp"].contains(&p.source_transport.as_str()) {
                return bad(
                    &["paths", pattern, "source_transport"],
                    "must be auto, tcp or udp",
                );
            }
            if p.source.starts_with("rtsps://") && p.source_transport == "udp" {
                // The media would leave the TLS connection in the clear.
                return bad(
                    &["paths", pattern, "source_transport"],
                    "an rtsps:// camera is pulled over its TLS connection: tcp or auto",
                );
            }
            for (key, v) in [
                (
                    "source_on_demand_start_timeout_secs",
                    p.source_on_demand_start_timeout_secs,
                ),
                (
                    "source_on_demand_close_after_secs",
                    p.source_on_demand_close_after_secs,
                ),
                ("source_read_timeout_secs", p.source_read_timeout_secs),
            ] {
                if !(1..=3600).contains(&v) {
                    return bad(&["paths", pattern, key], "must be between 1 and 3600");
                }
            }
            if p.publisher_grace_secs > 3600 {
                return bad(
                    &["paths", pattern, "publisher_grace_secs"],
                    "must be at most 3600",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn glob() {
        assert!(glob_match("live/*", "live/cam1"));
        assert!(!glob_match("live/*", "live/a/b"));
        assert!(glob_match("live/**", "live/a/b"));
        assert!(glob_match("cam1", "cam1"));
        assert!(!glob_match("cam1", "cam2"));
    }

    #[test]
    fn first_matching_path_wins() {
        let p = Paths(vec![
            (
                "live/cam1".into(),
                PathConfig {
                    source: "rtsp://cam/1".into(),
                    ..PathConfig::default()
                },
            ),
            ("live/*".into(), PathConfig::default()),
        ]);
        assert_eq!(p.find("live/cam1").unwrap().source, "rtsp://cam/1");
        assert_eq!(p.find("live/cam2").unwrap().source, "publisher");
        assert_eq!(p.find("other"), None);
        assert_eq!(
            Paths::default().find("any/thing"),
            Some(PathConfig::default())
        );
    }
}
