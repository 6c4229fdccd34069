//! RTSP 1.0 (RFC 2326) as a live relay serves it: the accept loop, one task per connection, and
//! what a request does to the connection's session and to the relay.
//!
//! Layout, in the order a request meets them:
//! - `listener`: accepts TCP connections, applies the worker's connection limit and state.
//! - `conn`: drives one connection over any `AsyncRead + AsyncWrite` (so TLS or HTTP tunnelling
//!   can carry it): reads requests and `$` frames, writes responses, then a reader's media.
//! - `resolve`: the one place a request becomes a target (path, track, action); `authorize`
//!   checks the target against `auth` right after.
//! - `methods` (dispatch and the small methods), `publish` (ANNOUNCE, SETUP mode=record,
//!   RECORD), `play` (SETUP, PLAY, PAUSE): what each method does.
//! - `session`: an RTSP session and its state machine; `transport`: Transport negotiation;
//!   `describe`: the SDP a DESCRIBE answers with; `media`: writing a reader's packets out;
//!   `error`: refusals and the status each gets.
//!
//! A connection, an RTSP session and a path are three things with three owners: the connection
//! owns at most one session, the registry owns paths, a stream owns its ring.

mod authorize;
mod conn;
pub(crate) use conn::adopt;
mod describe;
mod error;
pub(crate) mod listener;
mod media;
mod methods;
mod play;
mod publish;
mod resolve;
mod session;
mod transport;
