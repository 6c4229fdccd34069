//! Players that cannot run here (VLC and other live555 clients), replayed from their request
//! sequences in `testdata/` against a live Finch with a real publisher.

use crate::harness::*;
use std::net::UdpSocket;
use std::time::Duration;

fn replay(file: &str, text: &str, udp: bool) {
    let finch = Finch::start(&format!("replay-{}", file.replace('.', "-")), "");
    let _p = Publisher::start(&finch.url("live/cam1"), "tcp");
    finch.wait_path_ready("live/cam1");
    let base = finch.url("live/cam1");
    // Four free local UDP ports for the client side, bound so media can be checked.
    let mut sockets = Vec::new();
    let first = free_udp_pair();
    let second = free_udp_pair();
    for p in [first, first + 1, second, second + 1] {
        let s = UdpSocket::bind(("127.0.0.1", p)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sockets.push(s);
    }
    let mut raw = Raw::connect(finch.rtsp_port);
    let mut session = String::new();
    for block in text.split("\n---\n") {
        let req = block
            .trim_start_matches('\n')
            .replace("{base}", &base)
            .replace("{session}", &session)
            .replace("{p0}", &first.to_string())
            .replace("{p1}", &(first + 1).to_string())
            .replace("{p2}", &second.to_string())
            .replace("{p3}", &(second + 1).to_string());
        let req = req.trim_end().replace('\n', "\r\n") + "\r\n\r\n";
        let method = req.split(' ').next().unwrap().to_owned();
        raw.send(req.as_bytes());
        let r = raw
            .response()
            .unwrap_or_else(|| panic!("{file}: no answer to {method}"));
        assert_eq!(r.status, 200, "{file}: {method}: {r:?}\n{}", finch.log());
        match method.as_str() {
            "DESCRIBE" => {
                assert_eq!(r.header("Content-Base"), Some(format!("{base}/").as_str()));
                assert!(
                    r.body.contains("m=video") && r.body.contains("m=audio"),
                    "{}",
                    r.body
                );
            }
            "SETUP" if session.is_empty() => {
                session = r.session_id();
            }
            "SETUP" => assert!(r.header("Session").unwrap().starts_with(&session)),
            "PLAY" => {
                assert!(r
                    .header("RTP-Info")
                    .is_some_and(|i| i.contains("/trackID=0;seq=")));
                if udp {
                    // Video reaches the client's RTP port from the server's shared one.
                    let mut buf = [0u8; 2048];
                    let (n, from) = sockets[0]
                        .recv_from(&mut buf)
                        .expect("no RTP on the client port");
                    assert!(n > 12 && buf[0] >> 6 == 2, "not RTP");
                    assert_eq!(from.port(), finch.rtp_port);
                } else {
                    let seqs = read_rtp_seqs(&mut raw, 0, Duration::from_secs(1));
                    assert!(!seqs.is_empty(), "no RTP interleaved on channel 0");
                }
            }
            _ => {}
        }
    }
}

#[test]
fn vlc_3_over_udp() {
    replay(
        "vlc_3_udp.txt",
        include_str!("testdata/vlc_3_udp.txt"),
        true,
    );
}

#[test]
fn vlc_3_over_tcp() {
    replay(
        "vlc_3_tcp.txt",
        include_str!("testdata/vlc_3_tcp.txt"),
        false,
    );
}

#[test]
fn openrtsp_over_tcp() {
    replay(
        "openrtsp_tcp.txt",
        include_str!("testdata/openrtsp_tcp.txt"),
        false,
    );
}
