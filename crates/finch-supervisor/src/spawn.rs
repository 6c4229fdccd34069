//! Starting a worker: the same binary with the hidden `worker` subcommand, inheriting the
//! listening sockets the supervisor bound (systemd's `LISTEN_FDS` convention: descriptors 3, 4 …
//! named in `LISTEN_FDNAMES`) and one end of the control channel.
//!
//! The worker is started from the binary's path on disk, so an upgraded binary is picked up by
//! the next worker. It gets `PR_SET_PDEATHSIG`, so it stops when the supervisor dies.

use finch_control::{encode, ToWorker, CONTROL_FD_ENV};
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use thiserror::Error;

/// Why a worker could not be started.
#[derive(Debug, Error)]
pub enum SpawnError {
    /// A descriptor could not be duplicated for the child.
    #[error("cannot duplicate descriptor {fd} for the worker")]
    Dup {
        /// The descriptor.
        fd: RawFd,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The control channel could not be created or written.
    #[error("cannot set up the control channel")]
    Control(#[source] std::io::Error),
    /// The process could not be started.
    #[error("cannot start the worker {exe}")]
    Exec {
        /// The binary.
        exe: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A started worker.
pub struct Spawned {
    /// The process.
    pub child: tokio::process::Child,
    /// Its pid.
    pub pid: u32,
    /// The supervisor's end of the control channel.
    pub control: UnixStream,
}

/// Descriptors below this are left alone when staging: the child's targets are 3, 4 …, so
/// staging copies up here first means no dup2 in the child can clobber a source.
const STAGING_FLOOR: RawFd = 100;

fn stage(fd: RawFd) -> Result<OwnedFd, SpawnError> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own, or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, STAGING_FLOOR) };
    if new < 0 {
        return Err(SpawnError::Dup {
            fd,
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Starts a worker with `sockets` (name, descriptor) at 3.. and sends it `init`; `replacing`:
/// it replaces a serving worker, whose sessions it is to take over.
pub fn spawn(
    exe: &Path,
    args: &[OsString],
    sockets: &[(String, OwnedFd)],
    init: &ToWorker,
    replacing: bool,
) -> Result<Spawned, SpawnError> {
    let (mut ours, theirs) = UnixStream::pair().map_err(SpawnError::Control)?;
    let mut staged: Vec<OwnedFd> = Vec::with_capacity(sockets.len() + 1);
    for (_, fd) in sockets {
        staged.push(stage(fd.as_raw_fd())?);
    }
    staged.push(stage(theirs.as_raw_fd())?);
    drop(theirs);
    let raw: Vec<RawFd> = staged.iter().map(|f| f.as_raw_fd()).collect();
    let names: Vec<&str> = sockets.iter().map(|(n, _)| n.as_str()).collect();
    let control_fd = 3 + sockets.len();
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .env("LISTEN_FDS", sockets.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env(CONTROL_FD_ENV, control_fd.to_string())
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        .env_remove(finch_control::ADOPT_ENV)
        .kill_on_drop(false);
    if replacing {
        cmd.env(finch_control::ADOPT_ENV, "1");
    }
    let supervisor = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe calls (dup2, prctl, getppid) on integers captured by value. The targets
    // 3.. are below STAGING_FLOOR, so no source is overwritten before it is copied.
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in raw.iter().enumerate() {
                let target = 3 + i as RawFd;
                if libc::dup2(*fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor died before the death signal was armed: do not start an orphan
            // that would hold the listening sockets.
            if u32::try_from(libc::getppid()).ok() != Some(supervisor) {
                return Err(std::io::Error::other("the supervisor has gone away"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Exec {
        exe: exe.display().to_string(),
        source,
    })?;
    drop(staged);
    let pid = child.id().unwrap_or(0);
    if let Err(e) = ours.write_all(encode(init).as_bytes()) {
        // The process exists (it may already have exited, a broken binary say): it is handed
        // back all the same, so that its exit is waited for and seen like any worker's.
        tracing::warn!(pid, error = %e, "cannot send the worker its Init message");
    }
    Ok(Spawned {
        child,
        pid,
        control: ours,
    })
}
