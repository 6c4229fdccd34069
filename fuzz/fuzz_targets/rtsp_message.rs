//! Parse any bytes as an RTSP stream; every message parsed must write back to bytes that parse
//! to the same message (the round-trip oracle), and nothing may panic.
#![no_main]
use bytes::BytesMut;
use finch_proto::rtsp::{parse_all, Item, Limits, Parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_head_bytes: 2048,
        ..Limits::default()
    };
    let (items, _) = parse_all(&mut Parser::new(limits), data);
    for item in items {
        let mut out = BytesMut::new();
        match &item {
            Item::Request(r) => r.write(&mut out),
            Item::Response(r) => r.write(&mut out),
            Item::Interleaved { .. } => continue,
        }
        let again = Parser::new(Limits {
            max_head_bytes: 1 << 20,
            max_uri_bytes: 1 << 20,
            ..limits
        })
        .parse(&mut out)
        .expect("a written message parses");
        assert_eq!(again.as_ref(), Some(&item));
    }
});
