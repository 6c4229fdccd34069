//! The HLS listener's requests: `/{path}/index.m3u8` (blocking reloads with `_HLS_msn` and
//! `_HLS_part`), `/{path}/init.mp4`, `/{path}/seg{n}.m4s`, `/{path}/part{n}.{i}.m4s` (the
//! preload-hinted part blocks until it is there), `/{path}/` (the player page; without the
//! slash, 301 to it), and the vendored hls.js. Every wait is bounded; `read` permission with
//! HTTP Basic auth; CORS for players on other origins (preflights need no auth).

use super::listen::{Limited, Peer, TlsListener};
use super::{page, Muxing};
use crate::auth::{Action, Ask, Decision, Reason};
use crate::shared::Shared;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use finch_hls::playlist::{parse_block, parse_file, File};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Serves HLS on `l` (over TLS when `hls.tls`) until `stop`.
pub(crate) fn serve_on(
    l: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
) -> impl std::future::Future<Output = std::io::Result<()>> {
    let tls = shared.config().hls.tls;
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(shared.clone());
    let stopped = stop.clone();
    async move {
        if tls {
            let l = Limited::new(TlsListener::new(l, shared.clone(), stop), shared);
            axum::serve(l, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        } else {
            let l = Limited::new(l, shared);
            axum::serve(l, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
        }
    }
}

/// Where the vendored hls.js is served.
pub(super) const HLS_JS: &str = "/_finch/hls.light.min.js";

/// How long a request waits for a path's first playlist or init segment: a GOP must pass.
const FIRST_WAIT: Duration = Duration::from_secs(15);

fn respond(status: StatusCode, content_type: &str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn error(status: StatusCode, why: &str) -> Response {
    let mut r = respond(status, "text/plain; charset=utf-8", format!("{why}\n"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// CORS (Fetch standard): any origin may play; with credentials the origin is echoed, since
/// `*` does not cover them.
fn cors(r: &mut Response, headers: &HeaderMap) {
    let h = r.headers_mut();
    match headers.get(header::ORIGIN) {
        Some(origin) if headers.contains_key(header::AUTHORIZATION) => {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        _ => {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
    }
}

/// What a request names.
enum Want {
    Page,
    Playlist,
    Media(File),
    /// `…/cam1` without its slash.
    Redirect,
}

async fn handle(
    State(s): State<Arc<Shared>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut r = serve(&s, peer, &method, &uri, &headers).await;
    cors(&mut r, &headers);
    if method == Method::HEAD {
        *r.body_mut() = Body::empty();
    }
    r
}

async fn serve(
    s: &Arc<Shared>,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    if *method == Method::OPTIONS {
        // A preflight: no auth (browsers send none), just what may follow.
        let mut r = respond(StatusCode::NO_CONTENT, "text/plain", Body::empty());
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Range, Content-Type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return r;
    }
    if *method != Method::GET && *method != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "GET only");
    }
    let full = uri.path();
    if full == HLS_JS {
        let mut r = respond(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            page::HLS_JS_SOURCE,
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=86400"),
        );
        return r;
    }
    let trimmed = full.trim_start_matches('/');
    if trimmed.len() > 1024 || trimmed.contains("..") {
        return error(StatusCode::BAD_REQUEST, "bad path");
    }
    let (name, want) = match trimmed.rsplit_once('/') {
        Some((dir, "")) => (dir, Want::Page),
        Some((dir, "index.m3u8")) => (dir, Want::Playlist),
        Some((dir, f)) => match parse_file(f) {
            Some(file) => (dir, Want::Media(file)),
            None => (trimmed, Want::Redirect),
        },
        None => (trimmed, Want::Redirect),
    };
    if name.is_empty() {
        return error(StatusCode::NOT_FOUND, "no path");
    }
    if let Err(r) = authorize(s, peer, headers, name, uri) {
        return *r;
    }
    s.hls.saw(peer.ip());
    let stream = match find_stream(s, name).await {
        Ok(st) => st,
        Err(r) => return *r,
    };
    if let Want::Redirect = want {
        let mut r = error(StatusCode::MOVED_PERMANENTLY, "moved");
        if let Ok(v) = HeaderValue::from_str(&format!("/{name}/")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    if let Want::Page = want {
        s.metrics.hls_request("page");
        return respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page::player(name),
        );
    }
    let m = match s.hls.muxing(s, name, stream) {
        Ok(m) => m,
        Err(e) => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("cannot serve {name} over HLS: {e}"),
            )
        }
    };
    match want {
        Want::Playlist => playlist(s, &m, uri.query()).await,
        Want::Media(file) => media(s, &m, file).await,
        Want::Page | Want::Redirect => error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn authorize(
    s: &Arc<Shared>,
    peer: SocketAddr,
    headers: &HeaderMap,
    path: &str,
    uri: &Uri,
) -> Result<(), Box<Response>> {
    let uri = uri.to_string();
    let ask = Ask {
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        method: "GET",
        uri: &uri,
        peer: peer.ip(),
        // Browsers speak Basic here; it is offered whatever rtsp's basic_over_plain says.
        tls: true,
        action: Action::Read,
        path,
    };
    match s.auth.decide(&ask) {
        Decision::Allow(_) => Ok(()),
        Decision::Challenge(reason, _) => {
            if reason != Reason::Missing {
                s.metrics.auth_failure(reason.as_str());
            }
            let mut r = error(StatusCode::UNAUTHORIZED, "credentials needed");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"finch\", charset=\"UTF-8\""),
            );
            Err(Box::new(r))
        }
        Decision::Forbid(reason) => {
            s.metrics.auth_failure(reason.as_str());
            Err(Box::new(error(StatusCode::FORBIDDEN, "not permitted")))
        }
    }
}

/// The live stream of `name`: here, from an on-demand camera, or from another node, as a
/// DESCRIBE would find it; 404 if nobody has it, 503 if its source does not come in time.
async fn find_stream(
    s: &Arc<Shared>,
    name: &str,
) -> Result<Arc<finch_relay::Stream>, Box<Response>> {
    if let Some(st) = s.registry.live_stream(name) {
        return Ok(st);
    }
    let wait = if s.pulls.demand(name) {
        s.pulls
            .start_timeout(name)
            .unwrap_or(Duration::from_secs(10))
    } else if let Some(c) = &s.cluster {
        match c.locate(name).await {
            Some(url) => {
                s.pulls.add_cluster(s, name, url);
                s.pulls
                    .start_timeout(name)
                    .unwrap_or(Duration::from_secs(10))
            }
            None => return Err(Box::new(error(StatusCode::NOT_FOUND, "no such path"))),
        }
    } else {
        return Err(Box::new(error(StatusCode::NOT_FOUND, "no such path")));
    };
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(st) = s.registry.live_stream(name) {
            return Ok(st);
        }
    }
    Err(Box::new(error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the path's source did not come in time",
    )))
}

async fn playlist(s: &Arc<Shared>, m: &Muxing, query: Option<&str>) -> Response {
    let block = match parse_block(query) {
        Ok(b) => b,
        Err(why) => {
            s.metrics.hls_refused("bad_parameter");
            return error(StatusCode::BAD_REQUEST, why);
        }
    };
    let text = match block {
        None => {
            s.metrics.hls_request("playlist");
            m.wait_for(FIRST_WAIT, |x| x.playlist()).await
        }
        Some(b) => {
            s.metrics.hls_request("blocking_playlist");
            let (last, target) = {
                let x = m.lock();
                (x.segments().last().map(|s| s.msn), x.target_duration())
            };
            // RFC 8216bis §6.2.5.2: more than two segments ahead of the playlist is an error.
            if last.is_some_and(|l| b.msn > l + 2) {
                s.metrics.hls_refused("bad_parameter");
                return error(StatusCode::BAD_REQUEST, "_HLS_msn is too far ahead");
            }
            // Three target durations, as the RFC suggests, then 503.
            let limit = Duration::from_secs(u64::from(target.unwrap_or(5)) * 3);
            let got = m
                .wait_for(limit, |x| {
                    if x.has(b.msn, b.part) {
                        x.playlist()
                    } else {
                        None
                    }
                })
                .await;
            if got.is_none() {
                s.metrics.hls_refused("blocking_timeout");
            }
            got
        }
    };
    match text {
        Some(t) => {
            s.metrics.hls_sent(t.len());
            let mut r = respond(StatusCode::OK, "application/vnd.apple.mpegurl", t);
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the playlist is not ready yet",
        ),
    }
}

async fn media(s: &Arc<Shared>, m: &Muxing, file: File) -> Response {
    let (found, kind, cache) = match file {
        File::Init => (
            m.wait_for(FIRST_WAIT, |x| x.init().cloned()).await,
            "init",
            "max-age=30",
        ),
        File::Segment(msn) => (
            m.lock().segment(msn),
            "segment",
            "public, max-age=3600, immutable",
        ),
        File::Part(msn, i) => {
            let (now, hinted) = {
                let x = m.lock();
                (x.part(msn, i), x.next_part() == Some((msn, i)))
            };
            let got = match now {
                Some(p) => Some(p),
                // The preload hint: held until the part is complete (a few part targets).
                None if hinted => {
                    let limit = m.lock().part_target() * 5 + Duration::from_secs(1);
                    m.wait_for(limit, |x| x.part(msn, i)).await
                }
                None => None,
            };
            (got, "part", "public, max-age=3600, immutable")
        }
    };
    s.metrics.hls_request(kind);
    match found {
        Some(bytes) => {
            s.metrics.hls_sent(bytes.len());
            let ct = if file == File::Init {
                "video/mp4"
            } else {
                "video/iso.segment"
            };
            let mut r = respond(StatusCode::OK, ct, bytes);
            if let Ok(v) = HeaderValue::from_str(cache) {
                r.headers_mut().insert(header::CACHE_CONTROL, v);
            }
            r
        }
        None => error(StatusCode::NOT_FOUND, "no such segment or part (any more)"),
    }
}
