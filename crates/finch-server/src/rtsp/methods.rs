//! The RTSP methods (RFC 2326 §10): checks every request gets, dispatch, and the methods that
//! need no more than a few lines (OPTIONS, TEARDOWN, GET/SET_PARAMETER). The publisher's methods
//! are in `publish`, the reader's in `play`.
//!
//! Handlers change the connection's session and the relay, never the socket: the connection
//! writes the response and, once a reader plays, its media. Failures are an `RtspError`
//! that becomes a status in one place.

use super::conn::Conn;
use super::error::{fail, Result, PUBLIC};
use super::resolve::{resolve, unresolved, Context, Target};
use finch_proto::headers::session::{format_session, parse_session_id};
use finch_proto::rtsp::{Method, Request, Response, Status};

impl Conn {
    /// Answers one request.
    /// Answers one request; `None` when the answer must wait (a DESCRIBE starting an on-demand
    /// camera): the request is kept and answered once the camera is there or the wait is over.
    pub(crate) fn handle(&mut self, req: Request) -> Option<Response> {
        Some(match self.dispatch(&req) {
            Ok(resp) => resp,
            Err(e) if e.status == Status::CONTINUE => {
                self.waiting = Some(req);
                return None;
            }
            Err(e) if e.status == Status::NOT_FOUND && self.await_handover(&req) => {
                self.waiting = Some(req);
                return None;
            }
            Err(e) => {
                tracing::debug!(method = %req.method, uri = %finch_proto::uri::redact(&req.uri), status = e.status.0, why = %e.why, "request refused");
                e.into_response()
            }
        })
    }

    /// Whether a request that found no path should wait for the previous worker's sessions
    /// instead: in a graceful restart its publisher may be on its way (bounded by 3 s).
    fn await_handover(&mut self, req: &Request) -> bool {
        if !matches!(req.method, Method::Describe | Method::Setup)
            || !self.shared.handover.expecting()
        {
            return false;
        }
        let now = std::time::Instant::now();
        match self.wait_until {
            None => {
                self.wait_until = Some(now + std::time::Duration::from_secs(3));
                self.waiting_handover = true;
                true
            }
            Some(t) if now < t => true,
            Some(_) => {
                self.wait_until = None;
                self.waiting_handover = false;
                false
            }
        }
    }

    fn dispatch(&mut self, req: &Request) -> Result<Response> {
        // RFC 2326 §12.17: every request carries a CSeq, a decimal number; a response without
        // one cannot be matched by the client.
        match req.cseq() {
            None => return Err(fail(Status::BAD_REQUEST, "no CSeq")),
            Some(c) if c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(fail(
                    Status::BAD_REQUEST,
                    format!("CSeq {c:?} is not a number"),
                ));
            }
            Some(_) => {}
        }
        if let Some(s) = &self.session {
            s.activity.touch();
        }
        // RFC 2326 §12.32: a required option the server does not implement gets 551, naming it
        // (ONVIF back-channel clients rely on this to fall back).
        let required: Vec<&str> = ["Require", "Proxy-Require"]
            .iter()
            .filter_map(|h| req.headers.get(h))
            .collect();
        if !required.is_empty() {
            let mut r = Response::new(Status(551));
            r.reason = "Option not supported".to_owned();
            r.headers.set("Unsupported", required.join(", "));
            return Ok(r);
        }
        if !matches!(
            req.method,
            Method::Options | Method::Describe | Method::Announce
        ) {
            self.check_session_header(req)?;
        }
        let cx = Context {
            session: self.session.as_ref(),
            described: self.described.as_deref(),
            registry: &self.shared.registry,
        };
        let target = match resolve(req, &cx) {
            Ok(t) => t,
            Err(e) => {
                // Authenticate, then 404 (CONTRACT.md): who may not know learns nothing.
                if let Some((action, path)) = unresolved(req, &cx) {
                    self.authorize(req, action, &path)?;
                }
                return Err(e);
            }
        };
        tracing::debug!(method = %req.method, action = ?target.action, path = ?target.path, "request");
        if let Some(path) = &target.path {
            self.authorize(req, target.action, path)?;
        }
        match req.method {
            Method::Options => Ok(self.options()),
            Method::Describe => self.describe(req, &target),
            Method::Announce => self.announce(req, &target),
            Method::Setup => self.setup(req, target),
            Method::Play => self.play(req),
            Method::Pause => self.pause(),
            Method::Record => self.record(),
            Method::Teardown => self.teardown(),
            Method::GetParameter | Method::SetParameter => Ok(self.ok()),
            Method::Redirect => Err(fail(
                Status::METHOD_NOT_ALLOWED,
                "REDIRECT is server to client",
            )),
            Method::Other(ref m) => {
                Err(fail(Status::NOT_IMPLEMENTED, format!("unknown method {m}")))
            }
        }
    }

    fn options(&self) -> Response {
        let mut r = self.ok();
        r.headers.set("Public", PUBLIC);
        r
    }

    fn setup(&mut self, req: &Request, target: Target) -> Result<Response> {
        match self.session.as_ref().map(|s| s.role_name()) {
            Some("publisher") => self.setup_publisher(req, target),
            _ => self.setup_reader(req, target),
        }
    }

    fn teardown(&mut self) -> Result<Response> {
        if self.session.is_none() {
            return Err(fail(Status::METHOD_NOT_VALID_IN_THIS_STATE, "no session"));
        }
        self.end_session();
        Ok(Response::new(Status::OK))
    }

    /// A request naming a session must name this connection's one (454 otherwise).
    fn check_session_header(&self, req: &Request) -> Result<()> {
        let Some(value) = req.headers.get("Session") else {
            return Ok(());
        };
        let named = parse_session_id(value);
        match &self.session {
            Some(s) if Some(s.id.as_str()) == named => Ok(()),
            _ => Err(fail(
                Status::SESSION_NOT_FOUND,
                format!("unknown session {value:?}"),
            )),
        }
    }

    /// 200 with the Session header, if there is a session.
    pub(crate) fn ok(&self) -> Response {
        let mut r = Response::new(Status::OK);
        if let Some(s) = &self.session {
            r.headers.set(
                "Session",
                format_session(&s.id, self.config.rtsp.session_timeout_secs),
            );
        }
        r
    }

    /// `rtsp://host[:port]/path/`, from the request's authority (so it names the address the
    /// client reached), ending in a slash as CONTRACT.md requires.
    pub(crate) fn base_url(&self, uri: &str, path: &str) -> String {
        let authority = uri
            .split_once("://")
            .and_then(|(_, rest)| rest.split('/').next())
            .map(|a| a.rsplit('@').next().unwrap_or(a).to_owned())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| self.local.to_string());
        format!("rtsp://{authority}/{path}/")
    }
}
