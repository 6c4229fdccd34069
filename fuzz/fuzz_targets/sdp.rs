//! Any SDP that parses writes back to text that parses to the same description.
#![no_main]
use finch_proto::sdp::Sdp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sdp) = Sdp::parse(data) {
        let again = Sdp::parse(sdp.write().as_bytes()).expect("written SDP parses");
        assert_eq!(again, sdp);
        for m in &sdp.media {
            let _ = (m.rtpmap(), m.fmtp(), m.control(), m.payload_type());
        }
        let _ = sdp.with_server_controls().write();
    }
});
