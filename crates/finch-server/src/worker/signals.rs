//! The worker's own signals. Under a supervisor they arrive forwarded: SIGTERM/SIGINT stop,
//! SIGUSR2 drains (a graceful restart), SIGHUP reloads, SIGUSR1 reopens the log file.

use super::Stop;
use crate::shared::Shared;
use std::sync::Arc;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The signal streams, registered before the worker reports Ready.
pub(super) struct Handlers {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
}

pub(super) fn install() -> std::io::Result<Handlers> {
    Ok(Handlers {
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
        hup: signal(SignalKind::hangup())?,
        usr1: signal(SignalKind::user_defined1())?,
        usr2: signal(SignalKind::user_defined2())?,
    })
}

pub(super) async fn run(shared: Arc<Shared>, stop: Stop, h: Handlers) {
    let Handlers {
        mut term,
        mut int,
        mut hup,
        mut usr1,
        mut usr2,
    } = h;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); stop.now.cancel(); }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); stop.now.cancel(); }
            _ = usr2.recv() => {
                if shared.supervision.is_some() {
                    tracing::info!("SIGUSR2: draining for a graceful restart");
                    stop.drain.cancel();
                } else {
                    tracing::warn!("SIGUSR2: a graceful restart needs the supervisor (not in --foreground)");
                }
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = crate::reload::reload(&shared);
            }
            _ = usr1.recv() => {
                if let Some(reopen) = &shared.hooks.reopen_logs {
                    reopen(());
                    tracing::info!("SIGUSR1: log file reopened");
                }
            }
        }
    }
}
