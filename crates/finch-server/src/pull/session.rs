//! One pull of a camera, from connecting to its end: OPTIONS, DESCRIBE, SETUP of every RTP
//! track (interleaved over the connection, or UDP to a port pair of its own), PLAY, then
//! relaying its packets as they came, keeping the session alive (GET_PARAMETER or OPTIONS,
//! within its timeout), sending RTCP receiver reports, and TEARDOWN when stopped.
//!
//! It ends with an error (the runner retries) or, for an on-demand pull nobody reads, cleanly.

use super::client::{Client, Incoming};
use super::{PullError, PullState, Status};
use crate::shared::Shared;
use bytes::Bytes;
use finch_config::PathConfig;
use finch_proto::headers::session::{parse_session_id, parse_timeout};
use finch_proto::headers::transport::parse_transport;
use finch_proto::rtsp::Method;
use finch_proto::sdp::Sdp;
use finch_proto::uri::RtspUrl;
use finch_relay::{Evict, Kind, Policy, Publisher, SourceInfo, SourceKind};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// How a pull ended without an error.
pub(super) enum End {
    /// Stopped (config change, shutdown).
    Stopped,
    /// An on-demand pull that nobody read any more.
    Idle,
}

/// In `auto`, a UDP pull that gets no packet this soon after PLAY is retried over TCP.
const UDP_PROBE: Duration = Duration::from_secs(3);
/// Receiver reports every this often (RFC 3550's 5 s minimum interval).
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// A track set up over UDP: our sockets and where the camera sends from.
struct UdpTrack {
    track: usize,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    server_rtcp: Option<SocketAddr>,
}

/// A camera session set up and playing.
struct Playing {
    c: Client,
    base: String,
    public: String,
    publisher: Publisher,
    channels: Vec<(u8, usize, Kind)>,
    udp_tracks: Vec<UdpTrack>,
    timeout: u64,
}

/// Pulls `url` into `path` until it fails, is stopped, or (on demand) nobody reads.
///
/// Cancelling `cancel` stops it: before PLAY at once, after it with a TEARDOWN (bounded), which
/// is why the caller must not drop this future on cancellation itself.
pub(super) async fn run(
    shared: &Arc<Shared>,
    path: &str,
    cfg: &PathConfig,
    url: &RtspUrl,
    udp: bool,
    status: &Arc<Mutex<Status>>,
    cancel: &CancellationToken,
) -> Result<End, PullError> {
    let playing = tokio::select! {
        _ = cancel.cancelled() => return Ok(End::Stopped),
        p = start(shared, path, cfg, url, udp, cancel) => p?,
    };
    stream(playing, path, cfg, udp, status, cancel).await
}

/// OPTIONS, DESCRIBE, SETUP of every track, PLAY.
async fn start(
    shared: &Arc<Shared>,
    path: &str,
    cfg: &PathConfig,
    url: &RtspUrl,
    udp: bool,
    cancel: &CancellationToken,
) -> Result<Playing, PullError> {
    let mut c = Client::connect(url, Duration::from_secs(10)).await?;
    let base = c.base().to_owned();
    let options = c.request(Method::Options, &base, &[]).await?;
    let public = options.headers.get("Public").unwrap_or_default().to_owned();
    let describe = c
        .request(
            Method::Describe,
            &base,
            &[("Accept", "application/sdp".to_owned())],
        )
        .await?;
    if describe.status != 200 {
        return Err(PullError::Status(describe.status, "DESCRIBE".into()));
    }
    let content_base = describe
        .headers
        .get("Content-Base")
        .or_else(|| describe.headers.get("Content-Location"))
        .map_or_else(|| base.clone(), str::to_owned);
    let sdp = Sdp::parse(&describe.body).map_err(|e| PullError::BadSdp(e.to_string()))?;
    let tracks: Vec<usize> = sdp
        .media
        .iter()
        .enumerate()
        .filter(|(_, m)| m.protocol().starts_with("RTP/AVP"))
        .map(|(i, _)| i)
        .collect();
    if tracks.is_empty() {
        return Err(PullError::BadSdp("no RTP track".into()));
    }
    let id = format!("pull-{}", crate::sessions::new_session_id());
    let evict = cancel.clone();
    let source = SourceInfo {
        kind: SourceKind::Pull,
        id,
        peer: c.peer,
        transport: Some(if udp { "udp" } else { "tcp" }),
        evict: Evict(Some(Arc::new(move || evict.cancel()))),
    };
    let policy = Policy {
        grace: Duration::from_secs(cfg.publisher_grace_secs),
        takeover: false,
    };
    let publisher = shared
        .registry
        .announce(path, source, sdp.clone(), shared.relay_params(), policy)
        .map_err(|e| PullError::Busy(e.to_string()))?;
    // Per set-up track: (track, interleaved RTP channel) or a UDP socket pair.
    let mut channels: Vec<(u8, usize, Kind)> = Vec::new();
    let mut udp_tracks: Vec<UdpTrack> = Vec::new();
    let mut timeout = 60;
    for (n, &t) in tracks.iter().enumerate() {
        let control = sdp.media.get(t).and_then(|m| m.control()).unwrap_or("");
        let uri = resolve_control(&content_base, control);
        let (transport, pair) = if udp {
            let (rtp, rtcp) = bind_pair(c.local).await?;
            let port = rtp
                .local_addr()
                .map_err(|e| PullError::Connect(e.to_string()))?
                .port();
            (
                format!("RTP/AVP;unicast;client_port={port}-{}", port + 1),
                Some((rtp, rtcp)),
            )
        } else {
            let ch = (2 * n) as u8;
            (
                format!("RTP/AVP/TCP;unicast;interleaved={ch}-{}", ch + 1),
                None,
            )
        };
        let r = c
            .request(Method::Setup, &uri, &[("Transport", transport)])
            .await?;
        if r.status != 200 {
            return Err(PullError::Status(r.status, "SETUP".into()));
        }
        if let Some(s) = r.headers.get("Session") {
            timeout = parse_timeout(s).unwrap_or(60);
            c.session = parse_session_id(s).map(str::to_owned);
        }
        let spec = r
            .headers
            .get("Transport")
            .and_then(|t| parse_transport(t).ok())
            .and_then(|v| v.into_iter().next());
        match pair {
            Some((rtp, rtcp)) => udp_tracks.push(UdpTrack {
                track: t,
                rtp,
                rtcp,
                server_rtcp: spec
                    .and_then(|s| s.server_port)
                    .map(|(_, b)| SocketAddr::new(c.peer.ip(), b)),
            }),
            None => {
                let (a, b) = spec
                    .and_then(|s| s.interleaved)
                    .unwrap_or(((2 * n) as u8, (2 * n + 1) as u8));
                channels.push((a, t, Kind::Rtp));
                channels.push((b, t, Kind::Rtcp));
            }
        }
    }
    let play = c
        .request(Method::Play, &base, &[("Range", "npt=0.000-".to_owned())])
        .await?;
    if play.status != 200 {
        return Err(PullError::Status(play.status, "PLAY".into()));
    }
    Ok(Playing {
        c,
        base,
        public,
        publisher,
        channels,
        udp_tracks,
        timeout,
    })
}

/// Relays the camera's packets until an error, a stop, or (on demand) nobody reads.
async fn stream(
    playing: Playing,
    path: &str,
    cfg: &PathConfig,
    udp: bool,
    status: &Arc<Mutex<Status>>,
    cancel: &CancellationToken,
) -> Result<End, PullError> {
    let Playing {
        mut c,
        base,
        public,
        publisher,
        channels,
        udp_tracks,
        timeout,
    } = playing;
    publisher.go_live();
    publisher.set_transport(if udp { "udp" } else { "tcp" });
    tracing::info!(path, camera = %finch_proto::uri::redact(&cfg.source), udp, "pulling");
    let keep_alive = Duration::from_secs((timeout / 2).clamp(1, 30));
    let ping = if public.contains("GET_PARAMETER") {
        Method::GetParameter
    } else {
        Method::Options
    };
    let read_timeout = Duration::from_secs(cfg.source_read_timeout_secs);
    let close_after = Duration::from_secs(cfg.source_on_demand_close_after_secs);
    let started = Instant::now();
    let mut last_media: Option<Instant> = None;
    let mut ready = false;
    let mut unread_since: Option<Instant> = None;
    let mut flush_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ping_at = Instant::now() + keep_alive;
    let mut report_at = Instant::now() + REPORT_EVERY;
    let mut ubuf = vec![0u8; 65536];
    let end = loop {
        let next_flush = flush_at;
        tokio::select! {
            _ = cancel.cancelled() => break End::Stopped,
            got = c.next() => match got? {
                Incoming::Frame(ch, data) => {
                    if let Some((_, t, kind)) = channels.iter().find(|(c, _, _)| *c == ch) {
                        if *kind == Kind::Rtp {
                            last_media = Some(Instant::now());
                        }
                        flush_at = push(&publisher, *t, *kind, data, flush_at);
                    }
                }
                // Answers to keep-alives: nothing to do.
                Incoming::Response(_) => {}
            },
            got = recv_any(&udp_tracks, &mut ubuf) => {
                let (t, kind, data, from) = got?;
                // Only the camera's address may feed the path: anyone else who finds the
                // port would otherwise inject packets into every reader.
                if from.ip() != c.peer.ip() {
                    continue;
                }
                if kind == Kind::Rtp {
                    last_media = Some(Instant::now());
                }
                flush_at = push(&publisher, t, kind, data, flush_at);
            }
            _ = tokio::time::sleep_until(next_flush.unwrap_or_else(Instant::now).into()), if next_flush.is_some() => {
                flush_at = None;
                publisher.flush();
            }
            _ = tick.tick() => {
                let now = Instant::now();
                match last_media {
                    None if udp && now.duration_since(started) > UDP_PROBE => {
                        return Err(PullError::UdpSilent);
                    }
                    None if now.duration_since(started) > read_timeout => {
                        return Err(PullError::NoMedia(read_timeout.as_secs()));
                    }
                    Some(t) if now.duration_since(t) > read_timeout => {
                        return Err(PullError::NoMedia(read_timeout.as_secs()));
                    }
                    _ => {}
                }
                if now >= ping_at {
                    ping_at = now + keep_alive;
                    c.send(ping.clone(), &base, &[]).await?;
                }
                if now >= report_at {
                    report_at = now + REPORT_EVERY;
                    send_reports(&mut c, &channels, &udp_tracks).await?;
                }
                if cfg.source_on_demand {
                    if publisher.stream().reader_count() > 0 {
                        unread_since = None;
                    } else if unread_since.get_or_insert(now).elapsed() >= close_after {
                        break End::Idle;
                    }
                }
            }
        }
        // Ready with the first packet, not with the next tick: the API answers what readers see.
        if !ready && last_media.is_some() {
            ready = true;
            set_state(status, PullState::Ready);
        }
    };
    // Best effort: the camera frees its session now rather than at its timeout.
    let _ =
        tokio::time::timeout(Duration::from_secs(2), c.send(Method::Teardown, &base, &[])).await;
    Ok(end)
}

fn push(
    publisher: &Publisher,
    track: usize,
    kind: Kind,
    data: Bytes,
    flush_at: Option<Instant>,
) -> Option<Instant> {
    // The earliest deadline stands (see `rtsp::conn`).
    match publisher.push(track, kind, data, Instant::now()) {
        Some(at) => Some(flush_at.map_or(at, |f| f.min(at))),
        None => flush_at,
    }
}

fn set_state(status: &Arc<Mutex<Status>>, state: PullState) {
    status.lock().unwrap_or_else(|e| e.into_inner()).state = state;
}

/// The next datagram on any UDP track; pends forever without UDP tracks.
async fn recv_any(
    tracks: &[UdpTrack],
    buf: &mut [u8],
) -> Result<(usize, Kind, Bytes, SocketAddr), PullError> {
    if tracks.is_empty() {
        return std::future::pending().await;
    }
    // Few tracks (a camera has two or three): polling each socket in turn is enough.
    std::future::poll_fn(|cx| {
        for t in tracks {
            for (socket, kind) in [(&t.rtp, Kind::Rtp), (&t.rtcp, Kind::Rtcp)] {
                let mut rb = tokio::io::ReadBuf::new(buf);
                if let std::task::Poll::Ready(r) = socket.poll_recv_from(cx, &mut rb) {
                    return std::task::Poll::Ready(match r {
                        Ok(from) => Ok((t.track, kind, Bytes::copy_from_slice(rb.filled()), from)),
                        Err(e) => Err(PullError::Connection(e.to_string())),
                    });
                }
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// An empty RTCP receiver report (RFC 3550 §6.4.2, no report blocks): tells the camera we
/// are here, which some need to keep sending.
fn receiver_report(ssrc: u32) -> [u8; 8] {
    let s = ssrc.to_be_bytes();
    [0x80, 201, 0, 1, s[0], s[1], s[2], s[3]]
}

async fn send_reports(
    c: &mut Client,
    channels: &[(u8, usize, Kind)],
    udp: &[UdpTrack],
) -> Result<(), PullError> {
    let rr = receiver_report(0x4669_6e63); // "Finc"
    for (ch, _, kind) in channels {
        if *kind == Kind::Rtcp {
            c.write_frame(*ch, &rr).await?;
        }
    }
    for t in udp {
        if let Some(to) = t.server_rtcp {
            let _ = t.rtcp.send_to(&rr, to).await;
        }
    }
    Ok(())
}

/// A track's control URL: absolute, or relative to the Content-Base.
fn resolve_control(base: &str, control: &str) -> String {
    if control.starts_with("rtsp://") || control.starts_with("rtsps://") {
        return control.to_owned();
    }
    if control.is_empty() || control == "*" {
        return base.to_owned();
    }
    if base.ends_with('/') {
        format!("{base}{control}")
    } else {
        format!("{base}/{control}")
    }
}

/// An even/odd UDP port pair on the address we reach the camera from.
async fn bind_pair(local: SocketAddr) -> Result<(UdpSocket, UdpSocket), PullError> {
    for _ in 0..64 {
        let probe = UdpSocket::bind(SocketAddr::new(local.ip(), 0))
            .await
            .map_err(|e| PullError::Connect(e.to_string()))?;
        let port = probe
            .local_addr()
            .map_err(|e| PullError::Connect(e.to_string()))?
            .port()
            & !1;
        drop(probe);
        if port < 1024 {
            continue;
        }
        let a = UdpSocket::bind(SocketAddr::new(local.ip(), port)).await;
        let b = UdpSocket::bind(SocketAddr::new(local.ip(), port + 1)).await;
        if let (Ok(a), Ok(b)) = (a, b) {
            return Ok((a, b));
        }
    }
    Err(PullError::Connect("no free UDP port pair".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_resolve_like_players_resolve_them() {
        assert_eq!(
            resolve_control("rtsp://c/a/", "trackID=1"),
            "rtsp://c/a/trackID=1"
        );
        assert_eq!(
            resolve_control("rtsp://c/a", "trackID=1"),
            "rtsp://c/a/trackID=1"
        );
        assert_eq!(resolve_control("rtsp://c/a", "rtsp://c/x"), "rtsp://c/x");
        assert_eq!(resolve_control("rtsp://c/a", "*"), "rtsp://c/a");
        assert_eq!(receiver_report(1), [0x80, 201, 0, 1, 0, 0, 0, 1]);
        assert_eq!(
            finch_proto::rtcp::packet_types(&receiver_report(7)),
            Ok(vec![201])
        );
    }
}
