//! RTSP 1.0 messages (RFC 2326 §4–§7) and their framing on a TCP stream.
//!
//! A TCP connection carries requests, responses and, once a session uses TCP transport,
//! interleaved binary frames (`$`, channel, 16-bit length, data; RFC 2326 §10.12). The `parser`
//! turns bytes into [`Item`]s incrementally; the `writer` does the reverse.

mod message;
mod parser;
mod writer;

pub use message::{Headers, Item, Method, Request, Response, Status};
#[doc(hidden)]
pub use parser::parse_all;
pub use parser::{Limits, ParseError, ParseErrorKind, Parser};
pub use writer::write_interleaved_header;
