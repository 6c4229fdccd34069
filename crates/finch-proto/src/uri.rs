//! From an RTSP request URI to a Finch path name and a track control.
//!
//! CONTRACT.md: a path is the URL path without the leading slash and without a query string
//! (`rtsp://h:8554/live/cam1?x=1` → `live/cam1`); a trailing slash and the host don't matter.
//! Track control URLs are `<path>/trackID=N`.

/// The path a request URI names, or `None` for `*` and for URIs with no path at all.
pub fn request_path(uri: &str) -> Option<String> {
    let rest = match uri.split_once("://") {
        Some((_scheme, rest)) => {
            // Skip the authority (host, port, and any user:pass@).
            let slash = rest.find('/')?;
            &rest[slash..]
        }
        None => uri,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let path = rest.trim_matches('/');
    if path.is_empty() || path == "*" {
        return None;
    }
    Some(path.to_owned())
}

/// A camera's URL, as Finch pulls it: `rtsp[s]://[user[:pass]@]host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspUrl {
    /// `rtsps://`.
    pub tls: bool,
    /// The user and password, if the URL carries them (percent-decoded).
    pub credentials: Option<(String, String)>,
    /// The host (an IPv6 address without its brackets).
    pub host: String,
    /// The port (554 or 322 by default).
    pub port: u16,
    /// The URL without its credentials: what requests name.
    pub request_uri: String,
}

impl RtspUrl {
    /// Parses a camera URL; `None` if it is not one.
    pub fn parse(url: &str) -> Option<RtspUrl> {
        let (scheme, rest) = url.split_once("://")?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "rtsp" => false,
            "rtsps" => true,
            _ => return None,
        };
        let end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let (credentials, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, h)) => {
                let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((percent_decode(u), percent_decode(p))), h)
            }
            None => (None, authority),
        };
        let default = if tls { 322 } else { 554 };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default,
                None => return None,
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().ok()?),
                None => (hostport.to_owned(), default),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(RtspUrl {
            tls,
            credentials,
            request_uri: format!("{scheme}://{hostport}{path}"),
            host,
            port,
        })
    }
}

/// `s` escaped for the userinfo of a URL: everything but RFC 3986's unreserved characters
/// becomes `%XX`, so a password may hold `@`, `:` or `/`.
pub fn percent_encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%xx` escapes decoded (a password may hold `@` or `:`); anything malformed is kept as is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b.get(i),
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (Some(b'%'), Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (Some(c), _, _) => {
                out.push(*c);
                i += 1;
            }
            (None, _, _) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The URI with any password in it replaced by `***` (`rtsp://user:***@host/path`): what a log
/// line or an API answer may show.
pub fn redact(uri: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.into();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return uri.into();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..]).into()
}

/// Splits `live/cam1/trackID=0` into (`live/cam1`, `trackID=0`).
pub fn split_last_segment(path: &str) -> Option<(&str, &str)> {
    path.rsplit_once('/')
}

/// The track index in a control of the form `trackID=N` (case-insensitive; `streamid=N` too,
/// which ffmpeg writes).
pub fn track_index(control: &str) -> Option<usize> {
    let (name, n) = control.split_once('=')?;
    if name.eq_ignore_ascii_case("trackID") || name.eq_ignore_ascii_case("streamid") {
        n.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_password_parses_back_to_itself() {
        let pass = "p@ss:w/rd%~ ok";
        let url = format!("rtsp://u:{}@h:1/x", percent_encode_userinfo(pass));
        let parsed = RtspUrl::parse(&url).unwrap();
        assert_eq!(parsed.credentials, Some(("u".into(), pass.into())));
        assert_eq!(parsed.request_uri, "rtsp://h:1/x");
    }

    #[test]
    fn paths_follow_the_contract() {
        assert_eq!(
            request_path("rtsp://h:8554/live/cam1?x=1").as_deref(),
            Some("live/cam1")
        );
        assert_eq!(
            request_path("rtsp://h/live/cam1/").as_deref(),
            Some("live/cam1")
        );
        assert_eq!(
            request_path("rtsp://u:p@h/live/cam1").as_deref(),
            Some("live/cam1")
        );
        assert_eq!(request_path("/live/cam1").as_deref(), Some("live/cam1"));
        assert_eq!(request_path("*"), None);
        assert_eq!(request_path("rtsp://h:8554"), None);
        assert_eq!(request_path("rtsp://h:8554/"), None);
    }

    #[test]
    fn camera_urls() {
        let u = RtspUrl::parse("rtsp://admin:p%40ss@192.168.1.64:8554/Streaming/101?x=1").unwrap();
        assert_eq!(u.credentials, Some(("admin".into(), "p@ss".into())));
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("192.168.1.64", 8554, false)
        );
        assert_eq!(u.request_uri, "rtsp://192.168.1.64:8554/Streaming/101?x=1");
        let u = RtspUrl::parse("rtsps://[::1]/live").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("::1", 322, true));
        assert_eq!(RtspUrl::parse("rtsp://cam").unwrap().port, 554);
        assert!(RtspUrl::parse("http://cam/x").is_none());
        assert!(RtspUrl::parse("rtsp://:554/x").is_none());
        assert!(RtspUrl::parse("rtsp://cam:notaport/x").is_none());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("rtsp://u:p@h:554/a?x=1"), "rtsp://u:***@h:554/a?x=1");
        assert_eq!(redact("rtsp://u@h/a"), "rtsp://u:***@h/a");
        assert_eq!(redact("rtsp://h/a@b"), "rtsp://h/a@b");
        assert_eq!(redact("redis://:pw@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact("*"), "*");
    }

    #[test]
    fn tracks() {
        assert_eq!(
            split_last_segment("live/cam1/trackID=0"),
            Some(("live/cam1", "trackID=0"))
        );
        assert_eq!(track_index("trackID=3"), Some(3));
        assert_eq!(track_index("streamid=1"), Some(1));
        assert_eq!(track_index("track1"), None);
    }
}
