//! Finch's configuration: one TOML file, every key with a built-in default.
//!
//! - `schema`: the config structs, their defaults and `validate()`; `auth`: users, their
//!   secrets, address lists and permissions; `cluster`: the Redis-backed
//!   registry several nodes share; `hls`: Low-Latency HLS for browsers.
//! - `load`: reading a file (or none) and the `FINCH_SECTION__KEY` environment overrides, with
//!   errors that name the file, line and column, or the variable.
//! - `print`: the effective config as commented TOML (`finch --print-config`).
//!
//! Used by both the supervisor and the worker; it knows nothing about sockets or sessions.

pub mod auth;
pub mod cluster;
pub mod hls;
mod load;
mod print;
mod schema;

pub use auth::{AuthConfig, Network, Permission, Secret, User};
pub use cluster::{ClusterConfig, CLUSTER_USER};
pub use hls::HlsConfig;
pub use load::{load, load_str, ConfigError, ENV_PREFIX};
pub use print::to_commented_toml;
pub use schema::*;
