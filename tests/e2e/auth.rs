//! Users and permissions with real clients: ffmpeg and GStreamer publish, ffprobe, GStreamer
//! and retina read, each refused without credentials, with wrong ones, where the user may not,
//! and from an address the user may not come from; and served with the right ones.

use crate::harness::*;
use futures::StreamExt;
use std::process::Command;
use std::time::Duration;

pub(crate) const USERS: &str = r#"
[[auth.users]]
user = "cam"
pass = "campass"
permissions = [{ action = "publish", path = "cams/*" }]

[[auth.users]]
user = "viewer"
pass = "viewpass"
permissions = [{ action = "read", path = "cams/*" }]

[[auth.users]]
user = "faraway"
pass = "farpass"
ips = ["127.0.0.2/32"]
permissions = [{ action = "read" }]
"#;

/// `rtsp://user:pass@127.0.0.1:port/path`
fn url_as(f: &Finch, user: &str, pass: &str, path: &str) -> String {
    format!("rtsp://{user}:{pass}@127.0.0.1:{}/{path}", f.rtsp_port)
}

/// ffmpeg publishing the clip for 2 s: whether it succeeded, and what it said.
fn publish_once(url: &str) -> (bool, String) {
    let out = Command::new("timeout")
        .args(["20", "ffmpeg", "-hide_banner", "-re", "-i"])
        .arg(clip())
        .args([
            "-t",
            "2",
            "-c",
            "copy",
            "-f",
            "rtsp",
            "-rtsp_transport",
            "tcp",
        ])
        .arg(url)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// ffprobe's streams and its stderr.
fn probe(url: &str) -> (Vec<String>, String) {
    let out = Command::new("timeout")
        .args(["30", "ffprobe", "-v", "error", "-rtsp_transport", "tcp"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(url)
        .output()
        .unwrap();
    let streams = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').replace(',', ":"))
        .filter(|l| !l.is_empty())
        .collect();
    (streams, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn published(f: &Finch) -> Publisher {
    let p = Publisher::start(&url_as(f, "cam", "campass", "cams/1"), "tcp");
    f.wait_path_ready("cams/1");
    p
}

#[test]
fn ffmpeg_publishes_only_with_a_publisher_s_right_credentials() {
    let f = Finch::start("auth-pub", USERS);
    let (ok, err) = publish_once(&f.url("cams/1"));
    assert!(!ok && err.contains("401"), "no credentials: {err}");
    let (ok, err) = publish_once(&url_as(&f, "cam", "wrong", "cams/1"));
    assert!(!ok && err.contains("401"), "wrong password: {err}");
    let (ok, err) = publish_once(&url_as(&f, "viewer", "viewpass", "cams/1"));
    assert!(!ok && err.contains("403"), "a reader publishing: {err}");
    let (ok, err) = publish_once(&url_as(&f, "cam", "campass", "other/1"));
    assert!(!ok && err.contains("403"), "outside its paths: {err}");
    let _p = published(&f);
}

#[test]
fn ffprobe_reads_only_with_a_reader_s_right_credentials_from_its_address() {
    let f = Finch::start("auth-read", USERS);
    let _p = published(&f);
    let (streams, err) = probe(&f.url("cams/1"));
    assert!(
        streams.is_empty() && err.contains("401"),
        "no credentials: {streams:?} {err}"
    );
    let (streams, err) = probe(&url_as(&f, "viewer", "nope", "cams/1"));
    assert!(streams.is_empty() && err.contains("401"), "wrong: {err}");
    let (streams, err) = probe(&url_as(&f, "cam", "campass", "cams/1"));
    assert!(
        streams.is_empty() && err.contains("403"),
        "a publisher reading: {err}"
    );
    // faraway may read, but only from 127.0.0.2; ffprobe comes from 127.0.0.1.
    let (streams, err) = probe(&url_as(&f, "faraway", "farpass", "cams/1"));
    assert!(
        streams.is_empty() && err.contains("403"),
        "wrong address: {err}"
    );
    let (streams, err) = probe(&url_as(&f, "viewer", "viewpass", "cams/1"));
    assert!(
        streams.contains(&"h264:320:240".to_owned()),
        "{streams:?} {err}\n{}",
        f.log()
    );
    // An unknown path: authenticate first, then 404.
    let (_, err) = probe(&f.url("cams/none"));
    assert!(err.contains("401"), "{err}");
    let (_, err) = probe(&url_as(&f, "viewer", "viewpass", "cams/none"));
    assert!(err.contains("404"), "{err}");
    // No password ever reaches the log or the API.
    let (_, config) = f.api("/api/v1/config");
    let text = config.to_string();
    assert!(
        text.contains("<redacted>") && !text.contains("viewpass"),
        "{text}"
    );
    assert!(!f.log().contains("viewpass") && !f.log().contains("campass"));
}

#[test]
fn gstreamer_reads_and_publishes_with_credentials() {
    // GStreamer retries refused credentials with each scheme offered: several failures per
    // attempt, and this test makes many from 127.0.0.1 (the login limit has its own test).
    let f = Finch::start("auth-gst", &format!("{USERS}\n[auth]\nfail_limit = 1000\n"));
    let _p = published(&f);
    let read = |user: &str, pass: &str| {
        gst_decode(
            &f.url("cams/1"),
            &[
                "protocols=tcp",
                &format!("user-id={user}"),
                &format!("user-pw={pass}"),
            ],
            20,
        )
    };
    for (user, pass, why) in [
        ("", "", "no credentials"),
        ("viewer", "nope", "wrong credentials"),
        ("cam", "campass", "a publisher reading"),
        ("faraway", "farpass", "the wrong address"),
    ] {
        let (frames, _) = read(user, pass);
        assert_eq!(frames, 0, "{why}: played");
    }
    let (frames, stderr) = read("viewer", "viewpass");
    assert_eq!(frames, 20, "{stderr}\n{}", f.log());
    // rtspclientsink as a publisher: refused without the right publisher, then publishing.
    let publish = |user: &str, pass: &str| {
        Command::new("timeout")
            .args(["60", "gst-launch-1.0", "-q", "filesrc"])
            .arg(format!("location={}", clip().display()))
            .args([
                "!",
                "qtdemux",
                "!",
                "queue",
                "!",
                "h264parse",
                "!",
                "rtspclientsink",
            ])
            .arg(format!("location={}", f.url("cams/gst")))
            .args([
                "protocols=tcp",
                &format!("user-id={user}"),
                &format!("user-pw={pass}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    for (user, pass) in [("", ""), ("cam", "wrong"), ("viewer", "viewpass")] {
        let mut refused = KillOnDrop(publish(user, pass));
        let ended = wait_until(Duration::from_secs(20), || {
            matches!(refused.0.try_wait(), Ok(Some(_)))
        });
        assert!(ended, "{user}: rtspclientsink went on");
        assert_eq!(f.api("/api/v1/paths/cams/gst").0, 404, "{user} published");
    }
    let _publisher = KillOnDrop(publish("cam", "campass"));
    f.wait_path_ready("cams/gst");
}

/// A child process killed when the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn retina_reads_with_digest_and_is_refused_with_a_wrong_password() {
    let f = Finch::start("auth-retina", USERS);
    let _p = published(&f);
    let read = |user: &str, pass: &str| {
        let url = url::Url::parse(&f.url("cams/1")).unwrap();
        let creds = (!user.is_empty()).then(|| retina::client::Credentials {
            username: user.into(),
            password: pass.into(),
        });
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use retina::client::{PlayOptions, Session, SessionOptions, SetupOptions};
                let mut s = Session::describe(url, SessionOptions::default().creds(creds))
                    .await
                    .map_err(|e| e.to_string())?;
                s.setup(0, SetupOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut frames = s
                    .play(PlayOptions::default())
                    .await
                    .map_err(|e| e.to_string())?
                    .demuxed()
                    .map_err(|e| e.to_string())?;
                let mut n = 0;
                while n < 10 {
                    match tokio::time::timeout(Duration::from_secs(10), frames.next()).await {
                        Ok(Some(Ok(retina::codec::CodecItem::VideoFrame(_)))) => n += 1,
                        Ok(Some(Ok(_))) => {}
                        other => return Err(format!("{other:?}")),
                    }
                }
                Ok::<_, String>(n)
            })
    };
    for (user, pass, status) in [
        ("", "", "401"),
        ("viewer", "nope", "401"),
        ("cam", "campass", "403"),
        ("faraway", "farpass", "403"),
    ] {
        let r = read(user, pass);
        assert!(
            r.as_ref().is_err_and(|e| e.contains(status)),
            "{user}: {r:?}"
        );
    }
    assert_eq!(read("viewer", "viewpass"), Ok(10), "{}", f.log());
}

#[test]
fn challenges_come_in_order_and_a_stale_or_replayed_digest_is_refused() {
    let f = Finch::start("auth-raw", USERS);
    let _p = published(&f);
    let mut raw = Raw::connect(f.rtsp_port);
    let r = raw.request("DESCRIBE", &f.url("cams/1"), 1, &[], "");
    assert_eq!(r.status, 401);
    let challenges: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("WWW-Authenticate"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(challenges.len(), 3, "{challenges:?}");
    assert!(
        challenges[0].starts_with("Digest realm=\"finch\"")
            && challenges[0].contains("algorithm=SHA-256")
    );
    assert!(
        challenges[1].starts_with("Digest realm=\"finch\"")
            && challenges[1].contains("algorithm=MD5")
    );
    assert_eq!(challenges[2], "Basic realm=\"finch\"");
    // A client's Digest answer to the MD5 challenge, with qop (as ffmpeg answers it).
    let nonce = challenges[1]
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let answer = |nonce: &str, nc: &str| {
        use finch_proto::auth::digest::{expected_response, Expected};
        use finch_proto::auth::Algorithm;
        let ha1 = Algorithm::Md5.ha1("viewer", "finch", "viewpass");
        let e = Expected {
            algorithm: Algorithm::Md5,
            ha1: &ha1,
            method: "DESCRIBE",
        };
        let uri = f.url("cams/1");
        let response = expected_response(&e, &uri, nonce, Some((nc, "abcdef", "auth")));
        format!("Authorization: Digest username=\"viewer\", realm=\"finch\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"abcdef\"")
    };
    let first = answer(nonce, "00000001");
    assert_eq!(
        raw.request("DESCRIBE", &f.url("cams/1"), 2, &[&first], "")
            .status,
        200
    );
    // The same answer again, on another connection (an eavesdropper replaying it): 401.
    let mut other = Raw::connect(f.rtsp_port);
    assert_eq!(
        other
            .request("DESCRIBE", &f.url("cams/1"), 1, &[&first], "")
            .status,
        401
    );
    // The client's next request counts on: 200.
    let next = answer(nonce, "00000002");
    assert_eq!(
        other
            .request("DESCRIBE", &f.url("cams/1"), 2, &[&next], "")
            .status,
        200
    );
    // A nonce that was never ours: 401.
    let forged = answer(&format!("{:016x}{}", 1u64, "0".repeat(48)), "00000001");
    let mut third = Raw::connect(f.rtsp_port);
    assert_eq!(
        third
            .request("DESCRIBE", &f.url("cams/1"), 1, &[&forged], "")
            .status,
        401
    );
}

#[test]
fn a_captured_digest_answer_is_refused_once_its_nonce_expires() {
    let f = Finch::start(
        "auth-stale",
        &format!("{USERS}\n[auth]\nnonce_expiry_secs = 10\n"),
    );
    let _p = published(&f);
    let mut raw = Raw::connect(f.rtsp_port);
    let r = raw.request("DESCRIBE", &f.url("cams/1"), 1, &[], "");
    let md5 = r
        .headers
        .iter()
        .find(|(n, v)| n.eq_ignore_ascii_case("WWW-Authenticate") && v.contains("MD5"))
        .map(|(_, v)| v.clone())
        .unwrap();
    let nonce = md5
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    // Answered without qop, as VLC and GStreamer do: the same answer is valid while the nonce is.
    use finch_proto::auth::digest::{expected_response, Expected};
    use finch_proto::auth::Algorithm;
    let ha1 = Algorithm::Md5.ha1("viewer", "finch", "viewpass");
    let e = Expected {
        algorithm: Algorithm::Md5,
        ha1: &ha1,
        method: "DESCRIBE",
    };
    let uri = f.url("cams/1");
    let response = expected_response(&e, &uri, &nonce, None);
    let h = format!("Authorization: Digest username=\"viewer\", realm=\"finch\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\"");
    let mut a = Raw::connect(f.rtsp_port);
    assert_eq!(a.request("DESCRIBE", &uri, 1, &[&h], "").status, 200);
    std::thread::sleep(Duration::from_secs(11));
    let mut b = Raw::connect(f.rtsp_port);
    let r = b.request("DESCRIBE", &uri, 1, &[&h], "");
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        r.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("WWW-Authenticate") && v.contains("stale=true")),
        "{r:?}"
    );
}

#[test]
fn wrong_passwords_from_one_address_lock_it_out_and_no_other() {
    let f = Finch::start("auth-limit", &format!("{USERS}\n[auth]\nfail_limit = 5\n"));
    let _p = published(&f);
    use std::io::{Read, Write};
    // From 127.0.0.2: Basic with a wrong password, over and over.
    let attempt = |pass: &str| -> u16 {
        let local = std::net::SocketAddr::from(([127, 0, 0, 2], 0));
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&local.into()).unwrap();
        sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], f.rtsp_port)).into())
            .unwrap();
        let mut s: std::net::TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode(format!("faraway:{pass}"));
        write!(
            s,
            "DESCRIBE {} RTSP/1.0\r\nCSeq: 1\r\nAuthorization: Basic {b}\r\n\r\n",
            f.url("cams/1")
        )
        .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n])
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        attempt("farpass"),
        200,
        "faraway from 127.0.0.2 may read\n{}",
        f.log()
    );
    for _ in 0..5 {
        assert_eq!(attempt("wrong"), 401);
    }
    assert_eq!(
        attempt("farpass"),
        403,
        "locked out for the window, right password or not"
    );
    // The legitimate client on 127.0.0.1 is not caught.
    let (streams, err) = probe(&url_as(&f, "viewer", "viewpass", "cams/1"));
    assert!(streams.contains(&"h264:320:240".to_owned()), "{err}");
    let metrics = http(f.admin_port, "GET", "/metrics", "").unwrap().1;
    assert!(
        metrics.contains("finch_auth_failures_total{reason=\"wrong_credentials\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("finch_auth_failures_total{reason=\"blocked\"}"),
        "{metrics}"
    );
}
