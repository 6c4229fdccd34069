//! The fan-out: one publisher's packets to many readers, without copies and without waiting.
//!
//! A packet is received once into a `Bytes` and every reader gets a clone of that handle (a
//! reference-count increment, never a copy of the payload). Each reader has its own bounded queue,
//! filled with `try_send`, so the publisher never waits for anyone. When a reader's queue is full
//! it starts dropping: every packet (all tracks) is discarded until the next keyframe starts, and
//! it resumes there, so it loses whole frames rather than arbitrary packets mid-frame. A reader
//! that has dropped `slow_reader_max_dropped_packets` packets in a row is disconnected.
//!
//! The GOP cache holds every packet since the last keyframe start (bounded by bytes); a reader
//! that joins gets it first, so its first video packet starts a keyframe and the picture appears
//! at once. Joining takes the same lock as `push`, so the cache snapshot and the live packets that
//! follow are contiguous: nothing is lost or sent twice.

use bytes::Bytes;
use finch_proto::codec::VideoCodec;
use finch_proto::rtp::RtpHeader;
use finch_proto::sdp::Sdp;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the relay knows of one track.
#[derive(Debug, Clone)]
pub struct TrackInfo {
    /// `video`, `audio` …
    pub media_type: String,
    /// The encoding name, upper-cased (`H264`), or `unknown`.
    pub codec: String,
    /// The RTP clock rate (0 if the SDP gave none).
    pub clock_rate: u32,
}

/// One packet on its way to readers.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The track index.
    pub track: usize,
    /// RTCP rather than RTP.
    pub rtcp: bool,
    /// The packet, shared by every reader.
    pub data: Bytes,
}

/// How a reader is connected, for the admin API.
#[derive(Debug, Clone)]
pub struct ReaderInfo {
    /// Its RTSP session id.
    pub session: String,
    /// Its address.
    pub peer: SocketAddr,
    /// `tcp` or `udp`.
    pub transport: &'static str,
}

/// Fan-out settings, from `[relay]`.
#[derive(Debug, Clone, Copy)]
pub struct RelayParams {
    /// Per-reader queue length in packets.
    pub reader_queue_packets: usize,
    /// Disconnect a reader after this many dropped packets in a row.
    pub slow_reader_max_dropped_packets: u64,
    /// Whether the GOP cache is on.
    pub gop_cache: bool,
    /// Its bound in bytes.
    pub gop_cache_max_bytes: usize,
    /// Most readers at once.
    pub max_readers: usize,
}

/// Why a reader could not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The publisher has left.
    #[error("the stream has ended")]
    Closed,
    /// `max_readers_per_path` reached.
    #[error("too many readers on this path")]
    TooManyReaders,
}

/// A reader's start: its queue, and per track the (seq, rtptime) of the first RTP packet it will
/// get, for RTP-Info.
pub struct Joined {
    /// The reader's id, to leave with.
    pub id: u64,
    /// The queue to drain.
    pub rx: mpsc::Receiver<Packet>,
    /// Per track, where the reader starts.
    pub start: Vec<Option<(u16, u32)>>,
    /// How many packets were queued at once from the cache (sender reports and the GOP).
    pub burst: usize,
}

/// Byte and packet counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes received from the publisher.
    pub bytes_in: AtomicU64,
    /// Packets received from the publisher.
    pub packets_in: AtomicU64,
    /// Bytes written to readers.
    pub bytes_out: AtomicU64,
    /// Packets written to readers.
    pub packets_out: AtomicU64,
    /// Packets dropped for slow readers.
    pub packets_dropped: AtomicU64,
    /// Readers disconnected for being too slow.
    pub readers_kicked: AtomicU64,
}

/// A published stream: its description, its readers and its GOP cache.
pub struct Stream {
    /// The publisher's SDP.
    pub sdp: Sdp,
    /// Tracks in SDP order.
    pub tracks: Vec<TrackInfo>,
    /// The track whose keyframes drive the GOP cache, and its codec.
    video: Option<(usize, VideoCodec)>,
    params: RelayParams,
    inner: Mutex<Inner>,
    /// Traffic counters.
    pub counters: Counters,
    /// Fired when the publisher leaves.
    pub closed: CancellationToken,
}

struct Reader {
    id: u64,
    tx: mpsc::Sender<Packet>,
    dropping: bool,
    dropped_in_row: u64,
    kick: CancellationToken,
    info: ReaderInfo,
}

#[derive(Default)]
struct Inner {
    readers: Vec<Reader>,
    next_id: u64,
    gop: Vec<Packet>,
    gop_bytes: usize,
    gop_valid: bool,
    /// RTP timestamp of the current keyframe, so its later packets don't restart the GOP.
    key_ts: Option<u32>,
    last: Vec<Option<(u16, u32)>>,
    /// H.264 SPS/PPS seen in-band on the video track, newest of each kind.
    param_sets: Vec<Bytes>,
    /// The publisher's last RTCP sender report per track: a joining reader gets it first, so
    /// players can sync audio and video without waiting for the next one (often 5 s away).
    last_sr: Vec<Option<Bytes>>,
    closed: bool,
}

impl Stream {
    /// A stream for the tracks a publisher announced.
    pub fn new(sdp: Sdp, params: RelayParams) -> Stream {
        let tracks: Vec<TrackInfo> = sdp
            .media
            .iter()
            .map(|m| {
                let map = m.rtpmap();
                TrackInfo {
                    media_type: m.media_type().to_owned(),
                    codec: map
                        .as_ref()
                        .map_or("unknown".to_owned(), |m| m.encoding.clone()),
                    clock_rate: map.map_or(0, |m| m.clock_rate),
                }
            })
            .collect();
        let video = tracks
            .iter()
            .enumerate()
            .find_map(|(i, t)| VideoCodec::from_encoding(&t.codec).map(|c| (i, c)));
        let inner = Inner {
            last: vec![None; tracks.len()],
            last_sr: vec![None; tracks.len()],
            ..Inner::default()
        };
        Stream {
            sdp,
            tracks,
            video,
            params,
            inner: Mutex::new(inner),
            counters: Counters::default(),
            closed: CancellationToken::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock can only come from a bug in this module; the data
        // (queues and counters) stays usable, so carry on rather than poisoning every reader.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Relays one packet from the publisher. Never blocks on a reader.
    pub fn push(&self, track: usize, rtcp: bool, data: Bytes) {
        if track >= self.tracks.len() {
            return;
        }
        let len = data.len();
        let mut inner = self.lock();
        if inner.closed {
            // Late packets for an ended stream (a route not yet removed): nobody to send to.
            return;
        }
        self.counters
            .bytes_in
            .fetch_add(len as u64, Ordering::Relaxed);
        self.counters.packets_in.fetch_add(1, Ordering::Relaxed);
        let mut key = false;
        if rtcp {
            match finch_proto::rtcp::packet_types(&data) {
                Ok(types) if types.contains(&finch_proto::rtcp::SENDER_REPORT) => {
                    inner.last_sr[track] = Some(data.clone());
                }
                Ok(_) => {}
                // Not RTCP: not worth a reader's bandwidth.
                Err(_) => return,
            }
        } else {
            let Ok(h) = RtpHeader::parse(&data) else {
                return;
            };
            inner.last[track] = Some((h.sequence, h.timestamp));
            match self.video {
                Some((vt, codec)) if vt == track => {
                    let payload = &data[h.payload.clone()];
                    let sets = match codec {
                        VideoCodec::H264 => finch_proto::codec::h264::parameter_sets(payload),
                        VideoCodec::H265 => finch_proto::codec::h265::parameter_sets(payload),
                    };
                    for ps in sets {
                        // The NAL type is in the first byte for both codecs (H.265: bits 1-6).
                        let kind = |p: &[u8]| match codec {
                            VideoCodec::H264 => p.first().map(|b| b & 0x1f),
                            VideoCodec::H265 => p.first().map(|b| (b >> 1) & 0x3f),
                        };
                        let k = kind(ps);
                        inner.param_sets.retain(|p| kind(p) != k);
                        // A copy of a few bytes, so a kept parameter set never pins a packet.
                        inner.param_sets.push(Bytes::copy_from_slice(ps));
                    }
                    key = codec.starts_keyframe(payload) && inner.key_ts != Some(h.timestamp);
                    if key {
                        inner.key_ts = Some(h.timestamp);
                    }
                }
                Some(_) => {}
                // Without video every packet is a fine place to resume.
                None => key = true,
            }
        }
        if self.params.gop_cache && self.video.is_some() && !rtcp {
            if key {
                inner.gop.clear();
                inner.gop_bytes = 0;
                inner.gop_valid = true;
            }
            if inner.gop_valid {
                inner.gop_bytes += len;
                if inner.gop_bytes > self.params.gop_cache_max_bytes {
                    // A GOP too long to cache: new readers start live until the next keyframe.
                    inner.gop.clear();
                    inner.gop_bytes = 0;
                    inner.gop_valid = false;
                } else {
                    inner.gop.push(Packet {
                        track,
                        rtcp,
                        data: data.clone(),
                    });
                }
            }
        }
        let packet = Packet { track, rtcp, data };
        let max_dropped = self.params.slow_reader_max_dropped_packets;
        let mut dropped = 0u64;
        let mut kicked = 0u64;
        inner.readers.retain_mut(|r| {
            if r.dropping {
                if key {
                    r.dropping = false;
                } else {
                    r.dropped_in_row += 1;
                    dropped += 1;
                    if r.dropped_in_row > max_dropped {
                        r.kick.cancel();
                        kicked += 1;
                        return false;
                    }
                    return true;
                }
            }
            match r.tx.try_send(packet.clone()) {
                Ok(()) => {
                    r.dropped_in_row = 0;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    r.dropping = true;
                    r.dropped_in_row += 1;
                    dropped += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        drop(inner);
        if dropped > 0 {
            self.counters
                .packets_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        if kicked > 0 {
            self.counters
                .readers_kicked
                .fetch_add(kicked, Ordering::Relaxed);
            tracing::warn!(kicked, "disconnected readers that could not keep up");
        }
    }

    /// Adds a reader: its queue starts with the GOP cache (unless `from_cache` is false: then it
    /// starts at the next keyframe), then live packets follow.
    pub fn join(
        &self,
        info: ReaderInfo,
        kick: CancellationToken,
        from_cache: bool,
    ) -> Result<Joined, JoinError> {
        let mut inner = self.lock();
        if inner.closed {
            return Err(JoinError::Closed);
        }
        if inner.readers.len() >= self.params.max_readers {
            return Err(JoinError::TooManyReaders);
        }
        let capacity = self
            .params
            .reader_queue_packets
            .max(inner.gop.len() + inner.last_sr.len() + 64);
        let (tx, rx) = mpsc::channel(capacity);
        let mut start: Vec<Option<(u16, u32)>> = vec![None; self.tracks.len()];
        for (track, sr) in inner.last_sr.iter().enumerate() {
            if let Some(data) = sr {
                let _ = tx.try_send(Packet {
                    track,
                    rtcp: true,
                    data: data.clone(),
                });
            }
        }
        let cached: &[Packet] = if from_cache { &inner.gop } else { &[] };
        for p in cached {
            if start[p.track].is_none() {
                if let Ok(h) = RtpHeader::parse(&p.data) {
                    start[p.track] = Some((h.sequence, h.timestamp));
                }
            }
            // Capacity exceeds the cache length, so this cannot fail.
            let _ = tx.try_send(p.clone());
        }
        for (t, s) in start.iter_mut().enumerate() {
            if s.is_none() {
                // Nothing cached on this track: the reader starts with the next live packet.
                *s = inner.last[t].map(|(seq, ts)| (seq.wrapping_add(1), ts));
            }
        }
        let burst = capacity - tx.capacity();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.readers.push(Reader {
            id,
            tx,
            // Without the cache, wait for a keyframe so the reader starts on a whole picture.
            dropping: !from_cache && self.video.is_some(),
            dropped_in_row: 0,
            kick,
            info,
        });
        Ok(Joined {
            id,
            rx,
            start,
            burst,
        })
    }

    /// Removes a reader (PAUSE, TEARDOWN, disconnect).
    pub fn leave(&self, id: u64) {
        self.lock().readers.retain(|r| r.id != id);
    }

    /// Ends the stream: every reader's queue closes once drained.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.readers.clear();
        inner.gop.clear();
        drop(inner);
        self.closed.cancel();
    }

    /// The readers, for the admin API.
    pub fn readers(&self) -> Vec<ReaderInfo> {
        self.lock().readers.iter().map(|r| r.info.clone()).collect()
    }

    /// How many readers there are.
    pub fn reader_count(&self) -> usize {
        self.lock().readers.len()
    }

    /// Parameter sets seen in-band (H.264 SPS/PPS, H.265 VPS/SPS/PPS), for a DESCRIBE whose
    /// SDP lacks them: the video track, its codec and the sets.
    pub fn in_band_parameter_sets(&self) -> Option<(usize, VideoCodec, Vec<Bytes>)> {
        let (track, codec) = self.video?;
        let sets = self.lock().param_sets.clone();
        (!sets.is_empty()).then_some((track, codec, sets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use finch_proto::rtp::build_packet;

    const SDP: &[u8] = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n";

    fn params(queue: usize) -> RelayParams {
        RelayParams {
            reader_queue_packets: queue,
            slow_reader_max_dropped_packets: 100,
            gop_cache: true,
            gop_cache_max_bytes: 1 << 20,
            max_readers: 10,
        }
    }

    fn info() -> ReaderInfo {
        ReaderInfo {
            session: "s".into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            transport: "tcp",
        }
    }

    fn video(seq: u16, ts: u32, nal: &[u8]) -> Bytes {
        Bytes::from(build_packet(96, false, seq, ts, 1, nal))
    }

    fn seqs(rx: &mut mpsc::Receiver<Packet>) -> Vec<u16> {
        let mut out = Vec::new();
        while let Ok(p) = rx.try_recv() {
            out.push(RtpHeader::parse(&p.data).unwrap().sequence);
        }
        out
    }

    #[test]
    fn late_joiner_starts_at_the_last_keyframe() {
        let s = Stream::new(Sdp::parse(SDP).unwrap(), params(64));
        s.push(0, false, video(1, 0, &[0x41])); // before any keyframe
        s.push(0, false, video(2, 3000, &[0x67])); // SPS: keyframe starts
        s.push(0, false, video(3, 3000, &[0x68]));
        s.push(0, false, video(4, 3000, &[0x65])); // IDR, same timestamp: same keyframe
        s.push(0, false, video(5, 6000, &[0x41]));
        let mut j = s.join(info(), CancellationToken::new(), true).unwrap();
        assert_eq!(j.start[0], Some((2, 3000)));
        assert_eq!(j.start[1], None, "no audio seen yet");
        s.push(0, false, video(6, 9000, &[0x41]));
        assert_eq!(seqs(&mut j.rx), vec![2, 3, 4, 5, 6]);
        // A new keyframe replaces the cache.
        s.push(0, false, video(7, 12000, &[0x7c, 0x85]));
        let mut j2 = s.join(info(), CancellationToken::new(), true).unwrap();
        assert_eq!(seqs(&mut j2.rx), vec![7]);
        assert_eq!(s.in_band_parameter_sets().unwrap().2.len(), 2);
        // A reader coming back from PAUSE skips the cache and waits for the next keyframe.
        let mut j3 = s.join(info(), CancellationToken::new(), false).unwrap();
        s.push(0, false, video(8, 15000, &[0x41]));
        s.push(0, false, video(9, 18000, &[0x65]));
        assert_eq!(seqs(&mut j3.rx), vec![9]);
    }

    #[test]
    fn slow_reader_drops_whole_frames_until_the_next_keyframe() {
        let s = Stream::new(Sdp::parse(SDP).unwrap(), params(16));
        let mut j = s.join(info(), CancellationToken::new(), true).unwrap();
        // The queue holds at least the GOP cache and a sender report per track, plus 64.
        let capacity = j.rx.max_capacity() as u16;
        assert_eq!(capacity, 64 + 2);
        s.push(0, false, video(1, 0, &[0x65]));
        for i in 2..=100u16 {
            s.push(0, false, video(i, u32::from(i) * 10, &[0x41]));
        }
        assert_eq!(seqs(&mut j.rx), (1..=capacity).collect::<Vec<_>>());
        // Still dropping: a non-key frame after draining is not delivered.
        s.push(0, false, video(101, 1010, &[0x41]));
        assert!(seqs(&mut j.rx).is_empty());
        s.push(0, false, video(102, 1020, &[0x65]));
        s.push(0, false, video(103, 1030, &[0x41]));
        assert_eq!(seqs(&mut j.rx), vec![102, 103]);
        let dropped = u64::from(100 - capacity) + 1;
        assert_eq!(s.counters.packets_dropped.load(Ordering::Relaxed), dropped);
    }

    #[test]
    fn reader_that_never_catches_up_is_kicked_and_publisher_goes_on() {
        let s = Stream::new(Sdp::parse(SDP).unwrap(), params(16));
        let kick = CancellationToken::new();
        let _j = s.join(info(), kick.clone(), true).unwrap();
        for i in 0..200u16 {
            s.push(0, false, video(i, u32::from(i), &[0x41]));
        }
        assert!(kick.is_cancelled());
        assert_eq!(s.reader_count(), 0);
    }

    #[test]
    fn a_joining_reader_gets_the_last_sender_report_first() {
        let s = Stream::new(Sdp::parse(SDP).unwrap(), params(16));
        // SR with no report blocks: header + sender info = 28 bytes, length field 6.
        let mut sr = vec![0x80, 200, 0, 6];
        sr.extend_from_slice(&[0; 24]);
        s.push(1, true, Bytes::from(sr.clone()));
        s.push(1, true, Bytes::from_static(b"junk")); // not RTCP: dropped, not relayed
        s.push(0, false, video(1, 0, &[0x65]));
        let mut j = s.join(info(), CancellationToken::new(), true).unwrap();
        let first = j.rx.try_recv().unwrap();
        assert!(first.rtcp && first.track == 1 && first.data[..] == sr[..]);
        assert!(!j.rx.try_recv().unwrap().rtcp);
        assert!(j.rx.try_recv().is_err());
    }

    #[test]
    fn h265_parameter_sets_are_kept() {
        let sdp = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\n";
        let s = Stream::new(Sdp::parse(sdp).unwrap(), params(16));
        s.push(0, false, video(1, 0, &[32 << 1, 1, 9]));
        s.push(0, false, video(2, 0, &[33 << 1, 1, 8]));
        s.push(0, false, video(3, 0, &[34 << 1, 1, 7]));
        let (track, codec, sets) = s.in_band_parameter_sets().unwrap();
        assert_eq!((track, codec), (0, VideoCodec::H265));
        assert_eq!(sets.len(), 3);
    }

    #[test]
    fn close_ends_every_reader() {
        let s = Stream::new(Sdp::parse(SDP).unwrap(), params(16));
        let mut j = s.join(info(), CancellationToken::new(), true).unwrap();
        s.close();
        assert!(matches!(
            j.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(matches!(
            s.join(info(), CancellationToken::new(), true),
            Err(JoinError::Closed)
        ));
    }
}
