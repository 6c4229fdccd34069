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
