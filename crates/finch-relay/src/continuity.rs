//! One RTP stream across sources: when a source comes back (a camera reconnects, an encoder
//! re-publishes) or another takes over, its readers go on seeing the same stream. Per track, the
//! new source's packets get the first source's SSRC and payload type, sequence numbers that go
//! on from the last one sent, and timestamps that go on from the last one plus the wall-clock
//! time away, at the track's clock rate; its RTCP sender reports are rewritten the same way,
//! wall-clock (NTP) time included, so a player that syncs by sender reports (ffmpeg, GStreamer)
//! sees one clock even when the camera's own clock was reset by its reboot.
//!
//! The first source's packets pass untouched (no copy). A rewritten packet is copied once, on
//! the way in (its header changes), never per reader.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What readers have been sent of one track.
#[derive(Debug, Clone)]
struct Track {
    clock_rate: u32,
    /// The SSRC and payload type readers know.
    ssrc: Option<u32>,
    pt: Option<u8>,
    /// The last (seq, rtptime, arrival) sent, in readers' numbering.
    last: Option<(u16, u32, Instant)>,
    /// out = in + delta (wrapping), for the current source.
    seq_delta: u16,
    ts_delta: u32,
    /// The current source's SSRC, and whether its first packet has set the deltas yet.
    source_ssrc: Option<u32>,
    pending: bool,
    /// The last sender report sent: (NTP, rtptime), in readers' numbering.
    last_sr: Option<(u64, u32)>,
    /// out NTP = in NTP + ntp_delta (wrapping), for the current source; `None` until its
    /// first sender report sets it.
    ntp_delta: Option<u64>,
}

/// The mapping for every track of a stream.
#[derive(Debug, Clone)]
pub(crate) struct Continuity {
    tracks: Vec<Track>,
    /// Whether anything must be rewritten (a second source has come).
    active: bool,
}

impl Continuity {
    /// For tracks with these clock rates (0: unknown, treated as 90 kHz).
    pub(crate) fn new(clock_rates: &[u32]) -> Continuity {
        Continuity {
            tracks: clock_rates
                .iter()
                .map(|&c| Track {
                    clock_rate: if c == 0 { 90_000 } else { c },
                    ssrc: None,
                    pt: None,
                    last: None,
                    seq_delta: 0,
                    ts_delta: 0,
                    source_ssrc: None,
                    pending: false,
                    last_sr: None,
                    ntp_delta: Some(0),
                })
                .collect(),
            active: false,
        }
    }

    /// A new source starts feeding the stream: its first packet on each track sets the mapping.
    pub(crate) fn new_source(&mut self) {
        self.active = true;
        for t in &mut self.tracks {
            t.pending = true;
            t.ntp_delta = None;
        }
    }

    /// An RTP packet from the current source, in readers' numbering: the same bytes when nothing
    /// changes, else a rewritten copy. Returns it with its (seq, rtptime) as readers see them.
    pub(crate) fn rtp(&mut self, track: usize, data: Bytes, at: Instant) -> (Bytes, (u16, u32)) {
        let Some(t) = self.tracks.get_mut(track) else {
            return (data, (0, 0));
        };
        let (Some(seq), Some(ts), Some(ssrc), Some(pt)) = (
            be16(&data, 2),
            be32(&data, 4),
            be32(&data, 8),
            data.get(1).map(|b| b & 0x7f),
        ) else {
            return (data, (0, 0));
        };
        if t.ssrc.is_none() {
            t.ssrc = Some(ssrc);
            t.pt = Some(pt);
        }
        if t.pending {
            t.pending = false;
            t.source_ssrc = Some(ssrc);
            match t.last {
                Some((last_seq, last_ts, last_at)) => {
                    let away = at.saturating_duration_since(last_at);
                    let ticks = (away.as_secs_f64() * f64::from(t.clock_rate)) as u64;
                    t.seq_delta = last_seq.wrapping_add(1).wrapping_sub(seq);
                    t.ts_delta = last_ts
                        .wrapping_add(ticks as u32)
                        .wrapping_add(1)
                        .wrapping_sub(ts);
                }
                None => {
                    t.seq_delta = 0;
                    t.ts_delta = 0;
                }
            }
        }
        let out_seq = seq.wrapping_add(t.seq_delta);
        let out_ts = ts.wrapping_add(t.ts_delta);
        t.last = Some((out_seq, out_ts, at));
        let same = !self.active
            || (t.seq_delta == 0 && t.ts_delta == 0 && Some(ssrc) == t.ssrc && Some(pt) == t.pt);
        if same {
            return (data, (out_seq, out_ts));
        }
        let mut m = BytesMut::from(&data[..]);
        if let Some(b) = m.get_mut(1) {
            *b = (*b & 0x80) | t.pt.unwrap_or(pt);
        }
        put16(&mut m, 2, out_seq);
        put32(&mut m, 4, out_ts);
        put32(&mut m, 8, t.ssrc.unwrap_or(ssrc));
        (m.freeze(), (out_seq, out_ts))
    }

    /// An RTCP compound packet from the current source: its leading sender report takes the
    /// readers' SSRC, timestamp numbering and wall clock. `None`: drop it, because it comes
    /// from a new source before its first RTP packet on the track has set the mapping (its
    /// timestamps would contradict the packets').
    pub(crate) fn rtcp(&mut self, track: usize, data: Bytes) -> Option<Bytes> {
        let active = self.active;
        let Some(t) = self.tracks.get_mut(track) else {
            return Some(data);
        };
        if data.get(1) != Some(&200) {
            return Some(data);
        }
        if t.pending {
            return None;
        }
        let (Some(ntp), Some(ts)) = (be64(&data, 8), be32(&data, 16)) else {
            return Some(data);
        };
        let out_ts = ts.wrapping_add(t.ts_delta);
        let ntp_delta = *t.ntp_delta.get_or_insert_with(|| {
            match t.last_sr {
                // Where the last report's clock says this timestamp falls.
                Some((last_ntp, last_ts)) => {
                    let ticks = i64::from(out_ts.wrapping_sub(last_ts) as i32);
                    let ntp_ticks = ((ticks as i128) << 32) / i128::from(t.clock_rate);
                    (last_ntp as i128 + ntp_ticks) as u64
                }
                None => ntp,
            }
            .wrapping_sub(ntp)
        });
        let out_ntp = ntp.wrapping_add(ntp_delta);
        t.last_sr = Some((out_ntp, out_ts));
        let ssrc = t.ssrc.unwrap_or_default();
        if !active || (t.ts_delta == 0 && ntp_delta == 0 && be32(&data, 4) == Some(ssrc)) {
            return Some(data);
        }
        let mut m = BytesMut::from(&data[..]);
        put32(&mut m, 4, ssrc);
        put64(&mut m, 8, out_ntp);
        put32(&mut m, 16, out_ts);
        Some(m.freeze())
    }
}

/// A stream's numbering as a graceful restart carries it to the next worker, so the stream
/// there goes on where this one stopped (the same source, so no new mapping is made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numbering {
    active: bool,
    tracks: Vec<TrackNumbering>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TrackNumbering {
    ssrc: Option<u32>,
    pt: Option<u8>,
    /// The last (seq, rtptime) sent, and how long ago (µs) it arrived.
    last: Option<(u16, u32, u64)>,
    seq_delta: u16,
    ts_delta: u32,
    source_ssrc: Option<u32>,
    last_sr: Option<(u64, u32)>,
    ntp_delta: Option<u64>,
}

impl Continuity {
    /// The state to carry.
    pub(crate) fn numbering(&self, now: Instant) -> Numbering {
        Numbering {
            active: self.active,
            tracks: self
                .tracks
                .iter()
                .map(|t| TrackNumbering {
                    ssrc: t.ssrc,
                    pt: t.pt,
                    last: t.last.map(|(s, ts, at)| {
                        (s, ts, now.saturating_duration_since(at).as_micros() as u64)
                    }),
                    seq_delta: t.seq_delta,
                    ts_delta: t.ts_delta,
                    source_ssrc: t.source_ssrc,
                    last_sr: t.last_sr,
                    ntp_delta: t.ntp_delta,
                })
                .collect(),
        }
    }

    /// Goes on from a carried state (same tracks, same source); false if it does not fit.
    pub(crate) fn resume(&mut self, n: &Numbering, now: Instant) -> bool {
        if n.tracks.len() != self.tracks.len() {
            return false;
        }
        self.active = n.active;
        for (t, c) in self.tracks.iter_mut().zip(&n.tracks) {
            t.ssrc = c.ssrc;
            t.pt = c.pt;
            t.last = c.last.map(|(s, ts, age)| {
                let at = now.checked_sub(Duration::from_micros(age)).unwrap_or(now);
                (s, ts, at)
            });
            t.seq_delta = c.seq_delta;
            t.ts_delta = c.ts_delta;
            t.source_ssrc = c.source_ssrc;
            t.pending = false;
            t.last_sr = c.last_sr;
            t.ntp_delta = c.ntp_delta;
        }
        true
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    if let Some(s) = b.get_mut(at..at + 8) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use finch_proto::rtp::{build_packet, RtpHeader};
    use std::time::Duration;

    fn pkt(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Bytes {
        Bytes::from(build_packet(pt, false, seq, ts, ssrc, &[1, 2, 3]))
    }

    #[test]
    fn the_first_source_passes_untouched_and_a_second_continues_it() {
        let mut c = Continuity::new(&[90_000]);
        let t0 = Instant::now();
        let first = pkt(96, 100, 1000, 0xaaaa);
        let (out, at) = c.rtp(0, first.clone(), t0);
        assert_eq!(out.as_ptr(), first.as_ptr(), "no copy");
        assert_eq!(at, (100, 1000));
        c.rtp(
            0,
            pkt(96, 101, 4000, 0xaaaa),
            t0 + Duration::from_millis(33),
        );
        // The camera comes back 2 s later with a new SSRC, payload type, seq and timestamp.
        c.new_source();
        let back = t0 + Duration::from_millis(2033);
        let (out, _) = c.rtp(0, pkt(97, 5, 777, 0xbbbb), back);
        let h = RtpHeader::parse(&out).unwrap();
        assert_eq!((h.sequence, h.ssrc, h.payload_type), (102, 0xaaaa, 96));
        // 2 s at 90 kHz after the last timestamp (and one tick).
        assert_eq!(h.timestamp, 4000 + 180_000 + 1);
        let (out, _) = c.rtp(0, pkt(97, 6, 777 + 3000, 0xbbbb), back);
        let h = RtpHeader::parse(&out).unwrap();
        assert_eq!((h.sequence, h.timestamp), (103, 4000 + 180_001 + 3000));
        assert_eq!(&out[12..], &[1, 2, 3], "the payload is the camera's");
    }

    fn sr(ssrc: u32, ntp: u64, ts: u32) -> Bytes {
        let mut sr = vec![0x80, 200, 0, 6];
        sr.extend_from_slice(&ssrc.to_be_bytes());
        sr.extend_from_slice(&ntp.to_be_bytes());
        sr.extend_from_slice(&ts.to_be_bytes());
        sr.extend_from_slice(&[0; 8]);
        Bytes::from(sr)
    }

    #[test]
    fn sender_reports_follow_the_mapping_and_keep_one_wall_clock() {
        let mut c = Continuity::new(&[48_000]);
        let t0 = Instant::now();
        let sec = 1u64 << 32;
        c.rtp(0, pkt(97, 1, 100, 0x11), t0);
        // The first source's report passes as it came.
        let first = sr(0x11, 1000 * sec, 100);
        assert_eq!(c.rtcp(0, first.clone()), Some(first));
        c.new_source();
        // Before the new source's first packet its reports cannot be mapped: dropped.
        assert_eq!(c.rtcp(0, sr(0x22, 5 * sec, 9000)), None);
        c.rtp(0, pkt(97, 50, 9000, 0x22), t0);
        // A camera whose clock restarted at 5 s: readers see the first source's clock go on.
        let out = c.rtcp(0, sr(0x22, 5 * sec, 9000 + 48_000)).unwrap();
        assert_eq!(be32(&out, 4), Some(0x11));
        assert_eq!(be32(&out, 16), Some(101 + 48_000));
        // 48,001 ticks after the first report's timestamp: 1 s and one tick later.
        let want = 1000 * sec + sec + (sec / 48_000);
        assert!(
            be64(&out, 8).unwrap().abs_diff(want) < 2,
            "{:?}",
            be64(&out, 8)
        );
        // Its next report keeps the same offset.
        let out = c.rtcp(0, sr(0x22, 6 * sec, 9000 + 96_000)).unwrap();
        assert!(be64(&out, 8).unwrap().abs_diff(want + sec) < 2);
    }
}
