//! The Range header (RFC 2326 §12.29), as far as a live server needs it.
//!
//! A live stream has no seekable timeline: any requested range (`npt=0-`, `npt=now-`, a clock
//! range) plays from now, and PLAY answers `npt=0.000-` as live servers do.

/// What PLAY answers for a live stream.
pub const LIVE_RANGE: &str = "npt=0.000-";

/// Whether a Range value names a unit this server understands (`npt`, `clock`, `smpte`).
pub fn is_supported(value: &str) -> bool {
    let unit = value.trim().split('=').next().unwrap_or_default().trim();
    matches!(
        unit,
        "npt" | "clock" | "smpte" | "smpte-30-drop" | "smpte-25"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn knows_the_units() {
        assert!(super::is_supported("npt=0-"));
        assert!(super::is_supported("npt=now-"));
        assert!(super::is_supported("clock=19961108T142300Z-"));
        assert!(!super::is_supported("bytes=0-"));
    }
}
