//! A reader's batch as the iovecs of one `writev`: RTP over RTSP (`$`, channel, length, packet)
//! without copying a byte.
//!
//! A packet whose frame is published already sits framed on the default channels in its
//! frame's shared buffer (see [`Framed`](crate::Framed)), so a run of such packets back to back
//! is one slice, and a whole video frame is usually one iovec. Any other packet (a reader on
//! other channels, a packet not framed yet) is a 4-byte header of ours and the packet. The
//! assembly keeps its buffers from batch to batch: pieces name packets by their index in the
//! batch rather than borrowing them, so nothing is allocated per batch once it has grown.

use crate::packet::Packet;
use std::io::IoSlice;

/// The most iovecs handed to one `writev` (Linux's IOV_MAX is 1024; a frame is usually one).
pub const MAX_SLICES: usize = 64;

/// One piece of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Framed packets back to back in one shared buffer: the first one (batch index) and the
    /// run's end in that buffer.
    Run { first: usize, end: usize },
    /// A header from `headers` and the packet (batch index), as two iovecs.
    Packet { header: usize, packet: usize },
}

/// The pieces of one batch, and the buffers they reuse.
#[derive(Debug, Default)]
pub struct Interleaved {
    headers: Vec<[u8; 4]>,
    pieces: Vec<Piece>,
    bytes: usize,
}

impl Interleaved {
    /// Forgets the previous batch (keeps the buffers).
    pub fn clear(&mut self) {
        self.headers.clear();
        self.pieces.clear();
        self.bytes = 0;
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Bytes queued, headers included.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Adds `batch[index]` on `channel`; false (and nothing added) if the packet does not fit an
    /// interleaved frame (over 65535 bytes).
    pub fn push(&mut self, batch: &[Packet], index: usize, channel: u8) -> bool {
        let p = &batch[index];
        if let Some(f) = p.framed().filter(|f| f.channel() == channel) {
            if let Some(Piece::Run { first, end }) = self.pieces.last_mut() {
                let prev = batch[*first].framed().map(|g| g.block.as_ptr());
                if prev == Some(f.block.as_ptr()) && *end == f.start {
                    *end = f.end;
                    self.bytes += f.end - f.start;
                    return true;
                }
            }
            self.pieces.push(Piece::Run {
                first: index,
                end: f.end,
            });
            self.bytes += f.end - f.start;
            return true;
        }
        let Ok(len) = u16::try_from(p.data().len()) else {
            return false;
        };
        let [hi, lo] = len.to_be_bytes();
        self.headers.push([b'$', channel, hi, lo]);
        self.pieces.push(Piece::Packet {
            header: self.headers.len() - 1,
            packet: index,
        });
        self.bytes += 4 + p.data().len();
        true
    }

    /// Fills `out` from its start with the iovecs of pieces `from..`, as many as fit; returns
    /// the index of the first piece left out (`from` again only if `out` is too short for one
    /// piece) and how many slots were filled.
    pub fn slices<'a>(
        &'a self,
        batch: &'a [Packet],
        from: usize,
        out: &mut [IoSlice<'a>],
    ) -> (usize, usize) {
        let (mut i, mut n) = (from, 0);
        while let Some(piece) = self.pieces.get(i) {
            match *piece {
                Piece::Run { first, end } => {
                    let Some(f) = batch[first].framed() else {
                        break;
                    };
                    if n + 1 > out.len() {
                        break;
                    }
                    out[n] = IoSlice::new(&f.block[f.start..end]);
                    n += 1;
                }
                Piece::Packet { header, packet } => {
                    if n + 2 > out.len() {
                        break;
                    }
                    out[n] = IoSlice::new(&self.headers[header]);
                    out[n + 1] = IoSlice::new(batch[packet].data());
                    n += 2;
                }
            }
            i += 1;
        }
        (i, n)
    }

    /// How many pieces are queued.
    pub fn pieces(&self) -> usize {
        self.pieces.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Kind;
    use bytes::Bytes;
    use std::time::Instant;

    fn joined(slices: &[IoSlice<'_>]) -> Vec<u8> {
        slices.iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn unframed_packets_get_headers_of_their_channel() {
        let now = Instant::now();
        let batch = vec![
            Packet::new(0, Kind::Rtp, true, now, Bytes::from_static(b"abc")),
            Packet::new(1, Kind::Rtcp, false, now, Bytes::from_static(b"de")),
        ];
        let mut a = Interleaved::default();
        assert!(a.push(&batch, 0, 4));
        assert!(a.push(&batch, 1, 7));
        assert_eq!(a.len(), 13);
        let mut out = [IoSlice::new(&[]); MAX_SLICES];
        assert_eq!(a.slices(&batch, 0, &mut out), (2, 4));
        assert_eq!(joined(&out[..4]), b"$\x04\x00\x03abc$\x07\x00\x02de");
        // Too few slots for the second piece: it is left for the next call.
        assert_eq!(a.slices(&batch, 0, &mut out[..3]), (1, 2));
        assert_eq!(a.slices(&batch, 1, &mut out[..3]), (2, 2));
        assert_eq!(joined(&out[..2]), b"$\x07\x00\x02de");
    }

    #[test]
    fn a_packet_too_large_for_a_frame_is_refused() {
        let batch = vec![Packet::new(
            0,
            Kind::Rtp,
            true,
            Instant::now(),
            Bytes::from(vec![0u8; 70_000]),
        )];
        let mut a = Interleaved::default();
        assert!(!a.push(&batch, 0, 0));
        assert!(a.is_empty());
    }
}
