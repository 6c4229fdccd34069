//! Finch's Low-Latency HLS (RFC 8216bis) muxer, sans-IO: RTP packets of one path in, fMP4
//! init segment, parts, segments and the media playlist out. The worker's `hls` room feeds it
//! from the relay (it is one more reader there) and serves what it makes over HTTP.
//!
//! - `fmp4`: the boxes (`mp4-atom`'s), init segment and fragments.
//! - `muxer`: timeline, part and segment cutting, the bounded window of what is kept.
//! - `playlist`: the media playlist, file names, the blocking-reload query.
//!
//! The RTP depacketizers (H.264, H.265, AAC) are `finch_proto::depack`.
#![deny(missing_docs)]

pub mod fmp4;
pub mod muxer;
pub mod playlist;

pub use muxer::{
    Continuation, Muxer, MuxerConfig, Part, Resume, Segment, TrackResume, Unsupported,
};
