//! `[auth]` and `[[auth.users]]`: who may publish and read where, from which addresses, and
//! how their secrets are stored (CONTRACT.md "Authentication and access").
//!
//! Parsing is done once, at validation: a user's secret, address list and permissions come out
//! typed ([`User::secret`], [`User::networks`]), so nothing downstream re-parses a string.

use crate::schema::glob_match;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The users; none at all means everything is anonymous.
    pub users: Vec<User>,
    /// Offer Basic authentication on plain (not TLS) RTSP, for old cameras.
    pub basic_over_plain: bool,
    /// Wrong credentials from one address within the window before it is refused.
    pub fail_limit: u32,
    /// The window of `fail_limit`.
    pub fail_window_secs: u64,
    /// How long a Digest nonce stays valid; after it, `stale=true`.
    pub nonce_expiry_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            users: Vec::new(),
            basic_over_plain: true,
            fail_limit: 10,
            fail_window_secs: 60,
            nonce_expiry_secs: 300,
        }
    }
}

/// `[[auth.users]]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct User {
    /// The name; `any` (with an empty `pass`) is anonymous.
    pub user: String,
    /// Plain text, `sha256:<hex>` (Basic only), `digest-md5:<HA1 hex>` or `digest-sha256:<HA1 hex>`.
    pub pass: String,
    /// CIDRs (or single addresses) the user may come from; empty: any.
    pub ips: Vec<String>,
    /// What the user may do; empty: nothing.
    pub permissions: Vec<Permission>,
}

/// One permission: an action on the paths a pattern matches.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Permission {
    /// `publish` or `read`.
    pub action: String,
    /// A path pattern (`*` one segment, `**` any); absent: every path.
    pub path: Option<String>,
}

/// The name of the anonymous user.
pub const ANONYMOUS: &str = "any";

/// How a user's password is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// Plain text: Basic and Digest (MD5 and SHA-256).
    Plain(String),
    /// SHA-256 of the password: Basic only.
    Sha256([u8; 32]),
    /// HA1 = MD5(user:realm:pass): Digest MD5 only.
    DigestMd5([u8; 16]),
    /// HA1 = SHA-256(user:realm:pass): Digest SHA-256 only.
    DigestSha256([u8; 32]),
}

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address.
    pub fn parse(s: &str) -> Result<Network, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let digits =
            |p: &str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if digits(p) && n <= max => n,
                _ => return Err(format!("{s:?} has a bad prefix length (0 to {max})")),
            },
        };
        Ok(Network { addr, prefix })
    }

    /// Whether `ip` is in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a list of networks, failing on the first bad one.
pub fn parse_networks(list: &[String]) -> Result<Vec<Network>, String> {
    list.iter().map(|s| Network::parse(s)).collect()
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl User {
    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.user == ANONYMOUS
    }

    /// The stored secret.
    pub fn secret(&self) -> Result<Secret, String> {
        let bad = |kind: &str, len: usize| {
            format!("a {kind} password is {len} hex digits after the prefix")
        };
        if let Some(h) = self.pass.strip_prefix("sha256:") {
            return hex(h).map(Secret::Sha256).ok_or_else(|| bad("sha256:", 64));
        }
        if let Some(h) = self.pass.strip_prefix("digest-md5:") {
            return hex(h)
                .map(Secret::DigestMd5)
                .ok_or_else(|| bad("digest-md5:", 32));
        }
        if let Some(h) = self.pass.strip_prefix("digest-sha256:") {
            return hex(h)
                .map(Secret::DigestSha256)
                .ok_or_else(|| bad("digest-sha256:", 64));
        }
        Ok(Secret::Plain(self.pass.clone()))
    }

    /// The networks the user may come from (empty: any).
    pub fn networks(&self) -> Result<Vec<Network>, String> {
        parse_networks(&self.ips)
    }

    /// Whether the user may do `action` on `path`.
    pub fn may(&self, action: &str, path: &str) -> bool {
        self.permissions.iter().any(|p| {
            p.action == action && p.path.as_deref().is_none_or(|pat| glob_match(pat, path))
        })
    }
}

/// What is wrong with `[auth]`: the key below `auth` and the reason.
pub(crate) fn validate(auth: &AuthConfig) -> Result<(), (Vec<String>, String)> {
    let at = |i: usize, key: &str| -> Vec<String> {
        let mut k = vec!["users".to_owned(), i.to_string()];
        if !key.is_empty() {
            k.push(key.to_owned());
        }
        k
    };
    for (i, u) in auth.users.iter().enumerate() {
        if u.user.is_empty() || u.user.contains(':') {
            return Err((at(i, "user"), "must be a name without ':'".into()));
        }
        if u.is_anonymous() && !u.pass.is_empty() {
            return Err((
                at(i, "pass"),
                "the anonymous user \"any\" has no password".into(),
            ));
        }
        if !u.is_anonymous() && u.pass.is_empty() {
            return Err((at(i, "pass"), "must not be empty".into()));
        }
        u.secret().map_err(|e| (at(i, "pass"), e))?;
        u.networks().map_err(|e| (at(i, "ips"), e))?;
        for (j, p) in u.permissions.iter().enumerate() {
            if p.action != "publish" && p.action != "read" {
                let mut k = at(i, "permissions");
                k.push(j.to_string());
                k.push("action".into());
                return Err((k, format!("{:?} is not publish or read", p.action)));
            }
            if p.path
                .as_deref()
                .is_some_and(|p| p.is_empty() || p.starts_with('/'))
            {
                let mut k = at(i, "permissions");
                k.push(j.to_string());
                k.push("path".into());
                return Err((
                    k,
                    "a path pattern has no leading slash and is not empty".into(),
                ));
            }
        }
        if auth.users[..i].iter().any(|o| o.user == u.user) {
            return Err((at(i, "user"), format!("{:?} is listed twice", u.user)));
        }
    }
    if auth.fail_limit == 0 {
        return Err((vec!["fail_limit".into()], "must be at least 1".into()));
    }
    if !(1..=86400).contains(&auth.fail_window_secs) {
        return Err((
            vec!["fail_window_secs".into()],
            "must be between 1 and 86400".into(),
        ));
    }
    if !(10..=86400).contains(&auth.nonce_expiry_secs) {
        return Err((
            vec!["nonce_expiry_secs".into()],
            "must be between 10 and 86400".into(),
        ));
    }
    Ok(())
}

/// Users whose secret only Basic can check (`sha256:`), which clients that always choose
/// Digest (ffmpeg, VLC) cannot log in as: a start-up warning names them.
pub fn basic_only_users(auth: &AuthConfig) -> Vec<&str> {
    auth.users
        .iter()
        .filter(|u| matches!(u.secret(), Ok(Secret::Sha256(_))))
        .map(|u| u.user.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n = Network::parse("127.0.0.0/8").unwrap();
        assert!(n.contains("127.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!n.contains("128.0.0.1".parse().unwrap()));
        assert!(Network::parse("10.0.0.1")
            .unwrap()
            .contains("10.0.0.1".parse().unwrap()));
        assert!(!Network::parse("10.0.0.1")
            .unwrap()
            .contains("10.0.0.2".parse().unwrap()));
        let all = Network::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert!(Network::parse("::1/128")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Network::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8:1::5".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "nope",
            "::/129",
            "1.2.3.4/",
            "1.2.3.4/+8",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_and_permissions() {
        let mut u = User {
            user: "cam".into(),
            pass: "digest-md5:0123456789abcdef0123456789abcdef".into(),
            ips: vec![],
            permissions: vec![Permission {
                action: "publish".into(),
                path: Some("cams/*".into()),
            }],
        };
        assert!(matches!(u.secret(), Ok(Secret::DigestMd5(_))));
        assert!(u.may("publish", "cams/1"));
        assert!(!u.may("read", "cams/1"));
        assert!(!u.may("publish", "cams/1/x"));
        u.pass = "digest-md5:xyz".into();
        assert!(u.secret().is_err());
        u.pass = "sha256:".to_owned() + &"ab".repeat(32);
        assert!(matches!(u.secret(), Ok(Secret::Sha256(_))));
        u.permissions[0].path = None;
        assert!(u.may("publish", "anything/at/all"));
    }
}
