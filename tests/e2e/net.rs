//! Sockets: both address families at once, descriptors handed over as systemd does, and one
//! connection limit for the whole worker.

use crate::harness::*;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn both_wildcard_families_bind_and_serve_ipv4_and_ipv6_readers_over_udp_and_tcp() {
    let f = Finch::start(
        "dualstack",
        "[rtsp]\nlisten_addresses = [\"0.0.0.0\", \"::\"]\n",
    );
    let _p = Publisher::start(&f.url("live/ds"), "tcp");
    f.wait_path_ready("live/ds");
    for url in [f.url("live/ds"), f.url6("live/ds")] {
        for transport in ["udp", "tcp"] {
            let streams = ffprobe(&url, transport);
            assert!(
                streams.contains(&"h264:320:240".to_owned()),
                "{url} over {transport}: {streams:?}\n{}",
                f.log()
            );
        }
    }
}

/// A child process killed when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_ipv4_reader_is_refused_udp_that_only_ipv6_sockets_could_carry() {
    // As systemd socket activation would hand them over: RTSP and admin on IPv4, the RTP/RTCP
    // pair on ::1 only.
    let rtsp = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let rtp_port = free_udp_pair();
    let rtp = UdpSocket::bind(("::1", rtp_port)).unwrap();
    let rtcp = UdpSocket::bind(("::1", rtp_port + 1)).unwrap();
    let rtsp_port = rtsp.local_addr().unwrap().port();
    let admin_port = admin.local_addr().unwrap().port();
    let dir = temp_dir("inherit6");
    let config = dir.join("finch.toml");
    std::fs::write(
        &config,
        format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n"),
    )
    .unwrap();
    // Copies numbered high (close-on-exec, so no other test's child inherits them), so that
    // moving them to 3..6 in the child cannot overwrite one not yet moved.
    let staged: Vec<std::os::fd::OwnedFd> = [
        rtsp.as_raw_fd(),
        admin.as_raw_fd(),
        rtp.as_raw_fd(),
        rtcp.as_raw_fd(),
    ]
    .iter()
    .map(|fd| {
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own, or -1.
        let new = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100) };
        assert!(new >= 100);
        // SAFETY: `new` was just returned to us and is owned by nobody else.
        unsafe { std::os::fd::FromRawFd::from_raw_fd(new) }
    })
    .collect();
    let fds: Vec<i32> = staged.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new("sh");
    // LISTEN_PID must be the server's own pid: the shell's, which exec keeps.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$0\" -d --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_finch"))
        .arg(&config)
        .env("LISTEN_FDS", "4")
        .env("FINCH_HLS__ENABLED", "false")
        .env("LISTEN_FDNAMES", "rtsp:admin:rtp:rtcp")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("finch.log")).unwrap(),
        ));
    // SAFETY: between fork and exec only dup2 runs, on descriptors this process owns; targets
    // 3..6 are below every source.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            for (i, fd) in fds.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let _child = Child(cmd.spawn().unwrap());
    drop((rtsp, admin, rtp, rtcp, staged));
    let log = || std::fs::read_to_string(dir.join("finch.log")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || http(
            admin_port, "GET", "/healthz", ""
        )
        .is_ok_and(|(s, _)| s == 200)),
        "{}",
        log()
    );
    // A publisher, so there is a track to set up.
    let mut publisher = Raw::connect(rtsp_port);
    let url = format!("rtsp://127.0.0.1:{rtsp_port}/live/v6");
    let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n";
    let r = publisher.request("ANNOUNCE", &url, 1, &["Content-Type: application/sdp"], sdp);
    assert_eq!(r.status, 200, "{r:?}");
    let session = format!("Session: {}", r.session_id());
    // The publisher's UDP SETUP: refused the same way.
    let r = publisher.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        2,
        &[
            "Transport: RTP/AVP;unicast;client_port=40100-40101;mode=record",
            &session,
        ],
        "",
    );
    assert_eq!(r.status, 461, "{r:?}");
    let r = publisher.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        3,
        &[
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
            &session,
        ],
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        publisher.request("RECORD", &url, 4, &[&session], "").status,
        200
    );
    // An IPv4 reader asking for UDP gets 461, not 200 and silence; TCP works.
    let mut reader = Raw::connect(rtsp_port);
    let udp = reader.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        1,
        &["Transport: RTP/AVP;unicast;client_port=40102-40103"],
        "",
    );
    assert_eq!(udp.status, 461, "{udp:?}\n{}", log());
    let tcp = reader.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        2,
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        "",
    );
    assert_eq!(tcp.status, 200, "{tcp:?}");
}

fn options(ip: &str, port: u16) -> u16 {
    let mut s = TcpStream::connect((ip, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    let status = String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Kept open: the connection counts against the limit while it lives.
    std::mem::forget(s);
    status
}

#[test]
fn max_connections_is_one_limit_for_all_listeners_and_a_reload_changes_it() {
    let f = Finch::start(
        "maxconn",
        "[rtsp]\nlisten_addresses = [\"127.0.0.1\", \"127.0.0.2\"]\n[limits]\nmax_connections = 2\n",
    );
    assert_eq!(options("127.0.0.1", f.rtsp_port), 200);
    assert_eq!(options("127.0.0.2", f.rtsp_port), 200);
    // Each listener has one connection: the worker has two, its limit.
    assert_eq!(options("127.0.0.1", f.rtsp_port), 503);
    assert_eq!(options("127.0.0.2", f.rtsp_port), 503);
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(
        f.config_path(),
        text.replace("max_connections = 2", "max_connections = 3"),
    )
    .unwrap();
    let (status, body) = http(f.admin_port, "POST", "/api/v1/config/reload", "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(options("127.0.0.2", f.rtsp_port), 200);
    assert_eq!(options("127.0.0.1", f.rtsp_port), 503);
}

/// A self-signed certificate and key for `localhost` and 127.0.0.1, made with openssl.
pub(crate) fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

fn rtsps_config(port: u16, cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "[rtsps]\nenabled = true\nport = {port}\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

#[test]
fn rtsps_publishes_and_plays_with_ffmpeg_ffprobe_and_gstreamer() {
    let dir = temp_dir("rtsps-cert");
    let (cert, key) = certificate(&dir);
    let port = free_tcp_port();
    let f = Finch::start("rtsps", &rtsps_config(port, &cert, &key));
    let url = |path: &str| format!("rtsps://127.0.0.1:{port}/{path}");
    // ffmpeg publishes over TLS, RTP interleaved inside it.
    let _p = Publisher::start(&url("live/tls"), "tcp");
    f.wait_path_ready("live/tls");
    let (_, p) = f.api("/api/v1/paths/live/tls");
    assert_eq!(p["source"]["transport"], "tcp", "{p}");
    let streams = ffprobe(&url("live/tls"), "tcp");
    assert!(
        streams.contains(&"h264:320:240".to_owned()),
        "{streams:?}\n{}",
        f.log()
    );
    // Plain RTSP serves the same path.
    assert!(ffprobe(&f.url("live/tls"), "tcp").contains(&"h264:320:240".to_owned()));
    let (frames, stderr) = gst_decode(&url("live/tls"), &["tls-validation-flags=0"], 20);
    assert_eq!(frames, 20, "{stderr}");
    // Plain RTSP spoken to the TLS port is no handshake: the connection is closed, the server
    // goes on.
    let mut plain = Raw::connect(port);
    plain.send(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n");
    assert!(plain.closed_within(Duration::from_secs(15)));
    assert!(ffprobe(&url("live/tls"), "tcp").contains(&"h264:320:240".to_owned()));
}

#[test]
fn an_unreadable_certificate_stops_the_start_and_is_refused_on_reload() {
    let dir = temp_dir("rtsps-bad");
    let (cert, key) = certificate(&dir);
    let port = free_tcp_port();
    // At start: exit 255 naming the file.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[rtsp]\nport = {}\nudp = false\n[admin]\nenabled = false\n{}",
            free_tcp_port(),
            rtsps_config(port, &dir.join("missing.pem"), &key)
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_finch"))
        .args(["-d", "--config"])
        .arg(&bad)
        .env("FINCH_HLS__ENABLED", "false")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.pem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // On reload: 400, and the running pair keeps serving.
    let f = Finch::start("rtsps-reload", &rtsps_config(port, &cert, &key));
    let text = std::fs::read_to_string(f.config_path()).unwrap();
    std::fs::write(
        f.config_path(),
        text.replace(&cert.display().to_string(), &key.display().to_string()),
    )
    .unwrap();
    let (status, body) = http(f.admin_port, "POST", "/api/v1/config/reload", "").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cert_file"), "{body}");
    let _p = Publisher::start(&format!("rtsps://127.0.0.1:{port}/live/r"), "tcp");
    f.wait_path_ready("live/r");
}
