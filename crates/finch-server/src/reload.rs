//! Applying a new config to a running worker (SIGHUP, `POST /api/v1/config/reload`).
//!
//! The new config is loaded and validated in full first; a bad one is refused with its reason and
//! the running config stays. A good one replaces the config in force: new connections and
//! sessions take its paths, limits and relay settings at once, without dropping anyone. Keys
//! that need new sockets (listen addresses and ports) are handed to the supervisor, which binds
//! the new sockets and restarts the worker gracefully; in `--foreground` they wait for a restart.

use crate::shared::Shared;
use finch_config::Config;
use finch_control::ToSupervisor;

/// Keys that only new sockets can apply.
const SOCKET_KEYS: &[&str] = &[
    "rtsp.listen_addresses",
    "rtsp.port",
    "rtsp.udp",
    "rtsp.rtp_port",
    "rtsps.enabled",
    "rtsps.port",
    "admin.enabled",
    "admin.listen",
    "hls.enabled",
    "hls.listen",
];

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Dotted keys whose value changed.
    pub changed: Vec<String>,
    /// Of those, the ones that need a worker restart.
    pub needs_restart: Vec<String>,
}

/// Reloads from the config's sources; `Err` carries the reason (file:line:column …).
pub fn reload(server: &std::sync::Arc<Shared>) -> Result<Reloaded, String> {
    let Some(reloader) = &server.reloader else {
        return Err("this worker has no config source to reload from".to_owned());
    };
    let new = match reloader() {
        Ok(c) => c,
        Err(e) => {
            server.errors.error(format!(
                "config reload refused, the running config stays: {e}"
            ));
            return Err(e);
        }
    };
    // A certificate pair that cannot be read is refused like any bad config.
    let acceptor = match crate::tls::load(&new) {
        Ok(a) => a,
        Err(e) => {
            let e = e.to_string();
            server.errors.error(format!(
                "config reload refused, the running config stays: {e}"
            ));
            return Err(e);
        }
    };
    let old = server.config();
    let changed = changed_keys(&old, &new);
    let needs_restart: Vec<String> = changed
        .iter()
        // The cluster's Redis connection and node identity are the worker's for its life.
        .filter(|k| SOCKET_KEYS.contains(&k.as_str()) || k.starts_with("cluster."))
        .cloned()
        .collect();
    server.set_config(new.clone());
    server.tls.set(acceptor);
    server.pulls.sync(server, &new);
    server.auth.reload(&new);
    server
        .registry
        .budget()
        .set_max(new.limits.max_gop_cache_total_bytes);
    if let Some(udp) = &server.udp {
        udp.set_max_packet(new.limits.max_interleaved_bytes);
    }
    if let Some(apply) = &server.hooks.apply_log_config {
        apply(std::sync::Arc::new(new.clone()));
    }
    if changed.is_empty() {
        tracing::info!("config reloaded: nothing changed");
    } else {
        tracing::info!(changed = ?changed, "config reloaded");
    }
    let reported = server.report(ToSupervisor::Config {
        toml: toml::to_string(&new).unwrap_or_default(),
    });
    if !needs_restart.is_empty() && !reported {
        tracing::warn!(keys = ?needs_restart, "these changes take effect after a restart");
    }
    Ok(Reloaded {
        changed,
        needs_restart,
    })
}

/// The dotted keys whose values differ.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let a = toml::Value::try_from(old).unwrap_or(toml::Value::Boolean(false));
    let b = toml::Value::try_from(new).unwrap_or(toml::Value::Boolean(false));
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    out
}

fn diff(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y))
            if prefix.is_empty() || prefix.matches('.').count() == 0 && prefix != "paths" =>
        {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff(&p, va, vb, out),
                    _ => out.push(p),
                }
            }
        }
        _ => {
            if a != b {
                out.push(prefix.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_changed_keys() {
        let a = Config::default();
        let mut b = a.clone();
        b.rtsp.session_timeout_secs = 30;
        b.rtsp.port = 9000;
        b.paths.0.push(("live/*".into(), Default::default()));
        assert_eq!(
            changed_keys(&a, &b),
            vec!["paths", "rtsp.port", "rtsp.session_timeout_secs"]
        );
        assert!(changed_keys(&a, &a).is_empty());
    }
}
