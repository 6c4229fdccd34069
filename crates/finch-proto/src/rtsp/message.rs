//! The RTSP message model: requests, responses, headers and the interleaved frame item.

use bytes::Bytes;
use std::fmt;

/// One thing read from an RTSP TCP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A request from the peer.
    Request(Request),
    /// A response from the peer (Finch acts as a client when it pulls from cameras).
    Response(Response),
    /// An interleaved binary frame (RFC 2326 §10.12): RTP or RTCP on a channel.
    Interleaved {
        /// The channel number (even channels carry RTP, odd ones RTCP by convention).
        channel: u8,
        /// The frame's payload, shared with the read buffer (no copy).
        payload: Bytes,
    },
}

/// An RTSP method (RFC 2326 §10); unknown methods are kept by name so they can get 501.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// OPTIONS
    Options,
    /// DESCRIBE
    Describe,
    /// ANNOUNCE
    Announce,
    /// SETUP
    Setup,
    /// PLAY
    Play,
    /// PAUSE
    Pause,
    /// RECORD
    Record,
    /// TEARDOWN
    Teardown,
    /// GET_PARAMETER
    GetParameter,
    /// SET_PARAMETER
    SetParameter,
    /// REDIRECT
    Redirect,
    /// Any other token.
    Other(String),
}

impl Method {
    /// The method as it is written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Options => "OPTIONS",
            Method::Describe => "DESCRIBE",
            Method::Announce => "ANNOUNCE",
            Method::Setup => "SETUP",
            Method::Play => "PLAY",
            Method::Pause => "PAUSE",
            Method::Record => "RECORD",
            Method::Teardown => "TEARDOWN",
            Method::GetParameter => "GET_PARAMETER",
            Method::SetParameter => "SET_PARAMETER",
            Method::Redirect => "REDIRECT",
            Method::Other(s) => s,
        }
    }

    /// Method names are case-sensitive (RFC 2326 §10), so `play` is an unknown method.
    pub fn from_token(token: &str) -> Method {
        match token {
            "OPTIONS" => Method::Options,
            "DESCRIBE" => Method::Describe,
            "ANNOUNCE" => Method::Announce,
            "SETUP" => Method::Setup,
            "PLAY" => Method::Play,
            "PAUSE" => Method::Pause,
            "RECORD" => Method::Record,
            "TEARDOWN" => Method::Teardown,
            "GET_PARAMETER" => Method::GetParameter,
            "SET_PARAMETER" => Method::SetParameter,
            "REDIRECT" => Method::Redirect,
            other => Method::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header fields in the order they were received or added. Names compare case-insensitively
/// (RFC 2326 §4.2); values are kept as sent, trimmed of surrounding whitespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Appends a field, keeping any earlier one of the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// Replaces every field of that name with one field.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.0.push((name.to_owned(), value.into()));
    }

    /// Iterates over (name, value) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An RTSP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI as sent (absolute `rtsp://` URI, `*`, or a path from lenient clients).
    pub uri: String,
    /// The header fields.
    pub headers: Headers,
    /// The body (its length is the Content-Length header).
    pub body: Bytes,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, uri: impl Into<String>) -> Self {
        Request {
            method,
            uri: uri.into(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// The CSeq header, which every response must echo (RFC 2326 §12.17).
    pub fn cseq(&self) -> Option<&str> {
        self.headers.get("CSeq")
    }
}

/// A status code with its standard reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    /// 200 OK
    pub const OK: Status = Status(200);
    /// 100 Continue.
    pub const CONTINUE: Status = Status(100);
    /// 400 Bad Request
    pub const BAD_REQUEST: Status = Status(400);
    /// 401 Unauthorized
    pub const UNAUTHORIZED: Status = Status(401);
    /// 403 Forbidden
    pub const FORBIDDEN: Status = Status(403);
    /// 404 Not Found
    pub const NOT_FOUND: Status = Status(404);
    /// 405 Method Not Allowed
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    /// 413 Request Entity Too Large
    pub const ENTITY_TOO_LARGE: Status = Status(413);
    /// 414 Request-URI Too Large
    pub const URI_TOO_LARGE: Status = Status(414);
    /// 415 Unsupported Media Type
    pub const UNSUPPORTED_MEDIA_TYPE: Status = Status(415);
    /// 453 Not Enough Bandwidth
    pub const NOT_ENOUGH_BANDWIDTH: Status = Status(453);
    /// 454 Session Not Found
    pub const SESSION_NOT_FOUND: Status = Status(454);
    /// 455 Method Not Valid in This State
    pub const METHOD_NOT_VALID_IN_THIS_STATE: Status = Status(455);
    /// 459 Aggregate Operation Not Allowed
    pub const AGGREGATE_NOT_ALLOWED: Status = Status(459);
    /// 461 Unsupported Transport
    pub const UNSUPPORTED_TRANSPORT: Status = Status(461);
    /// 500 Internal Server Error
    pub const INTERNAL_ERROR: Status = Status(500);
    /// 501 Not Implemented
    pub const NOT_IMPLEMENTED: Status = Status(501);
    /// 503 Service Unavailable
    pub const SERVICE_UNAVAILABLE: Status = Status(503);
    /// 505 RTSP Version Not Supported
    pub const VERSION_NOT_SUPPORTED: Status = Status(505);

    /// The reason phrase of RFC 2326 §7.1.1.
    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            200 => "OK",
            201 => "Created",
            250 => "Low on Storage Space",
            300 => "Multiple Choices",
            301 => "Moved Permanently",
            302 => "Moved Temporarily",
            304 => "Not Modified",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            406 => "Not Acceptable",
            408 => "Request Time-out",
            413 => "Request Entity Too Large",
            414 => "Request-URI Too Large",
            415 => "Unsupported Media Type",
            451 => "Parameter Not Understood",
            453 => "Not Enough Bandwidth",
            454 => "Session Not Found",
            455 => "Method Not Valid in This State",
            457 => "Invalid Range",
            459 => "Aggregate operation not allowed",
            460 => "Only aggregate operation allowed",
            461 => "Unsupported transport",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            505 => "RTSP Version not supported",
            _ => "Unknown",
        }
    }
}

/// An RTSP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase as sent.
    pub reason: String,
    /// The header fields.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// A response with the standard reason phrase, no headers and no body.
    pub fn new(status: Status) -> Self {
        Response {
            status: status.0,
            reason: status.reason().to_owned(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Sets the body with its Content-Type and Content-Length.
    pub fn with_body(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        self.headers.set("Content-Type", content_type);
        self.headers.set("Content-Length", body.len().to_string());
        self.body = body;
        self
    }
}
