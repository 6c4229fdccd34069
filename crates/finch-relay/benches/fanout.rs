//! Fan-out benchmark: one source's frame of packets to N readers (`Stream::push`), with every
//! reader then taking its batch as a connection task does. Throughput is in deliveries
//! (packets × readers), so the ratio between N = 1 and N = 1000 shows the per-reader cost; the
//! `push` group shows the source's cost alone, which must not grow with N; `interleaved` the
//! assembly of a reader's frame into `writev` iovecs (published frames, and packets on
//! channels of their own that need a header each).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use finch_proto::rtp::build_packet;
use finch_proto::sdp::Sdp;
use finch_relay::interleaved::{Interleaved, MAX_SLICES};
use finch_relay::{Kind, ReaderInfo, RelayParams, Start, Stream};
use std::hint::black_box;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Instant;

const SDP: &[u8] = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
const FRAME: u16 = 32;

fn stream() -> Arc<Stream> {
    Arc::new(Stream::new(
        Sdp::parse(SDP).unwrap(),
        RelayParams {
            reader_queue_packets: 4096,
            slow_reader_max_dropped_packets: u64::MAX,
            gop_cache: true,
            gop_cache_max_bytes: 8 << 20,
            gop_cache_max_packets: 4096,
            max_readers: 100_000,
        },
    ))
}

fn frame() -> Vec<Bytes> {
    (0..FRAME)
        .map(|i| {
            let nal: &[u8] = if i == 0 { &[0x65; 1388] } else { &[0x41; 1388] };
            Bytes::from(build_packet(96, i == FRAME - 1, i, 3000, 1, nal))
        })
        .collect()
}

fn fanout(c: &mut Criterion) {
    let packets = frame();
    let mut g = c.benchmark_group("fanout");
    g.sample_size(20);
    for readers in [10usize, 1000, 10_000] {
        let s = stream();
        let info = ReaderInfo {
            session: "bench".into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            transport: "tcp",
        };
        let mut rs: Vec<_> = (0..readers)
            .map(|_| s.join(info.clone(), &[0], Start::Cache).unwrap())
            .collect();
        let mut batch = Vec::with_capacity(64);
        g.throughput(Throughput::Elements(u64::from(FRAME) * readers as u64));
        g.bench_with_input(BenchmarkId::from_parameter(readers), &readers, |b, _| {
            b.iter(|| {
                let now = Instant::now();
                for p in &packets {
                    s.push(0, Kind::Rtp, p.clone(), now);
                }
                for r in rs.iter_mut() {
                    while let Ok(n) = r.try_recv(&mut batch, 64) {
                        if n == 0 {
                            break;
                        }
                        black_box(&batch);
                        batch.clear();
                    }
                }
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("push");
    for readers in [0usize, 1000, 10_000] {
        let s = stream();
        let info = ReaderInfo {
            session: "bench".into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            transport: "tcp",
        };
        let _rs: Vec<_> = (0..readers)
            .map(|_| s.join(info.clone(), &[0], Start::Cache).unwrap())
            .collect();
        g.throughput(Throughput::Elements(u64::from(FRAME)));
        g.bench_with_input(BenchmarkId::from_parameter(readers), &readers, |b, _| {
            b.iter(|| {
                let now = Instant::now();
                for p in &packets {
                    s.push(0, Kind::Rtp, p.clone(), now);
                }
            })
        });
    }
    g.finish();
}

fn interleaved(c: &mut Criterion) {
    let packets = frame();
    let s = stream();
    let info = ReaderInfo {
        session: "bench".into(),
        peer: "127.0.0.1:1".parse().unwrap(),
        transport: "tcp",
    };
    let mut r = s.join(info, &[0], Start::Cache).unwrap();
    let now = Instant::now();
    for p in &packets {
        s.push(0, Kind::Rtp, p.clone(), now);
    }
    let mut batch = Vec::with_capacity(64);
    r.try_recv(&mut batch, 64).unwrap();
    assert_eq!(batch.len(), usize::from(FRAME));
    let mut g = c.benchmark_group("interleaved");
    g.throughput(Throughput::Elements(u64::from(FRAME)));
    let mut a = Interleaved::default();
    for (name, channel) in [("framed_run", 0u8), ("own_channels", 6)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                a.clear();
                for i in 0..batch.len() {
                    a.push(&batch, i, channel);
                }
                let mut slots = [IoSlice::new(&[]); MAX_SLICES];
                let mut from = 0;
                while from < a.pieces() {
                    let (next, n) = a.slices(&batch, from, &mut slots);
                    black_box(&slots[..n]);
                    from = next;
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fanout, interleaved);
criterion_main!(benches);
