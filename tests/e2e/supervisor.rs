//! The supervisor restarting crashed, hung and fatal workers (DESIGN.md §1): what restarts,
//! what does not, why, and that no connection is lost meanwhile.

use crate::harness::*;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FAULTS: &str = "[debug]\nfault_injection = true\n[supervisor]\nheartbeat_timeout_secs = 2\nbackoff_initial_ms = 50\ndrain_timeout_secs = 2\n";

pub(crate) fn server(f: &Finch) -> Value {
    f.api("/api/v1/server").1
}

pub(crate) fn worker_pid(f: &Finch) -> u64 {
    server(f)["worker"]["pid"].as_u64().unwrap_or(0)
}

pub(crate) fn fault(f: &Finch, kind: &str) -> u16 {
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
pub(crate) fn wait_restart(f: &Finch, old: u64, total_before: u64) -> Value {
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
pub(crate) struct Outcomes {
    pub(crate) served: u64,
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
    pub(crate) fn failed(&self) -> u64 {
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
pub(crate) struct Prober {
    stop: Arc<AtomicBool>,
    outcomes: Arc<std::sync::Mutex<Outcomes>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    pub(crate) fn start(port: u16) -> Prober {
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

    pub(crate) fn finish(mut self) -> Outcomes {
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

pub(crate) fn kill_worker(f: &Finch, sig: i32) {
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
