//! RTSP sessions over time: timeouts and what keeps a session alive, PAUSE and PLAY, and who
//! may use which client ports.

use crate::harness::*;
use crate::relay::{block_on, retina_read};
use std::time::{Duration, Instant};

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
fn two_sessions_cannot_share_client_udp_ports_even_before_either_plays() {
    let finch = Finch::start("udpports", "");
    let _p = Publisher::start(&finch.url("live/u"), "tcp");
    finch.wait_path_ready("live/u");
    let port = free_udp_pair();
    let transport = format!("Transport: RTP/AVP;unicast;client_port={port}-{}", port + 1);
    let track = finch.url("live/u/trackID=0");
    let mut a = Raw::connect(finch.rtsp_port);
    let r = a.request("SETUP", &track, 1, &[&transport], "");
    assert_eq!(r.status, 200);
    let id = r.session_id();
    // A second session asks for the same ports while the first has only set up: 461, so it
    // can fall back to TCP.
    let mut b = Raw::connect(finch.rtsp_port);
    let r = b.request("SETUP", &track, 1, &[&transport], "");
    assert_eq!(r.status, 461, "the ports were given to two sessions");
    let play = a.request(
        "PLAY",
        &finch.url("live/u"),
        2,
        &[&format!("Session: {id}")],
        "",
    );
    assert_eq!(play.status, 200);
    // And once the first plays.
    assert_eq!(b.request("SETUP", &track, 2, &[&transport], "").status, 461);
    let tcp = "Transport: RTP/AVP/TCP;unicast;interleaved=0-1";
    assert_eq!(b.request("SETUP", &track, 3, &[tcp], "").status, 200);
    // Ports given back with their session are free again.
    drop(a);
    let freed = wait_until(Duration::from_secs(5), || {
        let mut c = Raw::connect(finch.rtsp_port);
        c.request("SETUP", &track, 1, &[&transport], "").status == 200
    });
    assert!(freed, "{}", finch.log());
}

#[test]
fn a_tcp_reader_that_only_reads_its_media_is_not_timed_out() {
    // finch-load and some NVRs send neither RTCP nor keep-alives over TCP; that they take
    // their media is the proof of life (gst-rtsp-server's rule, see ARCHITECTURE.md).
    let finch = Finch::start("tcplive", "[rtsp]\nsession_timeout_secs = 5\n");
    let _p = Publisher::start(&finch.url("live/r"), "tcp");
    finch.wait_path_ready("live/r");
    let mut reader = Raw::connect(finch.rtsp_port);
    reader.play_tcp(&finch.url("live/r"));
    // Twice the session timeout of reading and nothing else.
    let seqs = read_rtp_seqs(&mut reader, 0, Duration::from_secs(10));
    assert!(seqs.len() > 200, "{} packets", seqs.len());
    let tail = read_rtp_seqs(&mut reader, 0, Duration::from_secs(1));
    assert!(
        !tail.is_empty(),
        "the reader was cut after the session timeout\n{}",
        finch.log()
    );
    assert!(
        !finch.log().contains("session timed out"),
        "{}",
        finch.log()
    );
}

/// RTP sequence numbers on channel 0 for `dur`, with the arrival time of each.
fn timed_seqs(raw: &mut Raw, dur: Duration) -> Vec<(Instant, u16)> {
    let mut out = Vec::new();
    let end = Instant::now() + dur;
    while Instant::now() < end {
        for s in read_rtp_seqs(raw, 0, Duration::from_millis(200)) {
            out.push((Instant::now(), s));
        }
    }
    out
}

#[test]
fn with_a_grace_period_readers_survive_a_publisher_that_dies_and_comes_back() {
    let finch = Finch::start(
        "grace",
        "[paths.\"live/g\"]\npublisher_grace_secs = 10\n[paths.\"**\"]\n",
    );
    let mut publisher = Publisher::start(&finch.url("live/g"), "tcp");
    finch.wait_path_ready("live/g");
    let mut reader = Raw::connect(finch.rtsp_port);
    reader.play_tcp(&finch.url("live/g"));
    let before = read_rtp_seqs(&mut reader, 0, Duration::from_secs(2));
    assert!(before.len() > 20);
    // SIGKILL: no TEARDOWN, the connection just goes.
    publisher.kill();
    let killed = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || {
        finch.api("/api/v1/paths/live/g").1["ready"] == false
    }));
    let _back = Publisher::start(&finch.url("live/g"), "tcp");
    let after = timed_seqs(&mut reader, Duration::from_secs(6));
    assert!(
        !after.is_empty(),
        "the reader got nothing after the publisher came back\n{}",
        finch.log()
    );
    let gap = after[0].0.duration_since(killed);
    eprintln!("publisher killed and restarted: the same reader's first packet after {gap:?}");
    // One stream: the numbering goes on from where it stopped, no jump, no going back.
    let last = *before.last().unwrap();
    let seqs: Vec<u16> = after.iter().map(|(_, s)| *s).collect();
    // Packets sent while the reader was reading the tail of `before` may still be in `after`'s
    // first read; what matters is that the new publisher's packets continue the count.
    let resumed = seqs
        .iter()
        .position(|s| s.wrapping_sub(last) > 0 && s.wrapping_sub(last) < 0x8000)
        .unwrap();
    let first_new = seqs[resumed];
    assert!(
        first_new.wrapping_sub(last) < 200,
        "jumped from {last} to {first_new}"
    );
    for w in seqs[resumed..].windows(2) {
        assert_eq!(
            w[1],
            w[0].wrapping_add(1),
            "a gap or a step back in {seqs:?}"
        );
    }
}

#[test]
fn gstreamer_retina_and_ffmpeg_play_on_through_a_publisher_that_dies_and_comes_back() {
    let finch = Finch::start(
        "grace-players",
        "[paths.\"live/p\"]\npublisher_grace_secs = 10\n[paths.\"**\"]\n",
    );
    let mut publisher = Publisher::start(&finch.url("live/p"), "tcp");
    finch.wait_path_ready("live/p");
    let url = finch.url("live/p");
    // Each plays for 14 s: killed 3 s in, the publisher is back about a second later.
    let gst = {
        let url = url.clone();
        std::thread::spawn(move || gst_play_tcp(&url, 14))
    };
    let retina = {
        let url = url.clone();
        std::thread::spawn(move || block_on(retina_read(url, true, 14)))
    };
    let ffmpeg = {
        let url = url.clone();
        std::thread::spawn(move || ffmpeg_count_frames(&url, "tcp", 14))
    };
    let sessions = || -> Vec<String> {
        let mut v: Vec<String> = finch.api("/api/v1/paths/live/p").1["readers"]
            .as_array()
            .map(|a| a.iter().map(|r| r["session"].to_string()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    assert!(wait_until(Duration::from_secs(10), || sessions().len() == 3));
    let before = sessions();
    std::thread::sleep(Duration::from_secs(3));
    publisher.kill();
    assert!(wait_until(Duration::from_secs(5), || {
        finch.api("/api/v1/paths/live/p").1["ready"] == false
    }));
    let _back = Publisher::start(&finch.url("live/p"), "tcp");
    finch.wait_path_ready("live/p");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sessions(),
        before,
        "a player left: {}\n{}",
        finch.api("/api/v1/paths/live/p").1,
        finch.log()
    );
    // At 25 fps, at most ~125 frames can come before the kill (a GOP from the cache and 3 s):
    // more than 220 means the player went on with the new publisher's.
    let (frames, gst_err) = gst.join().unwrap();
    assert!(frames > 220, "gst: {frames} frames\n{gst_err}");
    let seen = retina.join().unwrap().unwrap();
    assert!(
        seen.frames > 220 && seen.error.is_none() && !seen.ended,
        "retina: {seen:?}"
    );
    let ffmpeg_frames = ffmpeg.join().unwrap();
    assert!(ffmpeg_frames > 220, "ffmpeg: {ffmpeg_frames} frames");
    eprintln!(
        "through the drop: gst {frames}, retina {}, ffmpeg {ffmpeg_frames} frames in 14 s",
        seen.frames
    );
}

#[test]
fn a_returning_publisher_with_other_tracks_closes_the_waiting_readers_cleanly() {
    let finch = Finch::start(
        "grace-other",
        "[paths.\"live/x\"]\npublisher_grace_secs = 10\n[paths.\"**\"]\n",
    );
    let mut publisher = Publisher::start(&finch.url("live/x"), "tcp");
    finch.wait_path_ready("live/x");
    let mut reader = Raw::connect(finch.rtsp_port);
    reader.play_tcp(&finch.url("live/x"));
    assert!(read_rtp_seqs(&mut reader, 0, Duration::from_secs(1)).len() > 10);
    publisher.kill();
    assert!(wait_until(Duration::from_secs(5), || {
        finch.api("/api/v1/paths/live/x").1["ready"] == false
    }));
    // Video only, where there were video and audio: not the same stream.
    let url = finch.url("live/x");
    let _video_only = Publisher::with(&[
        "-an",
        "-c",
        "copy",
        "-f",
        "rtsp",
        "-rtsp_transport",
        "tcp",
        &url,
    ]);
    assert!(
        reader.closed_within(Duration::from_secs(10)),
        "the waiting reader was left hanging\n{}",
        finch.log()
    );
    finch.wait_path_ready("live/x");
    let streams = ffprobe(&url, "tcp");
    assert_eq!(
        streams,
        vec!["h264:320:240".to_owned()],
        "new readers get the new stream"
    );
}

#[test]
fn with_override_a_new_publisher_takes_the_path_and_the_readers_carry_on() {
    let finch = Finch::start(
        "override",
        "[paths.\"live/o\"]\noverride_publisher = true\n[paths.\"**\"]\n",
    );
    let _first = Publisher::start(&finch.url("live/o"), "tcp");
    finch.wait_path_ready("live/o");
    let (_, p) = finch.api("/api/v1/paths/live/o");
    let first_peer = p["source"]["peer"].clone();
    let mut reader = Raw::connect(finch.rtsp_port);
    reader.play_tcp(&finch.url("live/o"));
    assert!(read_rtp_seqs(&mut reader, 0, Duration::from_secs(1)).len() > 10);
    // A rebooted camera, say: a second ffmpeg announces the live path.
    let _second = Publisher::start(&finch.url("live/o"), "tcp");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (_, p) = finch.api("/api/v1/paths/live/o");
            p["source"]["peer"] != first_peer && p["ready"] == true
        }),
        "{}",
        finch.log()
    );
    let after = read_rtp_seqs(&mut reader, 0, Duration::from_secs(3));
    assert!(after.len() > 20, "the reader stopped: {after:?}");
    for w in after.windows(2) {
        assert!(w[1].wrapping_sub(w[0]) < 100, "a jump in {after:?}");
    }
}
