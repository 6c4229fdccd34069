//! `finch`: the command line. Parses flags, loads the config, binds the sockets and runs the
//! server until a signal stops it. The only place `anyhow` and process exit codes live.

mod exit;

use anyhow::Context as _;
use clap::Parser;
use finch_config::Config;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

const EXIT_CODES: &str = "\
Exit codes:
  0    clean stop (SIGTERM, SIGINT)
  255  cannot run, do not restart: bad config, missing config file, port taken, no permission
  254  restart me: the worker reached FatalError
  3    the supervisor gave up: crash-loop limit reached";

/// Finch, a live RTSP streaming media server.
#[derive(Debug, Parser)]
#[command(name = "finch", version, after_help = EXIT_CODES)]
struct Cli {
    /// The TOML config file; without it, built-in defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Run in the foreground with no supervisor (for systemd, Kubernetes).
    #[arg(short = 'd', long)]
    foreground: bool,
    /// Print a status line every SECS seconds.
    #[arg(long, value_name = "SECS")]
    stats: Option<u64>,
    /// The RTSP port (overrides the config).
    #[arg(long, value_name = "N")]
    rtsp_port: Option<u16>,
    /// The admin HTTP address (overrides the config).
    #[arg(long, value_name = "ADDR:PORT")]
    admin: Option<String>,
    /// Print the effective config as commented TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Validate a config file and exit: 0 if valid, else 255 with FILE:LINE:COLUMN: reason.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    if let Some(file) = &cli.check_config {
        match finch_config::load(Some(file), std::env::vars()) {
            Ok(_) => {
                println!("{}: ok", file.display());
                std::process::exit(exit::CLEAN);
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(exit::CANNOT_RUN);
            }
        }
    }
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("finch: {e:#}");
            std::process::exit(exit::CANNOT_RUN);
        }
    };
    if cli.print_config {
        print!("{}", finch_config::to_commented_toml(&config));
        std::process::exit(exit::CLEAN);
    }
    init_logging(&config);
    raise_open_files_limit();
    let code = match serve(config) {
        Ok(()) => exit::CLEAN,
        Err(e) => {
            tracing::error!("cannot run: {e:#}");
            eprintln!("finch: cannot run: {e:#}");
            exit::CANNOT_RUN
        }
    };
    std::process::exit(code);
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = finch_config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(p) = cli.rtsp_port {
        config.rtsp.port = p;
    }
    if let Some(a) = &cli.admin {
        config.admin.listen = a.clone();
    }
    if let Some(s) = cli.stats {
        config.log.stats_interval_secs = s;
    }
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {}", e.key.join("."), e.reason))?;
    Ok(config)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A thousand readers need more than the usual 1024 descriptors: take the hard limit.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open files limit");
            }
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let listeners = finch_server::bind(&config).context("binding sockets")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        finch_server::run(listeners, config, shutdown)
            .await
            .context("running the server")
    })
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    shutdown.cancel();
}
