//! One supervised worker process: where it is in its life, and the only way to signal it.
//!
//! Signals go through a pidfd (Linux's handle on one process, opened right after the spawn,
//! before the process can have been reaped): once the worker is gone its pidfd refers to no
//! one, so a reused pid can never be signalled by mistake. A worker is also dropped from the
//! supervisor's table as soon as its exit is seen, and nothing signals a worker not in the
//! table. Only where pidfds are missing (Linux before 5.3) does a plain `kill` stand in.

use crate::signals;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Started, not Ready yet (signal handlers may not be installed).
    Starting,
    /// Ready and serving.
    Serving,
    /// Serving, and to be told to drain once its replacement is Ready (a graceful restart).
    Replacing {
        /// It had reported Ready.
        ready: bool,
    },
    /// Asked to stop or drain, or replaced after a fatal report: its exit is expected; past its
    /// drain timeout it is killed.
    Retiring {
        /// Since when.
        since: Instant,
        /// Already sent SIGKILL for outliving the drain.
        killed: bool,
    },
    /// Silent past the heartbeat timeout: sent SIGABRT; its death is a hang.
    Hung {
        /// When SIGABRT was sent (SIGKILL follows after a grace period).
        since: Instant,
    },
}

/// A worker process.
pub(crate) struct Worker {
    pub(crate) generation: u64,
    pub(crate) pid: u32,
    pidfd: Option<OwnedFd>,
    pub(crate) started: Instant,
    pub(crate) last_heartbeat: Instant,
    pub(crate) phase: Phase,
    /// Its last fatal-verbosity log entry, for the restart reason if it exits 254.
    pub(crate) fatal_message: Option<String>,
}

impl Worker {
    /// A just-spawned worker. Must be called before anything could reap it.
    pub(crate) fn new(generation: u64, pid: u32) -> Worker {
        let now = Instant::now();
        Worker {
            generation,
            pid,
            pidfd: pidfd_open(pid),
            started: now,
            last_heartbeat: now,
            phase: Phase::Starting,
            fatal_message: None,
        }
    }

    /// Whether it reported Ready (and has not been asked to go).
    pub(crate) fn serving(&self) -> bool {
        matches!(
            self.phase,
            Phase::Serving | Phase::Replacing { ready: true }
        )
    }

    /// Whether its exit is expected (asked to go, or killed for a hang).
    pub(crate) fn leaving(&self) -> bool {
        matches!(self.phase, Phase::Retiring { .. } | Phase::Hung { .. })
    }

    /// Sends a signal to this worker, and only to it.
    pub(crate) fn signal(&self, sig: i32) {
        match &self.pidfd {
            Some(fd) => {
                // SAFETY: pidfd_send_signal takes a descriptor we own, a signal number and null
                // info; it touches no memory of ours.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd.as_raw_fd(),
                        sig,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
                if r != 0 {
                    tracing::debug!(pid = self.pid, signal = %signals::name(sig), error = %std::io::Error::last_os_error(), "signal not delivered");
                }
            }
            None => signals::send(self.pid, sig),
        }
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "no pidfd; signalling by pid");
        return None;
    }
    let fd = i32::try_from(fd).ok()?;
    // SAFETY: the descriptor was just returned to us and is owned by nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reaped_worker_cannot_be_signalled() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let w = Worker::new(1, child.id());
        assert!(w.pidfd.is_some(), "this kernel has pidfds");
        child.kill().unwrap();
        child.wait().unwrap();
        // The pid may be anyone's now; through the pidfd the signal reaches nobody.
        let fd = w.pidfd.as_ref().unwrap().as_raw_fd();
        // SAFETY: as in `signal`, with signal 0 (existence check only).
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ESRCH)
        );
    }
}
