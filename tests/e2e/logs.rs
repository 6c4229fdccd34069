//! The log: a file that SIGUSR1 reopens, a level a reload changes, no colour codes where no
//! terminal reads them, and a destination that stops reading stalls nothing.

use crate::harness::*;
use std::process::Command;
use std::time::Duration;

fn finch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_finch"));
    // Many tests run at once: none may take HLS's default port.
    c.env("FINCH_HLS__ENABLED", "false");
    c
}

#[test]
fn log_file_reopens_on_sigusr1_level_follows_reload_and_status_lines_print() {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir("logfile");
    let log = dir.join("finch.log");
    let rtsp = free_tcp_port();
    let admin = free_tcp_port();
    let config = dir.join("finch.toml");
    let base = format!(
        "[rtsp]\nlisten_addresses = [\"127.0.0.1\"]\nport = {rtsp}\nudp = false\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[log]\nfile = \"{}\"\nstats_interval_secs = 1\n",
        log.display()
    );
    std::fs::write(&config, format!("{base}level = \"info\"\n")).unwrap();
    let mut child = finch()
        .args(["-d", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // DSS's status line on stdout: a header, then figures.
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let header = out.next().unwrap().unwrap();
    assert!(
        header.contains("kBits/Sec") && header.contains("Readers"),
        "{header}"
    );
    let figures = out.next().unwrap().unwrap();
    assert_eq!(figures.split_whitespace().count(), 8, "{figures}");
    // The status line and the log file are written by different tasks: the file may trail.
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("RTSP listening"))
        }),
        "{:?}",
        std::fs::read_to_string(&log)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("connection closed"),
        "debug lines at info level"
    );
    // Rotation: move the file away, SIGUSR1, a new file appears.
    let rotated = dir.join("finch.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("log file reopened"))
    }));
    // A reload to debug level takes effect without a restart.
    std::fs::write(&config, format!("{base}level = \"debug\"\n")).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        let _ = std::net::TcpStream::connect(("127.0.0.1", rtsp));
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("connection closed"))
    }));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn logs_going_to_a_file_or_pipe_have_no_colour_codes() {
    let f = Finch::start("nocolour", "");
    let mut raw = Raw::connect(f.rtsp_port);
    assert_eq!(raw.request("OPTIONS", "*", 1, &[], "").status, 200);
    let log = f.log();
    assert!(log.contains("RTSP listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape sequences in a redirected log"
    );
}

#[test]
fn a_log_destination_that_stops_reading_stalls_nothing_and_lost_lines_are_counted() {
    // stderr is a pipe nobody reads: once its buffer is full, every write to it would block.
    let (_unread, writer) = std::io::pipe().unwrap();
    let f = Finch::start_with_stderr(
        "stucklog",
        "[supervisor]\nheartbeat_timeout_secs = 2\n",
        &[],
        writer.into(),
    );
    let pid = f.api("/api/v1/server").1["worker"]["pid"].clone();
    // Debug logging of 30,000 requests is far more than the pipe and the log queue hold.
    let mut raw = Raw::connect(f.rtsp_port);
    for round in 0..150u32 {
        let mut batch = String::new();
        for i in 0..200 {
            batch.push_str(&format!(
                "OPTIONS * RTSP/1.0\r\nCSeq: {}\r\n\r\n",
                round * 200 + i
            ));
        }
        raw.send(batch.as_bytes());
        for _ in 0..200 {
            assert_eq!(raw.response().map(|r| r.status), Some(200));
        }
    }
    // Three heartbeat timeouts: a worker stalled on its log would have been killed as hung.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        assert_eq!(raw.request("OPTIONS", "*", 1, &[], "").status, 200);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, s) = f.api("/api/v1/server");
    assert_eq!(status, 200);
    assert_eq!(s["worker"]["pid"], pid, "the worker was replaced: {s}");
    assert_eq!(s["restarts_total"], 0, "{s}");
    let metrics = http(f.admin_port, "GET", "/metrics", "").unwrap().1;
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("finch_log_lines_dropped_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no finch_log_lines_dropped_total:\n{metrics}"));
    assert!(dropped > 0.0, "{metrics}");
}
