//! The admin HTTP API (CONTRACT.md "Admin HTTP API"): JSON over axum on the admin listener.
//!
//! Handlers read the shared [`Server`]; they never block on a stream or a connection. Errors are
//! `{"error": "message"}` with a 4xx/5xx status, built in one place ([`ApiError`]).

use crate::registry::PathEntry;
use crate::server::Server;
use crate::state::ServerState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

/// An API error: a status and a message, written as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The admin router.
pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/server", get(get_server))
        .route("/api/v1/server/state", post(set_state))
        .route("/api/v1/server/restart", post(restart))
        .route("/api/v1/config", get(get_config))
        .route("/api/v1/config/reload", post(reload_config))
        .route("/api/v1/errors", get(errors))
        .route("/api/v1/debug/fault", post(fault))
        .route("/api/v1/paths", get(list_paths))
        .route("/api/v1/paths/{*name}", get(get_path))
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/sessions/{id}", axum::routing::delete(kick_session))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            authorize,
        ))
        .with_state(server)
}

/// Every endpoint but /healthz and /metrics needs the admin token when one is configured.
async fn authorize(
    State(s): State<Arc<Server>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let config = s.config();
    let open = matches!(req.uri().path(), "/healthz" | "/metrics");
    if open || !config.admin.requires_token() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            if let Some(t) = v.strip_prefix("Bearer ") {
                return Some(t.trim().to_owned());
            }
            use base64::Engine as _;
            let b = v.strip_prefix("Basic ")?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            text.split_once(':').map(|(_, pass)| pass.to_owned())
        });
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), config.admin.token.as_bytes())) {
        return next.run(req).await;
    }
    let mut resp = ApiError(
        StatusCode::UNAUTHORIZED,
        "this endpoint needs the admin token".into(),
    )
    .into_response();
    resp.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Basic realm=\"finch\""),
    );
    resp
}

/// Compares secrets without leaking where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn healthz(State(s): State<Arc<Server>>) -> Response {
    if *s.state.borrow() == ServerState::Running {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, s.state.borrow().as_str()).into_response()
    }
}

fn server_json(s: &Server) -> Value {
    let uptime = SystemTime::now()
        .duration_since(s.started_at)
        .map_or(0, |d| d.as_secs());
    let sup = s.supervision.clone().unwrap_or_default();
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
        "connections": s.connections.load(Ordering::Relaxed),
    })
}

async fn get_server(State(s): State<Arc<Server>>) -> ApiResult {
    Ok(Json(server_json(&s)))
}

#[derive(serde::Deserialize)]
struct StateBody {
    state: String,
}

async fn set_state(State(s): State<Arc<Server>>, body: Option<Json<StateBody>>) -> ApiResult {
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
        s.kick_all_sessions();
        s.registry.close_all();
    }
    tracing::info!(state = new.as_str(), "server state set through the API");
    Ok(Json(server_json(&s)))
}

fn path_json(p: &PathEntry) -> Value {
    let c = &p.stream.counters;
    let readers: Vec<Value> = p
        .stream
        .readers()
        .into_iter()
        .map(|r| json!({ "session": r.session, "peer": r.peer.to_string(), "transport": r.transport }))
        .collect();
    json!({
        "name": p.name,
        "source": {
            "kind": p.source.kind,
            "peer": p.source.peer.to_string(),
            "transport": p.source.transport,
        },
        "ready": p.ready,
        "tracks": p.stream.tracks.iter().map(|t| json!({
            "codec": t.codec,
            "clock_rate": t.clock_rate,
            "media": t.media_type,
        })).collect::<Vec<_>>(),
        "reader_count": readers.len(),
        "readers": readers,
        "bytes_in": c.bytes_in.load(Ordering::Relaxed),
        "bytes_out": c.bytes_out.load(Ordering::Relaxed),
        "packets_dropped": c.packets_dropped.load(Ordering::Relaxed),
        "since": rfc3339(p.since),
    })
}

async fn list_paths(State(s): State<Arc<Server>>) -> ApiResult {
    let items: Vec<Value> = s.registry.list().iter().map(path_json).collect();
    Ok(Json(json!({ "items": items })))
}

async fn get_path(State(s): State<Arc<Server>>, Path(name): Path<String>) -> ApiResult {
    let name = name.trim_matches('/');
    s.registry
        .get(name)
        .map(|p| Json(path_json(&p)))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no path {name:?}")))
}

async fn list_sessions(State(s): State<Arc<Server>>) -> ApiResult {
    let items: Vec<Value> = s
        .list_sessions()
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

async fn kick_session(
    State(s): State<Arc<Server>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if s.kick_session(&id) {
        tracing::info!(session = %id, "session kicked through the API");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no session {id:?}"),
        ))
    }
}

async fn restart(State(s): State<Arc<Server>>) -> Result<(StatusCode, Json<Value>), ApiError> {
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

async fn get_config(State(s): State<Arc<Server>>) -> ApiResult {
    let mut v = serde_json::to_value(&*s.config())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // Secrets never leave the server.
    if v["admin"]["token"].as_str().is_some_and(|t| !t.is_empty()) {
        v["admin"]["token"] = json!("<redacted>");
    }
    Ok(Json(v))
}

async fn reload_config(State(s): State<Arc<Server>>) -> ApiResult {
    match crate::reload::reload(&s) {
        Ok(r) => Ok(Json(
            json!({ "changed": r.changed, "needs_restart": r.needs_restart }),
        )),
        Err(e) => Err(ApiError(StatusCode::BAD_REQUEST, e)),
    }
}

async fn errors(State(s): State<Arc<Server>>) -> ApiResult {
    Ok(Json(json!({ "items": s.errors.entries() })))
}

#[derive(serde::Deserialize)]
struct FaultBody {
    kind: String,
}

async fn fault(
    State(s): State<Arc<Server>>,
    body: Option<Json<FaultBody>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !s.config().debug.fault_injection {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "fault injection is off (debug.fault_injection)".into(),
        ));
    }
    let Some(Json(body)) = body else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "expected {\"kind\": ...}".into(),
        ));
    };
    tracing::warn!(kind = %body.kind, "injecting a fault");
    match body.kind.as_str() {
        "fatal" => s.errors.fatal("injected fault: fatal error"),
        "error" => s.errors.error("injected fault: an ordinary error"),
        "panic_task" => {
            // A task like a connection's: tokio contains the panic, the hook logs it.
            tokio::spawn(async { panic!("injected fault: panic in a connection task") });
        }
        "panic_core" => s.faults.panic_core.store(true, Ordering::Relaxed),
        "hang" => s.faults.hang.store(true, Ordering::Relaxed),
        "abort" => {
            tokio::spawn(async {
                // Let the 202 reach the client first.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                std::process::abort();
            });
        }
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown fault {other:?}: fatal, error, panic_task, panic_core, abort, hang"
                ),
            ))
        }
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "injected": body.kind }))))
}

async fn metrics(State(s): State<Arc<Server>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(&s),
    )
        .into_response()
}

/// The OpenAPI document of this API, written by hand beside the handlers (`openapi.json`) and
/// checked against the live server by the end-to-end tests.
async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A one-page status view for people: state, paths, readers, traffic.
async fn status_page(State(s): State<Arc<Server>>) -> axum::response::Html<String> {
    let server = server_json(&s);
    let mut rows = String::new();
    for p in s.registry.list() {
        let c = &p.stream.counters;
        let codecs: Vec<String> = p.stream.tracks.iter().map(|t| t.codec.clone()).collect();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&p.name),
            html_escape(&p.source.peer.to_string()),
            p.source.transport.unwrap_or("-"),
            html_escape(&codecs.join(", ")),
            p.stream.reader_count(),
            c.bytes_in.load(Ordering::Relaxed),
            c.bytes_out.load(Ordering::Relaxed),
        ));
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=7>no stream is published</td></tr>");
    }
    axum::response::Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Finch</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}</style>\
</head><body><h1>Finch {}</h1><p>State: <b>{}</b> · uptime {} s · worker pid {} (generation {}) · restarts {}</p>\
<table><tr><th>path</th><th>publisher</th><th>transport</th><th>codecs</th><th>readers</th><th>bytes in</th><th>bytes out</th></tr>{}</table>\
<p><a href=/api/v1/server>server</a> · <a href=/api/v1/paths>paths</a> · <a href=/api/v1/sessions>sessions</a> · <a href=/api/v1/errors>errors</a> · <a href=/metrics>metrics</a></p></body></html>",
        env!("CARGO_PKG_VERSION"),
        server["state"].as_str().unwrap_or_default(),
        server["uptime_secs"],
        server["worker"]["pid"],
        server["worker"]["generation"],
        server["restarts_total"],
        rows
    ))
}
