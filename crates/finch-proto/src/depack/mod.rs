//! From RTP packets back to the codec's own units: H.264 and H.265 access units (RFC 6184,
//! RFC 7798: single NAL units, aggregation and fragmentation packets), AAC frames (RFC 3640
//! AU headers) and Opus packets' durations (RFC 7587), what an MP4 sample holds. Sans-IO like the rest of the crate: the caller hands
//! in each packet's sequence number, timestamp, marker bit and payload, and collects frames.
//!
//! A lost packet spoils only the access unit it belonged to: the unit is dropped, never
//! emitted half-built, and the next one starts clean. Every buffer is bounded.

mod aac;
mod nal;
mod opus;

pub use aac::{Aac, AacConfig};
pub use nal::{NalCodec, NalDepack};
pub use opus::opus_duration;

/// One access unit: a whole picture or an audio frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its RTP timestamp (the presentation time, in the track's clock).
    pub rtp_ts: u32,
    /// Whether decoding can start here (an IDR/IRAP picture; every audio frame).
    pub key: bool,
    /// Video: the NAL units, each behind a 4-byte big-endian length (MP4's form). Audio: the
    /// raw frame.
    pub data: Vec<u8>,
}

/// The largest access unit kept; a larger one is dropped (a hostile or broken source).
pub const MAX_FRAME_BYTES: usize = 8 << 20;
