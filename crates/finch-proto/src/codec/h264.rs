//! H.264 RTP payloads (RFC 6184 §5.6–§5.8): single NAL units, STAP-A and FU-A.

use super::bits::Bits;

const IDR: u8 = 5;
const SPS: u8 = 7;
const PPS: u8 = 8;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Whether the payload holds an SPS or the first fragment of an IDR slice.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    match b0 & 0x1f {
        IDR | SPS => true,
        STAP_A => {
            stap_a_units(payload).any(|n| matches!(n.first().map(|b| b & 0x1f), Some(IDR | SPS)))
        }
        FU_A => payload
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == IDR),
        _ => false,
    }
}

/// SPS and PPS NAL units sent in-band in this payload (single NAL or STAP-A).
pub fn parameter_sets(payload: &[u8]) -> Vec<&[u8]> {
    match payload.first().map(|b| b & 0x1f) {
        Some(SPS | PPS) => vec![payload],
        Some(STAP_A) => stap_a_units(payload)
            .filter(|n| matches!(n.first().map(|b| b & 0x1f), Some(SPS | PPS)))
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether the payload is an aggregation (STAP-A) or a fragment (FU-A): only allowed with
/// `packetization-mode=1` (RFC 6184 §6.3), so a DESCRIBE must say so.
pub fn needs_non_interleaved_mode(payload: &[u8]) -> bool {
    matches!(payload.first().map(|b| b & 0x1f), Some(STAP_A | FU_A))
}

/// An SPS or PPS's kind (7 or 8) and id (`seq_parameter_set_id`, H.264 §7.3.2.1.1, or
/// `pic_parameter_set_id`, §7.3.2.2); `None` for other NAL units or a truncated one. An encoder
/// may send several PPS with different ids, and each is needed.
pub fn parameter_set_key(nal: &[u8]) -> Option<(u8, u32)> {
    let kind = nal.first()? & 0x1f;
    let mut bits = Bits::new(nal.get(1..)?);
    match kind {
        SPS => {
            // profile_idc, constraint flags, level_idc.
            bits.skip(24)?;
            Some((SPS, bits.ue()?))
        }
        PPS => Some((PPS, bits.ue()?)),
        _ => None,
    }
}

/// Whether a NAL unit is an SPS.
pub fn is_sps(nal: &[u8]) -> bool {
    nal.first().is_some_and(|b| b & 0x1f == SPS)
}

/// The NAL units aggregated in a STAP-A payload; stops at the first truncated one.
fn stap_a_units(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = payload.get(1..).unwrap_or_default();
    std::iter::from_fn(move || {
        let [hi, lo, ..] = *rest else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let unit = rest.get(2..2 + len)?;
        rest = &rest[2 + len..];
        Some(unit)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_keyframe_starts() {
        assert!(starts_keyframe(&[0x67, 1, 2])); // SPS
        assert!(starts_keyframe(&[0x65, 1, 2])); // IDR
        assert!(!starts_keyframe(&[0x41, 1, 2])); // non-IDR slice
        assert!(!starts_keyframe(&[0x68, 1])); // PPS alone does not start one
        assert!(starts_keyframe(&[0x7c, 0x85, 1])); // FU-A start of IDR
        assert!(!starts_keyframe(&[0x7c, 0x05, 1])); // FU-A middle of IDR
        assert!(!starts_keyframe(&[0x7c, 0x81, 1])); // FU-A start of non-IDR
                                                     // STAP-A with SPS and PPS.
        let stap = [0x78, 0, 2, 0x67, 9, 0, 2, 0x68, 8];
        assert!(starts_keyframe(&stap));
        assert_eq!(parameter_sets(&stap), vec![&[0x67, 9][..], &[0x68, 8][..]]);
        assert!(!starts_keyframe(&[]));
    }

    #[test]
    fn parameter_set_ids() {
        // SPS: profile 66, constraints, level 30, then ue(v) id 1 = 010.
        assert_eq!(
            parameter_set_key(&[0x67, 66, 0, 30, 0b0100_0000]),
            Some((SPS, 1))
        );
        // PPS: ue(v) id 0 = 1, id 2 = 011.
        assert_eq!(parameter_set_key(&[0x68, 0b1000_0000]), Some((PPS, 0)));
        assert_eq!(parameter_set_key(&[0x68, 0b0110_0000]), Some((PPS, 2)));
        assert_eq!(parameter_set_key(&[0x68]), None);
        assert_eq!(parameter_set_key(&[0x65, 0x80]), None);
        assert!(needs_non_interleaved_mode(&[0x7c, 0x85]));
        assert!(needs_non_interleaved_mode(&[0x78, 0, 1, 0x67]));
        assert!(!needs_non_interleaved_mode(&[0x65, 0x80]));
    }

    proptest! {
        #[test]
        fn never_panics(p in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = starts_keyframe(&p);
            let _ = parameter_sets(&p);
            let _ = parameter_set_key(&p);
        }
    }
}
