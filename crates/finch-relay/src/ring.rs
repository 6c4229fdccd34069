//! A stream's packet ring: the one buffer every reader of a stream reads from, each at its own
//! position, and that doubles as the GOP cache.
//!
//! Packets get positions that only grow (`0, 1, 2 …`); the ring holds `base..head`. A reader is a
//! cursor into it, so fan-out costs the source one append per packet, whatever the number of
//! readers (mediamtx and ZLMediaKit share packets the same way). What the ring keeps:
//!
//! - the last `window_packets` packets, so a reader that falls a little behind live can catch up;
//! - everything since the newest keyframe (the GOP), while the GOP fits `gop_max_packets` and
//!   `gop_max_bytes`, so a new reader starts on a whole picture at once;
//! - never more than `max_bytes` in all, counting each packet's overhead as well as its payload.
//!
//! A GOP that outgrows its bounds stops being a cache until the next keyframe (new readers then
//! wait for that keyframe). Memory is bounded per stream, not per reader: a stuck reader holds no
//! packets, it just finds its position gone.

use crate::packet::{cost, Packet};
use bytes::{BufMut, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Memory shared by every ring (`limits.max_gop_cache_total_bytes`): past it, a ring that grows
/// gives up its GOP and keeps only its window, so many paths together stay bounded too.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    max: AtomicUsize,
}

impl Budget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        })
    }

    /// Changes the bound (a reload).
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Relaxed);
    }

    /// Bytes all rings hold now.
    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    fn over(&self) -> bool {
        self.used.load(Relaxed) > self.max.load(Relaxed)
    }
}

/// What a ring keeps (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingLimits {
    pub(crate) window_packets: usize,
    pub(crate) gop_cache: bool,
    pub(crate) gop_max_packets: usize,
    pub(crate) gop_max_bytes: usize,
    pub(crate) max_bytes: usize,
}

/// The current GOP, while it is cacheable.
#[derive(Debug, Clone)]
pub(crate) struct Gop {
    /// The position of its keyframe's first packet.
    pub(crate) start: u64,
    bytes: usize,
    /// Per track, the (seq, rtptime) of the first RTP packet at or after `start`: what RTP-Info
    /// tells a reader that starts here.
    pub(crate) first: Vec<Option<(u16, u32)>>,
}

pub(crate) struct Ring {
    buf: VecDeque<Packet>,
    base: u64,
    bytes: usize,
    gop: Option<Gop>,
    last_key: Option<u64>,
    limits: RingLimits,
    tracks: usize,
    budget: Option<Arc<Budget>>,
}

impl Ring {
    pub(crate) fn new(tracks: usize, limits: RingLimits, budget: Option<Arc<Budget>>) -> Ring {
        Ring {
            buf: VecDeque::new(),
            base: 0,
            bytes: 0,
            gop: None,
            last_key: None,
            limits,
            tracks,
            budget,
        }
    }

    /// The position the next packet will get.
    pub(crate) fn head(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// The oldest position still held.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The packet at `pos`, if still held.
    pub(crate) fn get(&self, pos: u64) -> Option<&Packet> {
        let i = usize::try_from(pos.checked_sub(self.base)?).ok()?;
        self.buf.get(i)
    }

    /// The newest keyframe start still held.
    pub(crate) fn last_key(&self) -> Option<u64> {
        self.last_key.filter(|k| *k >= self.base)
    }

    /// The cached GOP, if there is one.
    pub(crate) fn gop(&self) -> Option<&Gop> {
        self.gop.as_ref().filter(|g| g.start >= self.base)
    }

    /// Bytes held, overhead included.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Packets held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Appends a packet; `rtp` is its (seq, rtptime) when it is RTP.
    pub(crate) fn push(&mut self, p: Packet, rtp: Option<(u16, u32)>) {
        let pos = self.head();
        let size = cost(&p);
        if p.key {
            self.last_key = Some(pos);
            if self.limits.gop_cache {
                self.gop = Some(Gop {
                    start: pos,
                    bytes: 0,
                    first: vec![None; self.tracks],
                });
            }
        }
        if let Some(g) = &mut self.gop {
            g.bytes += size;
            let packets = pos + 1 - g.start;
            if g.bytes > self.limits.gop_max_bytes || packets > self.limits.gop_max_packets as u64 {
                // Too long to cache: new readers wait for the next keyframe instead.
                self.gop = None;
            } else if let (Some(slot), Some(first)) = (g.first.get_mut(p.track), rtp) {
                slot.get_or_insert(first);
            }
        }
        self.bytes += size;
        if let Some(b) = &self.budget {
            b.used.fetch_add(size, Relaxed);
        }
        self.buf.push_back(p);
        self.evict();
    }

    /// Copies the packets from `from` to the head into one buffer, framed for RTP over RTSP,
    /// and makes each a slice of it (see [`crate::packet::Framed`]). Only for packets no reader
    /// has seen yet: the stream frames what it is about to publish.
    pub(crate) fn frame(&mut self, from: u64) {
        let Ok(first) = usize::try_from(from.saturating_sub(self.base)) else {
            return;
        };
        fn framable(p: &Packet) -> bool {
            p.framed().is_none()
                && u16::try_from(p.data().len()).is_ok()
                && crate::packet::default_channel(p.track, p.kind).is_some()
        }
        let len: usize = self
            .buf
            .range(first..)
            .filter(|p| framable(p))
            .map(|p| 4 + p.data().len())
            .sum();
        if len == 0 {
            return;
        }
        let mut block = BytesMut::with_capacity(len);
        for p in self.buf.range(first..).filter(|p| framable(p)) {
            let ch = crate::packet::default_channel(p.track, p.kind).unwrap_or_default();
            block.put_u8(b'$');
            block.put_u8(ch);
            block.put_u16(p.data().len() as u16);
            block.put_slice(p.data());
        }
        let block = block.freeze();
        let mut at = 0;
        for p in self.buf.range_mut(first..) {
            if !framable(p) {
                continue;
            }
            let end = at + 4 + p.data().len();
            p.set_framed(block.clone(), at, end);
            at = end;
        }
    }

    fn evict(&mut self) {
        let over_budget = self.budget.as_ref().is_some_and(|b| b.over());
        while let Some(front) = self.buf.front() {
            let over = self.bytes > self.limits.max_bytes;
            let in_window = self.buf.len() <= self.limits.window_packets;
            let in_gop = !over_budget && self.gop.as_ref().is_some_and(|g| self.base >= g.start);
            if !over && (in_window || in_gop) {
                break;
            }
            let size = cost(front);
            self.bytes -= size;
            if let Some(b) = &self.budget {
                b.used.fetch_sub(size, Relaxed);
            }
            self.buf.pop_front();
            self.base += 1;
            if self.gop.as_ref().is_some_and(|g| g.start < self.base) {
                self.gop = None;
            }
        }
    }

    /// The current GOP is no cache any more (its source has gone): new readers wait for the
    /// next keyframe.
    pub(crate) fn drop_gop(&mut self) {
        self.gop = None;
        self.last_key = None;
    }

    /// Drops every packet (the stream has ended); positions keep counting.
    pub(crate) fn clear(&mut self) {
        self.base = self.head();
        self.buf.clear();
        if let Some(b) = &self.budget {
            b.used.fetch_sub(self.bytes, Relaxed);
        }
        self.bytes = 0;
        self.gop = None;
        self.last_key = None;
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Kind, PACKET_OVERHEAD};
    use bytes::Bytes;
    use std::time::Instant;

    fn packet(key: bool, len: usize) -> Packet {
        Packet::new(
            0,
            Kind::Rtp,
            key,
            Instant::now(),
            Bytes::from(vec![0u8; len]),
        )
    }

    fn limits() -> RingLimits {
        RingLimits {
            window_packets: 4,
            gop_cache: true,
            gop_max_packets: 10,
            gop_max_bytes: 1 << 20,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_published_frame_is_one_buffer_of_framed_packets() {
        let mut r = Ring::new(2, limits(), None);
        let bytes = |n: u8, len: usize| Bytes::from(vec![n; len]);
        r.push(
            Packet::new(0, Kind::Rtp, true, Instant::now(), bytes(1, 10)),
            None,
        );
        r.frame(0);
        r.push(
            Packet::new(0, Kind::Rtp, false, Instant::now(), bytes(2, 20)),
            None,
        );
        r.push(
            Packet::new(1, Kind::Rtcp, false, Instant::now(), bytes(3, 8)),
            None,
        );
        r.frame(1);
        let (a, b, c) = (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap());
        assert_eq!(
            (a.data(), b.data(), c.data()),
            (&[1; 10][..], &[2; 20][..], &[3; 8][..])
        );
        let (fb, fc) = (b.framed().unwrap(), c.framed().unwrap());
        // The second frame's two packets share one buffer, back to back, each with its header.
        assert_eq!(fb.block.as_ptr(), fc.block.as_ptr());
        assert_eq!((fb.start, fb.end, fc.start, fc.end), (0, 24, 24, 36));
        assert_eq!(&fb.block[..4], &[b'$', 0, 0, 20]);
        assert_eq!((fb.channel(), fc.channel()), (0, 3));
        assert_ne!(a.framed().unwrap().block.as_ptr(), fb.block.as_ptr());
        // Framing twice changes nothing.
        let before = fb.block.as_ptr();
        r.frame(0);
        assert_eq!(r.get(1).unwrap().framed().unwrap().block.as_ptr(), before);
    }

    #[test]
    fn keeps_the_window_and_the_gop() {
        let mut r = Ring::new(1, limits(), None);
        for i in 0..3u16 {
            r.push(packet(false, 10), Some((i, 0)));
        }
        r.push(packet(true, 10), Some((3, 0)));
        for i in 4..9u16 {
            r.push(packet(false, 10), Some((i, 0)));
        }
        // The GOP (positions 3..9) outlives the 4-packet window; what came before it does not.
        assert_eq!((r.base(), r.head()), (3, 9));
        let g = r.gop().unwrap();
        assert_eq!((g.start, g.first[0]), (3, Some((3, 0))));
        assert_eq!(r.last_key(), Some(3));
        // Past 10 packets the GOP is no cache: only the window stays.
        for i in 9..14u16 {
            r.push(packet(false, 10), Some((i, 0)));
        }
        assert!(r.gop().is_none());
        assert_eq!(r.len(), 4);
        assert_eq!(r.last_key(), None, "the keyframe has left the ring");
    }

    #[test]
    fn tiny_packets_cannot_outgrow_the_byte_bound() {
        let mut l = limits();
        l.gop_max_packets = usize::MAX;
        l.gop_max_bytes = 100 * PACKET_OVERHEAD;
        l.max_bytes = 200 * PACKET_OVERHEAD;
        let mut r = Ring::new(1, l, None);
        r.push(packet(true, 1), None);
        for _ in 0..100_000 {
            r.push(packet(false, 1), None);
        }
        // Empty payloads still cost their overhead: the GOP was given up, the window stays.
        assert!(r.gop().is_none());
        assert_eq!(r.len(), 4);
        assert!(r.bytes() <= 4 * (PACKET_OVERHEAD + 1));
    }

    #[test]
    fn rings_together_stay_within_their_budget() {
        let budget = Budget::new(40 * (PACKET_OVERHEAD + 100));
        let mut l = limits();
        l.gop_max_packets = 1000;
        let mut rings: Vec<Ring> = (0..3)
            .map(|_| Ring::new(1, l, Some(budget.clone())))
            .collect();
        for r in rings.iter_mut() {
            r.push(packet(true, 100), None);
            for _ in 0..30 {
                r.push(packet(false, 100), None);
            }
        }
        // The first ring's GOP fitted; the later ones pushed the total over and gave theirs up.
        assert!(rings[0].gop().is_some());
        assert!(rings[2].gop().is_none());
        assert!(budget.used() <= 40 * (PACKET_OVERHEAD + 100) + 2 * 4 * (PACKET_OVERHEAD + 100));
        drop(rings);
        assert_eq!(budget.used(), 0, "dropped rings give their bytes back");
    }

    #[test]
    fn the_byte_bound_holds_even_inside_the_window() {
        let mut l = limits();
        l.gop_cache = false;
        l.max_bytes = 3 * (PACKET_OVERHEAD + 1000);
        let mut r = Ring::new(1, l, None);
        for _ in 0..4 {
            r.push(packet(false, 1000), None);
        }
        assert_eq!(r.len(), 3);
        assert!(r.get(r.base()).is_some() && r.get(r.base() - 1).is_none());
        r.clear();
        assert_eq!((r.len(), r.bytes(), r.base(), r.head()), (0, 0, 4, 4));
    }
}
