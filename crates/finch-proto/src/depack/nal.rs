//! H.264 (RFC 6184) and H.265 (RFC 7798) payloads into access units. The two differ only in
//! the NAL header (one byte or two) and the numbers of their aggregation and fragmentation
//! types, so one depacketizer serves both.

use super::{Frame, MAX_FRAME_BYTES};

/// Which codec's NAL units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalCodec {
    /// H.264: STAP-A (24) and FU-A (28).
    H264,
    /// H.265: AP (48) and FU (49).
    H265,
}

impl NalCodec {
    fn header_len(self) -> usize {
        match self {
            NalCodec::H264 => 1,
            NalCodec::H265 => 2,
        }
    }

    fn nal_type(self, b0: u8) -> u8 {
        match self {
            NalCodec::H264 => b0 & 0x1f,
            NalCodec::H265 => (b0 >> 1) & 0x3f,
        }
    }

    fn is_aggregate(self, t: u8) -> bool {
        matches!((self, t), (NalCodec::H264, 24) | (NalCodec::H265, 48))
    }

    fn is_fragment(self, t: u8) -> bool {
        matches!((self, t), (NalCodec::H264, 28) | (NalCodec::H265, 49))
    }

    /// Whether a NAL unit of type `t` makes its access unit a random access point.
    pub fn is_key(self, t: u8) -> bool {
        match self {
            NalCodec::H264 => t == 5,
            NalCodec::H265 => (16..=21).contains(&t),
        }
    }

    /// Whether type `t` is a parameter set (SPS/PPS; VPS/SPS/PPS).
    pub fn is_parameter_set(self, t: u8) -> bool {
        match self {
            NalCodec::H264 => matches!(t, 7 | 8),
            NalCodec::H265 => matches!(t, 32..=34),
        }
    }

    /// The type of a NAL unit (its first byte or two).
    pub fn type_of(self, nal: &[u8]) -> Option<u8> {
        nal.first().map(|b| self.nal_type(*b))
    }
}

/// Builds access units from one video track's packets.
#[derive(Debug)]
pub struct NalDepack {
    codec: NalCodec,
    /// The unit being built: length-prefixed NAL units.
    au: Vec<u8>,
    au_ts: Option<u32>,
    au_key: bool,
    /// A packet of the unit was lost (or it grew too big): it is dropped when it ends.
    au_broken: bool,
    /// A fragmented NAL unit being reassembled (its header already rebuilt).
    fu: Option<Vec<u8>>,
    last_seq: Option<u16>,
    /// The newest parameter sets seen in-band, by type.
    params: Vec<(u8, Vec<u8>)>,
}

impl NalDepack {
    /// A depacketizer for `codec`.
    pub fn new(codec: NalCodec) -> NalDepack {
        NalDepack {
            codec,
            au: Vec::new(),
            au_ts: None,
            au_key: false,
            au_broken: false,
            fu: None,
            last_seq: None,
            params: Vec::new(),
        }
    }

    /// The newest parameter set of type `t` seen in the stream.
    pub fn parameter_set(&self, t: u8) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.as_slice())
    }

    /// Takes one RTP packet; a finished access unit goes to `out`.
    pub fn push(&mut self, seq: u16, ts: u32, marker: bool, payload: &[u8], out: &mut Vec<Frame>) {
        let lost = self.last_seq.is_some_and(|l| seq != l.wrapping_add(1));
        self.last_seq = Some(seq);
        if self.au_ts.is_some_and(|t| t != ts) {
            // A new timestamp without the marker on the last unit: that unit is over.
            self.finish(out);
        }
        if lost {
            self.fu = None;
            self.au_broken = true;
        }
        self.au_ts = Some(ts);
        self.payload(payload);
        if marker {
            self.finish(out);
        }
    }

    fn payload(&mut self, p: &[u8]) {
        let c = self.codec;
        let h = c.header_len();
        let Some(t) = c.type_of(p) else { return };
        if c.is_aggregate(t) {
            // [header][size16 nal]... (RFC 6184 §5.7.1, RFC 7798 §4.4.2, no DONL).
            let mut rest = p.get(h..).unwrap_or_default();
            while let [hi, lo, ..] = *rest {
                let len = usize::from(u16::from_be_bytes([hi, lo]));
                let Some(nal) = rest.get(2..2 + len) else {
                    self.au_broken = true;
                    return;
                };
                self.nal(nal);
                rest = &rest[2 + len..];
            }
        } else if c.is_fragment(t) {
            let Some(&fu) = p.get(h) else { return };
            let (start, end, inner) = (fu & 0x80 != 0, fu & 0x40 != 0, fu & 0x3f);
            let data = p.get(h + 1..).unwrap_or_default();
            if start {
                let mut nal = match c {
                    NalCodec::H264 => vec![(p[0] & 0xe0) | (inner & 0x1f)],
                    NalCodec::H265 => vec![(p[0] & 0x81) | (inner << 1), p[1]],
                };
                nal.extend_from_slice(data);
                self.fu = Some(nal);
            } else if let Some(nal) = self.fu.as_mut() {
                nal.extend_from_slice(data);
                if nal.len() > MAX_FRAME_BYTES {
                    self.fu = None;
                    self.au_broken = true;
                    return;
                }
            } else {
                // A middle or end without its start: lost.
                self.au_broken = true;
                return;
            }
            if end {
                if let Some(nal) = self.fu.take() {
                    self.nal(&nal);
                }
            }
        } else {
            self.nal(p);
        }
    }

    fn nal(&mut self, nal: &[u8]) {
        let c = self.codec;
        let Some(t) = c.type_of(nal) else { return };
        if nal.len() <= c.header_len() {
            return;
        }
        if c.is_parameter_set(t) {
            match self.params.iter_mut().find(|(k, _)| *k == t) {
                Some((_, v)) => {
                    v.clear();
                    v.extend_from_slice(nal);
                }
                None => self.params.push((t, nal.to_vec())),
            }
        }
        if c.is_key(t) {
            self.au_key = true;
        }
        if self.au.len() + nal.len() + 4 > MAX_FRAME_BYTES {
            self.au_broken = true;
            return;
        }
        self.au.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        self.au.extend_from_slice(nal);
    }

    fn finish(&mut self, out: &mut Vec<Frame>) {
        let au = std::mem::take(&mut self.au);
        if let (Some(ts), false, false) = (self.au_ts, self.au_broken, au.is_empty()) {
            out.push(Frame {
                rtp_ts: ts,
                key: self.au_key,
                data: au,
            });
        }
        self.au_ts = None;
        self.au_key = false;
        self.au_broken = false;
        self.fu = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(f: &Frame) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        let mut rest = &f.data[..];
        while rest.len() >= 4 {
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            v.push(rest[4..4 + n].to_vec());
            rest = &rest[4 + n..];
        }
        v
    }

    #[test]
    fn h264_single_stap_a_and_fu_a_make_one_access_unit() {
        let mut d = NalDepack::new(NalCodec::H264);
        let mut out = Vec::new();
        // STAP-A: SPS + PPS.
        let sps = [0x67, 0x42, 0x00, 0x1e];
        let pps = [0x68, 0xce, 0x3c];
        let mut stap = vec![0x18, 0, 4];
        stap.extend_from_slice(&sps);
        stap.extend_from_slice(&[0, 3]);
        stap.extend_from_slice(&pps);
        d.push(1, 90, false, &stap, &mut out);
        // FU-A of an IDR slice (nri 3, type 5) in three parts.
        d.push(2, 90, false, &[0x7c, 0x85, 1, 2], &mut out);
        d.push(3, 90, false, &[0x7c, 0x05, 3], &mut out);
        d.push(4, 90, true, &[0x7c, 0x45, 4], &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].key);
        assert_eq!(out[0].rtp_ts, 90);
        assert_eq!(
            units(&out[0]),
            vec![sps.to_vec(), pps.to_vec(), vec![0x65, 1, 2, 3, 4]]
        );
        assert_eq!(d.parameter_set(7), Some(&sps[..]));
        // A single non-IDR slice, then a lost packet spoils only its own unit.
        d.push(5, 180, true, &[0x41, 9, 9], &mut out);
        assert_eq!(out.len(), 2);
        assert!(!out[1].key);
        d.push(6, 270, false, &[0x7c, 0x81, 1], &mut out);
        d.push(8, 270, true, &[0x7c, 0x41, 3], &mut out);
        d.push(9, 360, true, &[0x41, 7], &mut out);
        assert_eq!(out.len(), 3, "the unit with a lost packet was emitted");
        assert_eq!(out[2].rtp_ts, 360);
    }

    #[test]
    fn h265_aggregation_and_fragments() {
        let mut d = NalDepack::new(NalCodec::H265);
        let mut out = Vec::new();
        let vps = [0x40, 0x01, 0xaa];
        let sps = [0x42, 0x01, 0xbb];
        let mut ap = vec![0x60, 0x01, 0, 3];
        ap.extend_from_slice(&vps);
        ap.extend_from_slice(&[0, 3]);
        ap.extend_from_slice(&sps);
        d.push(10, 0, false, &ap, &mut out);
        // FU of an IDR_W_RADL (19): header type 49 (0x62 0x01), FU header S + 19.
        d.push(11, 0, false, &[0x62, 0x01, 0x80 | 19, 5], &mut out);
        d.push(12, 0, true, &[0x62, 0x01, 0x40 | 19, 6], &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].key);
        assert_eq!(
            units(&out[0]),
            vec![vps.to_vec(), sps.to_vec(), vec![19 << 1, 0x01, 5, 6]]
        );
    }

    #[test]
    fn a_missing_marker_ends_the_unit_at_the_next_timestamp() {
        let mut d = NalDepack::new(NalCodec::H264);
        let mut out = Vec::new();
        d.push(1, 100, false, &[0x41, 1], &mut out);
        d.push(2, 200, false, &[0x41, 2], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rtp_ts, 100);
    }

    #[test]
    fn garbage_never_panics_or_grows_without_bound() {
        let mut d = NalDepack::new(NalCodec::H264);
        let mut out = Vec::new();
        for i in 0..2000u16 {
            let junk: Vec<u8> = (0..(i % 300)).map(|b| (b as u8).wrapping_mul(31)).collect();
            d.push(i, u32::from(i / 3), i % 5 == 0, &junk, &mut out);
            d.push(i, 0, false, &[0x7c, 0x05], &mut out);
        }
        assert!(out.iter().all(|f| f.data.len() <= MAX_FRAME_BYTES));
    }
}
