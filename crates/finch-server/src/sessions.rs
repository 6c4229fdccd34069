//! The table of live RTSP sessions, for the admin API (`GET /api/v1/sessions`, kick) and the
//! metrics.
//!
//! A connection that creates a session gets an [`Entry`]: dropping it takes the session out of
//! the table, so a session can never outlive its connection here, however the connection ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// An RTSP session as the admin API sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The session id.
    pub id: String,
    /// The path.
    pub path: String,
    /// `publisher` or `reader`.
    pub role: &'static str,
    /// The client's address.
    pub peer: SocketAddr,
    /// `tcp`, `udp`, or `None` before SETUP.
    pub transport: Option<&'static str>,
    /// When it was created.
    pub since: SystemTime,
    /// Cancelling it closes the session's connection.
    pub kick: CancellationToken,
}

/// Every live session.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, SessionInfo>>);

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, SessionInfo>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a session; it stays while the entry lives.
    pub fn insert(self: &Arc<Self>, info: SessionInfo) -> Entry {
        let id = info.id.clone();
        self.lock().insert(id.clone(), info);
        Entry {
            table: self.clone(),
            id,
        }
    }

    /// Every session, sorted by id.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// One session, by id.
    pub fn get(&self, id: &str) -> Option<SessionInfo> {
        self.lock().get(id).cloned()
    }

    /// How many sessions have this role.
    pub fn count(&self, role: &str) -> usize {
        self.lock().values().filter(|s| s.role == role).count()
    }

    /// Closes one session; false if there is none by that id.
    pub fn kick(&self, id: &str) -> bool {
        match self.lock().get(id) {
            Some(s) => {
                s.kick.cancel();
                true
            }
            None => false,
        }
    }

    /// Closes every session (state Idle).
    pub fn kick_all(&self) {
        for s in self.lock().values() {
            s.kick.cancel();
        }
    }

    /// Closes every session whose transport is `transport`.
    pub fn kick_transport(&self, transport: &str) {
        for s in self.lock().values() {
            if s.transport == Some(transport) {
                s.kick.cancel();
            }
        }
    }
}

/// A session's place in the table.
pub struct Entry {
    table: Arc<Sessions>,
    id: String,
}

impl Entry {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records the session's transport once SETUP chose it.
    pub fn set_transport(&self, transport: &'static str) {
        if let Some(s) = self.table.lock().get_mut(&self.id) {
            s.transport = Some(transport);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
    }
}

/// A new random session id: 16 hex digits, unguessable, so one client cannot act on another's
/// session.
pub fn new_session_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // The OS RNG failing is not something a client can cause; fall back to a clock-derived
        // value so the server keeps serving.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (t as u64).to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02X}")).collect()
}
