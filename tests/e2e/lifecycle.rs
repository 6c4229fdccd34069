//! The worker's life under its supervisor, apart from crashes: signals, reloads, graceful
//! restarts and upgrades, pid files, sd_notify.

use crate::harness::*;
use crate::supervisor::{server, wait_restart, worker_pid, Prober};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

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
fn sigusr2_restarts_gracefully_refuses_no_connection_and_the_reader_moves_on() {
    let f = Finch::start_supervised("usr2", "[supervisor]\ndrain_timeout_secs = 30\n");
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
    // The old worker hands its sessions over and leaves long before the drain timeout.
    // SAFETY: signal 0 only checks whether the process exists.
    let gone = || unsafe { libc::kill(old as i32, 0) } != 0;
    assert!(wait_until(Duration::from_secs(5), gone), "{}", f.log());
    // The reader's connection moved with it: the new worker feeds it.
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
        "the reader got nothing after the switch ({received_after} bytes)\n{}",
        f.log()
    );
    assert!(
        !reader.closed_within(Duration::from_secs(2)),
        "the reader was closed"
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
        .env("FINCH_HLS__ENABLED", "false")
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
