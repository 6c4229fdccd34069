//! The status page (`GET /`): everything an operator wants at a glance, server-rendered with no
//! external assets and every value escaped: state, uptime, version, worker generation, the
//! restarts with their reasons, each path with its source (publisher or camera and its state),
//! codecs, readers per protocol, bitrate in and out and a link to watch it, recent errors, the
//! cluster. It refreshes itself every 5 s and reads on a phone.

use super::api::{all_paths, cluster_json, server_json};
use crate::shared::Shared;
use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::html::escape as html_escape;

fn text(v: &Value) -> String {
    html_escape(&match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".to_owned(),
        other => other.to_string(),
    })
}

/// Bits per second, short.
fn rate(bps: f64) -> String {
    match bps {
        b if b >= 1e9 => format!("{:.2} Gbit/s", b / 1e9),
        b if b >= 1e6 => format!("{:.2} Mbit/s", b / 1e6),
        b if b >= 1e3 => format!("{:.0} kbit/s", b / 1e3),
        b => format!("{b:.0} bit/s"),
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s >= 86400 => format!("{}d {}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// A path's figures when the page was last looked at: (when, bytes in, bytes out).
type Seen = HashMap<String, (Instant, u64, u64)>;

/// The last figures of each path, so the page shows the bitrate since the previous look.
static LAST: Mutex<Option<Seen>> = Mutex::new(None);

/// (in, out) bits per second of `name` since the last look (none on the first).
fn bitrates(name: &str, bytes_in: u64, bytes_out: u64) -> Option<(f64, f64)> {
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let map = last.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    let before = map.insert(name.to_owned(), (now, bytes_in, bytes_out));
    if map.len() > 10_000 {
        map.retain(|_, (t, _, _)| now.duration_since(*t).as_secs() < 600);
    }
    let (t, i, o) = before?;
    let secs = now.duration_since(t).as_secs_f64();
    (secs >= 0.5).then(|| {
        (
            bytes_in.saturating_sub(i) as f64 * 8.0 / secs,
            bytes_out.saturating_sub(o) as f64 * 8.0 / secs,
        )
    })
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1em;background:#f6f7f9;color:#222}\
h1{font-size:1.3em;margin:0 0 .4em}h2{font-size:1.05em;margin:1.4em 0 .4em}\
.cards{display:flex;flex-wrap:wrap;gap:.5em}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4em .8em}\
.card b{display:block;font-size:1.1em}.wrap{overflow-x:auto}\
table{border-collapse:collapse;background:#fff;min-width:100%}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;white-space:nowrap}\
th{background:#eef0f3}.ok{color:#17803d}.bad{color:#b42318}.muted{color:#777}a{color:#0b57d0}\
@media (max-width:600px){body{padding:.5em}td,th{padding:3px 5px;font-size:.9em}}";

/// A one-page status view for people.
pub(super) async fn status_page(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
) -> axum::response::Html<String> {
    let server = server_json(&s);
    let config = s.config();
    let mut out = String::with_capacity(8192);
    let state = server["state"].as_str().unwrap_or_default();
    let class = if state == "running" { "ok" } else { "bad" };
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=refresh content=5><title>Finch · {state}</title><style>{STYLE}</style></head><body>\
<h1>Finch {}</h1><div class=cards>\
<div class=card>state<b class={class}>{}</b></div>\
<div class=card>uptime<b>{}</b></div>\
<div class=card>worker<b>pid {} · generation {}</b></div>\
<div class=card>restarts<b>{}</b></div>\
<div class=card>RTSP connections<b>{}</b></div></div>",
        html_escape(env!("CARGO_PKG_VERSION")),
        html_escape(state),
        duration(server["uptime_secs"].as_u64().unwrap_or(0)),
        text(&server["worker"]["pid"]),
        text(&server["worker"]["generation"]),
        text(&server["restarts_total"]),
        text(&server["connections"]),
    );
    // Paths.
    let hls_port = config
        .hls
        .listen
        .parse::<std::net::SocketAddr>()
        .ok()
        .filter(|_| config.hls.enabled)
        .map(|a| a.port());
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
            _ => h.to_owned(),
        })
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    let scheme = if config.hls.tls { "https" } else { "http" };
    out.push_str("<h2>Paths</h2><div class=wrap><table><tr><th>path</th><th>source</th><th>codecs</th><th>readers (RTSP TCP / UDP / HLS)</th><th>in</th><th>out</th><th>watch</th></tr>");
    let paths = all_paths(&s);
    if paths.is_empty() {
        out.push_str("<tr><td colspan=7 class=muted>no path is published or pulled</td></tr>");
    }
    for (name, p) in &paths {
        let src = &p["source"];
        let source = match src["kind"].as_str() {
            Some("pull") => format!(
                "camera {} <span class={}>{}</span>{}",
                text(&src["url"]),
                if src["state"] == "ready" { "ok" } else { "bad" },
                text(&src["state"]),
                src["last_error"]
                    .as_str()
                    .map(|e| format!(" <span class=muted>({})</span>", html_escape(e)))
                    .unwrap_or_default()
            ),
            Some(kind) => format!(
                "{} {} {}",
                html_escape(kind),
                text(&src["peer"]),
                text(&src["transport"])
            ),
            None => "–".to_owned(),
        };
        let codecs: Vec<String> = p["tracks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| text(&t["codec"]))
            .collect();
        let mut by = [0usize; 3];
        for r in p["readers"].as_array().into_iter().flatten() {
            match r["transport"].as_str() {
                Some("udp") => by[1] += 1,
                Some("hls") => by[2] += 1,
                _ => by[0] += 1,
            }
        }
        let (bi, bo) = (
            p["bytes_in"].as_u64().unwrap_or(0),
            p["bytes_out"].as_u64().unwrap_or(0),
        );
        // Since the last look; on the first, the average since the path began.
        let since = p["since"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        let (ri, ro) = match bitrates(name, bi, bo) {
            Some((i, o)) => (rate(i), rate(o)),
            None if since >= 1.0 => (rate(bi as f64 * 8.0 / since), rate(bo as f64 * 8.0 / since)),
            None => ("…".to_owned(), "…".to_owned()),
        };
        let watch = match (hls_port, p["ready"].as_bool()) {
            (Some(port), Some(true)) => format!(
                "<a href=\"{scheme}://{}:{port}/{}/\">watch</a>",
                html_escape(&host),
                html_escape(name)
            ),
            _ => "–".to_owned(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{source}</td><td>{}</td><td>{} / {} / {}</td><td>{ri}</td><td>{ro}</td><td>{watch}</td></tr>",
            html_escape(name),
            codecs.join(", "),
            by[0],
            by[1],
            by[2],
        );
    }
    out.push_str("</table></div>");
    // Restarts, newest first.
    let restarts: Vec<&Value> = server["restarts"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .take(10)
        .collect();
    if !restarts.is_empty() {
        out.push_str("<h2>Restarts</h2><div class=wrap><table><tr><th>when</th><th>reason</th><th>detail</th></tr>");
        for r in restarts {
            let detail = [&r["signal"], &r["exit_code"], &r["message"]]
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| text(v))
                .collect::<Vec<_>>()
                .join(" · ");
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{detail}</td></tr>",
                text(&r["at"]),
                text(&r["reason"])
            );
        }
        out.push_str("</table></div>");
    }
    // Recent errors, newest first.
    let errors = s.errors.entries();
    out.push_str("<h2>Recent errors</h2>");
    if errors.is_empty() {
        out.push_str("<p class=muted>none</p>");
    } else {
        out.push_str(
            "<div class=wrap><table><tr><th>when</th><th>verbosity</th><th>message</th></tr>",
        );
        for e in errors.iter().rev().take(10) {
            let v = serde_json::to_value(e).unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&v["at"]),
                text(&v["verbosity"]),
                text(&v["message"])
            );
        }
        out.push_str("</table></div>");
    }
    if s.cluster.is_some() {
        let c = cluster_json(&s).await;
        let _ = write!(
            out,
            "<h2>Cluster</h2><p>This node: <b>{}</b> · Redis {}</p><div class=wrap><table><tr><th>node</th><th>URL</th><th>paths</th><th>readers</th></tr>",
            text(&c["node_id"]),
            text(&c["redis"]),
        );
        for n in c["nodes"].as_array().into_iter().flatten() {
            let paths: Vec<String> = n["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                text(&n["node_id"]),
                text(&n["advertise_url"]),
                paths.join(", "),
                text(&n["readers"]),
            );
        }
        out.push_str("</table></div>");
    }
    out.push_str("<p class=muted><a href=/api/v1/server>server</a> · <a href=/api/v1/paths>paths</a> · <a href=/api/v1/sessions>sessions</a> · <a href=/api/v1/errors>errors</a> · <a href=/api/v1/cluster>cluster</a> · <a href=/metrics>metrics</a> · refreshes every 5 s</p></body></html>");
    axum::response::Html(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_short() {
        assert_eq!(rate(2_080_000.0), "2.08 Mbit/s");
        assert_eq!(rate(64_000.0), "64 kbit/s");
        assert_eq!(duration(3725), "1h 2m");
    }
}
