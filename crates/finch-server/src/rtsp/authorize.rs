//! The RTSP side of authorization: one check where a request has been resolved to an action on
//! a path (`auth` decides; this turns the decision into 401 with challenges, or 403, and counts
//! it). What a connection has been allowed once (reading or publishing a path) it keeps for
//! later requests on that path, so a session authorised at SETUP stays authorised for its PLAY
//! or RECORD, whatever the client sends with them.

use super::conn::Conn;
use super::error::{fail, Result};
use super::resolve::Action;
use crate::auth::{self, Ask, Decision, Reason};
use finch_proto::rtsp::{Request, Status};

/// Grants a connection remembers at most.
const MAX_GRANTS: usize = 16;

impl Conn {
    /// Allows `req` to do `action` on `path`, or refuses it.
    pub(crate) fn authorize(&mut self, req: &Request, action: Action, path: &str) -> Result<()> {
        let action = match action {
            Action::None => return Ok(()),
            Action::Read => auth::Action::Read,
            Action::Publish => auth::Action::Publish,
        };
        if self.granted.iter().any(|(a, p)| *a == action && p == path) {
            return Ok(());
        }
        let ask = Ask {
            authorization: req.headers.get("Authorization"),
            method: req.method.as_str(),
            uri: &req.uri,
            peer: self.peer.ip(),
            tls: self.tls,
            action,
            path,
        };
        let refused = |reason: Reason, status: Status| {
            let who = finch_proto::uri::redact(&req.uri).into_owned();
            fail(status, format!("{}: {who}", reason.as_str()))
        };
        match self.shared.auth.decide(&ask) {
            Decision::Allow(user) => {
                tracing::debug!(user, path, action = action.as_str(), "authorized");
                if self.granted.len() >= MAX_GRANTS {
                    self.granted.remove(0);
                }
                self.granted.push((action, path.to_owned()));
                Ok(())
            }
            Decision::Challenge(reason, challenges) => {
                if reason != Reason::Missing {
                    self.shared.metrics.auth_failure(reason.as_str());
                }
                let mut e = refused(reason, Status::UNAUTHORIZED);
                e.headers = challenges
                    .into_iter()
                    .map(|c| ("WWW-Authenticate", c))
                    .collect();
                Err(e)
            }
            Decision::Forbid(reason) => {
                self.shared.metrics.auth_failure(reason.as_str());
                Err(refused(reason, Status::FORBIDDEN))
            }
        }
    }
}
