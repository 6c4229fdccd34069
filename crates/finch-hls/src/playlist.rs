//! The media playlist (RFC 8216bis, with the Low-Latency extensions of §4.4.3.7 on): parts
//! of the newest segments, the preload hint of the next part, and the server control a player
//! needs for blocking reloads. Also the blocking-reload query (`_HLS_msn`, `_HLS_part`).

use crate::muxer::Muxer;
use std::fmt::Write as _;

/// The init segment's URI.
pub const INIT: &str = "init.mp4";

/// A segment's URI.
pub fn segment_uri(msn: u64) -> String {
    format!("seg{msn}.m4s")
}

/// A part's URI.
pub fn part_uri(msn: u64, part: usize) -> String {
    format!("part{msn}.{part}.m4s")
}

/// What a media file request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File {
    /// The init segment.
    Init,
    /// A segment.
    Segment(u64),
    /// A part of a segment.
    Part(u64, usize),
}

/// Reads a file name (`init.mp4`, `seg12.m4s`, `part12.3.m4s`).
pub fn parse_file(name: &str) -> Option<File> {
    if name == INIT {
        return Some(File::Init);
    }
    let stem = name.strip_suffix(".m4s")?;
    if let Some(n) = stem.strip_prefix("seg") {
        return n.parse().ok().map(File::Segment);
    }
    let (m, p) = stem.strip_prefix("part")?.split_once('.')?;
    Some(File::Part(m.parse().ok()?, p.parse().ok()?))
}

/// A blocking playlist reload: wait until segment `msn` (or its part `part`) is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// `_HLS_msn`.
    pub msn: u64,
    /// `_HLS_part`.
    pub part: Option<usize>,
}

/// Reads a playlist request's query: `Ok(None)` for none, `Err` for a malformed one
/// (RFC 8216bis §6.2.5.2: `_HLS_part` without `_HLS_msn`, or values that are not numbers).
pub fn parse_block(query: Option<&str>) -> Result<Option<Block>, &'static str> {
    let (mut msn, mut part) = (None, None);
    for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "_HLS_msn" => msn = Some(v.parse::<u64>().map_err(|_| "_HLS_msn is not a number")?),
            "_HLS_part" => {
                part = Some(
                    v.parse::<usize>()
                        .map_err(|_| "_HLS_part is not a number")?,
                )
            }
            "_HLS_skip" | "_HLS_push" => {}
            _ => {}
        }
    }
    match (msn, part) {
        (None, Some(_)) => Err("_HLS_part needs _HLS_msn"),
        (None, None) => Ok(None),
        (Some(msn), part) => Ok(Some(Block { msn, part })),
    }
}

/// The playlist as it stands; `None` before the first segment.
pub fn media_playlist(m: &Muxer) -> Option<String> {
    let target = m.target_duration()?;
    let part_target = m.part_target().as_secs_f64();
    let segments: Vec<_> = m.segments().collect();
    // Not before a complete segment: plain HLS players (ffmpeg) give up on a playlist of parts.
    let first_msn = segments.first()?.msn;
    let mut out = String::with_capacity(2048);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{target}\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n\
         #EXT-X-PART-INF:PART-TARGET={part_target:.3}\n\
         #EXT-X-MEDIA-SEQUENCE:{}\n",
        part_target * 3.0,
        first_msn
    );
    let disc = m.discontinuity_sequence();
    if disc > 0 || m.discontinuity_at().is_some() {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{disc}");
    }
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"{INIT}\"");
    let discontinuity = m.discontinuity_at();
    let part_line = |out: &mut String, msn: u64, i: usize, p: &crate::muxer::Part| {
        if p.data.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "#EXT-X-PART:DURATION={:.5},URI=\"{}\"{}",
            p.duration,
            part_uri(msn, i),
            if p.independent {
                ",INDEPENDENT=YES"
            } else {
                ""
            }
        );
    };
    for s in &segments {
        if discontinuity == Some(s.msn) {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        for (i, p) in s.parts.iter().enumerate() {
            part_line(&mut out, s.msn, i, p);
        }
        let _ = write!(out, "#EXTINF:{:.5},\n{}\n", s.duration, segment_uri(s.msn));
    }
    if let Some(c) = m.current() {
        if discontinuity == Some(c.msn) && !c.parts.is_empty() {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        for (i, p) in c.parts.iter().enumerate() {
            part_line(&mut out, c.msn, i, p);
        }
    }
    if let Some((msn, part)) = m.next_part() {
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
            part_uri(msn, part)
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_others_are_refused() {
        assert_eq!(parse_file("init.mp4"), Some(File::Init));
        assert_eq!(parse_file(&segment_uri(12)), Some(File::Segment(12)));
        assert_eq!(parse_file(&part_uri(12, 3)), Some(File::Part(12, 3)));
        for bad in [
            "seg.m4s",
            "part1.m4s",
            "seg1.mp4",
            "x",
            "part1.x.m4s",
            "seg-1.m4s",
        ] {
            assert_eq!(parse_file(bad), None, "{bad}");
        }
    }

    #[test]
    fn blocking_parameters_follow_the_rfc() {
        assert_eq!(parse_block(None), Ok(None));
        assert_eq!(
            parse_block(Some("_HLS_msn=5&_HLS_part=2")),
            Ok(Some(Block {
                msn: 5,
                part: Some(2)
            }))
        );
        assert_eq!(
            parse_block(Some("_HLS_msn=5")),
            Ok(Some(Block { msn: 5, part: None }))
        );
        assert!(parse_block(Some("_HLS_part=2")).is_err());
        assert!(parse_block(Some("_HLS_msn=x")).is_err());
        assert!(parse_block(Some("_HLS_msn=1&_HLS_part=-1")).is_err());
    }
}
