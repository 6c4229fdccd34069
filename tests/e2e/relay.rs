//! The live relay with real clients: ffmpeg publishes, ffprobe/ffmpeg/GStreamer/retina read,
//! over TCP interleaved and UDP unicast.

use crate::harness::*;
use futures::StreamExt;
use retina::client::{
    PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
    UdpTransportOptions,
};
use retina::codec::CodecItem;
use std::process::Command;
use std::time::{Duration, Instant};

/// What a retina reader saw.
#[derive(Debug, Default)]
struct Seen {
    first_is_key: Option<bool>,
    frames: usize,
    time_to_first_frame: Option<Duration>,
    /// The stream ended (server closed) before the deadline.
    ended: bool,
}

async fn retina_read(url: String, udp: bool, secs: u64) -> Result<Seen, String> {
    let start = Instant::now();
    let url = url::Url::parse(&url).map_err(|e| e.to_string())?;
    let mut session = Session::describe(url, SessionOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let video = session
        .streams()
        .iter()
        .position(|s| s.media() == "video")
        .ok_or("no video stream")?;
    let transport = if udp {
        Transport::Udp(UdpTransportOptions::default())
    } else {
        Transport::Tcp(TcpTransportOptions::default())
    };
    session
        .setup(video, SetupOptions::default().transport(transport))
        .await
        .map_err(|e| e.to_string())?;
    let mut frames = session
        .play(PlayOptions::default())
        .await
        .map_err(|e| e.to_string())?
        .demuxed()
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut seen = Seen::default();
    loop {
        match tokio::time::timeout_at(deadline, frames.next()).await {
            Err(_) => break,
            Ok(None) => {
                seen.ended = true;
                break;
            }
            Ok(Some(Err(e))) => {
                if seen.frames > 0 {
                    // The server ending the session surfaces as an error on some paths.
                    seen.ended = true;
                    break;
                }
                return Err(e.to_string());
            }
            Ok(Some(Ok(CodecItem::VideoFrame(f)))) => {
                seen.frames += 1;
                if seen.first_is_key.is_none() {
                    seen.first_is_key = Some(f.is_random_access_point());
                    seen.time_to_first_frame = Some(start.elapsed());
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    Ok(seen)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn ffmpeg_publishes_over_tcp_and_ffprobe_reads_over_tcp_and_udp() {
    let finch = Finch::start("probe-tcp", "");
    let _p = Publisher::start(&finch.url("live/cam1"), "tcp");
    finch.wait_path_ready("live/cam1");
    for transport in ["tcp", "udp"] {
        let streams = ffprobe(&finch.url("live/cam1"), transport);
        assert!(
            streams.contains(&"h264:320:240".to_owned()),
            "{transport}: {streams:?}\n{}",
            finch.log()
        );
        assert!(
            streams.contains(&"aac".to_owned()),
            "{transport}: {streams:?}"
        );
    }
    // Query strings and trailing slashes name the same path (CONTRACT.md).
    let streams = ffprobe(&finch.url("live/cam1/?token=x"), "tcp");
    assert!(streams.contains(&"h264:320:240".to_owned()), "{streams:?}");
}

#[test]
fn ffmpeg_publishes_over_udp_and_readers_get_at_least_90_percent_of_frames() {
    let finch = Finch::start("count-udp", "");
    let _p = Publisher::start(&finch.url("live/udp"), "udp");
    finch.wait_path_ready("live/udp");
    let (_, path) = finch.api("/api/v1/paths/live/udp");
    assert_eq!(path["source"]["transport"], "udp", "{path}");
    for transport in ["tcp", "udp"] {
        // 4 s at 25 fps is 100 frames; the GOP cache may add up to a GOP more.
        let frames = ffmpeg_count_frames(&finch.url("live/udp"), transport, 4);
        assert!(
            frames >= 90,
            "{transport}: only {frames} frames in 4 s\n{}",
            finch.log()
        );
    }
}

#[test]
fn gstreamer_reads_over_tcp_and_udp() {
    if Command::new("gst-launch-1.0")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("gst-launch-1.0 must be installed (scripts/test.sh installs it)");
    }
    let finch = Finch::start("gst", "");
    let _p = Publisher::start(&finch.url("live/gst"), "tcp");
    finch.wait_path_ready("live/gst");
    for protocols in ["tcp", "udp"] {
        let out = Command::new("timeout")
            .args(["30", "gst-launch-1.0", "-q", "rtspsrc"])
            .arg(format!("location={}", finch.url("live/gst")))
            .arg(format!("protocols={protocols}"))
            .args([
                "!",
                "rtph264depay",
                "!",
                "h264parse",
                "!",
                "avdec_h264",
                "!",
                "fakesink",
                "num-buffers=50",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gst over {protocols}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            finch.log()
        );
    }
}

#[test]
fn late_joiner_with_retina_starts_on_a_keyframe_over_tcp_and_udp() {
    let finch = Finch::start("late", "");
    let _p = Publisher::start(&finch.url("live/late"), "tcp");
    finch.wait_path_ready("live/late");
    for (i, udp) in [false, true, false].into_iter().enumerate() {
        // Join at different points of the 2 s GOP.
        std::thread::sleep(Duration::from_millis(700 * (i as u64 + 1)));
        let seen = block_on(retina_read(finch.url("live/late"), udp, 3)).unwrap();
        assert_eq!(
            seen.first_is_key,
            Some(true),
            "udp={udp}: {seen:?}\n{}",
            finch.log()
        );
        assert!(seen.frames >= 50, "udp={udp}: {seen:?}");
        eprintln!(
            "late joiner (udp={udp}): first frame after {:?}",
            seen.time_to_first_frame.unwrap()
        );
    }
}

#[test]
fn ten_readers_at_once_all_get_the_stream_and_the_api_counts_them() {
    let finch = Finch::start("ten", "");
    let _p = Publisher::start(&finch.url("live/ten"), "tcp");
    finch.wait_path_ready("live/ten");
    let url = finch.url("live/ten");
    let api_port = finch.admin_port;
    let results = block_on(async move {
        let readers: Vec<_> = (0..10)
            .map(|i| tokio::spawn(retina_read(url.clone(), i % 2 == 1, 4)))
            .collect();
        // While they play, the API sees ten readers.
        let mut counted = 0;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (_, body) = tokio::task::spawn_blocking(move || {
                http(api_port, "GET", "/api/v1/paths/live/ten", "").unwrap()
            })
            .await
            .unwrap();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            counted = v["reader_count"].as_u64().unwrap_or(0);
            if counted == 10 {
                break;
            }
        }
        let mut out = Vec::new();
        for r in readers {
            out.push(r.await.unwrap());
        }
        (counted, out)
    });
    assert_eq!(results.0, 10, "reader_count never reached 10");
    for r in results.1 {
        let seen = r.unwrap();
        assert_eq!(seen.first_is_key, Some(true), "{seen:?}");
        assert!(seen.frames >= 75, "{seen:?}");
    }
}

#[test]
fn publisher_leaving_ends_readers_and_frees_the_path() {
    let finch = Finch::start("leave", "");
    let mut publisher = Publisher::start(&finch.url("live/leave"), "tcp");
    finch.wait_path_ready("live/leave");
    let url = finch.url("live/leave");
    let seen = block_on(async move {
        let reader = tokio::spawn(retina_read(url, false, 20));
        tokio::time::sleep(Duration::from_secs(2)).await;
        publisher.kill();
        let started = Instant::now();
        let seen = reader.await.unwrap().unwrap();
        (seen, started.elapsed())
    });
    assert!(seen.0.ended, "the reader was not ended: {:?}", seen.0);
    assert!(
        seen.1 < Duration::from_secs(10),
        "the reader hung for {:?}",
        seen.1
    );
    let (status, _) = finch.api("/api/v1/paths/live/leave");
    assert_eq!(status, 404);
    // The path is free for a new publisher.
    let _p2 = Publisher::start(&finch.url("live/leave"), "udp");
    finch.wait_path_ready("live/leave");
}

#[test]
fn second_publisher_is_refused_with_455_and_the_first_goes_on() {
    let finch = Finch::start("second", "");
    let _p = Publisher::start(&finch.url("live/one"), "tcp");
    finch.wait_path_ready("live/one");
    let mut raw = Raw::connect(finch.rtsp_port);
    let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
    let r = raw.request(
        "ANNOUNCE",
        &finch.url("live/one"),
        1,
        &["Content-Type: application/sdp"],
        sdp,
    );
    assert_eq!(r.status, 455, "{r:?}");
    // ffmpeg as the second publisher fails too, and says why.
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
        .arg(finch.url("live/one"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("455"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streams = ffprobe(&finch.url("live/one"), "tcp");
    assert!(streams.contains(&"h264:320:240".to_owned()), "{streams:?}");
}

#[test]
fn describe_of_an_unpublished_path_is_404_and_setup_of_unknown_track_is_404() {
    let finch = Finch::start("404", "");
    let mut raw = Raw::connect(finch.rtsp_port);
    assert_eq!(
        raw.request("DESCRIBE", &finch.url("live/none"), 1, &[], "")
            .status,
        404
    );
    let r = raw.request(
        "SETUP",
        &finch.url("live/none/trackID=0"),
        2,
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        "",
    );
    assert_eq!(r.status, 404);
    let _p = Publisher::start(&finch.url("live/some"), "tcp");
    finch.wait_path_ready("live/some");
    let r = raw.request(
        "SETUP",
        &finch.url("live/some/trackID=9"),
        3,
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        "",
    );
    assert_eq!(r.status, 404);
    let r = raw.request(
        "PLAY",
        &finch.url("live/some"),
        4,
        &["Session: DEADBEEF"],
        "",
    );
    assert_eq!(r.status, 454);
    // DESCRIBE answers with a Content-Base ending in a slash and server-owned controls.
    let r = raw.request(
        "DESCRIBE",
        &finch.url("live/some"),
        5,
        &["Accept: application/sdp"],
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Base"),
        Some(format!("{}/", finch.url("live/some")).as_str())
    );
    assert_eq!(r.header("Content-Type"), Some("application/sdp"));
    assert!(r.body.contains("a=control:trackID=0"), "{}", r.body);
    assert!(r.body.contains("a=control:trackID=1"), "{}", r.body);
    // A client that resolves the control against the request URL (no trailing slash) lands on
    // the track too.
    let r = raw.request(
        "SETUP",
        &finch.url("live/trackID=0"),
        6,
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let session = r.header("Session").unwrap().to_owned();
    assert!(session.ends_with(";timeout=60"), "{session}");
    let id = session.split(';').next().unwrap();
    let r = raw.request(
        "PLAY",
        &format!("{}/", finch.url("live/some")),
        7,
        &[&format!("Session: {id}"), "Range: npt=0-"],
        "",
    );
    assert_eq!(r.status, 200);
    let rtp_info = r.header("RTP-Info").unwrap_or_default();
    assert!(
        rtp_info.starts_with(&format!("url={}/trackID=0;seq=", finch.url("live/some"))),
        "{rtp_info}"
    );
    let r = raw.request(
        "TEARDOWN",
        &finch.url("live/some"),
        8,
        &[&format!("Session: {id}")],
        "",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn a_silent_session_times_out_and_a_talking_one_does_not() {
    let finch = Finch::start("timeout", "[rtsp]\nsession_timeout_secs = 5\n");
    let _p = Publisher::start(&finch.url("live/t"), "tcp");
    finch.wait_path_ready("live/t");
    let setup = |raw: &mut Raw, port: u16| {
        let r = raw.request(
            "SETUP",
            &finch.url("live/t/trackID=0"),
            1,
            &[&format!(
                "Transport: RTP/AVP;unicast;client_port={port}-{}",
                port + 1
            )],
            "",
        );
        assert_eq!(r.status, 200, "{r:?}");
        let id = r.session_id();
        let r = raw.request(
            "PLAY",
            &finch.url("live/t"),
            2,
            &[&format!("Session: {id}")],
            "",
        );
        assert_eq!(r.status, 200);
        id
    };
    let mut silent = Raw::connect(finch.rtsp_port);
    let _ = setup(&mut silent, 40000);
    let mut talking = Raw::connect(finch.rtsp_port);
    let id = setup(&mut talking, 40002);
    let started = Instant::now();
    let mut cseq = 3;
    while started.elapsed() < Duration::from_secs(9) {
        std::thread::sleep(Duration::from_secs(2));
        let r = talking.request(
            "GET_PARAMETER",
            &finch.url("live/t"),
            cseq,
            &[&format!("Session: {id}")],
            "",
        );
        assert_eq!(r.status, 200, "the talking session was dropped");
        cseq += 1;
    }
    assert!(
        silent.closed_within(Duration::from_secs(5)),
        "the silent session was not timed out"
    );
    let (_, sessions) = finch.api("/api/v1/sessions");
    let ids: Vec<&str> = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(ids.contains(&id.as_str()), "{sessions}");
    assert_eq!(
        ids.iter().filter(|i| **i != id).count(),
        1,
        "only the publisher besides: {sessions}"
    );
}

#[test]
fn pause_then_play_never_sends_a_packet_twice_and_statuses_follow_the_rfc() {
    let finch = Finch::start("pause", "");
    let _p = Publisher::start(&finch.url("live/p"), "tcp");
    finch.wait_path_ready("live/p");
    let mut raw = Raw::connect(finch.rtsp_port);
    // PLAY before SETUP: a state error (455), not an unknown session (454).
    assert_eq!(
        raw.request("PLAY", &finch.url("live/p"), 1, &[], "").status,
        455
    );
    // A required option Finch does not implement: 551 naming it (ONVIF back channel).
    let r = raw.request(
        "DESCRIBE",
        &finch.url("live/p"),
        2,
        &["Require: www.onvif.org/ver20/backchannel"],
        "",
    );
    assert_eq!(r.status, 551);
    assert_eq!(
        r.header("Unsupported"),
        Some("www.onvif.org/ver20/backchannel")
    );
    let r = raw.request(
        "SETUP",
        &finch.url("live/p/trackID=0"),
        3,
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        "",
    );
    assert_eq!(r.status, 200);
    let id = r.session_id();
    let session = format!("Session: {id}");
    assert_eq!(
        raw.request("PLAY", &finch.url("live/p"), 4, &[&session], "")
            .status,
        200
    );
    let before = read_rtp_seqs(&mut raw, 0, Duration::from_secs(2));
    assert!(before.len() > 20, "{before:?}");
    raw.send(
        format!(
            "PAUSE {} RTSP/1.0\r\nCSeq: 5\r\n{session}\r\n\r\n",
            finch.url("live/p")
        )
        .as_bytes(),
    );
    let tail = read_rtp_seqs(&mut raw, 0, Duration::from_millis(500));
    let last = *tail.last().or(before.last()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    raw.send(
        format!(
            "PLAY {} RTSP/1.0\r\nCSeq: 6\r\n{session}\r\n\r\n",
            finch.url("live/p")
        )
        .as_bytes(),
    );
    let after = read_rtp_seqs(&mut raw, 0, Duration::from_secs(3));
    assert!(!after.is_empty(), "nothing after the second PLAY");
    let first = after[0];
    assert!(
        first.wrapping_sub(last) < 0x8000 && first != last,
        "went back from {last} to {first}"
    );
}

#[test]
fn two_sessions_cannot_share_client_udp_ports() {
    let finch = Finch::start("udpports", "");
    let _p = Publisher::start(&finch.url("live/u"), "tcp");
    finch.wait_path_ready("live/u");
    let transport = "Transport: RTP/AVP;unicast;client_port=41000-41001";
    let mut a = Raw::connect(finch.rtsp_port);
    let r = a.request("SETUP", &finch.url("live/u/trackID=0"), 1, &[transport], "");
    assert_eq!(r.status, 200);
    let id = r.session_id();
    assert_eq!(
        a.request(
            "PLAY",
            &finch.url("live/u"),
            2,
            &[&format!("Session: {id}")],
            ""
        )
        .status,
        200
    );
    let mut b = Raw::connect(finch.rtsp_port);
    // The same host asking for ports another session has: 461, so it can fall back to TCP.
    assert_eq!(
        b.request("SETUP", &finch.url("live/u/trackID=0"), 1, &[transport], "")
            .status,
        461
    );
    let r = b.request(
        "SETUP",
        &finch.url("live/u/trackID=0"),
        2,
        &["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"],
        "",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn describe_adds_parameter_sets_a_publisher_sent_only_in_band() {
    let finch = Finch::start("inband", "");
    for (path, encoding, sets, expect) in [
        (
            "live/h264",
            "H264",
            vec![vec![0x67u8, 1, 2, 3], vec![0x68, 4, 5]],
            vec!["sprop-parameter-sets=ZwECAw==,aAQF"],
        ),
        (
            "live/h265",
            "H265",
            vec![
                vec![32 << 1, 1, 9],
                vec![33 << 1, 1, 8],
                vec![34 << 1, 1, 7],
            ],
            vec!["sprop-vps=QAEJ", "sprop-sps=QgEI", "sprop-pps=RAEH"],
        ),
    ] {
        let mut publisher = Raw::connect(finch.rtsp_port);
        let sdp = format!("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 {encoding}/90000\r\na=control:trackID=0\r\n");
        let r = publisher.request(
            "ANNOUNCE",
            &finch.url(path),
            1,
            &["Content-Type: application/sdp"],
            &sdp,
        );
        assert_eq!(r.status, 200);
        let session = format!(
            "Session: {}",
            r.header("Session").unwrap().split(';').next().unwrap()
        );
        let r = publisher.request(
            "SETUP",
            &format!("{}/trackID=0", finch.url(path)),
            2,
            &[
                "Transport: RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
                &session,
            ],
            "",
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            publisher
                .request("RECORD", &finch.url(path), 3, &[&session], "")
                .status,
            200
        );
        for (i, nal) in sets.iter().enumerate() {
            let mut p = vec![0x80, 96, 0, i as u8, 0, 0, 0, 1, 0, 0, 0, 7];
            p.extend_from_slice(nal);
            let mut frame = vec![b'$', 0, 0, p.len() as u8];
            frame.extend_from_slice(&p);
            publisher.send(&frame);
        }
        let mut reader = Raw::connect(finch.rtsp_port);
        let ok = wait_until(Duration::from_secs(5), || {
            let r = reader.request("DESCRIBE", &finch.url(path), 1, &[], "");
            expect.iter().all(|e| r.body.contains(e))
        });
        assert!(
            ok,
            "{path}: {:?}",
            reader
                .request("DESCRIBE", &finch.url(path), 2, &[], "")
                .body
        );
    }
}

#[test]
fn gstreamer_rtspclientsink_publishes_over_tcp_and_udp() {
    let finch = Finch::start("gstpub", "");
    let mut publishers = Vec::new();
    for proto in ["tcp", "udp"] {
        let child = Command::new("timeout")
            .args(["60", "gst-launch-1.0", "-q", "filesrc"])
            .arg(format!("location={}", clip().display()))
            .args([
                "!",
                "qtdemux",
                "name=d",
                "d.video_0",
                "!",
                "queue",
                "!",
                "h264parse",
                "!",
                "rtspclientsink",
                "name=s",
            ])
            .arg(format!(
                "location={}",
                finch.url(&format!("live/gst{proto}"))
            ))
            .arg(format!("protocols={proto}"))
            .args(["d.audio_0", "!", "queue", "!", "aacparse", "!", "s."])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("gst-launch-1.0 must be installed (scripts/test.sh installs it)");
        publishers.push(KillOnDrop(child));
    }
    for proto in ["tcp", "udp"] {
        let path = format!("live/gst{proto}");
        finch.wait_path_ready(&path);
        let (_, p) = finch.api(&format!("/api/v1/paths/{path}"));
        assert_eq!(p["source"]["transport"], proto, "{p}");
        let streams = ffprobe(&finch.url(&path), "tcp");
        assert!(
            streams.contains(&"h264:320:240".to_owned()),
            "{proto}: {streams:?}"
        );
        assert!(streams.contains(&"aac".to_owned()), "{proto}: {streams:?}");
    }
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
