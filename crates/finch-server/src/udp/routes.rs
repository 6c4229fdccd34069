//! The UDP routing table: from a peer's address (and which socket it sent to) to what its
//! datagrams mean.
//!
//! A publisher's UDP SETUP adds routes from its client RTP/RTCP addresses to its stream and
//! track; a reader's adds routes that only count as signs of life (receiver reports, hole
//! punching), at SETUP, so two sessions can never both be given the same client ports. Each
//! route belongs to one session: another cannot take or remove it. A session's routes live in
//! its [`RouteSet`], which removes them when dropped, however the session ends.

use crate::activity::Activity;
use finch_relay::Feed;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

/// Where a datagram from a known address goes.
#[derive(Clone)]
pub enum Route {
    /// A publisher's media for a track.
    Publish {
        /// The publisher's right to push into its stream.
        feed: Feed,
        /// The track.
        track: usize,
        /// The publisher's session.
        activity: Activity,
    },
    /// A reader's RTCP or hole punching: only a sign of life.
    Read {
        /// The reader's session.
        activity: Activity,
    },
}

/// A route key: which socket (RTCP or RTP) and the peer's (canonical) address.
pub type RouteKey = (bool, SocketAddr);

/// Why a route could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Another session receives from or sends to that address already.
    #[error("the client ports are in use by another session")]
    Taken,
}

/// Every route.
#[derive(Default)]
pub struct Routes(RwLock<HashMap<RouteKey, (String, Route)>>);

impl Routes {
    /// Where a datagram from `key` goes.
    pub(crate) fn lookup(&self, key: &RouteKey) -> Option<Route> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map(|(_, r)| r.clone())
    }

    /// How many routes there are.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One session's routes.
pub struct RouteSet {
    routes: Arc<Routes>,
    owner: String,
    keys: Vec<RouteKey>,
}

impl RouteSet {
    /// An empty set for session `owner`.
    pub fn new(routes: Arc<Routes>, owner: &str) -> RouteSet {
        RouteSet {
            routes,
            owner: owner.to_owned(),
            keys: Vec::new(),
        }
    }

    /// Adds (or replaces) the session's route at `key`; refused if another session holds it.
    pub fn add(&mut self, key: RouteKey, route: Route) -> Result<(), RouteError> {
        let mut map = self.routes.0.write().unwrap_or_else(|e| e.into_inner());
        match map.get(&key) {
            Some((owner, _)) if *owner != self.owner => Err(RouteError::Taken),
            _ => {
                map.insert(key, (self.owner.clone(), route));
                drop(map);
                if !self.keys.contains(&key) {
                    self.keys.push(key);
                }
                Ok(())
            }
        }
    }

    /// Removes every route of the set.
    pub fn clear(&mut self) {
        let mut map = self.routes.0.write().unwrap_or_else(|e| e.into_inner());
        for k in self.keys.drain(..) {
            if map.get(&k).is_some_and(|(owner, _)| *owner == self.owner) {
                map.remove(&k);
            }
        }
    }
}

impl Drop for RouteSet {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_belongs_to_one_session_and_goes_with_it() {
        let routes = Arc::new(Routes::default());
        let key: RouteKey = (false, "127.0.0.1:4000".parse().unwrap());
        let read = || Route::Read {
            activity: Activity::new(),
        };
        let mut a = RouteSet::new(routes.clone(), "a");
        let mut b = RouteSet::new(routes.clone(), "b");
        a.add(key, read()).unwrap();
        a.add(key, read()).unwrap();
        assert_eq!(b.add(key, read()), Err(RouteError::Taken));
        drop(b);
        assert!(routes.lookup(&key).is_some(), "b removed nothing of a's");
        drop(a);
        assert!(routes.is_empty());
    }
}
