//! Keyframe detection and parameter-set extraction never panic, and every parameter set found
//! lies inside the payload.
#![no_main]
use finch_proto::codec::{h264, h265};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = h264::starts_keyframe(data);
    let _ = h265::starts_keyframe(data);
    let range = data.as_ptr_range();
    for set in h264::parameter_sets(data)
        .into_iter()
        .chain(h265::parameter_sets(data))
    {
        assert!(range.start <= set.as_ptr() && set.as_ptr_range().end <= range.end);
    }
});
