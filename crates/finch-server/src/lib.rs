//! Finch's worker: everything that serves RTSP clients and operators.
//!
//! Layout (rooms first, then what they share):
//! - `worker`: the run loop, heartbeat, signals, drain and stop, the supervisor channel, the
//!   status line. It starts everything below.
//! - `rtsp`: the accept loop, connections, sessions and methods; `pull`: Finch as the client
//!   of cameras it pulls; `cluster`: the path registry nodes share in Redis; `hls`: Low-Latency HLS
//!   for browsers (the muxing itself is the `finch-hls` crate); `udp`: the shared RTP/RTCP
//!   sockets and their routes; `admin`: the HTTP API, metrics and status page; `net`: binding,
//!   inheriting and rebinding sockets.
//! - `tls`: the RTSPS certificate and acceptor.
//! - `auth`: who may do what (users, Basic and Digest, address lists, failed logins).
//! - Shared by the rooms: `shared` (the worker's shared state), `state` (the server state),
//!   `errorlog` (DSS's error log: the only way to FatalError), `report` (reports to the
//!   supervisor), `sessions` (the session table), `metrics`, `reload` (applying a new config),
//!   `activity` (signs of life), `html` (escaping for the pages).
//!
//! The relay core (paths, streams, readers) is the `finch-relay` crate; it knows nothing of
//! RTSP. Imports run one way: `worker` → rooms → shared modules → `finch-relay`/`finch-proto`.
//!
//! [`run`] takes sockets that are already bound ([`Listeners`]), so the binary, a supervisor
//! passing inherited descriptors, or a test choose where they come from.

pub mod activity;
mod admin;
pub mod auth;
pub mod cluster;
pub mod errorlog;
pub mod handover;
pub mod hls;
mod html;
pub mod metrics;
pub mod net;
pub mod pull;
pub mod reload;
pub mod report;
mod rtsp;
pub mod sessions;
pub mod shared;
pub mod state;
pub mod stop;
pub mod tls;
mod udp;
pub mod worker;

pub use net::{bind, Listeners, NetError};
pub use worker::{run, Exit, Stop};
