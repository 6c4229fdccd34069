//! Fault injection (`POST /api/v1/debug/fault`, only with `debug.fault_injection`): the
//! failures the supervisor and the tests must see handled, caused on purpose.

use super::ApiError;
use crate::shared::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(serde::Deserialize)]
pub(super) struct FaultBody {
    kind: String,
}

pub(super) async fn fault(
    State(s): State<Arc<Shared>>,
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
            // Inside the newest RTSP connection's own task, with whatever it holds (a path, a
            // reader, UDP routes): its guards must give all of it back as the panic unwinds.
            let latest = s
                .faults
                .latest_conn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match latest {
                Some(t) if !t.is_cancelled() => t.cancel(),
                _ => {
                    return Err(ApiError(
                        StatusCode::CONFLICT,
                        "no RTSP connection to panic in".into(),
                    ))
                }
            }
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
