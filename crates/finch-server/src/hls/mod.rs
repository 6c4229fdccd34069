//! Low-Latency HLS for browsers (CONTRACT.md "HLS"): a muxer per path while someone watches,
//! fed by the relay as one more reader (the same ring, the same slow-reader policy, so it never
//! slows the publisher or the RTSP readers), and the HTTP side that serves its playlist, init
//! segment, segments and parts (`http`), and a page that plays them (`page`).
//!
//! A muxer starts with the first HLS request for its path (an on-demand camera or a path on
//! another node of the cluster is started as a DESCRIBE would start it) and stops
//! `muxer_close_after_secs` after the last one. The muxing itself is `finch_hls`, sans-IO.

pub(crate) mod http;
pub(crate) mod listen;
mod page;

use crate::shared::Shared;
use finch_hls::{Muxer, MuxerConfig};
use finch_relay::{Kind, ReaderInfo, Start, Stream};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One path's muxer and what its HTTP requests wait on.
pub(crate) struct Muxing {
    pub(crate) path: String,
    muxer: Mutex<Muxer>,
    /// Ticks whenever the muxer has taken packets (a part or segment may be ready).
    changed: watch::Sender<u64>,
    /// Milliseconds since [`epoch`] of the last request.
    last_request: AtomicU64,
    ended: AtomicBool,
    stop: CancellationToken,
    /// The stream it reads: a new source means a new muxer.
    stream: Arc<Stream>,
}

impl Muxing {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Muxer> {
        self.muxer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        self.last_request
            .store(epoch().elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_request.load(Ordering::Relaxed));
        epoch().elapsed().saturating_sub(last)
    }

    pub(crate) fn ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Waits until `f` gives something, the muxer ends, or `limit` passes.
    pub(crate) async fn wait_for<T>(
        &self,
        limit: Duration,
        f: impl Fn(&Muxer) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            rx.borrow_and_update();
            if let Some(v) = f(&self.lock()) {
                return Some(v);
            }
            if self.ended() {
                return None;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return f(&self.lock()),
            }
        }
    }
}

/// The time packets' arrival is measured from: before any packet this worker could hold.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

/// Every path's muxer, and the HLS counters.
#[derive(Default)]
pub struct Hls {
    muxers: Mutex<HashMap<String, Arc<Muxing>>>,
    /// Open HLS connections (`hls.max_connections`).
    pub(crate) in_flight: AtomicU64,
    /// Addresses that asked for something lately, for the viewer count.
    viewers: Mutex<HashMap<IpAddr, Instant>>,
    /// Where the previous worker's muxers left off (a graceful restart), by path.
    resume: Mutex<HashMap<String, (finch_hls::Resume, Instant)>>,
    /// Where the muxers of streams that ended left off, by path: a new stream on the path
    /// goes on after a discontinuity.
    ended: Mutex<HashMap<String, (finch_hls::Continuation, Instant)>>,
}

/// How long a previous worker's muxer state waits for a request to continue it.
const RESUME_FOR: Duration = Duration::from_secs(120);

/// An address counts as a viewer this long after its last request.
const VIEWER_WINDOW: Duration = Duration::from_secs(10);

impl Hls {
    fn muxers(&self) -> MutexGuard<'_, HashMap<String, Arc<Muxing>>> {
        self.muxers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The muxer of `path` on `stream`, started if there is none (or it reads an old stream).
    pub(crate) fn muxing(
        &self,
        shared: &Arc<Shared>,
        path: &str,
        stream: Arc<Stream>,
    ) -> Result<Arc<Muxing>, String> {
        let mut muxers = self.muxers();
        if let Some(m) = muxers.get(path) {
            if !m.ended() && Arc::ptr_eq(&m.stream, &stream) {
                m.touch();
                return Ok(m.clone());
            }
            m.stop.cancel();
            self.ended_at(path, m.lock().continuation());
        }
        let hls = &shared.config().hls;
        let config = MuxerConfig {
            segment_duration: Duration::from_secs(hls.segment_duration_secs),
            part_duration: Duration::from_millis(hls.part_duration_ms),
            ..MuxerConfig::default()
        };
        let mut muxer = Muxer::new(&stream.sdp, config).map_err(|e| e.to_string())?;
        let resumed = self
            .resume
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path)
            .filter(|(_, at)| at.elapsed() < RESUME_FOR);
        if let Some((r, _)) = &resumed {
            // Players keep their place: the presentation goes on where the last worker's did.
            muxer.resume(r);
        } else if let Some((c, _)) = self
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path)
            .filter(|(_, at)| at.elapsed() < RESUME_FOR)
        {
            // A new stream on the path: the numbers go on, after a discontinuity.
            muxer.continue_after(&c);
        }
        let tracks: Vec<usize> = (0..stream.tracks.len())
            .filter(|t| muxer.carries(*t))
            .collect();
        let info = ReaderInfo {
            session: format!("hls-{}", crate::sessions::new_session_id()),
            peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            transport: "hls",
        };
        let reader = stream
            .join(info, &tracks, Start::Cache)
            .map_err(|e| e.to_string())?;
        let m = Arc::new(Muxing {
            path: path.to_owned(),
            muxer: Mutex::new(muxer),
            changed: watch::Sender::new(0),
            last_request: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            stop: shared.shutdown.child_token(),
            stream,
        });
        m.touch();
        muxers.insert(path.to_owned(), m.clone());
        drop(muxers);
        tracing::info!(
            path,
            resumed_at_msn = resumed.map(|(r, _)| r.next_msn),
            "HLS muxer started"
        );
        tokio::spawn(run(shared.clone(), m.clone(), reader));
        Ok(m)
    }

    fn ended_at(&self, path: &str, c: finch_hls::Continuation) {
        let mut e = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() > 10_000 {
            e.retain(|_, (_, at)| at.elapsed() < RESUME_FOR);
        }
        e.insert(path.to_owned(), (c, Instant::now()));
    }

    /// Where every muxer is, for the next worker (a graceful restart).
    pub(crate) fn resume_points(&self) -> Vec<(String, finch_hls::Resume)> {
        let list: Vec<Arc<Muxing>> = self.muxers().values().cloned().collect();
        list.iter()
            .filter_map(|m| Some((m.path.clone(), m.lock().resume_point()?)))
            .collect()
    }

    /// Takes the previous worker's muxer states.
    pub(crate) fn set_resume(&self, points: Vec<(String, finch_hls::Resume)>) {
        let now = Instant::now();
        let mut r = self.resume.lock().unwrap_or_else(|e| e.into_inner());
        for (path, point) in points {
            r.insert(path, (point, now));
        }
    }

    /// Running muxers.
    pub fn muxer_count(&self) -> usize {
        self.muxers().len()
    }

    /// Bytes the muxers hold.
    pub fn bytes_held(&self) -> usize {
        let list: Vec<Arc<Muxing>> = self.muxers().values().cloned().collect();
        list.iter().map(|m| m.lock().bytes_held()).sum()
    }

    fn saw(&self, ip: IpAddr) {
        let mut v = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if v.len() > 10_000 {
            v.retain(|_, t| now.duration_since(*t) < VIEWER_WINDOW);
        }
        v.insert(ip, now);
    }

    /// Addresses that requested HLS in the last 10 s.
    pub fn viewer_count(&self) -> usize {
        let v = self.viewers.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        v.values()
            .filter(|t| now.duration_since(**t) < VIEWER_WINDOW)
            .count()
    }
}

/// Feeds one muxer from its reader until the stream ends, the reader falls too far behind,
/// or nobody has asked for a while.
async fn run(shared: Arc<Shared>, m: Arc<Muxing>, mut reader: finch_relay::Reader) {
    let close_after = Duration::from_secs(shared.config().hls.muxer_close_after_secs);
    let mut batch = Vec::with_capacity(256);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let why = loop {
        tokio::select! {
            _ = m.stop.cancelled() => break "stopped",
            r = reader.recv(&mut batch, 256) => {
                if let Err(e) = r {
                    break if e == finch_relay::Ended::TooSlow { "too slow" } else { "the stream ended" };
                }
                let mut bytes = 0u64;
                let n = batch.len() as u64;
                let delay = {
                    let mut muxer = m.lock();
                    let before = muxer.last_part_delay();
                    for p in batch.drain(..) {
                        bytes += p.data().len() as u64;
                        if p.kind == Kind::Rtp {
                            muxer.push(p.track, p.data(), p.at.saturating_duration_since(epoch()));
                        } else {
                            muxer.push_rtcp(p.track, p.data());
                        }
                    }
                    muxer.last_part_delay().filter(|d| Some(*d) != before)
                };
                if let Some(d) = delay {
                    shared.metrics.hls_part_delay(d);
                }
                reader.sent(n, bytes);
                m.changed.send_modify(|g| *g = g.wrapping_add(1));
            }
            _ = tick.tick() => {
                if m.idle() >= close_after {
                    break "no HLS request for a while";
                }
            }
        }
    };
    m.ended.store(true, Ordering::Relaxed);
    m.changed.send_modify(|g| *g = g.wrapping_add(1));
    let mut muxers = shared.hls.muxers();
    if muxers.get(&m.path).is_some_and(|x| Arc::ptr_eq(x, &m)) {
        muxers.remove(&m.path);
        drop(muxers);
        shared.hls.ended_at(&m.path, m.lock().continuation());
    } else {
        drop(muxers);
    }
    tracing::info!(path = %m.path, why, "HLS muxer stopped");
}
