//! RTP and RTCP views never panic, and the payload range stays inside the packet.
#![no_main]
use finch_proto::{rtcp, rtp::RtpHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = RtpHeader::parse(data) {
        assert!(h.payload.start <= h.payload.end && h.payload.end <= data.len());
    }
    let _ = rtcp::packet_types(data);
});
