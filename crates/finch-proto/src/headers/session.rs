//! The Session header (RFC 2326 §12.37): `Session: <id>[;timeout=<secs>]`.

/// The session id a request names, without parameters; `None` if the header is empty.
pub fn parse_session_id(value: &str) -> Option<&str> {
    let id = value.split(';').next()?.trim();
    (!id.is_empty()).then_some(id)
}

/// The `timeout=` a server gives in its Session header (RFC 2326 §12.37), if any.
pub fn parse_timeout(value: &str) -> Option<u64> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("timeout")
            .then(|| v.trim().parse().ok())?
    })
}

/// The header value a response carries: the id and the timeout the server enforces.
pub fn format_session(id: &str, timeout_secs: u64) -> String {
    format!("{id};timeout={timeout_secs}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_id_before_parameters() {
        assert_eq!(parse_session_id("12AB;timeout=60"), Some("12AB"));
        assert_eq!(parse_session_id(" 12AB "), Some("12AB"));
        assert_eq!(parse_session_id(";timeout=60"), None);
        assert_eq!(format_session("x", 60), "x;timeout=60");
    }
}
