//! Whether /proc shows the pids the kernel reports. The programs see a
//! task's global pid (the initial PID namespace's); /proc shows the pids of
//! the namespace it was mounted in. herdtrace run inside a container with its
//! own PID namespace and /proc (`docker run` without `--pid=host`) would
//! put the container's pids into the traced set, match no task, and report
//! connections that woke nobody: refused with the reason instead.
use std::{fs, os::unix::fs::MetadataExt};

/// The initial PID namespace's inode (`PROC_PID_INIT_INO`, fixed since 3.8).
pub const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

/// How many pids the `NSpid:` line of a `/proc/PID/status` lists: one per
/// PID namespace from /proc's down to the process's own (None before 4.1).
pub fn nspid_levels(status: &str) -> Option<usize> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    Some(line.split_whitespace().count())
}

/// The problem, if /proc's PID namespace is not the initial one.
/// `proc_ns`: the namespace of /proc's pid 1 (`/proc/1/ns/pid`), which is
/// the init of the namespace /proc was mounted for: that decides, also for
/// a namespace nested in a container's, whose /proc is the container's
/// (NSpid then lists more than one level). Without it (unreadable), the
/// process's own namespace (`own_ns`, `/proc/self/ns/pid`) and its NSpid
/// `levels` are used: with more than one level /proc belongs to an ancestor
/// namespace, taken as the host's.
pub fn classify(
    proc_ns: Option<u64>,
    own_ns: Option<u64>,
    levels: Option<usize>,
) -> Option<String> {
    let ns = match proc_ns {
        Some(ns) => ns,
        None => {
            let ns = own_ns?;
            if levels.unwrap_or(1) > 1 {
                return None;
            }
            ns
        }
    };
    (ns != PROC_PID_INIT_INO).then(|| {
        format!(
            "/proc shows the pids of PID namespace pid:[{ns}], not the host's, but the kernel \
             reports host pids, so no traced task would match: run herdtrace in the host's PID \
             namespace (docker run --pid=host, Kubernetes hostPID: true)"
        )
    })
}

/// [`classify`] for this process.
pub fn pid_namespace_problem() -> Option<String> {
    let ns_of = |path: &str| fs::metadata(path).ok().map(|m| m.ino());
    let levels = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| nspid_levels(&s));
    classify(ns_of("/proc/1/ns/pid"), ns_of("/proc/self/ns/pid"), levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_lines() {
        assert_eq!(nspid_levels("Name:\tx\nNSpid:\t4242\n"), Some(1));
        assert_eq!(nspid_levels("NSpid:\t10218\t3\nNSpgid:\t1\n"), Some(2));
        assert_eq!(nspid_levels("Name:\tx\n"), None);
    }

    #[test]
    fn only_a_proc_of_another_namespace_is_a_problem() {
        const CONTAINER: u64 = 4026532179;
        const NESTED: u64 = 4026532300;
        // The host, and a container that sees the host's /proc.
        assert_eq!(
            classify(Some(PROC_PID_INIT_INO), Some(PROC_PID_INIT_INO), Some(1)),
            None
        );
        assert_eq!(
            classify(Some(PROC_PID_INIT_INO), Some(CONTAINER), Some(2)),
            None
        );
        // A container with its own /proc.
        let p = classify(Some(CONTAINER), Some(CONTAINER), Some(1)).expect("problem");
        assert!(p.starts_with("/proc shows the pids of PID namespace pid:[4026532179]"));
        assert!(p.ends_with("(docker run --pid=host, Kubernetes hostPID: true)"));
        // A namespace nested in a container's, seeing the container's /proc:
        // two NSpid levels, but /proc's pid 1 is the container's init.
        let p = classify(Some(CONTAINER), Some(NESTED), Some(2)).expect("problem");
        assert!(p.starts_with("/proc shows the pids of PID namespace pid:[4026532179]"));
        // /proc/1 unreadable: the own namespace and NSpid decide.
        assert_eq!(classify(None, Some(PROC_PID_INIT_INO), Some(1)), None);
        assert_eq!(classify(None, Some(CONTAINER), Some(2)), None);
        assert_eq!(classify(None, None, Some(1)), None);
        assert!(classify(None, Some(CONTAINER), Some(1)).is_some());
        // Before NSpid (4.1), one level is assumed.
        assert!(classify(None, Some(CONTAINER), None).is_some());
    }
}
