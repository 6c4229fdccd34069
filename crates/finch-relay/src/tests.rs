//! The relay's behaviour as sources and readers see it, without sockets.

use super::*;
use bytes::Bytes;
use finch_proto::rtp::{build_packet, RtpHeader};
use finch_proto::sdp::Sdp;
use std::sync::Arc;
use std::time::Instant;

const SDP: &[u8] = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n";

fn params(queue: usize) -> RelayParams {
    RelayParams {
        reader_queue_packets: queue,
        slow_reader_max_dropped_packets: 100,
        gop_cache: true,
        gop_cache_max_bytes: 1 << 20,
        gop_cache_max_packets: 4096,
        max_readers: 10,
    }
}

fn stream(p: RelayParams) -> Arc<Stream> {
    Arc::new(Stream::new(Sdp::parse(SDP).unwrap(), p))
}

fn info() -> ReaderInfo {
    ReaderInfo {
        session: "s".into(),
        peer: "127.0.0.1:1".parse().unwrap(),
        transport: "tcp",
    }
}

/// A video packet: a whole frame (marker set) unless `more` follow.
fn video(seq: u16, ts: u32, nal: &[u8]) -> Bytes {
    Bytes::from(build_packet(96, true, seq, ts, 1, nal))
}

fn audio(seq: u16) -> Bytes {
    Bytes::from(build_packet(97, true, seq, 0, 2, &[0]))
}

fn push(s: &Stream, track: usize, data: Bytes) {
    let _ = s.push(track, Kind::Rtp, data, Instant::now());
}

fn join(s: &Arc<Stream>, start: Start) -> Reader {
    s.join(info(), &[0, 1], start).unwrap()
}

/// Everything ready for the reader, as (track, seq) of RTP packets.
fn drain(r: &mut Reader) -> Vec<(usize, u16)> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    while let Ok(n) = r.try_recv(&mut batch, 64) {
        if n == 0 {
            break;
        }
        for p in batch.drain(..) {
            if !p.is_rtcp() {
                out.push((p.track, RtpHeader::parse(p.data()).unwrap().sequence));
            }
        }
    }
    out
}

fn seqs(r: &mut Reader) -> Vec<u16> {
    drain(r).into_iter().map(|(_, s)| s).collect()
}

#[test]
fn late_joiner_starts_at_the_last_keyframe() {
    let s = stream(params(64));
    push(&s, 0, video(1, 0, &[0x41])); // before any keyframe
    push(&s, 0, video(2, 3000, &[0x67])); // SPS: keyframe starts
    push(&s, 0, video(3, 3000, &[0x68]));
    push(&s, 0, video(4, 3000, &[0x65])); // IDR, same timestamp: same keyframe
    push(&s, 0, video(5, 6000, &[0x41]));
    let mut r = join(&s, Start::Cache);
    assert_eq!(r.start()[0], Some((2, 3000)));
    assert_eq!(r.start()[1], None, "no audio seen yet");
    assert_eq!(r.backlog(), 4);
    push(&s, 0, video(6, 9000, &[0x41]));
    assert_eq!(seqs(&mut r), vec![2, 3, 4, 5, 6]);
    // A new keyframe replaces the cache.
    push(&s, 0, video(7, 12000, &[0x7c, 0x85]));
    let mut r2 = join(&s, Start::Cache);
    assert_eq!(seqs(&mut r2), vec![7]);
    assert_eq!(s.in_band_parameter_sets().unwrap().2.len(), 2);
    // A reader coming back from PAUSE skips the cache and waits for the next keyframe.
    let mut r3 = join(&s, Start::NextKey);
    push(&s, 0, video(8, 15000, &[0x41]));
    push(&s, 0, video(9, 18000, &[0x65]));
    assert_eq!(seqs(&mut r3), vec![9]);
}

#[test]
fn without_a_usable_cache_a_new_reader_waits_for_the_next_keyframe() {
    // The cache off, and a GOP too long for it: either way no reader starts on a P-frame.
    let mut off = params(64);
    off.gop_cache = false;
    let mut short = params(64);
    short.gop_cache_max_packets = 3;
    for p in [off, short] {
        let s = stream(p);
        push(&s, 0, video(1, 0, &[0x65]));
        for i in 2..6 {
            push(&s, 0, video(i, u32::from(i), &[0x41]));
        }
        let mut r = join(&s, Start::Cache);
        assert!(r.is_waiting_for_keyframe());
        assert_eq!(r.start()[0], Some((6, 5)), "RTP-Info names where live is");
        push(&s, 0, video(6, 6, &[0x41]));
        push(&s, 1, audio(1));
        assert!(
            seqs(&mut r).is_empty(),
            "P-frames and audio before the keyframe"
        );
        push(&s, 0, video(7, 7, &[0x65]));
        push(&s, 1, audio(2));
        // The audio waits for the next video frame end, or for its flush deadline.
        s.flush();
        assert_eq!(drain(&mut r), vec![(0, 7), (1, 2)]);
    }
}

#[test]
fn a_reader_gets_only_the_tracks_it_set_up() {
    let s = stream(params(64));
    let mut audio_only = s.join(info(), &[1], Start::Cache).unwrap();
    push(&s, 0, video(1, 0, &[0x65]));
    for i in 0..50u16 {
        push(&s, 0, video(100 + i, u32::from(i), &[0x41]));
        push(&s, 1, audio(i));
    }
    s.flush();
    let got = drain(&mut audio_only);
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|(t, _)| *t == 1), "{got:?}");
}

#[test]
fn readers_wake_once_a_frame_is_complete() {
    let s = stream(params(64));
    let mut r = join(&s, Start::Cache);
    // A keyframe in three packets: nothing is ready until the marker ends it.
    for (i, nal) in [[0x7c, 0x85], [0x7c, 0x05], [0x7c, 0x45]]
        .iter()
        .enumerate()
    {
        let marker = i == 2;
        let p = Bytes::from(build_packet(96, marker, i as u16, 0, 1, nal));
        push(&s, 0, p);
        let mut batch = Vec::new();
        let n = r.try_recv(&mut batch, 64).unwrap();
        assert_eq!(n, if marker { 3 } else { 0 }, "after packet {i}");
    }
}

#[test]
fn audio_goes_out_with_the_next_video_frame_not_on_its_own() {
    let s = stream(params(64));
    let mut r = join(&s, Start::Cache);
    let at = Instant::now();
    push(&s, 0, video(1, 0, &[0x65]));
    assert_eq!(seqs(&mut r), vec![1]);
    // Audio between two frames: no wake, but a deadline for the caller.
    assert!(s.push(1, Kind::Rtp, audio(1), at).is_some());
    let mut batch = Vec::new();
    assert_eq!(r.try_recv(&mut batch, 64).unwrap(), 0);
    // The next frame's end publishes them with it, in arrival order.
    push(&s, 0, video(2, 3600, &[0x41]));
    assert_eq!(drain(&mut r), vec![(1, 1), (0, 2)]);
}

#[test]
fn a_source_s_last_unmarked_packets_are_flushed_not_held_back() {
    let s = stream(params(64));
    let mut r = join(&s, Start::Cache);
    let at = Instant::now();
    let unmarked = |seq: u16, nal: u8| Bytes::from(build_packet(96, false, seq, 0, 1, &[nal]));
    assert_eq!(
        s.push(0, Kind::Rtp, unmarked(1, 0x65), at),
        Some(at + std::time::Duration::from_millis(50)),
        "the caller is told when to flush"
    );
    assert!(seqs(&mut r).is_empty());
    s.flush();
    assert_eq!(seqs(&mut r), vec![1]);
    // Flushing with nothing pending wakes nobody.
    s.flush();
    assert!(seqs(&mut r).is_empty());
}

#[test]
fn a_slow_reader_skips_to_a_newer_keyframe_and_loses_only_whole_frames() {
    let s = stream(params(16));
    let mut r = join(&s, Start::Cache);
    push(&s, 0, video(1, 0, &[0x65]));
    assert_eq!(seqs(&mut r), vec![1]);
    // Far behind: 30 P-frames, a keyframe, 3 more P-frames.
    for i in 2..32u16 {
        push(&s, 0, video(i, u32::from(i), &[0x41]));
    }
    push(&s, 0, video(32, 32, &[0x65]));
    for i in 33..36u16 {
        push(&s, 0, video(i, u32::from(i), &[0x41]));
    }
    assert_eq!(seqs(&mut r), vec![32, 33, 34, 35]);
    assert_eq!(s.totals().packets_dropped, 30);
}

#[test]
fn a_reader_that_never_catches_up_is_told_to_go_and_the_source_goes_on() {
    // No cache: the ring keeps only the 16-packet window, which the reader falls out of.
    let mut p = params(16);
    p.gop_cache = false;
    let s = stream(p);
    let mut r = join(&s, Start::Cache);
    push(&s, 0, video(0, 0, &[0x65]));
    assert_eq!(seqs(&mut r), vec![0]);
    for i in 1..500u16 {
        push(&s, 0, video(i, u32::from(i), &[0x41]));
    }
    let mut batch = Vec::new();
    assert_eq!(r.try_recv(&mut batch, 64), Err(Ended::TooSlow));
    assert_eq!(
        s.counters
            .readers_kicked
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn tiny_packets_neither_grow_memory_nor_make_a_cache_to_start_from() {
    let mut p = params(1024);
    p.gop_cache_max_bytes = 8 << 20;
    p.gop_cache_max_packets = 4096;
    let s = stream(p);
    push(&s, 0, video(0, 0, &[0x65]));
    for i in 1..=700_000u32 {
        push(&s, 0, video(i as u16, i, &[0x41]));
    }
    let bound = 1024 * (1500 + PACKET_OVERHEAD) + (8 << 20);
    assert!(s.buffered_bytes() <= bound, "{}", s.buffered_bytes());
    let r = join(&s, Start::Cache);
    assert!(r.is_waiting_for_keyframe(), "the GOP was too long to cache");
}

#[test]
fn a_joining_reader_gets_the_last_sender_report_first() {
    let s = stream(params(16));
    // SR with no report blocks: header + sender info = 28 bytes, length field 6.
    let mut sr = vec![0x80, 200, 0, 6];
    sr.extend_from_slice(&[0; 24]);
    let _ = s.push(1, Kind::Rtcp, Bytes::from(sr.clone()), Instant::now());
    let _ = s.push(1, Kind::Rtcp, Bytes::from_static(b"junk"), Instant::now());
    push(&s, 0, video(1, 0, &[0x65]));
    let mut r = join(&s, Start::Cache);
    let mut batch = Vec::new();
    r.try_recv(&mut batch, 64).unwrap();
    assert!(batch[0].is_rtcp() && batch[0].track == 1 && batch[0].data() == &sr[..]);
    assert!(!batch[1].is_rtcp());
    assert_eq!(batch.len(), 2, "the junk was not relayed");
}

#[test]
fn h265_parameter_sets_are_kept() {
    let sdp = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\n";
    let s = Stream::new(Sdp::parse(sdp).unwrap(), params(16));
    push(&s, 0, video(1, 0, &[32 << 1, 1, 9]));
    push(&s, 0, video(2, 0, &[33 << 1, 1, 8]));
    push(&s, 0, video(3, 0, &[34 << 1, 1, 7]));
    let (track, codec, sets) = s.in_band_parameter_sets().unwrap();
    assert_eq!((track, codec), (0, finch_proto::codec::VideoCodec::H265));
    assert_eq!(sets.len(), 3);
}

#[tokio::test]
async fn close_ends_every_reader() {
    let s = stream(params(16));
    let mut r = join(&s, Start::Cache);
    let waiting = tokio::spawn(async move {
        let mut batch = Vec::new();
        r.recv(&mut batch, 64).await
    });
    tokio::task::yield_now().await;
    s.close();
    assert_eq!(waiting.await.unwrap(), Err(Ended::Closed));
    assert!(matches!(
        s.join(info(), &[0], Start::Cache),
        Err(JoinError::Closed)
    ));
}

#[test]
fn one_source_per_path_and_a_dropped_handle_frees_it_even_in_a_panic() {
    let r = Registry::new();
    let sdp = Sdp::parse(SDP).unwrap();
    let source = |id: &str| SourceInfo {
        kind: SourceKind::Publisher,
        id: id.into(),
        peer: "127.0.0.1:1".parse().unwrap(),
        transport: None,
        evict: Evict::default(),
    };
    let first = r
        .announce(
            "a",
            source("s1"),
            sdp.clone(),
            params(16),
            Policy::default(),
        )
        .unwrap();
    assert_eq!(
        r.announce(
            "a",
            source("s2"),
            sdp.clone(),
            params(16),
            Policy::default()
        )
        .err(),
        Some(AnnounceError::Busy("a".into()))
    );
    assert!(r.live_stream("a").is_none(), "not live before RECORD");
    assert!(first.go_live());
    let stream = r.live_stream("a").unwrap();
    let reader = stream.join(info(), &[0], Start::Cache).unwrap();
    // The publisher's task panics while holding its handle and a reader's.
    let panicked = std::thread::spawn(move || {
        let _held = (first, reader);
        panic!("a connection task panics");
    })
    .join();
    assert!(panicked.is_err());
    assert!(r.get("a").is_none(), "the path was given up");
    assert!(stream.is_closed());
    assert_eq!(stream.reader_count(), 0, "the reader left");
    r.announce("a", source("s2"), sdp, params(16), Policy::default())
        .unwrap();
}

#[test]
fn the_readers_limit_holds_and_leaving_makes_room() {
    let mut p = params(16);
    p.max_readers = 2;
    let s = stream(p);
    let a = join(&s, Start::Cache);
    let _b = join(&s, Start::Cache);
    assert!(matches!(
        s.join(info(), &[0], Start::Cache),
        Err(JoinError::TooManyReaders)
    ));
    a.sent(3, 300);
    drop(a);
    assert_eq!(s.reader_count(), 1);
    assert_eq!(s.totals().bytes_out, 300, "a reader's counts outlive it");
    join(&s, Start::Cache);
}

fn src(id: &str, evict: Evict) -> SourceInfo {
    SourceInfo {
        kind: SourceKind::Publisher,
        id: id.into(),
        peer: "127.0.0.1:1".parse().unwrap(),
        transport: None,
        evict,
    }
}

#[test]
fn a_source_back_within_its_grace_continues_the_stream_for_the_same_readers() {
    let r = Registry::new();
    let sdp = Sdp::parse(SDP).unwrap();
    let grace = Policy {
        grace: std::time::Duration::from_secs(10),
        takeover: false,
    };
    let first = r
        .announce(
            "a",
            src("s1", Evict::default()),
            sdp.clone(),
            params(64),
            grace,
        )
        .unwrap();
    first.go_live();
    let stream = first.stream().clone();
    let mut reader = stream.join(info(), &[0, 1], Start::Cache).unwrap();
    first.push(0, Kind::Rtp, video(500, 9000, &[0x65]), Instant::now());
    first.push(0, Kind::Rtp, video(501, 12000, &[0x41]), Instant::now());
    assert_eq!(seqs(&mut reader), vec![500, 501]);
    drop(first);
    assert!(matches!(r.get("a").unwrap().state, PathState::Away { .. }));
    assert!(!stream.is_closed(), "the readers wait");
    assert!(
        r.live_stream("a").is_none(),
        "nobody new finds it meanwhile"
    );
    // The encoder comes back with new numbering; first a P-frame, then a keyframe.
    let second = r
        .announce(
            "a",
            src("s2", Evict::default()),
            sdp.clone(),
            params(64),
            grace,
        )
        .unwrap();
    assert!(Arc::ptr_eq(second.stream(), &stream));
    second.go_live();
    second.push(0, Kind::Rtp, video(7, 100, &[0x41]), Instant::now());
    second.push(0, Kind::Rtp, video(8, 200, &[0x65]), Instant::now());
    second.push(0, Kind::Rtp, video(9, 300, &[0x41]), Instant::now());
    assert_eq!(
        seqs(&mut reader),
        vec![502, 503],
        "from its keyframe on, numbered on"
    );
    // Gone for good: the grace runs out and the readers end.
    drop(second);
    assert!(r.expire(Instant::now()).is_empty());
    assert_eq!(
        r.expire(Instant::now() + std::time::Duration::from_secs(11)),
        vec!["a"]
    );
    assert!(stream.is_closed());
}

#[test]
fn a_takeover_evicts_the_old_source_and_a_different_stream_closes_the_readers() {
    let r = Registry::new();
    let sdp = Sdp::parse(SDP).unwrap();
    let evicted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = evicted.clone();
    let evict = Evict(Some(Arc::new(move || {
        flag.store(true, std::sync::atomic::Ordering::Relaxed)
    })));
    let takeover = Policy {
        grace: std::time::Duration::ZERO,
        takeover: true,
    };
    let old = r
        .announce("a", src("old", evict), sdp.clone(), params(64), takeover)
        .unwrap();
    old.go_live();
    let stream = old.stream().clone();
    let new = r
        .announce(
            "a",
            src("new", Evict::default()),
            sdp.clone(),
            params(64),
            takeover,
        )
        .unwrap();
    assert!(evicted.load(std::sync::atomic::Ordering::Relaxed));
    // The old one can push no more; its leaving does not take the path.
    let mut reader = stream.join(info(), &[0], Start::Cache).unwrap();
    old.push(0, Kind::Rtp, video(1, 0, &[0x65]), Instant::now());
    drop(old);
    assert!(r.get("a").is_some());
    new.push(0, Kind::Rtp, video(40, 0, &[0x65]), Instant::now());
    assert_eq!(seqs(&mut reader), vec![40]);
    // Another publisher with other tracks: the stream cannot go on, its readers end.
    let audio_only = Sdp::parse(b"v=0\r\nm=audio 0 RTP/AVP 0\r\n").unwrap();
    let _third = r
        .announce(
            "a",
            src("third", Evict::default()),
            audio_only,
            params(64),
            takeover,
        )
        .unwrap();
    assert!(stream.is_closed());
}

#[test]
fn a_published_frame_goes_out_as_one_iovec_of_interleaved_packets() {
    use crate::interleaved::{Interleaved, MAX_SLICES};
    use std::io::IoSlice;
    let s = stream(params(64));
    let mut r = join(&s, Start::Cache);
    let at = Instant::now();
    let part = |seq: u16, marker: bool, nal: u8| {
        Bytes::from(build_packet(96, marker, seq, 0, 1, &[nal; 300]))
    };
    let sent = [
        part(1, false, 0x65),
        part(2, false, 0x65),
        part(3, true, 0x65),
    ];
    for p in &sent {
        s.push(0, Kind::Rtp, p.clone(), at);
    }
    let mut batch = Vec::new();
    assert_eq!(r.try_recv(&mut batch, 64).unwrap(), 3);
    let mut a = Interleaved::default();
    for i in 0..batch.len() {
        assert!(a.push(&batch, i, 0));
    }
    let mut slots = [IoSlice::new(&[]); MAX_SLICES];
    assert_eq!(
        a.slices(&batch, 0, &mut slots),
        (1, 1),
        "one run, one iovec"
    );
    let expected: Vec<u8> = sent
        .iter()
        .flat_map(|p| {
            [b'$', 0, (p.len() >> 8) as u8, p.len() as u8]
                .into_iter()
                .chain(p.iter().copied())
        })
        .collect();
    assert_eq!(&slots[0][..], &expected[..]);
    // On other channels the same packets need headers of their own.
    let mut b = Interleaved::default();
    for i in 0..batch.len() {
        assert!(b.push(&batch, i, 6));
    }
    let mut slots = [IoSlice::new(&[]); MAX_SLICES];
    assert_eq!(b.slices(&batch, 0, &mut slots), (3, 6));
    assert_eq!(b.len(), expected.len());
}

#[test]
fn a_stream_carried_to_another_worker_starts_new_readers_at_its_cache_and_moved_ones_after_it() {
    let a = stream(params(64));
    push(&a, 0, video(1, 0, &[0x65]));
    push(&a, 0, video(2, 3600, &[0x41]));
    let (reports, gop) = a.cached();
    assert_eq!(gop.len(), 2);
    let numbering = a.numbering();
    // The next worker's stream: numbering and cache restored before the source's next packet.
    let b = stream(params(64));
    assert!(b.resume_numbering(&numbering));
    b.restore(reports, gop);
    let mut moved = join(&b, Start::Next);
    let mut fresh = join(&b, Start::Cache);
    push(&b, 0, video(3, 7200, &[0x41]));
    assert_eq!(
        seqs(&mut moved),
        vec![3],
        "a moved reader goes on with the next packet"
    );
    assert_eq!(
        seqs(&mut fresh),
        vec![1, 2, 3],
        "a new reader starts at the carried keyframe"
    );
}

#[test]
fn a_carried_numbering_keeps_a_returned_source_s_rewriting() {
    let a = stream(params(64));
    push(&a, 0, video(1, 0, &[0x65]));
    // The source comes back with other numbers: its packets are rewritten to follow on.
    let feed = a.new_source(&a.sdp).unwrap();
    let _ = feed.push(0, Kind::Rtp, video(500, 90_000, &[0x65]), Instant::now());
    let b = stream(params(64));
    assert!(b.resume_numbering(&a.numbering()));
    let mut r = join(&b, Start::Next);
    // The same source's next packet gets the same rewriting in the next worker.
    push(&b, 0, video(501, 93_600, &[0x41]));
    assert_eq!(seqs(&mut r), vec![3]);
}
