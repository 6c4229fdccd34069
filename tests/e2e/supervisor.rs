//! The supervisor and the worker's life cycle (DESIGN.md §1): what restarts, what does not, why,
//! and that no connection is refused meanwhile.

use crate::harness::*;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FAULTS: &str = "[debug]\nfault_injection = true\n[supervisor]\nheartbeat_timeout_secs = 2\nbackoff_initial_ms = 50\ndrain_timeout_secs = 2\n";

fn server(f: &Finch) -> Value {
    f.api("/api/v1/server").1
}

fn worker_pid(f: &Finch) -> u64 {
    server(f)["worker"]["pid"].as_u64().unwrap_or(0)
}

fn fault(f: &Finch, kind: &str) -> u16 {
    http(
        f.admin_port,
        "POST",
        "/api/v1/debug/fault",
        &format!("{{\"kind\": \"{kind}\"}}"),
    )
    .map(|r| r.0)
    .unwrap_or(0)
}

/// Waits for a worker other than `old` to serve the API, and returns the newest restart.
fn wait_restart(f: &Finch, old: u64, total_before: u64) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        let (status, s) = f.api("/api/v1/server");
        let moved = status == 200
            && s["worker"]["pid"].as_u64().is_some_and(|p| p != old)
            && s["restarts_total"].as_u64() > Some(total_before)
            && s["state"] == "running";
        if moved {
            last = s;
        }
        moved
    });
    assert!(ok, "no restart after worker {old}: {}", f.log());
    last
}

/// What happened to the prober's connections. Every outcome but `served` failed a client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Outcomes {
    served: u64,
    /// Connection refused: nobody listening.
    refused: u64,
    /// Accepted, then reset or closed without an answer (a worker that died with it).
    reset: u64,
    /// Accepted, and no answer within 15 s.
    timeout: u64,
    /// Anything else (another connect error, an answer other than 200).
    other: u64,
}

impl Outcomes {
    fn failed(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.other
    }

    fn since(&self, before: Outcomes) -> Outcomes {
        Outcomes {
            served: self.served - before.served,
            refused: self.refused - before.refused,
            reset: self.reset - before.reset,
            timeout: self.timeout - before.timeout,
            other: self.other - before.other,
        }
    }
}

/// Connects in a loop, one connection at a time, sends OPTIONS and classifies what happened,
/// until stopped.
struct Prober {
    stop: Arc<AtomicBool>,
    outcomes: Arc<std::sync::Mutex<Outcomes>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(port: u16) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(std::sync::Mutex::new(Outcomes::default()));
        let (s, o) = (stop.clone(), outcomes.clone());
        let thread = std::thread::spawn(move || {
            let mut cseq = 0;
            while !s.load(Ordering::Relaxed) {
                cseq += 1;
                let outcome = probe(port, cseq);
                let mut o = o.lock().unwrap();
                match outcome {
                    Probe::Served => o.served += 1,
                    Probe::Refused => o.refused += 1,
                    Probe::Reset => o.reset += 1,
                    Probe::Timeout => o.timeout += 1,
                    Probe::Other => o.other += 1,
                }
                drop(o);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Prober {
            stop,
            outcomes,
            thread: Some(thread),
        }
    }

    fn now(&self) -> Outcomes {
        *self.outcomes.lock().unwrap()
    }

    fn finish(mut self) -> Outcomes {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.now()
    }
}

enum Probe {
    Served,
    Refused,
    Reset,
    Timeout,
    Other,
}

fn probe(port: u16, cseq: u32) -> Probe {
    let mut c = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(c) => c,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Probe::Refused,
        Err(_) => return Probe::Other,
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(15)));
    if c.write_all(format!("OPTIONS * RTSP/1.0\r\nCSeq: {cseq}\r\n\r\n").as_bytes())
        .is_err()
    {
        return Probe::Reset;
    }
    let mut buf = [0u8; 512];
    match c.read(&mut buf) {
        Ok(n) if n > 0 && buf.starts_with(b"RTSP/1.0 200") => Probe::Served,
        Ok(0) => Probe::Reset,
        Ok(_) => Probe::Other,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Probe::Timeout,
        Err(_) => Probe::Reset,
    }
}

fn kill_worker(f: &Finch, sig: i32) {
    let pid = worker_pid(f) as i32;
    assert!(pid > 0);
    // SAFETY: kill(2) on the worker's pid, a child of our child.
    unsafe {
        libc::kill(pid, sig);
    }
}

#[test]
fn every_crash_kind_restarts_the_worker_with_its_reason_and_no_connection_is_lost() {
    let f = Finch::start_supervised("crashes", &format!("{FAULTS}crash_loop_limit = 20\n"));
    let first = server(&f);
    assert_eq!(first["supervisor_pid"].as_u64(), Some(u64::from(f.pid())));
    assert_eq!(first["worker"]["generation"], 1);
    let prober = Prober::start(f.rtsp_port);
    type Check = fn(&Value);
    type Act = Box<dyn Fn(&Finch)>;
    // Whether the worker dies abruptly (every connection it holds dies with it) or stops
    // itself (FatalError: it stops accepting and the backlog waits for the next worker).
    let cases: Vec<(&str, bool, Act, Check)> = vec![
        (
            "fatal",
            false,
            Box::new(|f| assert_eq!(fault(f, "fatal"), 202)),
            |r| {
                assert_eq!(r["reason"], "fatal");
                assert!(
                    r["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("injected"),
                    "{r}"
                );
            },
        ),
        (
            "abort",
            true,
            Box::new(|f| assert_eq!(fault(f, "abort"), 202)),
            |r| {
                assert_eq!(
                    (r["reason"].as_str(), r["signal"].as_str()),
                    (Some("signal"), Some("SIGABRT")),
                    "{r}"
                );
            },
        ),
        (
            "sigkill",
            true,
            Box::new(|f| kill_worker(f, libc::SIGKILL)),
            |r| {
                assert_eq!(
                    (r["reason"].as_str(), r["signal"].as_str()),
                    (Some("signal"), Some("SIGKILL")),
                    "{r}"
                );
            },
        ),
        (
            "sigsegv",
            true,
            Box::new(|f| kill_worker(f, libc::SIGSEGV)),
            |r| {
                assert_eq!(
                    (r["reason"].as_str(), r["signal"].as_str()),
                    (Some("signal"), Some("SIGSEGV")),
                    "{r}"
                );
            },
        ),
        (
            "panic_core",
            true,
            Box::new(|f| assert_eq!(fault(f, "panic_core"), 202)),
            |r| {
                assert_eq!(
                    (r["reason"].as_str(), r["exit_code"].as_u64()),
                    (Some("exit"), Some(101)),
                    "{r}"
                );
            },
        ),
        (
            "hang",
            true,
            Box::new(|f| assert_eq!(fault(f, "hang"), 202)),
            |r| {
                assert_eq!(r["reason"], "hang", "{r}");
            },
        ),
    ];
    let mut total = 0;
    for (name, abrupt, act, check) in cases {
        let old = worker_pid(&f);
        let before = prober.now();
        let started = Instant::now();
        act(&f);
        let s = wait_restart(&f, old, total);
        let serving_again = started.elapsed();
        // The probe in flight when the worker went has finished once a later one is served.
        let settled = prober.now().served;
        assert!(wait_until(Duration::from_secs(20), || prober.now().served > settled));
        let during = prober.now().since(before);
        total = s["restarts_total"].as_u64().unwrap();
        let newest = s["restarts"].as_array().unwrap().last().unwrap().clone();
        check(&newest);
        eprintln!("{name}: worker {old} replaced, serving again after {serving_again:?}; connections meanwhile: {during:?}");
        assert_eq!(
            (during.refused, during.timeout, during.other),
            (0, 0, 0),
            "{name}: {during:?}"
        );
        if abrupt {
            // The prober has one connection open at a time: a worker killed outright can take
            // at most that one with it. Nothing else may fail.
            assert!(during.reset <= 1, "{name}: {during:?}");
        } else {
            assert_eq!(during.failed(), 0, "{name}: {during:?}");
        }
    }
    assert_eq!(total, 6);
    let s = server(&f);
    assert_eq!(s["worker"]["generation"], 7);
    assert_eq!(s["restarts"].as_array().unwrap().len(), 6);
    // The error ring survived the restarts.
    let (_, errors) = f.api("/api/v1/errors");
    assert!(
        errors["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["verbosity"] == "fatal"),
        "{errors}"
    );
    let all = prober.finish();
    eprintln!("connections during 6 restarts: {all:?}");
    assert!(all.served > 20);
    // Publisher and reader work on the new worker.
    let _p = Publisher::start(&f.url("live/after"), "tcp");
    f.wait_path_ready("live/after");
    assert!(ffprobe(&f.url("live/after"), "tcp").contains(&"h264:320:240".to_owned()));
}

/// A publisher over UDP written by hand.
fn udp_publisher(f: &Finch, path: &str, client_port: u16) -> Raw {
    let udp = format!(
        "RTP/AVP;unicast;client_port={client_port}-{};mode=record",
        client_port + 1
    );
    raw_publish(f, path, H264_SDP, &udp).0
}

#[test]
fn a_panic_in_a_connection_task_gives_back_what_it_held_and_ordinary_errors_restart_nothing() {
    let f = Finch::start_supervised("panictask", FAULTS);
    let pid = worker_pid(&f);
    assert_eq!(fault(&f, "error"), 202);
    assert_eq!(
        fault(&f, "panic_task"),
        409,
        "no RTSP connection to panic in yet"
    );
    // The publisher holds a path, a session, two UDP routes and a connection slot.
    let client_port = free_udp_pair();
    let mut publisher = udp_publisher(&f, "live/p", client_port);
    assert_eq!(server(&f)["connections"], 1);
    assert_eq!(f.api("/api/v1/paths/live/p").0, 200);
    // The panic happens inside the publisher's own connection task.
    assert_eq!(fault(&f, "panic_task"), 202);
    assert!(publisher.closed_within(Duration::from_secs(5)));
    let freed = wait_until(Duration::from_secs(5), || {
        f.api("/api/v1/paths/live/p").0 == 404
            && f.api("/api/v1/sessions").1["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
            && server(&f)["connections"] == 0
    });
    assert!(freed, "{}", f.log());
    // The path and the client ports are free: a new publisher gets both (200, not 455/461).
    let _again = udp_publisher(&f, "live/p", client_port);
    assert!(f
        .log()
        .contains("injected fault: panic in a connection task"));
    // Give a restart every chance to happen (heartbeat timeout is 2 s): none may.
    std::thread::sleep(Duration::from_secs(3));
    let s = server(&f);
    assert_eq!(s["worker"]["pid"].as_u64(), Some(pid));
    assert_eq!(s["restarts_total"], 0);
    assert_eq!(s["state"], "running");
    let (_, errors) = f.api("/api/v1/errors");
    assert!(errors["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ordinary error")));
}

#[test]
fn fault_injection_is_off_by_default() {
    let f = Finch::start_supervised("nofault", "");
    assert_eq!(fault(&f, "fatal"), 404);
    assert_eq!(server(&f)["restarts_total"], 0);
}

#[test]
fn a_crash_loop_gives_up_with_exit_3() {
    let mut f = Finch::start_supervised("loop", &format!("{FAULTS}crash_loop_limit = 2\n"));
    for _ in 0..3 {
        let old = worker_pid(&f);
        if old == 0 {
            break;
        }
        kill_worker(&f, libc::SIGKILL);
        wait_until(Duration::from_secs(10), || worker_pid(&f) != old);
    }
    assert_eq!(f.wait_exit(Duration::from_secs(15)), Some(3), "{}", f.log());
    assert!(f.log().contains("crash loop"), "{}", f.log());
}

#[test]
fn sigterm_and_sigint_stop_supervisor_and_worker_with_exit_0() {
    // DSS restarted on SIGINT; Finch stops, so Ctrl-C in a terminal stops the server.
    for (name, sig) in [("term", libc::SIGTERM), ("int", libc::SIGINT)] {
        let mut f = Finch::start_supervised(name, "");
        let worker = worker_pid(&f) as i32;
        f.signal(sig);
        assert_eq!(f.wait_exit(Duration::from_secs(15)), Some(0), "{}", f.log());
        // SAFETY: signal 0 only checks whether the process exists.
        let gone = || unsafe { libc::kill(worker, 0) } != 0;
        assert!(wait_until(Duration::from_secs(5), gone));
    }
}

#[test]
fn sigusr2_restarts_gracefully_and_keeps_readers_until_the_drain_timeout() {
    let f = Finch::start_supervised("usr2", "[supervisor]\ndrain_timeout_secs = 4\n");
    let _p = Publisher::start(&f.url("live/g"), "tcp");
    f.wait_path_ready("live/g");
    let old = worker_pid(&f);
    let mut reader = Raw::connect(f.rtsp_port);
    reader.play_tcp(&f.url("live/g"));
    let prober = Prober::start(f.rtsp_port);
    f.signal(libc::SIGUSR2);
    let s = wait_restart(&f, old, 0);
    let newest = s["restarts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(newest["reason"], "requested");
    // The old worker still feeds its reader for a while (the drain), then lets it go.
    let started = Instant::now();
    reader
        .stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 65536];
    let mut received_after = 0usize;
    while started.elapsed() < Duration::from_millis(1500) {
        if let Ok(n) = reader.stream.read(&mut buf) {
            received_after += n;
        }
    }
    assert!(
        received_after > 10_000,
        "the reader was cut off at once ({received_after} bytes)"
    );
    assert!(
        reader.closed_within(Duration::from_secs(10)),
        "the old worker never finished draining"
    );
    let all = prober.finish();
    eprintln!("connections during a graceful restart: {all:?}");
    assert_eq!(all.failed(), 0, "{all:?}");
    assert!(all.served > 0);
}

#[test]
fn sighup_reloads_a_good_config_and_keeps_the_old_one_on_a_bad_one() {
    let f = Finch::start_supervised("hup", "");
    let _p = Publisher::start(&f.url("live/h"), "tcp");
    f.wait_path_ready("live/h");
    let pid = worker_pid(&f);
    let original = std::fs::read_to_string(f.config_path()).unwrap();
    // A reader playing across both reloads.
    let mut reader = Raw::connect(f.rtsp_port);
    reader.play_tcp(&f.url("live/h"));
    // A broken file: refused, old config kept, nothing restarted, the stream goes on.
    std::fs::write(
        f.config_path(),
        format!("{original}\n[relay]\nreader_queue_packets = \"many\"\n"),
    )
    .unwrap();
    f.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || {
            f.api("/api/v1/errors").1["items"]
                .as_array()
                .is_some_and(|a| {
                    a.iter().any(|e| {
                        e["message"]
                            .as_str()
                            .unwrap_or_default()
                            .contains("reload refused")
                    })
                })
        }),
        "{}",
        f.log()
    );
    assert_eq!(
        f.api("/api/v1/config").1["relay"]["reader_queue_packets"],
        1024
    );
    let (status, body) = http(f.admin_port, "POST", "/api/v1/config/reload", "").unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("finch.toml:"), "{body}");
    assert_eq!(worker_pid(&f), pid);
    assert!(ffprobe(&f.url("live/h"), "tcp").contains(&"h264:320:240".to_owned()));
    // A good file: applied without a restart.
    std::fs::write(
        f.config_path(),
        format!("{original}\n[relay]\nreader_queue_packets = 2048\n"),
    )
    .unwrap();
    f.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || f
        .api("/api/v1/config")
        .1["relay"]["reader_queue_packets"]
        == 2048));
    assert_eq!(worker_pid(&f), pid);
    assert_eq!(server(&f)["restarts_total"], 0);
    // The reader kept receiving through both.
    let seqs = read_rtp_seqs(&mut reader, 0, Duration::from_secs(2));
    assert!(seqs.len() > 20, "the reader stopped receiving: {seqs:?}");
}

#[test]
fn twenty_worker_crashes_refuse_no_connection_and_a_reader_plays_again_after_each_kind() {
    let f = Finch::start_supervised(
        "twenty",
        "[supervisor]\ncrash_loop_limit = 30\nbackoff_initial_ms = 20\nbackoff_max_ms = 100\n",
    );
    let prober = Prober::start(f.rtsp_port);
    let mut total = 0;
    let mut gaps = Vec::new();
    for _ in 0..20 {
        let old = worker_pid(&f);
        let t = Instant::now();
        kill_worker(&f, libc::SIGKILL);
        let s = wait_restart(&f, old, total);
        gaps.push(t.elapsed());
        total = s["restarts_total"].as_u64().unwrap();
    }
    assert_eq!(total, 20);
    let all = prober.finish();
    let worst = gaps.iter().max().unwrap();
    eprintln!("20 SIGKILLs: connections {all:?}; worst gap until the API answered again {worst:?}");
    // One connection open at a time: each SIGKILL can take at most the one in flight.
    assert_eq!((all.refused, all.timeout, all.other), (0, 0, 0), "{all:?}");
    assert!(all.reset <= 20, "{all:?}");
    // From a crash to a reconnecting publisher's stream reaching a new reader. A real camera
    // retries its connection; this one connects once the worker has been replaced.
    let old = worker_pid(&f);
    let t = Instant::now();
    kill_worker(&f, libc::SIGKILL);
    wait_restart(&f, old, total);
    let _p = Publisher::start(&f.url("live/again"), "tcp");
    f.wait_path_ready("live/again");
    let frames = ffmpeg_count_frames(&f.url("live/again"), "tcp", 1);
    eprintln!(
        "crash to a new reader's first second of video: {:?} ({frames} frames)",
        t.elapsed()
    );
    assert!(frames > 0);
}

#[test]
fn foreground_mode_speaks_sd_notify() {
    use std::os::unix::net::UnixDatagram;
    let dir = temp_dir("notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let rtsp = free_tcp_port();
    let admin = free_tcp_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_finch"))
        .args([
            "-d",
            "--rtsp-port",
            &rtsp.to_string(),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .env("FINCH_RTSP__UDP", "false")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        let n = sock.recv(&mut buf).expect("no sd_notify message");
        seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    loop {
        let n = sock.recv(&mut buf).expect("no STOPPING=1");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn pid_files_hold_the_supervisor_or_the_foreground_worker_and_go_away_at_exit() {
    let dir = temp_dir("pidfiles");
    for (mode, supervised) in [("supervised", true), ("foreground", false)] {
        let pid_file = dir.join(format!("{mode}.pid"));
        let extra = format!("[supervisor]\npid_file = \"{}\"\n", pid_file.display());
        let mut f = if supervised {
            Finch::start_supervised(&format!("pid-{mode}"), &extra)
        } else {
            Finch::start(&format!("pid-{mode}"), &extra)
        };
        let written: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(written, f.pid(), "{mode}");
        if supervised {
            assert_ne!(u64::from(written), worker_pid(&f));
        } else {
            assert_eq!(u64::from(written), worker_pid(&f));
        }
        f.signal(libc::SIGTERM);
        assert_eq!(f.wait_exit(Duration::from_secs(15)), Some(0));
        assert!(!pid_file.exists(), "{mode}: pid file left behind");
    }
}

#[test]
fn the_api_restarts_the_worker_gracefully() {
    let f = Finch::start_supervised("apirestart", "");
    let old = worker_pid(&f);
    let (status, _) = http(f.admin_port, "POST", "/api/v1/server/restart", "").unwrap();
    assert_eq!(status, 202);
    let s = wait_restart(&f, old, 0);
    let newest = s["restarts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(newest["reason"], "requested");
    assert_eq!(s["worker"]["generation"], 2);
    // Graceful restarts do not count towards the crash loop, and the metrics say why.
    let metrics = http(f.admin_port, "GET", "/metrics", "").unwrap().1;
    assert!(
        metrics.contains("finch_worker_restarts_total{reason=\"requested\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_reload_that_moves_the_rtsp_port_rebinds_and_restarts_gracefully() {
    let f = Finch::start_supervised("rebind", "");
    let old = worker_pid(&f);
    let new_port = free_tcp_port();
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    let moved = text.replace(
        &format!("port = {}\n", f.rtsp_port),
        &format!("port = {new_port}\n"),
    );
    assert_ne!(moved, text);
    std::fs::write(f.config_path(), moved).unwrap();
    f.signal(libc::SIGHUP);
    let s = wait_restart(&f, old, 0);
    assert_eq!(
        s["restarts"].as_array().unwrap().last().unwrap()["reason"],
        "requested"
    );
    let mut raw = Raw::connect(new_port);
    assert_eq!(raw.request("OPTIONS", "*", 1, &[], "").status, 200);
    assert!(
        wait_until(Duration::from_secs(10), || TcpStream::connect((
            "127.0.0.1",
            f.rtsp_port
        ))
        .is_err()),
        "the old port still accepts"
    );
}

/// The supervisor's live children.
fn children(pid: u32) -> Vec<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_graceful_restart_during_a_crash_backoff_starts_one_worker_not_two() {
    let f = Finch::start_supervised(
        "usr2backoff",
        "[supervisor]\nbackoff_initial_ms = 20000\nbackoff_max_ms = 30000\n",
    );
    // First crash: restarted at once. Second crash: the next start waits 20 s.
    let old = worker_pid(&f);
    kill_worker(&f, libc::SIGKILL);
    let s = wait_restart(&f, old, 0);
    let second = s["worker"]["pid"].as_u64().unwrap();
    kill_worker(&f, libc::SIGKILL);
    assert!(wait_until(Duration::from_secs(5), || children(f.pid()).is_empty()));
    let asked = Instant::now();
    f.signal(libc::SIGUSR2);
    // The pending start happens now; it is the crash's restart, not a second one.
    let s = wait_restart(&f, second, 1);
    assert_eq!(s["restarts_total"], 2);
    let took = asked.elapsed();
    eprintln!("SIGUSR2 during a 20 s backoff: serving again after {took:?}");
    assert!(
        took < Duration::from_secs(15),
        "SIGUSR2 did not cut the backoff short ({took:?})"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        children(f.pid()).len(),
        1,
        "more than one worker: {:?}",
        children(f.pid())
    );
    assert_eq!(worker_pid(&f), s["worker"]["pid"].as_u64().unwrap());
}

#[test]
fn an_upgrade_is_picked_up_and_a_broken_one_leaves_the_old_worker_serving() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("upgrade-bin");
    let bin = dir.join("finch");
    std::fs::copy(env!("CARGO_BIN_EXE_finch"), &bin).unwrap();
    let f = Finch::start_supervised_binary(&bin, "upgrade", "");
    let first = worker_pid(&f);
    // A broken "upgrade": the new worker cannot even start. The old one must keep serving.
    let broken = dir.join("finch.broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 255\n").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&broken, &bin).unwrap();
    f.signal(libc::SIGUSR2);
    // The serving worker's API shows the history it was started with; the supervisor says it.
    let failed = wait_until(Duration::from_secs(10), || {
        f.log().contains("the current one keeps serving")
            || f.log().contains("the current worker keeps serving")
    });
    assert!(failed, "{}", f.log());
    let mut f = f;
    assert!(
        f.alive(),
        "the supervisor gave up on a broken upgrade: {}",
        f.log()
    );
    assert_eq!(
        worker_pid(&f),
        first,
        "the serving worker was replaced by a broken one"
    );
    let mut raw = Raw::connect(f.rtsp_port);
    assert_eq!(raw.request("OPTIONS", "*", 1, &[], "").status, 200);
    // A good upgrade at the same path is picked up.
    let good = dir.join("finch.good");
    std::fs::copy(env!("CARGO_BIN_EXE_finch"), &good).unwrap();
    std::fs::rename(&good, &bin).unwrap();
    f.signal(libc::SIGUSR2);
    let s = wait_restart(&f, first, 1);
    assert_eq!(s["worker"]["generation"], 3, "{s}");
}

#[test]
fn a_worker_that_cannot_be_started_after_a_crash_is_retried_with_backoff() {
    let dir = temp_dir("spawnfail-bin");
    let bin = dir.join("finch");
    std::fs::copy(env!("CARGO_BIN_EXE_finch"), &bin).unwrap();
    let f = Finch::start_supervised_binary(
        &bin,
        "spawnfail",
        "[supervisor]\nbackoff_initial_ms = 100\nbackoff_max_ms = 400\ncrash_loop_limit = 100\n",
    );
    let old = worker_pid(&f);
    // Mid-upgrade, say: the binary is not there when the crashed worker is restarted.
    let away = dir.join("finch.away");
    std::fs::rename(&bin, &away).unwrap();
    kill_worker(&f, libc::SIGKILL);
    let tried = wait_until(Duration::from_secs(10), || {
        f.log().matches("cannot start a worker").count() >= 2
    });
    assert!(tried, "{}", f.log());
    let mut f = f;
    assert!(f.alive(), "the supervisor gave up: {}", f.log());
    std::fs::rename(&away, &bin).unwrap();
    let s = wait_restart(&f, old, 0);
    let messages: Vec<&str> = s["restarts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["message"].as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("cannot start the worker")),
        "{s}"
    );
    let mut raw = Raw::connect(f.rtsp_port);
    assert_eq!(raw.request("OPTIONS", "*", 1, &[], "").status, 200);
}

#[test]
fn a_reload_that_adds_a_listen_address_keeps_the_existing_one() {
    let f = Finch::start_supervised("addaddr", "");
    let old = worker_pid(&f);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    let more = text.replace(
        "listen_addresses = [\"127.0.0.1\"]",
        "listen_addresses = [\"127.0.0.1\", \"127.0.0.2\"]",
    );
    assert_ne!(more, text);
    std::fs::write(f.config_path(), more).unwrap();
    f.signal(libc::SIGHUP);
    wait_restart(&f, old, 0);
    for ip in ["127.0.0.1", "127.0.0.2"] {
        let mut s = TcpStream::connect((ip, f.rtsp_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"RTSP/1.0 200"), "{ip}");
    }
}
