//! The old worker's half of a handover: find the next worker, pause the connections round by
//! round, send them, and tell each one whether it moved.

use super::wire::{self, Give, Reply};
use super::{socket_name, Answer, Cached, Moved, MovedPath, VERSION};
use crate::shared::Shared;
use finch_relay::SourceKind;
use std::os::fd::RawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long one round waits for the connections' answers. A connection busy in a slow write
/// answers late and stays (it drains, as before).
const ROUND: Duration = Duration::from_secs(1);
/// How long the next worker may take to read everything and answer.
const TRANSFER: Duration = Duration::from_secs(5);

/// What moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moves {
    pub(crate) publishers: usize,
    pub(crate) readers: usize,
    pub(crate) connections: usize,
}

/// Hands what can move to the next worker of this supervisor, if one is waiting for it;
/// what moved (nothing if there is no next worker, it refused, or the transfer failed, in
/// which case every connection goes on here).
pub(crate) async fn give(shared: &Arc<Shared>, udp: &CancellationToken) -> Moves {
    let Some(sup) = shared.supervision.as_ref() else {
        return Moves::default();
    };
    let name = socket_name(sup.supervisor_pid);
    let hello = tokio::task::spawn_blocking(move || -> std::io::Result<UnixStream> {
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        let sock = UnixStream::connect_addr(&addr)?;
        sock.set_read_timeout(Some(TRANSFER))?;
        sock.set_write_timeout(Some(TRANSFER))?;
        wire::send(&sock, &Give::Hello { version: VERSION }, None)?;
        match wire::recv::<Reply>(&sock)? {
            Some((Reply::Welcome, _)) => Ok(sock),
            Some((Reply::Refused { why }, _)) => Err(std::io::Error::other(why)),
            other => Err(std::io::Error::other(format!(
                "unexpected answer {other:?}"
            ))),
        }
    })
    .await;
    let sock = match hello {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "the next worker takes no sessions; draining them here");
            return Moves::default();
        }
        Err(_) => return Moves::default(),
    };
    // From now on the shared UDP sockets are left to the next worker: what UDP publishers send
    // meanwhile waits in the kernel for it.
    udp.cancel();
    let h = &shared.handover;
    let (tx, mut rx) = mpsc::unbounded_channel();
    *h.answers.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    // Publishers first: once they stop, the readers' queues stop growing.
    h.publishers.cancel();
    let mut paused = collect(&mut rx, shared, 0).await;
    let publishers = paused.len();
    h.moving.lock().unwrap_or_else(|e| e.into_inner()).extend(
        paused
            .iter()
            .filter_map(|p| Some(p.0.session.as_ref()?.path.clone())),
    );
    // Pulled paths move without their camera session: their readers follow too.
    let pulled: Vec<String> = shared
        .registry
        .list()
        .into_iter()
        .filter(|p| p.source.kind == SourceKind::Pull && p.is_live())
        .map(|p| p.name)
        .collect();
    h.moving
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(pulled.iter().cloned());
    h.others.cancel();
    paused.extend(collect(&mut rx, shared, publishers).await);
    // Taken after the readers paused: what the camera sent since, they never got, and the next
    // worker numbers on after it (a gap for them, never a repeat).
    let paths: Vec<MovedPath> = pulled
        .iter()
        .filter_map(|name| {
            let stream = shared.registry.live_stream(name)?;
            let (reports, cache) = stream.cached();
            Some(MovedPath {
                path: name.clone(),
                sdp: stream.sdp.write(),
                numbering: stream.numbering(),
                reports: reports.iter().map(Cached::of).collect(),
                cache: cache.iter().map(Cached::of).collect(),
            })
        })
        .collect();
    // Late answers find no one listening, and their connections go on here.
    *h.answers.lock().unwrap_or_else(|e| e.into_inner()) = None;
    while let Ok(a) = rx.try_recv() {
        if let Answer::Paused { verdict, .. } = a {
            let _ = verdict.send(false);
        }
    }
    let (moved, verdicts): (Vec<(Moved, RawFd)>, Vec<oneshot::Sender<bool>>) =
        paused.into_iter().map(|(m, fd, v)| ((m, fd), v)).unzip();
    let roles: Vec<&'static str> = moved.iter().map(|(m, _)| m.role()).collect();
    // The descriptors stay valid: their connections hold their sockets until the verdict.
    let carried = paths.len();
    let muxers = shared.hls.resume_points();
    let sent = tokio::task::spawn_blocking(move || -> std::io::Result<Reply> {
        for p in paths {
            wire::send(&sock, &Give::Path { path: Box::new(p) }, None)?;
        }
        for (path, resume) in muxers {
            let resume = Box::new(resume);
            wire::send(&sock, &Give::Hls { path, resume }, None)?;
        }
        for (m, fd) in moved {
            wire::send(&sock, &Give::Session { moved: Box::new(m) }, Some(fd))?;
        }
        wire::send(&sock, &Give::End, None)?;
        match wire::recv::<Reply>(&sock)? {
            Some((r, _)) => Ok(r),
            None => Err(std::io::Error::other("the next worker closed the handover")),
        }
    })
    .await;
    let mut refused = Vec::new();
    let ok = match sent {
        Ok(Ok(Reply::Adopted { refused: r, .. })) => {
            refused = r;
            true
        }
        Ok(Ok(other)) => {
            tracing::warn!(answer = ?other, "the next worker did not adopt the sessions; they stay");
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "handing sessions over failed; they stay");
            false
        }
        Err(_) => false,
    };
    if !refused.is_empty() {
        tracing::warn!(
            refused = refused.len(),
            "the next worker could not take some sessions (see its log); they drain here"
        );
    }
    let mut moves = Moves::default();
    for (i, v) in verdicts.into_iter().enumerate() {
        let went = ok && !refused.contains(&i);
        if went {
            match roles.get(i).copied() {
                Some("publisher") => moves.publishers += 1,
                Some("reader") => moves.readers += 1,
                _ => moves.connections += 1,
            }
        }
        let _ = v.send(went);
    }
    if ok {
        tracing::info!(
            publishers = moves.publishers,
            readers = moves.readers,
            connections = moves.connections,
            pulled_paths = carried,
            "sessions handed over to the next worker"
        );
        moves
    } else {
        Moves::default()
    }
}

/// The paused connections of one round, until every movable connection but the `waiting`
/// ones paused in earlier rounds has answered, or the round is over. (One that closes meanwhile
/// stops being expected.)
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Answer>,
    shared: &Shared,
    waiting: usize,
) -> Vec<(Moved, RawFd, oneshot::Sender<bool>)> {
    let until = Instant::now() + ROUND;
    let mut paused = Vec::new();
    let mut answered = 0;
    loop {
        let expected = shared
            .handover
            .movable
            .load(Ordering::Relaxed)
            .saturating_sub(waiting);
        if answered >= expected || Instant::now() >= until {
            break;
        }
        let next = (Instant::now() + Duration::from_millis(50)).min(until);
        match tokio::time::timeout_at(next, rx.recv()).await {
            Ok(Some(Answer::Paused { moved, fd, verdict })) => {
                paused.push((*moved, fd, verdict));
                answered += 1;
            }
            Ok(Some(Answer::Decline)) => answered += 1,
            Ok(None) => break,
            Err(_) => {}
        }
    }
    paused
}
