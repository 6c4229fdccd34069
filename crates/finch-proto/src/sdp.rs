//! Session descriptions (SDP, RFC 4566) as a relay needs them.
//!
//! A publisher's SDP is parsed into lines grouped by media section, and written back with only the
//! control attributes changed: the server owns the control URLs (`a=control:*` at session level,
//! `a=control:trackID=N` per media), everything else is passed through byte for byte. Parsing is
//! tolerant (bare `\n`, blank lines, unknown attributes), since cameras write every dialect; it only
//! refuses text that is not SDP at all.
//!
//! Written by hand rather than with `sdp-types`: that crate re-serialises every field from its own
//! model, which loses vendor quirks Finch must pass through untouched, and refuses SDP that real
//! cameras send (missing `s=`/`t=` lines); here a line Finch does not own is never rewritten.

use std::fmt::Write as _;
use thiserror::Error;

/// One `x=value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The type letter.
    pub kind: char,
    /// Everything after the `=`.
    pub value: String,
}

/// A media section: its `m=` line and the lines under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// The value of the `m=` line (`video 0 RTP/AVP 96`).
    pub m: String,
    /// The lines that follow, up to the next `m=`.
    pub lines: Vec<Line>,
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp {
    /// Session-level lines.
    pub session: Vec<Line>,
    /// Media sections in order; a track's index is its position here.
    pub media: Vec<Media>,
}

/// Why a body is not SDP.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    /// The body is not UTF-8 text.
    #[error("SDP is not UTF-8")]
    NotUtf8,
    /// A line is not of the form `x=value`.
    #[error("SDP line {line} is not of the form x=value")]
    BadLine {
        /// The 1-based line number.
        line: usize,
    },
    /// There is no `v=` line first.
    #[error("SDP does not start with v=")]
    NoVersion,
    /// An `m=` line cannot be read.
    #[error("SDP media line {line} is malformed")]
    BadMedia {
        /// The 1-based line number.
        line: usize,
    },
}

/// The `a=rtpmap` of a payload type, or the static assignment of RFC 3551.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The encoding name, upper-cased (`H264`, `MPEG4-GENERIC`, `OPUS`, `PCMU`).
    pub encoding: String,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The channel count for audio, if given.
    pub channels: Option<u16>,
}

impl Sdp {
    /// Parses an SDP body.
    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
        let mut sdp = Sdp {
            session: Vec::new(),
            media: Vec::new(),
        };
        let mut seen_version = false;
        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.trim_end_matches('\r').trim_start();
            if line.is_empty() {
                continue;
            }
            let mut chars = line.chars();
            let (Some(kind), Some('=')) = (chars.next(), chars.next()) else {
                return Err(SdpError::BadLine { line: i + 1 });
            };
            if !kind.is_ascii_alphabetic() {
                return Err(SdpError::BadLine { line: i + 1 });
            }
            let value = line[2..].to_owned();
            if !seen_version {
                if kind != 'v' {
                    return Err(SdpError::NoVersion);
                }
                seen_version = true;
            }
            if kind == 'm' {
                if value.split_whitespace().count() < 4 {
                    return Err(SdpError::BadMedia { line: i + 1 });
                }
                sdp.media.push(Media {
                    m: value,
                    lines: Vec::new(),
                });
            } else {
                let line = Line { kind, value };
                match sdp.media.last_mut() {
                    Some(m) => m.lines.push(line),
                    None => sdp.session.push(line),
                }
            }
        }
        if !seen_version {
            return Err(SdpError::NoVersion);
        }
        Ok(sdp)
    }

    /// Writes the SDP with CRLF line ends.
    pub fn write(&self) -> String {
        let mut out = String::new();
        for l in &self.session {
            let _ = write!(out, "{}={}\r\n", l.kind, l.value);
        }
        for m in &self.media {
            let _ = write!(out, "m={}\r\n", m.m);
            for l in &m.lines {
                let _ = write!(out, "{}={}\r\n", l.kind, l.value);
            }
        }
        out
    }

    /// A copy with the server's control attributes: `*` for the session, `trackID=N` per media.
    pub fn with_server_controls(&self) -> Sdp {
        let mut out = self.clone();
        out.session
            .retain(|l| !(l.kind == 'a' && attribute_name(&l.value) == "control"));
        out.session.push(Line {
            kind: 'a',
            value: "control:*".to_owned(),
        });
        for (i, m) in out.media.iter_mut().enumerate() {
            m.set_attribute("control", &format!("trackID={i}"));
        }
        out
    }
}

fn attribute_name(value: &str) -> &str {
    value.split(':').next().unwrap_or_default()
}

impl Media {
    /// `video`, `audio`, `application` …
    pub fn media_type(&self) -> &str {
        self.m.split_whitespace().next().unwrap_or_default()
    }

    /// The transport protocol of the `m=` line (`RTP/AVP`).
    pub fn protocol(&self) -> &str {
        self.m.split_whitespace().nth(2).unwrap_or_default()
    }

    /// The first payload type listed, if it is a number.
    pub fn payload_type(&self) -> Option<u8> {
        self.m.split_whitespace().nth(3)?.parse().ok()
    }

    /// The value of `a=name:value` (or `""` for a flag `a=name`), first occurrence.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.lines
            .iter()
            .filter(|l| l.kind == 'a')
            .find_map(|l| match l.value.split_once(':') {
                Some((n, v)) if n == name => Some(v),
                None if l.value == name => Some(""),
                _ => None,
            })
    }

    /// Replaces every `a=name` line with one `a=name:value`, or appends it.
    pub fn set_attribute(&mut self, name: &str, value: &str) {
        let new = Line {
            kind: 'a',
            value: format!("{name}:{value}"),
        };
        match self
            .lines
            .iter()
            .position(|l| l.kind == 'a' && attribute_name(&l.value) == name)
        {
            Some(i) => {
                self.lines[i] = new;
                let mut j = i + 1;
                while j < self.lines.len() {
                    if self.lines[j].kind == 'a' && attribute_name(&self.lines[j].value) == name {
                        self.lines.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => self.lines.push(new),
        }
    }

    /// The control attribute, if any.
    pub fn control(&self) -> Option<&str> {
        self.attribute("control")
    }

    /// The rtpmap of the first payload type, falling back to RFC 3551's static types.
    pub fn rtpmap(&self) -> Option<RtpMap> {
        let pt = self.payload_type()?;
        let mapped = self.lines.iter().filter(|l| l.kind == 'a').find_map(|l| {
            let rest = l.value.strip_prefix("rtpmap:")?;
            let (p, enc) = rest.split_once(' ')?;
            (p.trim().parse::<u8>().ok()? == pt).then_some(enc.trim())
        });
        match mapped {
            Some(enc) => {
                let mut parts = enc.split('/');
                let encoding = parts.next()?.to_ascii_uppercase();
                let clock_rate = parts.next()?.trim().parse().ok()?;
                let channels = parts.next().and_then(|c| c.trim().parse().ok());
                Some(RtpMap {
                    encoding,
                    clock_rate,
                    channels,
                })
            }
            None => static_payload_type(pt),
        }
    }

    /// The `a=fmtp` parameters of the first payload type (after `pt `).
    pub fn fmtp(&self) -> Option<&str> {
        let pt = self.payload_type()?;
        self.lines.iter().filter(|l| l.kind == 'a').find_map(|l| {
            let rest = l.value.strip_prefix("fmtp:")?;
            let (p, params) = rest.split_once(' ')?;
            (p.trim().parse::<u8>().ok()? == pt).then_some(params.trim())
        })
    }

    /// Replaces (or adds) the `a=fmtp` line of the first payload type.
    pub fn set_fmtp(&mut self, params: &str) {
        let Some(pt) = self.payload_type() else {
            return;
        };
        let value = format!("fmtp:{pt} {params}");
        let prefix = format!("fmtp:{pt} ");
        match self
            .lines
            .iter_mut()
            .find(|l| l.kind == 'a' && l.value.starts_with(&prefix))
        {
            Some(l) => l.value = value,
            None => self.lines.push(Line { kind: 'a', value }),
        }
    }
}

/// RFC 3551 §6 static payload types that may appear without an rtpmap.
fn static_payload_type(pt: u8) -> Option<RtpMap> {
    let (encoding, clock_rate, channels) = match pt {
        0 => ("PCMU", 8000, Some(1)),
        3 => ("GSM", 8000, Some(1)),
        4 => ("G723", 8000, Some(1)),
        8 => ("PCMA", 8000, Some(1)),
        9 => ("G722", 8000, Some(1)),
        10 => ("L16", 44100, Some(2)),
        11 => ("L16", 44100, Some(1)),
        14 => ("MPA", 90000, None),
        18 => ("G729", 8000, Some(1)),
        26 => ("JPEG", 90000, None),
        32 => ("MPV", 90000, None),
        33 => ("MP2T", 90000, None),
        _ => return None,
    };
    Some(RtpMap {
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `ffmpeg -f rtsp` announces for an H.264 + AAC clip.
    const FFMPEG_ANNOUNCE: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=tool:libavformat 59.27.100\r\nm=video 0 RTP/AVP 96\r\nb=AS:2000\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QAH6zZQFAFuhAAAAMAEAAAAwPI8YMZYA==,aOvjyyLA; profile-level-id=64001F\r\na=control:streamid=0\r\nm=audio 0 RTP/AVP 97\r\nb=AS:128\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\na=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=121056E500\r\na=control:streamid=1\r\n";

    #[test]
    fn reads_ffmpeg_announce() {
        let sdp = Sdp::parse(FFMPEG_ANNOUNCE.as_bytes()).unwrap();
        assert_eq!(sdp.media.len(), 2);
        let v = &sdp.media[0];
        assert_eq!(v.media_type(), "video");
        assert_eq!(v.control(), Some("streamid=0"));
        let map = v.rtpmap().unwrap();
        assert_eq!((map.encoding.as_str(), map.clock_rate), ("H264", 90000));
        assert!(v.fmtp().unwrap().contains("sprop-parameter-sets"));
        let a = sdp.media[1].rtpmap().unwrap();
        assert_eq!(
            (a.encoding.as_str(), a.clock_rate, a.channels),
            ("MPEG4-GENERIC", 44100, Some(2))
        );
    }

    #[test]
    fn server_controls_replace_the_publishers() {
        let sdp = Sdp::parse(FFMPEG_ANNOUNCE.as_bytes()).unwrap();
        let out = sdp.with_server_controls();
        let text = out.write();
        assert!(text.contains("a=control:*\r\n"));
        assert!(text.contains("a=control:trackID=0\r\n"));
        assert!(text.contains("a=control:trackID=1\r\n"));
        assert!(!text.contains("streamid"));
        // Everything else passes through untouched.
        assert!(text.contains("a=fmtp:97 profile-level-id=1;mode=AAC-hbr;sizelength=13;indexlength=3;indexdeltalength=3; config=121056E500\r\n"));
        assert_eq!(Sdp::parse(text.as_bytes()).unwrap(), out);
    }

    #[test]
    fn static_types_and_refusals() {
        let sdp = Sdp::parse(b"v=0\nm=audio 0 RTP/AVP 0\n").unwrap();
        assert_eq!(sdp.media[0].rtpmap().unwrap().encoding, "PCMU");
        assert_eq!(Sdp::parse(b"hello"), Err(SdpError::BadLine { line: 1 }));
        assert_eq!(Sdp::parse(b"s=x\r\n"), Err(SdpError::NoVersion));
        assert_eq!(Sdp::parse(b""), Err(SdpError::NoVersion));
        assert_eq!(
            Sdp::parse(b"v=0\r\nm=video\r\n"),
            Err(SdpError::BadMedia { line: 2 })
        );
    }

    #[test]
    fn set_fmtp_replaces_or_adds() {
        let mut sdp =
            Sdp::parse(b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n").unwrap();
        sdp.media[0].set_fmtp("packetization-mode=1");
        assert_eq!(sdp.media[0].fmtp(), Some("packetization-mode=1"));
        sdp.media[0].set_fmtp("packetization-mode=0");
        assert_eq!(sdp.media[0].fmtp(), Some("packetization-mode=0"));
    }

    proptest! {
        #[test]
        fn never_panics(s in prop::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(sdp) = Sdp::parse(&s) {
                let again = Sdp::parse(sdp.write().as_bytes()).unwrap();
                prop_assert_eq!(again, sdp);
            }
        }
    }
}
