//! The `Authorization` and `WWW-Authenticate` headers (RFC 2617 §1.2 and §3.2, RFC 7616 §3.3,
//! §3.4), as an RTSP server reads and writes them.
//!
//! Parsing is strict about structure (a scheme, then `name=value` pairs, values quoted or
//! tokens, quoted strings with `\` escapes) and bounded (parameter count and length), and never
//! panics on any input; it is a fuzz target.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use thiserror::Error;

/// Credentials a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Basic base64(user:pass)`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        pass: String,
    },
    /// `Digest name=value, …`.
    Digest(DigestParams),
}

/// The parameters of a Digest `Authorization` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestParams {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `uri`: what the client hashed as the request URI.
    pub uri: String,
    /// `response`: the hex digest.
    pub response: String,
    /// `algorithm`; absent means MD5 (RFC 2617 §3.2.2).
    pub algorithm: Option<String>,
    /// `qop` (`auth`), absent for RFC 2069 clients.
    pub qop: Option<String>,
    /// `nc`, with qop.
    pub nc: Option<String>,
    /// `cnonce`, with qop.
    pub cnonce: Option<String>,
}

/// Why an `Authorization` header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthHeaderError {
    /// Neither Basic nor Digest.
    #[error("unsupported authentication scheme")]
    Scheme,
    /// Not valid base64 of `user:pass`.
    #[error("malformed Basic credentials")]
    Basic,
    /// A parameter list that does not parse.
    #[error("malformed Digest parameters")]
    Params,
    /// A required Digest parameter is missing.
    #[error("Digest parameter {0} missing")]
    Missing(&'static str),
}

/// At most this many parameters in one header; more is not a client, it is an attack.
const MAX_PARAMS: usize = 32;

/// Reads an `Authorization` header value.
pub fn parse_authorization(value: &str) -> Result<Credentials, AuthHeaderError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("Basic") {
        let decoded = STANDARD
            .decode(rest.trim())
            .map_err(|_| AuthHeaderError::Basic)?;
        let text = String::from_utf8(decoded).map_err(|_| AuthHeaderError::Basic)?;
        let (user, pass) = text.split_once(':').ok_or(AuthHeaderError::Basic)?;
        return Ok(Credentials::Basic {
            user: user.to_owned(),
            pass: pass.to_owned(),
        });
    }
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(AuthHeaderError::Scheme);
    }
    let mut d = DigestParams::default();
    let mut seen = [false; 5];
    for (name, v) in parse_params(rest)? {
        let slot = match name.to_ascii_lowercase().as_str() {
            "username" => {
                seen[0] = true;
                &mut d.username
            }
            "realm" => {
                seen[1] = true;
                &mut d.realm
            }
            "nonce" => {
                seen[2] = true;
                &mut d.nonce
            }
            "uri" => {
                seen[3] = true;
                &mut d.uri
            }
            "response" => {
                seen[4] = true;
                &mut d.response
            }
            "algorithm" => {
                d.algorithm = Some(v);
                continue;
            }
            "qop" => {
                d.qop = Some(v);
                continue;
            }
            "nc" => {
                d.nc = Some(v);
                continue;
            }
            "cnonce" => {
                d.cnonce = Some(v);
                continue;
            }
            // opaque, userhash and extensions: nothing the server needs.
            _ => continue,
        };
        *slot = v;
    }
    for (i, name) in ["username", "realm", "nonce", "uri", "response"]
        .iter()
        .enumerate()
    {
        if !seen[i] {
            return Err(AuthHeaderError::Missing(name));
        }
    }
    Ok(Credentials::Digest(d))
}

/// `name=value` pairs separated by commas; values are tokens or quoted strings.
fn parse_params(s: &str) -> Result<Vec<(String, String)>, AuthHeaderError> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        while i < b.len() && b[i] == b',' {
            i += 1;
            skip_ws(&mut i);
        }
        if i >= b.len() {
            return Ok(out);
        }
        let start = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        if i == start {
            return Err(AuthHeaderError::Params);
        }
        let name = s.get(start..i).ok_or(AuthHeaderError::Params)?.to_owned();
        skip_ws(&mut i);
        if b.get(i) != Some(&b'=') {
            return Err(AuthHeaderError::Params);
        }
        i += 1;
        skip_ws(&mut i);
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut v = Vec::new();
            loop {
                match b.get(i) {
                    None => return Err(AuthHeaderError::Params),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        v.push(*b.get(i + 1).ok_or(AuthHeaderError::Params)?);
                        i += 2;
                    }
                    Some(c) => {
                        v.push(*c);
                        i += 1;
                    }
                }
            }
            String::from_utf8(v).map_err(|_| AuthHeaderError::Params)?
        } else {
            let start = i;
            while i < b.len() && b[i] != b',' && b[i] != b' ' && b[i] != b'\t' {
                i += 1;
            }
            s.get(start..i).ok_or(AuthHeaderError::Params)?.to_owned()
        };
        out.push((name, value));
        if out.len() > MAX_PARAMS {
            return Err(AuthHeaderError::Params);
        }
        skip_ws(&mut i);
        match b.get(i) {
            None => return Ok(out),
            Some(b',') => i += 1,
            Some(_) => return Err(AuthHeaderError::Params),
        }
    }
}

fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// A challenge a server sent (`WWW-Authenticate`), as a client reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    /// `Basic` or `Digest` (as written).
    pub scheme: String,
    /// `realm`.
    pub realm: String,
    /// `nonce` (Digest).
    pub nonce: Option<String>,
    /// `algorithm` (Digest).
    pub algorithm: Option<String>,
    /// `qop` (Digest), e.g. `auth` or `auth,auth-int`.
    pub qop: Option<String>,
    /// `stale=true` (Digest).
    pub stale: bool,
}

/// Reads one `WWW-Authenticate` value.
pub fn parse_challenge(value: &str) -> Result<Challenge, AuthHeaderError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("Basic") && !scheme.eq_ignore_ascii_case("Digest") {
        return Err(AuthHeaderError::Scheme);
    }
    let mut c = Challenge {
        scheme: scheme.to_owned(),
        ..Challenge::default()
    };
    for (name, v) in parse_params(rest)? {
        match name.to_ascii_lowercase().as_str() {
            "realm" => c.realm = v,
            "nonce" => c.nonce = Some(v),
            "algorithm" => c.algorithm = Some(v),
            "qop" => c.qop = Some(v),
            "stale" => c.stale = v.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    Ok(c)
}

/// Writes Digest credentials as an `Authorization` value (quoting and escaping as RFC 7616
/// §3.4 does), so what [`parse_authorization`] reads back is the same.
pub fn format_authorization(d: &DigestParams) -> String {
    let q = |s: &str| {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for c in s.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    };
    let mut v = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response={}",
        q(&d.username),
        q(&d.realm),
        q(&d.nonce),
        q(&d.uri),
        q(&d.response)
    );
    if let Some(a) = &d.algorithm {
        v.push_str(&format!(", algorithm={}", q(a)));
    }
    if let Some(qop) = &d.qop {
        v.push_str(&format!(", qop={}", q(qop)));
    }
    if let Some(nc) = &d.nc {
        v.push_str(&format!(", nc={}", q(nc)));
    }
    if let Some(c) = &d.cnonce {
        v.push_str(&format!(", cnonce={}", q(c)));
    }
    v
}

/// A `WWW-Authenticate: Digest` challenge.
pub fn digest_challenge(
    realm: &str,
    nonce: &str,
    algorithm: &str,
    qop: bool,
    stale: bool,
) -> String {
    let mut v = format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={algorithm}");
    if qop {
        v.push_str(", qop=\"auth\"");
    }
    if stale {
        v.push_str(", stale=true");
    }
    v
}

/// A `WWW-Authenticate: Basic` challenge.
pub fn basic_challenge(realm: &str) -> String {
    format!("Basic realm=\"{realm}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn basic() {
        // RFC 7617 §2's example.
        assert_eq!(
            parse_authorization("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Ok(Credentials::Basic {
                user: "Aladdin".into(),
                pass: "open sesame".into()
            })
        );
        assert_eq!(
            parse_authorization("Basic !!!"),
            Err(AuthHeaderError::Basic)
        );
        assert_eq!(
            parse_authorization("Bearer x"),
            Err(AuthHeaderError::Scheme)
        );
    }

    #[test]
    fn digest_as_ffmpeg_and_rfc_2617_write_it() {
        // RFC 2617 §3.5.
        let h = r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let Ok(Credentials::Digest(d)) = parse_authorization(h) else {
            panic!()
        };
        assert_eq!(d.username, "Mufasa");
        assert_eq!(d.qop.as_deref(), Some("auth"));
        assert_eq!(d.nc.as_deref(), Some("00000001"));
        assert_eq!(d.algorithm, None);
        // ffmpeg (no qop offered): no nc/cnonce; algorithm given.
        let h = r#"Digest username="u", realm="finch", nonce="n", uri="rtsp://h/a", response="r", algorithm="MD5""#;
        let Ok(Credentials::Digest(d)) = parse_authorization(h) else {
            panic!()
        };
        assert_eq!(
            (d.uri.as_str(), d.algorithm.as_deref()),
            ("rtsp://h/a", Some("MD5"))
        );
        // Escapes inside quoted strings.
        let h = r#"Digest username="a\"b", realm="r", nonce="n", uri="u", response="x""#;
        let Ok(Credentials::Digest(d)) = parse_authorization(h) else {
            panic!()
        };
        assert_eq!(d.username, "a\"b");
    }

    #[test]
    fn digest_refusals() {
        for h in [
            r#"Digest username="u", realm="r""#,
            r#"Digest username="u"#,
            r#"Digest =x"#,
            r#"Digest username "u""#,
        ] {
            assert!(parse_authorization(h).is_err(), "{h}");
        }
        let many = (0..40)
            .map(|i| format!("p{i}=1"))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(
            parse_authorization(&format!("Digest {many}")),
            Err(AuthHeaderError::Params)
        );
    }

    #[test]
    fn a_client_reads_challenges_and_writes_credentials_back() {
        let c = parse_challenge(&digest_challenge("finch", "n1", "MD5", true, true)).unwrap();
        assert_eq!(
            (
                c.realm.as_str(),
                c.nonce.as_deref(),
                c.algorithm.as_deref(),
                c.qop.as_deref(),
                c.stale
            ),
            ("finch", Some("n1"), Some("MD5"), Some("auth"), true)
        );
        assert_eq!(
            parse_challenge("Basic realm=\"x\"").unwrap().scheme,
            "Basic"
        );
        assert!(parse_challenge("Negotiate abc").is_err());
        let d = DigestParams {
            username: "a\"b\\c".into(),
            realm: "r".into(),
            nonce: "n".into(),
            uri: "rtsp://h/a".into(),
            response: "x".into(),
            algorithm: Some("MD5".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("c".into()),
        };
        assert_eq!(
            parse_authorization(&format_authorization(&d)),
            Ok(Credentials::Digest(d))
        );
    }

    #[test]
    fn challenges() {
        assert_eq!(
            digest_challenge("finch", "abc", "SHA-256", true, false),
            r#"Digest realm="finch", nonce="abc", algorithm=SHA-256, qop="auth""#
        );
        assert!(digest_challenge("finch", "abc", "MD5", false, true).ends_with("stale=true"));
        assert_eq!(basic_challenge("finch"), r#"Basic realm="finch""#);
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,300}") {
            let _ = parse_authorization(&s);
            let _ = parse_authorization(&format!("Digest {s}"));
        }
    }
}
