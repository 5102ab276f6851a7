//! io_uring accepts already armed when tracing starts. The tracepoint
//! backend tells an io_uring completion that carries no request (every
//! completion before 5.19, a multishot accept's but the last after) by its
//! submission, which for these happened before the programs were attached:
//! their connections then count as not accepted. /proc shows them, so the
//! operator is told at the start instead of puzzling over the summary.
use std::fs;
use std::path::Path;

use crate::backend::Choice;

/// `IORING_OP_ACCEPT`, as `fdinfo` prints a request's opcode.
const ACCEPT_OP: &str = "op=13,";

/// Accept requests waiting in a ring, from its `/proc/PID/fdinfo/FD`: the
/// `PollList:` section lists each armed request as `  op=N, task_works=M`
/// (5.10 to 7.x).
pub fn accepts_in_fdinfo(fdinfo: &str) -> usize {
    let mut in_poll_list = false;
    let mut n = 0;
    for line in fdinfo.lines() {
        if line.starts_with("PollList:") {
            in_poll_list = true;
        } else if !line.starts_with(char::is_whitespace) {
            in_poll_list = false;
        } else if in_poll_list && line.trim_start().starts_with(ACCEPT_OP) {
            n += 1;
        }
    }
    n
}

/// Armed io_uring accepts per process of `pids` (those with any).
pub fn armed_accepts(proc_root: &Path, pids: &[u32]) -> Vec<(u32, usize)> {
    pids.iter()
        .filter_map(|&pid| {
            let n = rings(proc_root, pid)
                .into_iter()
                .filter_map(|fd| {
                    let path = proc_root.join(format!("{pid}/fdinfo/{fd}"));
                    fs::read_to_string(path).ok()
                })
                .map(|text| accepts_in_fdinfo(&text))
                .sum::<usize>();
            (n > 0).then_some((pid, n))
        })
        .collect()
}

/// What `/proc/PID/fd/N` links to for an io_uring instance.
pub const RING_LINK: &str = "anon_inode:[io_uring]";

/// The fds of `pid` that are io_uring instances (none if it cannot be read).
fn rings(proc_root: &Path, pid: u32) -> Vec<i32> {
    crate::diagnose::procfs::fd_entries(&proc_root.join(format!("{pid}/fd")))
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, target)| target == RING_LINK)
        .map(|(fd, _)| fd)
        .collect()
}

/// The start-time warning for `armed` (from [`armed_accepts`]);
/// `by_request`: completions name their request on this kernel, so a
/// single-shot accept is seen.
pub fn warning(armed: &[(u32, usize)], by_request: bool) -> Option<String> {
    if armed.is_empty() {
        return None;
    }
    let total: usize = armed.iter().map(|(_, n)| n).sum();
    let pids: Vec<String> = armed.iter().map(|(p, _)| p.to_string()).collect();
    let who = match pids.as_slice() {
        [one] => format!("process {one} has"),
        many => format!("processes {} have", many.join(", ")),
    };
    let (what, it, it_is, its) = if total == 1 {
        ("1 io_uring accept".to_owned(), "it", "it is", "its")
    } else {
        (
            format!("{total} io_uring accepts"),
            "them",
            "they are",
            "their",
        )
    };
    let missed = if by_request {
        format!(
            "if {it_is} multishot (IORING_ACCEPT_MULTISHOT), {its} connections are not seen \
             until the server submits {it} again"
        )
    } else {
        format!(
            "on this kernel the next connection of each is not seen, nor, for a multishot \
             one (IORING_ACCEPT_MULTISHOT), any until the server submits {it} again"
        )
    };
    Some(format!(
        "{who} {what} armed since before tracing began: {missed} (they count as not \
         accepted); a reload that gives the workers new rings makes every accept seen"
    ))
}

/// The connections a tracer's start-up [`warning`] (in its standard
/// error) said it would not see: one per armed accept on kernels whose
/// completions do not name the request; 0 otherwise (a multishot accept's
/// are not counted: how many it takes is not known).
pub fn unseen_by_warning(tracer_stderr: &str) -> u64 {
    tracer_stderr
        .lines()
        .filter(|l| l.contains("armed since before tracing began: on this kernel"))
        .filter_map(|l| {
            let before = &l[..l.find(" io_uring accept")?];
            before.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum()
}

/// io_uring accepts armed before the programs were: the tracepoint
/// backend tells some of their completions only by a submission it did not
/// see (the kprobe and fentry backends see every accept in `inet_accept`).
pub struct ArmedUring {
    armed: Vec<(u32, usize)>,
    /// Completions name their request (5.19+): a single-shot accept is seen.
    by_request: bool,
}

impl ArmedUring {
    pub fn at_start(choice: &Choice, pids: &[u32]) -> Option<ArmedUring> {
        let point = choice.plan.point("io-uring-accept")?;
        if !point.attached() {
            return None;
        }
        let armed = armed_accepts(Path::new("/proc"), pids);
        (!armed.is_empty()).then(|| ArmedUring {
            armed,
            by_request: point
                .used
                .iter()
                .any(|a| a.program == "tp_uring_complete_req"),
        })
    }

    /// Said at the start where each armed accept's next connection is
    /// certainly missed.
    pub fn warning_at_start(&self) -> Option<String> {
        (!self.by_request)
            .then(|| warning(&self.armed, false))
            .flatten()
    }

    /// Said after the summary where only a multishot accept is missed, and
    /// connections were indeed left unaccepted.
    pub fn warning_at_end(&self, unaccepted: u64) -> Option<String> {
        (self.by_request && unaccepted > 0)
            .then(|| warning(&self.armed, true))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 6.18's fdinfo of a ring with one accept armed (abridged).
    const ONE: &str = "pos:\t0\nSqMask:\t0x3f\nSqHead:\t251\nUserFiles:\t0\nPollList:\n  \
                       op=13, task_works=0\nCqOverflowList:\nNAPI:\tdisabled\n";

    #[test]
    fn accepts_are_counted_in_the_poll_list_only() {
        assert_eq!(accepts_in_fdinfo(ONE), 1);
        let two = "PollList:\n  op=13, task_works=0\n  op=6, task_works=0\n  \
                   op=13, task_works=1\nCqOverflowList:\n  op=13, task_works=0\n";
        assert_eq!(accepts_in_fdinfo(two), 2);
        // A poll (op 6) or a recv (27) is not an accept; op=130 is not 13.
        assert_eq!(accepts_in_fdinfo("PollList:\n  op=27, task_works=0\n"), 0);
        assert_eq!(accepts_in_fdinfo("PollList:\n  op=130, task_works=0\n"), 0);
        assert_eq!(accepts_in_fdinfo(""), 0);
        assert_eq!(accepts_in_fdinfo("pos:\t0\nflags:\t02\n"), 0);
    }

    #[test]
    fn the_warning_says_what_is_missed_on_each_kind_of_kernel() {
        assert_eq!(warning(&[], true), None);
        assert_eq!(
            warning(&[(5741, 1)], true).as_deref(),
            Some(
                "process 5741 has 1 io_uring accept armed since before tracing began: if it \
                 is multishot (IORING_ACCEPT_MULTISHOT), its connections are not seen until \
                 the server submits it again (they count as not accepted); a reload that \
                 gives the workers new rings makes every accept seen"
            )
        );
        assert_eq!(
            warning(&[(10, 2), (11, 1)], false).as_deref(),
            Some(
                "processes 10, 11 have 3 io_uring accepts armed since before tracing began: \
                 on this kernel the next connection of each is not seen, nor, for a \
                 multishot one (IORING_ACCEPT_MULTISHOT), any until the server submits them \
                 again (they count as not accepted); a reload that gives the workers new \
                 rings makes every accept seen"
            )
        );
    }

    #[test]
    fn the_unseen_connections_are_read_back_from_the_warning() {
        let old = warning(&[(10, 2), (11, 1)], false).expect("warning");
        assert_eq!(
            unseen_by_warning(&format!("herdtrace: warning: {old}\n")),
            3
        );
        let one = warning(&[(10, 1)], false).expect("warning");
        assert_eq!(
            unseen_by_warning(&format!("herdtrace: warning: {one}\n")),
            1
        );
        // Where completions name the request only multishot ones are missed.
        let new = warning(&[(10, 2)], true).expect("warning");
        assert_eq!(unseen_by_warning(&new), 0);
        assert_eq!(unseen_by_warning("herdtrace: backend tracepoint\n"), 0);
    }

    #[test]
    fn a_live_ring_with_an_accept_armed_is_found() {
        use crate::serve::{sys, uring};
        use std::os::fd::AsRawFd;
        let mut ring = match uring::Ring::new(4) {
            Ok(r) => r,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let me = std::process::id();
        let proc_root = Path::new("/proc");
        // Other tests of this binary may hold rings too: ours is read by its fd.
        let ring_fd = ring.fd();
        let fdinfo = || fs::read_to_string(format!("/proc/self/fdinfo/{ring_fd}")).expect("fdinfo");
        assert!(rings(proc_root, me).contains(&ring_fd));
        assert_eq!(accepts_in_fdinfo(&fdinfo()), 0);
        let l = sys::listener(0, 16, false, false, false).expect("listen");
        ring.push(&uring::accept_sqe(l.as_raw_fd(), 7))
            .expect("push");
        ring.enter(0).expect("submit");
        assert_eq!(accepts_in_fdinfo(&fdinfo()), 1);
        assert!(armed_accepts(proc_root, &[me])
            .iter()
            .any(|&(p, n)| p == me && n >= 1));
        assert_eq!(armed_accepts(Path::new("/nonexistent"), &[me]), Vec::new());
    }
}
