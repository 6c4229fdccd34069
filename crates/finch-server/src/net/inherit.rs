//! Sockets passed between processes as descriptors, named as systemd names them.
//!
//! The supervisor binds the sockets once and hands them to each worker (descriptors 3, 4 … with
//! `LISTEN_FDS` and `LISTEN_FDNAMES`); systemd socket activation uses the same convention for
//! `finch --foreground`. Names: `rtsp` and `rtsps` (any number), `admin`, `hls`, and `rtp`/`rtcp` (a pair per
//! listen address, paired in order).

use super::{Listeners, Role};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The first inherited descriptor (systemd's `SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// Turns bound sockets into named descriptors, in the order the worker expects.
pub fn into_fds(l: Listeners) -> Vec<(String, OwnedFd)> {
    let mut out: Vec<(String, OwnedFd)> = Vec::new();
    for s in l.rtsp {
        out.push(("rtsp".into(), s.into()));
    }
    for s in l.rtsps {
        out.push(("rtsps".into(), s.into()));
    }
    if let Some(a) = l.admin {
        out.push(("admin".into(), a.into()));
    }
    if let Some(h) = l.hls {
        out.push(("hls".into(), h.into()));
    }
    for (rtp, rtcp) in l.udp {
        out.push(("rtp".into(), rtp.into()));
        out.push(("rtcp".into(), rtcp.into()));
    }
    out
}

/// Turns named descriptors back into sockets.
pub fn from_fds(fds: Vec<(String, OwnedFd)>) -> Listeners {
    let roles = fds
        .into_iter()
        .map(|(name, fd)| match Role::from_name(&name) {
            Some(role) => (role, fd),
            // systemd names descriptors after the socket unit unless FileDescriptorName= says
            // otherwise: an unnamed stream socket is taken as an RTSP listener.
            None => {
                tracing::info!(name, "inherited descriptor taken as an RTSP listener");
                (Role::Rtsp, fd)
            }
        });
    Listeners::from_roles(roles)
}

/// Takes the descriptors named in `LISTEN_FDS`/`LISTEN_FDNAMES`, if this process was given any.
/// With `check_pid`, `LISTEN_PID` must name this process (systemd); a supervised worker is
/// started with the variables meant for it and needs no pid check.
pub fn take_from_env(check_pid: bool) -> Option<Vec<(String, OwnedFd)>> {
    let count: RawFd = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if check_pid {
        let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
        if pid != std::process::id() {
            return None;
        }
    }
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .unwrap_or_default()
        .split(':')
        .map(str::to_owned)
        .collect();
    let mut out = Vec::new();
    for i in 0..count {
        let fd = FIRST_FD + i;
        // SAFETY: LISTEN_FDS says descriptors 3..3+count were passed to this process for it
        // to own; each is taken exactly once, here.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = names
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| "rtsp".to_owned());
        out.push((name, owned));
    }
    // SAFETY: only this thread runs at this point of start-up, so nothing reads the environment
    // concurrently; the variables must not leak to processes this one starts.
    unsafe {
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
        std::env::remove_var("LISTEN_PID");
    }
    Some(out)
}
