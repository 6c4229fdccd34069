//! The measured server's cost, read from /proc: CPU seconds and resident memory of its whole
//! process tree (a Finch supervisor and its workers; restarted workers count through the
//! parent's reaped-children times).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// utime, stime, cutime and cstime of a process (proc(5) fields 14-17), and its parent.
pub fn stat(pid: u32) -> Option<(u32, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ppid: u32 = f.get(1)?.parse().ok()?;
    let mut ticks = 0.0;
    for i in 11..=14 {
        ticks += f.get(i)?.parse::<f64>().ok()?;
    }
    Some((ppid, ticks))
}

/// `root` and every live process below it.
pub fn tree(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, _)) = stat(pid) {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while let Some(&parent) = tree.get(i) {
        for (pid, ppid) in &parents {
            if *ppid == parent && !tree.contains(pid) {
                tree.push(*pid);
            }
        }
        i += 1;
    }
    tree
}

/// CPU seconds used by `root` and every process below it. A process's own time plus the time of
/// the children it has reaped (cutime/cstime) makes a worker that exited during the run count
/// too, through its supervisor.
pub fn tree_cpu_secs(root: u32) -> Option<f64> {
    stat(root)?;
    let ticks: f64 = tree(root)
        .into_iter()
        .filter_map(|p| stat(p).map(|(_, t)| t))
        .sum();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// CPU seconds this process has used.
pub fn own_cpu_secs() -> Option<f64> {
    let (_, ticks) = stat(std::process::id())?;
    // SAFETY: as above.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// Resident memory of `root`'s tree, in KiB (VmRSS of each process).
pub fn tree_rss_kib(root: u32) -> Option<u64> {
    stat(root)?;
    Some(tree(root).into_iter().filter_map(rss_kib).sum())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples the tree's resident memory every 200 ms on a thread of its own, keeping the peak.
pub struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    /// Starts sampling `root`'s tree.
    pub fn start(root: u32) -> RssPeak {
        let peak = Arc::new(AtomicU64::new(tree_rss_kib(root).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kib) = tree_rss_kib(root) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        RssPeak {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak seen, in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_cpu_of_a_live_child_counts_towards_its_parent_s_tree() {
        // SAFETY: sysconf only reads a system constant.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let secs = |pid: u32| stat(pid).map(|(_, t)| t / hz).unwrap();
        // A child (a worker, say) that burns some CPU and stays alive.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 30",
            ])
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        while secs(pid) < 0.2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let child_cpu = secs(pid);
        let tree = tree_cpu_secs(std::process::id()).unwrap();
        let own = secs(std::process::id());
        let rss = tree_rss_kib(std::process::id()).unwrap();
        let own_rss = rss_kib(std::process::id()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(child_cpu >= 0.2, "the child burnt {child_cpu} s");
        assert!(
            tree - own >= child_cpu - 0.02,
            "tree {tree}, own {own}, child {child_cpu}"
        );
        assert!(
            rss > own_rss,
            "the child's memory counts: {rss} vs {own_rss}"
        );
    }
}
