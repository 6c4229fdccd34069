//! A publisher's methods: ANNOUNCE takes the path, SETUP (mode=record) says how each track's
//! media arrives, RECORD makes the path live for readers.

use super::conn::Conn;
use super::error::{fail, Result, RtspError};
use super::resolve::Target;
use super::session::{Publishing, Role, Session, TrackTransport};
use super::transport::{negotiate, pick, Peer};
use crate::activity::Activity;
use crate::cluster::Claim;
use crate::sessions::{new_session_id, SessionInfo};
use crate::udp::{Route, RouteSet};
use finch_proto::rtsp::{Request, Response, Status};
use finch_proto::sdp::Sdp;
use finch_relay::{Evict, Policy, SourceInfo, SourceKind};
use std::sync::Arc;
use std::time::SystemTime;

impl Conn {
    pub(crate) fn announce(&mut self, req: &Request, target: &Target) -> Result<Response> {
        let path = target
            .path
            .clone()
            .ok_or_else(|| fail(Status::BAD_REQUEST, "ANNOUNCE needs a path"))?;
        let path_config = match self.config.paths.find(&path) {
            None => {
                return Err(fail(
                    Status::NOT_FOUND,
                    format!("{path} is not a configured path"),
                ))
            }
            Some(p) if p.source != "publisher" => {
                return Err(fail(
                    Status::FORBIDDEN,
                    format!(
                        "{path} is pulled from {}",
                        finch_proto::uri::redact(&p.source)
                    ),
                ));
            }
            Some(p) => p,
        };
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
        let tracks = sdp.media.len();
        let limits = self.config.limits.clone();
        let ip = self.peer.ip();
        if tracks > limits.max_tracks_per_session {
            return Err(self.over_limit("max_tracks_per_session", Status::NOT_ENOUGH_BANDWIDTH));
        }
        let params = self.shared.relay_params();
        if let Some(s) = self.session.as_mut() {
            // The same session announcing again on its own path replaces its description.
            let Role::Publisher(p) = &mut s.role else {
                self.shared.refused("max_sessions_per_connection", ip);
                return Err(fail(
                    Status::NOT_ENOUGH_BANDWIDTH,
                    "this connection already has a session",
                ));
            };
            if s.path != path {
                // Another path would be a second session: Finch holds one per connection.
                self.shared.refused("max_sessions_per_connection", ip);
                return Err(fail(
                    Status::NOT_ENOUGH_BANDWIDTH,
                    "this connection already has a session",
                ));
            }
            if !p.publisher.reannounce(sdp, params) {
                return Err(fail(
                    Status::METHOD_NOT_VALID_IN_THIS_STATE,
                    "this connection already has a session",
                ));
            }
            p.tracks = vec![None; tracks];
            p.recording = false;
            p.since = std::time::Instant::now();
            if let Some(r) = s.routes.as_mut() {
                // Its routes fed the stream just replaced.
                r.clear();
            }
            tracing::info!(path = %path, session = %s.id, "publisher announced again");
            return Ok(self.ok());
        }
        if self.shared.registry.len() >= limits.max_paths {
            return Err(self.over_limit("max_paths", Status::SERVICE_UNAVAILABLE));
        }
        if limits.max_publishers_per_ip > 0 {
            let mine = self
                .shared
                .registry
                .list()
                .iter()
                .filter(|p| p.source.peer.ip() == ip)
                .count();
            if mine >= limits.max_publishers_per_ip {
                return Err(self.over_limit("max_publishers_per_ip", Status::SERVICE_UNAVAILABLE));
            }
        }
        if let Some(cluster) = self.shared.cluster.clone() {
            // One owner per path in the cluster: claimed before the path is taken here.
            match cluster.claim(&self.shared, &path, path_config.override_publisher) {
                Claim::Pending => return Err(fail(Status::CONTINUE, "claiming the path")),
                Claim::Lost(node) => {
                    return Err(fail(
                        Status::METHOD_NOT_VALID_IN_THIS_STATE,
                        format!("{path} is published on node {node}"),
                    ))
                }
                Claim::Won | Claim::Unreachable => {}
            }
        }
        let id = new_session_id();
        // Another publisher taking this path over closes this connection.
        let kick = self.cancel.clone();
        let source = SourceInfo {
            kind: SourceKind::Publisher,
            id: id.clone(),
            peer: self.peer,
            transport: None,
            evict: Evict(Some(Arc::new(move || kick.cancel()))),
        };
        let policy = Policy {
            grace: std::time::Duration::from_secs(path_config.publisher_grace_secs),
            takeover: path_config.override_publisher,
        };
        let publisher = self
            .shared
            .registry
            .announce(&path, source, sdp, params, policy)
            .map_err(|e| fail(Status::METHOD_NOT_VALID_IN_THIS_STATE, e.to_string()))?;
        tracing::info!(path = %path, session = %id, peer = %self.peer, "publisher announced");
        let entry = self.shared.sessions.insert(SessionInfo {
            id: id.clone(),
            path: path.clone(),
            role: "publisher",
            peer: self.peer,
            transport: None,
            since: SystemTime::now(),
            kick: self.cancel.clone(),
        });
        let routes = self
            .shared
            .udp
            .as_ref()
            .map(|u| RouteSet::new(u.routes().clone(), &id));
        self.session = Some(Session {
            id,
            path,
            activity: Activity::new(),
            role: Role::Publisher(Publishing {
                publisher,
                tracks: vec![None; tracks],
                recording: false,
                since: std::time::Instant::now(),
            }),
            routes,
            entry,
        });
        Ok(self.ok())
    }

    /// A refusal for passing `limit` (its config key), counted.
    pub(crate) fn over_limit(&self, limit: &'static str, status: Status) -> RtspError {
        self.shared.refused(limit, self.peer.ip());
        fail(status, format!("{limit} reached"))
    }

    pub(crate) fn setup_publisher(&mut self, req: &Request, target: Target) -> Result<Response> {
        let spec = pick(req, self.shared.udp.as_deref())?;
        let peer = Peer {
            addr: self.peer,
            local: self.local,
        };
        let udp = self.shared.udp.clone();
        let Some(session) = self.session.as_mut() else {
            return Err(fail(Status::SESSION_NOT_FOUND, "no session"));
        };
        let Role::Publisher(p) = &mut session.role else {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "not publishing",
            ));
        };
        let track = target
            .track
            .ok_or_else(|| fail(Status::NOT_FOUND, "no announced track"))?;
        let (transport, reply) = negotiate(&spec, track, &p.tracks, &peer, udp.as_deref())?;
        if let (TrackTransport::Udp { rtp, rtcp, .. }, Some(routes)) =
            (transport, session.routes.as_mut())
        {
            for (is_rtcp, addr) in [(false, rtp), (true, rtcp)] {
                let route = Route::Publish {
                    feed: p.publisher.feed(),
                    track,
                    activity: session.activity.clone(),
                };
                routes
                    .add((is_rtcp, addr), route)
                    .map_err(|e| fail(Status::UNSUPPORTED_TRANSPORT, e.to_string()))?;
            }
        }
        if let Some(slot) = p.tracks.get_mut(track) {
            *slot = Some(transport);
        }
        p.publisher.set_transport(transport.name());
        session.entry.set_transport(transport.name());
        let mut r = self.ok();
        r.headers.set("Transport", reply.to_string());
        Ok(r)
    }

    pub(crate) fn record(&mut self) -> Result<Response> {
        let Some(session) = self.session.as_mut() else {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "RECORD without ANNOUNCE",
            ));
        };
        let Role::Publisher(p) = &mut session.role else {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "RECORD on a reading session",
            ));
        };
        if p.tracks.iter().all(Option::is_none) {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "RECORD before SETUP",
            ));
        }
        if !p.publisher.go_live() {
            return Err(fail(Status::NOT_FOUND, "the path was closed"));
        }
        p.recording = true;
        tracing::info!(path = %session.path, session = %session.id, "publisher recording");
        Ok(self.ok())
    }
}
