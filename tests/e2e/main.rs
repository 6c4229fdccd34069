//! End-to-end tests: the real `finch` binary on free loopback ports, driven by real clients
//! (ffmpeg/ffprobe, GStreamer, the `retina` crate) and by raw sockets for malformed input.
//!
//! One test binary with modules keeps link time low on small machines. Every child process is
//! killed when its guard drops, and every wait has a deadline.

mod abuse;
mod admin;
mod auth;
mod cli;
mod cluster;
mod describe;
mod handover;
mod harness;
mod hls;
mod lifecycle;
mod limits;
mod logs;
mod malformed;
mod net;
mod players;
mod pull;
mod raw;
mod relay;
mod sessions;
mod supervisor;
