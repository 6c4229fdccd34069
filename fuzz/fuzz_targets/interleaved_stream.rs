//! Feeding a stream in two pieces, split anywhere, gives the same items as feeding it whole.
#![no_main]
use bytes::BytesMut;
use finch_proto::rtsp::{parse_all, Item, Limits, Parser};
use libfuzzer_sys::fuzz_target;

/// Takes every complete item out of `buf`; `None` on an unrecoverable error.
fn drain(p: &mut Parser, buf: &mut BytesMut, items: &mut Vec<Item>) -> Option<()> {
    loop {
        match p.parse(buf) {
            Ok(Some(i)) => items.push(i),
            Ok(None) => return Some(()),
            Err(e) if e.recoverable => continue,
            Err(_) => return None,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let (whole, err) = parse_all(&mut Parser::new(Limits::default()), stream);
    if err.is_some() {
        return;
    }
    let split = usize::from(split).min(stream.len());
    let mut p = Parser::new(Limits::default());
    let mut buf = BytesMut::from(&stream[..split]);
    let mut items = Vec::new();
    if drain(&mut p, &mut buf, &mut items).is_none() {
        return;
    }
    buf.extend_from_slice(&stream[split..]);
    if drain(&mut p, &mut buf, &mut items).is_none() {
        return;
    }
    assert_eq!(items, whole);
});
