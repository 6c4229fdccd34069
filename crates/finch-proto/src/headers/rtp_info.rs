//! The RTP-Info header (RFC 2326 §12.33), sent in PLAY responses.
//!
//! It tells a player the sequence number and RTP timestamp of the first packet it will get on
//! each track. Players check it: retina, for one, treats an earlier packet on TCP as fatal, so the
//! values must be those of the first packet the reader's queue really holds.

/// One track's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpInfo {
    /// The track's absolute control URL.
    pub url: String,
    /// The first packet's sequence number.
    pub seq: u16,
    /// The first packet's RTP timestamp.
    pub rtptime: u32,
}

/// The header value for several tracks (`url=...;seq=...;rtptime=...,url=...`).
pub fn format_rtp_info(entries: &[RtpInfo]) -> String {
    entries
        .iter()
        .map(|e| format!("url={};seq={};rtptime={}", e.url, e.seq, e.rtptime))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_entries() {
        let v = format_rtp_info(&[
            RtpInfo {
                url: "rtsp://h/a/trackID=0".into(),
                seq: 1,
                rtptime: 2,
            },
            RtpInfo {
                url: "rtsp://h/a/trackID=1".into(),
                seq: 3,
                rtptime: 4,
            },
        ]);
        assert_eq!(
            v,
            "url=rtsp://h/a/trackID=0;seq=1;rtptime=2,url=rtsp://h/a/trackID=1;seq=3;rtptime=4"
        );
    }
}
