//! A reader of a stream: its position in the stream's ring, the tracks it set up, and what it
//! does when it falls behind. RTSP over TCP or UDP, and later HLS muxers, recorders and peer
//! nodes, are all readers; each drives its own [`Reader`] from its own task.
//!
//! Slow-reader policy (the source never waits for anyone):
//! - A reader that is more than `reader_queue_packets` behind live skips ahead to the newest
//!   keyframe it has not reached; one whose position has left the ring altogether waits for the
//!   next keyframe. Either way it loses whole frames, never part of one.
//! - Every packet skipped counts as dropped. A reader that skips more than
//!   `slow_reader_max_dropped_packets` without being sent anything in between is told to go
//!   ([`Ended::TooSlow`]).
//! - A reader only ever gets the tracks it set up, so an audio-only reader's allowance is not
//!   spent on video.
//!
//! Dropping the handle leaves the stream (also when its task panics), so a reader can never be
//! leaked by its owner.

use crate::counters::ReaderStats;
use crate::packet::Packet;
use crate::stream::{Joined, Stream};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::watch;

/// How a reader is connected, for the admin API.
#[derive(Debug, Clone)]
pub struct ReaderInfo {
    /// Its session id (RTSP session, HLS muxer …).
    pub session: String,
    /// Its address.
    pub peer: SocketAddr,
    /// `tcp`, `udp` …
    pub transport: &'static str,
}

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the GOP cache, if there is one; else at the next keyframe.
    Cache,
    /// At the next keyframe (a reader coming back from PAUSE has had the cache already).
    NextKey,
    /// At the next packet, whatever it is: a reader that has played this stream elsewhere
    /// up to here (handed over by a graceful restart).
    Next,
}

/// Why a reader's stream ended for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ended {
    /// The source left and the stream was closed.
    #[error("the stream has ended")]
    Closed,
    /// The reader fell too far behind too long.
    #[error("the reader could not keep up")]
    TooSlow,
}

/// A reader's handle on its stream.
pub struct Reader {
    stream: Arc<Stream>,
    id: u64,
    cursor: u64,
    /// Set-up tracks, by index.
    tracks: Vec<bool>,
    /// Waiting for a keyframe before sending anything.
    waiting: bool,
    /// It reads the video track, so it starts and resumes only at keyframes.
    wants_keys: bool,
    /// Has been sent something already (skips before the first packet are not drops).
    started: bool,
    dropped_in_row: u64,
    prelude: Vec<Packet>,
    start: Vec<Option<(u16, u32)>>,
    backlog: u64,
    stats: Arc<ReaderStats>,
    wake: watch::Receiver<()>,
}

/// Packets a reader scans per call, beyond what it returns: bounds the lock hold when it skips
/// many packets of tracks it did not set up.
const SCAN_FACTOR: usize = 4;

impl Reader {
    pub(crate) fn new(stream: Arc<Stream>, tracks: &[usize], j: Joined) -> Reader {
        let mut set = vec![false; stream.tracks.len()];
        for &t in tracks {
            if let Some(s) = set.get_mut(t) {
                *s = true;
            }
        }
        let wake = stream.wake.subscribe();
        let wants_keys = stream.wants_keyframes(tracks);
        Reader {
            wants_keys,
            stream,
            id: j.id,
            cursor: j.cursor,
            tracks: set,
            waiting: j.waiting,
            started: false,
            dropped_in_row: 0,
            prelude: j.prelude,
            start: j.start,
            backlog: j.backlog,
            stats: j.stats,
            wake,
        }
    }

    /// Per track, the (seq, rtptime) of the first RTP packet this reader will get (RTP-Info).
    /// For a reader waiting for a keyframe it is where live was; the first packet comes later.
    pub fn start(&self) -> &[Option<(u16, u32)>] {
        &self.start
    }

    /// How many packets were ready for it the moment it joined (sender reports and the GOP):
    /// a UDP writer paces these rather than bursting them into the player's socket buffer.
    pub fn backlog(&self) -> u64 {
        self.backlog
    }

    /// Whether it is waiting for a keyframe.
    pub fn is_waiting_for_keyframe(&self) -> bool {
        self.waiting
    }

    /// The stream it reads.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Waits for packets and appends up to `max` of them to `out`; the number appended. Returns
    /// at once when some are ready. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn recv(&mut self, out: &mut Vec<Packet>, max: usize) -> Result<usize, Ended> {
        loop {
            // Marked seen before looking, so a wake-up between the look and the wait is not
            // missed: `changed` then returns at once.
            self.wake.borrow_and_update();
            let n = self.try_recv(out, max)?;
            if n > 0 {
                return Ok(n);
            }
            if self.wake.changed().await.is_err() {
                return Err(Ended::Closed);
            }
        }
    }

    /// Appends up to `max` ready packets to `out` without waiting; the number appended.
    pub fn try_recv(&mut self, out: &mut Vec<Packet>, max: usize) -> Result<usize, Ended> {
        let mut delivered = 0usize;
        for p in self.prelude.drain(..) {
            out.push(p);
            delivered += 1;
        }
        let st = self.stream.lock();
        let published = st.published;
        let ring = &st.ring;
        let mut skipped = 0u64;
        if self.cursor < ring.base() {
            // Its position left the ring: everything in between is gone.
            skipped += ring.base() - self.cursor;
            self.cursor = ring.base();
            self.waiting = self.wants_keys;
        }
        let allowance = self.stream.params().reader_queue_packets as u64;
        let newer_key = ring
            .last_key()
            .filter(|k| *k >= self.cursor && *k < published);
        if self.waiting {
            match newer_key {
                Some(k) => {
                    skipped += k - self.cursor;
                    self.cursor = k;
                    self.waiting = false;
                }
                None => {
                    skipped += published.saturating_sub(self.cursor);
                    self.cursor = self.cursor.max(published);
                }
            }
        } else if published.saturating_sub(self.cursor) > allowance {
            if let Some(k) = newer_key.filter(|k| *k > self.cursor) {
                skipped += k - self.cursor;
                self.cursor = k;
            }
        }
        if !self.waiting {
            let mut scanned = 0usize;
            while self.cursor < published && delivered < max && scanned < max * SCAN_FACTOR {
                let Some(p) = ring.get(self.cursor) else {
                    break;
                };
                self.cursor += 1;
                scanned += 1;
                if self.tracks.get(p.track).copied().unwrap_or(false) {
                    out.push(p.clone());
                    delivered += 1;
                }
            }
        }
        let closed = st.closed && self.cursor >= published;
        drop(st);
        if skipped > 0 && self.started {
            self.dropped_in_row += skipped;
            self.stats.packets_dropped.fetch_add(skipped, Relaxed);
        }
        if delivered > 0 {
            self.started = true;
            self.dropped_in_row = 0;
        } else if self.dropped_in_row > self.stream.params().slow_reader_max_dropped_packets {
            self.stream.counters.readers_kicked.fetch_add(1, Relaxed);
            tracing::warn!(
                dropped = self.dropped_in_row,
                "disconnecting a reader that could not keep up"
            );
            return Err(Ended::TooSlow);
        }
        if closed && delivered == 0 {
            return Err(Ended::Closed);
        }
        Ok(delivered)
    }

    /// Records what its owner has written out of what it was given.
    pub fn sent(&self, packets: u64, bytes: u64) {
        self.stats.packets_out.fetch_add(packets, Relaxed);
        self.stats.bytes_out.fetch_add(bytes, Relaxed);
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stream.leave(self.id);
    }
}
