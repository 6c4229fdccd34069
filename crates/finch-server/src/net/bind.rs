//! Binding the sockets a config wants.
//!
//! IPv6 sockets are bound with `IPV6_V6ONLY`, so `listen_addresses = ["0.0.0.0", "::"]` gives one
//! IPv4 and one IPv6 socket instead of failing with EADDRINUSE (Linux binds `::` dual-stack by
//! default, which would take the IPv4 port too). Listing `"::"` alone therefore serves IPv6
//! only, as nginx's `ipv6only=on` does; list both families to serve both.

use super::{wanted, Listeners, NetError, Role};
use finch_config::Config;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// Backlog of the listening sockets: connections that arrive while a worker restarts wait here.
const BACKLOG: i32 = 1024;

/// Binds every socket the config asks for.
pub fn bind(config: &Config) -> Result<Listeners, NetError> {
    let mut bound = Vec::new();
    for (role, addr) in wanted(config) {
        bound.push((role, bind_one(role, addr)?));
    }
    Ok(Listeners::from_roles(bound))
}

/// The receive buffer asked for the shared UDP sockets.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// Binds one socket (a listening TCP socket, or a UDP one) for `role` at `addr`.
pub fn bind_one(role: Role, addr: SocketAddr) -> Result<OwnedFd, NetError> {
    let err = |source| NetError::Bind {
        what: role.what(),
        addr,
        source,
    };
    let (ty, proto) = match role {
        Role::Rtsp | Role::Rtsps | Role::Admin | Role::Hls => (Type::STREAM, Protocol::TCP),
        Role::Rtp | Role::Rtcp => (Type::DGRAM, Protocol::UDP),
    };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto)).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    if ty == Type::STREAM {
        // As std does on Unix: a restart must not trip over connections in TIME_WAIT.
        socket.set_reuse_address(true).map_err(err)?;
    }
    if ty == Type::DGRAM {
        // Room for bursts, and for a publisher's datagrams that wait in the kernel while a
        // graceful restart moves its session (the kernel caps it at net.core.rmem_max).
        let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    }
    socket.bind(&addr.into()).map_err(err)?;
    if ty == Type::STREAM {
        socket.listen(BACKLOG).map_err(err)?;
    }
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_wildcards_bind_side_by_side() {
        // Port 0 for TCP: the kernel picks; both families must bind the same one, so pick one
        // free for IPv4 first and bind IPv6 on it.
        let v4 = bind_one(Role::Rtsp, "0.0.0.0:0".parse().unwrap()).unwrap();
        let port = std::net::TcpListener::from(v4.try_clone().unwrap())
            .local_addr()
            .unwrap()
            .port();
        let v6 = bind_one(Role::Rtsp, SocketAddr::new("::".parse().unwrap(), port));
        assert!(v6.is_ok(), "{v6:?}");
        let v6 = Socket::from(v6.unwrap());
        assert!(v6.only_v6().unwrap());
    }
}
