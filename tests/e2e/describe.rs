//! DESCRIBE: 404s, and the SDP readers get: server-owned controls, the server's addresses
//! instead of the camera's, and what the publisher sent only in-band.

use crate::harness::*;
use std::time::Duration;

/// A publisher over TCP written by hand.
fn raw_publisher(finch: &Finch, path: &str, sdp: &str) -> Raw {
    let tcp = "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record";
    raw_publish(finch, path, sdp, tcp).0
}

/// Sends one RTP packet with this payload on channel 0.
fn send_rtp(publisher: &mut Raw, seq: u8, payload: &[u8]) {
    let mut p = vec![0x80, 96, 0, seq, 0, 0, 0, 1, 0, 0, 0, 7];
    p.extend_from_slice(payload);
    let mut frame = vec![b'$', 0, 0, p.len() as u8];
    frame.extend_from_slice(&p);
    publisher.send(&frame);
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
fn describe_adds_every_parameter_set_and_the_packetization_mode_a_publisher_sent_only_in_band() {
    let finch = Finch::start("inband", "");
    for (path, encoding, packets, expect) in [
        (
            "live/h264",
            "H264",
            // SPS, PPS id 0, PPS id 1 (an encoder may use both), then an FU-A fragment.
            vec![
                vec![0x67u8, 1, 2, 3],
                vec![0x68, 0x80, 4],
                vec![0x68, 0x40, 5],
                vec![0x7c, 0x85, 0],
            ],
            vec![
                "packetization-mode=1",
                "sprop-parameter-sets=ZwECAw==,aIAE,aEAF",
            ],
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
        let sdp = format!("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 {encoding}/90000\r\na=control:trackID=0\r\n");
        let mut publisher = raw_publisher(&finch, path, &sdp);
        for (i, payload) in packets.iter().enumerate() {
            send_rtp(&mut publisher, i as u8, payload);
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
fn describe_never_sends_players_to_the_camera_s_address_or_its_multicast_group() {
    let finch = Finch::start("addresses", "");
    let sdp = "v=0\r\no=cam 1234 5 IN IP4 192.168.1.64\r\ns=cam\r\nc=IN IP4 239.1.2.3/127\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\nc=IN IP4 192.168.1.64\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n";
    let _publisher = raw_publisher(&finch, "live/cam", sdp);
    let mut reader = Raw::connect(finch.rtsp_port);
    let r = reader.request("DESCRIBE", &finch.url("live/cam"), 1, &[], "");
    assert_eq!(r.status, 200);
    assert!(
        !r.body.contains("192.168.") && !r.body.contains("239.1"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("o=- 1234 5 IN IP4 127.0.0.1\r\n"),
        "{}",
        r.body
    );
    assert_eq!(
        r.body.matches("c=IN IP4 0.0.0.0\r\n").count(),
        2,
        "{}",
        r.body
    );
}
