//! One packet on its way from a source to readers: the bytes as they came, plus what the relay
//! learnt about them on the way in (track, RTP or RTCP, whether a keyframe starts here, when it
//! arrived).
//!
//! The payload is a [`Bytes`]: received once, then shared by every reader as a reference-count
//! increment, never copied.

use bytes::Bytes;
use std::time::Instant;

/// RTP media or RTCP control, as the source's transport told them apart (interleaved channel
/// parity, or the UDP port it arrived on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An RTP packet.
    Rtp,
    /// An RTCP compound packet.
    Rtcp,
}

/// A packet in a stream.
#[derive(Debug, Clone)]
pub struct Packet {
    /// The track (index into the stream's tracks, in SDP order).
    pub track: usize,
    /// RTP or RTCP.
    pub kind: Kind,
    /// Whether a keyframe starts with this packet (its parameter sets or first IRAP slice on the
    /// video track; every RTP packet of a stream without video).
    pub key: bool,
    /// When the source's packet reached the server.
    pub at: Instant,
    /// The packet, shared by every reader.
    pub data: Bytes,
}

impl Packet {
    /// Whether this is an RTCP packet.
    pub fn is_rtcp(&self) -> bool {
        self.kind == Kind::Rtcp
    }
}

/// What one buffered packet costs beyond its payload: the slot itself plus the shared buffer's
/// header and allocator rounding. Counted in every memory bound, so a source sending tiny packets
/// cannot fill a byte bound with hundreds of thousands of entries.
pub const PACKET_OVERHEAD: usize = std::mem::size_of::<Packet>() + 64;

/// The memory a buffered packet accounts for.
pub fn cost(p: &Packet) -> usize {
    p.data.len() + PACKET_OVERHEAD
}
