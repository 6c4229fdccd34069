//! `finch-load`: N RTSP readers against one URL, for side-by-side measurements of Finch and its
//! peers (../shared/bench). Each reader does DESCRIBE, SETUP of every track over TCP
//! interleaved, PLAY, then counts RTP packets, bytes and sequence gaps until the deadline. The
//! run is bounded in readers and seconds, and targets loopback by default.
//!
//! Output, one line: readers that played, bytes and packets received, packets lost (sequence
//! gaps), and, given `--pid`, the server's CPU seconds over the run and per delivered Gbit.

use anyhow::{bail, Context};
use bytes::BytesMut;
use clap::Parser;
use finch_proto::rtsp::{Item, Limits, Method, Request, Response};
use finch_proto::sdp::Sdp;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(
    name = "finch-load",
    about = "Bounded RTSP load: N readers over TCP interleaved"
)]
struct Args {
    /// The stream URL (rtsp://127.0.0.1:8554/live/cam1).
    #[arg(long)]
    url: String,
    /// Readers (at most 20000).
    #[arg(long, default_value_t = 100)]
    readers: usize,
    /// Seconds of reading per reader (at most 600).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// The server's pid, to report its CPU time.
    #[arg(long)]
    pid: Option<u32>,
    /// New readers started per second (0: all at once).
    #[arg(long, default_value_t = 500)]
    ramp_per_sec: u64,
    /// `tcp` (interleaved) or `udp` (each reader binds a port pair per track on 127.0.0.1).
    #[arg(long, default_value = "tcp")]
    transport: String,
}

#[derive(Default)]
struct Totals {
    played: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    packets: AtomicU64,
    lost: AtomicU64,
}

fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime, fields 14 and 15 of proc(5), in clock ticks.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

struct Conn {
    sock: TcpStream,
    buf: BytesMut,
    parser: finch_proto::rtsp::Parser,
    cseq: u32,
}

impl Conn {
    async fn request(&mut self, mut req: Request) -> anyhow::Result<Response> {
        self.cseq += 1;
        req.headers.set("CSeq", self.cseq.to_string());
        req.headers.set("User-Agent", "finch-load");
        let mut out = BytesMut::new();
        req.write(&mut out);
        self.sock.write_all(&out).await?;
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

fn resolve(base: &str, control: &str) -> String {
    if control.starts_with("rtsp://") {
        control.to_owned()
    } else if base.ends_with('/') {
        format!("{base}{control}")
    } else {
        format!("{base}/{control}")
    }
}

async fn reader(url: String, udp: bool, deadline: Instant, t: Arc<Totals>) -> anyhow::Result<()> {
    let host = url
        .strip_prefix("rtsp://")
        .and_then(|r| r.split('/').next())
        .context("not an rtsp:// URL")?;
    let sock = TcpStream::connect(host).await?;
    sock.set_nodelay(true)?;
    let mut c = Conn {
        sock,
        buf: BytesMut::with_capacity(64 * 1024),
        parser: finch_proto::rtsp::Parser::new(Limits::default()),
        cseq: 0,
    };
    let mut req = Request::new(Method::Describe, url.clone());
    req.headers.set("Accept", "application/sdp");
    let r = c.request(req).await?;
    if r.status != 200 {
        bail!("DESCRIBE: {}", r.status);
    }
    let base = r
        .headers
        .get("Content-Base")
        .map(str::to_owned)
        .unwrap_or_else(|| url.clone());
    let sdp = Sdp::parse(&r.body)?;
    let mut session: Option<String> = None;
    let mut udp_sockets = Vec::new();
    for (i, m) in sdp.media.iter().enumerate() {
        let control = m.control().unwrap_or("");
        let mut req = Request::new(Method::Setup, resolve(&base, control));
        let transport = if udp {
            let (rtp, rtcp) = bind_pair().await?;
            let port = rtp.local_addr()?.port();
            udp_sockets.push((i, rtp, rtcp));
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
            .map(str::to_owned);
    }
    let mut req = Request::new(Method::Play, base.clone());
    req.headers.set("Session", session.unwrap_or_default());
    req.headers.set("Range", "npt=0.000-");
    let r = c.request(req).await?;
    if r.status != 200 {
        bail!("PLAY: {}", r.status);
    }
    t.played.fetch_add(1, Ordering::Relaxed);
    if udp {
        // Each RTP socket counts on its own; the RTSP connection stays open (it holds the
        // session) and is read only to keep it drained.
        let mut counters = Vec::new();
        for (_, rtp, _rtcp) in udp_sockets {
            counters.push(tokio::spawn(count_udp(rtp, deadline)));
        }
        let mut sink = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, c.sock.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(_)) => {}
            }
        }
        for h in counters {
            if let Ok((bytes, packets, lost)) = h.await {
                t.bytes.fetch_add(bytes, Ordering::Relaxed);
                t.packets.fetch_add(packets, Ordering::Relaxed);
                t.lost.fetch_add(lost, Ordering::Relaxed);
            }
        }
        return Ok(());
    }
    let mut last_seq: [Option<u16>; 16] = [None; 16];
    let (mut bytes, mut packets, mut lost) = (0u64, 0u64, 0u64);
    loop {
        while let Ok(Some(item)) = c.parser.parse(&mut c.buf) {
            if let Item::Interleaved { channel, payload } = item {
                bytes += payload.len() as u64;
                if channel % 2 == 0 && payload.len() >= 12 {
                    packets += 1;
                    let seq = u16::from_be_bytes([payload[2], payload[3]]);
                    let slot = usize::from(channel / 2) % 16;
                    if let Some(prev) = last_seq[slot] {
                        let gap = seq.wrapping_sub(prev);
                        if gap > 1 && gap < 0x8000 {
                            lost += u64::from(gap - 1);
                        }
                    }
                    last_seq[slot] = Some(seq);
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, c.sock.read_buf(&mut c.buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(_)) => {}
        }
    }
    t.bytes.fetch_add(bytes, Ordering::Relaxed);
    t.packets.fetch_add(packets, Ordering::Relaxed);
    t.lost.fetch_add(lost, Ordering::Relaxed);
    Ok(())
}

/// An even/odd UDP port pair on loopback.
async fn bind_pair() -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::UdpSocket)> {
    for _ in 0..100 {
        let probe = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let port = probe.local_addr()?.port() & !1;
        drop(probe);
        if port < 1024 {
            continue;
        }
        if let (Ok(a), Ok(b)) = (
            tokio::net::UdpSocket::bind(("127.0.0.1", port)).await,
            tokio::net::UdpSocket::bind(("127.0.0.1", port + 1)).await,
        ) {
            return Ok((a, b));
        }
    }
    bail!("no free UDP port pair")
}

/// Counts RTP bytes, packets and sequence gaps on one socket until the deadline.
async fn count_udp(sock: tokio::net::UdpSocket, deadline: Instant) -> (u64, u64, u64) {
    let mut buf = vec![0u8; 65536];
    let (mut bytes, mut packets, mut lost) = (0u64, 0u64, 0u64);
    let mut last: Option<u16> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(Ok(n)) = tokio::time::timeout(left, sock.recv(&mut buf)).await else {
            break;
        };
        bytes += n as u64;
        if n >= 12 {
            packets += 1;
            let seq = u16::from_be_bytes([buf[2], buf[3]]);
            if let Some(prev) = last {
                let gap = seq.wrapping_sub(prev);
                if gap > 1 && gap < 0x8000 {
                    lost += u64::from(gap - 1);
                }
            }
            last = Some(seq);
        }
    }
    (bytes, packets, lost)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.readers > 20_000 || args.secs > 600 {
        bail!("bounded by design: at most 20000 readers and 600 s");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let totals = Arc::new(Totals::default());
        let cpu0 = args.pid.and_then(cpu_secs);
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(args.readers);
        for i in 0..args.readers {
            if args.ramp_per_sec > 0 && i > 0 && (i as u64).is_multiple_of(args.ramp_per_sec.div_ceil(10)) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let deadline = Instant::now() + Duration::from_secs(args.secs);
            let t = totals.clone();
            let url = args.url.clone();
            let udp = args.transport == "udp";
            tasks.push(tokio::spawn(async move {
                if let Err(e) = reader(url, udp, deadline, t.clone()).await {
                    if t.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("reader failed: {e:#}");
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu = match (cpu0, args.pid.and_then(cpu_secs)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let bytes = totals.bytes.load(Ordering::Relaxed);
        let gbit = bytes as f64 * 8.0 / 1e9;
        let packets = totals.packets.load(Ordering::Relaxed);
        let lost = totals.lost.load(Ordering::Relaxed);
        println!(
            "readers={} played={} failed={} wall_s={:.1} bytes={} Mbit_s={:.0} rtp_packets={} lost={} loss_pct={:.3} server_cpu_s={} cpu_s_per_gbit={}",
            args.readers,
            totals.played.load(Ordering::Relaxed),
            totals.failed.load(Ordering::Relaxed),
            wall,
            bytes,
            gbit * 1000.0 / wall,
            packets,
            lost,
            if packets + lost > 0 { lost as f64 * 100.0 / (packets + lost) as f64 } else { 0.0 },
            cpu.map_or("-".into(), |c| format!("{c:.2}")),
            cpu.filter(|_| gbit > 0.0).map_or("-".into(), |c| format!("{:.3}", c / gbit)),
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn controls_resolve_against_the_content_base() {
        assert_eq!(resolve("rtsp://h/a/", "trackID=0"), "rtsp://h/a/trackID=0");
        assert_eq!(resolve("rtsp://h/a", "stream=0"), "rtsp://h/a/stream=0");
        assert_eq!(resolve("rtsp://h/a/", "rtsp://x/y"), "rtsp://x/y");
    }
}
