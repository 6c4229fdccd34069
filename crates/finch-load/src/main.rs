//! `finch-load`: N RTSP readers against one URL, for side-by-side measurements of Finch and its
//! peers (../shared/bench, `scripts/bench.sh`). Bounded in readers and seconds, on loopback.
//!
//! - `finch-load --url U --readers N --secs S [--transport udp] [--pid P] [--json]`: each reader
//!   does DESCRIBE, SETUP of every track, PLAY, then counts what arrives until its deadline.
//!   The summary gives readers that played, delivered / due payload, readers that got ≥ 99 %,
//!   per-reader spread, sequence-gap and cut-off loss, time to the first keyframe, connect
//!   times, and with `--pid` the CPU seconds per delivered Gbit and peak RSS of the server's
//!   whole process tree (a Finch supervisor and its workers).
//! - `finch-load record --url U --secs S --out FILE`: keeps what one TCP reader receives.
//! - `finch-load baseline --dump FILE --listen ADDR`: replays a recording to every TCP reader,
//!   one write per frame, with no server logic: the floor the others are measured against.

mod baseline;
mod dump;
mod mmsg;
mod procstat;
mod reader;
mod summary;

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use summary::{ServerCost, Summary};

#[derive(Debug, Parser)]
#[command(
    name = "finch-load",
    about = "Bounded RTSP load: N readers over TCP interleaved or UDP, and a baseline server",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    read: ReadArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Keeps what one TCP reader of URL receives for SECS, for `baseline`.
    Record {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 20)]
        secs: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Replays a recording to every TCP reader on LISTEN, one write per frame, until killed.
    Baseline {
        #[arg(long)]
        dump: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8590")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Debug, Args)]
struct ReadArgs {
    /// The stream URL (rtsp://127.0.0.1:8554/live/cam1).
    #[arg(long)]
    url: Option<String>,
    /// Readers (at most 20000).
    #[arg(long, default_value_t = 100)]
    readers: usize,
    /// Seconds every reader reads once the last one has started (at most 600): readers that
    /// ramp in earlier read for longer, so all N are on the server together for this long.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// The server's pid, to report the CPU and memory of its process tree.
    #[arg(long)]
    pid: Option<u32>,
    /// New readers started per second (0: all at once).
    #[arg(long, default_value_t = 500)]
    ramp_per_sec: u64,
    /// `tcp` (interleaved) or `udp` (each reader binds a port pair per track on 127.0.0.1).
    #[arg(long, default_value = "tcp")]
    transport: String,
    /// Print the summary as JSON instead of `key=value`.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Some(Command::Record { url, secs, out }) => {
            if secs > 600 {
                bail!("bounded by design: at most 600 s");
            }
            let d = runtime.block_on(dump::record(&url, secs))?;
            d.save(&out)?;
            eprintln!("recorded {} packets to {}", d.packets.len(), out.display());
            Ok(())
        }
        Some(Command::Baseline { dump, listen }) => {
            let d = dump::Dump::load(&dump)?;
            runtime.block_on(baseline::serve(d, listen))
        }
        None => runtime.block_on(read(cli.read)),
    }
}

async fn read(args: ReadArgs) -> anyhow::Result<()> {
    let Some(url) = args.url else {
        bail!("--url is required (or a subcommand: record, baseline)");
    };
    if args.readers > 20_000 || args.secs > 600 {
        bail!("bounded by design: at most 20000 readers and 600 s");
    }
    let udp = match args.transport.as_str() {
        "tcp" => false,
        "udp" => true,
        t => bail!("--transport is tcp or udp, not {t}"),
    };
    let cpu0 = args.pid.and_then(procstat::tree_cpu_secs);
    let rss0 = args.pid.and_then(procstat::tree_rss_kib);
    let peak = args.pid.map(procstat::RssPeak::start);
    let own0 = procstat::own_cpu_secs();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.readers);
    let step = args.ramp_per_sec.div_ceil(10).max(1);
    // The ramp sleeps 100 ms every `step` readers.
    let ramp = if args.ramp_per_sec == 0 {
        Duration::ZERO
    } else {
        Duration::from_millis(100) * ((args.readers.saturating_sub(1)) as u64 / step) as u32
    };
    let deadline = started + ramp + Duration::from_secs(args.secs);
    for i in 0..args.readers {
        if args.ramp_per_sec > 0 && i > 0 && (i as u64).is_multiple_of(step) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            reader::read(&url, udp, started, deadline).await
        }));
    }
    let mut records = Vec::with_capacity(tasks.len());
    for t in tasks {
        records.push(t.await.unwrap_or_default());
    }
    let wall = started.elapsed();
    let cost = ServerCost {
        cpu_s: match (cpu0, args.pid.and_then(procstat::tree_cpu_secs)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        rss_before_kib: rss0,
        rss_peak_kib: peak.map(procstat::RssPeak::finish),
        client_cpu_s: match (own0, procstat::own_cpu_secs()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
    };
    let s = Summary::new(&records, wall, cost);
    for e in &s.errors {
        eprintln!("reader failed: {e}");
    }
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!("{}", s.line());
    }
    Ok(())
}
