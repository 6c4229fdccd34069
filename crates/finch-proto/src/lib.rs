//! Finch's sans-IO protocol core.
//!
//! Everything Finch needs to understand on the wire, as pure functions and plain data over byte
//! buffers: RTSP 1.0 messages and the interleaved `$` frames that share their TCP stream (RFC 2326),
//! the headers the server acts on (Transport, Session, Range, RTP-Info), SDP (RFC 4566), RTP and RTCP
//! views (RFC 3550), and the little codec knowledge a relay must have: where an H.264/H.265 keyframe
//! starts (RFC 6184, RFC 7798) and which parameter sets it carries.
//!
//! Layout:
//! - `auth`: Basic and Digest authentication, server side.
//! - `rtsp`: the message types, the incremental parser (with its input limits) and the writer.
//! - `headers`: one module per header the server parses or writes.
//! - `sdp`: a tolerant SDP reader/writer that keeps every line it does not own byte for byte.
//! - `rtp`, `rtcp`: zero-copy views over packets.
//! - `codec`: keyframe detection and parameter-set extraction.
//! - `depack`: RTP payloads back into access units and AAC frames (for HLS's MP4 samples).
//! - `uri`: from an RTSP request URI to a Finch path name and a track control.
//!
//! This crate does no I/O, reads no clock and spawns nothing (`cargo tree -p finch-proto` shows no
//! tokio): callers hand in bytes and get back values, so it can be fuzzed and tested without sockets.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod codec;
pub mod depack;
pub mod headers;
pub mod rtcp;
pub mod rtp;
pub mod rtsp;
pub mod sdp;
pub mod uri;
