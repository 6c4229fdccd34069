//! Finch's worker: everything that serves RTSP clients and operators.
//!
//! Layout:
//! - `listener`: the accept loop; `conn`: one connection's task; `methods`: the RTSP methods.
//! - `registry`: paths and their publishers; `stream`: the fan-out and GOP cache.
//! - `udp`: the shared RTP/RTCP sockets; `activity`: session liveness.
//! - `server`: what connections share; `state`: the server state; `admin`: the HTTP API.
//!
//! [`run`] takes sockets that are already bound ([`Listeners`]), so the binary, a supervisor
//! passing inherited descriptors, or a test choose where they come from.

pub mod activity;
pub mod admin;
mod conn;
mod listener;
mod methods;
pub mod registry;
pub mod server;
pub mod state;
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
    let mut rtsp = Vec::new();
    for a in &config.rtsp.listen_addresses {
        let ip: IpAddr = a.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let addr = SocketAddr::new(ip, config.rtsp.port);
        rtsp.push(bind_tcp(addr, "the RTSP listener")?);
    }
    let admin = if config.admin.enabled {
        let addr: SocketAddr = config
            .admin
            .listen
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
        Some(bind_tcp(addr, "the admin HTTP listener")?)
    } else {
        None
    };
    let udp = if config.rtsp.udp {
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
        Some((rtp, rtcp))
    } else {
        None
    };
    Ok(Listeners { rtsp, admin, udp })
}

fn bind_tcp(addr: SocketAddr, what: &'static str) -> Result<std::net::TcpListener, ServerError> {
    // std sets SO_REUSEADDR on Unix, so a restart does not trip over TIME_WAIT.
    std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { what, addr, source })
}

/// How long stopping sessions may take before the worker exits anyway (DSS waits 5 s).
const DRAIN: Duration = Duration::from_secs(5);

/// Serves until `shutdown` fires; then closes every session and returns.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
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
    let server = Arc::new(Server::new(config, udp.clone(), shutdown.clone()));
    if let Some(udp) = udp {
        tracker.spawn(udp.run(shutdown.clone()));
    }
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
        tracker.spawn(listener::accept_loop(server.clone(), l, tracker.clone()));
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
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let served = axum::serve(l, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
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
    server.state.send_replace(ServerState::Running);
    shutdown.cancelled().await;
    server.state.send_replace(ServerState::ShuttingDown);
    server.registry.close_all();
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("sessions still open after the drain timeout; exiting anyway");
    }
    Ok(())
}
