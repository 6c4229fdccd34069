//! How a worker stops: a graceful restart's drain first (the next worker already accepts), then
//! closing every session and path, bounded by one deadline.

use super::{Exit, Stop};
use crate::shared::Shared;
use crate::state::ServerState;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a stop waits for connections without a session to finish what they asked.
const PLAIN_GRACE: Duration = Duration::from_secs(1);

/// Open RTSP connections that hold no session.
fn without_session(shared: &Shared) -> u64 {
    let sessions = shared.sessions.count("publisher") + shared.sessions.count("reader");
    shared.connection_count().saturating_sub(sessions as u64)
}

/// The cancellation tokens the stop fires, in order.
pub(super) struct Tokens {
    /// The listeners.
    pub(super) accepting: CancellationToken,
    /// The UDP receive loops.
    pub(super) udp: CancellationToken,
    /// Every connection.
    pub(super) sessions: CancellationToken,
}

/// Stops accepting, drains if this is a graceful restart, then closes everything and waits for
/// the tasks, all within `drain_timeout_secs`.
pub(super) async fn finish(
    shared: &Arc<Shared>,
    exit: Exit,
    stop: &Stop,
    tokens: Tokens,
    tracker: TaskTracker,
) {
    let drain = Duration::from_secs(shared.config().supervisor.drain_timeout_secs);
    // One deadline for everything the stop waits on.
    let deadline = tokio::time::Instant::now() + drain;
    tokens.accepting.cancel();
    let restart = exit == Exit::Clean && stop.drain.is_cancelled() && !stop.now.is_cancelled();
    if let Some(cluster) = &shared.cluster {
        if restart || exit != Exit::Clean {
            // The next worker is this node too: it keeps the claims (a crash's keys expire
            // on their own if no worker follows).
            cluster.hand_over();
        } else {
            cluster.leave().await;
        }
    }
    if restart {
        // A graceful restart: the next worker is accepting already; let our sessions finish on
        // their own until the drain timeout. UDP is the exception: both workers would read the
        // shared sockets and each get half the datagrams, so this one stops reading them and
        // ends its UDP sessions now (their clients reconnect to the new worker).
        // What can move goes to the next worker first; the rest drains.
        crate::handover::give(shared, &tokens.udp).await;
        tracing::info!(drain_secs = drain.as_secs(), "draining sessions");
        tokens.udp.cancel();
        shared.sessions.kick_transport("udp");
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while shared.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = stop.now.cancelled() => break,
                _ = tick.tick() => {}
            }
        }
    }
    if exit == Exit::Clean {
        shared.state.send_replace(ServerState::ShuttingDown);
    }
    if shared.supervision.is_none() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    }
    // Cameras get their TEARDOWN (briefly: the deadline is shared with what follows).
    shared
        .pulls
        .stop(
            deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .min(Duration::from_secs(2)),
        )
        .await;
    // A connection accepted just before the stop may have its first request in flight: a
    // moment to answer it rather than cut it (a client sees a reset, not a late answer).
    let grace = (tokio::time::Instant::now() + PLAIN_GRACE).min(deadline);
    while without_session(shared) > 0 && tokio::time::Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // DSS's KillAllRTPSessions, then wait for them at most the drain timeout.
    shared.registry.close_all();
    tokens.sessions.cancel();
    tracker.close();
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("tasks still running after the drain timeout; exiting anyway");
    }
}
