//! The peer measurement: bpftrace (Debian's 0.17, tracepoints only) running
//! the aggregate script users reach for today. It counts per task, in kernel
//! maps, what herdtrace reconstructs per connection: wakeups of the server's
//! tasks, accept successes and EAGAINs, epoll returns, connection arrivals.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::bail;

use super::bg::{Background, Finished};
use super::procfs;

/// bpftrace compiles with LLVM before attaching: allow for a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A predicate `(VAR == T1 || VAR == T2 ...)` over the task ids.
fn any_of(var: &str, tids: &[u32]) -> String {
    let terms: Vec<String> = tids.iter().map(|t| format!("{var} == {t}")).collect();
    format!("({})", terms.join(" || "))
}

/// The script for a server whose tasks are `tids`, listening on `port`.
/// Task ids are fixed when it starts: bpftrace has no "descendants" filter.
pub fn script(tids: &[u32], port: u16) -> String {
    let me = any_of("tid", tids);
    let woken = any_of("args->pid", tids);
    format!(
        "tracepoint:sched:sched_waking /{woken}/ {{ @woken[args->pid] = count(); }}\n\
         tracepoint:syscalls:sys_exit_accept4, tracepoint:syscalls:sys_exit_accept /{me}/ {{\n\
         \x20 if (args->ret >= 0) {{ @accepts[tid] = count(); }}\n\
         \x20 else if (args->ret == -11) {{ @eagain[tid] = count(); }}\n\
         }}\n\
         tracepoint:syscalls:sys_exit_epoll_wait, tracepoint:syscalls:sys_exit_epoll_pwait /{me}/ {{\n\
         \x20 if (args->ret == 0) {{ @empty_polls[tid] = count(); }} else {{ @polls[tid] = count(); }}\n\
         }}\n\
         tracepoint:sock:sk_data_ready /args->protocol == 6/ {{ @data_ready = count(); }}\n\
         tracepoint:sock:inet_sock_set_state /args->newstate == 1 && args->sport == {port}/ \
         {{ @established = count(); }}\n\
         interval:s:1 /@ready == 0/ {{ printf(\"{READY}\\n\"); @ready = 1; }}\n"
    )
}

/// Sums of each map bpftrace printed at exit: `@name[key]: n` and `@name: n`.
pub fn parse_maps(out: &str) -> BTreeMap<String, u64> {
    let mut maps = BTreeMap::new();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix('@') else {
            continue;
        };
        let name_end = rest.find(['[', ':']).unwrap_or(rest.len());
        let Some((_, value)) = rest.rsplit_once(": ") else {
            continue;
        };
        if let Ok(v) = value.trim().parse::<u64>() {
            *maps.entry(rest[..name_end].to_string()).or_insert(0) += v;
        }
    }
    maps
}

/// bpftrace prints "Attaching N probes..." before it attaches them; this
/// line comes from a 1 s interval probe, by when the others are attached.
const READY: &str = "bench-bpftrace-ready";

fn is_ready(line: &str) -> bool {
    line == READY
}

/// A running bpftrace.
pub struct Bpftrace {
    bg: Background,
    cpu_at_ready: f64,
}

impl Bpftrace {
    /// Attaches to the tasks of `server_pid` and its descendants.
    pub fn start(bpftrace: &Path, server_pid: u32, port: u16) -> anyhow::Result<Self> {
        let tids = procfs::tree_tids(server_pid);
        if tids.is_empty() {
            bail!("no tasks found for server pid {server_pid}");
        }
        let mut cmd = Command::new(bpftrace);
        cmd.arg("-e").arg(script(&tids, port));
        let bg = Background::start(&mut cmd, is_ready, READY_TIMEOUT, 0)?;
        let cpu_at_ready = procfs::cpu_seconds(bg.pid()).unwrap_or(0.0);
        Ok(Self { bg, cpu_at_ready })
    }

    pub fn cpu_since_ready(&self) -> f64 {
        procfs::cpu_seconds(self.bg.pid()).map_or(0.0, |c| c - self.cpu_at_ready)
    }

    /// Stops it and returns its map sums; fails unless it counted accepts
    /// (so a script that attached to nothing cannot pass as cheap).
    pub fn stop(self) -> anyhow::Result<(BTreeMap<String, u64>, Finished)> {
        let f = self.bg.stop()?;
        let maps = parse_maps(&f.stdout);
        if maps.get("accepts").copied().unwrap_or(0) == 0 {
            bail!(
                "bpftrace counted no accepts ({}): stdout {:?}, stderr {:?}",
                f.status,
                f.stdout.trim(),
                f.stderr.trim()
            );
        }
        Ok((maps, f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_filters_on_every_task_and_the_port() {
        let s = script(&[10, 11], 8080);
        assert!(s.contains(
            "tracepoint:sched:sched_waking /(args->pid == 10 || args->pid == 11)/ { @woken[args->pid] = count(); }"
        ));
        assert_eq!(s.matches("/(tid == 10 || tid == 11)/").count(), 2);
        assert!(s.contains("args->sport == 8080/"));
        assert!(s.contains("else if (args->ret == -11) { @eagain[tid] = count(); }"));
        // Braces balance: bpftrace would refuse the script otherwise.
        assert_eq!(s.matches('{').count(), s.matches('}').count());
    }

    #[test]
    fn maps_are_summed_per_name() {
        let out = "Attaching 7 probes...\n\n\n\
                   @accepts[4243]: 5000\n@accepts[4244]: 4990\n\n\
                   @data_ready: 40000\n@woken[4243]: 7\n@eagain[1]: x\nnot a map: 3\n";
        let m = parse_maps(out);
        assert_eq!(m.get("accepts"), Some(&9990));
        assert_eq!(m.get("data_ready"), Some(&40000));
        assert_eq!(m.get("woken"), Some(&7));
        assert_eq!(m.get("eagain"), None, "a non-number is not counted");
        assert_eq!(m.len(), 3);
        assert!(parse_maps("").is_empty());
    }

    #[test]
    fn ready_line_comes_from_the_interval_probe() {
        assert!(is_ready("bench-bpftrace-ready"));
        assert!(!is_ready("Attaching 7 probes..."));
        let s = script(&[1], 80);
        assert!(
            s.contains(
                "interval:s:1 /@ready == 0/ { printf(\"bench-bpftrace-ready\\n\"); @ready = 1; }"
            ),
            "{s}"
        );
    }
}
