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

/// The problem, if /proc is this process's own PID namespace and that is
/// not the initial one. `own_ns`: the inode of `/proc/self/ns/pid`.
/// With more than one level /proc belongs to an ancestor namespace (a
/// container that sees the host's /proc), whose pids are taken as global.
pub fn classify(own_ns: Option<u64>, levels: Option<usize>) -> Option<String> {
    let ns = own_ns?;
    if ns == PROC_PID_INIT_INO || levels.unwrap_or(1) > 1 {
        return None;
    }
    Some(format!(
        "/proc shows the pids of PID namespace pid:[{ns}], not the host's, but the kernel \
         reports host pids, so no traced task would match: run herdtrace in the host's PID \
         namespace (docker run --pid=host, Kubernetes hostPID: true)"
    ))
}

/// [`classify`] for this process.
pub fn pid_namespace_problem() -> Option<String> {
    let own_ns = fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino());
    let levels = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| nspid_levels(&s));
    classify(own_ns, levels)
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
    fn only_a_private_proc_of_another_namespace_is_a_problem() {
        // The host.
        assert_eq!(classify(Some(PROC_PID_INIT_INO), Some(1)), None);
        // A container seeing the host's /proc (two levels), or an old kernel.
        assert_eq!(classify(Some(4026532179), Some(2)), None);
        assert_eq!(classify(None, Some(1)), None);
        // A container with its own /proc.
        let p = classify(Some(4026532179), Some(1)).expect("problem");
        assert!(p.starts_with("/proc shows the pids of PID namespace pid:[4026532179]"));
        assert!(p.ends_with("(docker run --pid=host, Kubernetes hostPID: true)"));
        // Before NSpid (4.1), one level is assumed.
        assert!(classify(Some(4026532179), None).is_some());
    }
}
