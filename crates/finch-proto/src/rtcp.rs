//! A view of RTCP compound packets (RFC 3550 §6).
//!
//! The relay forwards a publisher's sender reports to its readers (players need them for
//! audio/video sync) and treats a reader's receiver reports as a sign of life. It only needs to
//! check that a datagram is well-formed RTCP and to know which packet types it holds.

use thiserror::Error;

/// Sender report.
pub const SENDER_REPORT: u8 = 200;
/// Receiver report.
pub const RECEIVER_REPORT: u8 = 201;
/// BYE.
pub const BYE: u8 = 203;

/// Why bytes are not an RTCP compound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtcpError {
    /// A packet's length runs past the end, or the datagram is too short.
    #[error("RTCP packet truncated")]
    Truncated,
    /// The version field is not 2.
    #[error("RTCP version is not 2")]
    BadVersion,
}

/// The first sender report's wallclock (NTP, in seconds) and the RTP time it names (RFC 3550
/// §6.4.1): what puts a source's tracks on one clock.
pub fn sender_report(mut data: &[u8]) -> Option<(f64, u32)> {
    while let [b0, pt, l0, l1, ..] = *data {
        let len = 4 * (usize::from(u16::from_be_bytes([l0, l1])) + 1);
        if b0 >> 6 != 2 || len > data.len() {
            return None;
        }
        if pt == SENDER_REPORT && len >= 20 {
            let word = |at: usize| {
                u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
            };
            let ntp = f64::from(word(8)) + f64::from(word(12)) / 4_294_967_296.0;
            return Some((ntp, word(16)));
        }
        data = &data[len..];
    }
    None
}

/// The packet types in a compound packet, in order.
pub fn packet_types(mut data: &[u8]) -> Result<Vec<u8>, RtcpError> {
    let mut types = Vec::new();
    if data.is_empty() {
        return Err(RtcpError::Truncated);
    }
    while !data.is_empty() {
        let [b0, pt, l0, l1, ..] = *data else {
            return Err(RtcpError::Truncated);
        };
        if b0 >> 6 != 2 {
            return Err(RtcpError::BadVersion);
        }
        let len = 4 * (usize::from(u16::from_be_bytes([l0, l1])) + 1);
        if len > data.len() {
            return Err(RtcpError::Truncated);
        }
        types.push(pt);
        data = &data[len..];
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sender_report_names_its_wallclock_and_rtp_time() {
        // SR: V=2, PT=200, length 6 (28 bytes), SSRC, NTP 0x00000010.80000000, RTP 90000.
        let mut p = vec![0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0x10, 0x80, 0, 0, 0];
        p.extend_from_slice(&90000u32.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        assert_eq!(sender_report(&p), Some((16.5, 90000)));
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert_eq!(sender_report(&rr), None);
        assert_eq!(sender_report(&p[..10]), None);
    }

    #[test]
    fn reads_a_compound_packet() {
        // RR with no report blocks (length 1 = 8 bytes), then a BYE (length 1).
        let p = [0x80, 201, 0, 1, 0, 0, 0, 1, 0x81, 203, 0, 1, 0, 0, 0, 1];
        assert_eq!(packet_types(&p), Ok(vec![RECEIVER_REPORT, BYE]));
        assert_eq!(packet_types(&p[..6]), Err(RtcpError::Truncated));
        assert_eq!(packet_types(&[0x40, 200, 0, 0]), Err(RtcpError::BadVersion));
    }

    proptest! {
        #[test]
        fn never_panics(data in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = packet_types(&data);
        }
    }
}
