//! One path's Low-Latency HLS presentation (H.264 or H.265 video, AAC or Opus audio): RTP packets in, fMP4 parts and segments and the
//! state the playlist is written from out. Sans-IO: the caller hands in each packet with its
//! arrival time (any monotonic clock, as a `Duration`) and asks for what is ready.
//!
//! - Timeline: each track's decode times come from its RTP timestamps (unwrapped, rebased to
//!   start at 0); tracks are put on one timeline by the arrival of their first frame, so audio
//!   and video start together. Nothing is emitted before the first video keyframe.
//! - Parts: cut at a frame boundary so that none is longer than the part target; a part is
//!   independent when it starts with a keyframe.
//! - Segments: cut at a keyframe once at least `segment_duration` long. The target duration is
//!   fixed by the first segment (its GOP, at least `segment_duration`, at most 10 s) and never
//!   changes; a later GOP longer than it is cut at a part boundary instead (that segment starts
//!   without a keyframe, which players decode on from the one before).
//! - Memory: `max_segments` complete segments and the one being built; parts are kept for the
//!   newest segments only.

use crate::fmp4::{self, Codec, Run, Sample, TrackSpec};
use bytes::Bytes;
use finch_proto::codec::sps::{h264_sps, h265_sps};
use finch_proto::depack::{Aac, AacConfig, Frame, NalCodec, NalDepack};
use finch_proto::rtp::RtpHeader;
use finch_proto::sdp::{Media, Sdp};
use std::collections::VecDeque;
use std::time::Duration;

/// How the presentation is cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MuxerConfig {
    /// The shortest segment (cut at the first keyframe after it).
    pub segment_duration: Duration,
    /// The part target.
    pub part_duration: Duration,
    /// Complete segments kept (and listed).
    pub max_segments: usize,
}

impl Default for MuxerConfig {
    fn default() -> Self {
        MuxerConfig {
            segment_duration: Duration::from_secs(1),
            part_duration: Duration::from_millis(200),
            max_segments: 7,
        }
    }
}

/// Why a stream cannot be muxed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// No track HLS can carry (H.264, H.265, AAC, Opus).
    #[error("no H.264, H.265, AAC or Opus track")]
    NoTrack,
}

/// Where a muxer left off, for the one that continues its presentation in the next worker
/// (a graceful restart): media sequence numbers, target duration and each track's timeline go
/// on, so players keep their place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resume {
    /// The next segment's number.
    pub next_msn: u64,
    /// The target duration, if fixed.
    pub target: Option<u32>,
    /// Per track (by SDP index): (first unwrapped RTP time, its decode time), the last RTP
    /// time and its unwrapped value, and the decode time everything up to which is done.
    pub tracks: Vec<TrackResume>,
}

/// Where a muxer's presentation ended, for the muxer of the path's next stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuation {
    /// The next segment's number.
    pub next_msn: u64,
    /// The target duration, if fixed.
    pub target: Option<u32>,
    /// Discontinuities so far.
    pub discontinuities: u64,
}

/// One track's timeline, for [`Resume`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrackResume {
    /// The track's index in the SDP.
    pub sdp_index: usize,
    /// The first unwrapped RTP time and its decode time.
    pub base: (i64, i64),
    /// The last RTP time seen and its unwrapped value.
    pub last_ts: (u32, i64),
    /// Frames at or before this presentation time were muxed already.
    pub done: i64,
    /// Its presentation times go back and forth (B-frames).
    #[serde(default)]
    pub reorder: bool,
}

/// The longest target duration: a GOP longer than this is cut at part boundaries.
const MAX_TARGET_SECS: u32 = 10;
/// Frames a decode time waits for in a stream with B-frames (x264 and x265 use up to 3 in a
/// row, plus the frame they refer to).
const REORDER_WINDOW: usize = 4;
/// Segments whose parts stay listed and kept.
const PART_SEGMENTS: usize = 3;

/// A finished part.
#[derive(Debug, Clone)]
pub struct Part {
    /// Its duration in seconds.
    pub duration: f64,
    /// Whether it starts with a keyframe.
    pub independent: bool,
    /// `moof` + `mdat`; empty once the segment is old and its parts are dropped.
    pub data: Bytes,
}

/// A segment, complete or being built.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its media sequence number.
    pub msn: u64,
    /// Its parts so far.
    pub parts: Vec<Part>,
    /// Seconds, once complete.
    pub duration: f64,
    /// The whole segment (its parts back to back), once complete.
    pub data: Option<Bytes>,
}

enum Depack {
    Nal(NalDepack),
    Aac(Aac),
    /// Opus: a packet is a frame (RFC 7587); the channel count from the SDP.
    Opus(u8),
}

struct Track {
    /// Index in the SDP.
    sdp_index: usize,
    timescale: u32,
    depack: Depack,
    /// Parameter sets from the SDP, until the stream's own replace them.
    sdp_params: Vec<(u8, Vec<u8>)>,
    codec: NalCodecOrAac,
    spec: Option<TrackSpec>,
    /// (first unwrapped RTP time, its decode time).
    base: Option<(i64, i64)>,
    last_ts: Option<(u32, i64)>,
    /// A video frame waiting for the next one to know its duration: (dts, pts, frame, its
    /// arrival).
    held: Option<(i64, i64, Frame, Duration)>,
    /// Presentation times go back now and then (B-frames): decode times are derived.
    reorder: bool,
    /// Frames in decode order waiting for their decode time (reorder mode): (pts, frame).
    window: VecDeque<(i64, Frame)>,
    last_pts: Option<i64>,
    last_dts: Option<i64>,
    /// Samples of the part being built, with their decode times.
    samples: Vec<(i64, Sample)>,
    last_duration: u32,
    /// Frames at or before this presentation time belong to a previous muxer (a resumed one).
    floor: Option<i64>,
    /// The source's last sender report: (wallclock seconds, RTP time).
    sr: Option<(f64, u32)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NalCodecOrAac {
    Nal(NalCodec),
    Aac(u32),
    Opus,
}

/// One path's HLS muxer.
pub struct Muxer {
    config: MuxerConfig,
    tracks: Vec<Track>,
    /// Index into `tracks` of the video track, which drives the cutting.
    video: Option<usize>,
    /// Arrival time of the first frame: the timeline's zero.
    zero: Option<Duration>,
    started: bool,
    init: Option<Bytes>,
    target: Option<u32>,
    segments: VecDeque<Segment>,
    /// The segment being built: its start (video or lead track timescale) and its first part's.
    current: Option<Segment>,
    segment_start: i64,
    part_start: i64,
    part_independent: bool,
    /// Arrival of the part's first frame, and how long the last part's first frame waited
    /// from its arrival to being listed.
    part_first_at: Duration,
    last_part_delay: Option<Duration>,
    next_msn: u64,
    /// Discontinuities before this muxer's presentation, and the segment after this one's.
    disc_base: u64,
    disc_at: Option<u64>,
    fragment_seq: u32,
    frames: Vec<Frame>,
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

fn fmtp_param<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then_some(v.trim())
    })
}

fn track_of(sdp_index: usize, m: &Media) -> Option<Track> {
    let map = m.rtpmap()?;
    let fmtp = m.fmtp().unwrap_or("");
    let (depack, codec, params) = match map.encoding.as_str() {
        "H264" => {
            let mut params = Vec::new();
            for ps in fmtp_param(fmtp, "sprop-parameter-sets")
                .unwrap_or("")
                .split(',')
            {
                if let Some(nal) = decode_b64(ps).filter(|n| !n.is_empty()) {
                    params.push((nal[0] & 0x1f, nal));
                }
            }
            (
                Depack::Nal(NalDepack::new(NalCodec::H264)),
                NalCodecOrAac::Nal(NalCodec::H264),
                params,
            )
        }
        "H265" => {
            let mut params = Vec::new();
            for (key, t) in [("sprop-vps", 32u8), ("sprop-sps", 33), ("sprop-pps", 34)] {
                if let Some(nal) = fmtp_param(fmtp, key).and_then(decode_b64) {
                    params.push((t, nal));
                }
            }
            (
                Depack::Nal(NalDepack::new(NalCodec::H265)),
                NalCodecOrAac::Nal(NalCodec::H265),
                params,
            )
        }
        "OPUS" => (
            Depack::Opus(map.channels.unwrap_or(2).clamp(1, 2) as u8),
            NalCodecOrAac::Opus,
            Vec::new(),
        ),
        "MPEG4-GENERIC" => {
            let c = AacConfig::from_fmtp(fmtp)?;
            let samples = c.frame_samples;
            (
                Depack::Aac(Aac::new(c)),
                NalCodecOrAac::Aac(samples),
                Vec::new(),
            )
        }
        _ => return None,
    };
    if map.clock_rate == 0 {
        return None;
    }
    Some(Track {
        sdp_index,
        timescale: map.clock_rate,
        depack,
        sdp_params: params,
        codec,
        spec: None,
        base: None,
        last_ts: None,
        held: None,
        reorder: false,
        window: VecDeque::new(),
        last_pts: None,
        last_dts: None,
        samples: Vec::new(),
        last_duration: 0,
        floor: None,
        sr: None,
    })
}

impl Track {
    fn parameter_set(&self, t: u8) -> Option<Vec<u8>> {
        if let Depack::Nal(d) = &self.depack {
            if let Some(p) = d.parameter_set(t) {
                return Some(p.to_vec());
            }
        }
        self.sdp_params
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.clone())
    }

    /// The sample entry, once the parameter sets are known.
    fn make_spec(&self, id: u32) -> Option<TrackSpec> {
        let codec = match (&self.depack, self.codec) {
            (Depack::Nal(_), NalCodecOrAac::Nal(NalCodec::H264)) => {
                let sps = self.parameter_set(7)?;
                let pps = self.parameter_set(8)?;
                let info = h264_sps(&sps)?;
                Codec::H264 { sps, pps, info }
            }
            (Depack::Nal(_), NalCodecOrAac::Nal(NalCodec::H265)) => {
                let vps = self.parameter_set(32)?;
                let sps = self.parameter_set(33)?;
                let pps = self.parameter_set(34)?;
                let info = h265_sps(&sps)?;
                Codec::H265 {
                    vps,
                    sps,
                    pps,
                    info,
                }
            }
            (Depack::Aac(a), _) => Codec::Aac(a.config().clone()),
            (Depack::Opus(channels), _) => Codec::Opus {
                channels: *channels,
            },
            _ => return None,
        };
        Some(TrackSpec {
            id,
            timescale: self.timescale,
            codec,
        })
    }

    /// The frame's RTP time unwrapped to 64 bits.
    fn unwrap(&mut self, ts: u32) -> i64 {
        let t = match self.last_ts {
            None => i64::from(ts),
            Some((last, last_u)) => last_u + i64::from(ts.wrapping_sub(last) as i32),
        };
        self.last_ts = Some((ts, t));
        t
    }

    fn is_video(&self) -> bool {
        matches!(self.codec, NalCodecOrAac::Nal(_))
    }
}

impl Muxer {
    /// A muxer for a stream described by `sdp`: its first video track (H.264/H.265) and first
    /// AAC track.
    pub fn new(sdp: &Sdp, config: MuxerConfig) -> Result<Muxer, Unsupported> {
        let mut tracks: Vec<Track> = Vec::new();
        for (i, m) in sdp.media.iter().enumerate() {
            let Some(t) = track_of(i, m) else { continue };
            if tracks.iter().any(|o| o.is_video() == t.is_video()) {
                continue;
            }
            tracks.push(t);
        }
        if tracks.is_empty() {
            return Err(Unsupported::NoTrack);
        }
        // The video track first: it is track 1 and drives the cutting.
        tracks.sort_by_key(|t| !t.is_video());
        let video = tracks.first().filter(|t| t.is_video()).map(|_| 0);
        Ok(Muxer {
            config,
            tracks,
            video,
            zero: None,
            started: false,
            init: None,
            target: None,
            segments: VecDeque::new(),
            current: None,
            segment_start: 0,
            part_start: 0,
            part_independent: false,
            part_first_at: Duration::ZERO,
            last_part_delay: None,
            next_msn: 0,
            disc_base: 0,
            disc_at: None,
            fragment_seq: 0,
            frames: Vec::new(),
        })
    }

    /// What a muxer for a new stream on the same path needs to go on with this one's
    /// presentation after a discontinuity (the source left and came back).
    pub fn continuation(&self) -> Continuation {
        Continuation {
            next_msn: self.current.as_ref().map_or(self.next_msn, |c| c.msn + 1),
            target: self.target,
            discontinuities: self.disc_base + u64::from(self.disc_at.is_some()),
        }
    }

    /// Goes on after `c`: the numbers and target duration continue, the first segment is
    /// marked `#EXT-X-DISCONTINUITY` (a new source, a new timeline).
    pub fn continue_after(&mut self, c: &Continuation) {
        if self.current.is_some() || !self.segments.is_empty() {
            return;
        }
        self.next_msn = c.next_msn;
        self.target = c.target;
        self.disc_base = c.discontinuities;
        self.disc_at = Some(c.next_msn);
    }

    /// `#EXT-X-DISCONTINUITY-SEQUENCE` of the playlist as it stands: discontinuities that
    /// slid out of it.
    pub fn discontinuity_sequence(&self) -> u64 {
        let first = self.segments.front().map(|s| s.msn);
        let gone = matches!((self.disc_at, first), (Some(d), Some(f)) if f > d);
        self.disc_base + u64::from(gone)
    }

    /// The segment that starts after a discontinuity, while the playlist lists it.
    pub fn discontinuity_at(&self) -> Option<u64> {
        let first = self.segments.front().map(|s| s.msn);
        self.disc_at.filter(|d| first.is_none_or(|f| f <= *d))
    }

    /// Where this muxer is, for one that continues it (`None` before its timeline started).
    /// The segment being built is not carried: the next muxer starts a new one at its next
    /// keyframe.
    pub fn resume_point(&self) -> Option<Resume> {
        let tracks: Vec<TrackResume> = self
            .tracks
            .iter()
            .filter_map(|t| {
                let (base, last) = (t.base?, t.last_ts?);
                Some(TrackResume {
                    sdp_index: t.sdp_index,
                    base,
                    last_ts: last,
                    done: base.1 + (last.1 - base.0),
                    reorder: t.reorder,
                })
            })
            .collect();
        if tracks.is_empty() {
            return None;
        }
        Some(Resume {
            next_msn: self.next_msn,
            target: self.target,
            tracks,
        })
    }

    /// Continues the presentation a previous muxer left at `r`.
    pub fn resume(&mut self, r: &Resume) {
        if self.current.is_some() || !self.segments.is_empty() {
            return;
        }
        self.next_msn = r.next_msn;
        self.target = r.target;
        for tr in &r.tracks {
            if let Some(t) = self.tracks.iter_mut().find(|t| t.sdp_index == tr.sdp_index) {
                t.base = Some(tr.base);
                t.last_ts = Some(tr.last_ts);
                t.floor = Some(tr.done);
                t.reorder = tr.reorder;
            }
        }
    }

    /// Whether the SDP track `index` is one this muxer carries.
    pub fn carries(&self, index: usize) -> bool {
        self.tracks.iter().any(|t| t.sdp_index == index)
    }

    /// The init segment, once every track's parameters are known.
    pub fn init(&self) -> Option<&Bytes> {
        self.init.as_ref()
    }

    /// The target duration in seconds, once the first segment fixed it.
    pub fn target_duration(&self) -> Option<u32> {
        self.target
    }

    /// How long the newest part's first frame waited from its arrival to being listed (the
    /// longest any frame of it waited).
    pub fn last_part_delay(&self) -> Option<Duration> {
        self.last_part_delay
    }

    /// The part target.
    pub fn part_target(&self) -> Duration {
        self.config.part_duration
    }

    /// Complete segments, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    /// The segment being built.
    pub fn current(&self) -> Option<&Segment> {
        self.current.as_ref()
    }

    /// A complete segment's bytes.
    pub fn segment(&self, msn: u64) -> Option<Bytes> {
        self.segments
            .iter()
            .find(|s| s.msn == msn)
            .and_then(|s| s.data.clone())
    }

    /// A part's bytes.
    pub fn part(&self, msn: u64, index: usize) -> Option<Bytes> {
        self.segments
            .iter()
            .chain(self.current.iter())
            .find(|s| s.msn == msn)
            .and_then(|s| s.parts.get(index))
            .filter(|p| !p.data.is_empty())
            .map(|p| p.data.clone())
    }

    /// The next part to come, as (msn, index): what the preload hint names.
    pub fn next_part(&self) -> Option<(u64, usize)> {
        self.current.as_ref().map(|s| (s.msn, s.parts.len()))
    }

    /// Takes one RTCP packet of SDP track `track`: a sender report puts the track on the
    /// source's wallclock, which aligns audio with video.
    pub fn push_rtcp(&mut self, track: usize, packet: &[u8]) {
        if let Some(t) = self.tracks.iter_mut().find(|t| t.sdp_index == track) {
            if let Some(sr) = finch_proto::rtcp::sender_report(packet) {
                t.sr = Some(sr);
            }
        }
    }

    /// Where a track's first frame at RTP time `rtp` goes on the timeline: by the sender
    /// reports of it and of the lead track when both are known (the source's own clock), else
    /// by when it arrived.
    fn first_dts(&self, ti: usize, rtp: u32, at: Duration) -> i64 {
        let t = &self.tracks[ti];
        let scale = f64::from(t.timescale);
        let lead = self.video.unwrap_or(0);
        if lead != ti {
            let l = &self.tracks[lead];
            if let (Some((n_t, s_t)), Some((n_l, s_l)), Some((base_u, base_d))) =
                (t.sr, l.sr, l.base)
            {
                let wall = |n: f64, s: u32, r: u32, clock: u32| {
                    n + f64::from(r.wrapping_sub(s) as i32) / f64::from(clock)
                };
                let lead_wall = wall(n_l, s_l, base_u as u32, l.timescale);
                let lead_secs = base_d as f64 / f64::from(l.timescale);
                let secs = lead_secs + wall(n_t, s_t, rtp, t.timescale) - lead_wall;
                if secs.is_finite() && (0.0..86400.0).contains(&secs) {
                    return (secs * scale) as i64;
                }
            }
        }
        let since = at.saturating_sub(self.zero.unwrap_or_default());
        (since.as_secs_f64() * scale) as i64
    }

    /// Takes one RTP packet of SDP track `track` that arrived at `at`.
    pub fn push(&mut self, track: usize, packet: &[u8], at: Duration) {
        let Some(ti) = self.tracks.iter().position(|t| t.sdp_index == track) else {
            return;
        };
        let Ok(h) = RtpHeader::parse(packet) else {
            return;
        };
        let payload = &packet[h.payload.clone()];
        let mut frames = std::mem::take(&mut self.frames);
        match &mut self.tracks[ti].depack {
            Depack::Nal(d) => d.push(h.sequence, h.timestamp, h.marker, payload, &mut frames),
            Depack::Aac(d) => d.push(h.sequence, h.timestamp, h.marker, payload, &mut frames),
            Depack::Opus(_) => {
                if !payload.is_empty() && payload.len() <= finch_proto::depack::MAX_FRAME_BYTES {
                    frames.push(Frame {
                        rtp_ts: h.timestamp,
                        key: true,
                        data: payload.to_vec(),
                    });
                }
            }
        }
        for f in frames.drain(..) {
            self.frame(ti, f, at);
        }
        self.frames = frames;
    }

    fn frame(&mut self, ti: usize, f: Frame, at: Duration) {
        let is_video = self.tracks[ti].is_video();
        if let Some(floor) = self.tracks[ti].floor {
            // A resumed muxer: what the previous one muxed (the GOP cache replays it) is not
            // muxed twice.
            let t = &mut self.tracks[ti];
            let unwrapped = t.unwrap(f.rtp_ts);
            let Some((first, first_dts)) = t.base else {
                return;
            };
            if first_dts + (unwrapped - first) <= floor {
                return;
            }
            t.floor = None;
            // `unwrap` above moved the track's clock on; `frame` below reads it again.
            t.last_ts = Some((f.rtp_ts.wrapping_sub(1), unwrapped - 1));
        }
        if !self.started {
            // Nothing before the first video keyframe (or the first audio frame without video).
            let leads = Some(ti) == self.video || self.video.is_none();
            if !(leads && f.key) {
                return;
            }
            self.started = true;
            self.zero = Some(at);
            // A resumed muxer's other tracks may still be below their floor: they start now.
        }
        if self.init.is_none() && !self.make_init() {
            if is_video {
                // Parameter sets still unknown: wait for the next keyframe.
                self.started = false;
                self.zero = None;
            }
            return;
        }
        let start = if self.tracks[ti].base.is_none() {
            Some(self.first_dts(ti, f.rtp_ts, at))
        } else {
            None
        };
        let t = &mut self.tracks[ti];
        let unwrapped = t.unwrap(f.rtp_ts);
        let (first, first_dts) = *t
            .base
            .get_or_insert_with(|| (unwrapped, start.unwrap_or_default()));
        let pts = first_dts + (unwrapped - first);
        let dts = pts;
        if !is_video {
            let duration = match t.codec {
                NalCodecOrAac::Aac(n) => n,
                NalCodecOrAac::Opus => finch_proto::depack::opus_duration(&f.data).unwrap_or(960),
                NalCodecOrAac::Nal(_) => 0,
            };
            let sample = Sample {
                duration,
                key: true,
                cts: 0,
                data: Bytes::from(f.data),
            };
            t.samples.push((dts, sample));
            if self.video.is_none() {
                self.cut_on(ti, dts, true, at, at);
            }
            return;
        }
        // Video comes in decode order; with B-frames its RTP (presentation) times go back and
        // forth, and MP4 wants decode times that only go up.
        if !t.reorder && t.last_pts.is_some_and(|l| pts < l) {
            t.reorder = true;
            if self.segments.is_empty() {
                // Found out before anything was listed: start again, reordering, at the next
                // keyframe.
                self.restart();
                return;
            }
        }
        t.last_pts = Some(pts);
        let (dts, pts, f) = if t.reorder {
            // A frame's decode time: the least presentation time among it and the few
            // frames after it (B-frames come after the frames they refer to).
            t.window.push_back((pts, f));
            if t.window.len() <= REORDER_WINDOW {
                return;
            }
            let Some((p, f)) = t.window.pop_front() else {
                return;
            };
            let least = t.window.iter().map(|(q, _)| *q).fold(p, i64::min);
            (t.last_dts.map_or(least, |l| least.max(l + 1)), p, f)
        } else {
            (pts, pts, f)
        };
        t.last_dts = Some(dts);
        // A video frame's duration is known when the next one comes.
        let Some((held_dts, held_pts, held, held_at)) = t.held.replace((dts, pts, f, at)) else {
            return;
        };
        let mut duration = dts - held_dts;
        if duration <= 0 || duration > i64::from(t.timescale) * 10 {
            // Out of order (B-frames) or a jump: keep the stream going at the last pace.
            duration = i64::from(t.last_duration.max(1));
        }
        t.last_duration = duration as u32;
        let key = held.key;
        self.cut_on(ti, held_dts, key, held_at, at);
        let t = &mut self.tracks[ti];
        t.samples.push((
            held_dts,
            Sample {
                duration: duration as u32,
                key,
                cts: (held_pts - held_dts).clamp(0, i64::from(i32::MAX)) as i32,
                data: Bytes::from(held.data),
            },
        ));
    }

    /// Forgets everything but the init segment and starts again at the next keyframe.
    fn restart(&mut self) {
        if let Some(c) = self.current.take() {
            self.next_msn = c.msn;
        }
        self.started = false;
        self.zero = None;
        for t in &mut self.tracks {
            t.base = None;
            t.last_ts = None;
            t.held = None;
            t.samples.clear();
            t.window.clear();
            t.last_pts = None;
            t.last_dts = None;
        }
    }

    fn make_init(&mut self) -> bool {
        let specs: Option<Vec<TrackSpec>> = self
            .tracks
            .iter()
            .enumerate()
            .map(|(i, t)| t.make_spec(i as u32 + 1))
            .collect();
        let Some(specs) = specs else { return false };
        match fmp4::init_segment(&specs) {
            Ok(init) => {
                for (t, s) in self.tracks.iter_mut().zip(specs) {
                    t.spec = Some(s);
                }
                self.init = Some(Bytes::from(init));
                true
            }
            Err(_) => false,
        }
    }

    /// Before the lead track's sample at `dts` (a keyframe or not) joins the part: cuts the
    /// part, and the segment, if it is time.
    ///
    /// `first_at` is that sample's arrival, `now` the arrival that made it ready.
    fn cut_on(&mut self, lead: usize, dts: i64, key: bool, first_at: Duration, now: Duration) {
        let t = &self.tracks[lead];
        let scale = f64::from(t.timescale);
        let frame = f64::from(t.last_duration.max(1)) / scale;
        if self.current.is_none() {
            if !key {
                return;
            }
            self.open_segment(dts, true);
            self.part_first_at = first_at;
            return;
        }
        let in_segment = (dts - self.segment_start) as f64 / scale;
        let in_part = (dts - self.part_start) as f64 / scale;
        let min = self.config.segment_duration.as_secs_f64();
        let part_target = self.config.part_duration.as_secs_f64();
        let at_key = key && in_segment >= min;
        let too_long = match self.target {
            Some(target) => in_segment + frame > f64::from(target) + 1e-3,
            None => in_segment + frame > f64::from(MAX_TARGET_SECS),
        };
        if at_key || too_long {
            self.close_part(dts, now);
            self.close_segment(in_segment);
            self.open_segment(dts, key);
            self.part_first_at = first_at;
        } else if in_part + frame > part_target + 1e-3 {
            self.close_part(dts, now);
            self.part_start = dts;
            self.part_independent = key;
            self.part_first_at = first_at;
        }
    }

    fn open_segment(&mut self, dts: i64, key: bool) {
        self.current = Some(Segment {
            msn: self.next_msn,
            parts: Vec::new(),
            duration: 0.0,
            data: None,
        });
        self.next_msn += 1;
        self.segment_start = dts;
        self.part_start = dts;
        self.part_independent = key;
    }

    /// Ends the part at lead time `end`: every track's samples before it go in.
    fn close_part(&mut self, end: i64, now: Duration) {
        let lead = self.video.unwrap_or(0);
        let lead_scale = f64::from(self.tracks[lead].timescale);
        let end_secs = end as f64 / lead_scale;
        let mut taken: Vec<(u32, i64, Vec<Sample>)> = Vec::new();
        for t in &mut self.tracks {
            let Some(spec) = &t.spec else { continue };
            let cut = if t.is_video() {
                t.samples.len()
            } else {
                t.samples
                    .iter()
                    .position(|(d, _)| *d as f64 / f64::from(t.timescale) >= end_secs)
                    .unwrap_or(t.samples.len())
            };
            let samples: Vec<(i64, Sample)> = t.samples.drain(..cut).collect();
            if let Some((first, _)) = samples.first() {
                let base = (*first).max(0) as u64;
                taken.push((
                    spec.id,
                    base as i64,
                    samples.into_iter().map(|s| s.1).collect(),
                ));
            }
        }
        let duration = (end - self.part_start) as f64 / lead_scale;
        if taken.is_empty() || duration <= 0.0 {
            return;
        }
        let runs: Vec<Run<'_>> = taken
            .iter()
            .map(|(id, base, samples)| Run {
                track: *id,
                base_dts: *base as u64,
                samples,
            })
            .collect();
        self.fragment_seq = self.fragment_seq.wrapping_add(1);
        let Ok(data) = fmp4::fragment(self.fragment_seq, &runs) else {
            return;
        };
        self.last_part_delay = Some(now.saturating_sub(self.part_first_at));
        if let Some(seg) = self.current.as_mut() {
            seg.parts.push(Part {
                duration,
                independent: self.part_independent,
                data: Bytes::from(data),
            });
        }
    }

    fn close_segment(&mut self, duration: f64) {
        let Some(mut seg) = self.current.take() else {
            return;
        };
        if seg.parts.is_empty() {
            return;
        }
        seg.duration = duration;
        let mut whole = Vec::with_capacity(seg.parts.iter().map(|p| p.data.len()).sum());
        for p in &seg.parts {
            whole.extend_from_slice(&p.data);
        }
        seg.data = Some(Bytes::from(whole));
        if self.target.is_none() {
            // The first segment fixes the target duration (RFC 8216bis §4.4.3.1: it never
            // changes): its GOP, at least the configured duration.
            let min = self.config.segment_duration.as_secs_f64();
            self.target = Some((duration.max(min).ceil() as u32).clamp(1, MAX_TARGET_SECS));
        }
        self.segments.push_back(seg);
        while self.segments.len() > self.config.max_segments {
            self.segments.pop_front();
        }
        let keep_parts = self.segments.len().saturating_sub(PART_SEGMENTS);
        for s in self.segments.iter_mut().take(keep_parts) {
            for p in &mut s.parts {
                p.data = Bytes::new();
            }
        }
    }

    /// Whether the playlist would list segment `msn` (complete), or its part `part`.
    pub fn has(&self, msn: u64, part: Option<usize>) -> bool {
        let complete = self.segments.back().map(|s| s.msn);
        match part {
            None => complete.is_some_and(|c| c >= msn),
            Some(p) => {
                complete.is_some_and(|c| c >= msn)
                    || self
                        .current
                        .as_ref()
                        .is_some_and(|s| s.msn > msn || (s.msn == msn && s.parts.len() > p))
            }
        }
    }

    /// The media playlist, once there is a segment (and so a target duration).
    pub fn playlist(&self) -> Option<String> {
        crate::playlist::media_playlist(self)
    }

    /// Bytes held (segments and parts), for the metrics.
    pub fn bytes_held(&self) -> usize {
        self.segments
            .iter()
            .chain(self.current.iter())
            .map(|s| {
                s.data.as_ref().map_or(0, Bytes::len)
                    + s.parts.iter().map(|p| p.data.len()).sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use finch_proto::rtp::build_packet;

    const SPS: [u8; 22] = [
        0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40,
        0x00, 0x00, 0x0c, 0x83, 0xc5, 0x0a, 0xa8,
    ];
    const PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];

    fn sdp() -> Sdp {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let text = format!(
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nt=0 0\r\n\
             m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
             a=fmtp:96 packetization-mode=1;sprop-parameter-sets={},{}\r\na=control:trackID=0\r\n\
             m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\n\
             a=fmtp:97 streamtype=5;mode=AAC-hbr;config=1210;sizelength=13;indexlength=3;indexdeltalength=3\r\n\
             a=control:trackID=1\r\n",
            b64.encode(SPS),
            b64.encode(PPS)
        );
        Sdp::parse(text.as_bytes()).unwrap()
    }

    /// `secs` of 25 fps video (a keyframe every `gop` frames) and AAC, interleaved as they
    /// would arrive.
    fn feed(m: &mut Muxer, secs: u32, gop: u32) {
        feed_from(m, 0, secs, gop);
    }

    /// The same from frame `from` on (keyframes every `gop` frames counted from it).
    fn feed_from(m: &mut Muxer, from: u32, secs: u32, gop: u32) {
        let mut vseq = from as u16;
        let mut aseq = (from * 2) as u16;
        let mut audio_ts = (f64::from(from) * 0.04 * 44100.0 / 1024.0).ceil() as u32 * 1024;
        for frame in from..from + secs * 25 {
            let at = Duration::from_millis(u64::from(frame) * 40);
            let ts = frame * 3600;
            let nal: &[u8] = if (frame - from).is_multiple_of(gop) {
                &[0x65, 0x88, 1, 2, 3]
            } else {
                &[0x41, 0x9a, 4, 5]
            };
            m.push(0, &build_packet(96, true, vseq, ts, 1, nal), at);
            vseq = vseq.wrapping_add(1);
            // 44100/1024 ≈ 43 frames a second: one or two per video frame.
            while f64::from(audio_ts) / 44100.0 < f64::from(frame + 1) * 0.04 {
                let mut p = vec![0, 16, 0, 10 << 3];
                p.extend_from_slice(&[0x21; 10]);
                m.push(1, &build_packet(97, true, aseq, audio_ts, 2, &p), at);
                aseq = aseq.wrapping_add(1);
                audio_ts += 1024;
            }
        }
    }

    #[test]
    fn segments_start_at_keyframes_and_parts_keep_to_their_target() {
        let mut m = Muxer::new(&sdp(), MuxerConfig::default()).unwrap();
        assert!(m.playlist().is_none());
        feed(&mut m, 7, 50);
        let init = m.init().expect("an init segment");
        assert_eq!(&init[4..8], b"ftyp");
        // The GOP is 2 s: the first segment fixes the target at 2 and never changes it.
        assert_eq!(m.target_duration(), Some(2));
        let segs: Vec<&Segment> = m.segments().collect();
        assert_eq!(
            segs.len(),
            3,
            "{:?}",
            segs.iter().map(|s| s.duration).collect::<Vec<_>>()
        );
        for s in &segs {
            assert!((s.duration - 2.0).abs() < 1e-6, "{}", s.duration);
            assert!(s.parts[0].independent);
            assert!(s.parts[1..].iter().all(|p| !p.independent));
            assert!(s.parts.iter().all(|p| p.duration <= 0.2 + 1e-6));
            assert_eq!(s.parts.len(), 10);
            let data = s.data.as_ref().unwrap();
            assert_eq!(&data[4..8], b"moof");
        }
        let text = m.playlist().unwrap();
        assert!(text.contains("#EXT-X-TARGETDURATION:2\n"), "{text}");
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:0\n"), "{text}");
        assert!(text.contains("#EXTINF:2.00000,\nseg2.m4s\n"), "{text}");
        assert!(
            text.contains("URI=\"part3.0.m4s\",INDEPENDENT=YES"),
            "{text}"
        );
        assert!(
            text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part3."),
            "{text}"
        );
        assert!(m.has(2, None) && m.has(3, Some(0)) && !m.has(4, None));
        assert!(m.part(3, 0).is_some() && m.segment(2).is_some() && m.segment(3).is_none());
    }

    #[test]
    fn a_gop_longer_than_the_target_is_cut_at_parts_and_memory_stays_bounded() {
        let mut m = Muxer::new(&sdp(), MuxerConfig::default()).unwrap();
        // First GOP 1 s (target 1), then keyframes only every 3 s.
        feed(&mut m, 1, 25);
        let mut m2 = m;
        feed_from(&mut m2, 25, 60, 75);
        assert_eq!(m2.target_duration(), Some(1));
        let segs: Vec<&Segment> = m2.segments().collect();
        assert_eq!(segs.len(), MuxerConfig::default().max_segments);
        assert!(segs.iter().all(|s| s.duration <= 1.0 + 1e-6));
        assert!(segs.iter().any(|s| !s.parts[0].independent));
        // 7 segments of ~1 s at these tiny frames: a few tens of KiB, never growing.
        assert!(m2.bytes_held() < 200_000, "{}", m2.bytes_held());
    }

    /// The first `tfdt` of a fragment.
    fn base_dts(fragment: &[u8]) -> u64 {
        use mp4_atom::Decode;
        let moof = mp4_atom::Moof::decode(&mut std::io::Cursor::new(fragment)).unwrap();
        moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time
    }

    #[test]
    fn a_resumed_muxer_goes_on_with_the_numbers_and_the_timeline_of_the_last() {
        let mut a = Muxer::new(&sdp(), MuxerConfig::default()).unwrap();
        feed(&mut a, 5, 50);
        let last = a.segments().last().unwrap();
        let (last_msn, last_end) = (last.msn, base_dts(last.data.as_ref().unwrap()));
        let r = a.resume_point().unwrap();
        assert_eq!(
            r.next_msn,
            last_msn + 2,
            "the unfinished segment is not carried"
        );
        let mut b = Muxer::new(&sdp(), MuxerConfig::default()).unwrap();
        b.resume(&r);
        // The next worker's stream: the cached GOP again (frames 100..125), then live on.
        feed_from(&mut b, 100, 5, 50);
        let first = b.segments().next().unwrap();
        assert_eq!(first.msn, r.next_msn);
        assert_eq!(b.target_duration(), a.target_duration());
        let start = base_dts(first.data.as_ref().unwrap());
        assert!(
            start > last_end,
            "{start} <= {last_end}: the timeline went back"
        );
        // It starts at the first keyframe after what the last muxer did (frame 150: 6 s).
        assert_eq!(start, 150 * 3600);
    }

    #[test]
    fn a_new_stream_goes_on_with_the_numbers_after_a_discontinuity() {
        let mut a = Muxer::new(&sdp(), MuxerConfig::default()).unwrap();
        feed(&mut a, 5, 50);
        let c = a.continuation();
        assert_eq!(c.next_msn, 3);
        assert_eq!(c.discontinuities, 0);
        // The source came back: a new stream, its clock from zero again.
        let mut b = Muxer::new(&sdp(), MuxerConfig::default()).unwrap();
        b.continue_after(&c);
        feed(&mut b, 5, 50);
        let text = b.playlist().unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:3\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PART"), "{text}");
        assert!(text.contains("#EXT-X-TARGETDURATION:2\n"), "{text}");
        // Once the first segment after it slid out of the window, the count goes up.
        feed_from(&mut b, 125, 20, 50);
        let text = b.playlist().unwrap();
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        assert_eq!(b.continuation().discontinuities, 1);
    }

    fn sender_report(ntp: f64, rtp: u32) -> Vec<u8> {
        let mut p = vec![0x80, 200, 0, 6, 0, 0, 0, 1];
        p.extend_from_slice(&(ntp.trunc() as u32).to_be_bytes());
        p.extend_from_slice(&((ntp.fract() * 4_294_967_296.0) as u32).to_be_bytes());
        p.extend_from_slice(&rtp.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p
    }

    #[test]
    fn sender_reports_put_audio_where_the_source_says_not_where_it_arrived() {
        let mut m = Muxer::new(&sdp(), MuxerConfig::default()).unwrap();
        // The source's clock: the audio frame at RTP 0 was captured 0.5 s after the video one.
        m.push_rtcp(0, &sender_report(100.0, 0));
        m.push_rtcp(1, &sender_report(100.5, 0));
        let at = Duration::from_secs(1);
        m.push(0, &build_packet(96, true, 0, 0, 1, &[0x65, 0x88, 1]), at);
        let mut p = vec![0, 16, 0, 10 << 3];
        p.extend_from_slice(&[0x21; 10]);
        // Both arrive together.
        m.push(1, &build_packet(97, true, 0, 0, 2, &p), at);
        let r = m.resume_point().unwrap();
        let audio = r.tracks.iter().find(|t| t.sdp_index == 1).unwrap();
        assert_eq!(audio.base.1, 22050, "{r:?}");
        // Without reports, arrival decides.
        let mut m = Muxer::new(&sdp(), MuxerConfig::default()).unwrap();
        m.push(0, &build_packet(96, true, 0, 0, 1, &[0x65, 0x88, 1]), at);
        m.push(
            1,
            &build_packet(97, true, 0, 0, 2, &p),
            at + Duration::from_millis(100),
        );
        let r = m.resume_point().unwrap();
        let audio = r.tracks.iter().find(|t| t.sdp_index == 1).unwrap();
        assert_eq!(audio.base.1, 4410);
    }

    #[test]
    fn without_parameter_sets_nothing_is_made_and_garbage_is_survived() {
        let text = "v=0\r\ns=x\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        let mut m = Muxer::new(
            &Sdp::parse(text.as_bytes()).unwrap(),
            MuxerConfig::default(),
        )
        .unwrap();
        for i in 0..500u16 {
            let junk: Vec<u8> = (0..(i % 200)).map(|b| (b as u8).wrapping_mul(17)).collect();
            m.push(0, &junk, Duration::from_millis(u64::from(i)));
            m.push(
                0,
                &build_packet(96, true, i, u32::from(i) * 3600, 1, &[0x65, 1]),
                Duration::from_millis(u64::from(i) * 40),
            );
        }
        assert!(m.init().is_none());
        assert!(m.playlist().is_none());
        let audio_only = "v=0\r\ns=x\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        assert!(Muxer::new(
            &Sdp::parse(audio_only.as_bytes()).unwrap(),
            MuxerConfig::default()
        )
        .is_err());
    }
}
