//! Who may do what (CONTRACT.md "Authentication and access"): the one decision for a request
//! that has been resolved to an action on a path, for RTSP and RTSPS (and, later, HLS).
//!
//! - No `[[auth.users]]` at all: everything is anonymous.
//! - Otherwise a request is allowed when one user matches its credentials (or is the anonymous
//!   `any` and the request has none), its address, its action and its path.
//! - Missing or wrong credentials: a challenge (401: Digest SHA-256, Digest MD5 with the same
//!   nonce, then Basic where allowed). Right credentials but not permitted, or from an address
//!   not allowed: 403. Too many wrong credentials from one address: 403 for the rest of the
//!   window (`failures`).
//!
//! Digest nonces are stateless (an HMAC of their time, `finch_proto::auth::nonce`) under a
//! secret the supervisor gives every worker, so a nonce survives a worker restart.

pub(crate) mod failures;

use failures::{Failed, Failures};
use finch_config::{Config, Network, Secret, User};
use finch_proto::auth::digest::{expected_response, Expected};
use finch_proto::auth::header::{basic_challenge, digest_challenge};
use finch_proto::auth::{
    constant_time_eq, parse_authorization, Algorithm, Credentials, NonceCheck, NonceCounts, Nonces,
};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// The realm every challenge names.
pub const REALM: &str = "finch";

/// Nonces whose `nc` is remembered at most.
const NONCE_COUNTS: usize = 4096;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read a path's stream.
    Read,
    /// Publish on a path.
    Publish,
}

impl Action {
    /// The name in `permissions`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Publish => "publish",
        }
    }
}

/// A request to decide on.
pub struct Ask<'a> {
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The request method (for Digest's HA2).
    pub method: &'a str,
    /// The request URI.
    pub uri: &'a str,
    /// The client's address.
    pub peer: IpAddr,
    /// Whether the request came over TLS (Basic is always offered there).
    pub tls: bool,
    /// What it wants.
    pub action: Action,
    /// On which path.
    pub path: &'a str,
}

/// Why a request was refused, for the log and `finch_auth_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No credentials, and anonymous access is not allowed here (not counted as a failure).
    Missing,
    /// Wrong user, password or response.
    WrongCredentials,
    /// A Digest nonce that has expired: the client retries (not counted).
    StaleNonce,
    /// A Digest `nc` already seen for its nonce.
    Replay,
    /// The user may not do this on this path.
    NotPermitted,
    /// The user may not come from this address.
    Address,
    /// Too many wrong credentials from this address.
    Blocked,
}

impl Reason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::WrongCredentials => "wrong_credentials",
            Reason::StaleNonce => "stale_nonce",
            Reason::Replay => "replay",
            Reason::NotPermitted => "not_permitted",
            Reason::Address => "address",
            Reason::Blocked => "blocked",
        }
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, as this user (`any` for anonymous access).
    Allow(String),
    /// 401 with these `WWW-Authenticate` values.
    Challenge(Reason, Vec<String>),
    /// 403.
    Forbid(Reason),
}

struct Known {
    config: User,
    secret: Secret,
    networks: Vec<Network>,
}

struct Users {
    list: Vec<Known>,
    basic_over_plain: bool,
    fail_limit: u32,
    fail_window: Duration,
}

/// The worker's authenticator.
pub struct Auth {
    users: RwLock<Arc<Users>>,
    nonces: RwLock<Nonces>,
    secret: Vec<u8>,
    counts: Mutex<NonceCounts>,
    failures: Mutex<Failures>,
}

fn users(config: &Config) -> Users {
    let mut list: Vec<Known> = config
        .auth
        .users
        .iter()
        .filter_map(|u| {
            // validate() has parsed both already; a user that somehow does not parse is left
            // out rather than let in.
            Some(Known {
                secret: u.secret().ok()?,
                networks: u.networks().ok()?,
                config: u.clone(),
            })
        })
        .collect();
    let c = &config.cluster;
    if c.enabled() && !c.secret.is_empty() && !list.is_empty() {
        // Other nodes of the cluster read any path with the shared secret (validation keeps
        // the name from configured users).
        list.push(Known {
            config: finch_config::User {
                user: finch_config::CLUSTER_USER.to_owned(),
                pass: c.secret.clone(),
                ips: Vec::new(),
                permissions: vec![finch_config::Permission {
                    action: "read".to_owned(),
                    path: None,
                }],
            },
            secret: Secret::Plain(c.secret.clone()),
            networks: Vec::new(),
        });
    }
    Users {
        list,
        basic_over_plain: config.auth.basic_over_plain,
        fail_limit: config.auth.fail_limit,
        fail_window: Duration::from_secs(config.auth.fail_window_secs),
    }
}

/// A fresh salt for a nonce.
fn salt() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // A counter still keeps nonces apart.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        return NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    u64::from_le_bytes(b)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    /// An authenticator for `config`'s users, minting nonces under `secret`.
    pub fn new(config: &Config, secret: &[u8]) -> Auth {
        Auth {
            users: RwLock::new(Arc::new(users(config))),
            nonces: RwLock::new(Nonces::new(secret, config.auth.nonce_expiry_secs)),
            secret: secret.to_vec(),
            counts: Mutex::new(NonceCounts::new(NONCE_COUNTS)),
            failures: Mutex::new(Failures::new()),
        }
    }

    /// Takes a reloaded config's users and settings; nonces and failure counts stay.
    pub fn reload(&self, config: &Config) {
        *self.users.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(users(config));
        *self.nonces.write().unwrap_or_else(|e| e.into_inner()) =
            Nonces::new(&self.secret, config.auth.nonce_expiry_secs);
    }

    /// Whether any user is configured (else everything is anonymous).
    pub fn enabled(&self) -> bool {
        !self.users().list.is_empty()
    }

    fn users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The challenges a 401 carries, in CONTRACT.md's order.
    pub fn challenges(&self, stale: bool, tls: bool) -> Vec<String> {
        let nonce = self
            .nonces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .mint(unix_now(), salt());
        let mut v = vec![
            digest_challenge(REALM, &nonce, Algorithm::Sha256.name(), true, stale),
            digest_challenge(REALM, &nonce, Algorithm::Md5.name(), true, stale),
        ];
        if tls || self.users().basic_over_plain {
            v.push(basic_challenge(REALM));
        }
        v
    }

    /// Decides on one request.
    pub fn decide(&self, ask: &Ask<'_>) -> Decision {
        let users = self.users();
        if users.list.is_empty() {
            return Decision::Allow("any".to_owned());
        }
        let now = Instant::now();
        let blocked = self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .blocked(ask.peer, now, users.fail_limit, users.fail_window);
        if blocked {
            return Decision::Forbid(Reason::Blocked);
        }
        let who = match ask.authorization {
            None => None,
            Some(h) => match self.verify(&users, h, ask) {
                Ok(user) => Some(user),
                Err(Reason::StaleNonce) => {
                    return Decision::Challenge(Reason::StaleNonce, self.challenges(true, ask.tls))
                }
                Err(r) => return self.failed(&users, ask, r, now),
            },
        };
        let Some(user) = who else {
            // No credentials: the anonymous user, if it may; else ask for credentials.
            let anonymous = users.list.iter().find(|k| {
                k.config.is_anonymous()
                    && in_networks(&k.networks, ask.peer)
                    && k.config.may(ask.action.as_str(), ask.path)
            });
            return match anonymous {
                Some(_) => Decision::Allow("any".to_owned()),
                None => Decision::Challenge(Reason::Missing, self.challenges(false, ask.tls)),
            };
        };
        if !in_networks(&user.networks, ask.peer) {
            return Decision::Forbid(Reason::Address);
        }
        if !user.config.may(ask.action.as_str(), ask.path) {
            return Decision::Forbid(Reason::NotPermitted);
        }
        Decision::Allow(user.config.user.clone())
    }

    fn failed(&self, users: &Users, ask: &Ask<'_>, r: Reason, now: Instant) -> Decision {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match f.fail(ask.peer, now, users.fail_limit, users.fail_window) {
            Failed::NowBlocked => {
                tracing::warn!(
                    peer = %ask.peer,
                    limit = users.fail_limit,
                    window_secs = users.fail_window.as_secs(),
                    "too many failed logins from this address; refusing it for the window"
                );
            }
            Failed::Counted | Failed::Blocked => {}
        }
        drop(f);
        Decision::Challenge(r, self.challenges(false, ask.tls))
    }

    /// The user whose credentials these are.
    fn verify<'u>(
        &self,
        users: &'u Users,
        header: &str,
        ask: &Ask<'_>,
    ) -> Result<&'u Known, Reason> {
        match parse_authorization(header).map_err(|_| Reason::WrongCredentials)? {
            Credentials::Basic { user, pass } => {
                if !ask.tls && !users.basic_over_plain {
                    return Err(Reason::WrongCredentials);
                }
                let known = users
                    .list
                    .iter()
                    .find(|k| !k.config.is_anonymous() && k.config.user == user)
                    .ok_or(Reason::WrongCredentials)?;
                let ok = match &known.secret {
                    Secret::Plain(p) => constant_time_eq(p.as_bytes(), pass.as_bytes()),
                    Secret::Sha256(h) => {
                        constant_time_eq(&finch_proto::auth::digest::sha256(pass.as_bytes()), h)
                    }
                    Secret::DigestMd5(_) | Secret::DigestSha256(_) => false,
                };
                ok.then_some(known).ok_or(Reason::WrongCredentials)
            }
            Credentials::Digest(d) => {
                let algorithm = Algorithm::from_param(d.algorithm.as_deref())
                    .ok_or(Reason::WrongCredentials)?;
                if d.realm != REALM {
                    return Err(Reason::WrongCredentials);
                }
                // The URI the client hashed must name what it asks for, so a response cannot
                // be carried over to another path.
                let same = finch_proto::uri::request_path(&d.uri)
                    == finch_proto::uri::request_path(ask.uri);
                if !same {
                    return Err(Reason::WrongCredentials);
                }
                match self
                    .nonces
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .check(&d.nonce, unix_now())
                {
                    NonceCheck::Fresh => {}
                    NonceCheck::Stale => return Err(Reason::StaleNonce),
                    NonceCheck::Invalid => return Err(Reason::WrongCredentials),
                }
                let known = users
                    .list
                    .iter()
                    .find(|k| !k.config.is_anonymous() && k.config.user == d.username)
                    .ok_or(Reason::WrongCredentials)?;
                let ha1 = match (&known.secret, algorithm) {
                    (Secret::Plain(p), a) => a.ha1(&d.username, REALM, p),
                    (Secret::DigestMd5(h), Algorithm::Md5) => h.to_vec(),
                    (Secret::DigestSha256(h), Algorithm::Sha256) => h.to_vec(),
                    _ => return Err(Reason::WrongCredentials),
                };
                let qop = match d.qop.as_deref() {
                    None => None,
                    Some("auth") => Some((
                        d.nc.as_deref().ok_or(Reason::WrongCredentials)?,
                        d.cnonce.as_deref().ok_or(Reason::WrongCredentials)?,
                        "auth",
                    )),
                    Some(_) => return Err(Reason::WrongCredentials),
                };
                let want = expected_response(
                    &Expected {
                        algorithm,
                        ha1: &ha1,
                        method: ask.method,
                    },
                    &d.uri,
                    &d.nonce,
                    qop,
                );
                if !constant_time_eq(want.as_bytes(), d.response.to_ascii_lowercase().as_bytes()) {
                    return Err(Reason::WrongCredentials);
                }
                if let Some((nc, _, _)) = qop {
                    let fresh = self
                        .counts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .accept(&d.nonce, nc);
                    if !fresh {
                        return Err(Reason::Replay);
                    }
                }
                Ok(known)
            }
        }
    }
}

fn in_networks(nets: &[Network], ip: IpAddr) -> bool {
    nets.is_empty() || nets.iter().any(|n| n.contains(ip))
}

/// A new random secret for nonces (when no supervisor hands one over).
pub fn random_secret() -> Vec<u8> {
    let mut b = vec![0u8; 32];
    if getrandom::fill(&mut b).is_err() {
        // Not something a client can cause; a clock-derived secret still expires nonces.
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = t.to_le_bytes().to_vec();
    }
    b
}

#[cfg(test)]
mod tests;
