//! What an MP4 sample entry needs from a sequence parameter set: the picture size and, for
//! H.265's `hvcC`, the profile, tier and level fields (H.264 §7.3.2.1.1, H.265 §7.3.2.2).

use super::bits::Bits;

/// An H.264 SPS's picture size and profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Sps {
    /// Displayed width, cropping applied.
    pub width: u32,
    /// Displayed height.
    pub height: u32,
    /// `profile_idc`, the constraint flags and `level_idc` (avcC's three bytes).
    pub profile: [u8; 3],
}

/// An H.265 SPS's picture size and what `hvcC` repeats of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct H265Sps {
    /// Displayed width, conformance window applied.
    pub width: u32,
    /// Displayed height.
    pub height: u32,
    /// `general_profile_space`.
    pub profile_space: u8,
    /// `general_tier_flag`.
    pub tier: bool,
    /// `general_profile_idc`.
    pub profile_idc: u8,
    /// `general_profile_compatibility_flags`.
    pub compatibility: [u8; 4],
    /// The 48 constraint-indicator bits.
    pub constraints: [u8; 6],
    /// `general_level_idc`.
    pub level_idc: u8,
    /// `chroma_format_idc`.
    pub chroma_format_idc: u8,
    /// Luma bit depth minus 8.
    pub bit_depth_luma_minus8: u8,
    /// Chroma bit depth minus 8.
    pub bit_depth_chroma_minus8: u8,
    /// `sps_max_sub_layers_minus1 + 1`.
    pub temporal_layers: u8,
    /// `sps_temporal_id_nesting_flag`.
    pub temporal_id_nested: bool,
}

fn se(b: &mut Bits<'_>) -> Option<i32> {
    let k = b.ue()?;
    Some(if k % 2 == 1 {
        k.div_ceil(2) as i32
    } else {
        -((k / 2) as i32)
    })
}

/// Reads an H.264 SPS NAL unit (header included).
pub fn h264_sps(nal: &[u8]) -> Option<H264Sps> {
    let profile = [*nal.get(1)?, *nal.get(2)?, *nal.get(3)?];
    let mut b = Bits::new(nal.get(4..)?);
    b.ue()?; // seq_parameter_set_id
    let mut chroma = 1;
    if matches!(
        profile[0],
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma = b.ue()?;
        if chroma == 3 {
            b.bit()?;
        }
        b.ue()?; // bit_depth_luma_minus8
        b.ue()?; // bit_depth_chroma_minus8
        b.bit()?; // qpprime_y_zero_transform_bypass_flag
        if b.bit()? == 1 {
            for i in 0..if chroma == 3 { 12 } else { 8 } {
                if b.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            next = (last + se(&mut b)? + 256) % 256;
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    b.ue()?; // log2_max_frame_num_minus4
    match b.ue()? {
        0 => {
            b.ue()?;
        }
        1 => {
            b.bit()?;
            se(&mut b)?;
            se(&mut b)?;
            let n = b.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                se(&mut b)?;
            }
        }
        _ => {}
    }
    b.ue()?; // max_num_ref_frames
    b.bit()?; // gaps_in_frame_num_value_allowed_flag

    // A hostile SPS may hold any number: every step is checked.
    let w_mbs = b.ue()?.checked_add(1)?;
    let h_units = b.ue()?.checked_add(1)?;
    let frame_mbs_only = b.bit()?;
    if frame_mbs_only == 0 {
        b.bit()?;
    }
    b.bit()?; // direct_8x8_inference_flag
    let (mut l, mut r, mut t, mut bo) = (0, 0, 0, 0);
    if b.bit()? == 1 {
        l = b.ue()?;
        r = b.ue()?;
        t = b.ue()?;
        bo = b.ue()?;
    }
    let (cx, cy) = match chroma {
        0 => (1, 2 - frame_mbs_only),
        1 => (2, 2 * (2 - frame_mbs_only)),
        2 => (2, 2 - frame_mbs_only),
        _ => (1, 2 - frame_mbs_only),
    };
    let crop = |unit: u32, a: u32, b: u32| unit.checked_mul(a.checked_add(b)?);
    let width = w_mbs.checked_mul(16)?.checked_sub(crop(cx, l, r)?)?;
    let height = ((2 - frame_mbs_only) * 16)
        .checked_mul(h_units)?
        .checked_sub(crop(cy, t, bo)?)?;
    Some(H264Sps {
        width,
        height,
        profile,
    })
}

/// Reads an H.265 SPS NAL unit (header included).
pub fn h265_sps(nal: &[u8]) -> Option<H265Sps> {
    let mut b = Bits::new(nal.get(2..)?);
    let mut s = H265Sps::default();
    b.bits(4)?; // sps_video_parameter_set_id
    let sub_layers = b.bits(3)?;
    s.temporal_layers = sub_layers as u8 + 1;
    s.temporal_id_nested = b.bit()? == 1;
    s.profile_space = b.bits(2)? as u8;
    s.tier = b.bit()? == 1;
    s.profile_idc = b.bits(5)? as u8;
    for c in &mut s.compatibility {
        *c = b.bits(8)? as u8;
    }
    for c in &mut s.constraints {
        *c = b.bits(8)? as u8;
    }
    s.level_idc = b.bits(8)? as u8;
    let mut present = Vec::new();
    for _ in 0..sub_layers {
        present.push((b.bit()? == 1, b.bit()? == 1));
    }
    if sub_layers > 0 {
        for _ in sub_layers..8 {
            b.bits(2)?;
        }
    }
    for (profile, level) in present {
        if profile {
            b.skip(88)?;
        }
        if level {
            b.skip(8)?;
        }
    }
    b.ue()?; // sps_seq_parameter_set_id
    let chroma = b.ue()?;
    if chroma > 3 {
        return None;
    }
    s.chroma_format_idc = chroma as u8;
    if chroma == 3 {
        b.bit()?;
    }
    let mut width = b.ue()?;
    let mut height = b.ue()?;
    if b.bit()? == 1 {
        let (sx, sy) = match chroma {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        let (l, r, t, bo) = (b.ue()?, b.ue()?, b.ue()?, b.ue()?);
        width = width.checked_sub(sx * l.checked_add(r)?.min(u32::MAX / 2))?;
        height = height.checked_sub(sy * t.checked_add(bo)?.min(u32::MAX / 2))?;
    }
    s.width = width;
    s.height = height;
    s.bit_depth_luma_minus8 = b.ue()?.min(8) as u8;
    s.bit_depth_chroma_minus8 = b.ue()?.min(8) as u8;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_sps_of_ffmpeg_320x240_and_1280x720() {
        // libx264 ultrafast (Constrained Baseline), 320x240: ffmpeg's own output.
        let sps = [
            0x67, 0x42, 0xc0, 0x0d, 0xda, 0x05, 0x07, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00,
            0x40, 0x00, 0x00, 0x0c, 0x83, 0xc5, 0x0a, 0xa8,
        ];
        let s = h264_sps(&sps).unwrap();
        assert_eq!((s.width, s.height), (320, 240));
        assert_eq!(s.profile, [0x42, 0xc0, 0x0d]);
        // mp4-atom's test vector: High 3.1, 1280x720.
        let sps = [
            103, 100, 0, 31, 172, 217, 128, 80, 5, 187, 1, 106, 2, 2, 2, 128, 0, 0, 3, 0, 128, 0,
            0, 30, 7, 140, 24, 205,
        ];
        let s = h264_sps(&sps).unwrap();
        assert_eq!((s.width, s.height), (1280, 720));
    }

    #[test]
    fn h265_sps_of_x265_1280x720() {
        // libx265 ultrafast, Main, level 3.1, 1280x720: ffmpeg's own output.
        let sps = [
            0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x03, 0x00, 0x5d, 0xa0, 0x02, 0x80, 0x80, 0x2d, 0x16, 0x59, 0x59, 0x52, 0x93,
            0x0b, 0xc0, 0x5a, 0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x32,
            0x10,
        ];
        let s = h265_sps(&sps).unwrap();
        assert_eq!((s.width, s.height), (1280, 720));
        assert_eq!(s.profile_idc, 1);
        assert_eq!(s.level_idc, 93);
        assert_eq!(s.compatibility, [0x60, 0, 0, 0]);
        assert_eq!(s.constraints[0], 0x90);
        assert_eq!(s.chroma_format_idc, 1);
    }

    #[test]
    fn huge_numbers_in_a_hostile_sps_are_refused_not_overflowed() {
        // Found by fuzz/depack: a picture width that overflowed the multiplication.
        let sps = [
            0x65, 0xf8, 0x00, 0x01, 0x87, 0x01, 0x1c, 0x04, 0x00, 0x00, 0x00, 0x00, 0x10, 0x09,
            0x00, 0x00, 0xfb,
        ];
        if let Some(s) = h264_sps(&sps) {
            assert!(s.width > 0 && s.height > 0);
        }
        let _ = h265_sps(&sps);
    }

    #[test]
    fn truncated_parameter_sets_are_refused_not_panicked_on() {
        let sps = [
            103, 100, 0, 31, 172, 217, 128, 80, 5, 187, 1, 106, 2, 2, 2, 128, 0, 0, 3, 0, 128, 0,
            0, 30, 7, 140, 24, 205,
        ];
        for n in 0..sps.len() - 3 {
            let _ = h264_sps(&sps[..n]);
            let _ = h265_sps(&sps[..n]);
        }
    }
}
