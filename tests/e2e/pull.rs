//! Pulled paths: Finch as the RTSP client of a camera it did not write (gst-rtsp-server fed by
//! ffmpeg, `testdata/camera.py`) and of another Finch, over TCP, UDP and TLS, with credentials,
//! always on and on demand, and cameras that fail in every way a camera fails.

use crate::harness::*;
use crate::relay::{block_on, retina_read};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A stand-in IP camera: ffmpeg sends the clip's H.264 as RTP to gst-rtsp-server, which serves
/// it at `rtsp://127.0.0.1:port/cam`. Killed on drop.
struct Camera {
    address: String,
    port: u16,
    feed_port: u16,
    user: Option<(String, String)>,
    server: Option<Child>,
    feed: Option<Child>,
}

impl Camera {
    fn start(user: Option<(&str, &str)>) -> Camera {
        Camera::start_on("127.0.0.1", user)
    }

    fn start_on(address: &str, user: Option<(&str, &str)>) -> Camera {
        let mut c = Camera {
            address: address.to_owned(),
            port: free_tcp_port(),
            feed_port: free_udp_pair(),
            user: user.map(|(u, p)| (u.to_owned(), p.to_owned())),
            server: None,
            feed: None,
        };
        c.up();
        c
    }

    /// Starts (again, on the same ports).
    fn up(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/testdata/camera.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script)
            .args([
                "--address",
                &self.address,
                "--port",
                &self.port.to_string(),
                "--path",
                "/cam",
            ])
            .args(["--feed", &self.feed_port.to_string()]);
        if let Some((u, p)) = &self.user {
            cmd.args(["--user", u, "--password", p]);
        }
        let mut server = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3-gi and gir1.2-gst-rtsp-server-1.0 (scripts/test.sh installs them)");
        let mut line = String::new();
        let out = server.stdout.take().unwrap();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        assert_eq!(line.trim(), "ready", "the camera did not start");
        let feed = ffmpeg_from_clip(&[
            "-an",
            "-c:v",
            "copy",
            "-bsf:v",
            "h264_mp4toannexb",
            "-f",
            "rtp",
            &format!("rtp://127.0.0.1:{}", self.feed_port),
        ]);
        self.server = Some(server);
        self.feed = Some(feed);
    }

    /// Its sensor stops: the camera still answers, and sends no media.
    fn stop_feed(&mut self) {
        if let Some(mut c) = self.feed.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops, as a camera losing power: no TEARDOWN, the connections just go.
    fn down(&mut self) {
        for c in [self.server.take(), self.feed.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        match &self.user {
            Some((u, p)) => format!("rtsp://{u}:{p}@{}:{}/cam", self.address, self.port),
            None => format!("rtsp://{}:{}/cam", self.address, self.port),
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.down();
    }
}

fn source(f: &Finch, path: &str) -> serde_json::Value {
    f.api(&format!("/api/v1/paths/{path}")).1["source"].clone()
}

#[test]
fn a_camera_is_pulled_over_tcp_udp_and_auto_and_read_by_ffprobe_ffmpeg_and_gstreamer() {
    let cam = Camera::start(None);
    let mut config = String::new();
    for t in ["tcp", "udp", "auto"] {
        config.push_str(&format!(
            "[paths.\"cam/{t}\"]\nsource = \"{}\"\nsource_transport = \"{t}\"\n",
            cam.url()
        ));
    }
    let f = Finch::start("pull", &config);
    for t in ["tcp", "udp", "auto"] {
        let path = format!("cam/{t}");
        f.wait_path_ready(&path);
        let s = source(&f, &path);
        assert_eq!(
            (s["kind"].as_str(), s["state"].as_str()),
            (Some("pull"), Some("ready")),
            "{s}"
        );
        let want = if t == "tcp" { "tcp" } else { "udp" };
        assert_eq!(s["transport"], want, "{t}: {s}");
        for reader in ["tcp", "udp"] {
            let streams = ffprobe(&f.url(&path), reader);
            assert!(
                streams.contains(&"h264:320:240".to_owned()),
                "{path} read over {reader}: {streams:?}\n{}",
                f.log()
            );
        }
    }
    let frames = ffmpeg_count_frames(&f.url("cam/udp"), "tcp", 3);
    assert!(frames >= 60, "{frames} frames in 3 s");
    let (frames, stderr) = gst_decode(&f.url("cam/tcp"), &[], 30);
    assert_eq!(frames, 30, "{stderr}");
    let seen = block_on(retina_read(f.url("cam/auto"), true, 3)).unwrap();
    assert!(
        seen.frames > 30 && seen.first_is_key == Some(true),
        "retina: {seen:?}"
    );
    // Every reader above was served by the one pull each path started with.
    for t in ["tcp", "udp", "auto"] {
        let s = source(&f, &format!("cam/{t}"));
        assert_eq!(s["reconnects"], 0, "cam/{t}: {s}");
    }
}

#[test]
fn udp_from_another_address_than_the_camera_s_is_dropped_and_auto_goes_on_over_tcp() {
    // The camera answers RTSP on 127.0.0.2 but sends RTP from 127.0.0.1 (gst-rtsp-server binds
    // its UDP sockets to the wildcard): what a multi-homed camera or a spoofer does. Finch takes
    // UDP only from the address it spoke RTSP to.
    let cam = Camera::start_on("127.0.0.2", None);
    let f = Finch::start(
        "pull-otheraddr",
        &format!(
            "[paths.\"cam/auto\"]\nsource = \"{0}\"\n[paths.\"cam/udp\"]\nsource = \"{0}\"\nsource_transport = \"udp\"\n",
            cam.url()
        ),
    );
    let asked = Instant::now();
    f.wait_path_ready("cam/auto");
    eprintln!(
        "auto over TCP after the UDP probe: ready after {:?}",
        asked.elapsed()
    );
    assert_eq!(
        source(&f, "cam/auto")["transport"],
        "tcp",
        "{}",
        source(&f, "cam/auto")
    );
    assert!(ffprobe(&f.url("cam/auto"), "udp").contains(&"h264:320:240".to_owned()));
    assert!(
        wait_until(Duration::from_secs(15), || {
            source(&f, "cam/udp")["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("UDP"))
        }),
        "{}",
        source(&f, "cam/udp")
    );
    assert_ne!(source(&f, "cam/udp")["state"], "ready");
}

#[test]
fn an_on_demand_camera_starts_with_its_first_reader_and_stops_after_the_last() {
    let cam = Camera::start(None);
    let f = Finch::start(
        "ondemand",
        &format!(
            "[paths.\"cam/od\"]\nsource = \"{}\"\nsource_on_demand = true\nsource_on_demand_close_after_secs = 2\n",
            cam.url()
        ),
    );
    assert_eq!(source(&f, "cam/od")["state"], "idle");
    // The DESCRIBE waits for the camera instead of failing.
    let asked = Instant::now();
    let streams = ffprobe(&f.url("cam/od"), "tcp");
    assert!(
        streams.contains(&"h264:320:240".to_owned()),
        "{streams:?}\n{}",
        f.log()
    );
    eprintln!("on-demand: ffprobe answered after {:?}", asked.elapsed());
    // Nobody reads now: the pull stops after 2 s.
    assert!(
        wait_until(Duration::from_secs(10), || source(&f, "cam/od")["state"]
            == "idle"),
        "{}",
        source(&f, "cam/od")
    );
    // A camera that never comes: 503 after the start timeout, never a hang.
    let f2 = Finch::start(
        "ondemand-dead",
        &format!(
            "[paths.\"cam/none\"]\nsource = \"rtsp://127.0.0.1:{}/cam\"\nsource_on_demand = true\nsource_on_demand_start_timeout_secs = 2\n",
            free_tcp_port()
        ),
    );
    let mut raw = Raw::connect(f2.rtsp_port);
    let started = Instant::now();
    let r = raw.request("DESCRIBE", &f2.url("cam/none"), 1, &[], "");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        raw.request("OPTIONS", "*", 2, &[], "").status,
        200,
        "the connection goes on"
    );
}

#[test]
fn readers_of_a_camera_that_drops_wait_for_it_with_grace_or_are_closed_without() {
    let mut cam = Camera::start(None);
    let f = Finch::start(
        "camdrop",
        &format!(
            "[paths.\"cam/g\"]\nsource = \"{0}\"\nsource_transport = \"tcp\"\npublisher_grace_secs = 20\n[paths.\"cam/nog\"]\nsource = \"{0}\"\nsource_transport = \"tcp\"\n",
            cam.url()
        ),
    );
    f.wait_path_ready("cam/g");
    f.wait_path_ready("cam/nog");
    let mut waiting = Raw::connect(f.rtsp_port);
    waiting.play_tcp(&f.url("cam/g"));
    let mut closed = Raw::connect(f.rtsp_port);
    closed.play_tcp(&f.url("cam/nog"));
    let before = read_rtp_seqs(&mut waiting, 0, Duration::from_secs(2));
    assert!(before.len() > 20);
    cam.down();
    // Without grace the reader is closed at once (the pull fails on the lost connection).
    assert!(
        closed.closed_within(Duration::from_secs(10)),
        "the reader without grace hangs"
    );
    assert!(wait_until(Duration::from_secs(10), || source(&f, "cam/g")
        ["state"]
        != "ready"));
    let last_error = source(&f, "cam/g")["last_error"].clone();
    assert!(last_error.is_string(), "{last_error}");
    cam.up();
    let back = Instant::now();
    let mut after = Vec::new();
    while after.is_empty() && back.elapsed() < Duration::from_secs(30) {
        after = read_rtp_seqs(&mut waiting, 0, Duration::from_millis(200));
    }
    assert!(
        !after.is_empty(),
        "the reader got nothing after the camera came back\n{}",
        f.log()
    );
    eprintln!(
        "camera back: the waiting reader's first packet after {:?}",
        back.elapsed()
    );
    let last = *before.last().unwrap();
    assert!(
        after[0].wrapping_sub(last) < 1000,
        "jumped from {last} to {}",
        after[0]
    );
}

#[test]
fn cameras_that_refuse_or_never_answer_fail_with_a_reason_and_growing_backoff() {
    // Accepts TCP, answers nothing.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    let f = Finch::start(
        "camfail",
        &format!(
            "[paths.\"cam/closed\"]\nsource = \"rtsp://127.0.0.1:{}/x\"\n[paths.\"cam/mute\"]\nsource = \"rtsp://127.0.0.1:{mute_port}/x\"\n",
            free_tcp_port()
        ),
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            source(&f, "cam/closed")["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot connect"))
        }),
        "{}",
        source(&f, "cam/closed")
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            source(&f, "cam/mute")["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("timed out"))
        }),
        "{}",
        source(&f, "cam/mute")
    );
    // Backoff: 0.5, 1, 2, 4 s …: a few attempts in 6 s, not a tight loop.
    std::thread::sleep(Duration::from_secs(6));
    let n = source(&f, "cam/closed")["reconnects"].as_u64().unwrap();
    assert!((2..=6).contains(&n), "{n} attempts in ~7 s");
    assert_eq!(source(&f, "cam/closed")["state"], "waiting");
    let metrics = http(f.admin_port, "GET", "/metrics", "").unwrap().1;
    assert!(
        metrics.contains("finch_source_reconnects_total{path=\"cam/closed\"}"),
        "{metrics}"
    );
    drop(mute);
}

#[test]
fn a_camera_that_wants_credentials_is_pulled_with_them_and_they_never_show() {
    let cam = Camera::start(Some(("admin", "camsecret")));
    let wrong = cam.url().replace("camsecret", "nope");
    let f = Finch::start(
        "camauth",
        &format!(
            "[paths.\"cam/a\"]\nsource = \"{}\"\nsource_transport = \"tcp\"\n[paths.\"cam/wrong\"]\nsource = \"{wrong}\"\nsource_transport = \"tcp\"\n",
            cam.url()
        ),
    );
    f.wait_path_ready("cam/a");
    assert!(ffprobe(&f.url("cam/a"), "tcp").contains(&"h264:320:240".to_owned()));
    assert!(
        wait_until(Duration::from_secs(10), || {
            source(&f, "cam/wrong")["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("401"))
        }),
        "{}",
        source(&f, "cam/wrong")
    );
    assert_eq!(
        source(&f, "cam/a")["url"],
        format!("rtsp://admin:***@127.0.0.1:{}/cam", cam.port)
    );
    let (_, config) = f.api("/api/v1/config");
    assert!(!config.to_string().contains("camsecret"), "{config}");
    assert!(!f.log().contains("camsecret"), "the password is in the log");
}

#[test]
fn another_finch_is_pulled_with_digest_and_over_rtsps() {
    let dir = temp_dir("pull-finch");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    let tls_port = free_tcp_port();
    let upstream = Finch::start(
        "pull-upstream",
        &format!(
            "[rtsp]\nudp = false\n[rtsps]\nenabled = true\nport = {tls_port}\ncert_file = \"{}\"\nkey_file = \"{}\"\n[[auth.users]]\nuser = \"cam\"\npass = \"campass\"\npermissions = [{{ action = \"publish\" }}]\n[[auth.users]]\nuser = \"edge\"\npass = \"edgepass\"\npermissions = [{{ action = \"read\" }}]\n",
            cert.display(),
            key.display()
        ),
    );
    let _p = Publisher::start(
        &format!(
            "rtsp://cam:campass@127.0.0.1:{}/live/up",
            upstream.rtsp_port
        ),
        "tcp",
    );
    upstream.wait_path_ready("live/up");
    let f = Finch::start(
        "pull-edge",
        &format!(
            "[paths.\"edge/plain\"]\nsource = \"rtsp://edge:edgepass@127.0.0.1:{0}/live/up\"\nsource_transport = \"tcp\"\n[paths.\"edge/tls\"]\nsource = \"rtsps://edge:edgepass@127.0.0.1:{tls_port}/live/up\"\n[paths.\"edge/auto\"]\nsource = \"rtsp://edge:edgepass@127.0.0.1:{0}/live/up\"\n[paths.\"edge/wrong\"]\nsource = \"rtsp://edge:bad@127.0.0.1:{0}/live/up\"\n",
            upstream.rtsp_port
        ),
    );
    // The upstream refuses UDP (461): `auto` goes on over TCP at once; rtsps:// never leaves
    // its TLS connection.
    for path in ["edge/plain", "edge/tls", "edge/auto"] {
        f.wait_path_ready(path);
        assert_eq!(
            source(&f, path)["transport"],
            "tcp",
            "{path}: {}",
            source(&f, path)
        );
        let streams = ffprobe(&f.url(path), "tcp");
        assert!(
            streams.contains(&"h264:320:240".to_owned()),
            "{path}: {streams:?}"
        );
        assert!(streams.contains(&"aac".to_owned()), "{path}: {streams:?}");
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            source(&f, "edge/wrong")["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("401"))
        }),
        "{}",
        source(&f, "edge/wrong")
    );
    // Refused credentials back off like any failure: no tight loop against the upstream.
    let tries = || source(&f, "edge/wrong")["reconnects"].as_u64().unwrap();
    let (n, at) = (tries(), Instant::now());
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        tries() - n <= 4,
        "{} attempts in {:?}",
        tries() - n,
        at.elapsed()
    );
}

#[test]
fn a_reload_starts_a_new_camera_keeps_an_unchanged_one_and_stops_a_removed_one() {
    let cam = Camera::start(None);
    let a = format!(
        "[paths.\"cam/a\"]\nsource = \"{}\"\nsource_transport = \"tcp\"\n",
        cam.url()
    );
    let b = format!(
        "[paths.\"cam/b\"]\nsource = \"{}\"\nsource_transport = \"tcp\"\n",
        cam.url()
    );
    let f = Finch::start("pull-reload", &a);
    f.wait_path_ready("cam/a");
    let mut reader = Raw::connect(f.rtsp_port);
    reader.play_tcp(&f.url("cam/a"));
    let original = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(f.config_path(), format!("{original}\n{b}")).unwrap();
    let (status, body) = http(f.admin_port, "POST", "/api/v1/config/reload", "").unwrap();
    assert_eq!(status, 200, "{body}");
    f.wait_path_ready("cam/b");
    let seqs = read_rtp_seqs(&mut reader, 0, Duration::from_secs(2));
    assert!(
        seqs.len() > 20,
        "the unchanged pull was disturbed: {seqs:?}"
    );
    assert_eq!(source(&f, "cam/a")["reconnects"], 0);
    // Removed: its readers are closed and the path is gone.
    std::fs::write(
        f.config_path(),
        format!("{}\n{b}", original.replace(&a, "")),
    )
    .unwrap();
    let (status, body) = http(f.admin_port, "POST", "/api/v1/config/reload", "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        reader.closed_within(Duration::from_secs(10)),
        "a reader of the removed camera hangs"
    );
    assert!(wait_until(Duration::from_secs(5), || f
        .api("/api/v1/paths/cam/a")
        .0
        == 404));
    assert!(ffprobe(&f.url("cam/b"), "tcp").contains(&"h264:320:240".to_owned()));
}

#[test]
fn a_camera_that_answers_but_sends_no_media_fails_after_the_read_timeout_and_is_retried() {
    let mut cam = Camera::start(None);
    let f = Finch::start(
        "camsilent",
        &format!(
            "[paths.\"cam/s\"]\nsource = \"{}\"\nsource_transport = \"tcp\"\nsource_read_timeout_secs = 2\n",
            cam.url()
        ),
    );
    f.wait_path_ready("cam/s");
    let before = source(&f, "cam/s")["reconnects"].as_u64().unwrap_or(0);
    cam.stop_feed();
    let stopped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || {
            source(&f, "cam/s")["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("no media"))
        }),
        "{}\n{}",
        source(&f, "cam/s"),
        f.log()
    );
    let noticed = stopped.elapsed();
    assert!(
        source(&f, "cam/s")["reconnects"].as_u64().unwrap_or(0) > before,
        "{}",
        source(&f, "cam/s")
    );
    eprintln!(
        "a camera that went silent was given up after {noticed:?} (source_read_timeout_secs = 2)"
    );
}

#[test]
fn readers_of_a_pulled_camera_stay_through_graceful_restarts() {
    use crate::handover::{alive, SeqReader};
    use crate::supervisor::{wait_restart, worker_pid};
    let cam = Camera::start(None);
    let f = Finch::start_supervised(
        "camhandover",
        &format!(
            "[supervisor]\ndrain_timeout_secs = 20\n[paths.\"cam/h\"]\nsource = \"{}\"\nsource_transport = \"tcp\"\n",
            cam.url()
        ),
    );
    f.wait_path_ready("cam/h");
    let reader = SeqReader::start(&f, "cam/h");
    assert!(wait_until(Duration::from_secs(5), || reader.seen().packets > 20));
    let session = f.api("/api/v1/paths/cam/h").1["readers"][0]["session"].clone();
    for i in 0..3u64 {
        let old = worker_pid(&f);
        f.signal(libc::SIGUSR2);
        let asked = Instant::now();
        wait_restart(&f, old, i);
        assert!(
            wait_until(Duration::from_secs(5), || !alive(old)),
            "{}",
            f.log()
        );
        let before = reader.seen().packets;
        assert!(
            wait_until(Duration::from_secs(10), || reader.seen().packets
                > before + 10),
            "restart {i}: the reader got nothing from the camera pulled again: {:?}\n{}",
            reader.seen(),
            f.log()
        );
        eprintln!(
            "restart {i}: the pulled path's reader had packets again {:?} after SIGUSR2",
            asked.elapsed()
        );
        assert_eq!(
            f.api("/api/v1/paths/cam/h").1["readers"][0]["session"],
            session,
            "the reader's session changed"
        );
    }
    let seqs = reader.finish();
    assert!(!seqs.closed, "the reader's connection closed");
    // The camera is pulled anew in each worker: frames are lost meanwhile (a gap), but the
    // stream goes on in one numbering, never back.
    assert_eq!(seqs.repeated, 0, "{seqs:?}");
    eprintln!("a pulled path's reader through 3 restarts: {seqs:?}");
}

#[test]
fn an_hls_request_starts_an_on_demand_camera_and_one_that_never_comes_gets_503() {
    let cam = Camera::start(None);
    let dead = free_tcp_port();
    let f = Finch::start(
        "ondemand-hls",
        &format!(
            "[paths.\"cam/od\"]\nsource = \"{}\"\nsource_on_demand = true\n\
             [paths.\"cam/none\"]\nsource = \"rtsp://127.0.0.1:{dead}/cam\"\nsource_on_demand = true\nsource_on_demand_start_timeout_secs = 2\n",
            cam.url()
        ),
    );
    assert_eq!(source(&f, "cam/od")["state"], "idle");
    let (status, body) = http(f.hls_port, "GET", "/cam/od/index.m3u8", "").unwrap();
    assert_eq!(status, 200, "{body}\n{}", f.log());
    assert!(body.starts_with("#EXTM3U"), "{body}");
    assert_eq!(source(&f, "cam/od")["state"], "ready");
    let asked = Instant::now();
    let (status, _) = http(f.hls_port, "GET", "/cam/none/index.m3u8", "").unwrap();
    assert_eq!(status, 503);
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "{:?}",
        asked.elapsed()
    );
}
