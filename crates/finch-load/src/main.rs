//! `finch-load`: N RTSP readers against one URL, for side-by-side measurements of Finch and its
//! peers (../shared/bench). Each reader does DESCRIBE, SETUP of every track over TCP
//! interleaved, PLAY, then counts RTP packets, bytes and sequence gaps until the deadline. The
//! run is bounded in readers and seconds, and targets loopback by default.
//!
//! Output, one line: readers that played, bytes and packets received, packets lost (sequence
//! gaps, plus what a reader the server cut off before the deadline would have received at its
//! own rate), and, given `--pid`, the CPU seconds of the server's whole process tree (a Finch
//! supervisor and its workers, restarted ones included) over the run and per delivered Gbit.

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
    /// Readers whose connection the server closed before the deadline.
    cut: AtomicU64,
    bytes: AtomicU64,
    packets: AtomicU64,
    lost: AtomicU64,
}

/// utime, stime, cutime and cstime of a process (proc(5) fields 14-17), and its parent.
fn stat(pid: u32) -> Option<(u32, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ppid: u32 = f.get(1)?.parse().ok()?;
    let mut ticks = 0.0;
    for i in 11..=14 {
        ticks += f.get(i)?.parse::<f64>().ok()?;
    }
    Some((ppid, ticks))
}

/// CPU seconds used by `root` and every process below it. A process's own time plus the time of
/// the children it has reaped (cutime/cstime) makes a worker that exited during the run count
/// too, through its supervisor.
fn tree_cpu_secs(root: u32) -> Option<f64> {
    let (_, root_ticks) = stat(root)?;
    let mut procs: Vec<(u32, u32, f64)> = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((ppid, ticks)) = stat(pid) {
            procs.push((pid, ppid, ticks));
        }
    }
    let mut tree = vec![root];
    let mut ticks = root_ticks;
    let mut i = 0;
    while let Some(&parent) = tree.get(i) {
        for (pid, ppid, t) in &procs {
            if *ppid == parent && !tree.contains(pid) {
                tree.push(*pid);
                ticks += t;
            }
        }
        i += 1;
    }
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
    let played_at = Instant::now();
    if udp {
        // Each RTP socket counts on its own; the RTSP connection stays open (it holds the
        // session) and is read only to keep it drained.
        let mut counters = Vec::new();
        for (_, rtp, _rtcp) in udp_sockets {
            counters.push(tokio::spawn(count_udp(rtp, deadline)));
        }
        let mut sink = [0u8; 4096];
        let mut cut_at = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, c.sock.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    cut_at = Some(Instant::now());
                    break;
                }
                Err(_) => break,
                Ok(Ok(_)) => {}
            }
        }
        for h in counters {
            if let Ok((bytes, packets, lost)) = h.await {
                t.bytes.fetch_add(bytes, Ordering::Relaxed);
                t.packets.fetch_add(packets, Ordering::Relaxed);
                t.lost.fetch_add(
                    lost + missed(packets, played_at, cut_at, deadline),
                    Ordering::Relaxed,
                );
            }
        }
        if cut_at.is_some() {
            t.cut.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(());
    }
    let mut last_seq: [Option<u16>; 16] = [None; 16];
    let (mut bytes, mut packets, mut lost) = (0u64, 0u64, 0u64);
    let mut cut_at = None;
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
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut_at = Some(Instant::now());
                break;
            }
            Err(_) => break,
            Ok(Ok(_)) => {}
        }
    }
    if cut_at.is_some() {
        t.cut.fetch_add(1, Ordering::Relaxed);
    }
    lost += missed(packets, played_at, cut_at, deadline);
    t.bytes.fetch_add(bytes, Ordering::Relaxed);
    t.packets.fetch_add(packets, Ordering::Relaxed);
    t.lost.fetch_add(lost, Ordering::Relaxed);
    Ok(())
}

/// What a reader cut off at `cut_at` would have received until the deadline at the rate it was
/// receiving: a kicked reader's loss is everything it no longer gets, not a sequence gap.
fn missed(packets: u64, played_at: Instant, cut_at: Option<Instant>, deadline: Instant) -> u64 {
    let Some(cut) = cut_at else { return 0 };
    let had = cut.saturating_duration_since(played_at).as_secs_f64();
    let left = deadline.saturating_duration_since(cut).as_secs_f64();
    if had <= 0.0 {
        return 0;
    }
    (packets as f64 / had * left).round() as u64
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
        let cpu0 = args.pid.and_then(tree_cpu_secs);
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
        let cpu = match (cpu0, args.pid.and_then(tree_cpu_secs)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let bytes = totals.bytes.load(Ordering::Relaxed);
        let gbit = bytes as f64 * 8.0 / 1e9;
        let packets = totals.packets.load(Ordering::Relaxed);
        let lost = totals.lost.load(Ordering::Relaxed);
        println!(
            "readers={} played={} failed={} cut={} wall_s={:.1} bytes={} Mbit_s={:.0} rtp_packets={} lost={} loss_pct={:.3} server_cpu_s={} cpu_s_per_gbit={}",
            args.readers,
            totals.played.load(Ordering::Relaxed),
            totals.failed.load(Ordering::Relaxed),
            totals.cut.load(Ordering::Relaxed),
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
    use super::{missed, resolve, stat, tree_cpu_secs};
    use std::time::{Duration, Instant};

    #[test]
    fn a_reader_cut_off_loses_what_it_would_have_received() {
        let t = Instant::now();
        // 100 packets in 2 s, then cut with 3 s to go: 150 more were due.
        let cut = t + Duration::from_secs(2);
        assert_eq!(missed(100, t, Some(cut), t + Duration::from_secs(5)), 150);
        assert_eq!(missed(100, t, None, t + Duration::from_secs(5)), 0);
    }

    #[test]
    fn the_cpu_of_a_live_child_counts_towards_its_parent_s_tree() {
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let secs = |pid: u32| stat(pid).map(|(_, t)| t / hz).unwrap();
        // A child (a worker, say) that burns some CPU and stays alive.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 30",
            ])
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        while secs(pid) < 0.2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let child_cpu = secs(pid);
        let tree = tree_cpu_secs(std::process::id()).unwrap();
        let own = secs(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(child_cpu >= 0.2, "the child burnt {child_cpu} s");
        assert!(
            tree - own >= child_cpu - 0.02,
            "tree {tree}, own {own}, child {child_cpu}"
        );
    }

    #[test]
    fn controls_resolve_against_the_content_base() {
        assert_eq!(resolve("rtsp://h/a/", "trackID=0"), "rtsp://h/a/trackID=0");
        assert_eq!(resolve("rtsp://h/a", "stream=0"), "rtsp://h/a/stream=0");
        assert_eq!(resolve("rtsp://h/a/", "rtsp://x/y"), "rtsp://x/y");
    }
}
