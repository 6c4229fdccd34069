//! The admin HTTP server (CONTRACT.md "Admin HTTP API"): JSON over axum on the admin listener,
//! Prometheus metrics and a status page.
//!
//! Layout: this module routes; `guard` checks every request (browser safety, the admin
//! token); `api` has the JSON endpoints,
//! `faults` fault injection, `page` the status page. Handlers read the [`Shared`] state; they
//! never block on a stream or a connection. Errors are `{"error": "message"}` with a 4xx/5xx
//! status, built in one place ([`ApiError`]).

mod api;
mod faults;
mod guard;
mod page;

use crate::shared::Shared;
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
        .route("/api/v1/cluster", get(api::cluster))
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
            guard::guard,
        ))
        .with_state(server)
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
