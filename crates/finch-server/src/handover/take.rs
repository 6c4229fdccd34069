//! The new worker's half of a handover: wait for the old worker of the same supervisor, take
//! its connections, re-create their sessions and serve them on.

use super::wire::{self, Give, Reply};
use super::{socket_name, Moved, MovedPath, ADOPT_ENV, VERSION};
use crate::shared::Shared;
use finch_control::ToSupervisor;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// How long a new worker waits for its predecessor to start handing over (it starts as soon as
/// this worker is ready, so within moments, or never: an older binary drains instead). Until
/// then requests for a path that is not here wait rather than get 404, and the shared UDP
/// sockets and the cameras are left alone; after it, this worker serves as a fresh one.
const WAIT: Duration = Duration::from_secs(5);

/// Whether the supervisor started this worker to take over a serving one's sessions.
pub(crate) fn adopting(shared: &Shared) -> bool {
    shared.supervision.is_some() && std::env::var_os(ADOPT_ENV).is_some()
}

/// Starts listening for the previous worker's sessions, if the supervisor started this worker
/// to replace one. Called before Ready, so the socket is there when the old worker looks.
pub(crate) fn listen(shared: &Arc<Shared>, tracker: &TaskTracker) {
    let Some(sup) = shared.supervision.as_ref().filter(|_| adopting(shared)) else {
        shared.handover.settled.cancel();
        return;
    };
    let supervisor = sup.supervisor_pid;
    let bound = SocketAddr::from_abstract_name(socket_name(supervisor).as_bytes())
        .and_then(|a| UnixListener::bind_addr(&a));
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot wait for the previous worker's sessions; they drain there");
            shared.handover.settled.cancel();
            return;
        }
    };
    shared
        .handover
        .expect(Some(std::time::Instant::now() + WAIT));
    let shared = shared.clone();
    let spawner = tracker.clone();
    tracker.spawn(async move {
        let _done = Expected(shared.clone());
        let Ok(listener) = listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixListener::from_std(listener))
        else {
            return;
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = shared.shutdown.cancelled() => return,
            };
            let Ok((sock, _)) = accepted else { continue };
            let Ok(sock) = sock.into_std() else { continue };
            if !from_sibling(&sock, supervisor) {
                tracing::warn!(
                    "refused a handover from a process that is not a worker of this supervisor"
                );
                continue;
            }
            adopt(&shared, sock, &spawner).await;
            // One predecessor per worker: the name is free again for the next restart.
            return;
        }
    });
}

/// How long a pulled path taken over waits for this worker to reach its camera, at least.
const PULLED_GRACE: Duration = Duration::from_secs(10);

/// Re-creates a pulled path's stream (numbering, cache) under a stand-in source; dropping the
/// handle leaves the path away, within grace, until this worker's pull continues it.
fn hold_pulled_path(shared: &Arc<Shared>, p: MovedPath) -> Result<finch_relay::Publisher, String> {
    let config = shared.config();
    // Pulled from a camera by the config, or from another node of the cluster.
    let path_config = config
        .paths
        .find(&p.path)
        .filter(|c| c.is_pulled())
        .or_else(|| {
            shared
                .cluster
                .as_ref()
                .map(|_| config.paths.find(&p.path).unwrap_or_default())
        })
        .ok_or_else(|| format!("{} is not pulled here", p.path))?;
    let sdp = finch_proto::sdp::Sdp::parse(p.sdp.as_bytes()).map_err(|e| e.to_string())?;
    let source = finch_relay::SourceInfo {
        kind: finch_relay::SourceKind::Pull,
        id: format!("handover-{}", p.path),
        peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        transport: None,
        evict: finch_relay::Evict::default(),
    };
    let policy = finch_relay::Policy {
        grace: Duration::from_secs(path_config.publisher_grace_secs).max(PULLED_GRACE),
        takeover: false,
    };
    let held = shared
        .registry
        .announce(&p.path, source, sdp, shared.relay_params(), policy)
        .map_err(|e| e.to_string())?;
    if !held.stream().resume_numbering(&p.numbering) {
        return Err("its numbering does not fit its tracks".into());
    }
    let now = std::time::Instant::now();
    held.stream().restore(
        p.reports.into_iter().map(|c| c.packet(now)).collect(),
        p.cache.into_iter().map(|c| c.packet(now)).collect(),
    );
    held.go_live();
    Ok(held)
}

/// Ends the expecting window however the listener ends.
struct Expected(Arc<Shared>);

impl Drop for Expected {
    fn drop(&mut self) {
        self.0.handover.expect(None);
        self.0.handover.settled.cancel();
    }
}

/// Whether the peer is another child of our supervisor (SO_PEERCRED, then its parent).
fn from_sibling(sock: &UnixStream, supervisor: u32) -> bool {
    // SAFETY: a zeroed ucred is valid, and getsockopt writes at most `len` bytes into it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 || cred.uid != unsafe { libc::geteuid() } {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", cred.pid)) else {
        return false;
    };
    // The parent pid is the second field after the command's closing parenthesis.
    let ppid = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse::<u32>().ok());
    ppid == Some(supervisor)
}

/// Receives everything, re-creates it, starts it, and answers.
async fn adopt(shared: &Arc<Shared>, sock: UnixStream, tracker: &TaskTracker) {
    let received = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        sock.set_nonblocking(false)?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        sock.set_write_timeout(Some(Duration::from_secs(5)))?;
        match wire::recv::<Give>(&sock)? {
            Some((Give::Hello { version }, _)) if version == VERSION => {
                wire::send(&sock, &Reply::Welcome, None)?;
            }
            Some((Give::Hello { version }, _)) => {
                let why = format!("state format {version}; this worker speaks {VERSION}");
                wire::send(&sock, &Reply::Refused { why: why.clone() }, None)?;
                return Err(std::io::Error::other(why));
            }
            other => return Err(std::io::Error::other(format!("unexpected {other:?}"))),
        }
        let mut got: Vec<(Moved, OwnedFd)> = Vec::new();
        let mut paths: Vec<MovedPath> = Vec::new();
        let mut hls = Vec::new();
        loop {
            match wire::recv::<Give>(&sock)? {
                Some((Give::Path { path }, _)) => paths.push(*path),
                Some((Give::Hls { path, resume }, _)) => hls.push((path, *resume)),
                Some((Give::Session { moved }, Some(fd))) => got.push((*moved, fd)),
                Some((Give::End, _)) => return Ok((sock, paths, got, hls)),
                Some((other, _)) => {
                    tracing::warn!(message = ?other, "a handover message without its socket; skipped");
                }
                None => return Err(std::io::Error::other("the previous worker went away")),
            }
        }
    })
    .await;
    let (sock, paths, got, hls) = match received {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "no sessions taken over");
            return;
        }
        Err(_) => return,
    };
    shared.hls.set_resume(hls);
    // Publishers first: their paths must be live before their readers join them. Each keeps
    // its place in the old worker's order, which a refusal names.
    let mut got: Vec<(usize, Moved, OwnedFd)> = got
        .into_iter()
        .enumerate()
        .map(|(i, (m, fd))| (i, m, fd))
        .collect();
    got.sort_by_key(|(_, m, _)| match m.role() {
        "publisher" => 0,
        "reader" => 1,
        _ => 2,
    });
    // Pulled paths first, held as if their camera had just gone (see the module's docs).
    let mut held = Vec::new();
    for p in paths {
        let name = p.path.clone();
        match hold_pulled_path(shared, p) {
            Ok(h) => held.push(h),
            Err(e) => tracing::warn!(path = %name, error = %e, "could not take a pulled path over"),
        }
    }
    let mut started = Vec::new();
    let (mut publishers, mut readers, mut connections) = (0, 0, 0);
    let mut refused = Vec::new();
    for (index, moved, fd) in got {
        let role = moved.role();
        let session = moved.session.as_ref().map(|s| s.id.clone());
        match crate::rtsp::adopt(shared, moved, fd) {
            Ok(conn) => {
                match role {
                    "publisher" => publishers += 1,
                    "reader" => readers += 1,
                    _ => connections += 1,
                }
                shared.metrics.handed_over(role);
                started.push(conn);
            }
            // Our copy of its socket closes here; the old worker keeps it and drains it.
            Err(e) => {
                tracing::warn!(session = ?session, error = %e, "could not take a session over; it stays with the old worker");
                refused.push(index);
            }
        }
    }
    // Started only now, all together: readers joined before any publisher's next packet.
    for conn in started {
        tracker.spawn(conn);
    }
    // The pulled paths' readers have joined: their paths wait for this worker's own pulls.
    let from_nodes: Vec<String> = held
        .iter()
        .map(|h| h.path().to_owned())
        .filter(|p| shared.config().paths.find(p).is_none_or(|c| !c.is_pulled()))
        .collect();
    drop(held);
    if let Some(cluster) = shared.cluster.clone() {
        // Paths the previous worker pulled from other nodes: this worker pulls them on.
        let shared = shared.clone();
        tokio::spawn(async move {
            for path in from_nodes {
                if let Some(url) = cluster.locate(&path).await {
                    shared.pulls.add_cluster(&shared, &path, url);
                }
            }
        });
    }
    tracing::info!(
        publishers,
        readers,
        connections,
        "took over the previous worker's sessions"
    );
    *shared
        .handover
        .took
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(finch_control::handed_over_message(
        publishers,
        readers,
        connections,
    ));
    shared.report(ToSupervisor::HandedOver {
        publishers,
        readers,
        connections,
    });
    let reply = Reply::Adopted {
        publishers,
        readers,
        connections,
        refused,
    };
    let _ = tokio::task::spawn_blocking(move || wire::send(&sock, &reply, None)).await;
}
