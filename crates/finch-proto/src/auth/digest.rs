//! Checking a Digest response (RFC 2617 §3.2.2, RFC 7616 §3.4.1), with MD5 or SHA-256, with
//! `qop=auth` or without qop (RFC 2069, which ffmpeg, VLC and many cameras use when offered no
//! qop). The server holds either the password or HA1 = H(user:realm:pass).
//!
//! Comparisons of secrets and digests are constant-time.

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// A Digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5 (RFC 2617), the default when `algorithm` is absent.
    Md5,
    /// SHA-256 (RFC 7616).
    Sha256,
}

impl Algorithm {
    /// From the `algorithm` parameter; absent means MD5. `-sess` variants are not offered.
    pub fn from_param(p: Option<&str>) -> Option<Algorithm> {
        match p.map(|s| s.trim_matches('"')) {
            None => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("MD5") => Some(Algorithm::Md5),
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// The name in a challenge.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// H(data) as lower-case hex.
    pub fn hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => to_hex(&Md5::digest(data)),
            Algorithm::Sha256 => to_hex(&Sha256::digest(data)),
        }
    }

    /// HA1 = H(user:realm:pass), as bytes.
    pub fn ha1(self, user: &str, realm: &str, pass: &str) -> Vec<u8> {
        let data = format!("{user}:{realm}:{pass}");
        match self {
            Algorithm::Md5 => Md5::digest(data.as_bytes()).to_vec(),
            Algorithm::Sha256 => Sha256::digest(data.as_bytes()).to_vec(),
        }
    }
}

/// SHA-256 of `data` (a `sha256:` Basic secret is stored as this).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lower-case hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a response is checked against.
pub struct Expected<'a> {
    /// The algorithm the client used.
    pub algorithm: Algorithm,
    /// HA1 for the user (computed from the password, or stored).
    pub ha1: &'a [u8],
    /// The request method (`DESCRIBE`).
    pub method: &'a str,
}

/// The response a client with this HA1 should have sent.
pub fn expected_response(
    e: &Expected<'_>,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str, &str)>,
) -> String {
    let ha1 = to_hex(e.ha1);
    let ha2 = e.algorithm.hex(format!("{}:{uri}", e.method).as_bytes());
    let data = match qop {
        // qop=auth: H(HA1:nonce:nc:cnonce:qop:HA2).
        Some((nc, cnonce, qop)) => format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"),
        // RFC 2069: H(HA1:nonce:HA2).
        None => format!("{ha1}:{nonce}:{ha2}"),
    };
    e.algorithm.hex(data.as_bytes())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_md5_with_qop() {
        let ha1 = Algorithm::Md5.ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
        let e = Expected {
            algorithm: Algorithm::Md5,
            ha1: &ha1,
            method: "GET",
        };
        let r = expected_response(
            &e,
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some(("00000001", "0a4f113b", "auth")),
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc_7616_md5_and_sha256() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        for (alg, want) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let ha1 = alg.ha1("Mufasa", "http-auth@example.org", "Circle of Life");
            let e = Expected {
                algorithm: alg,
                ha1: &ha1,
                method: "GET",
            };
            let r = expected_response(
                &e,
                "/dir/index.html",
                nonce,
                Some(("00000001", cnonce, "auth")),
            );
            assert_eq!(r, want, "{alg:?}");
        }
    }

    #[test]
    fn rfc_2069_without_qop() {
        // RFC 2069 §2.4's example: Mufasa / CircleOfLife, realm testrealm@host.com.
        let ha1 = Algorithm::Md5.ha1("Mufasa", "testrealm@host.com", "CircleOfLife");
        let e = Expected {
            algorithm: Algorithm::Md5,
            ha1: &ha1,
            method: "GET",
        };
        let r = expected_response(
            &e,
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            None,
        );
        assert_eq!(r, "1949323746fe6a43ef61f9606e7febea");
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(Algorithm::from_param(None), Some(Algorithm::Md5));
        assert_eq!(
            Algorithm::from_param(Some("sha-256")),
            Some(Algorithm::Sha256)
        );
        assert_eq!(Algorithm::from_param(Some("MD5-sess")), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
