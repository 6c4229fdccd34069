//! The admin API and metrics against a live server with real publishers and readers.

use crate::harness::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn post(f: &Finch, path: &str, body: &str) -> (u16, Value) {
    let (s, b) = http(f.admin_port, "POST", path, body).unwrap();
    (s, serde_json::from_str(&b).unwrap_or(Value::Null))
}

/// A publisher written by hand, so the bytes it sends are known exactly.
struct RawPublisher {
    raw: Raw,
    seq: u16,
    sent: u64,
}

impl RawPublisher {
    fn start(f: &Finch, path: &str) -> RawPublisher {
        let tcp = "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record";
        let (raw, _) = raw_publish(f, path, H264_SDP, tcp);
        RawPublisher {
            raw,
            seq: 0,
            sent: 0,
        }
    }

    /// Sends one RTP packet of `len` payload bytes (an IDR slice if `key`).
    fn send(&mut self, len: usize, key: bool) {
        self.seq = self.seq.wrapping_add(1);
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(self.seq) * 3600).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 7]);
        p.push(if key { 0x65 } else { 0x41 });
        p.resize(12 + len, 0xab);
        let mut frame = vec![b'$', 0];
        frame.extend_from_slice(&(p.len() as u16).to_be_bytes());
        frame.extend_from_slice(&p);
        self.raw.send(&frame);
        self.sent += p.len() as u64;
    }
}

/// A reader written by hand, playing track 0 over TCP.
fn raw_reader(f: &Finch, path: &str) -> (Raw, String) {
    let mut raw = Raw::connect(f.rtsp_port);
    let id = raw.play_tcp(&f.url(path));
    (raw, id)
}

/// Reads interleaved frames for `dur` and returns their payload bytes.
fn count_frames(raw: &mut Raw, dur: Duration) -> u64 {
    read_interleaved(raw, dur)
        .iter()
        .map(|(_, p)| p.len() as u64)
        .sum()
}

#[test]
fn path_figures_are_true() {
    let f = Finch::start("figures", "");
    let mut publisher = RawPublisher::start(&f, "live/raw");
    let (mut r1, _) = raw_reader(&f, "live/raw");
    let (mut r2, _) = raw_reader(&f, "live/raw");
    let (_, p) = f.api("/api/v1/paths/live/raw");
    assert_eq!(p["reader_count"], 2, "{p}");
    assert_eq!(p["readers"].as_array().unwrap().len(), 2);
    assert_eq!(p["source"]["kind"], "publisher");
    assert_eq!(p["source"]["transport"], "tcp");
    assert_eq!(p["tracks"][0]["codec"], "H264");
    assert_eq!(p["tracks"][0]["clock_rate"], 90000);
    publisher.send(1000, true);
    for _ in 0..199 {
        publisher.send(1000, false);
    }
    let got1 = count_frames(&mut r1, Duration::from_secs(2));
    let got2 = count_frames(&mut r2, Duration::from_secs(1));
    assert_eq!(got1, publisher.sent);
    assert_eq!(got2, publisher.sent);
    let (_, p) = f.api("/api/v1/paths/live/raw");
    assert_eq!(p["bytes_in"].as_u64(), Some(publisher.sent), "{p}");
    assert_eq!(p["bytes_out"].as_u64(), Some(2 * publisher.sent), "{p}");
    let metrics = http(f.admin_port, "GET", "/metrics", "").unwrap().1;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(
        value("finch_rtp_bytes_total{direction=\"in\"}") as u64,
        publisher.sent
    );
    assert_eq!(
        value("finch_rtp_packets_total{direction=\"in\"}") as u64,
        200
    );
    assert_eq!(value("finch_readers{transport=\"tcp\"}") as u64, 2);
    assert_eq!(value("finch_sessions{role=\"publisher\"}") as u64, 1);
    assert_eq!(value("finch_paths") as u64, 1);
    assert_eq!(value("finch_server_state{state=\"running\"}") as u64, 1);
    assert!(value("finch_rtsp_request_duration_seconds_count{method=\"SETUP\"}") >= 3.0);
    assert!(metrics.contains("finch_build_info{version="), "{metrics}");
    assert!(
        metrics.contains("finch_errors_total{verbosity=\"fatal\"}"),
        "{metrics}"
    );
}

#[test]
fn kicking_a_session_ends_it() {
    let f = Finch::start("kick", "");
    let _publisher = RawPublisher::start(&f, "live/k");
    let (mut reader, id) = raw_reader(&f, "live/k");
    let (_, sessions) = f.api("/api/v1/sessions");
    assert!(sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == id.as_str() && s["role"] == "reader"));
    let (status, _) = http(
        f.admin_port,
        "DELETE",
        &format!("/api/v1/sessions/{id}"),
        "",
    )
    .unwrap();
    assert_eq!(status, 204);
    let kicked = std::time::Instant::now();
    assert!(reader.closed_within(Duration::from_secs(5)));
    eprintln!("kicked session closed after {:?}", kicked.elapsed());
    let (status, body) = http(f.admin_port, "DELETE", "/api/v1/sessions/NOPE", "").unwrap();
    assert_eq!(status, 404);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
}

#[test]
fn refusing_connections_answers_503_and_keeps_sessions_and_idle_kills_them() {
    let f = Finch::start("states", "");
    let mut publisher = RawPublisher::start(&f, "live/s");
    let (mut reader, _) = raw_reader(&f, "live/s");
    let (status, s) = post(
        &f,
        "/api/v1/server/state",
        r#"{"state": "refusing_connections"}"#,
    );
    assert_eq!(
        (status, s["state"].as_str()),
        (200, Some("refusing_connections"))
    );
    assert_eq!(http(f.admin_port, "GET", "/healthz", "").unwrap().0, 503);
    let mut refused = Raw::connect(f.rtsp_port);
    assert_eq!(refused.request("OPTIONS", "*", 9, &[], "").status, 503);
    // The existing reader still gets media.
    publisher.send(500, true);
    assert_eq!(count_frames(&mut reader, Duration::from_millis(500)), 512);
    let (status, _) = post(&f, "/api/v1/server/state", r#"{"state": "idle"}"#);
    assert_eq!(status, 200);
    assert!(
        reader.closed_within(Duration::from_secs(2)),
        "idle did not kill the reader"
    );
    assert_eq!(
        f.api("/api/v1/paths").1["items"].as_array().unwrap().len(),
        0
    );
    let (status, _) = post(&f, "/api/v1/server/state", r#"{"state": "running"}"#);
    assert_eq!(status, 200);
    let mut again = Raw::connect(f.rtsp_port);
    assert_eq!(again.request("OPTIONS", "*", 1, &[], "").status, 200);
    let (status, e) = post(&f, "/api/v1/server/state", r#"{"state": "fatal_error"}"#);
    assert_eq!(status, 400);
    assert!(e["error"].is_string());
    // In --foreground there is no supervisor to restart the worker.
    assert_eq!(post(&f, "/api/v1/server/restart", "").0, 409);
}

/// A minimal check of a JSON value against an OpenAPI schema: types, required properties,
/// enums, nested objects and arrays, `$ref`s.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            &doc["components"]["schemas"][name]
        }
        None => schema,
    };
    if v.is_null() {
        assert!(
            schema["nullable"] == true,
            "{at}: null where {schema} allows none"
        );
        return;
    }
    match schema["type"].as_str() {
        Some("object") => {
            let o = v
                .as_object()
                .unwrap_or_else(|| panic!("{at}: not an object: {v}"));
            for req in schema["required"].as_array().into_iter().flatten() {
                let k = req.as_str().unwrap();
                assert!(o.contains_key(k), "{at}: missing {k} in {v}");
            }
            if let Some(props) = schema["properties"].as_object() {
                for (k, s) in props {
                    if let Some(x) = o.get(k) {
                        check(doc, s, x, &format!("{at}.{k}"));
                    }
                }
            }
        }
        Some("array") => {
            for (i, x) in v
                .as_array()
                .unwrap_or_else(|| panic!("{at}: not an array"))
                .iter()
                .enumerate()
            {
                check(doc, &schema["items"], x, &format!("{at}[{i}]"));
            }
        }
        Some("string") => {
            let s = v
                .as_str()
                .unwrap_or_else(|| panic!("{at}: not a string: {v}"));
            if let Some(e) = schema["enum"].as_array() {
                assert!(e.iter().any(|x| x == s), "{at}: {s} not in {e:?}");
            }
        }
        Some("integer") => assert!(v.is_u64() || v.is_i64(), "{at}: not an integer: {v}"),
        Some("boolean") => assert!(v.is_boolean(), "{at}: not a boolean: {v}"),
        _ => {}
    }
}

#[test]
fn live_responses_match_the_openapi_document() {
    let f = Finch::start_supervised("openapi", "");
    let _publisher = RawPublisher::start(&f, "live/o");
    let (_reader, _) = raw_reader(&f, "live/o");
    let (status, doc) = f.api("/api/v1/openapi.json");
    assert_eq!(status, 200);
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(get) = item.get("get") else { continue };
        let url = path.replace("{name}", "live/o");
        let (status, body) = http(f.admin_port, "GET", &url, "").unwrap();
        let documented = &get["responses"][status.to_string()];
        assert!(
            !documented.is_null(),
            "GET {url} answered {status}, not documented"
        );
        let content = &documented["content"];
        if let Some(schema) = content.get("application/json").map(|c| &c["schema"]) {
            let v: Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: {e}: {body}"));
            check(&doc, schema, &v, &url);
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} GET endpoints checked");
    // Error shapes.
    let (status, body) = http(f.admin_port, "GET", "/api/v1/paths/live/none", "").unwrap();
    assert_eq!(status, 404);
    check(
        &doc,
        &doc["components"]["schemas"]["Error"],
        &serde_json::from_str(&body).unwrap(),
        "404",
    );
    let (status, body) = http(f.admin_port, "GET", "/api/v1/nothing", "").unwrap();
    assert_eq!(status, 404);
    assert!(body.contains("\"error\""));
}

#[test]
fn the_admin_token_guards_everything_but_health_and_metrics() {
    let f = Finch::start("token", "[admin]\ntoken = \"s3cret\"\n");
    let get = |path: &str, auth: Option<&str>| -> u16 {
        let mut s = TcpStream::connect(("127.0.0.1", f.admin_port)).unwrap();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let port = f.admin_port;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{auth}\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(get("/healthz", None), 200);
    assert_eq!(get("/metrics", None), 200);
    assert_eq!(get("/api/v1/server", None), 401);
    assert_eq!(get("/api/v1/server", Some("Bearer wrong")), 401);
    assert_eq!(get("/api/v1/server", Some("Bearer s3cret")), 200);
    // admin:s3cret
    assert_eq!(get("/api/v1/server", Some("Basic YWRtaW46czNjcmV0")), 200);
    assert_eq!(get("/", None), 401);
    let mut s = TcpStream::connect(("127.0.0.1", f.admin_port)).unwrap();
    write!(
        s,
        "GET /api/v1/config HTTP/1.0\r\nAuthorization: Bearer s3cret\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.contains("<redacted>") && !resp.contains("s3cret"),
        "{resp}"
    );
    // Wrong tokens are limited like RTSP logins (fail_limit 10, one wrong one above): then even
    // the right one is refused from this address for the window.
    for _ in 0..9 {
        assert_eq!(get("/api/v1/server", Some("Bearer guess")), 401);
    }
    assert_eq!(get("/api/v1/server", Some("Bearer s3cret")), 403);
}

/// A raw HTTP/1.0 request with the given header lines; the status.
fn raw_http(port: u16, head: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "{head}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_web_page_cannot_drive_or_read_the_admin_api() {
    let f = Finch::start("browser", "");
    let p = f.admin_port;
    let host = format!("Host: 127.0.0.1:{p}");
    // CSRF: a page on another site POSTs a restart or a reload.
    let evil = "Origin: http://evil.example";
    assert_eq!(
        raw_http(
            p,
            &format!("POST /api/v1/config/reload HTTP/1.0\r\n{host}\r\n{evil}")
        ),
        403
    );
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=b",
    ] {
        let req = format!("POST /api/v1/server/state HTTP/1.0\r\n{host}\r\nContent-Type: {ct}\r\nContent-Length: 2\r\n\r\n{{}}");
        assert_eq!(raw_http(p, req.trim_end()), 403, "{ct}");
    }
    // DNS rebinding: the page's own name, resolving to 127.0.0.1.
    assert_eq!(
        raw_http(p, "GET /api/v1/config HTTP/1.0\r\nHost: evil.example"),
        403
    );
    assert_eq!(
        raw_http(
            p,
            &format!("GET /api/v1/config HTTP/1.0\r\nHost: evil.example:{p}")
        ),
        403
    );
    // Scripts and the admin's own page go through.
    assert_eq!(
        raw_http(p, &format!("POST /api/v1/config/reload HTTP/1.0\r\n{host}")),
        200,
        "an empty POST with no Content-Type"
    );
    assert_eq!(raw_http(p, &format!("GET /api/v1/server HTTP/1.0\r\nHost: localhost:{p}\r\nOrigin: http://localhost:{p}")), 200);
    assert_eq!(http(p, "GET", "/api/v1/server", "").unwrap().0, 200);
}

#[test]
fn a_non_loopback_admin_listener_without_a_token_is_refused() {
    let dir = temp_dir("admin-open");
    let file = dir.join("f.toml");
    std::fs::write(&file, "[admin]\nlisten = \"0.0.0.0:18080\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_finch"))
        .arg("--check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":2:1: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
