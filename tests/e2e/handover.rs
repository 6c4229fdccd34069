//! Graceful restarts that hand live sessions to the new worker: the publisher and its players
//! stay connected across them, sequence numbers go on, the old worker leaves at once.

use crate::harness::*;
use crate::raw::Raw;
use crate::relay::{block_on, retina_read};
use crate::supervisor::{server, wait_restart, worker_pid};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A raw RTP-over-TCP reader on its own thread: every video sequence number it sees, checked
/// for gaps and repeats, until stopped.
pub(crate) struct SeqReader {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seqs>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Seqs {
    pub(crate) packets: u64,
    /// Packets missing between consecutive ones.
    pub(crate) missing: u64,
    /// Packets whose number was not after the last one.
    pub(crate) repeated: u64,
    pub(crate) last: Option<u16>,
    pub(crate) closed: bool,
}

impl SeqReader {
    pub(crate) fn start(f: &Finch, path: &str) -> SeqReader {
        let mut raw = Raw::connect(f.rtsp_port);
        raw.play_tcp(&f.url(path));
        raw.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seqs::default()));
        let (s, out) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut buf: Vec<u8> = raw.take_buffered();
            let mut chunk = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                match raw.stream.read(&mut chunk) {
                    Ok(0) => {
                        out.lock().unwrap().closed = true;
                        return;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(_) => continue,
                }
                let mut at = 0;
                while buf.len() >= at + 4 && buf[at] == b'$' {
                    let len = usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
                    if buf.len() < at + 4 + len {
                        break;
                    }
                    let (ch, p) = (buf[at + 1], &buf[at + 4..at + 4 + len]);
                    if ch == 0 && p.len() >= 12 {
                        let seq = u16::from_be_bytes([p[2], p[3]]);
                        let mut o = out.lock().unwrap();
                        o.packets += 1;
                        if let Some(last) = o.last {
                            let step = seq.wrapping_sub(last);
                            if step == 0 || step > 0x8000 {
                                o.repeated += 1;
                            } else {
                                o.missing += u64::from(step - 1);
                            }
                        }
                        o.last = Some(seq);
                    }
                    at += 4 + len;
                }
                assert!(
                    buf.len() < at + 4 || buf[at] == b'$',
                    "the interleaved stream lost its framing"
                );
                buf.drain(..at);
            }
        });
        SeqReader {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    pub(crate) fn seen(&self) -> Seqs {
        self.seen.lock().unwrap().clone()
    }

    pub(crate) fn finish(mut self) -> Seqs {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen()
    }
}

/// gst, retina and ffmpeg playing one URL for `secs` on their own threads.
struct Players {
    gst: std::thread::JoinHandle<(usize, String)>,
    retina: std::thread::JoinHandle<Result<crate::relay::Seen, String>>,
    ffmpeg: std::thread::JoinHandle<u64>,
    secs: u64,
}

impl Players {
    fn start(url: &str, udp: bool, secs: u64) -> Players {
        let (u1, u2, u3) = (url.to_owned(), url.to_owned(), url.to_owned());
        let transport = if udp { "udp" } else { "tcp" };
        Players {
            gst: std::thread::spawn(move || gst_play(&u1, transport, secs)),
            retina: std::thread::spawn(move || block_on(retina_read(u2, udp, secs))),
            ffmpeg: std::thread::spawn(move || ffmpeg_count_frames(&u3, transport, secs as u32)),
            secs,
        }
    }

    /// Waits for all three and checks that each decoded nearly every frame of the run (at
    /// 25 fps; a player that reconnected or stalled falls well short). Returns a summary.
    fn finish(self) -> String {
        let expected = 25 * self.secs;
        let (gst, gst_err) = self.gst.join().unwrap();
        let seen = self.retina.join().unwrap().unwrap();
        let ffmpeg = self.ffmpeg.join().unwrap();
        assert!(
            gst as u64 > expected * 9 / 10,
            "gst: {gst} frames\n{gst_err}"
        );
        assert!(
            seen.frames as u64 > expected * 9 / 10 && seen.error.is_none() && !seen.ended,
            "retina: {seen:?}"
        );
        assert!(ffmpeg > expected * 9 / 10, "ffmpeg: {ffmpeg} frames");
        format!(
            "gst {gst}, retina {}, ffmpeg {ffmpeg} frames of {expected}",
            seen.frames
        )
    }
}

pub(crate) fn alive(pid: u64) -> bool {
    // SAFETY: signal 0 only checks whether the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// The path's source peer and the publisher's session id.
fn publisher_session(f: &Finch, path: &str) -> (serde_json::Value, serde_json::Value) {
    let peer = f.api(&format!("/api/v1/paths/{path}")).1["source"]["peer"].clone();
    let id = f.api("/api/v1/sessions").1["items"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["role"] == "publisher")
                .map(|s| s["id"].clone())
        })
        .unwrap_or_default();
    (peer, id)
}

/// A supervised Finch with ffmpeg publishing `path` over `transport`, and the publisher's
/// (peer, session id) to compare with later.
fn publishing(
    name: &str,
    path: &str,
    transport: &str,
) -> (Finch, Publisher, (serde_json::Value, serde_json::Value)) {
    // A drain long enough that a session left behind would show: the old worker must go as
    // soon as it has handed everything over, not after the drain.
    let f = Finch::start_supervised(name, "[supervisor]\ndrain_timeout_secs = 20\n");
    let publisher = Publisher::start(&f.url(path), transport);
    f.wait_path_ready(path);
    let source = publisher_session(&f, path);
    (f, publisher, source)
}

/// How many readers `path` has.
fn readers_of(f: &Finch, path: &str) -> usize {
    f.api(&format!("/api/v1/paths/{path}")).1["readers"]
        .as_array()
        .map_or(0, Vec::len)
}

/// Graceful restart number `i`: waits for the new worker to serve and the old one to be gone;
/// how long each took from the signal.
fn restart(f: &Finch, i: u64) -> (Duration, Duration) {
    let old = worker_pid(f);
    let asked = Instant::now();
    f.signal(libc::SIGUSR2);
    let s = wait_restart(f, old, i);
    let ready = asked.elapsed();
    let newest = s["restarts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(newest["reason"], "requested");
    assert!(
        wait_until(Duration::from_secs(3), || !alive(old)),
        "restart {i}: the old worker {old} is still there 3 s after the new one served\n{}",
        f.log()
    );
    (ready, asked.elapsed())
}

#[test]
fn twenty_graceful_restarts_in_a_row_keep_every_player_and_the_publisher_connected() {
    let (f, mut publisher, source) = publishing("handover", "live/h", "tcp");
    let players_run = Players::start(&f.url("live/h"), false, 40);
    let raw = SeqReader::start(&f, "live/h");
    let players = || readers_of(&f, "live/h");
    assert!(
        wait_until(Duration::from_secs(15), || players() == 4),
        "{}",
        f.log()
    );
    let began = Instant::now();
    let mut switches = Vec::new();
    for i in 0..20u64 {
        let before = raw.seen().packets;
        switches.push(restart(&f, i));
        // The raw reader goes on receiving from the new worker.
        assert!(
            wait_until(Duration::from_secs(3), || raw.seen().packets > before + 10),
            "restart {i}: the raw reader got nothing more: {:?}\n{}",
            raw.seen(),
            f.log()
        );
        // Spread over the run, across keyframes.
        std::thread::sleep(Duration::from_millis(500));
    }
    let restarts_took = began.elapsed();
    assert_eq!(
        players(),
        4,
        "a player was dropped: {}",
        f.api("/api/v1/paths/live/h").1
    );
    assert_eq!(
        publisher_session(&f, "live/h"),
        source,
        "the publisher's session changed: it reconnected"
    );
    assert!(publisher.alive(), "the publisher (ffmpeg) gave up");
    let last = server(&f)["restarts"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("publishers=1 readers=4")),
        "{last}"
    );
    let metrics = http(f.admin_port, "GET", "/metrics", "").unwrap().1;
    assert!(
        metrics.contains("finch_sessions_handed_over_total{role=\"reader\"} 4"),
        "{metrics}"
    );
    // The raw reader reads on while the players play out their run.
    let played = players_run.finish();
    let seqs = raw.finish();
    assert!(!seqs.closed, "the raw reader's connection closed");
    assert_eq!(
        (seqs.missing, seqs.repeated),
        (0, 0),
        "sequence numbers across 20 restarts: {seqs:?}"
    );
    let worst = switches.iter().map(|s| s.1).max().unwrap_or_default();
    eprintln!(
        "20 restarts in {restarts_took:?} (slowest: new worker serving after {:?}, old gone after {worst:?}); \
         raw reader {} packets, {} missing, {} repeated; {played}",
        switches.iter().map(|s| s.0).max().unwrap_or_default(),
        seqs.packets,
        seqs.missing,
        seqs.repeated,
    );
}

/// Milliseconds from connecting to the first video packet, which must start a keyframe (SETUP
/// and PLAY included: a request that waits for the handover counts).
fn first_frame_ms(f: &Finch, path: &str) -> f64 {
    let played = Instant::now();
    let mut raw = Raw::connect(f.rtsp_port);
    raw.play_tcp(&f.url(path));
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf: Vec<u8> = raw.take_buffered();
    let mut chunk = [0u8; 65536];
    while played.elapsed() < Duration::from_secs(10) {
        if let Ok(n) = raw.stream.read(&mut chunk) {
            assert!(n > 0, "closed before the first frame");
            buf.extend_from_slice(&chunk[..n]);
        }
        while buf.len() >= 4 && buf[0] == b'$' {
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if buf.len() < 4 + len {
                break;
            }
            let (ch, p) = (buf[1], buf[4..4 + len].to_vec());
            buf.drain(..4 + len);
            if ch == 0 && p.len() >= 14 {
                let (nal, inner) = (p[12] & 0x1f, p[13] & 0x1f);
                let key = matches!(nal, 5 | 7 | 24) || (nal == 28 && matches!(inner, 5 | 7));
                assert!(
                    key,
                    "the first video packet is not a keyframe's (NAL {nal}/{inner})"
                );
                return played.elapsed().as_secs_f64() * 1000.0;
            }
        }
    }
    panic!("no video within 10 s");
}

#[test]
fn a_reader_arriving_during_a_switch_starts_as_fast_as_at_any_other_time() {
    let f = Finch::start_supervised("handover-join", "[supervisor]\ndrain_timeout_secs = 20\n");
    let _p = Publisher::start(&f.url("live/j"), "tcp");
    f.wait_path_ready("live/j");
    // Let the GOP cache fill, then measure a quiet-time join.
    std::thread::sleep(Duration::from_secs(3));
    let quiet = first_frame_ms(&f, "live/j");
    let mut during = Vec::new();
    for (i, delay) in [0u64, 30, 60, 100, 150, 250].into_iter().enumerate() {
        let old = worker_pid(&f);
        f.signal(libc::SIGUSR2);
        std::thread::sleep(Duration::from_millis(delay));
        during.push(first_frame_ms(&f, "live/j"));
        wait_restart(&f, old, i as u64);
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("first frame: {quiet:.1} ms at a quiet time; {during:.1?} ms joining 0-250 ms into a switch");
    for ms in &during {
        assert!(
            *ms < quiet + 500.0,
            "a reader joining during a switch waited {ms:.0} ms for its first frame ({quiet:.0} ms otherwise): {during:?}"
        );
    }
}

#[test]
fn a_udp_publisher_and_udp_players_stay_through_graceful_restarts() {
    let (f, mut publisher, source) = publishing("handover-udp", "live/u", "udp");
    let players_run = Players::start(&f.url("live/u"), true, 25);
    // The publisher's datagrams wait in the kernel during each switch: a reader that checks
    // sequence numbers sees none missing.
    let raw = SeqReader::start(&f, "live/u");
    let players = || readers_of(&f, "live/u");
    assert!(
        wait_until(Duration::from_secs(15), || players() == 4),
        "{}",
        f.log()
    );
    let mut worst = Duration::ZERO;
    for i in 0..20u64 {
        worst = worst.max(restart(&f, i).1);
        std::thread::sleep(Duration::from_millis(400));
    }
    assert_eq!(
        players(),
        4,
        "a player was dropped: {}",
        f.api("/api/v1/paths/live/u").1
    );
    assert_eq!(
        publisher_session(&f, "live/u"),
        source,
        "the publisher reconnected"
    );
    assert!(publisher.alive(), "the publisher (ffmpeg) gave up");
    let played = players_run.finish();
    let seqs = raw.finish();
    eprintln!(
        "UDP publisher through 20 restarts (old worker gone within {worst:?}): UDP players {played}; \
         raw TCP reader {} packets, {} missing, {} repeated",
        seqs.packets, seqs.missing, seqs.repeated
    );
    assert!(!seqs.closed);
    assert_eq!((seqs.missing, seqs.repeated), (0, 0), "{seqs:?}");
}

#[test]
fn an_upgrade_hands_sessions_to_the_new_binary_and_a_broken_one_drops_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("handover-upgrade-bin");
    let bin = dir.join("finch");
    std::fs::copy(env!("CARGO_BIN_EXE_finch"), &bin).unwrap();
    let f = Finch::start_supervised_binary(
        &bin,
        "handover-upgrade",
        "[supervisor]\ndrain_timeout_secs = 20\n",
    );
    let mut publisher = Publisher::start(&f.url("live/up"), "tcp");
    f.wait_path_ready("live/up");
    let source = publisher_session(&f, "live/up");
    let raw = SeqReader::start(&f, "live/up");
    let first = worker_pid(&f);
    // A broken upgrade: the new binary cannot start; the serving worker keeps everything.
    let broken = dir.join("finch.broken");
    std::fs::write(&broken, "#!/bin/sh\nexit 255\n").unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&broken, &bin).unwrap();
    let before = raw.seen().packets;
    f.signal(libc::SIGUSR2);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let log = f.log();
            log.contains("the current worker keeps serving")
                || log.contains("the current one keeps serving")
        }),
        "{}",
        f.log()
    );
    assert_eq!(worker_pid(&f), first);
    assert!(wait_until(Duration::from_secs(3), || raw.seen().packets > before + 25));
    // A good upgrade at the same path: the new binary's worker takes the sessions.
    let good = dir.join("finch.good");
    std::fs::copy(env!("CARGO_BIN_EXE_finch"), &good).unwrap();
    std::fs::rename(&good, &bin).unwrap();
    f.signal(libc::SIGUSR2);
    wait_restart(&f, first, 1);
    assert!(
        wait_until(Duration::from_secs(3), || !alive(first)),
        "{}",
        f.log()
    );
    let before = raw.seen().packets;
    assert!(wait_until(Duration::from_secs(3), || raw.seen().packets > before + 25));
    assert_eq!(
        publisher_session(&f, "live/up"),
        source,
        "the publisher reconnected"
    );
    assert!(publisher.alive());
    let seqs = raw.finish();
    assert!(!seqs.closed);
    assert_eq!((seqs.missing, seqs.repeated), (0, 0), "{seqs:?}");
}
