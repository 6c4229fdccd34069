//! A cluster on a real `redis-server`: a path published on one node is read on the others
//! through one pull per node, publishers racing on two nodes get one owner, a killed node's
//! keys expire, and Redis going away stops no node serving what it holds.

use crate::harness::*;
use crate::raw::{Raw, H264_SDP};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a free loopback port, persistence off; killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            child: None,
            port: free_tcp_port(),
        };
        r.restart();
        r
    }

    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || self.cli(&["PING"]) == "PONG"),
            "redis-server did not start"
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// Who owns `path` in the registry ("" if no one).
    fn owner(&self, path: &str) -> String {
        self.cli(&["GET", &format!("finch:path:{path}")])
    }

    fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .cli(&["KEYS", "finch:*"])
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect();
        k.sort();
        k
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A node of the cluster on `redis`, named `id`.
fn node(redis: &Redis, test: &str, id: &str, supervised: bool, extra: &str) -> Finch {
    let config = format!(
        "[cluster]\nredis_url = \"{}\"\nnode_id = \"{id}\"\nadvertise_url = \"rtsp://127.0.0.1:{{rtsp_port}}\"\nttl_secs = 3\n{extra}",
        redis.url()
    );
    let name = format!("cluster-{test}-{id}");
    if supervised {
        Finch::start_supervised(&name, &config)
    } else {
        Finch::start(&name, &config)
    }
}

fn readers_of(f: &Finch, path: &str) -> usize {
    f.api(&format!("/api/v1/paths/{path}")).1["readers"]
        .as_array()
        .map_or(0, Vec::len)
}

/// A reader as a player does it: DESCRIBE (which may wait for the pull), SETUP, PLAY over TCP.
fn describe_and_play(f: &Finch, path: &str) -> Raw {
    let mut raw = Raw::connect(f.rtsp_port);
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let r = raw.request(
        "DESCRIBE",
        &f.url(path),
        1,
        &["Accept: application/sdp"],
        "",
    );
    assert_eq!(r.status, 200, "DESCRIBE on the edge: {r:?}");
    raw.play_tcp(&f.url(path));
    raw
}

#[test]
fn a_path_published_on_one_node_is_read_on_the_others_through_one_pull_each() {
    let redis = Redis::start();
    let a = node(&redis, "read", "a", false, "");
    let b = node(&redis, "read", "b", false, "");
    let c = node(&redis, "read", "c", false, "");
    // Nothing anywhere: 404 as standalone, and promptly.
    let mut raw = Raw::connect(b.rtsp_port);
    let asked = Instant::now();
    let r = raw.request("DESCRIBE", &b.url("live/none"), 1, &[], "");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );

    let mut publisher = Publisher::start(&a.url("live/c"), "tcp");
    a.wait_path_ready("live/c");
    assert!(
        wait_until(Duration::from_secs(5), || redis.owner("live/c") == "a"),
        "{:?}",
        redis.keys()
    );
    // retina on B: the first frame, through B's pull from A.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seen = rt
        .block_on(crate::relay::retina_read(b.url("live/c"), false, 3))
        .unwrap_or_else(|e| panic!("retina on the edge: {e}\n{}", b.log()));
    assert!(seen.frames > 10, "{seen:?}");
    assert_eq!(seen.first_is_key, Some(true), "{seen:?}");
    eprintln!(
        "publish on A to the first frame on B (DESCRIBE to frame): {:?}",
        seen.time_to_first_frame
    );
    let (_, p) = b.api("/api/v1/paths/live/c");
    assert_eq!(p["source"]["kind"], "pull", "{p}");
    // 100 readers on B cost A one reader: B's pull.
    let readers: Vec<Raw> = (0..100).map(|_| describe_and_play(&b, "live/c")).collect();
    assert!(
        wait_until(Duration::from_secs(5), || readers_of(&b, "live/c") >= 100),
        "{}",
        readers_of(&b, "live/c")
    );
    assert_eq!(
        readers_of(&a, "live/c"),
        1,
        "{}",
        a.api("/api/v1/paths/live/c").1
    );
    // ffprobe and ffmpeg on C: a second pull, C's own.
    let streams = ffprobe(&c.url("live/c"), "tcp");
    assert!(streams.contains(&"h264:320:240".to_owned()), "{streams:?}");
    assert!(streams.contains(&"aac".to_owned()), "{streams:?}");
    let frames = ffmpeg_count_frames(&c.url("live/c"), "tcp", 3);
    assert!(frames >= 30, "ffmpeg decoded {frames} frames on C");
    // The cluster as every node sees it: three nodes, A owns the path, the pulls own nothing.
    let (status, cl) = c.api("/api/v1/cluster");
    assert_eq!(status, 200);
    assert_eq!(cl["node_id"], "c");
    assert_eq!(cl["redis"], "up");
    let nodes = cl["nodes"].as_array().unwrap();
    let ids: Vec<&str> = nodes
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c"], "{cl}");
    assert_eq!(nodes[0]["paths"], serde_json::json!(["live/c"]), "{cl}");
    assert_eq!(
        nodes[0]["advertise_url"],
        format!("rtsp://127.0.0.1:{}", a.rtsp_port)
    );
    assert_eq!(nodes[1]["paths"], serde_json::json!([]), "{cl}");
    // Load: A receives the clip (about 2 Mbit/s), B reads it from A and serves 100 readers.
    assert!(
        wait_until(Duration::from_secs(8), || {
            let (_, cl) = c.api("/api/v1/cluster");
            let n = &cl["nodes"];
            n[0]["bitrate_in"].as_u64().is_some_and(|b| b > 500_000)
                && n[1]["readers"].as_u64().is_some_and(|r| r >= 100)
        }),
        "{}",
        c.api("/api/v1/cluster").1
    );
    // The status page shows the nodes too.
    let (_, page) = http(c.admin_port, "GET", "/", "").unwrap();
    assert!(page.contains("<h2>Cluster</h2>"), "{page}");
    for id in ["<td>a</td>", "<td>b</td>", "<td>c</td>", "live/c"] {
        assert!(page.contains(id), "{id} not on the status page");
    }
    let (_, metrics) = http(b.admin_port, "GET", "/metrics", "").unwrap();
    assert!(metrics.contains("finch_cluster_redis_up 1"), "{metrics}");
    assert!(
        metrics.contains("finch_cluster_lookups_total{result=\"found\"}"),
        "{metrics}"
    );
    // The publisher stops: B's readers end cleanly, and the claim goes.
    publisher.kill();
    let mut readers = readers;
    for r in readers.iter_mut().take(5) {
        assert!(
            r.closed_within(Duration::from_secs(10)),
            "a reader on B was not closed"
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || redis.owner("live/c").is_empty()),
        "{:?}",
        redis.keys()
    );
    // From a publish starting on A to the first frame of a reader on B (ffmpeg's own start
    // included): the reader retries until the path is there.
    let started = Instant::now();
    let _again = Publisher::start(&a.url("live/c"), "tcp");
    let first = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "B never played the path"
        );
        match rt.block_on(crate::relay::retina_read(b.url("live/c"), false, 1)) {
            Ok(s) if s.frames > 0 => break started.elapsed(),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    eprintln!("publish starting on A to the first frame on B: {first:?}");
    for f in [&a, &b, &c] {
        assert_eq!(http(f.admin_port, "GET", "/healthz", "").unwrap().0, 200);
    }
}

#[test]
fn publishers_racing_for_one_path_on_two_nodes_get_one_owner() {
    let redis = Redis::start();
    let a = node(&redis, "race", "a", false, "");
    let b = node(&redis, "race", "b", false, "");
    for round in 0..5 {
        let path = format!("race/{round}");
        let announce = |f: &Finch| {
            let port = f.rtsp_port;
            let url = f.url(&path);
            std::thread::spawn(move || {
                let mut raw = Raw::connect(port);
                let r = raw.request(
                    "ANNOUNCE",
                    &url,
                    1,
                    &["Content-Type: application/sdp"],
                    H264_SDP,
                );
                (r.status, raw)
            })
        };
        let (ta, tb) = (announce(&a), announce(&b));
        let (sa, _ka) = ta.join().unwrap();
        let (sb, _kb) = tb.join().unwrap();
        let mut statuses = [sa, sb];
        statuses.sort();
        assert_eq!(statuses, [200, 455], "round {round}");
        let winner = if sa == 200 { "a" } else { "b" };
        assert_eq!(redis.owner(&path), winner);
    }
    // Garbage in Redis (a claim naming a node with no record, a record that is not JSON):
    // a prompt 404 and a listing without it, never a failure.
    redis.cli(&["SET", "finch:path:live/g", "zz"]);
    redis.cli(&["SET", "finch:node:zz", "not json"]);
    let mut raw = Raw::connect(b.rtsp_port);
    let asked = Instant::now();
    let r = raw.request("DESCRIBE", &b.url("live/g"), 1, &[], "");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(asked.elapsed() < Duration::from_secs(3));
    let (status, cl) = b.api("/api/v1/cluster");
    assert_eq!(status, 200);
    let ids: Vec<&str> = cl["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert_eq!(ids, ["a", "b"], "{cl}");
    // Afterwards, on the other node: still 455, naming no one but refusing.
    let (_pa, _) = crate::raw::raw_publish(
        &a,
        "live/one",
        H264_SDP,
        "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record",
    );
    let mut raw = Raw::connect(b.rtsp_port);
    let r = raw.request(
        "ANNOUNCE",
        &b.url("live/one"),
        1,
        &["Content-Type: application/sdp"],
        H264_SDP,
    );
    assert_eq!(r.status, 455, "{r:?}");
}

#[test]
fn a_killed_node_expires_and_redis_going_away_stops_no_node() {
    let mut redis = Redis::start();
    let a = node(&redis, "kill", "a", true, "");
    let b = node(&redis, "kill", "b", false, "");
    let _publisher = Publisher::start(&a.url("live/k"), "tcp");
    a.wait_path_ready("live/k");
    let mut reader = describe_and_play(&b, "live/k");
    assert!(!crate::raw::read_interleaved(&mut reader, Duration::from_secs(1)).is_empty());
    // Redis goes away: both nodes serve what they hold, and new publishers and readers too.
    redis.stop();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !crate::raw::read_interleaved(&mut reader, Duration::from_secs(4)).is_empty(),
        "B's reader of A's path stopped when Redis went away"
    );
    let _local = Publisher::start(&b.url("live/local"), "tcp");
    b.wait_path_ready("live/local");
    let started = Instant::now();
    assert_eq!(ffprobe(&b.url("live/local"), "tcp").len(), 2);
    assert_eq!(ffprobe(&a.url("live/k"), "tcp").len(), 2);
    assert!(started.elapsed() < Duration::from_secs(20));
    let (status, cl) = b.api("/api/v1/cluster");
    assert_eq!(status, 200);
    assert_eq!(cl["redis"], "unreachable", "{cl}");
    assert!(b.log().contains("Redis unreachable"), "{}", b.log());
    // Redis comes back empty: within the TTL the registry is whole again.
    redis.restart();
    let back = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || {
            redis.owner("live/k") == "a" && redis.owner("live/local") == "b"
        }),
        "{:?}",
        redis.keys()
    );
    eprintln!(
        "registry whole again {:?} after Redis came back",
        back.elapsed()
    );
    // A dies without a word (supervisor and worker, SIGKILL): its keys expire within the TTL.
    let worker = a.api("/api/v1/server").1["worker"]["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill(2) on processes this test started.
    unsafe {
        libc::kill(a.pid() as i32, libc::SIGKILL);
        libc::kill(worker, libc::SIGKILL);
    }
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(6), || redis.owner("live/k").is_empty()
            && !redis.keys().contains(&"finch:node:a".to_owned())),
        "{:?}",
        redis.keys()
    );
    eprintln!(
        "killed owner's keys expired {:?} after the kill",
        killed.elapsed()
    );
    // B's reader of the dead node's path is closed (no grace), and B serves on.
    assert!(reader.closed_within(Duration::from_secs(10)));
    assert_eq!(ffprobe(&b.url("live/local"), "tcp").len(), 2);
}

#[test]
fn with_users_nodes_pull_from_each_other_with_the_cluster_secret_and_readers_still_log_in() {
    let redis = Redis::start();
    let extra = format!("secret = \"node-s3cret:/@\"\n{}", crate::auth::USERS);
    let a = node(&redis, "auth", "a", false, &extra);
    let b = node(&redis, "auth", "b", false, &extra);
    let as_user = |f: &Finch, user: &str, pass: &str| {
        format!("rtsp://{user}:{pass}@127.0.0.1:{}/cams/1", f.rtsp_port)
    };
    let _publisher = Publisher::start(&as_user(&a, "cam", "campass"), "tcp");
    a.wait_path_ready("cams/1");
    // The viewer logs in on B; B logs in on A with the cluster's secret.
    let streams = ffprobe(&as_user(&b, "viewer", "viewpass"), "tcp");
    assert!(
        streams.contains(&"h264:320:240".to_owned()),
        "{streams:?}\n{}",
        b.log()
    );
    // Anonymous readers are still refused on the edge, before any pull.
    let mut raw = Raw::connect(b.rtsp_port);
    let r = raw.request("DESCRIBE", &b.url("cams/1"), 1, &[], "");
    assert_eq!(r.status, 401, "{r:?}");
    // The secret shows nowhere.
    let (_, config) = b.api("/api/v1/config");
    assert_eq!(config["cluster"]["secret"], "<redacted>");
    let (_, paths) = b.api("/api/v1/paths/cams/1");
    assert!(!paths.to_string().contains("node-s3cret"), "{paths}");
    assert!(!b.log().contains("node-s3cret"), "the secret was logged");
}

#[test]
fn an_edge_keeps_its_readers_through_a_graceful_restart_and_a_takeover_moves_the_owner() {
    use crate::supervisor::{wait_restart, worker_pid};
    let redis = Redis::start();
    let takeover = "[paths.\"live/t\"]\noverride_publisher = true\n[paths.\"live/**\"]\n";
    let a = node(&redis, "move", "a", false, takeover);
    let b = node(&redis, "move", "b", true, takeover);
    let _publisher = Publisher::start(&a.url("live/h"), "tcp");
    a.wait_path_ready("live/h");
    let mut reader = describe_and_play(&b, "live/h");
    let before = crate::raw::read_rtp_seqs(&mut reader, 0, Duration::from_secs(1));
    assert!(!before.is_empty());
    // B restarts gracefully: its reader stays on the same connection and media goes on, B
    // pulling A again from the new worker.
    let old = worker_pid(&b);
    b.signal(libc::SIGUSR2);
    wait_restart(&b, old, 0);
    let after = crate::raw::read_rtp_seqs(&mut reader, 0, Duration::from_secs(6));
    assert!(
        after.len() > 50,
        "{} packets after B's restart\n{}",
        after.len(),
        b.log()
    );
    let (_, p) = b.api("/api/v1/paths/live/h");
    assert_eq!(p["source"]["kind"], "pull", "{p}");
    assert_eq!(
        readers_of(&a, "live/h"),
        1,
        "{}",
        a.api("/api/v1/paths/live/h").1
    );
    assert_eq!(
        redis.owner("live/h"),
        "a",
        "the edge must not own what it pulls"
    );
    // override_publisher across nodes: a publisher on B takes live/t from A's, whose
    // connection A closes when it sees the claim gone.
    let record = "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record";
    let (mut first, _) = crate::raw::raw_publish(&a, "live/t", H264_SDP, record);
    assert!(wait_until(Duration::from_secs(5), || redis.owner("live/t") == "a"));
    let (_second, _) = crate::raw::raw_publish(&b, "live/t", H264_SDP, record);
    assert_eq!(redis.owner("live/t"), "b");
    assert!(
        first.closed_within(Duration::from_secs(5)),
        "A kept a publisher whose path B took over"
    );
    assert!(wait_until(Duration::from_secs(3), || a
        .api("/api/v1/paths/live/t")
        .0
        == 404));
}

#[test]
fn readers_on_an_edge_follow_the_path_to_its_new_owner_within_their_grace() {
    let redis = Redis::start();
    let grace = "[paths.\"live/**\"]\npublisher_grace_secs = 20\n";
    let a = node(&redis, "follow", "a", false, grace);
    let b = node(&redis, "follow", "b", false, grace);
    let c = node(&redis, "follow", "c", false, grace);
    let mut first = Publisher::start(&a.url("live/f"), "tcp");
    a.wait_path_ready("live/f");
    let mut reader = describe_and_play(&b, "live/f");
    let before = crate::raw::read_rtp_seqs(&mut reader, 0, Duration::from_secs(1));
    assert!(!before.is_empty());
    // The camera leaves A and comes back on C: B's reader waits, then plays on from C.
    first.kill();
    assert!(wait_until(Duration::from_secs(5), || redis
        .owner("live/f")
        .is_empty()));
    let _second = Publisher::start(&c.url("live/f"), "tcp");
    c.wait_path_ready("live/f");
    assert_eq!(redis.owner("live/f"), "c");
    let resumed = wait_until(Duration::from_secs(15), || {
        !crate::raw::read_rtp_seqs(&mut reader, 0, Duration::from_millis(500)).is_empty()
    });
    assert!(
        resumed,
        "B's reader got nothing from the new owner\n{}",
        b.log()
    );
    let after = crate::raw::read_rtp_seqs(&mut reader, 0, Duration::from_secs(2));
    assert!(after.len() > 40, "{} packets after the move", after.len());
    // One stream to the reader: sequence numbers go on from where A's left off.
    assert!(
        after.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "gaps after the move"
    );
    let (_, p) = b.api("/api/v1/paths/live/f");
    assert!(
        p["source"]["url"]
            .as_str()
            .unwrap_or_default()
            .contains(&c.rtsp_port.to_string()),
        "{p}"
    );
}
