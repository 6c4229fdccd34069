//! RTSP authentication as a server does it (RFC 2326 §D.2 borrows HTTP's): Basic (RFC 7617)
//! and Digest (RFC 2617, RFC 7616), sans-IO.
//!
//! - `header`: reading `Authorization` and writing challenges (the server's side); reading
//!   challenges and writing `Authorization` (a client's, for pulling from cameras).
//! - `digest`: the response a client should have sent, MD5 or SHA-256, with or without qop.
//! - `client`: answering a camera's challenges.
//! - `nonce`: stateless nonces (an HMAC of their time) and the bounded `nc` replay table.
//!
//! No crate does the server side of Digest well (http-auth and digest_auth are client-first),
//! so this is written here, against the RFCs' own test vectors.

pub mod client;
pub mod digest;
pub mod header;
pub mod nonce;

pub use digest::{constant_time_eq, Algorithm};
pub use header::{
    format_authorization, parse_authorization, parse_challenge, AuthHeaderError, Challenge,
    Credentials, DigestParams,
};
pub use nonce::{NonceCheck, NonceCounts, Nonces};
