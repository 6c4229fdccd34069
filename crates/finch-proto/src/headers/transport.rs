//! The Transport header (RFC 2326 §12.39).
//!
//! A client offers one or more transport specs separated by commas; the server picks the first it
//! supports and answers with that one, filled in. Finch supports RTP/AVP over UDP unicast and over
//! TCP interleaved. Parameters it does not act on are kept so they can be echoed.

use std::fmt;
use thiserror::Error;

/// The lower transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowerTransport {
    /// RTP/AVP or RTP/AVP/UDP.
    Udp,
    /// RTP/AVP/TCP (interleaved in the RTSP connection).
    Tcp,
}

/// The `mode` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The client will receive (the default).
    Play,
    /// The client will send (a publisher).
    Record,
}

/// One transport spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSpec {
    /// The profile as written (`RTP/AVP`, `RTP/AVPF` …).
    pub profile: String,
    /// UDP or TCP.
    pub lower: LowerTransport,
    /// `multicast` rather than `unicast`.
    pub multicast: bool,
    /// `client_port=a[-b]`.
    pub client_port: Option<(u16, u16)>,
    /// `server_port=a[-b]`.
    pub server_port: Option<(u16, u16)>,
    /// `interleaved=a[-b]`.
    pub interleaved: Option<(u8, u8)>,
    /// `mode=`; `None` means PLAY.
    pub mode: Option<Mode>,
    /// `ssrc=`, as written.
    pub ssrc: Option<String>,
    /// `destination=`, as written.
    pub destination: Option<String>,
    /// `source=`, as written.
    pub source: Option<String>,
}

/// Why a Transport header was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransportError {
    /// No spec in the header uses a transport Finch supports (answer 461).
    #[error("no supported transport in {0:?}")]
    Unsupported(String),
    /// A parameter is malformed (answer 400).
    #[error("malformed transport parameter {0:?}")]
    Malformed(String),
}

impl TransportSpec {
    /// Whether the client wants to send media (ANNOUNCE/RECORD).
    pub fn is_record(&self) -> bool {
        self.mode == Some(Mode::Record)
    }
}

/// Parses a Transport header and returns its specs in the client's order of preference. Specs of
/// an unsupported protocol are skipped; if none is left the error is [`TransportError::Unsupported`].
pub fn parse_transport(value: &str) -> Result<Vec<TransportSpec>, TransportError> {
    let mut specs = Vec::new();
    for spec in value.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        if let Some(s) = parse_spec(spec)? {
            specs.push(s);
        }
    }
    if specs.is_empty() {
        return Err(TransportError::Unsupported(value.to_owned()));
    }
    Ok(specs)
}

fn parse_spec(spec: &str) -> Result<Option<TransportSpec>, TransportError> {
    let mut params = spec.split(';').map(str::trim);
    let protocol = params.next().unwrap_or_default();
    let mut parts = protocol.split('/');
    let (transport, profile, lower) = (parts.next(), parts.next(), parts.next());
    if !transport.is_some_and(|t| t.eq_ignore_ascii_case("RTP"))
        || !profile.is_some_and(|p| p.eq_ignore_ascii_case("AVP"))
        || parts.next().is_some()
    {
        return Ok(None);
    }
    let lower = match lower {
        None => LowerTransport::Udp,
        Some(l) if l.eq_ignore_ascii_case("UDP") => LowerTransport::Udp,
        Some(l) if l.eq_ignore_ascii_case("TCP") => LowerTransport::Tcp,
        Some(_) => return Ok(None),
    };
    let mut out = TransportSpec {
        profile: "RTP/AVP".to_owned(),
        lower,
        multicast: false,
        client_port: None,
        server_port: None,
        interleaved: None,
        mode: None,
        ssrc: None,
        destination: None,
        source: None,
    };
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (param, None),
        };
        let malformed = || TransportError::Malformed(param.to_owned());
        match (name.to_ascii_lowercase().as_str(), value) {
            ("unicast", None) => out.multicast = false,
            ("multicast", None) => out.multicast = true,
            ("client_port", Some(v)) => {
                out.client_port = Some(parse_pair(v).ok_or_else(malformed)?)
            }
            ("server_port", Some(v)) => {
                out.server_port = Some(parse_pair(v).ok_or_else(malformed)?)
            }
            ("interleaved", Some(v)) => {
                let (a, b) = parse_pair::<u8>(v).ok_or_else(malformed)?;
                out.interleaved = Some((a, b));
            }
            ("mode", Some(v)) => {
                let v = v.trim_matches('"');
                out.mode = if v.eq_ignore_ascii_case("record") || v.eq_ignore_ascii_case("receive")
                {
                    Some(Mode::Record)
                } else if v.eq_ignore_ascii_case("play") {
                    Some(Mode::Play)
                } else {
                    return Err(malformed());
                };
            }
            ("ssrc", Some(v)) => out.ssrc = Some(v.to_owned()),
            ("destination", v) => out.destination = v.map(str::to_owned),
            ("source", Some(v)) => out.source = Some(v.to_owned()),
            // ttl, layers, port, append …: not acted upon by a unicast relay.
            _ => {}
        }
    }
    Ok(Some(out))
}

/// `a` or `a-b`; a single number means the pair (a, a+1).
fn parse_pair<T>(v: &str) -> Option<(T, T)>
where
    T: std::str::FromStr + TryFrom<u32> + Into<u32> + Copy,
{
    match v.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let a: T = v.trim().parse().ok()?;
            let b = T::try_from(a.into().checked_add(1)?).ok()?;
            Some((a, b))
        }
    }
}

impl fmt::Display for TransportSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.profile)?;
        if self.lower == LowerTransport::Tcp {
            f.write_str("/TCP")?;
        }
        f.write_str(if self.multicast {
            ";multicast"
        } else {
            ";unicast"
        })?;
        if let Some(d) = &self.destination {
            write!(f, ";destination={d}")?;
        }
        if let Some(s) = &self.source {
            write!(f, ";source={s}")?;
        }
        if let Some((a, b)) = self.client_port {
            write!(f, ";client_port={a}-{b}")?;
        }
        if let Some((a, b)) = self.server_port {
            write!(f, ";server_port={a}-{b}")?;
        }
        if let Some((a, b)) = self.interleaved {
            write!(f, ";interleaved={a}-{b}")?;
        }
        if let Some(s) = &self.ssrc {
            write!(f, ";ssrc={s}")?;
        }
        match self.mode {
            Some(Mode::Record) => f.write_str(";mode=record")?,
            Some(Mode::Play) => f.write_str(";mode=play")?,
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ffmpeg_udp_record() {
        let s = parse_transport("RTP/AVP/UDP;unicast;client_port=15000-15001;mode=record").unwrap();
        assert_eq!(s[0].lower, LowerTransport::Udp);
        assert_eq!(s[0].client_port, Some((15000, 15001)));
        assert!(s[0].is_record());
    }

    #[test]
    fn tcp_interleaved_and_quoted_mode() {
        let s = parse_transport("RTP/AVP/TCP;unicast;interleaved=0-1;mode=\"RECORD\"").unwrap();
        assert_eq!(s[0].lower, LowerTransport::Tcp);
        assert_eq!(s[0].interleaved, Some((0, 1)));
        assert!(s[0].is_record());
    }

    #[test]
    fn skips_unsupported_offers() {
        let s = parse_transport("RTP/SAVP;unicast;client_port=1-2,RTP/AVP;unicast;client_port=3")
            .unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].client_port, Some((3, 4)));
        assert!(matches!(
            parse_transport("RAW/RAW/UDP;unicast"),
            Err(TransportError::Unsupported(_))
        ));
        assert!(matches!(
            parse_transport("RTP/AVP;client_port=abc"),
            Err(TransportError::Malformed(_))
        ));
        assert!(matches!(
            parse_transport("RTP/AVP/TCP;interleaved=300-301"),
            Err(TransportError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn round_trips(tcp: bool, a: u16, b: u16, c: u8, d: u8, record: bool) {
            let spec = TransportSpec {
                profile: "RTP/AVP".into(),
                lower: if tcp { LowerTransport::Tcp } else { LowerTransport::Udp },
                multicast: false,
                client_port: (!tcp).then_some((a, b)),
                server_port: None,
                interleaved: tcp.then_some((c, d)),
                mode: record.then_some(Mode::Record),
                ssrc: None,
                destination: None,
                source: None,
            };
            let parsed = parse_transport(&spec.to_string()).unwrap();
            prop_assert_eq!(&parsed[0], &spec);
        }

        #[test]
        fn never_panics(s in "[ -~]{0,80}") {
            let _ = parse_transport(&s);
        }
    }
}
