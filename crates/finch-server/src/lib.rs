//! Finch's worker: everything that serves RTSP clients and operators.
//!
//! Layout:
//! - `listener`: the accept loop; `conn`: one connection's task; `methods`: the RTSP methods.
//! - `registry`: paths and their publishers; `stream`: the fan-out and GOP cache.
//! - `udp`: the shared RTP/RTCP sockets; `activity`: session liveness.
//! - `server`: what connections share; `state`: the server state; `admin`: the HTTP API.
//! - `errorlog`: DSS's error log (fatal → FatalError); `control`: the supervisor channel;
//!   `reload`: applying a new config.
//!
//! [`run`] takes sockets that are already bound ([`Listeners`]), so the binary, a supervisor
//! passing inherited descriptors, or a test choose where they come from.

pub mod activity;
pub mod admin;
mod conn;
pub mod control;
pub mod errorlog;
pub mod inherit;
mod listener;
mod methods;
pub mod metrics;
pub mod registry;
pub mod reload;
pub mod server;
pub mod state;
pub mod stats;
pub mod stream;
pub mod udp;

use finch_config::Config;
use server::Server;
use state::ServerState;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The worker's bound sockets.
pub struct Listeners {
    /// RTSP TCP listeners.
    pub rtsp: Vec<std::net::TcpListener>,
    /// The admin HTTP listener.
    pub admin: Option<std::net::TcpListener>,
    /// The shared RTP and RTCP sockets.
    pub udp: Option<(std::net::UdpSocket, std::net::UdpSocket)>,
}

/// Why the worker could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A bound socket could not be handed to tokio.
    #[error("cannot use the {what} socket")]
    Socket {
        /// Which socket.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds every socket the config asks for.
pub fn bind(config: &Config) -> Result<Listeners, ServerError> {
    Ok(Listeners {
        rtsp: bind_rtsp(config)?,
        admin: bind_admin(config)?,
        udp: bind_udp(config)?,
    })
}

/// The RTSP listeners.
pub fn bind_rtsp(config: &Config) -> Result<Vec<std::net::TcpListener>, ServerError> {
    let mut rtsp = Vec::new();
    for a in &config.rtsp.listen_addresses {
        let ip: IpAddr = a.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let addr = SocketAddr::new(ip, config.rtsp.port);
        rtsp.push(bind_tcp(addr, "the RTSP listener")?);
    }
    Ok(rtsp)
}

/// One RTSP listener at `addr`.
pub fn bind_rtsp_at(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    bind_tcp(addr, "the RTSP listener")
}

/// The admin HTTP listener, if enabled.
pub fn bind_admin(config: &Config) -> Result<Option<std::net::TcpListener>, ServerError> {
    if !config.admin.enabled {
        return Ok(None);
    }
    let addr: SocketAddr = config
        .admin
        .listen
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    Ok(Some(bind_tcp(addr, "the admin HTTP listener")?))
}

/// The shared RTP/RTCP pair, if UDP is on.
pub fn bind_udp(
    config: &Config,
) -> Result<Option<(std::net::UdpSocket, std::net::UdpSocket)>, ServerError> {
    if !config.rtsp.udp {
        return Ok(None);
    }
    let ip: IpAddr = config
        .rtsp
        .listen_addresses
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let rtp_addr = SocketAddr::new(ip, config.rtsp.rtp_port);
    let rtcp_addr = SocketAddr::new(ip, config.rtsp.rtp_port + 1);
    let rtp = std::net::UdpSocket::bind(rtp_addr).map_err(|source| ServerError::Bind {
        what: "the RTP socket",
        addr: rtp_addr,
        source,
    })?;
    let rtcp = std::net::UdpSocket::bind(rtcp_addr).map_err(|source| ServerError::Bind {
        what: "the RTCP socket",
        addr: rtcp_addr,
        source,
    })?;
    Ok(Some((rtp, rtcp)))
}

fn bind_tcp(addr: SocketAddr, what: &'static str) -> Result<std::net::TcpListener, ServerError> {
    // std sets SO_REUSEADDR on Unix, so a restart does not trip over TIME_WAIT.
    std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { what, addr, source })
}

/// How a worker run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stopped on request (exit 0).
    Clean,
    /// Reached FatalError (exit 254: restart me).
    Fatal,
}

/// What can stop the run loop from outside: a stop (close sessions now, then exit) or a drain
/// (stop accepting, let sessions run until they end or `drain_timeout_secs`, then exit).
#[derive(Clone, Default)]
pub struct Stop {
    /// Close every session and exit.
    pub now: CancellationToken,
    /// Stop accepting and drain.
    pub drain: CancellationToken,
}

/// The heartbeat period; the supervisor's timeout is several of these.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Serves until stopped or FatalError; then closes every session (waiting at most the drain
/// timeout, as DSS waits 5 s) and returns how it ended.
pub async fn run(
    listeners: Listeners,
    config: Config,
    stop: Stop,
    link: server::Link,
) -> Result<Exit, ServerError> {
    let tracker = TaskTracker::new();
    let udp = match listeners.udp {
        Some((rtp, rtcp)) => {
            let socket = |s: std::net::UdpSocket, what| {
                s.set_nonblocking(true)
                    .and_then(|()| tokio::net::UdpSocket::from_std(s))
                    .map_err(|source| ServerError::Socket { what, source })
            };
            let udp =
                udp::Udp::new(socket(rtp, "RTP")?, socket(rtcp, "RTCP")?).map_err(|source| {
                    ServerError::Socket {
                        what: "RTP",
                        source,
                    }
                })?;
            Some(Arc::new(udp))
        }
        None => None,
    };
    // Connections hang off `sessions`; listeners off `accepting`, which stops first on a drain.
    let sessions = CancellationToken::new();
    let accepting = sessions.child_token();
    let server = Arc::new(Server::new(config, udp.clone(), sessions.clone(), link));
    // The UDP loops stop with the sessions, or earlier when a drain hands UDP to the next worker.
    let udp_stop = sessions.child_token();
    if let Some(udp) = udp {
        tracker.spawn(udp.run(udp_stop.clone()));
    }
    // Running before the first accept: connections that waited in the backlog during a restart
    // are served, not answered 503 as if the server were refusing them.
    server.state.send_replace(ServerState::Running);
    for l in listeners.rtsp {
        let local = l.local_addr().ok();
        l.set_nonblocking(true)
            .map_err(|source| ServerError::Socket {
                what: "RTSP",
                source,
            })?;
        let l = tokio::net::TcpListener::from_std(l).map_err(|source| ServerError::Socket {
            what: "RTSP",
            source,
        })?;
        tracing::info!(addr = ?local, "RTSP listening");
        tracker.spawn(listener::accept_loop(
            server.clone(),
            l,
            tracker.clone(),
            accepting.clone(),
        ));
    }
    if let Some(l) = listeners.admin {
        let local = l.local_addr().ok();
        l.set_nonblocking(true)
            .map_err(|source| ServerError::Socket {
                what: "admin",
                source,
            })?;
        let l = tokio::net::TcpListener::from_std(l).map_err(|source| ServerError::Socket {
            what: "admin",
            source,
        })?;
        tracing::info!(addr = ?local, "admin HTTP listening");
        let app = admin::router(server.clone());
        let stop_admin = accepting.clone();
        tracker.spawn(async move {
            let served = axum::serve(l, app)
                .with_graceful_shutdown(async move { stop_admin.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin HTTP server failed");
            }
        });
    }
    if server.config().paths.0.is_empty() {
        tracing::warn!(
            "no authentication and no [paths] configured: any client may publish and read any path"
        );
    }
    // Handlers are installed here, before Ready: a signal forwarded right after Ready must not
    // meet the default action (which would kill the worker).
    let handlers = install_signal_handlers().map_err(|source| ServerError::Socket {
        what: "signal handler",
        source,
    })?;
    tracker.spawn(signals(server.clone(), stop.clone(), handlers));
    server.report(finch_control::ToSupervisor::Ready);
    if server.supervision.is_none() {
        // --foreground under systemd: tell it we serve (a no-op without NOTIFY_SOCKET).
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
    let mut state = server.state.subscribe();
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut status = stats::StatusLines::new();
    let mut ticks: u64 = 0;
    let exit = loop {
        tokio::select! {
            _ = stop.now.cancelled() => break Exit::Clean,
            _ = stop.drain.cancelled() => break Exit::Clean,
            _ = state.changed() => {}
            _ = tick.tick() => {
                heartbeat(&server).await;
                ticks += 1;
                print_status(&server, &mut status, ticks);
            }
        }
        match *state.borrow_and_update() {
            ServerState::FatalError => break Exit::Fatal,
            ServerState::ShuttingDown => break Exit::Clean,
            _ => {}
        }
    };
    let drain = Duration::from_secs(server.config().supervisor.drain_timeout_secs);
    // One deadline for everything the stop waits on.
    let deadline = tokio::time::Instant::now() + drain;
    accepting.cancel();
    if exit == Exit::Clean && stop.drain.is_cancelled() && !stop.now.is_cancelled() {
        // A graceful restart: the next worker is accepting already; let our sessions finish on
        // their own until the drain timeout. UDP is the exception: both workers would read the
        // shared sockets and each get half the datagrams, so this one stops reading them and
        // ends its UDP sessions now (their clients reconnect to the new worker).
        tracing::info!(drain_secs = drain.as_secs(), "draining sessions");
        udp_stop.cancel();
        for s in server.list_sessions() {
            if s.transport == Some("udp") {
                s.kick.cancel();
            }
        }
        while server
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
            && tokio::time::Instant::now() < deadline
            && !stop.now.is_cancelled()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if exit == Exit::Clean {
        server.state.send_replace(ServerState::ShuttingDown);
    }
    if server.supervision.is_none() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
    // DSS's KillAllRTPSessions, then wait for them at most the drain timeout.
    server.registry.close_all();
    sessions.cancel();
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("tasks still running after the drain timeout; exiting anyway");
    }
    Ok(exit)
}

/// One heartbeat: proves the runtime's worker threads still run tasks (a spawned probe must
/// complete), then tells the supervisor. Injected hang and core-path panic faults fire here,
/// on the loop that sends the heartbeat, as a real deadlock or bug there would.
async fn heartbeat(server: &Arc<Server>) {
    use std::sync::atomic::Ordering;
    if server.faults.hang.load(Ordering::Relaxed) {
        tracing::error!("injected fault: the run loop hangs");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if server.faults.panic_core.load(Ordering::Relaxed) {
        panic!("injected fault: panic on the worker's core path");
    }
    if tokio::time::timeout(HEARTBEAT * 2, tokio::spawn(async {}))
        .await
        .is_ok()
    {
        server.report(finch_control::ToSupervisor::Heartbeat);
        if server.supervision.is_none() && std::env::var_os("WATCHDOG_USEC").is_some() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
    }
}

/// DSS's status line, every `log.stats_interval_secs` (0: off), through the binary's hook.
fn print_status(server: &Server, status: &mut stats::StatusLines, ticks: u64) {
    let every = server.config().log.stats_interval_secs;
    let Some(print) = &server.hooks.status_line else {
        return;
    };
    if every == 0 || !ticks.is_multiple_of(every) {
        return;
    }
    let paths = server.registry.list();
    let reading = stats::Reading {
        readers: paths.iter().map(|p| p.stream.reader_count()).sum(),
        connections: server
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        accepted: server.metrics.accepted_total(),
        paths: paths.len(),
        totals: server.registry.totals(),
    };
    for line in status.next(std::time::Instant::now(), reading) {
        print(line);
    }
}

/// The worker's signal streams, registered before it reports Ready.
struct SignalHandlers {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

fn install_signal_handlers() -> std::io::Result<SignalHandlers> {
    use tokio::signal::unix::{signal, SignalKind};
    Ok(SignalHandlers {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
        hup: signal(SignalKind::hangup())?,
        usr1: signal(SignalKind::user_defined1())?,
        usr2: signal(SignalKind::user_defined2())?,
    })
}

/// The worker's own signals. Under a supervisor they arrive forwarded: SIGTERM/SIGINT stop,
/// SIGUSR2 drains (a graceful restart), SIGHUP reloads.
async fn signals(server: Arc<Server>, stop: Stop, h: SignalHandlers) {
    let SignalHandlers {
        mut term,
        mut int,
        mut hup,
        mut usr1,
        mut usr2,
    } = h;
    loop {
        tokio::select! {
            _ = server.shutdown.cancelled() => return,
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); stop.now.cancel(); }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); stop.now.cancel(); }
            _ = usr2.recv() => {
                if server.supervision.is_some() {
                    tracing::info!("SIGUSR2: draining for a graceful restart");
                    stop.drain.cancel();
                } else {
                    tracing::warn!("SIGUSR2: a graceful restart needs the supervisor (not in --foreground)");
                }
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = reload::reload(&server);
            }
            _ = usr1.recv() => {
                if let Some(reopen) = &server.hooks.reopen_logs {
                    reopen(());
                    tracing::info!("SIGUSR1: log file reopened");
                }
            }
        }
    }
}
