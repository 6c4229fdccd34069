//! The SDP a DESCRIBE answers with: the source's description, rewritten only where the server
//! owns the answer.
//!
//! - Controls: `a=control:*` for the session, `trackID=N` per track (CONTRACT.md "Paths").
//! - `o=` names the server, and every `c=` is `IN IP4 0.0.0.0` (`IN IP6 ::`): media comes over
//!   the RTSP session's transport, so a player must never try the camera's address or a
//!   multicast group the source's SDP happened to carry (RFC 2326 Appendix C.1.7).
//! - Parameter sets the source sent only in-band are added (H.264 `sprop-parameter-sets`, RFC
//!   6184 §8.1, every SPS and PPS seen; H.265 `sprop-vps/sps/pps`, RFC 7798 §7.1), so players
//!   set up their decoder before the first keyframe; and `packetization-mode=1` when the source
//!   fragments (FU-A) or aggregates (STAP-A) but its SDP did not say so (mode 0 forbids both).
//!
//! Everything else passes through byte for byte.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use finch_proto::codec::{h265, VideoCodec};
use finch_proto::sdp::{Line, Sdp};
use finch_relay::Stream;
use std::net::IpAddr;

/// The SDP for a reader that reached the server at `local`.
pub(crate) fn describe(stream: &Stream, local: IpAddr) -> Sdp {
    let mut sdp = stream.sdp.with_server_controls();
    rewrite_addresses(&mut sdp, local);
    add_in_band_parameter_sets(&mut sdp, stream);
    sdp
}

fn rewrite_addresses(sdp: &mut Sdp, local: IpAddr) {
    let (family, any) = match local.to_canonical() {
        IpAddr::V4(_) => ("IP4", "0.0.0.0"),
        IpAddr::V6(_) => ("IP6", "::"),
    };
    let connection = format!("IN {family} {any}");
    let mut has_origin = false;
    for l in sdp.session.iter_mut() {
        match l.kind {
            'o' => {
                has_origin = true;
                // Keep the source's session id and version (players watch them for changes).
                let f: Vec<&str> = l.value.split_whitespace().collect();
                let id = f.get(1).copied().unwrap_or("0");
                let version = f.get(2).copied().unwrap_or("0");
                l.value = format!("- {id} {version} IN {family} {}", local.to_canonical());
            }
            'c' => l.value = connection.clone(),
            _ => {}
        }
    }
    if !has_origin {
        // RFC 4566 §5: o= follows v=.
        sdp.session.insert(
            1.min(sdp.session.len()),
            Line {
                kind: 'o',
                value: format!("- 0 0 IN {family} {}", local.to_canonical()),
            },
        );
    }
    for m in sdp.media.iter_mut() {
        for l in m.lines.iter_mut().filter(|l| l.kind == 'c') {
            l.value = connection.clone();
        }
    }
    let every_media_has_c = sdp
        .media
        .iter()
        .all(|m| m.lines.iter().any(|l| l.kind == 'c'));
    if !sdp.session.iter().any(|l| l.kind == 'c') && !every_media_has_c {
        // RFC 4566 §5.7: c= at session level, before b=, t= and the attributes.
        let at = sdp
            .session
            .iter()
            .position(|l| matches!(l.kind, 'b' | 't' | 'r' | 'z' | 'k' | 'a'))
            .unwrap_or(sdp.session.len());
        sdp.session.insert(
            at,
            Line {
                kind: 'c',
                value: connection,
            },
        );
    }
}

fn add_in_band_parameter_sets(sdp: &mut Sdp, stream: &Stream) {
    let Some((track, codec, sets)) = stream.in_band_parameter_sets().or_else(|| {
        // No sets seen, but the packetization mode may still need saying.
        stream
            .tracks
            .iter()
            .position(|t| VideoCodec::from_encoding(&t.codec) == Some(VideoCodec::H264))
            .map(|t| (t, VideoCodec::H264, Vec::new()))
    }) else {
        return;
    };
    let Some(media) = sdp.media.get_mut(track) else {
        return;
    };
    let fmtp = media.fmtp().unwrap_or_default().to_owned();
    let mut added: Vec<String> = Vec::new();
    match codec {
        VideoCodec::H264 => {
            if !fmtp.contains("packetization-mode") && stream.uses_non_interleaved_mode() {
                added.push("packetization-mode=1".to_owned());
            }
            if !fmtp.contains("sprop-parameter-sets") && !sets.is_empty() {
                // Sets come SPS first, then PPS, as RFC 6184 §8.1 lists them.
                let encoded: Vec<String> = sets.iter().map(|s| STANDARD.encode(s)).collect();
                added.push(format!("sprop-parameter-sets={}", encoded.join(",")));
            }
        }
        VideoCodec::H265 => {
            if !fmtp.contains("sprop-sps") {
                for name in ["sprop-vps", "sprop-sps", "sprop-pps"] {
                    let of_kind: Vec<String> = sets
                        .iter()
                        .filter(|s| h265::sprop_name(s) == Some(name))
                        .map(|s| STANDARD.encode(s))
                        .collect();
                    if !of_kind.is_empty() {
                        added.push(format!("{name}={}", of_kind.join(",")));
                    }
                }
            }
        }
    }
    if added.is_empty() {
        return;
    }
    let mut params = fmtp;
    for a in added {
        if !params.is_empty() {
            params.push_str("; ");
        }
        params.push_str(&a);
    }
    media.set_fmtp(&params);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use finch_proto::rtp::build_packet;
    use finch_relay::{Kind, RelayParams};
    use std::time::Instant;

    fn stream(sdp: &str) -> Stream {
        Stream::new(
            Sdp::parse(sdp.as_bytes()).unwrap(),
            RelayParams {
                reader_queue_packets: 64,
                slow_reader_max_dropped_packets: 100,
                gop_cache: true,
                gop_cache_max_bytes: 1 << 20,
                gop_cache_max_packets: 1024,
                max_readers: 10,
            },
        )
    }

    fn push(s: &Stream, seq: u16, nal: &[u8]) {
        let p = Bytes::from(build_packet(96, true, seq, 0, 1, nal));
        s.push(0, Kind::Rtp, p, Instant::now());
    }

    #[test]
    fn a_camera_s_addresses_never_reach_a_player() {
        let s = stream("v=0\r\no=cam 12 3 IN IP4 192.168.1.64\r\ns=x\r\nc=IN IP4 239.1.2.3/127\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\nc=IN IP4 192.168.1.64\r\na=rtpmap:96 H264/90000\r\n");
        let text = describe(&s, "10.0.0.5".parse().unwrap()).write();
        assert!(text.contains("o=- 12 3 IN IP4 10.0.0.5\r\n"), "{text}");
        assert_eq!(text.matches("c=IN IP4 0.0.0.0\r\n").count(), 2, "{text}");
        assert!(
            !text.contains("192.168") && !text.contains("239.1"),
            "{text}"
        );
        // No c= anywhere: one is added at session level, in RFC 4566's order.
        let s = stream("v=0\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
        let text = describe(&s, "::1".parse().unwrap()).write();
        assert!(
            text.starts_with("v=0\r\no=- 0 0 IN IP6 ::1\r\ns=x\r\nc=IN IP6 ::\r\nt=0 0\r\n"),
            "{text}"
        );
    }

    #[test]
    fn every_in_band_pps_and_the_packetization_mode_are_described() {
        let s = stream("v=0\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
        push(&s, 1, &[0x67, 66, 0, 30, 0x80]); // SPS id 0
        push(&s, 2, &[0x68, 0x80, 1]); // PPS id 0
        push(&s, 3, &[0x68, 0x40, 2]); // PPS id 1
        push(&s, 4, &[0x7c, 0x85, 0]); // FU-A: needs packetization-mode=1
        let sdp = describe(&s, "127.0.0.1".parse().unwrap());
        let fmtp = sdp.media[0].fmtp().unwrap().to_owned();
        assert_eq!(
            fmtp,
            format!(
                "packetization-mode=1; sprop-parameter-sets={},{},{}",
                STANDARD.encode([0x67, 66, 0, 30, 0x80]),
                STANDARD.encode([0x68, 0x80, 1]),
                STANDARD.encode([0x68, 0x40, 2])
            )
        );
        // A source that said its mode keeps it.
        let s = stream("v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01e\r\n");
        push(&s, 1, &[0x7c, 0x85, 0]);
        let sdp = describe(&s, "127.0.0.1".parse().unwrap());
        assert_eq!(
            sdp.media[0].fmtp(),
            Some("packetization-mode=1;profile-level-id=42e01e")
        );
    }
}
