//! Abuse, bounded in count and time, against the real binary while a publisher and a reader go
//! on: hundreds of connections sending garbage, half requests, slow bytes and huge frames,
//! 10,000 made-up methods, ANNOUNCEs on 1,000 paths and wrong passwords, all from 127.0.0.2 and
//! up, so the legitimate clients on 127.0.0.1 are not caught by the login limit. The reader
//! must keep getting frames, memory must stay bounded, and a fresh DESCRIBE with the right
//! credentials must be served.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const USERS: &str = r#"
[[auth.users]]
user = "cam"
pass = "campass"
permissions = [{ action = "publish", path = "live/cam" }]

[[auth.users]]
user = "viewer"
pass = "viewpass"
permissions = [{ action = "read" }]

[[auth.users]]
user = "any"
pass = ""
permissions = [{ action = "publish", path = "squat/**" }]

[limits]
request_timeout_secs = 3
first_request_timeout_secs = 3
"#;

/// A connection from 127.0.0.`n` (2 and up), or `None` if the server refused it outright.
fn attacker(n: u8, port: u16) -> Option<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&SocketAddr::from(([127, 0, 0, n], 0)).into())
        .ok()?;
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .ok()?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(s)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Reads what the server sends until it closes or goes quiet; ignores errors.
fn drain(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

#[test]
fn abuse_from_many_connections_leaves_a_reader_playing_and_memory_bounded() {
    let f = Finch::start("abuse", USERS);
    let port = f.rtsp_port;
    let _p = Publisher::start(
        &format!("rtsp://cam:campass@127.0.0.1:{port}/live/cam"),
        "tcp",
    );
    f.wait_path_ready("live/cam");
    let mut reader = Raw::connect(port);
    let auth = {
        use base64::Engine as _;
        format!(
            "Authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode("viewer:viewpass")
        )
    };
    let r = reader.request(
        "SETUP",
        &f.url("live/cam/trackID=0"),
        1,
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", &auth],
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let session = format!("Session: {}", r.session_id());
    assert_eq!(
        reader
            .request("PLAY", &f.url("live/cam"), 2, &[&session], "")
            .status,
        200
    );
    let before = read_rtp_seqs(&mut reader, 0, Duration::from_secs(1)).len();
    assert!(before > 10, "{before}");
    let rss_before = rss_kib(f.pid());
    let started = Instant::now();
    let mut connections = 0u32;
    let mut inputs = 0u64;
    // 1. Garbage, half requests, huge frames and slow bytes, from 200 connections.
    let mut slow = Vec::new();
    for i in 0..200u32 {
        let n = 2 + (i % 50) as u8;
        let Some(mut s) = attacker(n, port) else {
            continue;
        };
        connections += 1;
        let payload: Vec<u8> = match i % 4 {
            0 => (0..4096u32).map(|b| (b * 31 + i) as u8).collect(),
            1 => b"DESCRIBE rtsp://127.0.0.1/live/cam RTSP/1.0\r\nCSeq: 1\r\nX: ".to_vec(),
            2 => {
                let mut v = b"$\x00\xff\xff".to_vec();
                v.extend(std::iter::repeat_n(0u8, 8192));
                v
            }
            _ => b"OPT".to_vec(),
        };
        let _ = s.write_all(&payload);
        inputs += 1;
        if i % 4 == 3 {
            slow.push(s);
        }
    }
    // The slow ones keep dribbling until the request timeout cuts them.
    for _ in 0..3 {
        for s in slow.iter_mut() {
            let _ = s.write_all(b"I");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // 2. 10,000 made-up methods on 10 connections.
    for c in 0..10u32 {
        let Some(mut s) = attacker(60 + c as u8, port) else {
            continue;
        };
        connections += 1;
        let mut batch = String::new();
        for i in 0..1000u32 {
            batch.push_str(&format!("M{c}X{i} * RTSP/1.0\r\nCSeq: {i}\r\n\r\n"));
        }
        let _ = s.write_all(batch.as_bytes());
        inputs += 1000;
        let _ = s.shutdown(std::net::Shutdown::Write);
        drain(&mut s);
    }
    // 3. ANNOUNCEs on 1,000 paths (the anonymous user may publish under squat/), never
    //    recorded: each connection holds one session, and its path goes when it does.
    let sdp = H264_SDP;
    for i in 0..1000u32 {
        let Some(mut s) = attacker(80 + (i % 50) as u8, port) else {
            continue;
        };
        connections += 1;
        let req = format!(
            "ANNOUNCE rtsp://127.0.0.1:{port}/squat/{i} RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        let _ = s.write_all(req.as_bytes());
        inputs += 1;
        let _ = s.shutdown(std::net::Shutdown::Write);
        drain(&mut s);
    }
    // 4. Wrong passwords, 200 of them, from 127.0.0.200 and up.
    for i in 0..200u32 {
        let Some(mut s) = attacker(200 + (i % 50) as u8, port) else {
            continue;
        };
        connections += 1;
        let b = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(format!("viewer:guess{i}"))
        };
        let _ = write!(
            s,
            "DESCRIBE rtsp://127.0.0.1:{port}/live/cam RTSP/1.0\r\nCSeq: 1\r\nAuthorization: Basic {b}\r\n\r\n"
        );
        inputs += 1;
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
    }
    drop(slow);
    let took = started.elapsed();
    // The reader kept getting frames, and a fresh reader with the right credentials is served.
    let after = read_rtp_seqs(&mut reader, 0, Duration::from_secs(2)).len();
    assert!(
        after > 20,
        "the reader starved: {after} packets in 2 s\n{}",
        f.log()
    );
    let mut fresh = Raw::connect(port);
    let r = fresh.request("DESCRIBE", &f.url("live/cam"), 1, &[&auth], "");
    assert_eq!(r.status, 200, "{r:?}");
    // Memory: a few MB above where it started, not the sum of what was thrown at it.
    let rss_after = rss_kib(f.pid());
    eprintln!(
        "abuse: {connections} connections, {inputs} inputs in {took:?}; RSS {rss_before} KiB before, {rss_after} KiB after"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    let metrics = http(f.admin_port, "GET", "/metrics", "").unwrap().1;
    assert!(
        metrics.contains("finch_auth_failures_total{reason=\"wrong_credentials\"}"),
        "{metrics}"
    );
    assert!(
        metrics.len() < 64 * 1024,
        "the metrics grew to {} bytes",
        metrics.len()
    );
}
