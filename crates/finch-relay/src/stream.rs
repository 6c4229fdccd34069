//! A stream: one source's packets, shared by every reader without copies and without waiting.
//!
//! The source pushes packets ([`Stream::push`]): each is appended to the stream's [`Ring`] under
//! a short lock, and readers are woken once per frame (the RTP marker bit ends a video access
//! unit; every audio and RTCP packet is a frame of its own), or after a few packets or
//! milliseconds for sources that never set the marker. The source's cost per packet does not
//! depend on how many readers there are, and it never waits for one.
//!
//! A reader ([`crate::Reader`]) is a position in the ring. It joins at the GOP cache (the newest
//! keyframe, so the picture appears at once) or, with no usable cache, waits for the next
//! keyframe; it never starts on a P-frame. What a reader does when it falls behind is in
//! `reader.rs`.

use crate::continuity::{Continuity, Numbering};
use crate::counters::{Counters, ReaderStats, Totals};
use crate::packet::{Kind, Packet};
use crate::params::ParameterSets;
use crate::reader::{Reader, ReaderInfo, Start};
use crate::ring::{Budget, Ring, RingLimits};
use bytes::Bytes;
use finch_proto::codec::VideoCodec;
use finch_proto::rtp::RtpHeader;
use finch_proto::sdp::Sdp;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

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

/// Fan-out settings, from `[relay]` and `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct RelayParams {
    /// How many packets a reader may fall behind live before it skips to a newer keyframe.
    pub reader_queue_packets: usize,
    /// A reader that has skipped this many packets without being sent one is disconnected.
    pub slow_reader_max_dropped_packets: u64,
    /// Whether new readers start at the last keyframe.
    pub gop_cache: bool,
    /// The GOP cache's bound in bytes (payload plus per-packet overhead).
    pub gop_cache_max_bytes: usize,
    /// The GOP cache's bound in packets.
    pub gop_cache_max_packets: usize,
    /// Most readers at once.
    pub max_readers: usize,
}

impl RelayParams {
    fn ring_limits(&self, has_video: bool) -> RingLimits {
        let gop_cache = self.gop_cache && has_video;
        // The window holds typical packets (an MTU each); the hard cap adds that to the GOP's
        // bound, so oversized packets shrink the window rather than grow memory.
        let window_bytes = self.reader_queue_packets * (1500 + crate::packet::PACKET_OVERHEAD);
        RingLimits {
            window_packets: self.reader_queue_packets,
            gop_cache,
            gop_max_packets: self.gop_cache_max_packets,
            gop_max_bytes: self.gop_cache_max_bytes,
            max_bytes: window_bytes
                + if gop_cache {
                    self.gop_cache_max_bytes
                } else {
                    0
                },
        }
    }
}

/// Why a reader could not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The source has left.
    #[error("the stream has ended")]
    Closed,
    /// `max_readers_per_path` reached.
    #[error("too many readers on this path")]
    TooManyReaders,
}

/// Readers are woken at least every this many packets, for sources that never mark frame ends.
const WAKE_EVERY_PACKETS: usize = 64;
/// … and at most this long after the first packet they have not seen. Audio and RTCP of a stream
/// with video wait for the next video frame end (one wake and one write per frame, not one more
/// per audio packet: a G.711 camera sends 50 a second), which at 25 fps comes within 40 ms; this
/// bound covers slower video. Players' jitter buffers (ffplay, GStreamer: 200 ms) absorb it.
const WAKE_EVERY: Duration = Duration::from_millis(50);

/// A published stream: its description, its ring and its readers.
pub struct Stream {
    /// The source's SDP.
    pub sdp: Sdp,
    /// Tracks in SDP order.
    pub tracks: Vec<TrackInfo>,
    /// The track whose keyframes readers start and resume at, and its codec.
    video: Option<(usize, VideoCodec)>,
    params: RelayParams,
    pub(crate) state: Mutex<State>,
    /// Ticks whenever readers have something new to read (or the stream ends).
    pub(crate) wake: watch::Sender<()>,
    readers: Mutex<HashMap<u64, Arc<ReaderEntry>>>,
    /// Traffic counters.
    pub counters: Counters,
}

/// A reader as the stream lists it.
pub(crate) struct ReaderEntry {
    pub(crate) info: ReaderInfo,
    pub(crate) stats: Arc<ReaderStats>,
}

pub(crate) struct State {
    pub(crate) ring: Ring,
    /// Readers may read up to here: the end of the last complete frame.
    pub(crate) published: u64,
    pub(crate) closed: bool,
    unpublished: usize,
    /// When the oldest packet not yet published arrived.
    pending_since: Option<Instant>,
    /// (seq, rtptime) of the newest RTP packet per track.
    last: Vec<Option<(u16, u32)>>,
    /// The source's last RTCP sender report per track: a joining reader gets it first, so
    /// players can sync audio and video without waiting for the next one (often 5 s away).
    last_sr: Vec<Option<Packet>>,
    /// RTP timestamp of the current keyframe, so its later packets don't restart the GOP.
    key_ts: Option<u32>,
    params: Option<ParameterSets>,
    next_reader: u64,
    /// One RTP stream across sources.
    continuity: Continuity,
    /// Which source may push: a source that was replaced is ignored from then on.
    epoch: u64,
    /// A new source's packets are dropped until its first keyframe, so readers resume on a
    /// whole picture.
    await_key: bool,
}

/// A source's right to push into a stream: it stops working once another source takes over.
#[derive(Clone)]
pub struct Feed {
    stream: Arc<Stream>,
    epoch: u64,
}

impl Feed {
    /// Relays one packet (see [`Stream::push`]), unless another source has taken over.
    pub fn push(&self, track: usize, kind: Kind, data: Bytes, at: Instant) -> Option<Instant> {
        self.stream.push_from(self.epoch, track, kind, data, at)
    }

    /// Wakes readers for what is pending.
    pub fn flush(&self) {
        self.stream.flush();
    }

    /// The stream.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }
}

/// Why a source cannot continue a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the new source's tracks or codecs differ from the stream's")]
pub struct Incompatible;

/// Where a reader begins, for RTP-Info and pacing.
pub(crate) struct Joined {
    pub(crate) id: u64,
    pub(crate) cursor: u64,
    pub(crate) waiting: bool,
    pub(crate) start: Vec<Option<(u16, u32)>>,
    pub(crate) prelude: Vec<Packet>,
    pub(crate) backlog: u64,
    pub(crate) stats: Arc<ReaderStats>,
}

impl Stream {
    /// A stream for the tracks a source announced.
    pub fn new(sdp: Sdp, params: RelayParams) -> Stream {
        Stream::with_budget(sdp, params, None)
    }

    /// A stream whose ring counts against a budget shared with other streams.
    pub fn with_budget(sdp: Sdp, params: RelayParams, budget: Option<Arc<Budget>>) -> Stream {
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
        let state = State {
            ring: Ring::new(tracks.len(), params.ring_limits(video.is_some()), budget),
            published: 0,
            closed: false,
            unpublished: 0,
            pending_since: None,
            last: vec![None; tracks.len()],
            last_sr: vec![None; tracks.len()],
            key_ts: None,
            params: video.map(|(_, c)| ParameterSets::new(c)),
            next_reader: 0,
            continuity: Continuity::new(&tracks.iter().map(|t| t.clock_rate).collect::<Vec<_>>()),
            epoch: 0,
            await_key: false,
        };
        Stream {
            sdp,
            tracks,
            video,
            params,
            state: Mutex::new(state),
            wake: watch::Sender::new(()),
            readers: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock can only come from a bug in this crate; the ring stays
        // consistent between statements, so carry on rather than poison every reader.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_readers(&self) -> MutexGuard<'_, HashMap<u64, Arc<ReaderEntry>>> {
        self.readers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fan-out settings.
    pub fn params(&self) -> &RelayParams {
        &self.params
    }

    /// Whether a reader of `tracks` must start and resume at keyframes: it reads the video.
    pub fn wants_keyframes(&self, tracks: &[usize]) -> bool {
        self.video.is_some_and(|(vt, _)| tracks.contains(&vt))
    }

    /// Relays one packet from the source, received at `at`. Never waits for a reader.
    ///
    /// Readers are woken at the end of a frame. When this packet ends none (a source that does
    /// not mark its frames, or a frame still arriving), it returns when the caller must
    /// [`flush`](Self::flush) if no further packet comes first: a source's last packets must
    /// not wait for its next ones.
    pub fn push(&self, track: usize, kind: Kind, data: Bytes, at: Instant) -> Option<Instant> {
        let epoch = self.lock().epoch;
        self.push_from(epoch, track, kind, data, at)
    }

    fn push_from(
        &self,
        epoch: u64,
        track: usize,
        kind: Kind,
        data: Bytes,
        at: Instant,
    ) -> Option<Instant> {
        if track >= self.tracks.len() {
            return None;
        }
        let len = data.len() as u64;
        let mut st = self.lock();
        if st.closed || st.epoch != epoch {
            // Late packets for an ended stream (a route not yet removed), or from a source
            // another has replaced: nobody to send them to.
            return None;
        }
        use std::sync::atomic::Ordering::Relaxed;
        self.counters.bytes_in.fetch_add(len, Relaxed);
        self.counters.packets_in.fetch_add(1, Relaxed);
        let mut key = false;
        let mut frame_end = true;
        let mut rtp = None;
        let mut sender_report = false;
        let mut data = data;
        match kind {
            Kind::Rtcp => match finch_proto::rtcp::packet_types(&data) {
                Ok(types) => {
                    sender_report = types.contains(&finch_proto::rtcp::SENDER_REPORT);
                    frame_end = self.video.is_none();
                    // A new source's report before its packets set the mapping: dropped.
                    data = st.continuity.rtcp(track, data)?;
                }
                // Not RTCP: not worth a reader's bandwidth.
                Err(_) => return None,
            },
            Kind::Rtp => {
                let Ok(h) = RtpHeader::parse(&data) else {
                    return None;
                };
                match self.video {
                    Some((vt, codec)) if vt == track => {
                        let payload = data.get(h.payload.clone()).unwrap_or_default();
                        if let Some(p) = st.params.as_mut() {
                            p.observe(payload);
                        }
                        key = codec.starts_keyframe(payload) && st.key_ts != Some(h.timestamp);
                        if key {
                            st.key_ts = Some(h.timestamp);
                        }
                        frame_end = h.marker;
                    }
                    // Published with the next video frame (see WAKE_EVERY).
                    Some(_) => frame_end = false,
                    // Without video every packet is a fine place to start or resume.
                    None => key = true,
                }
                if st.await_key {
                    // A new source: nothing before its first keyframe (its first packets on
                    // other tracks would start readers' clocks ahead of their picture).
                    if !key || self.video.is_some_and(|(vt, _)| vt != track) {
                        return None;
                    }
                    st.await_key = false;
                }
                let (out, numbering) = st.continuity.rtp(track, data, at);
                data = out;
                rtp = Some(numbering);
                st.last[track] = rtp;
            }
        }
        let packet = Packet::new(track, kind, key, at, data);
        if sender_report {
            st.last_sr[track] = Some(packet.clone());
        }
        st.ring.push(packet, rtp);
        st.unpublished += 1;
        let since = *st.pending_since.get_or_insert(at);
        let stale = at.saturating_duration_since(since) >= WAKE_EVERY;
        if frame_end || stale || st.unpublished >= WAKE_EVERY_PACKETS {
            self.publish(st);
            return None;
        }
        Some(since + WAKE_EVERY)
    }

    fn publish(&self, mut st: MutexGuard<'_, State>) {
        let from = st.published;
        st.ring.frame(from);
        st.published = st.ring.head();
        st.unpublished = 0;
        st.pending_since = None;
        drop(st);
        self.wake.send_replace(());
    }

    /// A feed for the stream's current source.
    pub fn feed(self: &Arc<Self>) -> Feed {
        Feed {
            stream: self.clone(),
            epoch: self.lock().epoch,
        }
    }

    /// Whether a source announcing `sdp` can continue this stream: the same tracks with the
    /// same codecs and clock rates.
    pub fn compatible(&self, sdp: &Sdp) -> bool {
        let other = Stream::new(sdp.clone(), self.params);
        other.tracks.len() == self.tracks.len()
            && other
                .tracks
                .iter()
                .zip(&self.tracks)
                .all(|(a, b)| a.codec == b.codec && a.clock_rate == b.clock_rate)
    }

    /// The stream's RTP numbering, for the next worker to go on with (see [`Numbering`]).
    pub fn numbering(&self) -> Numbering {
        self.lock().continuity.numbering(Instant::now())
    }

    /// Goes on with a numbering carried from the previous worker, before the first packet;
    /// false if it does not fit this stream's tracks.
    pub fn resume_numbering(&self, n: &Numbering) -> bool {
        self.lock().continuity.resume(n, Instant::now())
    }

    /// What a joining reader would start with: the last sender report per track, and the GOP
    /// cache as published (for the next worker to start its readers from).
    pub fn cached(&self) -> (Vec<Packet>, Vec<Packet>) {
        let st = self.lock();
        let reports = st.last_sr.iter().flatten().cloned().collect();
        let gop = match st.ring.gop() {
            Some(g) => (g.start..st.published)
                .filter_map(|pos| st.ring.get(pos).cloned())
                .collect(),
            None => Vec::new(),
        };
        (reports, gop)
    }

    /// Puts what the previous worker's stream had cached back (see [`Stream::cached`]), before
    /// the source's next packet. The packets are in readers' numbering already: nothing is
    /// rewritten, and they are published at once.
    pub fn restore(&self, reports: Vec<Packet>, gop: Vec<Packet>) {
        let mut st = self.lock();
        for r in reports {
            if let Some(slot) = st.last_sr.get_mut(r.track) {
                *slot = Some(r);
            }
        }
        for p in gop {
            if p.track >= self.tracks.len() {
                continue;
            }
            let mut rtp = None;
            if p.kind == Kind::Rtp {
                let Ok(h) = RtpHeader::parse(p.data()) else {
                    continue;
                };
                if self.video.is_some_and(|(vt, _)| vt == p.track) {
                    let payload = p.data().get(h.payload.clone()).unwrap_or_default();
                    if let Some(params) = st.params.as_mut() {
                        params.observe(payload);
                    }
                    if p.key {
                        st.key_ts = Some(h.timestamp);
                    }
                }
                rtp = Some((h.sequence, h.timestamp));
                st.last[p.track] = rtp;
            }
            st.ring.push(p, rtp);
            st.unpublished += 1;
        }
        if st.unpublished > 0 {
            self.publish(st);
        }
    }

    /// A new source continues the stream (a camera back, a publisher taking over): the old one
    /// can push no more, readers see one RTP stream and resume at the new source's first
    /// keyframe. Returns the new source's feed.
    pub fn new_source(self: &Arc<Self>, sdp: &Sdp) -> Result<Feed, Incompatible> {
        if !self.compatible(sdp) {
            return Err(Incompatible);
        }
        let mut st = self.lock();
        if st.unpublished > 0 {
            self.publish(st);
            st = self.lock();
        }
        st.epoch += 1;
        st.continuity.new_source();
        st.await_key = self.video.is_some();
        st.key_ts = None;
        st.ring.drop_gop();
        let epoch = st.epoch;
        drop(st);
        Ok(Feed {
            stream: self.clone(),
            epoch,
        })
    }

    /// Wakes readers for whatever has been pushed and not yet published.
    pub fn flush(&self) {
        let st = self.lock();
        if st.unpublished > 0 {
            self.publish(st);
        }
    }

    /// Adds a reader of `tracks` (indexes of set-up tracks), starting as `start` says.
    pub fn join(
        self: &Arc<Self>,
        info: ReaderInfo,
        tracks: &[usize],
        start: Start,
    ) -> Result<Reader, JoinError> {
        let mut readers = self.lock_readers();
        if readers.len() >= self.params.max_readers {
            return Err(JoinError::TooManyReaders);
        }
        let joined = {
            let mut st = self.lock();
            if st.closed {
                return Err(JoinError::Closed);
            }
            let published = st.published;
            let cache = st
                .ring
                .gop()
                .filter(|g| start == Start::Cache && g.start < published)
                .cloned();
            let (cursor, waiting) = match &cache {
                Some(g) => (g.start, false),
                None if start == Start::Next => (published, false),
                // No usable cache: a video reader waits for the next keyframe, so its first
                // picture is whole; readers without video start anywhere.
                None => (published, self.wants_keyframes(tracks)),
            };
            let start_at: Vec<Option<(u16, u32)>> = (0..self.tracks.len())
                .map(|t| {
                    cache
                        .as_ref()
                        .and_then(|g| g.first.get(t).copied().flatten())
                        .or_else(|| st.last[t].map(|(seq, ts)| (seq.wrapping_add(1), ts)))
                })
                .collect();
            let prelude: Vec<Packet> = tracks
                .iter()
                .filter_map(|&t| st.last_sr.get(t)?.clone())
                .collect();
            let id = st.next_reader;
            st.next_reader += 1;
            Joined {
                id,
                cursor,
                waiting,
                start: start_at,
                backlog: published - cursor + prelude.len() as u64,
                prelude,
                stats: Arc::new(ReaderStats::default()),
            }
        };
        readers.insert(
            joined.id,
            Arc::new(ReaderEntry {
                info: info.clone(),
                stats: joined.stats.clone(),
            }),
        );
        drop(readers);
        Ok(Reader::new(self.clone(), tracks, joined))
    }

    /// A reader leaving: its counts stay in the stream's totals.
    pub(crate) fn leave(&self, id: u64) {
        if let Some(e) = self.lock_readers().remove(&id) {
            e.stats.retire_into(&self.counters.left);
        }
    }

    /// Ends the stream: readers are told at once and the ring's memory is freed.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.ring.clear();
        st.published = st.ring.head();
        drop(st);
        self.wake.send_replace(());
    }

    /// Whether the stream has ended.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// The readers, for the admin API.
    pub fn readers(&self) -> Vec<ReaderInfo> {
        let mut v: Vec<(u64, ReaderInfo)> = self
            .lock_readers()
            .iter()
            .map(|(id, e)| (*id, e.info.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// How many readers there are.
    pub fn reader_count(&self) -> usize {
        self.lock_readers().len()
    }

    /// The stream's traffic: its source, its readers, and readers that have left.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        t.add_counters(&self.counters);
        for e in self.lock_readers().values() {
            t.add_reader(&e.stats);
        }
        t
    }

    /// Parameter sets seen in-band (H.264 SPS/PPS, H.265 VPS/SPS/PPS), for a DESCRIBE whose SDP
    /// lacks them: the video track, its codec and the sets.
    pub fn in_band_parameter_sets(&self) -> Option<(usize, VideoCodec, Vec<Bytes>)> {
        let (track, codec) = self.video?;
        let sets = self.lock().params.as_ref()?.all();
        (!sets.is_empty()).then_some((track, codec, sets))
    }

    /// Whether the H.264 source sends STAP-A or FU-A packets (`packetization-mode=1`).
    pub fn uses_non_interleaved_mode(&self) -> bool {
        self.lock()
            .params
            .as_ref()
            .is_some_and(ParameterSets::non_interleaved)
    }

    /// Bytes the stream's ring holds, overhead included.
    pub fn buffered_bytes(&self) -> usize {
        self.lock().ring.bytes()
    }
}
