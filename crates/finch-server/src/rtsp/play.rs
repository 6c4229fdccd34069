//! A reader's methods: DESCRIBE, SETUP (one track at a time, all on one path), PLAY (joining the
//! stream at the GOP cache) and PAUSE (leaving it; the next PLAY resumes at a keyframe).

use super::conn::Conn;
use super::describe::describe;
use super::error::{fail, Result};
use super::resolve::Target;
use super::session::{Playing, ReadState, Reading, Role, Session, TrackTransport};
use super::transport::{negotiate, pick, Peer};
use crate::activity::Activity;
use crate::cluster::Find;
use crate::sessions::{new_session_id, SessionInfo};
use crate::udp::{Route, RouteSet};
use finch_proto::headers::range::LIVE_RANGE;
use finch_proto::headers::rtp_info::{format_rtp_info, RtpInfo};
use finch_proto::rtsp::{Request, Response, Status};
use finch_relay::{JoinError, ReaderInfo, Start};
use std::sync::Arc;
use std::time::SystemTime;

/// The longest a DESCRIBE waits for the cluster to say where a path is.
const CLUSTER_ANSWER: std::time::Duration = std::time::Duration::from_secs(5);

impl Conn {
    pub(crate) fn describe(&mut self, req: &Request, target: &Target) -> Result<Response> {
        let path = target.path()?.to_owned();
        let Some(stream) = self.shared.registry.live_stream(&path) else {
            if self.shared.pulls.demand(&path) {
                return Err(self.wait_for_camera(&path));
            }
            if let Some(cluster) = self.shared.cluster.clone() {
                // Not here: another node may publish it (CONTRACT.md "Cluster").
                match cluster.find(&self.shared, &path) {
                    Find::Pending => {
                        // Redis answers within its bound; this one guards against a lost answer.
                        let now = std::time::Instant::now();
                        match self.wait_until {
                            Some(t) if now >= t => {
                                self.wait_until = None;
                                return Err(fail(
                                    Status::SERVICE_UNAVAILABLE,
                                    "the cluster did not answer in time",
                                ));
                            }
                            Some(_) => {}
                            None => self.wait_until = Some(now + CLUSTER_ANSWER),
                        }
                        return Err(fail(Status::CONTINUE, "asking the cluster"));
                    }
                    Find::Pulling => {
                        self.wait_until = None;
                        self.shared.pulls.demand(&path);
                        return Err(self.wait_for_camera(&path));
                    }
                    Find::Absent => {}
                }
            }
            return Err(fail(Status::NOT_FOUND, format!("no stream on {path}")));
        };
        let sdp = describe(&stream, self.local.ip());
        let mut r = self.ok().with_body("application/sdp", sdp.write());
        r.headers
            .set("Content-Base", self.base_url(&req.uri, &path));
        self.described = Some(path);
        Ok(r)
    }

    /// An on-demand camera has been asked to start: the DESCRIBE waits for it, up to
    /// `source_on_demand_start_timeout_secs`, then gets 503 (never a hang).
    fn wait_for_camera(&mut self, path: &str) -> super::error::RtspError {
        match self.wait_until {
            Some(t) if std::time::Instant::now() >= t => {
                self.wait_until = None;
                fail(
                    Status::SERVICE_UNAVAILABLE,
                    format!("the camera of {path} did not come in time"),
                )
            }
            Some(_) => fail(Status::CONTINUE, "still waiting for the camera"),
            None => {
                let wait = self.shared.pulls.start_timeout(path).unwrap_or_default();
                self.wait_until = Some(std::time::Instant::now() + wait);
                fail(Status::CONTINUE, "waiting for the camera")
            }
        }
    }

    pub(crate) fn setup_reader(&mut self, req: &Request, target: Target) -> Result<Response> {
        let spec = pick(req, self.shared.udp.as_deref())?;
        if spec.is_record() {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "mode=record without ANNOUNCE",
            ));
        }
        let (Some(path), Some(track), Some(stream)) = (target.path, target.track, target.stream)
        else {
            return Err(fail(Status::NOT_FOUND, "no such track"));
        };
        let no_tracks = vec![None; stream.tracks.len()];
        let tracks = match self.session.as_ref().map(|s| (&s.path, &s.role)) {
            Some((p, Role::Reader(r))) => {
                if *p != path {
                    // Another path would be a second session: Finch holds one per connection.
                    return Err(self
                        .over_limit("max_sessions_per_connection", Status::NOT_ENOUGH_BANDWIDTH));
                }
                if matches!(r.state, ReadState::Playing(_)) {
                    return Err(fail(
                        Status::METHOD_NOT_VALID_IN_THIS_STATE,
                        "SETUP while playing",
                    ));
                }
                if !Arc::ptr_eq(&r.stream, &stream) {
                    // The publisher left and came back between two SETUPs: the old
                    // description is void.
                    return Err(fail(Status::NOT_FOUND, "the stream was replaced"));
                }
                &r.tracks
            }
            Some(_) => {
                return Err(fail(
                    Status::METHOD_NOT_VALID_IN_THIS_STATE,
                    "not a reader session",
                ));
            }
            None => &no_tracks,
        };
        let peer = Peer {
            addr: self.peer,
            local: self.local,
        };
        let udp = self.shared.udp.clone();
        let (transport, reply) = negotiate(&spec, track, tracks, &peer, udp.as_deref())?;
        // The session exists only once its transport is settled, so a refused SETUP leaves none.
        let id = self
            .session
            .as_ref()
            .map_or_else(new_session_id, |s| s.id.clone());
        let activity = self
            .session
            .as_ref()
            .map_or_else(Activity::new, |s| s.activity.clone());
        let mut fresh_routes = None;
        let routes = match self.session.as_mut() {
            Some(s) => s.routes.as_mut(),
            None => {
                fresh_routes = udp.as_ref().map(|u| RouteSet::new(u.routes().clone(), &id));
                fresh_routes.as_mut()
            }
        };
        if let (TrackTransport::Udp { rtp, rtcp, .. }, Some(routes)) = (transport, routes) {
            // The client's ports are this session's from now on: a second session asking for
            // them is refused even before either plays. Datagrams from them are receiver
            // reports, signs of life.
            for key in [(false, rtp), (true, rtcp)] {
                let route = Route::Read {
                    activity: activity.clone(),
                };
                routes
                    .add(key, route)
                    .map_err(|e| fail(Status::UNSUPPORTED_TRANSPORT, e.to_string()))?;
            }
        }
        if self.session.is_none() {
            let entry = self.shared.sessions.insert(SessionInfo {
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
                activity,
                role: Role::Reader(Reading {
                    stream,
                    tracks: no_tracks.clone(),
                    state: ReadState::Ready,
                }),
                routes: fresh_routes,
                entry,
            });
        }
        if let Some(s) = self.session.as_mut() {
            if let Role::Reader(r) = &mut s.role {
                if let Some(slot) = r.tracks.get_mut(track) {
                    *slot = Some(transport);
                }
            }
            s.entry.set_transport(transport.name());
        }
        let mut r = self.ok();
        r.headers.set("Transport", reply.to_string());
        Ok(r)
    }

    pub(crate) fn play(&mut self, req: &Request) -> Result<Response> {
        if let Some(range) = req.headers.get("Range") {
            if !finch_proto::headers::range::is_supported(range) {
                return Err(fail(Status(457), format!("unsupported range {range}")));
            }
        }
        let peer = self.peer;
        let Some(session) = self.session.as_mut() else {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "PLAY without SETUP",
            ));
        };
        let Role::Reader(reading) = &mut session.role else {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "PLAY on a publishing session",
            ));
        };
        let set_up: Vec<usize> = reading
            .tracks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.map(|_| i))
            .collect();
        if set_up.is_empty() {
            return Err(fail(
                Status::METHOD_NOT_VALID_IN_THIS_STATE,
                "PLAY before any track was set up",
            ));
        }
        let mut rtp_info = Vec::new();
        let start = match reading.state {
            ReadState::Playing(_) => None,
            ReadState::Ready => Some(Start::Cache),
            // It has had the cached GOP already: resume at the next keyframe, so sequence
            // numbers never go back.
            ReadState::Paused => Some(Start::NextKey),
        };
        if let Some(start) = start {
            let transport = reading
                .tracks
                .iter()
                .flatten()
                .next()
                .map_or("tcp", |t| t.name());
            let info = ReaderInfo {
                session: session.id.clone(),
                peer,
                transport,
            };
            let reader = reading
                .stream
                .join(info, &set_up, start)
                .map_err(|e| match e {
                    JoinError::Closed => fail(Status::NOT_FOUND, e.to_string()),
                    JoinError::TooManyReaders => fail(Status::NOT_ENOUGH_BANDWIDTH, e.to_string()),
                })?;
            rtp_info = set_up
                .iter()
                .filter_map(|&i| {
                    let (seq, rtptime) = reader.start().get(i).copied().flatten()?;
                    Some((i, seq, rtptime))
                })
                .collect();
            let udp_reader = reading
                .tracks
                .iter()
                .flatten()
                .any(|t| matches!(t, TrackTransport::Udp { .. }));
            let paced = if udp_reader { reader.backlog() } else { 0 };
            tracing::info!(path = %session.path, session = %session.id, %peer, transport, "reader started");
            reading.state = ReadState::Playing(Playing { reader, paced });
        }
        let path = session.path.clone();
        let base = self.base_url(&req.uri, &path);
        let mut r = self.ok();
        r.headers.set("Range", LIVE_RANGE);
        if !rtp_info.is_empty() {
            let entries: Vec<RtpInfo> = rtp_info
                .into_iter()
                .map(|(i, seq, rtptime)| RtpInfo {
                    url: format!("{base}trackID={i}"),
                    seq,
                    rtptime,
                })
                .collect();
            r.headers.set("RTP-Info", format_rtp_info(&entries));
        }
        Ok(r)
    }

    pub(crate) fn pause(&mut self) -> Result<Response> {
        let Some(session) = self.session.as_mut() else {
            return Err(fail(Status::METHOD_NOT_VALID_IN_THIS_STATE, "no session"));
        };
        if let Role::Reader(r) = &mut session.role {
            if matches!(r.state, ReadState::Playing(_)) {
                // Dropping the reader leaves the stream.
                r.state = ReadState::Paused;
            }
        }
        Ok(self.ok())
    }
}
