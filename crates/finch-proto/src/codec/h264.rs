//! H.264 RTP payloads (RFC 6184 §5.6–§5.8): single NAL units, STAP-A and FU-A.

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

    proptest! {
        #[test]
        fn never_panics(p in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = starts_keyframe(&p);
            let _ = parameter_sets(&p);
        }
    }
}
