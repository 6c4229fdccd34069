//! A nonce is accepted only if it was minted under the secret: any other string is Invalid,
//! never Fresh; and the nc table stays within its bound whatever it is fed.
#![no_main]
use finch_proto::auth::{NonceCheck, NonceCounts, Nonces};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let n = Nonces::new(b"fuzzing secret", 300);
    let minted = n.mint(1_000_000, 42);
    if text != minted {
        assert_ne!(n.check(text, 1_000_000), NonceCheck::Fresh, "forged: {text:?}");
    }
    let mut counts = NonceCounts::new(8);
    for (i, part) in text.split(',').enumerate() {
        let _ = counts.accept(part, &format!("{:08x}", i + 1));
        let _ = counts.accept(&minted, part);
    }
    assert!(counts.len() <= 8);
});
