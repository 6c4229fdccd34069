//! A request the server refuses: the status to answer with and why (logged at debug), turned
//! into a response in one place.

use finch_proto::rtsp::{Response, Status};

/// The methods a client may use, for OPTIONS and for 405/501 answers.
pub(crate) const PUBLIC: &str =
    "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, PAUSE, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// A refusal.
#[derive(Debug)]
pub(crate) struct RtspError {
    pub(crate) status: Status,
    pub(crate) why: String,
    /// Headers the refusal carries (`WWW-Authenticate` challenges), in order.
    pub(crate) headers: Vec<(&'static str, String)>,
}

/// A refusal with `status` because of `why`.
pub(crate) fn fail(status: Status, why: impl Into<String>) -> RtspError {
    RtspError {
        status,
        why: why.into(),
        headers: Vec::new(),
    }
}

pub(crate) type Result<T> = std::result::Result<T, RtspError>;

impl RtspError {
    /// The response a client gets.
    pub(crate) fn into_response(self) -> Response {
        let mut resp = Response::new(self.status);
        if self.status == Status::METHOD_NOT_ALLOWED {
            resp.headers.set("Allow", PUBLIC);
        }
        if self.status == Status::NOT_IMPLEMENTED {
            resp.headers.set("Public", PUBLIC);
        }
        for (name, value) in self.headers {
            resp.headers.append(name, value);
        }
        resp
    }
}
