//! The effective config as commented TOML (`finch --print-config`, `finch.example.toml`).

use crate::schema::Config;
use std::fmt::Write as _;

/// One doc line per key, in the order they are printed.
const DOCS: &[(&str, &str, &str)] = &[
    ("rtsp", "", "RTSP listener and sessions."),
    ("rtsp", "listen_addresses", "Addresses the RTSP listener binds (IPv4 or IPv6), without the port."),
    ("rtsp", "port", "The RTSP TCP port."),
    ("rtsp", "udp", "Offer RTP/AVP over UDP unicast (one shared server port pair)."),
    ("rtsp", "rtp_port", "The server's shared RTP port; RTCP uses rtp_port + 1."),
    ("rtsp", "session_timeout_secs", "A session with no sign of life for this long is closed: a request, RTCP, media from a publisher, or media a TCP reader takes."),
    ("rtsp", "write_timeout_secs", "A connection whose socket takes no data for this long is closed."),
    ("rtsp", "announce_timeout_secs", "An ANNOUNCE not followed by RECORD within this frees the path."),
    ("rtsps", "", "RTSP over TLS (rtsps://host:port/path), on rtsp.listen_addresses."),
    ("rtsps", "enabled", "Serve RTSPS."),
    ("rtsps", "port", "Its TCP port."),
    ("rtsps", "cert_file", "The certificate chain, PEM. Unreadable: exit 255 at start, 400 on reload."),
    ("rtsps", "key_file", "Its private key, PEM."),
    ("admin", "", "The admin HTTP server: API, metrics, status page."),
    ("admin", "enabled", "Run the admin HTTP server."),
    ("admin", "listen", "Its address and port. A non-loopback address needs a token."),
    ("admin", "token", "Secret for every endpoint but /healthz and /metrics: Authorization: Bearer <token>, or Basic auth with it as the password. Empty: none (loopback only)."),
    ("admin", "allowed_hosts", "Host headers the API answers (name or name:port); empty: the listen address, localhost, 127.0.0.1 and [::1] with its port. Others get 403."),
    ("hls", "", "Low-Latency HLS for browsers: http://host:8888/<path>/ plays a path, <path>/index.m3u8 is its playlist."),
    ("hls", "enabled", "Serve HLS."),
    ("hls", "listen", "The HTTP listener's address and port (--hls overrides it)."),
    ("hls", "segment_duration_secs", "The shortest segment: segments are cut at the first keyframe after it (the first GOP fixes the target duration)."),
    ("hls", "part_duration_ms", "The part target of Low-Latency HLS: players stay about three parts behind live."),
    ("hls", "muxer_close_after_secs", "A path's muxer stops this long after its last HLS request."),
    ("hls", "max_connections", "Most HLS connections open at once (each holds at most one request, a blocking reload included); one more gets 503."),
    ("hls", "tls", "Serve HTTPS with the [rtsps] certificate (Basic auth and HTTPS pages need it)."),
    ("auth", "", "Who may publish and read where. No users: everything is anonymous. Add users as [[auth.users]] tables: user, pass (plain, sha256:<hex> for Basic, digest-md5:/digest-sha256:<HA1 hex> for Digest), ips (CIDRs; empty: any), permissions ([{ action = \"publish\" | \"read\", path = \"pattern\" }]; no path: every path). user = \"any\" with pass = \"\" is anonymous."),
    ("auth", "users", "The users (see above)."),
    ("auth", "basic_over_plain", "Offer Basic authentication on plain RTSP too (Digest and TLS are safer; old cameras need it)."),
    ("auth", "fail_limit", "Wrong credentials from one address within fail_window_secs before it gets 403 for the rest of the window."),
    ("auth", "fail_window_secs", "The window of fail_limit."),
    ("auth", "nonce_expiry_secs", "How long a Digest nonce stays valid (then stale=true); nonces survive worker restarts."),
    ("limits", "", "Limits on every input; a request over one gets an error status."),
    ("limits", "max_head_bytes", "Largest RTSP request line plus headers (over it: 413)."),
    ("limits", "max_headers", "Most header fields in one request (over it: 400)."),
    ("limits", "max_uri_bytes", "Longest request URI (over it: 414)."),
    ("limits", "max_body_bytes", "Largest request body, such as an ANNOUNCE's SDP (over it: 413)."),
    ("limits", "max_interleaved_bytes", "Largest RTP/RTCP packet from a publisher: an interleaved frame over it closes the connection, a UDP datagram over it is dropped."),
    ("limits", "max_connections", "Most RTSP connections at once, all listeners together; more get 503. A reload applies it."),
    ("limits", "max_readers_per_path", "Most readers on one path; more get 453."),
    ("limits", "max_connections_per_ip", "Most RTSP connections from one address; more get 503. 0: no limit."),
    ("limits", "max_sessions_per_connection", "Most RTSP sessions on one connection; Finch holds one (another gets 453)."),
    ("limits", "max_tracks_per_session", "Most tracks in one session or ANNOUNCE; more get 453."),
    ("limits", "max_paths", "Most paths at once; an ANNOUNCE past it gets 503."),
    ("limits", "max_publishers_per_ip", "Most publishing sessions from one address; more get 503. 0: no limit."),
    ("limits", "request_timeout_secs", "A request not complete this long after its first byte closes the connection (slowloris)."),
    ("limits", "first_request_timeout_secs", "A connection with no complete request this long after it opened is closed."),
    ("limits", "max_gop_cache_total_bytes", "All paths' GOP caches together hold at most this (a GOP past it is not cached)."),
    ("relay", "", "Fan-out from one publisher to many readers."),
    ("relay", "reader_queue_packets", "How many packets a reader may fall behind live; past it, it skips whole frames to a newer keyframe."),
    ("relay", "slow_reader_max_dropped_packets", "A reader that skips this many packets without being sent one in between is disconnected."),
    ("relay", "gop_cache", "Start new readers at the last keyframe, so the picture appears at once."),
    ("relay", "gop_cache_max_bytes", "Bound of the GOP cache in bytes, counting each packet's overhead; a longer GOP is not cached."),
    ("relay", "gop_cache_max_packets", "Bound of the GOP cache in packets; a longer GOP is not cached."),
    ("log", "", "Logging."),
    ("log", "level", "error, warn, info, debug, trace, or a filter such as finch_server=debug."),
    ("log", "format", "text or json."),
    ("log", "file", "Append the log to this file; empty means stderr."),
    ("log", "stats_interval_secs", "Print a status line every N seconds in the foreground; 0 turns it off."),
    ("supervisor", "", "The supervisor, which restarts a worker that crashed, hung or reached FatalError."),
    ("supervisor", "auto_restart", "Restart the worker at all."),
    ("supervisor", "backoff_initial_ms", "Backoff before the second restart of a crash streak (the first is immediate); it doubles."),
    ("supervisor", "backoff_max_ms", "The backoff cap."),
    ("supervisor", "stable_after_secs", "A worker that ran this long ends the crash streak."),
    ("supervisor", "crash_loop_limit", "Restarts within one streak before the supervisor gives up with exit code 3."),
    ("supervisor", "heartbeat_timeout_secs", "A worker whose event loop is silent this long is killed and restarted."),
    ("supervisor", "drain_timeout_secs", "How long a stopping worker may drain its sessions."),
    ("supervisor", "pid_file", "Write the supervisor's pid here; empty for none."),
    ("debug", "", "Debugging aids; never in production."),
    ("debug", "fault_injection", "Enable POST /api/v1/debug/fault."),
    ("cluster", "", "Several nodes sharing one path registry in Redis; a reader on any node gets any node's path (see docs/cluster.md)."),
    ("cluster", "redis_url", "redis://host:port (or rediss://); empty: standalone, no Redis."),
    ("cluster", "node_id", "This node's name in the registry; empty: hostname:rtsp port."),
    ("cluster", "advertise_url", "How other nodes reach this one, rtsp://host:port; empty: rtsp://hostname:rtsp port."),
    ("cluster", "ttl_secs", "Lifetime of this node's keys in Redis: a node that dies drops out this long after."),
    ("cluster", "secret", "The credential nodes pull from each other with (needed when [[auth.users]] are set); redacted in the API."),
];

/// The config as TOML, every key with its doc line.
pub fn to_commented_toml(config: &Config) -> String {
    let value =
        toml::Value::try_from(config).unwrap_or_else(|_| toml::Value::Table(Default::default()));
    let empty = toml::Table::new();
    let root = value.as_table().unwrap_or(&empty);
    let mut out = String::from(
        "# Finch configuration. Every key is optional: a missing key takes the value shown here.\n\
         # Environment variables FINCH_<SECTION>__<KEY> override this file; command-line flags override both.\n",
    );
    for (section, key, doc) in DOCS {
        let table = root.get(*section).and_then(|v| v.as_table());
        if key.is_empty() {
            let _ = write!(out, "\n# {doc}\n[{section}]\n");
            continue;
        }
        if let Some(v) = table.and_then(|t| t.get(*key)) {
            let _ = write!(out, "# {doc}\n{key} = {v}\n");
        }
    }
    out.push_str(
        "\n# Per-path settings, first match wins: exact names or patterns (`*` within a segment,\n\
         # `**` across segments). With no [paths] table at all, any path accepts a publisher.\n\
         # source = \"publisher\" (clients push with ANNOUNCE/RECORD) or a camera's rtsp:// or\n\
         # rtsps:// URL to pull (one path, not a pattern); source_transport = \"auto\" | \"tcp\" | \"udp\";\n\
         # source_on_demand (pull only while someone reads), source_on_demand_start_timeout_secs,\n\
         # source_on_demand_close_after_secs, source_read_timeout_secs (no media: a failure);\n\
         # publisher_grace_secs (readers wait this long for a source to come back; 0: closed at\n\
         # once) and override_publisher (a new publisher replaces the live one instead of 455).\n",
    );
    let defaults = toml::Value::try_from(crate::schema::PathConfig::default()).ok();
    for (pattern, p) in &config.paths.0 {
        let _ = writeln!(out, "[paths.{}]", toml::Value::String(pattern.clone()));
        let Ok(toml::Value::Table(t)) = toml::Value::try_from(p) else {
            continue;
        };
        for (k, v) in &t {
            // The source always, the rest only where it differs from the default.
            let default = defaults.as_ref().and_then(|d| d.get(k));
            if k == "source" || default != Some(v) {
                let _ = writeln!(out, "{k} = {v}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;

    #[test]
    fn every_key_has_a_doc_and_it_round_trips() {
        let c = Config::default();
        let text = to_commented_toml(&c);
        let value = toml::Value::try_from(&c).unwrap();
        for (section, t) in value.as_table().unwrap() {
            let Some(t) = t.as_table() else { continue };
            for key in t.keys() {
                assert!(
                    DOCS.iter().any(|(s, k, _)| s == section && k == key),
                    "{section}.{key} has no doc line"
                );
            }
        }
        assert_eq!(load_str(&text, "printed", Vec::new()).unwrap(), c);
    }

    #[test]
    fn example_file_is_the_defaults() {
        let text = include_str!("../../../finch.example.toml");
        assert_eq!(
            load_str(text, "finch.example.toml", Vec::new()).unwrap(),
            Config::default()
        );
        assert_eq!(
            text,
            to_commented_toml(&Config::default()),
            "regenerate with finch --print-config"
        );
    }
}
