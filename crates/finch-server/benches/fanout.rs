//! Fan-out benchmark: one publisher's packet to N readers' queues (`Stream::push`), with the
//! readers draining their queues as connection tasks do. Throughput is in deliveries (packets ×
//! readers), so the ratio between N = 1 and N = 1000 shows the per-reader cost.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use finch_proto::rtp::build_packet;
use finch_proto::sdp::Sdp;
use finch_server::stream::{ReaderInfo, RelayParams, Stream};
use std::hint::black_box;
use tokio_util::sync::CancellationToken;

const SDP: &[u8] = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
const BURST: u16 = 64;

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for readers in [1usize, 10, 100, 1000] {
        let stream = Stream::new(
            Sdp::parse(SDP).unwrap(),
            RelayParams {
                reader_queue_packets: 4096,
                slow_reader_max_dropped_packets: u64::MAX,
                gop_cache: true,
                gop_cache_max_bytes: 8 << 20,
                max_readers: 100_000,
            },
        );
        let mut rxs: Vec<_> = (0..readers)
            .map(|_| {
                let info = ReaderInfo {
                    session: "bench".into(),
                    peer: "127.0.0.1:1".parse().unwrap(),
                    transport: "tcp",
                };
                stream
                    .join(info, CancellationToken::new(), true)
                    .unwrap()
                    .rx
            })
            .collect();
        let packets: Vec<Bytes> = (0..BURST)
            .map(|i| {
                let nal: &[u8] = if i == 0 { &[0x65; 1388] } else { &[0x41; 1388] };
                Bytes::from(build_packet(96, i == BURST - 1, i, 3000, 1, nal))
            })
            .collect();
        g.throughput(Throughput::Elements(u64::from(BURST) * readers as u64));
        g.bench_with_input(BenchmarkId::from_parameter(readers), &readers, |b, _| {
            b.iter(|| {
                for p in &packets {
                    stream.push(0, false, p.clone());
                }
                for rx in rxs.iter_mut() {
                    while let Ok(p) = rx.try_recv() {
                        black_box(p);
                    }
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
