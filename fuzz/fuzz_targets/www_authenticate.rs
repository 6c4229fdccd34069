//! Challenges a client reads (WWW-Authenticate) never panic, and what the server writes reads
//! back as written.
#![no_main]
use finch_proto::auth::header::{digest_challenge, parse_challenge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_challenge(text);
    let _ = parse_challenge(&format!("Digest {text}"));
    // A nonce of any printable characters but quotes and backslashes survives a round trip.
    if text.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\') {
        let c = parse_challenge(&digest_challenge("finch", text, "MD5", true, false))
            .expect("our own challenge parses");
        assert_eq!(c.nonce.as_deref(), Some(text));
    }
});
