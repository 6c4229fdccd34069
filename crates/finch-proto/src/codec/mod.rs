//! The codec knowledge a relay needs: where a keyframe starts, and in-band parameter sets.
//!
//! Finch never transcodes. It looks into a video payload only to find the first packet of a
//! keyframe (the GOP cache starts there, and a slow reader resumes there) and, for H.264, to pick
//! up SPS/PPS sent in-band so DESCRIBE can advertise them.

mod bits;
pub mod h264;
pub mod h265;
pub mod sps;

/// The codecs whose payloads the relay inspects; everything else is opaque RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 (RFC 6184).
    H264,
    /// H.265 (RFC 7798).
    H265,
}

impl VideoCodec {
    /// From an SDP encoding name.
    pub fn from_encoding(name: &str) -> Option<VideoCodec> {
        if name.eq_ignore_ascii_case("H264") {
            Some(VideoCodec::H264)
        } else if name.eq_ignore_ascii_case("H265") || name.eq_ignore_ascii_case("HEVC") {
            Some(VideoCodec::H265)
        } else {
            None
        }
    }

    /// Whether an RTP payload of this codec begins a keyframe (its parameter sets or its first
    /// IRAP slice). A keyframe's later packets answer `false`.
    pub fn starts_keyframe(self, payload: &[u8]) -> bool {
        match self {
            VideoCodec::H264 => h264::starts_keyframe(payload),
            VideoCodec::H265 => h265::starts_keyframe(payload),
        }
    }
}
