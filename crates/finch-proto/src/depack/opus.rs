//! Opus in RTP (RFC 7587): each payload is one Opus packet, timed by a 48 kHz clock. What an
//! MP4 sample needs beyond the bytes is its duration, which the packet's TOC byte gives
//! (RFC 6716 §3.1).

/// Samples at 48 kHz in one Opus packet; `None` if it is not a valid packet.
pub fn opus_duration(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes in 48 kHz samples: SILK 10/20/40/60 ms, hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let total = frame * frames;
    // At most 120 ms in one packet.
    (frames > 0 && total <= 5760).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_toc_byte() {
        // CELT 20 ms (config 31), one frame: libopus's default.
        assert_eq!(opus_duration(&[31 << 3, 0xaa]), Some(960));
        // SILK 60 ms (config 3), two frames: 120 ms.
        assert_eq!(opus_duration(&[(3 << 3) | 1]), Some(5760));
        // Code 3 with 3 frames of 2.5 ms (config 16).
        assert_eq!(opus_duration(&[(16 << 3) | 3, 3]), Some(360));
        // Code 3 with no frame count, or too long: not a packet.
        assert_eq!(opus_duration(&[(16 << 3) | 3]), None);
        assert_eq!(opus_duration(&[(3 << 3) | 3, 10]), None);
        assert_eq!(opus_duration(&[]), None);
    }
}
