//! H.265 RTP payloads (RFC 7798 §4.4): single NAL units, aggregation packets and fragmentation units.

use super::bits::Bits;

const VPS: u8 = 32;
const SPS: u8 = 33;
const PPS: u8 = 34;
const AP: u8 = 48;
const FU: u8 = 49;

/// IRAP pictures (BLA, IDR, CRA: types 16–21) start a keyframe.
fn is_key(t: u8) -> bool {
    (16..=21).contains(&t) || t == VPS || t == SPS
}

fn nal_type(b0: u8) -> u8 {
    (b0 >> 1) & 0x3f
}

/// Whether the payload holds a VPS/SPS or the first fragment of an IRAP slice.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else {
        return false;
    };
    match nal_type(b0) {
        AP => {
            let mut rest = payload.get(2..).unwrap_or_default();
            while let [hi, lo, ..] = *rest {
                let len = usize::from(u16::from_be_bytes([hi, lo]));
                let Some(unit) = rest.get(2..2 + len) else {
                    return false;
                };
                if unit.first().is_some_and(|b| is_key(nal_type(*b))) {
                    return true;
                }
                rest = &rest[2 + len..];
            }
            false
        }
        FU => payload
            .get(2)
            .is_some_and(|fu| fu & 0x80 != 0 && is_key(fu & 0x3f)),
        t => is_key(t),
    }
}

/// VPS, SPS and PPS NAL units sent in-band in this payload (single NAL or AP).
pub fn parameter_sets(payload: &[u8]) -> Vec<&[u8]> {
    let is_ps = |n: &[u8]| {
        n.first()
            .is_some_and(|b| matches!(nal_type(*b), VPS | SPS | PPS))
    };
    match payload.first().map(|b| nal_type(*b)) {
        Some(VPS | SPS | PPS) => vec![payload],
        Some(AP) => {
            let mut out = Vec::new();
            let mut rest = payload.get(2..).unwrap_or_default();
            while let [hi, lo, ..] = *rest {
                let len = usize::from(u16::from_be_bytes([hi, lo]));
                let Some(unit) = rest.get(2..2 + len) else {
                    break;
                };
                if is_ps(unit) {
                    out.push(unit);
                }
                rest = &rest[2 + len..];
            }
            out
        }
        _ => Vec::new(),
    }
}

/// A VPS, SPS or PPS's kind (32, 33, 34) and id (H.265 §7.3.2.1–§7.3.2.3); `None` for other NAL
/// units or one too short to read.
pub fn parameter_set_key(nal: &[u8]) -> Option<(u8, u32)> {
    let kind = nal_type(*nal.first()?);
    let mut bits = Bits::new(nal.get(2..)?);
    match kind {
        VPS => Some((VPS, bits.bits(4)?)),
        SPS => {
            bits.skip(4)?; // sps_video_parameter_set_id
            let sub_layers = bits.bits(3)?;
            bits.skip(1)?; // sps_temporal_id_nesting_flag
            skip_profile_tier_level(&mut bits, sub_layers)?;
            Some((SPS, bits.ue()?))
        }
        PPS => Some((PPS, bits.ue()?)),
        _ => None,
    }
}

/// `profile_tier_level(1, max_sub_layers_minus1)`, H.265 §7.3.3.
fn skip_profile_tier_level(bits: &mut Bits<'_>, sub_layers: u32) -> Option<()> {
    // The general profile (88 bits) and general_level_idc.
    bits.skip(96)?;
    let mut present = Vec::with_capacity(sub_layers as usize);
    for _ in 0..sub_layers {
        present.push((bits.bit()?, bits.bit()?));
    }
    if sub_layers > 0 {
        bits.skip(2 * (8 - sub_layers))?;
    }
    for (profile, level) in present {
        if profile == 1 {
            bits.skip(88)?;
        }
        if level == 1 {
            bits.skip(8)?;
        }
    }
    Some(())
}

/// The SDP fmtp name of a parameter set NAL unit (RFC 7798 §7.1): `sprop-vps`, `sprop-sps`,
/// `sprop-pps`.
pub fn sprop_name(nal: &[u8]) -> Option<&'static str> {
    match nal.first().map(|b| nal_type(*b)) {
        Some(VPS) => Some("sprop-vps"),
        Some(SPS) => Some("sprop-sps"),
        Some(PPS) => Some("sprop-pps"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keyframe_starts() {
        assert!(starts_keyframe(&[VPS << 1, 1])); // VPS
        assert!(starts_keyframe(&[19 << 1, 1])); // IDR_W_RADL
        assert!(!starts_keyframe(&[1 << 1, 1])); // TRAIL_R
        assert!(starts_keyframe(&[FU << 1, 1, 0x80 | 19])); // FU start of IDR
        assert!(!starts_keyframe(&[FU << 1, 1, 19])); // FU middle
        assert!(starts_keyframe(&[AP << 1, 1, 0, 2, VPS << 1, 1]));
        assert!(!starts_keyframe(&[AP << 1, 1, 0, 9, VPS << 1]));
    }

    #[test]
    fn finds_parameter_sets() {
        let ap = [
            AP << 1,
            1,
            0,
            2,
            VPS << 1,
            1,
            0,
            2,
            PPS << 1,
            1,
            0,
            2,
            1 << 1,
            1,
        ];
        let sets = parameter_sets(&ap);
        assert_eq!(sets, vec![&[VPS << 1, 1][..], &[PPS << 1, 1][..]]);
        assert_eq!(sprop_name(sets[0]), Some("sprop-vps"));
        assert_eq!(sprop_name(sets[1]), Some("sprop-pps"));
        assert_eq!(parameter_sets(&[SPS << 1, 1]).len(), 1);
        assert!(parameter_sets(&[19 << 1, 1]).is_empty());
    }

    #[test]
    fn parameter_set_ids() {
        assert_eq!(parameter_set_key(&[VPS << 1, 1, 0x3c]), Some((VPS, 3)));
        assert_eq!(
            parameter_set_key(&[PPS << 1, 1, 0b0100_0000]),
            Some((PPS, 1))
        );
        // SPS with no sub-layers: 4+3+1 bits, 96 bits of profile/level, then ue(v) id 2 = 011.
        let mut sps = vec![SPS << 1, 1, 0x01];
        sps.extend_from_slice(&[0; 12]);
        sps.push(0b0110_0000);
        assert_eq!(parameter_set_key(&sps), Some((SPS, 2)));
        assert_eq!(parameter_set_key(&[SPS << 1, 1, 8]), None);
        assert_eq!(parameter_set_key(&[19 << 1, 1, 0]), None);
    }
}
