//! `finch`: the command line. Three ways to run:
//!
//! - `finch` — the supervisor: binds the sockets, starts the worker and restarts it as needed;
//! - `finch -d` / `--foreground` — the worker alone (for systemd and Kubernetes), binding its own
//!   sockets or taking them from systemd socket activation;
//! - `finch worker` (hidden) — the worker under a supervisor, which hands it the sockets and the
//!   config over inherited descriptors.
//!
//! The only place `anyhow` and process exit codes live (`exit`).

mod exit;
mod logging;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use finch_config::Config;
use finch_control::{ToWorker, CONTROL_FD_ENV};
use finch_server::shared::{Link, Supervision};
use std::ffi::OsString;
use std::io::BufRead;
use std::os::fd::FromRawFd;
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit codes:
  0    clean stop (SIGTERM, SIGINT)
  255  cannot run, do not restart: bad config, missing config file, port taken, no permission
  254  restart me: the worker reached FatalError (seen by the supervisor, or by systemd with -d)
  3    the supervisor gave up: crash-loop limit reached

Signals: SIGTERM/SIGINT stop gracefully, SIGHUP reloads the config, SIGUSR2 restarts the worker
gracefully, SIGUSR1 reopens log files.";

/// Finch, a live RTSP streaming media server.
#[derive(Debug, Parser)]
#[command(name = "finch", version, after_help = EXIT_CODES)]
struct Cli {
    /// The TOML config file; without it, built-in defaults.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Run the worker in the foreground with no supervisor (for systemd, Kubernetes).
    #[arg(short = 'd', long)]
    foreground: bool,
    /// Print a status line every SECS seconds.
    #[arg(long, value_name = "SECS", global = true)]
    stats: Option<u64>,
    /// The RTSP port (overrides the config).
    #[arg(long, value_name = "N", global = true)]
    rtsp_port: Option<u16>,
    /// The admin HTTP address (overrides the config).
    #[arg(long, value_name = "ADDR:PORT", global = true)]
    admin: Option<String>,
    /// The HLS HTTP address (overrides the config).
    #[arg(long, value_name = "ADDR:PORT", global = true)]
    hls: Option<String>,
    /// Print the effective config as commented TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Validate a config file and exit: 0 if valid, else 255 with FILE:LINE:COLUMN: reason.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The worker, as started by the supervisor (internal).
    #[command(hide = true)]
    Worker,
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
    if matches!(cli.command, Some(Command::Worker)) {
        let code = supervised_worker(cli);
        logging::flush();
        std::process::exit(code);
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
    let log = logging::init(&config);
    raise_open_files_limit();
    let code = if cli.foreground {
        foreground_worker(cli, config, log)
    } else {
        supervisor(&cli, config, log)
    };
    logging::flush();
    std::process::exit(code);
}

/// File, then environment, then flags; validated.
fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = finch_config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(p) = cli.rtsp_port {
        config.rtsp.port = p;
    }
    if let Some(a) = &cli.admin {
        config.admin.listen = a.clone();
    }
    if let Some(h) = &cli.hls {
        config.hls.listen = h.clone();
    }
    if let Some(s) = cli.stats {
        config.log.stats_interval_secs = s;
    }
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {}", e.key.join("."), e.reason))?;
    // An RTSPS certificate pair that cannot be used: exit 255 at start, refused on reload.
    finch_server::tls::load(&config)?;
    Ok(config)
}

fn reloader(cli: Cli) -> finch_server::shared::Reloader {
    Box::new(move || load_config(&cli).map_err(|e| format!("{e:#}")))
}

/// The hooks a worker gets from the binary: status lines on stdout, log reopen and level.
fn hooks(log: logging::Logging) -> finch_server::shared::Hooks {
    let (a, b, c) = (log.clone(), log.clone(), log);
    finch_server::shared::Hooks {
        status_line: Some(Box::new(|line| {
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "{line}");
        })),
        reopen_logs: Some(Box::new(move |()| a.reopen())),
        apply_log_config: Some(Box::new(move |config| b.apply(&config))),
        log_lines_dropped: Some(Box::new(move || c.dropped_lines())),
    }
}

/// Binds the config's sockets; on failure says why (log and stderr) and gives the exit code:
/// nothing was started, so 255, "cannot run", whichever process tried.
fn bind_or_report(config: &Config) -> Result<finch_server::Listeners, i32> {
    finch_server::bind(config).map_err(|e| {
        let e = anyhow::Error::from(e);
        tracing::error!("cannot run: {e:#}");
        eprintln!("finch: cannot run: {e:#}");
        exit::CANNOT_RUN
    })
}

fn supervisor(cli: &Cli, config: Config, log: logging::Logging) -> i32 {
    let listeners = match bind_or_report(&config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // The path on disk the user started, not /proc/self/exe: after an upgrade (a new file, or a
    // symlink switched to one) it names the new binary.
    let exe = match binary_path() {
        Some(p) => p,
        None => {
            eprintln!("finch: cannot find its own binary");
            return exit::CANNOT_RUN;
        }
    };
    let mut worker_args: Vec<OsString> = vec!["worker".into()];
    if let Some(c) = &cli.config {
        worker_args.push("--config".into());
        worker_args.push(c.into());
    }
    if let Some(p) = cli.rtsp_port {
        worker_args.push(format!("--rtsp-port={p}").into());
    }
    if let Some(a) = &cli.admin {
        worker_args.push(format!("--admin={a}").into());
    }
    if let Some(h) = &cli.hls {
        worker_args.push(format!("--hls={h}").into());
    }
    if let Some(s) = cli.stats {
        worker_args.push(format!("--stats={s}").into());
    }
    finch_supervisor::run(finch_supervisor::Options {
        exe,
        worker_args,
        config,
        sockets: finch_server::net::inherit::into_fds(listeners),
        reopen_logs: Box::new(move || log.reopen()),
        binder: Box::new(finch_server::net::rebind),
    })
}

/// The binary as the user named it (argv[0]), made absolute against the start directory or
/// found on PATH, without resolving symlinks; `current_exe` only as a last resort.
fn binary_path() -> Option<PathBuf> {
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    if argv0.components().count() > 1 {
        let abs = if argv0.is_absolute() {
            argv0
        } else {
            std::env::current_dir().ok()?.join(argv0)
        };
        return abs.is_file().then_some(abs);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(&argv0))
                .find(|p| p.is_file())
        })
        .or_else(|| std::env::current_exe().ok())
}

fn foreground_worker(cli: Cli, config: Config, log: logging::Logging) -> i32 {
    let listeners = match finch_server::net::inherit::take_from_env(true) {
        Some(fds) => finch_server::net::inherit::from_fds(fds),
        None => match bind_or_report(&config) {
            Ok(l) => l,
            Err(code) => return code,
        },
    };
    // In --foreground the pid file holds the worker's pid (there is no supervisor). Written
    // only once the sockets are ours: a second instance that cannot bind must not overwrite
    // (and at exit delete) the running one's.
    let _pid_file = match config.supervisor.pid_file.as_str() {
        "" => None,
        path => match finch_supervisor::pidfile::PidFile::create(path.as_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("finch: cannot run: cannot write the pid file {path}: {e}");
                return exit::CANNOT_RUN;
            }
        },
    };
    if listeners.rtsp.is_empty() {
        eprintln!(
            "finch: cannot run: no RTSP listener (check the inherited sockets or the config)"
        );
        return exit::CANNOT_RUN;
    }
    let link = Link {
        reloader: Some(reloader(cli)),
        hooks: hooks(log),
        ..Link::default()
    };
    run_worker(listeners, config, link, None)
}

/// `finch worker`: take the control channel and the sockets, read Init, serve.
fn supervised_worker(cli: Cli) -> i32 {
    let Some(fd) = std::env::var(CONTROL_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        eprintln!("finch worker: started without a supervisor ({CONTROL_FD_ENV} unset); use finch or finch -d");
        return exit::CANNOT_RUN;
    };
    // SAFETY: the supervisor passed this descriptor to this process for it to own; it is taken
    // once, here.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    let mut line = String::new();
    let read = stream
        .try_clone()
        .map(std::io::BufReader::new)
        .and_then(|mut r| r.read_line(&mut line));
    let init = match read
        .ok()
        .and_then(|_| finch_control::decode::<ToWorker>(&line))
    {
        Some(i) => i,
        None => {
            eprintln!("finch worker: no Init message from the supervisor");
            return exit::CANNOT_RUN;
        }
    };
    let ToWorker::Init {
        generation,
        supervisor_pid,
        config,
        restarts,
        restarts_total,
        restarts_by_reason,
        errors,
        auth_secret,
    } = init;
    // The supervisor's config already has the environment and flags applied.
    let config = match finch_config::load_str(&config, "<from the supervisor>", Vec::new()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("finch worker: bad config from the supervisor: {e}");
            return exit::CANNOT_RUN;
        }
    };
    let log = logging::init(&config);
    raise_open_files_limit();
    let Some(fds) = finch_server::net::inherit::take_from_env(false) else {
        eprintln!("finch worker: no sockets from the supervisor");
        return exit::CANNOT_RUN;
    };
    let listeners = finch_server::net::inherit::from_fds(fds);
    let (tx, rx) = finch_server::report::channel();
    let link = Link {
        errors,
        supervision: Some(Supervision {
            generation,
            supervisor_pid,
            restarts,
            restarts_total,
            restarts_by_reason,
        }),
        reporter: Some(tx),
        auth_secret: hex_bytes(&auth_secret),
        reloader: Some(reloader(cli)),
        hooks: hooks(log),
    };
    run_worker(listeners, config, link, Some((stream, rx)))
}

type ControlChannel = (
    std::os::unix::net::UnixStream,
    finch_server::report::Reports,
);

fn run_worker(
    listeners: finch_server::Listeners,
    config: Config,
    link: Link,
    control: Option<ControlChannel>,
) -> i32 {
    // Rust's runtime handles SIGSEGV and SIGBUS to report stack overflows, and a SIGSEGV sent
    // with kill(2) then does nothing. A worker must die by the signal, so its supervisor (or
    // systemd) sees a crash and restarts it, as DSS's parent expected.
    // SAFETY: restoring the default disposition touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
    // A panic in a task (a connection) is contained by tokio; say so in the log at error.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panic");
        default_hook(info);
    }));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("finch: cannot start the async runtime: {e}");
            return exit::CANNOT_RUN;
        }
    };
    let result = runtime.block_on(async move {
        let stop = finch_server::Stop::default();
        let finish = tokio_util::sync::CancellationToken::new();
        let control = control.map(|(stream, rx)| {
            let (now, finish) = (stop.now.clone(), finish.clone());
            tokio::spawn(async move {
                if let Err(e) = finch_server::worker::control::run(stream, rx, now, finish).await {
                    tracing::error!(error = %e, "control channel failed");
                }
            })
        });
        let result = finch_server::run(listeners, config, stop, link)
            .await
            .context("running the server");
        // Let the supervisor hear what is queued (a Fatal report, the last log entries) before
        // the process exits.
        finish.cancel();
        if let Some(task) = control {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), task).await;
        }
        result
    });
    match result {
        Ok(finch_server::Exit::Clean) => exit::CLEAN,
        Ok(finch_server::Exit::Fatal) => exit::RESTART_ME,
        Err(e) => {
            tracing::error!("cannot run: {e:#}");
            eprintln!("finch: cannot run: {e:#}");
            exit::CANNOT_RUN
        }
    }
}

/// The supervisor's hex secret as bytes (`None` for anything else: the worker makes its own).
fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
        .collect()
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
