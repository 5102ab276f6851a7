//! What /proc says about a measured process: CPU time, resident memory, its
//! tasks. Parsing is pure (tested); reading and sampling are thin wrappers.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::herdtrace_src::procstat::ProcStat;

/// A `kB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in kB.
pub fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let n = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(n)
    })
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no memory preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Nanoseconds on CPU, the first field of `/proc/PID/task/TID/schedstat`.
pub fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// CPU seconds the process used so far; `None` once it is gone. The
/// scheduler's nanosecond counts of its threads are preferred: utime+stime
/// move in clock ticks (10 ms), too coarse for a short run.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let ticks =
        ProcStat::read(Path::new("/proc"), pid).ok()?.cpu_ticks() as f64 / clock_ticks_per_s();
    let mut ns = 0u64;
    let mut threads = 0;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            let text = std::fs::read_to_string(entry.path().join("schedstat")).unwrap_or_default();
            if let Some(n) = parse_schedstat_ns(&text) {
                ns += n;
                threads += 1;
            }
        }
    }
    Some(if threads > 0 { ns as f64 / 1e9 } else { ticks })
}

/// (VmRSS, VmHWM) in kB; `None` once the process is gone.
pub fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((
        parse_status_kb(&status, "VmRSS")?,
        parse_status_kb(&status, "VmHWM")?,
    ))
}

/// Thread ids of `pid` and of every descendant process (a server's workers).
pub fn tree_tids(pid: u32) -> Vec<u32> {
    let proc_root = Path::new("/proc");
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(proc_root) {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Ok(stat) = ProcStat::read(proc_root, p) {
                parents.push((p, stat.ppid));
            }
        }
    }
    let mut tids = Vec::new();
    for p in descendants(pid, &parents) {
        if let Ok(dir) = std::fs::read_dir(proc_root.join(p.to_string()).join("task")) {
            tids.extend(
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())),
            );
        }
    }
    tids.sort_unstable();
    tids
}

/// `root` and every process below it, given (pid, ppid) pairs.
pub fn descendants(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(
            parents
                .iter()
                .filter(|&&(c, pp)| pp == p && c != p && !out.contains(&c))
                .map(|&(c, _)| c)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    out
}

/// One memory sample: seconds since sampling started, VmRSS in kB.
pub type Sample = (f64, u64);

/// Samples a process's VmRSS on a thread until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(Vec<Sample>, u64)>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut samples = Vec::new();
            let mut hwm = 0;
            let mut next = t0;
            while !flag.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    next += every;
                    match memory_kb(pid) {
                        Some((rss, h)) => {
                            samples.push((t0.elapsed().as_secs_f64(), rss));
                            hwm = hwm.max(h);
                        }
                        None => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (samples, hwm)
        });
        Self { stop, handle }
    }

    /// The samples and the highest VmHWM seen.
    pub fn finish(self) -> (Vec<Sample>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_first_field() {
        assert_eq!(parse_schedstat_ns("564839 120 7\n"), Some(564_839));
        assert_eq!(parse_schedstat_ns(""), None);
        assert_eq!(parse_schedstat_ns("x 1 2"), None);
    }

    #[test]
    fn status_kb_fields() {
        let s = "Name:\therdtrace\nVmHWM:\t   20480 kB\nVmRSS:\t   18432 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kb(s, "VmRSS"), Some(18432));
        assert_eq!(parse_status_kb(s, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kb(s, "VmSwap"), None);
        assert_eq!(parse_status_kb(s, "Threads"), None, "not a kB field");
        assert_eq!(parse_status_kb("VmRSSx:\t1 kB\n", "VmRSS"), None);
    }

    #[test]
    fn descendants_walk_the_tree_once() {
        let parents = [(2, 1), (3, 2), (4, 2), (5, 9), (6, 3), (1, 0)];
        let mut d = descendants(2, &parents);
        d.sort_unstable();
        assert_eq!(d, [2, 3, 4, 6]);
        assert_eq!(descendants(7, &parents), [7]);
        // A self-parented entry (pid 1 in some namespaces) does not loop.
        assert_eq!(descendants(1, &[(1, 1)]), [1]);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        let (rss, hwm) = memory_kb(me).expect("own status");
        assert!(rss > 0 && hwm >= rss);
        assert!(
            tree_tids(me).contains(&me),
            "the main thread's tid is the pid"
        );
        let s = RssSampler::start(me, Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(100));
        let (samples, hwm) = s.finish();
        assert!(samples.len() >= 2, "{samples:?}");
        assert!(hwm > 0);
    }
}
