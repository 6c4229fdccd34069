//! Protocol-core benchmarks: request parsing, interleaved framing, RTP headers, keyframe
//! detection. Report ratios between runs on the same machine, not absolute times.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use finch_proto::codec::h264;
use finch_proto::rtp::{build_packet, RtpHeader};
use finch_proto::rtsp::{Limits, Parser};
use std::hint::black_box;

const SETUP: &[u8] = b"SETUP rtsp://127.0.0.1:8554/live/cam1/trackID=0 RTSP/1.0\r\nCSeq: 3\r\nUser-Agent: LibVLC/3.0.18 (LIVE555 Streaming Media v2022.07.14)\r\nTransport: RTP/AVP;unicast;client_port=56420-56421\r\n\r\n";

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtsp");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_setup_request", |b| {
        b.iter_batched(
            || BytesMut::from(SETUP),
            |mut buf| {
                let mut p = Parser::new(Limits::default());
                black_box(p.parse(&mut buf).ok());
            },
            BatchSize::SmallInput,
        )
    });
    // The same request through the rtsp-types crate, for the comparison behind writing the
    // parser by hand (see rtsp/parser.rs).
    g.bench_function("parse_setup_request_rtsp_types", |b| {
        b.iter(|| black_box(rtsp_types::Message::<Vec<u8>>::parse(black_box(SETUP)).ok()))
    });
    // 100 interleaved RTP frames of 1400 bytes, as a TCP publisher sends them.
    let rtp = build_packet(96, false, 1, 2, 3, &[0x41; 1388]);
    let mut stream = Vec::new();
    for _ in 0..100 {
        stream.extend_from_slice(&[b'$', 0, (rtp.len() >> 8) as u8, rtp.len() as u8]);
        stream.extend_from_slice(&rtp);
    }
    g.throughput(Throughput::Elements(100));
    g.bench_function("split_100_interleaved_frames", |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                let mut p = Parser::new(Limits::default());
                while let Ok(Some(item)) = p.parse(&mut buf) {
                    black_box(item);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn rtp(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtp");
    g.throughput(Throughput::Elements(1));
    let idr = build_packet(96, false, 1, 2, 3, &[0x7c, 0x85, 0, 0, 0]);
    let slice = build_packet(96, true, 1, 2, 3, &[0x41; 1388]);
    g.bench_function("header", |b| {
        b.iter(|| black_box(RtpHeader::parse(black_box(&slice))))
    });
    // The same through the rtp-types crate (see rtp.rs for why Finch keeps its own view).
    g.bench_function("header_rtp_types", |b| {
        b.iter(|| {
            black_box(
                rtp_types::RtpPacket::parse(black_box(&slice[..]))
                    .map(|p| (p.sequence_number(), p.timestamp(), p.payload().len())),
            )
        })
    });
    g.bench_function("h264_keyframe_fu_a", |b| {
        b.iter(|| {
            let h = RtpHeader::parse(black_box(&idr)).ok();
            black_box(h.map(|h| h264::starts_keyframe(&idr[h.payload])))
        })
    });
    g.finish();
}

criterion_group!(benches, parse, rtp);
criterion_main!(benches);
