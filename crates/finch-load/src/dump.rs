//! A recorded interleaved RTP stream, for the baseline server to replay: what one reader
//! received, packet by packet, with the time each arrived.
//!
//! File format (all integers big-endian): `FINCHDUMP1\n`, the SDP's length (u32) and text, then
//! per packet its arrival in microseconds from the first (u64), its interleaved channel (u8),
//! its length (u16) and its bytes.

use anyhow::{bail, Context};
use bytes::Buf;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const MAGIC: &[u8] = b"FINCHDUMP1\n";

/// One recorded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// When it arrived, from the first packet.
    pub at: Duration,
    pub channel: u8,
    pub data: Vec<u8>,
}

/// A recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub sdp: String,
    pub packets: Vec<Packet>,
}

impl Dump {
    /// Writes the recording to `path`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.sdp.len() as u32).to_be_bytes());
        out.extend_from_slice(self.sdp.as_bytes());
        for p in &self.packets {
            out.extend_from_slice(&(p.at.as_micros() as u64).to_be_bytes());
            out.push(p.channel);
            out.extend_from_slice(&(p.data.len() as u16).to_be_bytes());
            out.extend_from_slice(&p.data);
        }
        std::fs::File::create(path)
            .and_then(|mut f| f.write_all(&out))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a recording from `path`.
    pub fn load(path: &Path) -> anyhow::Result<Dump> {
        let mut raw = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .with_context(|| format!("reading {}", path.display()))?;
        Dump::parse(&raw)
            .with_context(|| format!("{} is not a finch-load recording", path.display()))
    }

    fn parse(mut b: &[u8]) -> anyhow::Result<Dump> {
        if !b.starts_with(MAGIC) {
            bail!("no FINCHDUMP1 header");
        }
        b.advance(MAGIC.len());
        let take = |b: &mut &[u8], n: usize| -> anyhow::Result<Vec<u8>> {
            if b.len() < n {
                bail!("truncated");
            }
            let v = b[..n].to_vec();
            b.advance(n);
            Ok(v)
        };
        if b.len() < 4 {
            bail!("truncated");
        }
        let sdp_len = b.get_u32() as usize;
        let sdp = String::from_utf8(take(&mut b, sdp_len)?)?;
        let mut packets = Vec::new();
        while !b.is_empty() {
            if b.len() < 11 {
                bail!("truncated");
            }
            let at = Duration::from_micros(b.get_u64());
            let channel = b.get_u8();
            let len = usize::from(b.get_u16());
            packets.push(Packet {
                at,
                channel,
                data: take(&mut b, len)?,
            });
        }
        Ok(Dump { sdp, packets })
    }
}

/// Reads `url` over TCP for `secs` and keeps every packet.
pub async fn record(url: &str, secs: u64) -> anyhow::Result<Dump> {
    let mut p = crate::reader::start(url, false).await?;
    let end = Instant::now() + Duration::from_secs(secs);
    let mut first: Option<Instant> = None;
    let mut packets = Vec::new();
    loop {
        let now = Instant::now();
        while p.c.buf.len() >= 4 && p.c.buf[0] == b'$' {
            let len = usize::from(u16::from_be_bytes([p.c.buf[2], p.c.buf[3]]));
            if p.c.buf.len() < 4 + len {
                break;
            }
            let at = now.duration_since(*first.get_or_insert(now));
            packets.push(Packet {
                at,
                channel: p.c.buf[1],
                data: p.c.buf[4..4 + len].to_vec(),
            });
            p.c.buf.advance(4 + len);
        }
        if p.c.buf.len() >= 4 && p.c.buf[0] != b'$' {
            bail!("the server sent something other than interleaved media while playing");
        }
        if now >= end {
            break;
        }
        let left = end.saturating_duration_since(now);
        match tokio::time::timeout(left, p.c.sock.read_buf(&mut p.c.buf)).await {
            Ok(Ok(0)) => bail!("the server closed the connection"),
            Ok(Err(e)) => return Err(e.into()),
            _ => {}
        }
    }
    if packets.is_empty() {
        bail!("nothing arrived in {secs} s");
    }
    Ok(Dump {
        sdp: p.sdp_text,
        packets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_reads_back_as_it_was_written() {
        let d = Dump {
            sdp: "v=0\r\nm=video 0 RTP/AVP 96\r\n".into(),
            packets: vec![
                Packet {
                    at: Duration::ZERO,
                    channel: 0,
                    data: vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9],
                },
                Packet {
                    at: Duration::from_micros(40_000),
                    channel: 1,
                    data: vec![0x80, 200, 0, 0],
                },
            ],
        };
        let path = std::env::temp_dir().join(format!("finch-load-dump-{}", std::process::id()));
        d.save(&path).unwrap();
        assert_eq!(Dump::load(&path).unwrap(), d);
        std::fs::write(&path, b"FINCHDUMP1\n\0\0\0\x09v=0").unwrap();
        assert!(Dump::load(&path).is_err(), "truncated");
        let _ = std::fs::remove_file(&path);
    }
}
