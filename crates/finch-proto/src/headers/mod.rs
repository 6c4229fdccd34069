//! The RTSP headers Finch parses or writes, one module per header.

pub mod range;
pub mod rtp_info;
pub mod session;
pub mod transport;
