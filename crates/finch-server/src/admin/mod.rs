//! The admin HTTP server (CONTRACT.md "Admin HTTP API"): JSON over axum on the admin listener,
//! Prometheus metrics and a status page.
//!
//! Layout: this module routes and guards (the admin token); `api` has the JSON endpoints,
//! `faults` fault injection, `page` the status page. Handlers read the [`Shared`] state; they
//! never block on a stream or a connection. Errors are `{"error": "message"}` with a 4xx/5xx
//! status, built in one place ([`ApiError`]).

mod api;
mod faults;
mod page;

use crate::shared::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::SystemTime;

/// An API error: a status and a message, written as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub(crate) type ApiResult = Result<Json<Value>, ApiError>;

/// The admin router.
pub fn router(server: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page::status_page))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/server", get(api::get_server))
        .route("/api/v1/server/state", post(api::set_state))
        .route("/api/v1/server/restart", post(api::restart))
        .route("/api/v1/config", get(api::get_config))
        .route("/api/v1/config/reload", post(api::reload_config))
        .route("/api/v1/errors", get(api::errors))
        .route("/api/v1/debug/fault", post(faults::fault))
        .route("/api/v1/paths", get(api::list_paths))
        .route("/api/v1/paths/{*name}", get(api::get_path))
        .route("/api/v1/sessions", get(api::list_sessions))
        .route(
            "/api/v1/sessions/{id}",
            axum::routing::delete(api::kick_session),
        )
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(axum::middleware::from_fn_with_state(
            server.clone(),
            authorize,
        ))
        .with_state(server)
}

/// Every endpoint but /healthz and /metrics needs the admin token when one is configured.
async fn authorize(
    State(s): State<Arc<Shared>>,
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

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
