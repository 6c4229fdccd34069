//! The command line (CONTRACT.md "CLI" and "Exit codes").

use crate::harness::*;
use std::process::Command;

fn finch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_finch"))
}

#[test]
fn check_config_reports_file_line_column_and_exits_255() {
    let dir = temp_dir("check");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[rtsp]\nport = 8554\nprot = 1\n").unwrap();
    let out = finch().arg("--check-config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("{}:3:1: ", bad.display())),
        "{err}"
    );

    let good = dir.join("good.toml");
    std::fs::write(&good, "[rtsp]\nport = 8555\n").unwrap();
    let out = finch().arg("--check-config").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0));

    // Environment overrides apply, and a bad one is named.
    let out = finch()
        .arg("--check-config")
        .arg(&good)
        .env("FINCH_RTSP__PROT", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FINCH_RTSP__PROT"));
}

#[test]
fn print_config_round_trips_through_check_config() {
    let dir = temp_dir("print");
    let out = finch()
        .arg("--print-config")
        .env("FINCH_RTSP__PORT", "9999")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("port = 9999"), "{text}");
    let file = dir.join("printed.toml");
    std::fs::write(&file, &text).unwrap();
    let out = finch().arg("--check-config").arg(&file).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_config_file_exits_255() {
    let out = finch()
        .args(["-d", "--config", "/nonexistent/finch.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/finch.toml"));
}

#[test]
fn port_taken_exits_255_supervised_or_not_and_starts_no_worker() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let admin = free_tcp_port();
    for foreground in [false, true] {
        let mut cmd = finch();
        if foreground {
            cmd.arg("-d");
        }
        let out = cmd
            .args([
                "--rtsp-port",
                &port.to_string(),
                "--admin",
                &format!("127.0.0.1:{admin}"),
            ])
            .env("FINCH_RTSP__LISTEN_ADDRESSES", "[\"127.0.0.1\"]")
            .env("FINCH_RTSP__UDP", "false")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(255), "foreground={foreground}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot run") && err.contains(&port.to_string()),
            "{err}"
        );
        assert!(!err.contains("worker started"), "{err}");
    }
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
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("RTSP listening"), "{text}");
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
fn flags_beat_environment_beat_file() {
    let dir = temp_dir("precedence");
    let file = dir.join("f.toml");
    std::fs::write(
        &file,
        "[rtsp]\nport = 7001\nsession_timeout_secs = 30\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let out = finch()
        .args(["--print-config", "--rtsp-port", "7003", "--config"])
        .arg(&file)
        .env("FINCH_RTSP__PORT", "7002")
        .env("FINCH_RTSP__SESSION_TIMEOUT_SECS", "40")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\nport = 7003\n"),
        "flag over environment:\n{text}"
    );
    assert!(
        text.contains("\nsession_timeout_secs = 40\n"),
        "environment over file:\n{text}"
    );
    assert!(
        text.contains("\nlevel = \"warn\"\n"),
        "file over defaults:\n{text}"
    );
}
