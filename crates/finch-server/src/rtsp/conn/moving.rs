//! A connection moving between workers on a graceful restart (see `handover`): answering a
//! round (pause at a message boundary, describe itself, wait for the verdict) and, in the next
//! worker, coming back to life from that description.

use super::{media, Conn, BATCH};
use crate::activity::Activity;
use crate::auth::Action;
use crate::handover::{Answer, Cached, Moved, MovedRole, MovedSession, MovedTrack, Round};
use crate::rtsp::session::{
    Playing, Publishing, ReadState, Reading, Role, Session, TrackTransport,
};
use crate::sessions::SessionInfo;
use crate::shared::Shared;
use crate::udp::{Route, RouteSet};
use bytes::BytesMut;
use finch_proto::sdp::Sdp;
use finch_relay::{Evict, Packet, Policy, ReaderInfo, SourceInfo, SourceKind, Start};
use std::future::Future;
use std::os::fd::{OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How each set-up track reaches its peer, as it moves.
fn moved_tracks(tracks: &[Option<TrackTransport>]) -> Vec<Option<MovedTrack>> {
    tracks
        .iter()
        .map(|t| {
            t.map(|t| match t {
                TrackTransport::Tcp { rtp, rtcp } => MovedTrack::Tcp { rtp, rtcp },
                TrackTransport::Udp { rtp, rtcp, pair } => MovedTrack::Udp { rtp, rtcp, pair },
            })
        })
        .collect()
}

impl Conn {
    /// Answers a handover round: true if the connection moved (its task ends quietly).
    pub(super) async fn answer_round<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        round: Round,
        fd: Option<RawFd>,
        rbuf: &BytesMut,
        sock: &mut S,
        batch: &mut Vec<Packet>,
        scratch: &mut media::Scratch,
    ) -> bool {
        let handover = self.shared.handover.clone();
        let Some(fd) = fd.filter(|_| self.waiting.is_none() && self.eligible(round)) else {
            let _ = handover.answer(Answer::Decline);
            return false;
        };
        match round {
            Round::Publishers => {
                // The frame it has begun reaches this worker's readers before they move.
                if let Some(Session {
                    role: Role::Publisher(p),
                    ..
                }) = &self.session
                {
                    p.publisher.flush();
                }
            }
            Round::Others => {
                // Its queue stopped growing with the publisher: write it all, so the reader
                // stands at the head of the stream and the next worker goes on from there.
                if !self.write_queue(sock, batch, scratch).await {
                    let _ = handover.answer(Answer::Decline);
                    return false;
                }
            }
        }
        let moved = self.describe_self(rbuf);
        let (verdict, moved_or_not) = oneshot::channel();
        let paused = Answer::Paused {
            moved: Box::new(moved),
            fd,
            verdict,
        };
        if handover.answer(paused).is_err() {
            return false;
        }
        moved_or_not.await.unwrap_or(false)
    }

    /// Whether this connection can move in `round`.
    fn eligible(&self, round: Round) -> bool {
        match (&self.session, round) {
            (
                Some(Session {
                    role: Role::Publisher(p),
                    ..
                }),
                Round::Publishers,
            ) => p.recording,
            (None, Round::Others) => true,
            (Some(s), Round::Others) => match &s.role {
                Role::Reader(_) => self.shared.handover.path_moving(&s.path),
                Role::Publisher(_) => false,
            },
            _ => false,
        }
    }

    /// Writes every packet the reader's queue holds; false if the write failed.
    async fn write_queue<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        sock: &mut S,
        batch: &mut Vec<Packet>,
        scratch: &mut media::Scratch,
    ) -> bool {
        let write_timeout = Duration::from_secs(self.config.rtsp.write_timeout_secs);
        let udp = self.shared.udp.clone();
        let Some((playing, tracks)) = self.session.as_mut().and_then(Session::playing_mut) else {
            return true;
        };
        loop {
            batch.clear();
            match playing.reader.try_recv(batch, BATCH) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
            let write = media::write(sock, udp.as_deref(), playing, tracks, batch, scratch);
            if !matches!(tokio::time::timeout(write_timeout, write).await, Ok(Ok(_))) {
                return false;
            }
        }
    }

    /// The connection as the next worker needs it.
    fn describe_self(&self, rbuf: &BytesMut) -> Moved {
        let session = self.session.as_ref().map(|s| {
            let since_ms = self
                .shared
                .sessions
                .get(&s.id)
                .and_then(|i| i.since.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            let (tracks, role) = match &s.role {
                Role::Publisher(p) => {
                    let (reports, cache) = p.publisher.stream().cached();
                    (
                        moved_tracks(&p.tracks),
                        MovedRole::Publisher {
                            sdp: p.publisher.stream().sdp.write(),
                            recording: p.recording,
                            numbering: p.publisher.stream().numbering(),
                            reports: reports.iter().map(Cached::of).collect(),
                            cache: cache.iter().map(Cached::of).collect(),
                        },
                    )
                }
                Role::Reader(r) => (
                    moved_tracks(&r.tracks),
                    MovedRole::Reader {
                        state: match r.state {
                            ReadState::Ready => "ready",
                            ReadState::Playing(_) => "playing",
                            ReadState::Paused => "paused",
                        }
                        .into(),
                    },
                ),
            };
            MovedSession {
                id: s.id.clone(),
                path: s.path.clone(),
                since_ms,
                tracks,
                role,
            }
        });
        Moved {
            peer: self.peer,
            local: self.local,
            unparsed: rbuf.to_vec(),
            unsent: self.out.to_vec(),
            described: self.described.clone(),
            granted: self
                .granted
                .iter()
                .map(|(a, p)| (a.as_str().to_owned(), p.clone()))
                .collect(),
            requested: self.requested,
            session,
        }
    }
}

/// A connection task to run.
pub(crate) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Re-creates a connection the previous worker handed over: its session (a publisher's path
/// announced again with the stream's numbering, a reader joined at the next packet) and the
/// task that serves it, to be spawned once every connection of the handover is in place.
pub(crate) fn adopt(shared: &Arc<Shared>, m: Moved, fd: OwnedFd) -> Result<Task, String> {
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true).map_err(|e| e.to_string())?;
    let sock = tokio::net::TcpStream::from_std(std).map_err(|e| e.to_string())?;
    let _ = sock.set_nodelay(true);
    let mut conn = Conn::new(shared.clone(), m.peer, m.local, false);
    conn.out.extend_from_slice(&m.unsent);
    conn.described = m.described;
    conn.requested = m.requested;
    conn.granted = m
        .granted
        .into_iter()
        .filter_map(|(a, p)| {
            let action = match a.as_str() {
                "read" => Action::Read,
                "publish" => Action::Publish,
                _ => return None,
            };
            Some((action, p))
        })
        .collect();
    if let Some(s) = m.session {
        conn.session = Some(conn.adopt_session(s)?);
    }
    let id = shared.next_conn_id();
    let span = tracing::info_span!("conn", id, peer = %m.peer, tls = false, adopted = true);
    let rbuf = BytesMut::from(&m.unparsed[..]);
    let slot = crate::rtsp::listener::Slot::adopted(shared, m.peer.ip());
    Ok(Box::pin(
        async move {
            let _slot = slot;
            conn.serve_tcp(sock, rbuf, CancellationToken::new()).await;
        }
        .instrument(span),
    ))
}

impl Conn {
    fn adopt_session(&mut self, s: MovedSession) -> Result<Session, String> {
        let pairs = self.shared.udp.as_ref().map_or(0, |u| u.pair_count());
        let mut tracks: Vec<Option<TrackTransport>> = Vec::with_capacity(s.tracks.len());
        for t in &s.tracks {
            tracks.push(match *t {
                None => None,
                Some(MovedTrack::Tcp { rtp, rtcp }) => Some(TrackTransport::Tcp { rtp, rtcp }),
                Some(MovedTrack::Udp { rtp, rtcp, pair }) if pair < pairs => {
                    Some(TrackTransport::Udp { rtp, rtcp, pair })
                }
                Some(MovedTrack::Udp { .. }) => return Err("its UDP pair is not here".into()),
            });
        }
        let transport = tracks.iter().flatten().next().map_or("tcp", |t| t.name());
        let activity = Activity::new();
        let mut routes = self
            .shared
            .udp
            .as_ref()
            .map(|u| RouteSet::new(u.routes().clone(), &s.id));
        let since = UNIX_EPOCH + Duration::from_millis(s.since_ms);
        let (role, role_name) = match s.role {
            MovedRole::Publisher {
                sdp,
                recording,
                numbering,
                reports,
                cache,
            } => {
                let sdp = Sdp::parse(sdp.as_bytes()).map_err(|e| e.to_string())?;
                let path_config = self
                    .config
                    .paths
                    .find(&s.path)
                    .ok_or_else(|| format!("{} is not a configured path here", s.path))?;
                let kick = self.cancel.clone();
                let source = SourceInfo {
                    kind: SourceKind::Publisher,
                    id: s.id.clone(),
                    peer: self.peer,
                    transport: Some(transport),
                    evict: Evict(Some(Arc::new(move || kick.cancel()))),
                };
                let policy = Policy {
                    grace: Duration::from_secs(path_config.publisher_grace_secs),
                    takeover: path_config.override_publisher,
                };
                let publisher = self
                    .shared
                    .registry
                    .announce(&s.path, source, sdp, self.shared.relay_params(), policy)
                    .map_err(|e| e.to_string())?;
                if !publisher.stream().resume_numbering(&numbering) {
                    return Err("its numbering does not fit its tracks".into());
                }
                let now = std::time::Instant::now();
                publisher.stream().restore(
                    reports.into_iter().map(|c| c.packet(now)).collect(),
                    cache.into_iter().map(|c| c.packet(now)).collect(),
                );
                publisher.set_transport(transport);
                add_routes(&mut routes, &tracks, |track| Route::Publish {
                    feed: publisher.feed(),
                    track,
                    activity: activity.clone(),
                })?;
                if recording && !publisher.go_live() {
                    return Err("its path closed".into());
                }
                let role = Role::Publisher(Publishing {
                    publisher,
                    tracks,
                    recording,
                    since: std::time::Instant::now(),
                });
                (role, "publisher")
            }
            MovedRole::Reader { state } => {
                let stream = self
                    .shared
                    .registry
                    .live_stream(&s.path)
                    .ok_or_else(|| format!("no stream on {}", s.path))?;
                if stream.tracks.len() != tracks.len() {
                    return Err("its stream has other tracks here".into());
                }
                let state = match state.as_str() {
                    "ready" => ReadState::Ready,
                    "paused" => ReadState::Paused,
                    _ => {
                        let set_up: Vec<usize> = tracks
                            .iter()
                            .enumerate()
                            .filter_map(|(i, t)| t.map(|_| i))
                            .collect();
                        let info = ReaderInfo {
                            session: s.id.clone(),
                            peer: self.peer,
                            transport,
                        };
                        let reader = stream
                            .join(info, &set_up, Start::Next)
                            .map_err(|e| e.to_string())?;
                        ReadState::Playing(Playing { reader, paced: 0 })
                    }
                };
                add_routes(&mut routes, &tracks, |_| Route::Read {
                    activity: activity.clone(),
                })?;
                let role = Role::Reader(Reading {
                    stream,
                    tracks,
                    state,
                });
                (role, "reader")
            }
        };
        let entry = self.shared.sessions.insert(SessionInfo {
            id: s.id.clone(),
            path: s.path.clone(),
            role: role_name,
            peer: self.peer,
            transport: Some(transport),
            since: if since > SystemTime::now() {
                SystemTime::now()
            } else {
                since
            },
            kick: self.cancel.clone(),
        });
        Ok(Session {
            id: s.id,
            path: s.path,
            activity,
            role,
            routes,
            entry,
        })
    }
}

/// The UDP routes of a session's set-up tracks (its client's RTP and RTCP ports).
fn add_routes(
    routes: &mut Option<RouteSet>,
    tracks: &[Option<TrackTransport>],
    route: impl Fn(usize) -> Route,
) -> Result<(), String> {
    for (i, t) in tracks.iter().enumerate() {
        if let (Some(TrackTransport::Udp { rtp, rtcp, .. }), Some(routes)) = (t, routes.as_mut()) {
            for key in [(false, *rtp), (true, *rtcp)] {
                routes.add(key, route(i)).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}
