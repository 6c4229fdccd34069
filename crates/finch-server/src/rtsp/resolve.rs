//! From a request to what it acts on: a path, maybe a track, and the action (read or publish).
//!
//! This is the one place a request URI is interpreted, so the decision "may this client do
//! this here" has one place to live too (authorization, per CONTRACT.md's actions: ANNOUNCE,
//! RECORD and SETUP mode=record publish; DESCRIBE, SETUP and PLAY read; OPTIONS needs nothing).
//!
//! CONTRACT.md "Paths": a path is the URL path without its leading slash and query; track
//! controls are `<path>/trackID=N` relative to a Content-Base ending in `/`. Clients that
//! resolve a control against the request URL instead (dropping the last path segment) still
//! land on the track: the DESCRIBEd or already set-up path whose parent matches is meant.

use super::error::{fail, Result};
use super::session::{Role, Session};
use finch_proto::rtsp::{Method, Request, Status};
use finch_proto::sdp::Sdp;
use finch_proto::uri::{request_path, split_last_segment, track_index};
use finch_relay::{Registry, Stream};
use std::sync::Arc;

/// What a request does to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing path-specific (OPTIONS, keep-alives, TEARDOWN).
    None,
    /// Reads the path's stream.
    Read,
    /// Publishes on the path.
    Publish,
}

/// A resolved request.
pub(crate) struct Target {
    pub(crate) action: Action,
    /// The path, when the request names one.
    pub(crate) path: Option<String>,
    /// The track a SETUP names.
    pub(crate) track: Option<usize>,
    /// The live stream a reader's SETUP found.
    pub(crate) stream: Option<Arc<Stream>>,
}

impl Target {
    fn new(action: Action, path: Option<String>) -> Target {
        Target {
            action,
            path,
            track: None,
            stream: None,
        }
    }

    /// The path, or 404.
    pub(crate) fn path(&self) -> Result<&str> {
        self.path
            .as_deref()
            .ok_or_else(|| fail(Status::NOT_FOUND, "the request names no path"))
    }
}

/// What the connection knows that resolution needs.
pub(crate) struct Context<'a> {
    pub(crate) session: Option<&'a Session>,
    /// The path of this connection's last DESCRIBE.
    pub(crate) described: Option<&'a str>,
    pub(crate) registry: &'a Registry,
}

/// Resolves a request; a SETUP for a track that does not exist is refused here (404).
pub(crate) fn resolve(req: &Request, cx: &Context<'_>) -> Result<Target> {
    let path = request_path(&req.uri);
    let session_path = cx.session.map(|s| s.path.clone());
    Ok(match req.method {
        Method::Describe => Target::new(Action::Read, path),
        Method::Announce => Target::new(Action::Publish, path),
        Method::Setup => match cx.session.map(|s| &s.role) {
            Some(Role::Publisher(p)) => {
                let sdp = &p.publisher.stream().sdp;
                let track = publisher_track(&req.uri, sdp).ok_or_else(|| {
                    fail(
                        Status::NOT_FOUND,
                        format!("no announced track at {}", req.uri),
                    )
                })?;
                let mut t = Target::new(Action::Publish, session_path);
                t.track = Some(track);
                t
            }
            _ => {
                let mut t = reader_track(&req.uri, cx)?;
                // CONTRACT.md: a SETUP with mode=record publishes, whatever else it names.
                t.action = setup_action(req);
                t
            }
        },
        Method::Play => Target::new(Action::Read, session_path.or(path)),
        Method::Record => Target::new(Action::Publish, session_path.or(path)),
        _ => Target::new(Action::None, session_path.or(path)),
    })
}

/// A SETUP's action: publish with `mode=record` (RFC 2326 §12.39), else read.
fn setup_action(req: &Request) -> Action {
    let record = req.headers.get("Transport").is_some_and(|t| {
        t.to_ascii_lowercase()
            .replace('"', "")
            .contains("mode=record")
    });
    if record {
        Action::Publish
    } else {
        Action::Read
    }
}

/// What a request would act on if its target existed: authentication comes before a 404, so
/// a client without credentials learns nothing about which paths exist.
pub(crate) fn unresolved(req: &Request, cx: &Context<'_>) -> Option<(Action, String)> {
    let session = cx
        .session
        .map(|s| (s.path.clone(), matches!(s.role, Role::Publisher(_))));
    let path = request_path(&req.uri);
    match req.method {
        Method::Describe => Some((Action::Read, path?)),
        Method::Announce | Method::Record => {
            Some((Action::Publish, session.map(|s| s.0).or(path)?))
        }
        Method::Play => Some((Action::Read, session.map(|s| s.0).or(path)?)),
        Method::Setup => {
            if let Some((p, true)) = session {
                return Some((Action::Publish, p));
            }
            let full = path?;
            let base = match split_last_segment(&full) {
                Some((base, last)) if track_index(last).is_some() => base.to_owned(),
                _ => full,
            };
            Some((setup_action(req), base))
        }
        _ => None,
    }
}

/// The path, track and stream a reader's SETUP URL names.
fn reader_track(uri: &str, cx: &Context<'_>) -> Result<Target> {
    let full = request_path(uri).ok_or_else(|| fail(Status::NOT_FOUND, "no path"))?;
    let found = |path: String, track: usize, stream: Arc<Stream>| Target {
        action: Action::Read,
        path: Some(path),
        track: Some(track),
        stream: Some(stream),
    };
    if let Some((base, last)) = split_last_segment(&full) {
        if let Some(t) = track_index(last) {
            let candidates = [
                Some(base.to_owned()),
                cx.session.map(|s| s.path.clone()),
                cx.described.map(str::to_owned),
            ];
            for path in candidates.into_iter().flatten() {
                let matches =
                    path == base || split_last_segment(&path).is_some_and(|(p, _)| p == base);
                if !matches {
                    continue;
                }
                if let Some(stream) = cx.registry.live_stream(&path) {
                    if t < stream.tracks.len() {
                        return Ok(found(path, t, stream));
                    }
                    return Err(fail(Status::NOT_FOUND, format!("{path} has no track {t}")));
                }
            }
        }
    }
    if let Some(stream) = cx.registry.live_stream(&full) {
        if stream.tracks.len() == 1 {
            return Ok(found(full, 0, stream));
        }
        return Err(fail(
            Status::AGGREGATE_NOT_ALLOWED,
            "SETUP needs a track URL",
        ));
    }
    Err(fail(Status::NOT_FOUND, format!("no stream at {full}")))
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

    #[test]
    fn actions_follow_the_contract() {
        let registry = Registry::new();
        let cx = Context {
            session: None,
            described: None,
            registry: &registry,
        };
        let req = |m: Method| Request::new(m, "rtsp://h/live/cam1?x=1");
        let t = resolve(&req(Method::Describe), &cx).unwrap();
        assert_eq!(
            (t.action, t.path.as_deref()),
            (Action::Read, Some("live/cam1"))
        );
        assert_eq!(
            resolve(&req(Method::Announce), &cx).unwrap().action,
            Action::Publish
        );
        assert_eq!(
            resolve(&req(Method::Options), &cx).unwrap().action,
            Action::None
        );
        // A reader's SETUP on a path with no stream: 404, decided here.
        let e = resolve(
            &Request::new(Method::Setup, "rtsp://h/live/cam1/trackID=0"),
            &cx,
        )
        .err()
        .unwrap();
        assert_eq!(e.status, Status::NOT_FOUND);
    }
}
