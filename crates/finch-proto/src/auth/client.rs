//! The client's half, for pulling from cameras: answering a server's challenges with a user and
//! password. Digest (SHA-256 when offered, else MD5; with `qop=auth` when offered) is preferred
//! over Basic, which is only used when nothing else is offered.

use super::digest::{expected_response, Algorithm, Expected};
use super::header::{format_authorization, parse_challenge, Challenge, DigestParams};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// How to answer a server, chosen from its challenges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Basic credentials.
    Basic,
    /// Digest with this challenge's realm, nonce, algorithm and qop.
    Digest {
        /// The realm.
        realm: String,
        /// The nonce.
        nonce: String,
        /// The algorithm.
        algorithm: Algorithm,
        /// Whether to answer with `qop=auth`.
        qop: bool,
    },
}

impl Answer {
    /// The best answer to these `WWW-Authenticate` values, if any can be given.
    pub fn choose<'a>(challenges: impl IntoIterator<Item = &'a str>) -> Option<Answer> {
        let parsed: Vec<Challenge> = challenges
            .into_iter()
            .filter_map(|c| parse_challenge(c).ok())
            .collect();
        let digest = |want: Algorithm| {
            parsed.iter().find_map(|c| {
                let alg = Algorithm::from_param(c.algorithm.as_deref())?;
                (c.scheme.eq_ignore_ascii_case("Digest") && alg == want).then(|| Answer::Digest {
                    realm: c.realm.clone(),
                    nonce: c.nonce.clone().unwrap_or_default(),
                    algorithm: alg,
                    qop: c
                        .qop
                        .as_deref()
                        .is_some_and(|q| q.split(',').any(|v| v.trim() == "auth")),
                })
            })
        };
        digest(Algorithm::Sha256)
            .or_else(|| digest(Algorithm::Md5))
            .or_else(|| {
                parsed
                    .iter()
                    .any(|c| c.scheme.eq_ignore_ascii_case("Basic"))
                    .then_some(Answer::Basic)
            })
    }

    /// The `Authorization` value for one request; `nc` counts the requests made with this
    /// nonce (from 1), `cnonce` is the client's own random value.
    pub fn authorization(
        &self,
        user: &str,
        pass: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        match self {
            Answer::Basic => format!("Basic {}", STANDARD.encode(format!("{user}:{pass}"))),
            Answer::Digest {
                realm,
                nonce,
                algorithm,
                qop,
            } => {
                let ha1 = algorithm.ha1(user, realm, pass);
                let nc = format!("{nc:08x}");
                let q = qop.then_some((nc.as_str(), cnonce, "auth"));
                let response = expected_response(
                    &Expected {
                        algorithm: *algorithm,
                        ha1: &ha1,
                        method,
                    },
                    uri,
                    nonce,
                    q,
                );
                format_authorization(&DigestParams {
                    username: user.to_owned(),
                    realm: realm.clone(),
                    nonce: nonce.clone(),
                    uri: uri.to_owned(),
                    response,
                    algorithm: Some(algorithm.name().to_owned()),
                    qop: qop.then(|| "auth".to_owned()),
                    nc: qop.then_some(nc.clone()),
                    cnonce: qop.then(|| cnonce.to_owned()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::header::{digest_challenge, parse_authorization};
    use crate::auth::Credentials;

    #[test]
    fn prefers_sha256_then_md5_then_basic_and_answers_what_a_server_checks() {
        let sha = digest_challenge("finch", "n", "SHA-256", true, false);
        let md5 = digest_challenge("finch", "n", "MD5", false, false);
        let basic = "Basic realm=\"finch\"".to_owned();
        let a = Answer::choose([md5.as_str(), sha.as_str(), basic.as_str()]).unwrap();
        assert!(matches!(
            a,
            Answer::Digest {
                algorithm: Algorithm::Sha256,
                qop: true,
                ..
            }
        ));
        let a = Answer::choose([basic.as_str(), md5.as_str()]).unwrap();
        assert!(matches!(
            a,
            Answer::Digest {
                algorithm: Algorithm::Md5,
                qop: false,
                ..
            }
        ));
        assert_eq!(Answer::choose([basic.as_str()]), Some(Answer::Basic));
        assert_eq!(Answer::choose(["Negotiate x"]), None);
        // What the client sends is what a server computes.
        let a = Answer::choose([md5.as_str()]).unwrap();
        let h = a.authorization("u", "p", "DESCRIBE", "rtsp://h/x", 1, "c");
        let Ok(Credentials::Digest(d)) = parse_authorization(&h) else {
            panic!("{h}")
        };
        let ha1 = Algorithm::Md5.ha1("u", "finch", "p");
        let e = Expected {
            algorithm: Algorithm::Md5,
            ha1: &ha1,
            method: "DESCRIBE",
        };
        assert_eq!(d.response, expected_response(&e, "rtsp://h/x", "n", None));
    }
}
