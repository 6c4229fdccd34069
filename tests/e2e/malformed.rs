//! Malformed input over raw sockets: each gets the right status or a closed connection, and the
//! server goes on serving everyone else (a publisher keeps publishing, a new client is served).

use crate::harness::*;
use std::time::Duration;

fn still_serving(finch: &mut Finch) {
    assert!(finch.alive(), "finch died: {}", finch.log());
    let mut raw = Raw::connect(finch.rtsp_port);
    let r = raw.request("OPTIONS", "*", 1, &[], "");
    assert_eq!(r.status, 200);
    let streams = ffprobe(&finch.url("live/m"), "tcp");
    assert!(
        streams.contains(&"h264:320:240".to_owned()),
        "{streams:?}\n{}",
        finch.log()
    );
}

#[test]
fn malformed_requests_get_the_right_status_and_the_server_survives() {
    let mut finch = Finch::start(
        "malformed",
        "[limits]\nmax_head_bytes = 4096\nmax_uri_bytes = 1024\n",
    );
    let _p = Publisher::start(&finch.url("live/m"), "tcp");
    finch.wait_path_ready("live/m");

    // Garbage that cannot start a message: 400, then closed.
    let mut raw = Raw::connect(finch.rtsp_port);
    raw.send(b"\x16\x03\x01\x02\x00garbage");
    assert_eq!(raw.response().map(|r| r.status), Some(400));
    assert!(raw.closed_within(Duration::from_secs(5)));

    // A header line over the head limit: 413, then closed.
    let mut raw = Raw::connect(finch.rtsp_port);
    let mut req = b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX-Long: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 5000));
    raw.send(&req);
    assert_eq!(raw.response().map(|r| r.status), Some(413));
    assert!(raw.closed_within(Duration::from_secs(5)));

    // A URI over the limit: 414, and the connection goes on.
    let mut raw = Raw::connect(finch.rtsp_port);
    let long = format!("rtsp://127.0.0.1/{}", "u".repeat(2000));
    assert_eq!(raw.request("DESCRIBE", &long, 1, &[], "").status, 414);
    assert_eq!(raw.request("OPTIONS", "*", 2, &[], "").status, 200);

    // No CSeq: 400, and the connection goes on.
    raw.send(b"OPTIONS * RTSP/1.0\r\n\r\n");
    assert_eq!(raw.response().map(|r| r.status), Some(400));
    assert_eq!(raw.request("OPTIONS", "*", 3, &[], "").status, 200);

    // A CSeq that is not a decimal number (RFC 2326 §12.17): 400, and the connection goes on.
    for bad in ["abc", "-1", "1.5", "0x10", ""] {
        raw.send(format!("OPTIONS * RTSP/1.0\r\nCSeq: {bad}\r\n\r\n").as_bytes());
        assert_eq!(raw.response().map(|r| r.status), Some(400), "CSeq {bad:?}");
    }
    assert_eq!(raw.request("OPTIONS", "*", 3, &[], "").status, 200);

    // Wrong version: 505 with the CSeq echoed.
    raw.send(b"OPTIONS * RTSP/2.0\r\nCSeq: 4\r\n\r\n");
    let r = raw.response().unwrap();
    assert_eq!((r.status, r.header("CSeq")), (505, Some("4")));

    // Unknown method: 501, connection survives.
    assert_eq!(raw.request("FLY", "*", 5, &[], "").status, 501);

    // Bad Transport headers: 461 unsupported, 400 malformed, 400 missing.
    let url = finch.url("live/m/trackID=0");
    assert_eq!(
        raw.request("SETUP", &url, 6, &["Transport: RAW/RAW/UDP;unicast"], "")
            .status,
        461
    );
    assert_eq!(
        raw.request(
            "SETUP",
            &url,
            7,
            &["Transport: RTP/AVP;unicast;client_port=abc"],
            ""
        )
        .status,
        400
    );
    assert_eq!(raw.request("SETUP", &url, 8, &[], "").status, 400);
    // Multicast is not offered.
    assert_eq!(
        raw.request("SETUP", &url, 9, &["Transport: RTP/AVP;multicast"], "")
            .status,
        461
    );

    // Pipelined requests in one write get their responses in order.
    raw.send(b"OPTIONS * RTSP/1.0\r\nCSeq: 10\r\n\r\nOPTIONS * RTSP/1.0\r\nCSeq: 11\r\n\r\n");
    assert_eq!(raw.response().unwrap().header("CSeq"), Some("10"));
    assert_eq!(raw.response().unwrap().header("CSeq"), Some("11"));

    // A body over the limit: 413 and closed.
    let mut raw = Raw::connect(finch.rtsp_port);
    raw.send(b"ANNOUNCE rtsp://127.0.0.1/live/x RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 999999999\r\n\r\n");
    assert_eq!(raw.response().map(|r| r.status), Some(413));
    assert!(raw.closed_within(Duration::from_secs(5)));

    // An ANNOUNCE whose body is not SDP: 400.
    let mut raw = Raw::connect(finch.rtsp_port);
    let r = raw.request(
        "ANNOUNCE",
        &finch.url("live/bad"),
        1,
        &["Content-Type: application/sdp"],
        "not sdp at all",
    );
    assert_eq!(r.status, 400);

    // An interleaved frame with a huge length: the connection is closed.
    let mut raw = Raw::connect(finch.rtsp_port);
    raw.send(b"$\x00\xff\xff\x00\x00");
    assert!(raw.closed_within(Duration::from_secs(5)));

    // A truncated request, then the client closes.
    let mut raw = Raw::connect(finch.rtsp_port);
    raw.send(b"DESCRIBE rtsp://127.0.0.1/live/m RTSP/1.0\r\nCSeq: 1\r\nAcc");
    drop(raw);

    still_serving(&mut finch);
}

#[test]
fn ten_thousand_made_up_methods_get_501_and_do_not_grow_the_metrics() {
    let finch = Finch::start("methods", "");
    let metrics = || http(finch.admin_port, "GET", "/metrics", "").unwrap().1;
    let mut raw = Raw::connect(finch.rtsp_port);
    assert_eq!(raw.request("OPTIONS", "*", 1, &[], "").status, 200);
    let before = metrics().len();
    for round in 0..50u32 {
        let mut batch = String::new();
        for i in 0..200 {
            let n = round * 200 + i;
            batch.push_str(&format!("METHOD{n} * RTSP/1.0\r\nCSeq: {n}\r\n\r\n"));
        }
        raw.send(batch.as_bytes());
        for _ in 0..200 {
            assert_eq!(raw.response().map(|r| r.status), Some(501));
        }
    }
    let after = metrics();
    assert!(after.contains("method=\"other\""), "{after}");
    assert!(
        !after.contains("METHOD9999"),
        "a client's method became a label"
    );
    // One new label set (other), however many methods: a few hundred bytes, not megabytes.
    assert!(
        after.len() < before + 4096,
        "the exposition grew from {before} to {} bytes",
        after.len()
    );
    assert_eq!(raw.request("OPTIONS", "*", 2, &[], "").status, 200);
}
