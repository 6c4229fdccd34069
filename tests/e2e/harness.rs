//! Shared test plumbing: free ports, a running `finch`, test media, an ffmpeg publisher, a
//! minimal HTTP client, and (in `raw`) a minimal RTSP one.

pub use crate::raw::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Ports handed out in this process, so parallel tests never get the same one twice.
fn taken() -> &'static Mutex<Vec<u16>> {
    static TAKEN: OnceLock<Mutex<Vec<u16>>> = OnceLock::new();
    TAKEN.get_or_init(|| Mutex::new(Vec::new()))
}

/// A free TCP port.
pub fn free_tcp_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut t = taken().lock().unwrap();
        if !t.contains(&port) {
            t.push(port);
            return port;
        }
    }
}

/// A free even UDP port whose successor is free too (RTP/RTCP pair).
pub fn free_udp_pair() -> u16 {
    loop {
        let port = UdpSocket::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            & !1;
        if port < 10000 {
            continue;
        }
        let ok = UdpSocket::bind(("0.0.0.0", port)).is_ok()
            && UdpSocket::bind(("0.0.0.0", port + 1)).is_ok();
        let mut t = taken().lock().unwrap();
        if ok && !t.contains(&port) && !t.contains(&(port + 1)) {
            t.push(port);
            t.push(port + 1);
            return port;
        }
    }
}

/// A directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A clip made once with ffmpeg `args` (the output file last, added here) and cached under
/// target/ as `name`.
pub fn cached_media(name: &str, args: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-media");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    if !path.exists() {
        let tmp = dir.join(format!("{}-{name}", std::process::id()));
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .arg(&tmp)
            .status()
            .expect("ffmpeg must be installed (scripts/test.sh installs it)");
        assert!(status.success(), "ffmpeg could not make {name}");
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// The test clip: H.264 320x240 at 25 fps with an IDR every 2 s, plus AAC; made once per run
/// with ffmpeg and cached under target/.
pub fn clip() -> PathBuf {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| {
        cached_media(
            "clip-v1.mp4",
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=44100",
                "-t",
                "10",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "50",
                "-keyint_min",
                "50",
                "-sc_threshold",
                "0",
                "-pix_fmt",
                "yuv420p",
                "-c:a",
                "aac",
                "-b:a",
                "64k",
            ],
        )
    })
    .clone()
}

/// A running `finch`; killed on drop.
pub struct Finch {
    child: Child,
    pub rtsp_port: u16,
    pub admin_port: u16,
    pub rtp_port: u16,
    pub hls_port: u16,
    pub dir: PathBuf,
}

impl Finch {
    /// Starts finch in the foreground with `extra` appended to a config that sets free ports.
    pub fn start(name: &str, extra: &str) -> Finch {
        Finch::launch(name, extra, &["-d"])
    }

    /// Starts finch under its supervisor.
    pub fn start_supervised(name: &str, extra: &str) -> Finch {
        Finch::launch(name, extra, &[])
    }

    fn launch(name: &str, extra: &str, args: &[&str]) -> Finch {
        Finch::launch_binary(
            Path::new(env!("CARGO_BIN_EXE_finch")),
            name,
            extra,
            args,
            None,
        )
    }

    /// Starts a given `finch` binary (a copy, for upgrade tests) under its supervisor.
    pub fn start_supervised_binary(bin: &Path, name: &str, extra: &str) -> Finch {
        Finch::launch_binary(bin, name, extra, &[], None)
    }

    /// Starts finch (under its supervisor unless `args` has `-d`) with its stderr going to
    /// `stderr` instead of the log file.
    pub fn start_with_stderr(name: &str, extra: &str, args: &[&str], stderr: Stdio) -> Finch {
        let bin = Path::new(env!("CARGO_BIN_EXE_finch"));
        Finch::launch_binary(bin, name, extra, args, Some(stderr))
    }

    fn launch_binary(
        bin: &Path,
        name: &str,
        extra: &str,
        args: &[&str],
        stderr: Option<Stdio>,
    ) -> Finch {
        // A port found free can be taken before finch binds it (by any process's outgoing
        // connection): such a start is tried again on other ports.
        let retry = stderr.is_none();
        let mut stderr = stderr;
        for _ in 0..3 {
            match Finch::try_launch(bin, name, extra, args, stderr.take()) {
                Ok(f) => return f,
                Err(log) if retry && log.contains("Address already in use") => continue,
                Err(log) => panic!("{log}"),
            }
        }
        panic!("finch could not bind free ports three times over")
    }

    fn try_launch(
        bin: &Path,
        name: &str,
        extra: &str,
        args: &[&str],
        stderr: Option<Stdio>,
    ) -> Result<Finch, String> {
        let dir = temp_dir(name);
        let rtsp_port = free_tcp_port();
        let admin_port = free_tcp_port();
        let rtp_port = free_udp_pair();
        let hls_port = free_tcp_port();
        // A config that must name its own port (a cluster node's advertise_url) says `{rtsp_port}`.
        let extra = &extra.replace("{rtsp_port}", &rtsp_port.to_string());
        let rtsp_extra = extract_section(extra, "rtsp");
        // A test that lists its own addresses replaces the default loopback one.
        let listen = if rtsp_extra.contains("listen_addresses") {
            ""
        } else {
            "listen_addresses = [\"127.0.0.1\"]\n"
        };
        let config = format!(
            "[rtsp]\n{listen}port = {rtsp_port}\nrtp_port = {rtp_port}\n{rtsp_extra}\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{}\n[hls]\nlisten = \"127.0.0.1:{hls_port}\"\n{}\n{}",
            extract_section(extra, "admin"),
            extract_section(extra, "hls"),
            strip_section(&strip_section(&strip_section(extra, "rtsp"), "admin"), "hls"),
        );
        let config_path = dir.join("finch.toml");
        std::fs::write(&config_path, config).unwrap();
        let stderr = stderr
            .unwrap_or_else(|| Stdio::from(std::fs::File::create(dir.join("finch.log")).unwrap()));
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut f = Finch {
            child,
            rtsp_port,
            admin_port,
            rtp_port,
            hls_port,
            dir,
        };
        f.wait_ready()?;
        Ok(f)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("finch exited early with {status}: {}", self.log()));
            }
            if let Ok((200, _)) = http(self.admin_port, "GET", "/healthz", "") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("finch did not become ready: {}", self.log()))
    }

    /// `rtsp://127.0.0.1:port/<path>`
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{path}", self.rtsp_port)
    }

    /// `rtsp://[::1]:port/<path>`
    pub fn url6(&self, path: &str) -> String {
        format!("rtsp://[::1]:{}/{path}", self.rtsp_port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("finch.log")).unwrap_or_default()
    }

    /// GET an admin endpoint and parse the JSON body; (0, null) if the request failed (a
    /// worker dying mid-request).
    pub fn api(&self, path: &str) -> (u16, serde_json::Value) {
        let Ok((status, body)) = http(self.admin_port, "GET", path, "") else {
            return (0, serde_json::Value::Null);
        };
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Waits until `path` is published, ready, and media (more than a few packets) has arrived.
    pub fn wait_path_ready(&self, path: &str) {
        let ok = wait_until(Duration::from_secs(20), || {
            let (s, v) = self.api(&format!("/api/v1/paths/{path}"));
            s == 200
                && v["ready"] == serde_json::Value::Bool(true)
                && v["bytes_in"].as_u64() > Some(10_000)
        });
        assert!(ok, "path {path} never became ready: {}", self.log());
    }

    /// The config file finch was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("finch.toml")
    }

    /// The pid of the process the test started (the supervisor, unless `-d`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the process the test started.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Finch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn extract_section(extra: &str, section: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in extra.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == format!("[{section}]");
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn strip_section(extra: &str, section: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in extra.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t == format!("[{section}]");
        }
        if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Polls `f` every 100 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// An ffmpeg process publishing the test clip in a loop, in real time; killed on drop.
pub struct Publisher(Child);

impl Publisher {
    pub fn start(url: &str, transport: &str) -> Publisher {
        let child = ffmpeg_from_clip(&[
            "-c",
            "copy",
            "-f",
            "rtsp",
            "-rtsp_transport",
            transport,
            url,
        ]);
        Publisher(child)
    }

    /// ffmpeg sending the clip with `out` as its output options and URL; killed on drop.
    pub fn with(out: &[&str]) -> Publisher {
        Publisher(ffmpeg_from_clip(out))
    }

    /// ffmpeg publishing `file` (copied, looped, in real time) to `url` over TCP.
    pub fn file(file: &Path, url: &str) -> Publisher {
        Publisher(ffmpeg_from(
            file,
            &["-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", url],
        ))
    }

    /// Whether ffmpeg is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    /// Stops publishing abruptly (the TCP connection closes without TEARDOWN).
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// ffmpeg sending the test clip in real time, looped, with `out` as its output options and URL.
pub fn ffmpeg_from_clip(out: &[&str]) -> Child {
    ffmpeg_from(&clip(), out)
}

/// ffmpeg sending `file` in real time, looped, with `out` as its output options and URL.
pub fn ffmpeg_from(file: &Path, out: &[&str]) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-stream_loop", "-1", "-i"])
        .arg(file)
        .args(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg must be installed (scripts/test.sh installs it)")
}

/// GStreamer's rtspsrc reading `url` (with `props` such as `protocols=tcp`) and decoding
/// H.264 until `buffers` frames reached the sink, within 30 s; returns the frames that did and
/// gst's stderr.
///
/// Frames are counted from the sink's messages, not taken from the exit status: at the last
/// buffer rtspsrc shuts down, and its PAUSE and TEARDOWN threads sometimes race each other onto
/// a connection that is closing, which gst reports as an error after every frame has arrived.
pub fn gst_decode(url: &str, props: &[&str], buffers: u32) -> (usize, String) {
    let out = Command::new("timeout")
        .args(["30", "gst-launch-1.0", "-v", "rtspsrc"])
        .arg(format!("location={url}"))
        .args(props)
        .args([
            "!",
            "rtph264depay",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
        ])
        .args(["fakesink", "silent=false"])
        .arg(format!("num-buffers={buffers}"))
        .output()
        .expect("gst-launch-1.0 must be installed (scripts/test.sh installs it)");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("fakesink0: last-message = chain"))
        .count();
    (frames, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A minimal HTTP/1.0 request; returns status and body.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Runs ffprobe on a URL and returns "codec:WxH" per stream.
pub fn ffprobe(url: &str, transport: &str) -> Vec<String> {
    ffprobe_input(&["-rtsp_transport", transport, url])
}

/// Runs ffprobe on an input (its options, then the URL) and returns "codec:WxH" per stream.
pub fn ffprobe_input(input: &[&str]) -> Vec<String> {
    let out = Command::new("timeout")
        .args(["30", "ffprobe", "-v", "error"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
        ])
        .args(input)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(',').replace(',', ":"))
        .filter(|l| !l.is_empty())
        .collect()
}

/// Reads `secs` seconds of video with ffmpeg and returns the number of decoded frames.
pub fn ffmpeg_count_frames(url: &str, transport: &str, secs: u32) -> u64 {
    ffmpeg_frames(&["-rtsp_transport", transport, "-i", url], secs)
}

/// Video frames ffmpeg decodes over `secs` of media from the input `input` names (options and
/// `-i URL`).
pub fn ffmpeg_frames(input: &[&str], secs: u32) -> u64 {
    let out = Command::new("timeout")
        .args(["60", "ffmpeg", "-hide_banner", "-nostats"])
        .args(input)
        .args(["-t", &secs.to_string(), "-map", "0:v", "-f", "null"])
        .args(["-progress", "pipe:1", "-"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// GStreamer playing `url` over TCP for `secs` (rtspsrc ! depay ! parse ! decode ! fakesink):
/// the frames it decoded, and its stderr.
pub fn gst_play_tcp(url: &str, secs: u64) -> (usize, String) {
    gst_play(url, "tcp", secs)
}

/// GStreamer playing `url` over `protocols` (`tcp`, `udp`) for `secs`: frames decoded, stderr.
pub fn gst_play(url: &str, protocols: &str, secs: u64) -> (usize, String) {
    let out = std::process::Command::new("timeout")
        .args([&secs.to_string(), "gst-launch-1.0", "-v", "rtspsrc"])
        .arg(format!("location={url}"))
        .arg(format!("protocols={protocols}"))
        .args(["!", "rtph264depay", "!", "h264parse", "!"])
        .args(["avdec_h264", "!", "fakesink", "silent=false"])
        .output()
        .unwrap();
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("fakesink0: last-message = chain"))
        .count();
    (frames, String::from_utf8_lossy(&out.stderr).into_owned())
}
