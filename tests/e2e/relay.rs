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
pub struct Seen {
    pub first_is_key: Option<bool>,
    pub frames: usize,
    pub time_to_first_frame: Option<Duration>,
    /// The stream ended cleanly (the server closed the connection between messages) before
    /// the deadline.
    pub ended: bool,
    /// An error after the first frame (before it, `retina_read` fails instead).
    pub error: Option<String>,
}

pub async fn retina_read(url: String, udp: bool, secs: u64) -> Result<Seen, String> {
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
                if seen.frames == 0 {
                    return Err(e.to_string());
                }
                seen.error = Some(e.to_string());
                break;
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

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
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
        let (frames, stderr) = gst_decode(
            &finch.url("live/gst"),
            &[&format!("protocols={protocols}")],
            50,
        );
        assert_eq!(
            frames,
            50,
            "gst over {protocols}: {frames} frames\n{stderr}\n{}",
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
        assert!(seen.error.is_none(), "udp={udp}: {seen:?}");
        eprintln!(
            "late joiner (udp={udp}): first frame after {:?}",
            seen.time_to_first_frame.unwrap()
        );
    }
}

#[test]
fn without_a_gop_cache_a_late_joiner_still_starts_on_a_keyframe() {
    let finch = Finch::start("nocache", "[relay]\ngop_cache = false\n");
    let _p = Publisher::start(&finch.url("live/nc"), "tcp");
    finch.wait_path_ready("live/nc");
    for (i, udp) in [false, true].into_iter().enumerate() {
        // Mid-GOP: with nothing cached, the next keyframe is up to 2 s away.
        std::thread::sleep(Duration::from_millis(900 * (i as u64 + 1)));
        let seen = block_on(retina_read(finch.url("live/nc"), udp, 4)).unwrap();
        assert_eq!(seen.first_is_key, Some(true), "udp={udp}: {seen:?}");
        assert!(seen.error.is_none(), "udp={udp}: {seen:?}");
        eprintln!(
            "late joiner without a GOP cache (udp={udp}): first frame after {:?}",
            seen.time_to_first_frame.unwrap()
        );
    }
}

#[test]
fn an_audio_only_reader_gets_audio_and_nothing_else() {
    let finch = Finch::start("audioonly", "");
    let _p = Publisher::start(&finch.url("live/a"), "tcp");
    finch.wait_path_ready("live/a");
    let mut raw = Raw::connect(finch.rtsp_port);
    let r = raw.request(
        "SETUP",
        &finch.url("live/a/trackID=1"),
        1,
        &["Transport: RTP/AVP/TCP;unicast;interleaved=2-3"],
        "",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.session_id();
    let r = raw.request(
        "PLAY",
        &finch.url("live/a"),
        2,
        &[&format!("Session: {id}")],
        "",
    );
    assert_eq!(r.status, 200);
    let frames = read_interleaved(&mut raw, Duration::from_secs(3));
    // ffmpeg packs several AAC frames into one RTP packet (payload type 97 here): some
    // packets a second.
    let audio: Vec<&Vec<u8>> = frames
        .iter()
        .filter(|(ch, p)| *ch == 2 && p.len() > 12)
        .map(|(_, p)| p)
        .collect();
    assert!(audio.len() > 10, "{} audio packets in 3 s", audio.len());
    assert!(audio.iter().all(|p| p[1] & 0x7f == 97), "not all AAC");
    assert!(
        frames.iter().all(|(ch, _)| *ch == 2 || *ch == 3),
        "channels other than the audio track's: {:?}",
        frames
            .iter()
            .map(|(ch, _)| *ch)
            .collect::<std::collections::BTreeSet<_>>()
    );
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
        assert!(seen.error.is_none() && !seen.ended, "{seen:?}");
    }
}

#[test]
fn publisher_leaving_ends_readers_and_frees_the_path() {
    let finch = Finch::start("leave", "");
    let mut publisher = Publisher::start(&finch.url("live/leave"), "tcp");
    finch.wait_path_ready("live/leave");
    let url = finch.url("live/leave");
    let api = finch.admin_port;
    let seen = block_on(async move {
        let reader = tokio::spawn(retina_read(url, false, 20));
        // Kill the publisher once the reader is playing and has been sent media.
        let playing = tokio::task::spawn_blocking(move || {
            wait_until(Duration::from_secs(20), || {
                http(api, "GET", "/api/v1/paths/live/leave", "")
                    .ok()
                    .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| {
                        v["reader_count"] == 1 && v["bytes_out"].as_u64() > Some(50_000)
                    })
            })
        })
        .await
        .unwrap();
        assert!(playing, "the reader never played");
        publisher.kill();
        let started = Instant::now();
        let seen = reader.await.unwrap().unwrap();
        (seen, started.elapsed())
    });
    assert!(
        seen.0.ended && seen.0.error.is_none(),
        "the reader was not ended cleanly: {:?}",
        seen.0
    );
    eprintln!(
        "publisher killed: its reader's stream ended {:?} later",
        seen.1
    );
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
