//! The worker's sockets before anyone serves on them: which the config asks for, binding them,
//! passing them between processes as descriptors, and working out what a reload must rebind.
//!
//! One list says which sockets a config wants ([`wanted`]); binding, inheriting and rebinding
//! all follow it, so they cannot disagree. Names (systemd's `LISTEN_FDNAMES`): `rtsp` and `rtsps`
//! (one per listen address), `admin`, `hls`, and an `rtp`/`rtcp` pair per listen address.

mod bind;
pub mod inherit;
mod rebind;

pub use bind::{bind, bind_one};
pub use rebind::{rebind, Sockets};

use finch_config::Config;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;

/// The worker's bound sockets.
pub struct Listeners {
    /// RTSP TCP listeners.
    pub rtsp: Vec<std::net::TcpListener>,
    /// RTSPS (TLS) listeners.
    pub rtsps: Vec<std::net::TcpListener>,
    /// The admin HTTP listener.
    pub admin: Option<std::net::TcpListener>,
    /// The HLS HTTP listener.
    pub hls: Option<std::net::TcpListener>,
    /// The shared RTP and RTCP sockets, one pair per listen address.
    pub udp: Vec<(std::net::UdpSocket, std::net::UdpSocket)>,
}

impl Listeners {
    /// Sockets sorted by role; RTP and RTCP ones pair up in the order given.
    pub(crate) fn from_roles(sockets: impl IntoIterator<Item = (Role, OwnedFd)>) -> Listeners {
        let mut l = Listeners {
            rtsp: Vec::new(),
            rtsps: Vec::new(),
            admin: None,
            hls: None,
            udp: Vec::new(),
        };
        let mut rtp = Vec::new();
        let mut rtcp = Vec::new();
        for (role, fd) in sockets {
            match role {
                Role::Rtsp => l.rtsp.push(fd.into()),
                Role::Rtsps => l.rtsps.push(fd.into()),
                Role::Admin => l.admin = Some(fd.into()),
                Role::Hls => l.hls = Some(fd.into()),
                Role::Rtp => rtp.push(std::net::UdpSocket::from(fd)),
                Role::Rtcp => rtcp.push(std::net::UdpSocket::from(fd)),
            }
        }
        if rtp.len() != rtcp.len() {
            tracing::warn!(
                rtp = rtp.len(),
                rtcp = rtcp.len(),
                "RTP and RTCP sockets do not pair up; unpaired ones are not used"
            );
        }
        l.udp = rtp.into_iter().zip(rtcp).collect();
        l
    }
}

/// What a socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An RTSP listener.
    Rtsp,
    /// An RTSPS listener.
    Rtsps,
    /// The admin HTTP listener.
    Admin,
    /// The HLS HTTP listener.
    Hls,
    /// A shared RTP socket.
    Rtp,
    /// A shared RTCP socket.
    Rtcp,
}

impl Role {
    /// The descriptor name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Rtsp => "rtsp",
            Role::Rtsps => "rtsps",
            Role::Admin => "admin",
            Role::Hls => "hls",
            Role::Rtp => "rtp",
            Role::Rtcp => "rtcp",
        }
    }

    /// The role a descriptor name stands for.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "rtsp" => Some(Role::Rtsp),
            "rtsps" => Some(Role::Rtsps),
            "admin" => Some(Role::Admin),
            "hls" => Some(Role::Hls),
            "rtp" => Some(Role::Rtp),
            "rtcp" => Some(Role::Rtcp),
            _ => None,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Role::Rtsp => "the RTSP listener",
            Role::Rtsps => "the RTSPS listener",
            Role::Admin => "the admin HTTP listener",
            Role::Hls => "the HLS HTTP listener",
            Role::Rtp => "the RTP socket",
            Role::Rtcp => "the RTCP socket",
        }
    }
}

/// Why a socket could not be bound or used.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}")]
    Bind {
        /// Which socket.
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

/// Every socket `config` asks for, in the order the worker expects them: RTSP listeners, RTSPS
/// listeners, the admin listener, the HLS listener, then an RTP/RTCP pair per listen address.
pub fn wanted(config: &Config) -> Vec<(Role, SocketAddr)> {
    let ips: Vec<IpAddr> = config
        .rtsp
        .listen_addresses
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let mut out: Vec<(Role, SocketAddr)> = ips
        .iter()
        .map(|ip| (Role::Rtsp, SocketAddr::new(*ip, config.rtsp.port)))
        .collect();
    if config.rtsps.enabled {
        for ip in &ips {
            out.push((Role::Rtsps, SocketAddr::new(*ip, config.rtsps.port)));
        }
    }
    if config.admin.enabled {
        if let Ok(a) = config.admin.listen.parse() {
            out.push((Role::Admin, a));
        }
    }
    if config.hls.enabled {
        if let Ok(a) = config.hls.listen.parse() {
            out.push((Role::Hls, a));
        }
    }
    if config.rtsp.udp {
        for ip in &ips {
            out.push((Role::Rtp, SocketAddr::new(*ip, config.rtsp.rtp_port)));
            // validate() refuses 65535, so the RTCP port fits.
            let rtcp = config.rtsp.rtp_port.saturating_add(1);
            out.push((Role::Rtcp, SocketAddr::new(*ip, rtcp)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_of_udp_sockets_per_listen_address() {
        let mut c = Config::default();
        c.rtsp.listen_addresses = vec!["0.0.0.0".into(), "::".into()];
        let w = wanted(&c);
        let names: Vec<&str> = w.iter().map(|(r, _)| r.name()).collect();
        assert_eq!(
            names,
            ["rtsp", "rtsp", "admin", "hls", "rtp", "rtcp", "rtp", "rtcp"]
        );
        assert_eq!(w[3].1, "0.0.0.0:8888".parse().unwrap());
        assert_eq!(w[6].1, "[::]:8000".parse().unwrap());
        assert_eq!(w[7].1, "[::]:8001".parse().unwrap());
    }
}
