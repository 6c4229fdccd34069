//! The command line (CONTRACT.md "CLI" and "Exit codes").

use crate::harness::*;
use std::process::Command;

fn finch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_finch"));
    // Many tests run at once: none may take HLS's default port.
    c.env("FINCH_HLS__ENABLED", "false");
    c
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
    // --hls, like --admin, overrides the file and the environment.
    let out = finch()
        .args(["--print-config", "--hls", "127.0.0.1:9998"])
        .output()
        .unwrap();
    let hls = String::from_utf8(out.stdout).unwrap();
    assert!(hls.contains("listen = \"127.0.0.1:9998\""), "{hls}");
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
fn a_second_finch_that_cannot_bind_leaves_the_first_one_s_pid_file() {
    let dir = temp_dir("pidtaken");
    let pid_file = dir.join("finch.pid");
    let extra = format!("[supervisor]\npid_file = \"{}\"\n", pid_file.display());
    for supervised in [false, true] {
        let first = if supervised {
            Finch::start_supervised("pidtaken-first-s", &extra)
        } else {
            Finch::start("pidtaken-first", &extra)
        };
        let mut second = finch();
        if !supervised {
            second.arg("-d");
        }
        let out = second
            .arg("--config")
            .arg(first.config_path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(255), "supervised={supervised}");
        let held = std::fs::read_to_string(&pid_file).unwrap_or_default();
        assert_eq!(
            held.trim(),
            first.pid().to_string(),
            "supervised={supervised}: the running finch's pid file was overwritten or removed"
        );
        drop(first);
        let _ = std::fs::remove_file(&pid_file);
    }
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
