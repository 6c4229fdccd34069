//! What every admin request passes before a handler sees it (CONTRACT.md "Browser safety" and
//! the admin token).
//!
//! A web page the operator happens to open must not drive the API: a request whose `Origin`
//! is not the admin's own, a POST with a form or `text/plain` body (which a page may send
//! cross-origin without asking), or a `Host` outside `admin.allowed_hosts` (DNS rebinding) gets
//! 403. Scripts and curl send no `Origin` and either no `Content-Type` or JSON, so they pass.
//! Then, with `admin.token` set, every endpoint but `/healthz` and `/metrics` needs it;
//! wrong tokens from one address are limited like RTSP logins.

use super::ApiError;
use crate::shared::Shared;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use finch_config::AdminConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) async fn guard(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let config = s.config();
    if let Err(why) = browser_safe(&config.admin, req.method(), req.headers()) {
        tracing::debug!(why, "admin request refused");
        return ApiError(StatusCode::FORBIDDEN, why.to_owned()).into_response();
    }
    let open = matches!(req.uri().path(), "/healthz" | "/metrics");
    if open || !config.admin.requires_token() {
        return next.run(req).await;
    }
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_canonical());
    let limit = config.auth.fail_limit;
    let window = Duration::from_secs(config.auth.fail_window_secs);
    let now = Instant::now();
    let blocked = ip.is_some_and(|ip| {
        s.admin_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .blocked(ip, now, limit, window)
    });
    if blocked {
        s.metrics.auth_failure("blocked");
        return ApiError(
            StatusCode::FORBIDDEN,
            "too many wrong tokens from this address".into(),
        )
        .into_response();
    }
    let given = token(req.headers());
    if given.as_ref().is_some_and(|g| {
        finch_proto::auth::constant_time_eq(g.as_bytes(), config.admin.token.as_bytes())
    }) {
        return next.run(req).await;
    }
    if given.is_some() {
        s.metrics.auth_failure("wrong_credentials");
        if let Some(ip) = ip {
            use crate::auth::failures::Failed;
            let mut f = s.admin_failures.lock().unwrap_or_else(|e| e.into_inner());
            if f.fail(ip, now, limit, window) == Failed::NowBlocked {
                tracing::warn!(peer = %ip, "too many wrong admin tokens from this address; refusing it for the window");
            }
        }
    }
    let mut resp = ApiError(
        StatusCode::UNAUTHORIZED,
        "this endpoint needs the admin token".into(),
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Basic realm=\"finch\""),
    );
    resp
}

/// The token a request carries: `Bearer <token>`, or Basic with it as the password.
fn token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(t) = v.strip_prefix("Bearer ") {
        return Some(t.trim().to_owned());
    }
    match finch_proto::auth::parse_authorization(v).ok()? {
        finch_proto::auth::Credentials::Basic { pass, .. } => Some(pass),
        finch_proto::auth::Credentials::Digest(_) => None,
    }
}

/// The `Host` values the API answers.
fn allowed_hosts(admin: &AdminConfig) -> Option<Vec<String>> {
    if !admin.allowed_hosts.is_empty() {
        return Some(
            admin
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        );
    }
    let listen: SocketAddr = admin.listen.parse().ok()?;
    if listen.ip().is_unspecified() {
        // A wildcard address has no one name: any Host, and the token guards the API.
        return None;
    }
    let port = listen.port();
    Some(vec![
        listen.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ])
}

fn host_allowed(allowed: &Option<Vec<String>>, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    match allowed {
        None => true,
        Some(list) => list.iter().any(|a| {
            // An entry without a port allows that name on any port.
            *a == host || (!a.contains(':') || a.ends_with(']')) && host_name(&host) == a
        }),
    }
}

/// `name` of `name:port` (`[v6]` kept bracketed).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Refuses what a browser on another site could send. `Err` says why.
pub(super) fn browser_safe(
    admin: &AdminConfig,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    let allowed = allowed_hosts(admin);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(host) = host {
        if !host_allowed(&allowed, host) {
            return Err("this Host is not one the admin API answers (admin.allowed_hosts)");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        // The admin's own origin: the host it was reached at, and one it answers.
        let own = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| authority.trim_end_matches('/'))
            .is_some_and(|authority| {
                host.is_some_and(|h| h.eq_ignore_ascii_case(authority))
                    && host_allowed(&allowed, authority)
            });
        if !own {
            return Err("a request from another origin");
        }
    }
    if method == Method::POST {
        if let Some(ct) = headers.get(header::CONTENT_TYPE) {
            let media = ct
                .to_str()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if matches!(
                media.as_str(),
                "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
            ) {
                return Err("a POST with a form or text/plain body (as a web page would send)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn pages_from_elsewhere_are_refused_and_scripts_are_not() {
        let admin = AdminConfig::default(); // 127.0.0.1:8080
        let ok =
            |m: &Method, h: &[(header::HeaderName, &str)]| browser_safe(&admin, m, &headers(h));
        assert!(
            ok(&Method::POST, &[]).is_ok(),
            "an empty POST without Content-Type"
        );
        assert!(ok(&Method::GET, &[(header::HOST, "127.0.0.1:8080")]).is_ok());
        assert!(ok(&Method::GET, &[(header::HOST, "localhost:8080")]).is_ok());
        assert!(ok(&Method::GET, &[(header::HOST, "[::1]:8080")]).is_ok());
        assert!(
            ok(&Method::GET, &[(header::HOST, "evil.example:8080")]).is_err(),
            "rebinding"
        );
        assert!(ok(&Method::GET, &[(header::HOST, "127.0.0.1:9999")]).is_err());
        let page = [
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://evil.example"),
        ];
        assert!(ok(&Method::POST, &page).is_err(), "CSRF");
        let own = [
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
        ];
        assert!(ok(&Method::POST, &own).is_ok(), "the status page itself");
        for ct in [
            "application/x-www-form-urlencoded",
            "text/plain; charset=utf-8",
            "multipart/form-data; boundary=x",
        ] {
            assert!(
                ok(&Method::POST, &[(header::CONTENT_TYPE, ct)]).is_err(),
                "{ct}"
            );
        }
        assert!(ok(&Method::POST, &[(header::CONTENT_TYPE, "application/json")]).is_ok());
    }

    #[test]
    fn allowed_hosts_and_wildcards() {
        let admin = AdminConfig {
            allowed_hosts: vec!["finch.lan".into()],
            ..AdminConfig::default()
        };
        let h = |host: &str| browser_safe(&admin, &Method::GET, &headers(&[(header::HOST, host)]));
        assert!(h("finch.lan:8080").is_ok());
        assert!(h("FINCH.lan").is_ok());
        assert!(
            h("127.0.0.1:8080").is_err(),
            "the list replaces the defaults"
        );
        let wild = AdminConfig {
            listen: "0.0.0.0:8080".into(),
            token: "a-long-enough-token".into(),
            ..AdminConfig::default()
        };
        assert!(browser_safe(
            &wild,
            &Method::GET,
            &headers(&[(header::HOST, "any.name:8080")])
        )
        .is_ok());
    }
}
