//! The RTP depacketizers (H.264, H.265, AAC, Opus) and the SPS readers never panic on any
//! packet sequence; every access unit they emit is within the size bound and, for video, a
//! well-formed run of length-prefixed NAL units.
#![no_main]
use finch_proto::codec::sps::{h264_sps, h265_sps};
use finch_proto::depack::{opus_duration, Aac, AacConfig, Frame, NalCodec, NalDepack, MAX_FRAME_BYTES};
use libfuzzer_sys::fuzz_target;

fn well_formed(f: &Frame) -> bool {
    let mut rest = &f.data[..];
    while rest.len() >= 4 {
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        match rest.get(4..4 + n) {
            Some(_) if n > 0 => rest = &rest[4 + n..],
            _ => return false,
        }
    }
    rest.is_empty()
}

fuzz_target!(|data: &[u8]| {
    let config = AacConfig::from_fmtp("streamtype=5; mode=AAC-hbr; config=1210; sizelength=13; indexlength=3; indexdeltalength=3").unwrap();
    let mut h264 = NalDepack::new(NalCodec::H264);
    let mut h265 = NalDepack::new(NalCodec::H265);
    let mut aac = Aac::new(config);
    let mut out = Vec::new();
    let mut audio = Vec::new();
    // Packets: [len][seq lo][flags: bit 0 marker, bits 1.. timestamp step] then len bytes.
    let mut rest = data;
    let (mut seq, mut ts) = (0u16, 0u32);
    while let [len, s, flags, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let payload = &tail[..n];
        rest = &tail[n..];
        seq = seq.wrapping_add(u16::from(*s % 3));
        ts = ts.wrapping_add(u32::from(flags >> 1) * 90);
        let marker = flags & 1 == 1;
        h264.push(seq, ts, marker, payload, &mut out);
        h265.push(seq, ts, marker, payload, &mut out);
        aac.push(seq, ts, marker, payload, &mut audio);
        let _ = opus_duration(payload);
        let _ = h264_sps(payload);
        let _ = h265_sps(payload);
    }
    for f in &out {
        assert!(f.data.len() <= MAX_FRAME_BYTES);
        assert!(well_formed(f), "{:?}", f.data);
    }
    for f in &audio {
        assert!(f.data.len() <= MAX_FRAME_BYTES);
    }
});
