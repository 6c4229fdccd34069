//! `[hls]`: Low-Latency HLS over HTTP for browsers (CONTRACT.md "HLS").

use serde::{Deserialize, Serialize};

/// `[hls]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsConfig {
    /// Whether HLS is served.
    pub enabled: bool,
    /// The HTTP listener's address and port.
    pub listen: String,
    /// The shortest segment; segments are cut at the first keyframe after it.
    pub segment_duration_secs: u64,
    /// The part target of Low-Latency HLS.
    pub part_duration_ms: u64,
    /// A path's muxer stops this long after its last HLS request.
    pub muxer_close_after_secs: u64,
    /// Most HLS connections open at once; one more gets 503.
    pub max_connections: usize,
    /// Serve HTTPS with the `[rtsps]` certificate.
    pub tls: bool,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            enabled: true,
            listen: "0.0.0.0:8888".into(),
            segment_duration_secs: 1,
            part_duration_ms: 200,
            muxer_close_after_secs: 60,
            max_connections: 1000,
            tls: false,
        }
    }
}

/// Checks `[hls]`: the key at fault and why.
pub(crate) fn validate(h: &HlsConfig) -> Result<(), (&'static str, String)> {
    if h.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err((
            "listen",
            "must be an address:port such as 0.0.0.0:8888".into(),
        ));
    }
    if !(1..=10).contains(&h.segment_duration_secs) {
        return Err(("segment_duration_secs", "must be between 1 and 10".into()));
    }
    if !(50..=2000).contains(&h.part_duration_ms)
        || h.part_duration_ms >= h.segment_duration_secs * 1000
    {
        return Err((
            "part_duration_ms",
            "must be between 50 and 2000 and shorter than a segment".into(),
        ));
    }
    if !(1..=86400).contains(&h.muxer_close_after_secs) {
        return Err((
            "muxer_close_after_secs",
            "must be between 1 and 86400".into(),
        ));
    }
    if !(1..=1 << 20).contains(&h.max_connections) {
        return Err(("max_connections", "must be between 1 and 1048576".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        assert!(validate(&HlsConfig::default()).is_ok());
        for (c, key) in [
            (
                HlsConfig {
                    listen: "8888".into(),
                    ..Default::default()
                },
                "listen",
            ),
            (
                HlsConfig {
                    part_duration_ms: 1000,
                    ..Default::default()
                },
                "part_duration_ms",
            ),
            (
                HlsConfig {
                    segment_duration_secs: 0,
                    ..Default::default()
                },
                "segment_duration_secs",
            ),
        ] {
            assert_eq!(validate(&c).unwrap_err().0, key);
        }
    }
}
