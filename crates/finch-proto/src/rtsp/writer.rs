//! Writing RTSP messages and interleaved frame headers.

use super::message::{Request, Response};
use bytes::{BufMut, BytesMut};

impl Request {
    /// Appends the request to `out` exactly as it is (no header is added).
    pub fn write(&self, out: &mut BytesMut) {
        out.reserve(64 + self.uri.len() + self.body.len());
        out.put_slice(self.method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.uri.as_bytes());
        out.put_slice(b" RTSP/1.0\r\n");
        write_headers_and_body(self.headers.iter(), &self.body, out);
    }
}

impl Response {
    /// Appends the response to `out` exactly as it is (no header is added).
    pub fn write(&self, out: &mut BytesMut) {
        out.reserve(64 + self.body.len());
        out.put_slice(b"RTSP/1.0 ");
        out.put_slice(self.status.to_string().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.reason.as_bytes());
        out.put_slice(b"\r\n");
        write_headers_and_body(self.headers.iter(), &self.body, out);
    }
}

fn write_headers_and_body<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
    body: &[u8],
    out: &mut BytesMut,
) {
    for (name, value) in headers {
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
}

/// The 4-byte header of an interleaved frame (RFC 2326 §10.12), or `None` if the payload is too
/// long for the 16-bit length field.
pub fn write_interleaved_header(channel: u8, len: usize) -> Option<[u8; 4]> {
    let len = u16::try_from(len).ok()?;
    let [hi, lo] = len.to_be_bytes();
    Some([b'$', channel, hi, lo])
}

#[cfg(test)]
mod tests {
    use super::super::message::{Headers, Item, Method};
    use super::super::parser::{Limits, Parser};
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z][A-Za-z0-9_-]{0,15}"
    }

    fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec((token(), "[ -~]{0,40}"), 0..8).prop_map(|v| {
            v.into_iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("content-length"))
                .map(|(n, v)| (n, v.trim().to_owned()))
                .collect()
        })
    }

    fn build_headers(h: Vec<(String, String)>, body: &[u8]) -> Headers {
        let mut headers = Headers::new();
        for (n, v) in h {
            headers.append(n, v);
        }
        if !body.is_empty() {
            headers.append("Content-Length", body.len().to_string());
        }
        headers
    }

    proptest! {
        #[test]
        fn request_round_trips(
            method in token(),
            uri in "rtsp://[a-z0-9.:]{1,20}/[!-~]{0,40}",
            h in headers(),
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let req = Request {
                method: Method::from_token(&method),
                uri,
                headers: build_headers(h, &body),
                body: Bytes::from(body),
            };
            let mut out = BytesMut::new();
            req.write(&mut out);
            let mut p = Parser::new(Limits::default());
            let parsed = p.parse(&mut out).unwrap();
            prop_assert_eq!(parsed, Some(Item::Request(req)));
            prop_assert!(out.is_empty());
        }

        #[test]
        fn response_round_trips(
            status in 100u16..1000,
            reason in "[A-Za-z][ -~]{0,30}",
            h in headers(),
            body in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let resp = Response {
                status,
                reason: reason.trim().to_owned(),
                headers: build_headers(h, &body),
                body: Bytes::from(body),
            };
            let mut out = BytesMut::new();
            resp.write(&mut out);
            let parsed = Parser::new(Limits::default()).parse(&mut out).unwrap();
            prop_assert_eq!(parsed, Some(Item::Response(resp)));
        }

        #[test]
        fn never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut p = Parser::new(Limits { max_head_bytes: 256, ..Limits::default() });
            let _ = super::super::parser::parse_all(&mut p, &bytes);
        }

        #[test]
        fn interleaved_round_trips(channel: u8, payload in prop::collection::vec(any::<u8>(), 0..2000)) {
            let mut out = BytesMut::new();
            out.extend_from_slice(&write_interleaved_header(channel, payload.len()).unwrap());
            out.extend_from_slice(&payload);
            let parsed = Parser::new(Limits::default()).parse(&mut out).unwrap();
            prop_assert_eq!(parsed, Some(Item::Interleaved { channel, payload: Bytes::from(payload) }));
        }
    }
}
