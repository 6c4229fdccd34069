//! `[cluster]`: several Finch nodes sharing a path registry in Redis (CONTRACT.md "Cluster").
//! Empty `redis_url` (the default) is standalone and needs no Redis.

use serde::{Deserialize, Serialize};

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:pass@]host:port[/db]` (or `rediss://`); empty: standalone.
    pub redis_url: String,
    /// This node's name in the registry; empty: `{hostname}:{rtsp port}`.
    pub node_id: String,
    /// How other nodes reach this one (`rtsp://host:port`); empty: `rtsp://{hostname}:{rtsp port}`.
    pub advertise_url: String,
    /// Lifetime of this node's keys; they are refreshed well before it runs out.
    pub ttl_secs: u64,
    /// The credential nodes pull from each other with (Digest, user `finch-cluster`).
    pub secret: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: String::new(),
            node_id: String::new(),
            advertise_url: String::new(),
            ttl_secs: 10,
            secret: String::new(),
        }
    }
}

/// The user name a node pulls from another with; no configured user may take it.
pub const CLUSTER_USER: &str = "finch-cluster";

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        !self.redis_url.is_empty()
    }

    /// The node id in force: the configured one, or `{hostname}:{rtsp_port}`.
    pub fn node_id_or(&self, hostname: &str, rtsp_port: u16) -> String {
        if self.node_id.is_empty() {
            format!("{hostname}:{rtsp_port}")
        } else {
            self.node_id.clone()
        }
    }

    /// The advertised URL in force, without a trailing slash.
    pub fn advertise_url_or(&self, hostname: &str, rtsp_port: u16) -> String {
        if self.advertise_url.is_empty() {
            format!("rtsp://{hostname}:{rtsp_port}")
        } else {
            self.advertise_url.trim_end_matches('/').to_owned()
        }
    }
}

/// Checks `[cluster]`: the key at fault and why.
pub(crate) fn validate(c: &ClusterConfig) -> Result<(), (&'static str, String)> {
    if !c.redis_url.is_empty() {
        let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|s| c.redis_url.starts_with(s));
        if !scheme_ok {
            return Err((
                "redis_url",
                format!("{:?} is not a redis:// or rediss:// URL", c.redis_url),
            ));
        }
    }
    if !(2..=3600).contains(&c.ttl_secs) {
        return Err(("ttl_secs", "must be between 2 and 3600".into()));
    }
    if c.node_id.contains(char::is_whitespace) {
        return Err(("node_id", "must not contain spaces".into()));
    }
    let url = &c.advertise_url;
    if !(url.is_empty() || url.starts_with("rtsp://") || url.starts_with("rtsps://")) {
        return Err((
            "advertise_url",
            format!("{:?} is not an rtsp:// or rtsps:// URL", c.advertise_url),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_standalone_and_derive_names_from_the_host() {
        let c = ClusterConfig::default();
        assert!(!c.enabled());
        assert_eq!(c.node_id_or("cam-host", 8554), "cam-host:8554");
        assert_eq!(c.advertise_url_or("cam-host", 8554), "rtsp://cam-host:8554");
        assert!(validate(&c).is_ok());
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = ClusterConfig {
            redis_url: "http://x".into(),
            ..Default::default()
        };
        assert_eq!(validate(&c).unwrap_err().0, "redis_url");
        let c = ClusterConfig {
            ttl_secs: 1,
            ..Default::default()
        };
        assert_eq!(validate(&c).unwrap_err().0, "ttl_secs");
        let c = ClusterConfig {
            advertise_url: "http://x:1".into(),
            ..Default::default()
        };
        assert_eq!(validate(&c).unwrap_err().0, "advertise_url");
        let c = ClusterConfig {
            advertise_url: "rtsp://10.0.0.2:8554/".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            ..Default::default()
        };
        assert!(validate(&c).is_ok());
        assert_eq!(c.advertise_url_or("h", 1), "rtsp://10.0.0.2:8554");
    }
}
