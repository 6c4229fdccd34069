//! Any Transport header that parses writes back to one that parses to the same specs.
#![no_main]
use finch_proto::headers::transport::parse_transport;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(specs) = parse_transport(text) {
        for s in specs {
            // Parameters Finch does not keep are dropped on writing, so compare what it keeps.
            let again = parse_transport(&s.to_string()).expect("a written spec parses");
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].lower, s.lower);
            assert_eq!(again[0].client_port, s.client_port);
            assert_eq!(again[0].interleaved, s.interleaved);
            assert_eq!(again[0].mode, s.mode);
        }
    }
});
