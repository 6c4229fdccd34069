//! Low-Latency HLS with real players: ffprobe and ffmpeg read the playlist of an H.264+AAC
//! path and of an H.265 one; the HTTP side (redirects, content types, caching, CORS, blocking
//! reloads, bad parameters, auth) answers as CONTRACT.md says; a thousand held reloads and a
//! reader that never reads leave the publisher and RTSP readers alone.

use crate::harness::*;
use crate::raw::Raw;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn hls_url(f: &Finch, path: &str) -> String {
    format!("http://127.0.0.1:{}/{path}/index.m3u8", f.hls_port)
}

/// A GET on the HLS listener with extra header lines: status, headers (lower-cased names),
/// body.
fn get(f: &Finch, target: &str, extra: &[&str]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    request(f, "GET", target, extra)
}

fn request(
    f: &Finch,
    method: &str,
    target: &str,
    extra: &[&str],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", f.hls_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // Chunked bodies are not decoded: these tests read fixed-length ones.
    (status, headers, body)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Video frames ffmpeg decodes from `url` (an HLS playlist) over `secs` of media.
fn hls_frames(url: &str, secs: u32) -> u64 {
    ffmpeg_frames(&["-i", url], secs)
}

fn hls_probe(url: &str) -> Vec<String> {
    ffprobe_input(&[url])
}

/// An H.265 version of the test clip (10 s, 25 fps, an IRAP every 2 s, AAC), made once.
fn clip_h265() -> std::path::PathBuf {
    static CLIP: OnceLock<std::path::PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| {
        let source = clip();
        cached_media(
            "clip-h265-v1.mp4",
            &[
                "-i",
                &source.to_string_lossy(),
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "keyint=50:min-keyint=50:log-level=error",
                "-c:a",
                "copy",
            ],
        )
    })
    .clone()
}

#[test]
fn ffprobe_and_ffmpeg_play_the_playlists_of_h264_and_h265_paths() {
    let f = Finch::start("hls-players", "");
    let _h264 = Publisher::start(&f.url("live/avc"), "tcp");
    let _h265 = Publisher::file(&clip_h265(), &f.url("live/hevc"));
    f.wait_path_ready("live/avc");
    f.wait_path_ready("live/hevc");
    let streams = hls_probe(&hls_url(&f, "live/avc"));
    assert!(
        streams.contains(&"h264:320:240".to_owned()),
        "{streams:?}\n{}",
        f.log()
    );
    assert!(streams.contains(&"aac".to_owned()), "{streams:?}");
    let frames = hls_frames(&hls_url(&f, "live/avc"), 6);
    assert!(
        frames >= 135,
        "ffmpeg decoded {frames} of 150 frames over HLS"
    );
    let streams = hls_probe(&hls_url(&f, "live/hevc"));
    assert!(streams.contains(&"hevc:320:240".to_owned()), "{streams:?}");
    let frames = hls_frames(&hls_url(&f, "live/hevc"), 6);
    assert!(
        frames >= 135,
        "ffmpeg decoded {frames} of 150 H.265 frames over HLS"
    );
    // The muxers are readers of their paths, shown as HLS.
    let (_, p) = f.api("/api/v1/paths/live/avc");
    let transports: Vec<&str> = p["readers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["transport"].as_str())
        .collect();
    assert!(transports.contains(&"hls"), "{p}");
    let (_, metrics) = http(f.admin_port, "GET", "/metrics", "").unwrap();
    assert!(metrics.contains("finch_hls_muxers 2"), "{metrics}");
    assert!(
        metrics.contains("finch_readers{transport=\"hls\"} 2"),
        "{metrics}"
    );
}

#[test]
fn the_http_side_answers_as_the_contract_says() {
    let f = Finch::start("hls-http", "");
    let _publisher = Publisher::start(&f.url("live/h"), "tcp");
    f.wait_path_ready("live/h");
    // Unknown path: 404; the path without its slash: 301 to the page, which plays it.
    assert_eq!(get(&f, "/live/none/index.m3u8", &[]).0, 404);
    let (status, h, _) = get(&f, "/live/h", &[]);
    assert_eq!(status, 301);
    assert_eq!(header(&h, "location"), Some("/live/h/"));
    let (status, h, page) = get(&f, "/live/h/", &[]);
    assert_eq!(status, 200);
    assert!(header(&h, "content-type").unwrap().starts_with("text/html"));
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("muted autoplay playsinline"), "{page}");
    assert!(page.contains("/_finch/hls.light.min.js"));
    let (status, h, js) = get(&f, "/_finch/hls.light.min.js", &[]);
    assert_eq!(status, 200);
    assert!(header(&h, "content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(js.len() > 100_000);
    // The playlist, its init segment and its newest part, with their types and caching.
    let (status, h, body) = get(&f, "/live/h/index.m3u8", &[]);
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(header(&h, "cache-control"), Some("no-cache"));
    assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
    let text = String::from_utf8(body).unwrap();
    for tag in [
        "#EXT-X-TARGETDURATION:2",
        "#EXT-X-PART-INF:PART-TARGET=0.200",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES",
        "#EXT-X-MAP:URI=\"init.mp4\"",
        "#EXT-X-PRELOAD-HINT:TYPE=PART",
    ] {
        assert!(text.contains(tag), "{tag} missing:\n{text}");
    }
    assert!(!text.contains('?'), "URIs with a query string:\n{text}");
    let (status, h, init) = get(&f, "/live/h/init.mp4", &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), Some("video/mp4"));
    assert_eq!(&init[4..8], b"ftyp");
    let seg = text
        .lines()
        .rfind(|l| l.ends_with(".m4s") && l.starts_with("seg"))
        .unwrap();
    let (status, h, data) = get(&f, &format!("/live/h/{seg}"), &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), Some("video/iso.segment"));
    assert!(header(&h, "cache-control").unwrap().contains("immutable"));
    assert_eq!(&data[4..8], b"moof");
    // A blocking reload for the next part returns as soon as it is listed, well within 1 s.
    let hint = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part"))
        .unwrap()
        .trim_end_matches(".m4s\"")
        .to_owned();
    let (msn, part) = hint.split_once('.').unwrap();
    let asked = Instant::now();
    let (status, _, body) = get(
        &f,
        &format!("/live/h/index.m3u8?_HLS_msn={msn}&_HLS_part={part}"),
        &[],
    );
    let waited = asked.elapsed();
    assert_eq!(status, 200);
    let listed = format!("part{msn}.{part}.m4s");
    assert!(
        String::from_utf8_lossy(&body).contains(&listed),
        "{listed} not listed"
    );
    assert!(waited < Duration::from_secs(1), "{waited:?}");
    eprintln!("blocking reload for the next part answered in {waited:?}");
    // From a frame's arrival to its part being listed: at most a part and a frame.
    let (_, metrics) = http(f.admin_port, "GET", "/metrics", "").unwrap();
    let delay: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("finch_hls_part_delay_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no part delay in {metrics}"));
    eprintln!("a part's first frame was listed {delay:.3} s after it arrived");
    assert!(delay > 0.0 && delay < 0.5, "{delay}");
    // The preload-hinted part itself, asked before it exists, is held until it does.
    let next: usize = part.parse::<usize>().unwrap() + 1;
    let (status, _, data) = get(&f, &format!("/live/h/part{msn}.{next}.m4s"), &[]);
    assert!(status == 200 || status == 404, "{status}");
    if status == 200 {
        assert_eq!(&data[4..8], b"moof");
    }
    // Bad parameters: 400; too far ahead: 400; a reload that cannot be met in time: 503.
    for q in ["_HLS_part=1", "_HLS_msn=x", "_HLS_msn=1&_HLS_part=-2"] {
        assert_eq!(
            get(&f, &format!("/live/h/index.m3u8?{q}"), &[]).0,
            400,
            "{q}"
        );
    }
    let last: u64 = seg
        .trim_start_matches("seg")
        .trim_end_matches(".m4s")
        .parse()
        .unwrap();
    assert_eq!(
        get(
            &f,
            &format!("/live/h/index.m3u8?_HLS_msn={}", last + 10),
            &[]
        )
        .0,
        400
    );
    // A path with dot segments, or a monster: 400.
    assert_eq!(get(&f, "/live/../h/index.m3u8", &[]).0, 400);
    assert_eq!(
        get(&f, &format!("/{}/index.m3u8", "x".repeat(2000)), &[]).0,
        400
    );
    // Segments that were never made, or are long gone: 404.
    assert_eq!(get(&f, "/live/h/seg99999.m4s", &[]).0, 404);
    assert_eq!(get(&f, "/live/h/part0.9999.m4s", &[]).0, 404);
    // CORS: a preflight needs no auth; credentials get the origin echoed, not `*`.
    let (status, h, _) = request(
        &f,
        "OPTIONS",
        "/live/h/index.m3u8",
        &[
            "Origin: http://player.example",
            "Access-Control-Request-Method: GET",
        ],
    );
    assert_eq!(status, 204);
    assert!(header(&h, "access-control-allow-methods")
        .unwrap()
        .contains("GET"));
    let (_, h, _) = get(
        &f,
        "/live/h/index.m3u8",
        &["Origin: http://player.example", "Authorization: Basic eDp5"],
    );
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("http://player.example")
    );
    assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
    let (_, metrics) = http(f.admin_port, "GET", "/metrics", "").unwrap();
    assert!(
        metrics.contains("finch_hls_refused_total{reason=\"bad_parameter\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("finch_hls_requests_total{file=\"blocking_playlist\"}"));
}

#[test]
fn hls_readers_need_the_read_permission_with_basic_auth() {
    let f = Finch::start("hls-auth", crate::auth::USERS);
    let _publisher = Publisher::start(
        &format!("rtsp://cam:campass@127.0.0.1:{}/cams/1", f.rtsp_port),
        "tcp",
    );
    f.wait_path_ready("cams/1");
    let (status, h, _) = get(&f, "/cams/1/index.m3u8", &[]);
    assert_eq!(status, 401);
    assert!(header(&h, "www-authenticate").unwrap().starts_with("Basic"));
    // viewer:viewpass may read cams/*; cam:campass may only publish.
    let viewer = "Authorization: Basic dmlld2VyOnZpZXdwYXNz";
    let cam = "Authorization: Basic Y2FtOmNhbXBhc3M=";
    assert_eq!(get(&f, "/cams/1/index.m3u8", &[viewer]).0, 200);
    assert_eq!(get(&f, "/cams/1/index.m3u8", &[cam]).0, 403);
    assert_eq!(
        get(
            &f,
            "/cams/1/index.m3u8",
            &["Authorization: Basic dmlld2VyOnh4"]
        )
        .0,
        401
    );
    let streams = hls_probe(&format!(
        "http://viewer:viewpass@127.0.0.1:{}/cams/1/index.m3u8",
        f.hls_port
    ));
    assert!(streams.contains(&"h264:320:240".to_owned()), "{streams:?}");
    // A preflight still needs no credentials.
    let (status, _, _) = request(&f, "OPTIONS", "/cams/1/index.m3u8", &["Origin: http://x"]);
    assert_eq!(status, 204);
}

#[test]
fn with_hls_tls_the_playlist_is_served_over_https_with_the_rtsps_certificate() {
    let dir = temp_dir("hls-tls-cert");
    let (cert, key) = crate::net::certificate(&dir);
    let f = Finch::start(
        "hls-tls",
        &format!(
            "[hls]\ntls = true\n[rtsps]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    let _publisher = Publisher::start(&f.url("live/s"), "tcp");
    f.wait_path_ready("live/s");
    let url = format!("https://127.0.0.1:{}/live/s/index.m3u8", f.hls_port);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&cert)
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("#EXTM3U"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP on the HTTPS port gets nothing served.
    assert_ne!(get(&f, "/live/s/index.m3u8", &[]).0, 200);
    // A client that never finishes its handshake holds up nobody.
    let _stuck = TcpStream::connect(("127.0.0.1", f.hls_port)).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(&cert)
        .arg(format!("https://127.0.0.1:{}/live/s/init.mp4", f.hls_port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_thousand_held_reloads_and_a_reader_that_never_reads_leave_rtsp_alone() {
    // A thousand sockets on this side too.
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        let mut lim = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let f = Finch::start("hls-abuse", "[hls]\nmax_connections = 1000\n");
    let _publisher = Publisher::start(&f.url("live/a"), "tcp");
    f.wait_path_ready("live/a");
    let (_, _, body) = get(&f, "/live/a/index.m3u8", &[]);
    let text = String::from_utf8(body).unwrap();
    let last: u64 = text
        .lines()
        .rfind(|l| l.starts_with("seg"))
        .unwrap()
        .trim_start_matches("seg")
        .trim_end_matches(".m4s")
        .parse()
        .unwrap();
    let mut reader = Raw::connect(f.rtsp_port);
    reader.play_tcp(&f.url("live/a"));
    let before = rss_kib(f.pid());
    // A slow reader: asks for a segment and reads nothing.
    let mut slow = TcpStream::connect(("127.0.0.1", f.hls_port)).unwrap();
    let seg = format!("GET /live/a/seg{last}.m4s HTTP/1.1\r\nHost: x\r\n\r\n");
    for _ in 0..200 {
        let _ = slow.write_all(seg.as_bytes());
    }
    // 1000 blocking reloads for the end of the segment after next: each is held, for seconds.
    let ask = format!(
        "GET /live/a/index.m3u8?_HLS_msn={}&_HLS_part=9 HTTP/1.1\r\nHost: x\r\n\r\n",
        last + 2
    );
    let mut held = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(("127.0.0.1", f.hls_port)).unwrap();
        s.write_all(ask.as_bytes()).unwrap();
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    // max_connections are in flight: the next request is refused.
    let over = wait_until(Duration::from_secs(2), || {
        get(&f, "/live/a/index.m3u8", &[]).0 == 503
    });
    assert!(
        over,
        "more than max_connections HLS requests were served at once"
    );
    // Meanwhile the RTSP reader is served without a gap.
    let seqs = crate::raw::read_rtp_seqs(&mut reader, 0, Duration::from_secs(2));
    assert!(seqs.len() > 40, "{} packets to the RTSP reader", seqs.len());
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "the RTSP reader lost packets"
    );
    let during = rss_kib(f.pid());
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} to {during} KiB"
    );
    // Each held reload ends (answered, or 503 after three target durations).
    drop(held);
    drop(slow);
    assert!(wait_until(Duration::from_secs(10), || {
        get(&f, "/live/a/index.m3u8", &[]).0 == 200
    }));
    let _ = Raw::connect(f.rtsp_port);
}

/// A 1280x720 version of the test clip (10 s, 25 fps, a keyframe every second, AAC), made once.
fn clip_720p() -> std::path::PathBuf {
    static CLIP: OnceLock<std::path::PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| {
        cached_media(
            "clip-720p-v1.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=1280x720:rate=25",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "10",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "25",
                "-keyint_min",
                "25",
                "-sc_threshold",
                "0",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
            ],
        )
    })
    .clone()
}

#[test]
fn chromium_plays_the_page_in_low_latency_and_the_status_page_shows_the_path() {
    let python = std::env::var("E2E_BROWSER_PYTHON").unwrap_or_else(|_| {
        panic!("E2E_BROWSER_PYTHON is not set: ./scripts/test.sh installs Chromium and Selenium")
    });
    let f = Finch::start("hls-browser", "");
    let mut publisher = Publisher::file(&clip_720p(), &f.url("live/browser"));
    f.wait_path_ready("live/browser");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/testdata/browser.py");
    let out = Command::new("timeout")
        .arg("120")
        .arg(&python)
        .arg(script)
        .arg(format!("http://127.0.0.1:{}/live/browser/", f.hls_port))
        .arg(format!("http://127.0.0.1:{}/", f.admin_port))
        .arg(&shots)
        .output()
        .unwrap();
    publisher.kill();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "browser.py: {e}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!("browser: {report}");
    assert!(
        report["first_frame_after_s"]
            .as_f64()
            .is_some_and(|t| t < 10.0),
        "{report}"
    );
    assert!(
        report["advanced_s"].as_f64().is_some_and(|t| t >= 3.0),
        "{report}"
    );
    assert_eq!(report["width"], 1280, "{report}");
    assert_eq!(report["height"], 720, "{report}");
    assert!(report["error"].is_null(), "{report}");
    let latency = report["latency_median_s"].as_f64().unwrap_or(f64::MAX);
    assert!(latency < 3.0, "hls.js is {latency} s behind live: {report}");
    let status = report["status_page"].as_str().unwrap_or_default();
    assert!(status.contains("live/browser"), "{status}");
    // Its readers by protocol: no RTSP reader, the HLS muxer the browser made.
    assert!(status.contains("0 / 0 / 1"), "{status}");
    assert!(status.contains("watch"), "{status}");
    assert!(shots.join("player.png").exists() && shots.join("status.png").exists());
}

fn media_sequence(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no media sequence in {text}"))
}

fn newest_segment(text: &str) -> u64 {
    text.lines()
        .rfind(|l| l.starts_with("seg"))
        .and_then(|l| {
            l.trim_start_matches("seg")
                .trim_end_matches(".m4s")
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no segment in {text}"))
}

#[test]
fn media_sequence_numbers_go_on_across_a_graceful_restart() {
    use crate::supervisor::{wait_restart, worker_pid};
    let f = Finch::start_supervised("hls-restart", "");
    let _publisher = Publisher::start(&f.url("live/r"), "tcp");
    f.wait_path_ready("live/r");
    // Watched for a while: a few segments.
    std::thread::sleep(Duration::from_secs(5));
    let (_, _, body) = get(&f, "/live/r/index.m3u8", &[]);
    let before = String::from_utf8(body).unwrap();
    let (last, target) = (
        newest_segment(&before),
        before
            .lines()
            .find(|l| l.starts_with("#EXT-X-TARGETDURATION"))
            .unwrap()
            .to_owned(),
    );
    let old = worker_pid(&f);
    f.signal(libc::SIGUSR2);
    wait_restart(&f, old, 0);
    // A player's next blocking reload, for the segment after the next, is answered by the new
    // worker: the numbers go on (the old worker's unfinished segment is skipped).
    let (status, _, body) = get(
        &f,
        &format!("/live/r/index.m3u8?_HLS_msn={}", last + 2),
        &[],
    );
    let after = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{after}\n{}", f.log());
    assert!(media_sequence(&after) >= last + 2, "{before}\n---\n{after}");
    assert!(
        after.contains(&target),
        "the target duration changed:\n{after}"
    );
    // And ffmpeg plays on from the new worker.
    assert!(hls_frames(&hls_url(&f, "live/r"), 3) >= 60);
    assert!(f.log().contains("resumed_at_msn"), "{}", f.log());
}

#[test]
fn an_opus_track_is_carried_with_the_video() {
    let f = Finch::start("hls-opus", "");
    let _publisher = Publisher::with(&[
        "-c:v",
        "copy",
        "-c:a",
        "libopus",
        "-b:a",
        "48k",
        "-ar",
        "48000",
        "-f",
        "rtsp",
        "-rtsp_transport",
        "tcp",
        &f.url("live/opus"),
    ]);
    f.wait_path_ready("live/opus");
    let streams = hls_probe(&hls_url(&f, "live/opus"));
    assert!(streams.contains(&"h264:320:240".to_owned()), "{streams:?}");
    assert!(streams.contains(&"opus".to_owned()), "{streams:?}");
    assert!(hls_frames(&hls_url(&f, "live/opus"), 4) >= 90);
}

#[test]
fn a_blocking_reload_that_cannot_be_met_in_time_gets_503_and_the_stream_goes_on() {
    let f = Finch::start("hls-503", "");
    let mut ffmpeg = ffmpeg_from_clip(&[
        "-c",
        "copy",
        "-f",
        "rtsp",
        "-rtsp_transport",
        "tcp",
        &f.url("live/stall"),
    ]);
    f.wait_path_ready("live/stall");
    let (_, _, body) = get(&f, "/live/stall/index.m3u8", &[]);
    let text = String::from_utf8(body).unwrap();
    let last = newest_segment(&text);
    // The publisher stalls (connected, sending nothing): the next segment never comes.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(ffmpeg.id() as i32, libc::SIGSTOP) };
    let asked = Instant::now();
    let (status, _, _) = get(
        &f,
        &format!("/live/stall/index.m3u8?_HLS_msn={}", last + 2),
        &[],
    );
    let waited = asked.elapsed();
    unsafe { libc::kill(ffmpeg.id() as i32, libc::SIGCONT) };
    assert_eq!(status, 503);
    // Three target durations (2 s each here), not a hang.
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(9),
        "{waited:?}"
    );
    let (_, metrics) = http(f.admin_port, "GET", "/metrics", "").unwrap();
    assert!(
        metrics.contains("finch_hls_refused_total{reason=\"blocking_timeout\"} 1"),
        "{metrics}"
    );
    // The publisher goes on and so does the playlist.
    assert!(wait_until(Duration::from_secs(10), || {
        let (s, _, b) = get(&f, "/live/stall/index.m3u8", &[]);
        s == 200 && newest_segment(&String::from_utf8_lossy(&b)) > last
    }));
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
}

#[test]
fn a_publisher_that_comes_back_goes_on_with_the_numbers_after_a_discontinuity() {
    let f = Finch::start("hls-back", "");
    let mut first = Publisher::start(&f.url("live/back"), "tcp");
    f.wait_path_ready("live/back");
    let (_, _, body) = get(&f, "/live/back/index.m3u8", &[]);
    let before = newest_segment(&String::from_utf8(body).unwrap());
    first.kill();
    assert!(wait_until(Duration::from_secs(5), || {
        get(&f, "/live/back/index.m3u8", &[]).0 == 404
    }));
    let _second = Publisher::start(&f.url("live/back"), "tcp");
    f.wait_path_ready("live/back");
    let (status, _, body) = get(&f, "/live/back/index.m3u8", &[]);
    let after = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{after}");
    assert!(media_sequence(&after) > before, "{after}");
    assert!(after.contains("#EXT-X-DISCONTINUITY\n"), "{after}");
    // ffmpeg plays the new stream from the same playlist URL.
    assert!(hls_frames(&hls_url(&f, "live/back"), 3) >= 60);
}
