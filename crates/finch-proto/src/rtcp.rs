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
