//! One reader: DESCRIBE, SETUP of every track (TCP interleaved, or a UDP port pair per track),
//! PLAY, then counting what arrives until its deadline, as cheaply as the client can, so that
//! thousands of readers on one core measure the server and not the tool.
//!
//! Over TCP the media is scanned in place in a 256 KiB buffer (no allocation per packet); over
//! UDP each track's socket is drained with `recvmmsg`, up to 64 datagrams per call.

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use finch_proto::codec::VideoCodec;
use finch_proto::rtp::RtpHeader;
use finch_proto::rtsp::{Item, Limits, Method, Request, Response};
use finch_proto::sdp::Sdp;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A reader whose last packet is older than this at its deadline stalled: what it would have
/// received at its own rate since then counts as lost.
const STALL: Duration = Duration::from_secs(1);
/// Keep-alive interval (OPTIONS): well inside every server's 60 s default session timeout.
const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// What one reader saw.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// PLAY was answered 200.
    pub played: bool,
    /// Why it did not play.
    pub error: Option<String>,
    /// From starting to connect to PLAY's answer.
    pub connect: Option<Duration>,
    /// When it started connecting, from the run's start.
    pub started: Duration,
    /// From PLAY's answer to the first packet that starts a keyframe (video streams).
    pub first_key: Option<Duration>,
    /// RTP bytes and packets received, over every track.
    pub bytes: u64,
    pub packets: u64,
    /// Packets missing inside what was received (sequence gaps).
    pub gaps: u64,
    /// Packets it would have received after the server cut it off or it stalled.
    pub tail: u64,
    /// The server closed the connection before the deadline.
    pub cut: bool,
    /// How far the video fell behind real time over the run, in seconds: the time it was
    /// received over, less the media time (RTP timestamps) received. A server that keeps up
    /// gives zero or less (a reader starting at the GOP cache gets its first seconds at once);
    /// one that falls behind its readers without a gap shows here and nowhere else.
    pub behind_s: Option<f64>,
}

impl Record {
    /// Packets that were due: received, missing in between, and missing at the end.
    pub fn expected_packets(&self) -> u64 {
        self.packets + self.gaps + self.tail
    }

    /// Bytes that were due, at the reader's own mean packet size.
    pub fn expected_bytes(&self) -> u64 {
        if self.packets == 0 {
            return 0;
        }
        let per = self.bytes as f64 / self.packets as f64;
        self.bytes + ((self.gaps + self.tail) as f64 * per).round() as u64
    }

    /// Received / due; 0 for a reader that played and got nothing.
    pub fn delivered(&self) -> f64 {
        match self.expected_packets() {
            0 => 0.0,
            e => self.packets as f64 / e as f64,
        }
    }
}

/// One track's counts.
#[derive(Debug, Default)]
struct Track {
    last_seq: Option<u16>,
    packets: u64,
    bytes: u64,
    gaps: u64,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// RTP timestamps unwrapped to 64 bits: the first and the newest.
    first_ts: Option<i64>,
    last_ts: i64,
    last_raw: u32,
}

impl Track {
    fn packet(&mut self, data: &[u8], now: Instant) {
        if data.len() < 12 {
            return;
        }
        self.packets += 1;
        self.bytes += data.len() as u64;
        let seq = u16::from_be_bytes([data[2], data[3]]);
        if let Some(prev) = self.last_seq {
            let gap = seq.wrapping_sub(prev);
            if gap > 1 && gap < 0x8000 {
                self.gaps += u64::from(gap - 1);
            }
        }
        self.last_seq = Some(seq);
        self.first_at.get_or_insert(now);
        self.last_at = Some(now);
        let ts = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        match self.first_ts {
            None => {
                self.first_ts = Some(i64::from(ts));
                self.last_ts = i64::from(ts);
                self.last_raw = ts;
            }
            Some(_) => {
                // The newest timestamp moves on by the signed 32-bit difference (wrap-around
                // included); one a little older (a B-frame's) moves nothing, and a jump back of
                // more than a second (a source that loops its recording, or restarts) is a new
                // start to count on from.
                let step = i64::from(ts.wrapping_sub(self.last_raw) as i32);
                if step > 0 {
                    self.last_ts += step;
                    self.last_raw = ts;
                } else if step < -90_000 {
                    self.last_raw = ts;
                }
            }
        }
    }

    /// Received-over time less media time, at `clock` Hz.
    fn behind(&self, clock: f64) -> Option<f64> {
        let (first, last, ts0) = (self.first_at?, self.last_at?, self.first_ts?);
        let media = (self.last_ts - ts0) as f64 / clock;
        Some(last.saturating_duration_since(first).as_secs_f64() - media)
    }

    /// What it would have received after its last packet, at its own rate, had it not been cut
    /// off or stalled before `deadline`.
    fn tail(&self, deadline: Instant) -> u64 {
        let (Some(first), Some(last)) = (self.first_at, self.last_at) else {
            return 0;
        };
        let quiet = deadline.saturating_duration_since(last);
        let had = last.saturating_duration_since(first).as_secs_f64();
        if quiet < STALL || had <= 0.0 {
            return 0;
        }
        (self.packets as f64 / had * quiet.as_secs_f64()).round() as u64
    }
}

/// The video track, to find keyframes in.
struct Video {
    track: usize,
    codec: VideoCodec,
}

pub(crate) struct Conn {
    pub(crate) sock: TcpStream,
    pub(crate) buf: BytesMut,
    parser: finch_proto::rtsp::Parser,
    cseq: u32,
}

impl Conn {
    async fn send(&mut self, mut req: Request) -> anyhow::Result<()> {
        self.cseq += 1;
        req.headers.set("CSeq", self.cseq.to_string());
        req.headers.set("User-Agent", "finch-load");
        let mut out = BytesMut::new();
        req.write(&mut out);
        self.sock.write_all(&out).await?;
        Ok(())
    }

    async fn request(&mut self, req: Request) -> anyhow::Result<Response> {
        self.send(req).await?;
        loop {
            match self.parser.parse(&mut self.buf) {
                Ok(Some(Item::Response(r))) => return Ok(r),
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => bail!("bad response: {e}"),
            }
            if self.sock.read_buf(&mut self.buf).await? == 0 {
                bail!("server closed the connection");
            }
        }
    }
}

/// Resolves a track's control attribute against the content base.
pub fn resolve(base: &str, control: &str) -> String {
    if control.starts_with("rtsp://") {
        control.to_owned()
    } else if control.is_empty() || control == "*" {
        base.to_owned()
    } else if base.ends_with('/') {
        format!("{base}{control}")
    } else {
        format!("{base}/{control}")
    }
}

/// Reads `url` until `deadline`; `run_start` dates the record.
pub async fn read(url: &str, udp: bool, run_start: Instant, deadline: Instant) -> Record {
    let started = Instant::now();
    let mut rec = Record {
        started: started.duration_since(run_start),
        ..Record::default()
    };
    if let Err(e) = play_and_count(url, udp, started, deadline, &mut rec).await {
        if !rec.played {
            rec.error = Some(format!("{e:#}"));
        }
    }
    rec
}

/// A session set up and playing.
pub(crate) struct Playing {
    pub(crate) c: Conn,
    pub(crate) sdp: Sdp,
    /// The SDP as the server sent it.
    pub(crate) sdp_text: String,
    base: String,
    session: String,
    /// Per track set up over UDP: (track, RTP socket, RTCP socket).
    sockets: Vec<(usize, UdpSocket, UdpSocket)>,
}

/// DESCRIBE, SETUP of every track, PLAY.
pub(crate) async fn start(url: &str, udp: bool) -> anyhow::Result<Playing> {
    let host = url
        .strip_prefix("rtsp://")
        .and_then(|r| r.split('/').next())
        .context("not an rtsp:// URL")?;
    let sock = TcpStream::connect(host).await?;
    sock.set_nodelay(true)?;
    let mut c = Conn {
        sock,
        buf: BytesMut::with_capacity(256 * 1024),
        parser: finch_proto::rtsp::Parser::new(Limits::default()),
        cseq: 0,
    };
    let mut req = Request::new(Method::Describe, url.to_owned());
    req.headers.set("Accept", "application/sdp");
    let r = c.request(req).await?;
    if r.status != 200 {
        bail!("DESCRIBE: {}", r.status);
    }
    let base = r
        .headers
        .get("Content-Base")
        .map(str::to_owned)
        .unwrap_or_else(|| url.to_owned());
    let sdp_text = String::from_utf8_lossy(&r.body).into_owned();
    let sdp = Sdp::parse(&r.body)?;
    let mut session: Option<String> = None;
    let mut sockets = Vec::new();
    for (i, m) in sdp.media.iter().enumerate() {
        let mut req = Request::new(Method::Setup, resolve(&base, m.control().unwrap_or("")));
        let transport = if udp {
            let (rtp, rtcp) = bind_pair().await?;
            let port = rtp.local_addr()?.port();
            sockets.push((i, rtp, rtcp));
            format!("RTP/AVP;unicast;client_port={}-{}", port, port + 1)
        } else {
            format!("RTP/AVP/TCP;unicast;interleaved={}-{}", 2 * i, 2 * i + 1)
        };
        req.headers.set("Transport", transport);
        if let Some(s) = &session {
            req.headers.set("Session", s.clone());
        }
        let r = c.request(req).await?;
        if r.status != 200 {
            bail!("SETUP: {}", r.status);
        }
        session = r
            .headers
            .get("Session")
            .and_then(|s| s.split(';').next())
            .map(|s| s.trim().to_owned());
    }
    let session = session.unwrap_or_default();
    let mut req = Request::new(Method::Play, base.clone());
    req.headers.set("Session", session.clone());
    req.headers.set("Range", "npt=0.000-");
    let r = c.request(req).await?;
    if r.status != 200 {
        bail!("PLAY: {}", r.status);
    }
    Ok(Playing {
        c,
        sdp,
        sdp_text,
        base,
        session,
        sockets,
    })
}

async fn play_and_count(
    url: &str,
    udp: bool,
    started: Instant,
    deadline: Instant,
    rec: &mut Record,
) -> anyhow::Result<()> {
    let Playing {
        mut c,
        sdp,
        base,
        session,
        sockets,
        ..
    } = start(url, udp).await?;
    let video = sdp.media.iter().enumerate().find_map(|(i, m)| {
        let codec = VideoCodec::from_encoding(&m.rtpmap()?.encoding)?;
        Some(Video { track: i, codec })
    });
    let played_at = Instant::now();
    rec.played = true;
    rec.connect = Some(played_at.duration_since(started));
    let keep_alive = || {
        let mut req = Request::new(Method::Options, base.clone());
        req.headers.set("Session", session.clone());
        req
    };
    let mut tracks: Vec<Track> = (0..sdp.media.len()).map(|_| Track::default()).collect();
    let mut first_key: Option<Instant> = None;
    let mut next_ping = played_at + KEEP_ALIVE;
    if udp {
        let counters: Vec<_> = sockets
            .into_iter()
            .map(|(i, rtp, rtcp)| {
                let video = video.as_ref().filter(|v| v.track == i).map(|v| v.codec);
                tokio::spawn(count_udp(rtp, rtcp, video, deadline))
            })
            .collect();
        // The RTSP connection holds the session: kept alive, and drained.
        let mut sink = [0u8; 4096];
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if now >= next_ping {
                next_ping = now + KEEP_ALIVE;
                c.send(keep_alive()).await?;
            }
            let wait = deadline.min(next_ping).saturating_duration_since(now);
            match tokio::time::timeout(wait, c.sock.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    rec.cut = true;
                    break;
                }
                _ => {}
            }
        }
        for (i, h) in counters.into_iter().enumerate() {
            if let Ok((t, key)) = h.await {
                if let Some(k) = key {
                    first_key = Some(first_key.map_or(k, |f: Instant| f.min(k)));
                }
                if let Some(slot) = tracks.get_mut(i) {
                    *slot = t;
                }
            }
        }
        // A cut reader's sockets go quiet: their tails count what it missed.
        finish(
            rec,
            &tracks,
            first_key,
            played_at,
            deadline,
            video.as_ref().map(|v| v.track),
        );
        return Ok(());
    }
    loop {
        let now = Instant::now();
        // Scan whole interleaved frames in place; anything else is an RTSP message (a keep-alive
        // answer) for the parser.
        loop {
            if c.buf.len() < 4 {
                break;
            }
            if c.buf[0] == b'$' {
                let ch = c.buf[1];
                let len = usize::from(u16::from_be_bytes([c.buf[2], c.buf[3]]));
                if c.buf.len() < 4 + len {
                    break;
                }
                if ch % 2 == 0 {
                    let t = usize::from(ch / 2);
                    let data = &c.buf[4..4 + len];
                    if first_key.is_none() {
                        if let Some(v) = video.as_ref().filter(|v| v.track == t) {
                            if is_key(v.codec, data) {
                                first_key = Some(now);
                            }
                        }
                    }
                    if let Some(track) = tracks.get_mut(t) {
                        track.packet(data, now);
                    }
                }
                c.buf.advance(4 + len);
            } else {
                match c.parser.parse(&mut c.buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => bail!("bad data from the server: {e}"),
                }
            }
        }
        if now >= deadline {
            break;
        }
        if now >= next_ping {
            next_ping = now + KEEP_ALIVE;
            c.send(keep_alive()).await?;
        }
        if c.buf.capacity() - c.buf.len() < 64 * 1024 {
            c.buf.reserve(128 * 1024);
        }
        let wait = deadline.min(next_ping).saturating_duration_since(now);
        match tokio::time::timeout(wait, c.sock.read_buf(&mut c.buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                rec.cut = true;
                break;
            }
            _ => {}
        }
    }
    finish(
        rec,
        &tracks,
        first_key,
        played_at,
        deadline,
        video.as_ref().map(|v| v.track),
    );
    Ok(())
}

fn finish(
    rec: &mut Record,
    tracks: &[Track],
    first_key: Option<Instant>,
    played_at: Instant,
    deadline: Instant,
    video: Option<usize>,
) {
    rec.first_key = first_key.map(|k| k.saturating_duration_since(played_at));
    // H.264 and H.265 tell time at 90 kHz.
    rec.behind_s = video
        .and_then(|v| tracks.get(v))
        .and_then(|t| t.behind(90_000.0));
    for t in tracks {
        rec.bytes += t.bytes;
        rec.packets += t.packets;
        rec.gaps += t.gaps;
        rec.tail += t.tail(deadline);
    }
}

fn is_key(codec: VideoCodec, packet: &[u8]) -> bool {
    RtpHeader::parse(packet)
        .ok()
        .and_then(|h| packet.get(h.payload))
        .is_some_and(|p| codec.starts_keyframe(p))
}

/// An even/odd UDP port pair on loopback.
async fn bind_pair() -> anyhow::Result<(UdpSocket, UdpSocket)> {
    for _ in 0..100 {
        let probe = UdpSocket::bind("127.0.0.1:0").await?;
        let port = probe.local_addr()?.port() & !1;
        drop(probe);
        if port < 1024 {
            continue;
        }
        if let (Ok(a), Ok(b)) = (
            UdpSocket::bind(("127.0.0.1", port)).await,
            UdpSocket::bind(("127.0.0.1", port + 1)).await,
        ) {
            return Ok((a, b));
        }
    }
    bail!("no free UDP port pair")
}

/// Counts one track's RTP until the deadline; the RTCP socket is held (a closed port would
/// answer the server's reports with ICMP errors) but not read.
async fn count_udp(
    sock: UdpSocket,
    _rtcp: UdpSocket,
    video: Option<VideoCodec>,
    deadline: Instant,
) -> (Track, Option<Instant>) {
    let mut batch = crate::mmsg::Batch::new(64, 2048);
    let mut track = Track::default();
    let mut first_key = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(Ok(n)) = tokio::time::timeout(left, batch.recv(&sock)).await else {
            break;
        };
        let now = Instant::now();
        for i in 0..n {
            let data = batch.get(i);
            if first_key.is_none() && video.is_some_and(|v| is_key(v, data)) {
                first_key = Some(now);
            }
            track.packet(data, now);
        }
    }
    (track, first_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_resolve_against_the_content_base() {
        assert_eq!(resolve("rtsp://h/a/", "trackID=0"), "rtsp://h/a/trackID=0");
        assert_eq!(resolve("rtsp://h/a", "stream=0"), "rtsp://h/a/stream=0");
        assert_eq!(resolve("rtsp://h/a/", "rtsp://x/y"), "rtsp://x/y");
        assert_eq!(resolve("rtsp://h/a", "*"), "rtsp://h/a");
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&[1; 100]);
        p
    }

    fn rtp_at(seq: u16, ts: u32) -> Vec<u8> {
        let mut p = rtp(seq);
        p[4..8].copy_from_slice(&ts.to_be_bytes());
        p
    }

    #[test]
    fn a_reader_fed_slower_than_real_time_shows_as_behind() {
        let t0 = Instant::now();
        // 25 fps of media over 4 s, from a timestamp close to wrapping: in time, then at half
        // the speed (two seconds of media take four).
        let start = u32::MAX - 10_000;
        let (mut fine, mut slow) = (Track::default(), Track::default());
        for n in 0..100u32 {
            let ts = start.wrapping_add(n * 3600);
            fine.packet(
                &rtp_at(n as u16, ts),
                t0 + Duration::from_millis(40 * u64::from(n)),
            );
            if n < 50 {
                slow.packet(
                    &rtp_at(n as u16, ts),
                    t0 + Duration::from_millis(80 * u64::from(n)),
                );
            }
        }
        let b = fine.behind(90_000.0).unwrap();
        assert!(b.abs() < 0.01, "{b}");
        let b = slow.behind(90_000.0).unwrap();
        assert!((b - 1.96).abs() < 0.01, "{b}");
        // A source that loops its recording: media time goes on counting after the jump back.
        let mut looped = Track::default();
        for n in 0..100u32 {
            let ts = (n % 50) * 3600;
            looped.packet(
                &rtp_at(n as u16, ts),
                t0 + Duration::from_millis(40 * u64::from(n)),
            );
        }
        let b = looped.behind(90_000.0).unwrap();
        assert!(b.abs() < 0.05, "{b}");
    }

    #[test]
    fn gaps_and_a_stalled_or_cut_tail_count_as_loss() {
        let t0 = Instant::now();
        let mut t = Track::default();
        // 101 packets over 2 s (50 a second), with 3 missing in between.
        for (n, seq) in (0..104u16).filter(|s| !(10..13).contains(s)).enumerate() {
            t.packet(&rtp(seq), t0 + Duration::from_millis(20 * n as u64));
        }
        assert_eq!((t.packets, t.gaps), (101, 3));
        let last = t.last_at.unwrap();
        // Read to the end: no tail.
        assert_eq!(t.tail(last + Duration::from_millis(100)), 0);
        // Nothing for the last 3 s: ~150 packets were due.
        let tail = t.tail(last + Duration::from_secs(3));
        assert!((148..=153).contains(&tail), "{tail}");
        let rec = Record {
            played: true,
            packets: t.packets,
            bytes: t.bytes,
            gaps: t.gaps,
            tail,
            ..Record::default()
        };
        assert!(rec.delivered() < 0.41 && rec.delivered() > 0.39);
        assert_eq!(rec.expected_bytes(), (101 + 3 + tail) * 112);
        assert_eq!(
            Record {
                played: true,
                ..Record::default()
            }
            .delivered(),
            0.0
        );
    }
}
