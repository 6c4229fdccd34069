//! The JSON endpoints: the server and its state, paths, sessions, config, errors, metrics.

use super::{rfc3339, ApiError, ApiResult};
use crate::pull::Status;
use crate::shared::Shared;
use crate::state::ServerState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use finch_relay::PathEntry;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::SystemTime;

pub(super) async fn healthz(State(s): State<Arc<Shared>>) -> Response {
    if *s.state.borrow() == ServerState::Running {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, s.state.borrow().as_str()).into_response()
    }
}

pub(crate) fn server_json(s: &Shared) -> Value {
    let uptime = SystemTime::now()
        .duration_since(s.started_at)
        .map_or(0, |d| d.as_secs());
    let mut sup = s.supervision.clone().unwrap_or_default();
    // This worker's own restart entry was written before it took its predecessor's sessions.
    let took = s
        .handover
        .took
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let (Some(m), Some(last)) = (took, sup.restarts.last_mut()) {
        if last.reason == "requested" {
            last.message = Some(m);
        }
    }
    json!({
        "state": s.state.borrow().as_str(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": uptime,
        "supervisor_pid": s.supervision.as_ref().map(|x| x.supervisor_pid),
        "worker": {
            "pid": std::process::id(),
            "generation": sup.generation,
            "started_at": rfc3339(s.started_at),
        },
        "restarts": sup.restarts,
        "restarts_total": sup.restarts_total,
        "connections": s.connection_count(),
    })
}

pub(super) async fn get_server(State(s): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(server_json(&s)))
}

#[derive(serde::Deserialize)]
pub(super) struct StateBody {
    state: String,
}

pub(super) async fn set_state(
    State(s): State<Arc<Shared>>,
    body: Option<Json<StateBody>>,
) -> ApiResult {
    let Some(Json(body)) = body else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "expected {\"state\": \"running\" | \"refusing_connections\" | \"idle\"}".into(),
        ));
    };
    let new = match body.state.as_str() {
        "running" => ServerState::Running,
        "refusing_connections" => ServerState::RefusingConnections,
        "idle" => ServerState::Idle,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("state {other:?} cannot be set; use running, refusing_connections or idle"),
            ))
        }
    };
    // Only a state an operator may set can be replaced: FatalError, ShuttingDown and Starting
    // belong to the run loop, and overwriting them would stop a worker from exiting.
    let replaced = s.state.send_if_modified(|current| {
        if matches!(
            current,
            ServerState::Running | ServerState::RefusingConnections | ServerState::Idle
        ) {
            *current = new;
            true
        } else {
            false
        }
    });
    if !replaced && *s.state.borrow() != new {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "the server is {}; its state cannot be changed now",
                s.state.borrow().as_str()
            ),
        ));
    }
    if new == ServerState::Idle {
        // DSS's qtssIdleState: kill all RTP sessions, keep serving new connections.
        s.go_idle();
    }
    tracing::info!(state = new.as_str(), "server state set through the API");
    Ok(Json(server_json(&s)))
}

fn path_json(p: &PathEntry, pull: Option<&Status>) -> Value {
    let t = p.stream.totals();
    let readers: Vec<Value> = p
        .stream
        .readers()
        .into_iter()
        .map(|r| json!({ "session": r.session, "peer": r.peer.to_string(), "transport": r.transport }))
        .collect();
    let mut source = json!({
        "kind": p.source.kind.as_str(),
        "peer": p.source.peer.to_string(),
        "transport": p.source.transport,
    });
    if let Some(st) = pull {
        add_pull(&mut source, st);
    }
    json!({
        "name": p.name,
        "source": source,
        "ready": p.is_live(),
        "tracks": p.stream.tracks.iter().map(|t| json!({
            "codec": t.codec,
            "clock_rate": t.clock_rate,
            "media": t.media_type,
        })).collect::<Vec<_>>(),
        "reader_count": readers.len(),
        "readers": readers,
        "bytes_in": t.bytes_in,
        "bytes_out": t.bytes_out,
        "packets_dropped": t.packets_dropped,
        "since": rfc3339(p.since),
    })
}

fn add_pull(source: &mut Value, st: &Status) {
    source["kind"] = json!("pull");
    source["url"] = json!(st.url);
    source["state"] = json!(st.state.as_str());
    source["reconnects"] = json!(st.reconnects);
    source["last_error"] = json!(st.last_error);
}

/// A pulled path whose camera is not feeding it now (connecting, waiting, idle).
fn away_pull_json(name: &str, st: &Status) -> Value {
    let mut source = json!({ "kind": "pull", "peer": null, "transport": null });
    add_pull(&mut source, st);
    json!({
        "name": name,
        "source": source,
        "ready": false,
        "tracks": [],
        "reader_count": 0,
        "readers": [],
        "bytes_in": 0,
        "bytes_out": 0,
        "packets_dropped": 0,
        "since": null,
    })
}

/// Every path: those with a source, and pulled ones whose camera is away.
pub(super) fn all_paths(s: &Shared) -> Vec<(String, Value)> {
    let pulls = s.pulls.statuses();
    let mut out: Vec<(String, Value)> = s
        .registry
        .list()
        .iter()
        .map(|p| {
            let pull = pulls.iter().find(|(n, _)| *n == p.name).map(|(_, st)| st);
            (p.name.clone(), path_json(p, pull))
        })
        .collect();
    for (name, st) in &pulls {
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.clone(), away_pull_json(name, st)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub(super) async fn list_paths(State(s): State<Arc<Shared>>) -> ApiResult {
    let items: Vec<Value> = all_paths(&s).into_iter().map(|(_, v)| v).collect();
    Ok(Json(json!({ "items": items })))
}

pub(super) async fn get_path(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let name = name.trim_matches('/');
    all_paths(&s)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| Json(v))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no path {name:?}")))
}

pub(super) async fn list_sessions(State(s): State<Arc<Shared>>) -> ApiResult {
    let items: Vec<Value> = s
        .sessions
        .list()
        .into_iter()
        .map(|x| {
            json!({
                "id": x.id,
                "path": x.path,
                "role": x.role,
                "peer": x.peer.to_string(),
                "transport": x.transport,
                "since": rfc3339(x.since),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

pub(super) async fn kick_session(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if s.sessions.kick(&id) {
        tracing::info!(session = %id, "session kicked through the API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no session {id:?}"),
        ))
    }
}

pub(super) async fn restart(
    State(s): State<Arc<Shared>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if s.supervision.is_none() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "a graceful restart needs the supervisor; this worker runs in --foreground".into(),
        ));
    }
    if !s.report(finch_control::ToSupervisor::Restart) {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor is not reachable".into(),
        ));
    }
    tracing::info!("graceful restart requested through the API");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "status": "restarting" })),
    ))
}

pub(super) async fn get_config(State(s): State<Arc<Shared>>) -> ApiResult {
    let mut v = serde_json::to_value(&*s.config())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    redact_secrets(&mut v);
    Ok(Json(v))
}

/// Secrets never leave the server: the admin token, users' passwords, and passwords inside
/// source URLs.
fn redact_secrets(v: &mut Value) {
    if v["admin"]["token"].as_str().is_some_and(|t| !t.is_empty()) {
        v["admin"]["token"] = json!("<redacted>");
    }
    if let Some(users) = v["auth"]["users"].as_array_mut() {
        for u in users {
            if u["pass"].as_str().is_some_and(|p| !p.is_empty()) {
                u["pass"] = json!("<redacted>");
            }
        }
    }
    if v["cluster"]["secret"]
        .as_str()
        .is_some_and(|t| !t.is_empty())
    {
        v["cluster"]["secret"] = json!("<redacted>");
    }
    if let Some(url) = v["cluster"]["redis_url"].as_str() {
        let redacted = finch_proto::uri::redact(url).into_owned();
        v["cluster"]["redis_url"] = json!(redacted);
    }
    if let Some(paths) = v["paths"].as_object_mut() {
        for p in paths.values_mut() {
            if let Some(src) = p["source"].as_str() {
                let redacted = finch_proto::uri::redact(src).into_owned();
                p["source"] = json!(redacted);
            }
        }
    }
}

pub(super) async fn cluster(State(s): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(cluster_json(&s).await))
}

/// `GET /api/v1/cluster` (CONTRACT.md "Cluster"): every node with its paths, from Redis. With
/// Redis away, this node alone, from what it holds, and `redis` says so.
pub(super) async fn cluster_json(s: &Arc<Shared>) -> Value {
    let Some(c) = &s.cluster else {
        let config = s.config();
        return json!({
            "node_id": config.cluster.node_id_or(&crate::cluster::hostname(), config.rtsp.port),
            "nodes": [],
        });
    };
    match c.nodes().await {
        Ok(nodes) => {
            let nodes: Vec<Value> = nodes
                .into_iter()
                .map(|(id, rec, paths)| {
                    json!({
                        "node_id": id,
                        "advertise_url": rec.advertise_url,
                        "paths": paths,
                        "readers": rec.readers,
                        "publishers": rec.publishers,
                        "bitrate_in": rec.bitrate_in,
                    })
                })
                .collect();
            json!({ "node_id": c.node_id, "redis": "up", "nodes": nodes })
        }
        Err(e) => {
            let mut paths: Vec<String> = s
                .registry
                .list()
                .into_iter()
                .map(|p| p.name)
                .filter(|p| !s.pulls.is_cluster(p))
                .collect();
            paths.sort();
            json!({
                "node_id": c.node_id,
                "redis": "unreachable",
                "error": e,
                "nodes": [{"node_id": c.node_id, "advertise_url": c.advertise_url, "paths": paths}],
            })
        }
    }
}

pub(super) async fn reload_config(State(s): State<Arc<Shared>>) -> ApiResult {
    match crate::reload::reload(&s) {
        Ok(r) => Ok(Json(
            json!({ "changed": r.changed, "needs_restart": r.needs_restart }),
        )),
        Err(e) => Err(ApiError(StatusCode::BAD_REQUEST, e)),
    }
}

pub(super) async fn errors(State(s): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(json!({ "items": s.errors.entries() })))
}

pub(super) async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(&s.snapshot()),
    )
        .into_response()
}

/// The OpenAPI document of this API, written by hand beside the handlers (`openapi.json`) and
/// checked against the live server by the end-to-end tests.
pub(super) async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}
