//! Video parameter sets a source sent in-band (H.264 SPS/PPS, H.265 VPS/SPS/PPS), and whether it
//! fragments or aggregates NAL units, so a DESCRIBE can describe a stream whose SDP said neither.
//!
//! Every set is kept by kind and id: an encoder may use several PPS (different ids), and a
//! player needs all of them; a set with an id already seen replaces the old one. The number
//! kept per kind is bounded, and each is a copy of a few bytes, so no packet is pinned by it.

use bytes::Bytes;
use finch_proto::codec::{h264, h265, VideoCodec};

/// At most this many sets of one kind are kept (H.264 allows 32 SPS and 256 PPS ids; encoders
/// use one or a few).
const MAX_PER_KIND: usize = 8;

/// The parameter sets seen on a video track.
#[derive(Debug, Clone)]
pub(crate) struct ParameterSets {
    codec: VideoCodec,
    /// (NAL type, id if readable, the NAL unit), in arrival order.
    sets: Vec<(u8, Option<u32>, Bytes)>,
    /// A STAP-A or FU-A was seen (H.264 `packetization-mode=1`).
    non_interleaved: bool,
}

impl ParameterSets {
    pub(crate) fn new(codec: VideoCodec) -> Self {
        ParameterSets {
            codec,
            sets: Vec::new(),
            non_interleaved: false,
        }
    }

    /// Looks at one RTP payload of the video track.
    pub(crate) fn observe(&mut self, payload: &[u8]) {
        let found = match self.codec {
            VideoCodec::H264 => {
                if !self.non_interleaved && h264::needs_non_interleaved_mode(payload) {
                    self.non_interleaved = true;
                }
                h264::parameter_sets(payload)
            }
            VideoCodec::H265 => h265::parameter_sets(payload),
        };
        for nal in found {
            self.keep(nal);
        }
    }

    fn keep(&mut self, nal: &[u8]) {
        let (kind, id) = match self.codec {
            VideoCodec::H264 => (
                nal.first().map_or(0, |b| b & 0x1f),
                h264::parameter_set_key(nal).map(|k| k.1),
            ),
            VideoCodec::H265 => (
                nal.first().map_or(0, |b| (b >> 1) & 0x3f),
                h265::parameter_set_key(nal).map(|k| k.1),
            ),
        };
        if self.sets.iter().any(|(_, _, s)| s[..] == *nal) {
            return;
        }
        // Same kind and id: the encoder replaced it. An unreadable id is told apart by content.
        if id.is_some() {
            self.sets.retain(|(k, i, _)| !(*k == kind && *i == id));
        }
        if self.sets.iter().filter(|(k, _, _)| *k == kind).count() >= MAX_PER_KIND {
            if let Some(oldest) = self.sets.iter().position(|(k, _, _)| *k == kind) {
                self.sets.remove(oldest);
            }
        }
        self.sets.push((kind, id, Bytes::copy_from_slice(nal)));
    }

    /// The sets, ordered by kind (H.264: SPS before PPS; H.265: VPS, SPS, PPS), then by arrival.
    pub(crate) fn all(&self) -> Vec<Bytes> {
        let mut v: Vec<&(u8, Option<u32>, Bytes)> = self.sets.iter().collect();
        v.sort_by_key(|(k, _, _)| *k);
        v.into_iter().map(|(_, _, s)| s.clone()).collect()
    }

    /// Whether the stream carries STAP-A or FU-A (H.264).
    pub(crate) fn non_interleaved(&self) -> bool {
        self.non_interleaved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_pps_id_and_replaces_a_repeated_one() {
        let mut p = ParameterSets::new(VideoCodec::H264);
        p.observe(&[0x67, 66, 0, 30, 0x80]); // SPS id 0
        p.observe(&[0x68, 0x80, 1]); // PPS id 0
        p.observe(&[0x68, 0x40, 2]); // PPS id 1
        p.observe(&[0x68, 0x80, 3]); // PPS id 0 again, new content
        assert_eq!(
            p.all(),
            vec![
                Bytes::from_static(&[0x67, 66, 0, 30, 0x80]),
                Bytes::from_static(&[0x68, 0x40, 2]),
                Bytes::from_static(&[0x68, 0x80, 3]),
            ]
        );
        assert!(!p.non_interleaved());
        p.observe(&[0x7c, 0x85, 0]);
        assert!(p.non_interleaved());
    }

    #[test]
    fn the_number_kept_is_bounded() {
        let mut p = ParameterSets::new(VideoCodec::H265);
        for i in 0..100u8 {
            // PPS whose id cannot be read (too short): told apart by content.
            p.observe(&[34 << 1, 1, 0, i]);
        }
        assert_eq!(p.all().len(), MAX_PER_KIND);
    }
}
