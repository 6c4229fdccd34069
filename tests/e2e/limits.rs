//! The limits on every input (CONTRACT.md "Limits added with security"): each refuses with its
//! status or closes the connection, is counted by its key, and leaves everyone else alone.

use crate::harness::*;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// A raw RTSP connection from `ip` (127.0.0.x).
fn connect_from(ip: [u8; 4], port: u16) -> Raw {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
    sock.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let stream: TcpStream = sock.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    Raw::from_stream(stream)
}

fn refusals(f: &Finch, limit: &str) -> u64 {
    let metrics = http(f.admin_port, "GET", "/metrics", "").unwrap().1;
    let key = format!("finch_limit_refusals_total{{limit=\"{limit}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn announce(raw: &mut Raw, f: &Finch, path: &str, sdp: &str) -> u16 {
    raw.request(
        "ANNOUNCE",
        &f.url(path),
        1,
        &["Content-Type: application/sdp"],
        sdp,
    )
    .status
}

#[test]
fn connections_and_publishers_per_address_paths_tracks_and_sessions() {
    let f = Finch::start(
        "limits",
        "[limits]\nmax_connections_per_ip = 3\nmax_paths = 2\nmax_publishers_per_ip = 1\nmax_tracks_per_session = 1\n",
    );
    // Three connections from 127.0.0.1 are served, a fourth gets 503; 127.0.0.2 is not affected.
    let mut held: Vec<Raw> = (0..3).map(|_| Raw::connect(f.rtsp_port)).collect();
    for (i, r) in held.iter_mut().enumerate() {
        assert_eq!(r.request("OPTIONS", "*", 1, &[], "").status, 200, "{i}");
    }
    let mut fourth = Raw::connect(f.rtsp_port);
    assert_eq!(fourth.request("OPTIONS", "*", 1, &[], "").status, 503);
    let mut other = connect_from([127, 0, 0, 2], f.rtsp_port);
    assert_eq!(other.request("OPTIONS", "*", 1, &[], "").status, 200);
    assert_eq!(refusals(&f, "max_connections_per_ip"), 1);
    // Tracks: an SDP with two tracks is more than the limit of one.
    let two = format!("{H264_SDP}m=audio 0 RTP/AVP 0\r\na=control:trackID=1\r\n");
    assert_eq!(announce(&mut held[0], &f, "p/two", &two), 453);
    // Publishers per address: one from 127.0.0.1, another from 127.0.0.2.
    assert_eq!(announce(&mut held[0], &f, "p/a", H264_SDP), 200);
    assert_eq!(announce(&mut held[1], &f, "p/b", H264_SDP), 503);
    assert_eq!(announce(&mut other, &f, "p/c", H264_SDP), 200);
    // Paths: two exist now, a third is one too many, whoever asks.
    let mut third = connect_from([127, 0, 0, 3], f.rtsp_port);
    assert_eq!(announce(&mut third, &f, "p/d", H264_SDP), 503);
    for limit in [
        "max_tracks_per_session",
        "max_publishers_per_ip",
        "max_paths",
    ] {
        assert_eq!(refusals(&f, limit), 1, "{limit}");
    }
    // A connection with a session asking for another: 453.
    assert_eq!(announce(&mut held[0], &f, "p/e", H264_SDP), 453);
    assert_eq!(refusals(&f, "max_sessions_per_connection"), 1);
}

#[test]
fn slow_idle_and_squatting_clients_are_cut_off_and_others_served() {
    let f = Finch::start(
        "timeouts",
        "[rtsp]\nannounce_timeout_secs = 2\n[limits]\nrequest_timeout_secs = 2\nfirst_request_timeout_secs = 4\n",
    );
    // Silent after connecting.
    let mut idle = Raw::connect(f.rtsp_port);
    // A request trickling in a byte at a time (slowloris).
    let mut slow = Raw::connect(f.rtsp_port);
    slow.send(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n");
    // An ANNOUNCE never followed by RECORD holds the path only for a while.
    let mut squatter = Raw::connect(f.rtsp_port);
    assert_eq!(announce(&mut squatter, &f, "live/sq", H264_SDP), 200);
    let started = std::time::Instant::now();
    let mut cut = Vec::new();
    for (name, raw) in [
        ("slow", &mut slow),
        ("idle", &mut idle),
        ("squatter", &mut squatter),
    ] {
        if name == "slow" {
            for _ in 0..3 {
                raw.send(b"X-A: b\r\n");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        assert!(
            raw.closed_within(Duration::from_secs(10)),
            "{name} was not cut off"
        );
        cut.push((name, started.elapsed()));
    }
    eprintln!("cut off after: {cut:?}");
    for limit in [
        "first_request_timeout_secs",
        "request_timeout_secs",
        "announce_timeout_secs",
    ] {
        assert_eq!(refusals(&f, limit), 1, "{limit}");
    }
    // The path is free again, and a client that talks is served.
    let mut next = Raw::connect(f.rtsp_port);
    assert_eq!(announce(&mut next, &f, "live/sq", H264_SDP), 200);
    assert_eq!(next.request("OPTIONS", "*", 2, &[], "").status, 200);
}

#[test]
fn an_oversized_udp_packet_from_a_publisher_is_dropped_and_counted() {
    let f = Finch::start("udpsize", "[limits]\nmax_interleaved_bytes = 1500\n");
    let client = free_udp_pair();
    let transport = format!(
        "RTP/AVP;unicast;client_port={client}-{};mode=record",
        client + 1
    );
    let (_raw, _) = raw_publish(&f, "live/u", H264_SDP, &transport);
    let sock = UdpSocket::bind(("127.0.0.1", client)).unwrap();
    let packet = |len: usize, seq: u8| {
        let mut p = vec![0x80, 0xe0, 0, seq, 0, 0, 0, 1, 0, 0, 0, 7, 0x65];
        p.resize(len, 0xab);
        p
    };
    sock.send_to(&packet(3000, 1), ("127.0.0.1", f.rtp_port))
        .unwrap();
    sock.send_to(&packet(1000, 2), ("127.0.0.1", f.rtp_port))
        .unwrap();
    let ok = wait_until(Duration::from_secs(5), || {
        f.api("/api/v1/paths/live/u").1["bytes_in"].as_u64() == Some(1000)
    });
    assert!(ok, "{}", f.api("/api/v1/paths/live/u").1);
    assert!(wait_until(Duration::from_secs(5), || refusals(
        &f,
        "max_interleaved_bytes"
    ) == 1));
}
