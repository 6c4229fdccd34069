//! Finch's supervisor: DSS's parent process, with what hurt its users fixed.
//!
//! It binds nothing itself (the binary hands it the bound sockets) and never serves a client. It
//! starts the worker (`spawn`), hands it the sockets and the state that must outlive a worker
//! (the config that last validated, the restart history, the error ring), and watches it:
//!
//! - worker exits 254 (FatalError), dies by a signal, exits with another non-zero code, or goes
//!   silent past the heartbeat timeout: restart it, with the backoff of `restart`, recording why;
//!   when a worker *reports* FatalError the next one starts at once, while the old one drains;
//! - worker exits 255: it cannot run; the supervisor exits 255 too; exits 0: so does it;
//! - too many restarts in one streak: give up with exit 3, naming the last reasons;
//! - SIGTERM/SIGINT: stop the workers gracefully and exit 0; SIGHUP and SIGUSR1 are forwarded;
//!   SIGUSR2 (or the API) restarts the worker gracefully: the new one starts on the same
//!   sockets, the old one drains. Because the supervisor holds the listening sockets the whole
//!   time, connections arriving during any restart wait in the kernel backlog; none is refused.
//!
//! Layout: `supervise` (the watch loop and what each event does; `failures` inside it), `worker` (one worker's phase
//! and the pidfd its signals go through), `restart` (the policy, sans-IO), `spawn` (starting a
//! worker), `signals`, `pidfile`.

pub mod pidfile;
pub mod restart;
pub mod signals;
pub mod spawn;
mod supervise;
mod worker;

use finch_config::Config;
use restart::{RestartPolicy, Settings};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

/// Exit code: clean stop.
pub const EXIT_CLEAN: i32 = 0;
/// Exit code: the worker cannot run (DSS -1).
pub const EXIT_CANNOT_RUN: i32 = 255;
/// Exit code: the worker asks to be restarted (DSS -2).
pub const EXIT_RESTART_ME: i32 = 254;
/// Exit code: the crash-loop limit was reached.
pub const EXIT_GAVE_UP: i32 = 3;

/// Sockets as (name, descriptor) pairs in `LISTEN_FDNAMES` order.
pub type Sockets = Vec<(String, OwnedFd)>;

/// Rebinds for a changed config: given the new config and the sockets held now, returns the
/// sockets for it (reusing those whose addresses did not change: the running worker still
/// listens on them, so binding them again would fail), or the reason and the held sockets.
pub type Binder = Box<dyn Fn(&Config, Sockets) -> Result<Sockets, (String, Sockets)>>;

/// What the supervisor needs from the binary.
pub struct Options {
    /// The binary's path on disk (an upgraded binary there is what the next worker runs).
    pub exe: PathBuf,
    /// The worker's arguments (the hidden subcommand and the config file).
    pub worker_args: Vec<OsString>,
    /// The effective config, validated.
    pub config: Config,
    /// The sockets, bound.
    pub sockets: Sockets,
    /// How to bind sockets again when a reload changes their addresses.
    pub binder: Binder,
    /// Reopens the supervisor's own log file (SIGUSR1).
    pub reopen_logs: Box<dyn Fn()>,
}

/// Runs the supervisor until it stops; returns the process exit code.
pub fn run(opts: Options) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the supervisor's runtime");
            return EXIT_CANNOT_RUN;
        }
    };
    runtime.block_on(supervise::supervise(opts))
}

fn policy_for(c: &Config) -> RestartPolicy {
    RestartPolicy::new(Settings {
        initial: Duration::from_millis(c.supervisor.backoff_initial_ms),
        max: Duration::from_millis(c.supervisor.backoff_max_ms),
        stable_after: Duration::from_secs(c.supervisor.stable_after_secs),
        limit: c.supervisor.crash_loop_limit,
    })
}
