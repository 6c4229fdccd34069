//! The HLS muxer never panics on any packet sequence (garbage, lost and reordered packets,
//! clock jumps), and what it keeps stays bounded.
#![no_main]
use finch_hls::{Muxer, MuxerConfig};
use finch_proto::rtp::build_packet;
use finch_proto::sdp::Sdp;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LADdoFB+wEQAAAAwBAAAAMg8UKqA==,aM48gA==\r\n\
m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
a=fmtp:97 streamtype=5;mode=AAC-hbr;config=1210;sizelength=13;indexlength=3;indexdeltalength=3\r\n";

fuzz_target!(|data: &[u8]| {
    let sdp = Sdp::parse(SDP.as_bytes()).unwrap();
    let mut m = Muxer::new(&sdp, MuxerConfig::default()).unwrap();
    // Packets: [len][track and marker][seq step][ts step] then len bytes.
    let (mut seq, mut ts, mut at) = (0u16, 0u32, Duration::ZERO);
    let mut rest = data;
    let mut total = 0usize;
    while let [len, tm, s, t, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let payload = &tail[..n];
        rest = &tail[n..];
        seq = seq.wrapping_add(u16::from(*s % 4));
        ts = ts.wrapping_add(u32::from(*t) * 900);
        at += Duration::from_millis(u64::from(*t));
        let track = usize::from(tm & 1);
        let packet = build_packet(96 + *tm % 2, tm & 2 != 0, seq, ts, 1, payload);
        total += packet.len();
        m.push(track, &packet, at);
        if tm & 4 != 0 {
            m.push(track, payload, at);
        }
        let _ = m.playlist();
    }
    // Every byte kept came from the input, give or take the boxes around it.
    assert!(m.bytes_held() <= 4 * total + 64 * 1024, "{} from {total}", m.bytes_held());
});
