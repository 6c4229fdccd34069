//! The RTSP methods (RFC 2326 §10) as a live relay implements them.
//!
//! Each handler takes a parsed request and returns the response; failures are an [`RtspError`]
//! that becomes a status in one place (`handle`). Handlers change the connection's session and
//! the registry, never the socket: the connection task writes the response and, once a reader
//! plays, its media.

use crate::activity::Activity;
use crate::conn::{Conn, Playing, Role, Session, TrackTransport};
use crate::registry::Source;
use crate::server::{new_session_id, SessionInfo};
use crate::stream::{JoinError, ReaderInfo, Stream};
use crate::udp::Route;
use finch_proto::headers::range::LIVE_RANGE;
use finch_proto::headers::rtp_info::{format_rtp_info, RtpInfo};
use finch_proto::headers::session::{format_session, parse_session_id};
use finch_proto::headers::transport::{
    parse_transport, LowerTransport, TransportError, TransportSpec,
};
use finch_proto::rtsp::{Method, Request, Response, Status};
use finch_proto::sdp::Sdp;
use finch_proto::uri::{request_path, split_last_segment, track_index};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// The methods a client may use, for OPTIONS.
const PUBLIC: &str =
    "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, PAUSE, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// A request the server refuses: the status and why (logged at debug).
#[derive(Debug)]
pub(crate) struct RtspError {
    status: Status,
    why: String,
}

fn fail(status: Status, why: impl Into<String>) -> RtspError {
    RtspError {
        status,
        why: why.into(),
    }
}

type Result<T> = std::result::Result<T, RtspError>;

impl Conn {
    /// Answers one request.
    pub(crate) fn handle(&mut self, req: Request) -> Response {
        if req.cseq().is_none() {
            // RFC 2326 §12.17: every request carries a CSeq, and a response without one cannot
            // be matched by the client.
            return Response::new(Status::BAD_REQUEST);
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
            return r;
        }
        let result = match req.method {
            Method::Options => Ok(self.options()),
            Method::Describe => self.describe(&req),
            Method::Announce => self.announce(&req),
            Method::Setup => self.setup(&req),
            Method::Play => self.play(&req),
            Method::Pause => self.pause(&req),
            Method::Record => self.record(&req),
            Method::Teardown => self.teardown(&req),
            Method::GetParameter | Method::SetParameter => self.parameter(&req),
            Method::Redirect => Err(fail(
                Status::METHOD_NOT_ALLOWED,
                "REDIRECT is server to client",
            )),
            Method::Other(ref m) => {
                Err(fail(Status::NOT_IMPLEMENTED, format!("unknown method {m}")))
            }
        };
        match result {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(method = %req.method, uri = %req.uri, status = e.status.0, why = %e.why, "request refused");
                let mut resp = Response::new(e.status);
                if e.status == Status::METHOD_NOT_ALLOWED {
                    resp.headers.set("Allow", PUBLIC);
                }
                if e.status == Status::NOT_IMPLEMENTED {
                    resp.headers.set("Public", PUBLIC);
                }
                resp
            }
        }
    }

    fn options(&self) -> Response {
        let mut r = Response::new(Status::OK);
        r.headers.set("Public", PUBLIC);
        self.add_session_header(&mut r);
        r
    }

    fn describe(&mut self, req: &Request) -> Result<Response> {
        let path = request_path(&req.uri).ok_or_else(|| fail(Status::NOT_FOUND, "no path"))?;
        let stream = self
            .server
            .registry
            .ready_stream(&path)
            .ok_or_else(|| fail(Status::NOT_FOUND, format!("no stream on {path}")))?;
        let mut sdp = stream.sdp.with_server_controls();
        add_in_band_parameter_sets(&mut sdp, &stream);
        self.described = Some(path.clone());
        let mut r = Response::new(Status::OK).with_body("application/sdp", sdp.write());
        r.headers
            .set("Content-Base", self.base_url(&req.uri, &path));
        Ok(r)
    }

    fn announce(&mut self, req: &Request) -> Result<Response> {
        let path = request_path(&req.uri)
            .ok_or_else(|| fail(Status::BAD_REQUEST, "ANNOUNCE needs a path"))?;
        match self.config.paths.find(&path) {
            None => {
                return Err(fail(
                    Status::NOT_FOUND,
                    format!("{path} is not a configured path"),
                ))
            }
            Some(p) if p.source != "publisher" => {
                return Err(fail(
                    Status::FORBIDDEN,
                    format!("{path} is pulled from {}", p.source),
                ));
            }
            Some(_) => {}
        }
        if let Some(ct) = req.headers.get("Content-Type") {
            if !ct
                .trim()
                .to_ascii_lowercase()
                .starts_with("application/sdp")
            {
                return Err(fail(
                    Status::UNSUPPORTED_MEDIA_TYPE,
                    format!("{ct} is not SDP"),
                ));
            }
        }
        let sdp = Sdp::parse(&req.body).map_err(|e| fail(Status::BAD_REQUEST, e.to_string()))?;
        if sdp.media.is_empty() {
            return Err(fail(Status::BAD_REQUEST, "the SDP has no media"));
        }
        let id = match &self.session {
            Some(s) if matches!(s.role, Role::Publisher { .. }) && s.path == path => s.id.clone(),
            Some(_) => {
                return Err(fail(
                    Status::METHOD_NOT_VALID_IN_THIS_STATE,
                    "this connection already has a session",
                ));
            }
            None => new_session_id(),
        };
        let source = Source {
            kind: "publisher",
            session: id.clone(),
            peer: self.peer,
            transport: None,
        };
        let tracks = sdp.media.len();
        let stream = self
            .server
            .registry
            .announce(&path, source, sdp, self.server.relay_params())
            .map_err(|e| fail(Status::METHOD_NOT_VALID_IN_THIS_STATE, e.to_string()))?;
        if let (Some(old), Some(udp)) = (&self.session, &self.server.udp) {
            // The same session announcing again: its routes fed the stream just replaced.
            udp.remove(&old.id, &old.udp_routes);
        }
        tracing::info!(path = %path, session = %id, peer = %self.peer, "publisher announced");
        self.server.put_session(SessionInfo {
            id: id.clone(),
            path: path.clone(),
            role: "publisher",
            peer: self.peer,
            transport: None,
            since: SystemTime::now(),
            kick: self.cancel.clone(),
        });
        self.session = Some(Session {
            id,
            path,
            activity: Activity::new(),
            role: Role::Publisher {
                stream,
                tracks: vec![None; tracks],
            },
            udp_routes: Vec::new(),
        });
        let mut r = Response::new(Status::OK);
        self.add_session_header(&mut r);
        Ok(r)
    }

    fn setup(&mut self, req: &Request) -> Result<Response> {
        self.check_session_header(req)?;
        if self.playing.is_some() {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "SETUP while playing",
            ));
        }
        let value = req
            .headers
            .get("Transport")
            .ok_or_else(|| fail(Status::BAD_REQUEST, "no Transport header"))?;
        let specs = parse_transport(value).map_err(|e| match e {
            TransportError::Unsupported(_) => fail(Status::UNSUPPORTED_TRANSPORT, e.to_string()),
            TransportError::Malformed(_) => fail(Status::BAD_REQUEST, e.to_string()),
        })?;
        let udp_on = self.config.rtsp.udp && self.server.udp.is_some();
        let spec = specs
            .into_iter()
            .find(|s| {
                !s.multicast
                    && (s.lower == LowerTransport::Tcp || (udp_on && s.client_port.is_some()))
            })
            .ok_or_else(|| {
                fail(
                    Status::UNSUPPORTED_TRANSPORT,
                    format!("none of {value:?} is offered"),
                )
            })?;
        let publishing = matches!(
            self.session.as_ref().map(|s| &s.role),
            Some(Role::Publisher { .. })
        );
        if publishing {
            self.setup_publisher(req, spec)
        } else {
            if spec.is_record() {
                return Err(fail(
                    Status::METHOD_NOT_VALID_IN_THIS_STATE,
                    "mode=record without ANNOUNCE",
                ));
            }
            self.setup_reader(req, spec)
        }
    }

    fn setup_publisher(&mut self, req: &Request, spec: TransportSpec) -> Result<Response> {
        let Some(session) = &self.session else {
            return Err(fail(Status::SESSION_NOT_FOUND, "no session"));
        };
        let Role::Publisher { stream, tracks } = &session.role else {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "not publishing",
            ));
        };
        let track = publisher_track(&req.uri, &stream.sdp).ok_or_else(|| {
            fail(
                Status::NOT_FOUND,
                format!("no announced track at {}", req.uri),
            )
        })?;
        let (transport, reply) = self.choose_transport(&spec, track, tracks)?;
        let stream = stream.clone();
        let activity = session.activity.clone();
        let id = session.id.clone();
        let path = session.path.clone();
        let mut routes = Vec::new();
        if let (TrackTransport::Udp { rtp, rtcp }, Some(udp)) = (transport, &self.server.udp) {
            for (is_rtcp, addr) in [(false, rtp), (true, rtcp)] {
                let route = Route::Publish {
                    stream: stream.clone(),
                    track,
                    activity: activity.clone(),
                };
                if let Err(e) = udp.add(&id, (is_rtcp, addr), route) {
                    udp.remove(&id, &routes);
                    return Err(fail(Status::UNSUPPORTED_TRANSPORT, e.to_string()));
                }
                routes.push((is_rtcp, addr));
            }
        }
        if let Some(s) = self.session.as_mut() {
            for r in routes {
                if !s.udp_routes.contains(&r) {
                    s.udp_routes.push(r);
                }
            }
            if let Role::Publisher { tracks, .. } = &mut s.role {
                tracks[track] = Some(transport);
            }
        }
        self.server
            .registry
            .set_transport(&path, &id, transport.name());
        self.server.set_session_transport(&id, transport.name());
        let mut r = Response::new(Status::OK);
        r.headers.set("Transport", reply.to_string());
        self.add_session_header(&mut r);
        Ok(r)
    }

    fn setup_reader(&mut self, req: &Request, spec: TransportSpec) -> Result<Response> {
        let (path, track, stream) = self.reader_track(&req.uri)?;
        let no_tracks = vec![None; stream.tracks.len()];
        let tracks = match &self.session {
            Some(Session {
                path: p,
                role: Role::Reader { stream: s, tracks },
                ..
            }) => {
                if *p != path {
                    return Err(fail(Status::AGGREGATE_NOT_ALLOWED, "one session per path"));
                }
                if !Arc::ptr_eq(s, &stream) {
                    // The publisher left and came back between two SETUPs: the old
                    // description is void.
                    return Err(fail(Status::NOT_FOUND, "the stream was replaced"));
                }
                tracks
            }
            Some(_) => {
                return Err(fail(
                    Status::METHOD_NOT_VALID_IN_THIS_STATE,
                    "not a reader session",
                ));
            }
            None => &no_tracks,
        };
        // The transport is settled before any session exists, so a refused SETUP leaves none.
        let (transport, reply) = self.choose_transport(&spec, track, tracks)?;
        if self.session.is_none() {
            let id = new_session_id();
            self.server.put_session(SessionInfo {
                id: id.clone(),
                path: path.clone(),
                role: "reader",
                peer: self.peer,
                transport: None,
                since: SystemTime::now(),
                kick: self.cancel.clone(),
            });
            self.session = Some(Session {
                id,
                path,
                activity: Activity::new(),
                role: Role::Reader {
                    stream: stream.clone(),
                    tracks: no_tracks,
                },
                udp_routes: Vec::new(),
            });
        }
        let mut id = String::new();
        if let Some(Session {
            id: sid,
            role: Role::Reader { tracks, .. },
            ..
        }) = self.session.as_mut()
        {
            tracks[track] = Some(transport);
            id = sid.clone();
        }
        self.server.set_session_transport(&id, transport.name());
        let mut r = Response::new(Status::OK);
        r.headers.set("Transport", reply.to_string());
        self.add_session_header(&mut r);
        Ok(r)
    }

    /// The track's transport and the Transport header to answer with.
    fn choose_transport(
        &self,
        spec: &TransportSpec,
        track: usize,
        tracks: &[Option<TrackTransport>],
    ) -> Result<(TrackTransport, TransportSpec)> {
        let mut reply = spec.clone();
        reply.destination = None;
        reply.source = None;
        match spec.lower {
            LowerTransport::Tcp => {
                let used = |ch: u8| {
                    tracks.iter().enumerate().any(|(i, t)| {
                        i != track && matches!(t, Some(TrackTransport::Tcp { rtp, rtcp }) if *rtp == ch || *rtcp == ch)
                    })
                };
                let (rtp, rtcp) = match spec.interleaved {
                    Some((a, b)) if !used(a) && !used(b) && a != b => (a, b),
                    _ => {
                        // No channels asked for, or they clash: pick the first free even pair.
                        let a = (0..=127u8)
                            .map(|i| i * 2)
                            .find(|&a| !used(a) && !used(a + 1))
                            .ok_or_else(|| {
                                fail(Status::UNSUPPORTED_TRANSPORT, "no free channel")
                            })?;
                        (a, a + 1)
                    }
                };
                reply.interleaved = Some((rtp, rtcp));
                reply.client_port = None;
                reply.server_port = None;
                Ok((TrackTransport::Tcp { rtp, rtcp }, reply))
            }
            LowerTransport::Udp => {
                let udp = self
                    .server
                    .udp
                    .as_ref()
                    .ok_or_else(|| fail(Status::UNSUPPORTED_TRANSPORT, "UDP is off"))?;
                let (a, b) = spec.client_port.ok_or_else(|| {
                    fail(Status::UNSUPPORTED_TRANSPORT, "UDP without client_port")
                })?;
                // Media goes to the address the request came from, never to a `destination`
                // the client names: that would make the server a traffic reflector.
                let ip = self.peer.ip();
                if !udp.reaches(&self.peer) {
                    return Err(fail(
                        Status::UNSUPPORTED_TRANSPORT,
                        "UDP does not reach this address family",
                    ));
                }
                let session = self.session.as_ref().map_or("", |s| s.id.as_str());
                for (rtcp, port) in [(false, a), (true, b)] {
                    if !udp.available(session, &(rtcp, SocketAddr::new(ip, port))) {
                        // Another session (same host or NAT) uses these ports: the client can
                        // fall back to TCP.
                        return Err(fail(
                            Status::UNSUPPORTED_TRANSPORT,
                            "client ports in use by another session",
                        ));
                    }
                }
                reply.server_port = Some((udp.rtp_port, udp.rtp_port + 1));
                reply.interleaved = None;
                Ok((
                    TrackTransport::Udp {
                        rtp: SocketAddr::new(ip, a),
                        rtcp: SocketAddr::new(ip, b),
                    },
                    reply,
                ))
            }
        }
    }

    /// The path, track and stream a reader's SETUP URL names.
    fn reader_track(&self, uri: &str) -> Result<(String, usize, Arc<Stream>)> {
        let full = request_path(uri).ok_or_else(|| fail(Status::NOT_FOUND, "no path"))?;
        let registry = &self.server.registry;
        if let Some((base, last)) = split_last_segment(&full) {
            if let Some(t) = track_index(last) {
                // Content-Base resolution gives <path>/trackID=N. Clients that resolve against
                // the request URL instead drop the path's last segment: then the DESCRIBEd (or
                // already set up) path whose parent is `base` is meant.
                let candidates = [
                    Some(base.to_owned()),
                    self.session.as_ref().map(|s| s.path.clone()),
                    self.described.clone(),
                ];
                for path in candidates.into_iter().flatten() {
                    let matches =
                        path == base || split_last_segment(&path).is_some_and(|(p, _)| p == base);
                    if !matches {
                        continue;
                    }
                    if let Some(stream) = registry.ready_stream(&path) {
                        if t < stream.tracks.len() {
                            return Ok((path, t, stream));
                        }
                        return Err(fail(Status::NOT_FOUND, format!("{path} has no track {t}")));
                    }
                }
            }
        }
        if let Some(stream) = registry.ready_stream(&full) {
            if stream.tracks.len() == 1 {
                return Ok((full, 0, stream));
            }
            return Err(fail(
                Status::AGGREGATE_NOT_ALLOWED,
                "SETUP needs a track URL",
            ));
        }
        Err(fail(Status::NOT_FOUND, format!("no stream at {full}")))
    }

    fn play(&mut self, req: &Request) -> Result<Response> {
        self.check_session_header(req)?;
        let Some(session) = &self.session else {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "PLAY without SETUP",
            ));
        };
        let Role::Reader { stream, tracks } = &session.role else {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "PLAY on a publishing session",
            ));
        };
        if let Some(range) = req.headers.get("Range") {
            if !finch_proto::headers::range::is_supported(range) {
                return Err(fail(Status(457), format!("unsupported range {range}")));
            }
        }
        if tracks.iter().all(Option::is_none) {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "PLAY before any track was set up",
            ));
        }
        let base = self.base_url(&req.uri, &session.path);
        if self.playing.is_none() {
            let transport = tracks.iter().flatten().next().map_or("tcp", |t| t.name());
            let info = ReaderInfo {
                session: session.id.clone(),
                peer: self.peer,
                transport,
            };
            // After a PAUSE the reader has had the cached GOP already: it resumes at the next
            // keyframe instead, so sequence numbers never go back.
            let from_cache = !self.paused;
            let joined =
                stream
                    .join(info, self.cancel.clone(), from_cache)
                    .map_err(|e| match e {
                        JoinError::Closed => fail(Status::NOT_FOUND, e.to_string()),
                        JoinError::TooManyReaders => {
                            fail(Status::NOT_ENOUGH_BANDWIDTH, e.to_string())
                        }
                    })?;
            let rtp_info: Vec<RtpInfo> = tracks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.is_some())
                .filter_map(|(i, _)| {
                    let (seq, rtptime) = joined.start.get(i).copied().flatten()?;
                    Some(RtpInfo {
                        url: format!("{base}trackID={i}"),
                        seq,
                        rtptime,
                    })
                })
                .collect();
            let mut routes = Vec::new();
            if let Some(udp) = &self.server.udp {
                for t in tracks.iter().flatten() {
                    if let TrackTransport::Udp { rtp, rtcp } = t {
                        for key in [(false, *rtp), (true, *rtcp)] {
                            let route = Route::Read {
                                activity: session.activity.clone(),
                            };
                            // Checked free at SETUP; a lost race only costs this reader's
                            // receiver reports as signs of life.
                            if udp.add(&session.id, key, route).is_ok()
                                && !session.udp_routes.contains(&key)
                            {
                                routes.push(key);
                            }
                        }
                    }
                }
            }
            tracing::info!(path = %session.path, session = %session.id, peer = %self.peer, transport, "reader started");
            let udp_reader = tracks
                .iter()
                .flatten()
                .any(|t| matches!(t, TrackTransport::Udp { .. }));
            self.playing = Some(Playing {
                id: joined.id,
                rx: joined.rx,
                tracks: tracks.clone(),
                stream: stream.clone(),
                paced: if udp_reader { joined.burst } else { 0 },
            });
            if let Some(s) = self.session.as_mut() {
                s.udp_routes.extend(routes);
            }
            let mut r = Response::new(Status::OK);
            r.headers.set("Range", LIVE_RANGE);
            if !rtp_info.is_empty() {
                r.headers.set("RTP-Info", format_rtp_info(&rtp_info));
            }
            self.add_session_header(&mut r);
            return Ok(r);
        }
        let mut r = Response::new(Status::OK);
        r.headers.set("Range", LIVE_RANGE);
        self.add_session_header(&mut r);
        Ok(r)
    }

    fn pause(&mut self, req: &Request) -> Result<Response> {
        self.check_session_header(req)?;
        if self.session.is_none() {
            return Err(fail(Status::METHOD_NOT_VALID_IN_THIS_STATE, "no session"));
        }
        if let Some(p) = self.playing.take() {
            p.stream.leave(p.id);
            self.paused = true;
        }
        let mut r = Response::new(Status::OK);
        self.add_session_header(&mut r);
        Ok(r)
    }

    fn record(&mut self, req: &Request) -> Result<Response> {
        self.check_session_header(req)?;
        let Some(session) = &self.session else {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "RECORD without ANNOUNCE",
            ));
        };
        let Role::Publisher { tracks, .. } = &session.role else {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "RECORD on a reading session",
            ));
        };
        if tracks.iter().all(Option::is_none) {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "RECORD before SETUP",
            ));
        }
        self.server.registry.set_ready(&session.path, &session.id);
        tracing::info!(path = %session.path, session = %session.id, "publisher recording");
        let mut r = Response::new(Status::OK);
        self.add_session_header(&mut r);
        Ok(r)
    }

    fn teardown(&mut self, req: &Request) -> Result<Response> {
        self.check_session_header(req)?;
        if self.session.is_none() {
            return Err(fail(Status::METHOD_NOT_VALID_IN_THIS_STATE, "no session"));
        }
        self.end_session();
        Ok(Response::new(Status::OK))
    }

    fn parameter(&mut self, req: &Request) -> Result<Response> {
        self.check_session_header(req)?;
        let mut r = Response::new(Status::OK);
        self.add_session_header(&mut r);
        Ok(r)
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

    fn add_session_header(&self, r: &mut Response) {
        if let Some(s) = &self.session {
            r.headers.set(
                "Session",
                format_session(&s.id, self.config.rtsp.session_timeout_secs),
            );
        }
    }

    /// `rtsp://host[:port]/path/`, from the request's authority (so it names the address the
    /// client reached), ending in a slash as CONTRACT.md requires.
    fn base_url(&self, uri: &str, path: &str) -> String {
        let authority = uri
            .split_once("://")
            .and_then(|(_, rest)| rest.split('/').next())
            .map(|a| a.rsplit('@').next().unwrap_or(a).to_owned())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| self.local.to_string());
        format!("rtsp://{authority}/{path}/")
    }
}

/// The track a publisher's SETUP URL names, by the controls it announced.
fn publisher_track(uri: &str, sdp: &Sdp) -> Option<usize> {
    let no_query = uri.split('?').next().unwrap_or(uri).trim_end_matches('/');
    for (i, m) in sdp.media.iter().enumerate() {
        let Some(c) = m.control() else { continue };
        let c = c.trim_end_matches('/');
        if !c.is_empty() && (no_query == c || no_query.ends_with(&format!("/{c}"))) {
            return Some(i);
        }
    }
    let path = request_path(uri)?;
    if let Some(t) = split_last_segment(&path).and_then(|(_, last)| track_index(last)) {
        return (t < sdp.media.len()).then_some(t);
    }
    (sdp.media.len() == 1).then_some(0)
}

/// DESCRIBE advertises in-band parameter sets when the publisher's SDP had none, so players
/// can set up their decoder before the first keyframe arrives: H.264's `sprop-parameter-sets`
/// (RFC 6184 §8.1), H.265's `sprop-vps`/`sprop-sps`/`sprop-pps` (RFC 7798 §7.1).
fn add_in_band_parameter_sets(sdp: &mut Sdp, stream: &Stream) {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use finch_proto::codec::{h264, h265, VideoCodec};
    let Some((track, codec, mut sets)) = stream.in_band_parameter_sets() else {
        return;
    };
    let Some(media) = sdp.media.get_mut(track) else {
        return;
    };
    let fmtp = media.fmtp().unwrap_or_default().to_owned();
    let added: Vec<String> = match codec {
        VideoCodec::H264 => {
            if fmtp.contains("sprop-parameter-sets") {
                return;
            }
            // SPS first, then PPS, as RFC 6184 §8.1 lists them.
            sets.sort_by_key(|s| !h264::is_sps(s));
            let encoded: Vec<String> = sets.iter().map(|s| STANDARD.encode(s)).collect();
            vec![format!("sprop-parameter-sets={}", encoded.join(","))]
        }
        VideoCodec::H265 => {
            if fmtp.contains("sprop-sps") {
                return;
            }
            let mut out = Vec::new();
            for name in ["sprop-vps", "sprop-sps", "sprop-pps"] {
                if let Some(set) = sets.iter().find(|s| h265::sprop_name(s) == Some(name)) {
                    out.push(format!("{name}={}", STANDARD.encode(set)));
                }
            }
            out
        }
    };
    let mut params = fmtp;
    for a in added {
        if !params.is_empty() {
            params.push_str("; ");
        }
        params.push_str(&a);
    }
    media.set_fmtp(&params);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &[u8] = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\na=control:streamid=1\r\n";

    #[test]
    fn publisher_tracks_by_control() {
        let sdp = Sdp::parse(SDP).unwrap();
        assert_eq!(publisher_track("rtsp://h/live/a/streamid=1", &sdp), Some(1));
        assert_eq!(publisher_track("rtsp://h/live/a/streamid=0", &sdp), Some(0));
        assert_eq!(publisher_track("rtsp://h/live/a/streamid=7", &sdp), None);
        let abs = Sdp::parse(b"v=0\r\nm=video 0 RTP/AVP 96\r\na=control:rtsp://h/x/track1\r\nm=audio 0 RTP/AVP 0\r\na=control:rtsp://h/x/track2\r\n").unwrap();
        assert_eq!(publisher_track("rtsp://h/x/track2", &abs), Some(1));
    }
}
