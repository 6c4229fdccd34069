//! The status page (`GET /`): state, paths, readers and traffic, for people.

use super::api::server_json;
use crate::shared::Shared;
use axum::extract::State;
use std::sync::Arc;

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A one-page status view for people: state, paths, readers, traffic.
pub(super) async fn status_page(State(s): State<Arc<Shared>>) -> axum::response::Html<String> {
    let server = server_json(&s);
    let mut rows = String::new();
    for p in s.registry.list() {
        let t = p.stream.totals();
        let codecs: Vec<String> = p.stream.tracks.iter().map(|t| t.codec.clone()).collect();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&p.name),
            html_escape(&p.source.peer.to_string()),
            p.source.transport.unwrap_or("-"),
            html_escape(&codecs.join(", ")),
            p.stream.reader_count(),
            t.bytes_in,
            t.bytes_out,
        ));
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=7>no stream is published</td></tr>");
    }
    let mut cluster = String::new();
    if s.cluster.is_some() {
        let c = super::api::cluster_json(&s).await;
        cluster.push_str(&format!(
            "<h2>Cluster</h2><p>This node: <b>{}</b> · Redis {}</p><table><tr><th>node</th><th>URL</th><th>paths</th><th>readers</th></tr>",
            html_escape(c["node_id"].as_str().unwrap_or_default()),
            html_escape(c["redis"].as_str().unwrap_or_default()),
        ));
        for n in c["nodes"].as_array().into_iter().flatten() {
            let paths: Vec<&str> = n["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str())
                .collect();
            cluster.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html_escape(n["node_id"].as_str().unwrap_or_default()),
                html_escape(n["advertise_url"].as_str().unwrap_or_default()),
                html_escape(&paths.join(", ")),
                n["readers"],
            ));
        }
        cluster.push_str("</table>");
    }
    axum::response::Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Finch</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style>\
</head><body><h1>Finch {}</h1><p>State: <b>{}</b> · uptime {} s · worker pid {} (generation {}) · restarts {}</p>\
<table><tr><th>path</th><th>publisher</th><th>transport</th><th>codecs</th><th>readers</th><th>bytes in</th><th>bytes out</th></tr>{}</table>{}\
<p><a href=/api/v1/server>server</a> · <a href=/api/v1/cluster>cluster</a> · <a href=/api/v1/paths>paths</a> · <a href=/api/v1/sessions>sessions</a> · <a href=/api/v1/errors>errors</a> · <a href=/metrics>metrics</a></p></body></html>",
        env!("CARGO_PKG_VERSION"),
        server["state"].as_str().unwrap_or_default(),
        server["uptime_secs"],
        server["worker"]["pid"],
        server["worker"]["generation"],
        server["restarts_total"],
        rows,
        cluster
    ))
}
