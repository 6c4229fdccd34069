//! The worker's life: start serving on sockets it is given, run the once-a-second loop (DSS's
//! run loop: heartbeat, status line, the server state), and stop, draining or at once.
//!
//! Layout: `heartbeat` (the proof of life, and where the hang and core-panic faults fire),
//! `signals`, `drain` (the end: a graceful restart's drain, then closing everything),
//! `control` (the supervisor's channel), `stats` (DSS's status line).

pub mod control;
mod drain;
mod heartbeat;
mod signals;
pub mod stats;

use crate::net::{Listeners, NetError};
use crate::shared::{Link, Shared};
use crate::state::ServerState;
use crate::udp::Udp;
use finch_config::Config;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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

fn tokio_socket<T>(what: &'static str, r: std::io::Result<T>) -> Result<T, NetError> {
    r.map_err(|source| NetError::Socket { what, source })
}

/// Start-up warnings about a config that serves, but perhaps not as meant.
fn warn_about(config: &Config) {
    if config.auth.users.is_empty() {
        tracing::warn!("no [[auth.users]] configured: any client may publish and read any path");
    }
    for user in finch_config::auth::basic_only_users(&config.auth) {
        tracing::warn!(
            user,
            "this user's password is stored as sha256: (Basic only): clients that always choose Digest (ffmpeg, VLC) cannot log in as it"
        );
    }
    if !config.admin.token.is_empty() && config.admin.token.len() < 16 {
        tracing::warn!("admin.token is shorter than 16 characters: easy to guess");
    }
}

/// An HTTP listener (the admin API, HLS) handed to tokio.
fn http_listener(
    what: &'static str,
    l: std::net::TcpListener,
) -> Result<tokio::net::TcpListener, NetError> {
    let local = l.local_addr().ok();
    let l = tokio_socket(
        what,
        l.set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(l)),
    )?;
    tracing::info!(addr = ?local, "{what} HTTP listening");
    Ok(l)
}

/// Serves until stopped or FatalError; then closes every session (waiting at most the drain
/// timeout, as DSS waits 5 s) and returns how it ended.
pub async fn run(
    listeners: Listeners,
    config: Config,
    stop: Stop,
    link: Link,
) -> Result<Exit, NetError> {
    let tracker = TaskTracker::new();
    let mut pairs = Vec::new();
    for (rtp, rtcp) in listeners.udp {
        let socket = |s: std::net::UdpSocket| {
            s.set_nonblocking(true)
                .and_then(|()| tokio::net::UdpSocket::from_std(s))
        };
        pairs.push((
            tokio_socket("RTP", socket(rtp))?,
            tokio_socket("RTCP", socket(rtcp))?,
        ));
    }
    let udp = tokio_socket("RTP", Udp::new(pairs))?.map(Arc::new);
    // Connections hang off `sessions`; listeners off `accepting`, which stops first on a drain.
    let sessions = CancellationToken::new();
    let accepting = sessions.child_token();
    let max_packet = config.limits.max_interleaved_bytes;
    let shared = Arc::new(Shared::new(config, udp.clone(), sessions.clone(), link));
    if let Some(udp) = &udp {
        udp.set_max_packet(max_packet);
        udp.count_oversized_in(shared.metrics.limit_counter("max_interleaved_bytes"));
    }
    // The UDP loops stop with the sessions, or earlier when a drain hands UDP to the next worker.
    let udp_stop = sessions.child_token();
    if let Some(udp) = udp {
        // A replacement reads them once its predecessor's sessions are here (see `handover`).
        let settled = shared.handover.settled.clone();
        let stop = udp_stop.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = settled.cancelled() => udp.run(stop).await,
                _ = stop.cancelled() => {}
            }
        });
    }
    // Running before the first accept: connections that waited in the backlog during a restart
    // are served, not answered 503 as if the server were refusing them.
    shared.state.send_replace(ServerState::Running);
    for l in listeners.rtsp {
        let local = l.local_addr().ok();
        let l = tokio_socket(
            "RTSP",
            l.set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l)),
        )?;
        tracing::info!(addr = ?local, "RTSP listening");
        tracker.spawn(crate::rtsp::listener::accept_loop(
            shared.clone(),
            l,
            tracker.clone(),
            accepting.clone(),
            false,
        ));
    }
    shared.tls.set(
        crate::tls::load(&shared.config()).map_err(|e| NetError::Socket {
            what: "RTSPS",
            source: std::io::Error::other(e.to_string()),
        })?,
    );
    for l in listeners.rtsps {
        let local = l.local_addr().ok();
        let l = tokio_socket(
            "RTSPS",
            l.set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l)),
        )?;
        tracing::info!(addr = ?local, "RTSPS listening");
        tracker.spawn(crate::rtsp::listener::accept_loop(
            shared.clone(),
            l,
            tracker.clone(),
            accepting.clone(),
            true,
        ));
    }
    if let Some(l) = listeners.admin {
        let app = crate::admin::router(shared.clone());
        let stop = accepting.clone();
        let l = http_listener("admin", l)?;
        tracker.spawn(async move {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let served = axum::serve(l, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "admin HTTP server failed");
            }
        });
    }
    if let Some(l) = listeners.hls {
        let l = http_listener("HLS", l)?;
        let served = crate::hls::http::serve_on(l, shared.clone(), accepting.clone());
        tracker.spawn(async move {
            if let Err(e) = served.await {
                tracing::error!(error = %e, "HLS HTTP server failed");
            }
        });
    }
    warn_about(&shared.config());
    if crate::handover::adopting(&shared) {
        // A replacement pulls its cameras once it has its predecessor's sessions: a pulled path
        // taken over is continued by this worker's pull (see `handover`).
        let shared = shared.clone();
        tracker.spawn(async move {
            shared.handover.settled.cancelled().await;
            shared.pulls.sync(&shared, &shared.config());
        });
    } else {
        shared.pulls.sync(&shared, &shared.config());
    }
    if let Some(cluster) = shared.cluster.clone() {
        tracing::info!(node = %cluster.node_id, advertise_url = %cluster.advertise_url, "cluster: joining");
        // A replacement claims once it holds its predecessor's publishers (same node id:
        // their claims carry on).
        let shared = shared.clone();
        tracker.spawn(async move {
            shared.handover.settled.cancelled().await;
            cluster.keep(shared).await;
        });
    }
    // Handlers are installed here, before Ready: a signal forwarded right after Ready must not
    // meet the default action (which would kill the worker).
    let handlers = tokio_socket("signal handler", signals::install())?;
    tracker.spawn(signals::run(shared.clone(), stop.clone(), handlers));
    // A replacement waits for its predecessor's sessions; listening before Ready, since the
    // predecessor looks for it as soon as we are.
    crate::handover::listen(&shared, &tracker);
    shared.report(finch_control::ToSupervisor::Ready);
    if shared.supervision.is_none() {
        // --foreground under systemd: tell it we serve (a no-op without NOTIFY_SOCKET).
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    }
    let mut state = shared.state.subscribe();
    let sentinel = heartbeat::Sentinel::start();
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut status = stats::StatusLines::new();
    let mut ticks: u64 = 0;
    let exit = loop {
        tokio::select! {
            _ = stop.now.cancelled() => break Exit::Clean,
            _ = stop.drain.cancelled() => break Exit::Clean,
            _ = state.changed() => {}
            _ = tick.tick() => {
                heartbeat::beat(&shared, &sentinel).await;
                // Paths whose source did not come back within its grace close now.
                shared.registry.expire(std::time::Instant::now());
                ticks += 1;
                stats::print(&shared, &mut status, ticks);
            }
        }
        match *state.borrow_and_update() {
            ServerState::FatalError => break Exit::Fatal,
            ServerState::ShuttingDown => break Exit::Clean,
            _ => {}
        }
    };
    drain::finish(
        &shared,
        exit,
        &stop,
        drain::Tokens {
            accepting,
            udp: udp_stop,
            sessions,
        },
        tracker,
    )
    .await;
    Ok(exit)
}
