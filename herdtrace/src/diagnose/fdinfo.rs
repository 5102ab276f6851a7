//! `/proc/PID/fdinfo/FD` of an epoll file: one `tfd:` line per watched file
//! (kernel `ep_show_fdinfo`:
//! `tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x`); of an
//! io_uring instance: the requests armed on a poll.
use serde::Serialize;

/// What `/proc/PID/fd/N` links to for an io_uring instance.
pub const RING_LINK: &str = "anon_inode:[io_uring]";

/// `IORING_OP_ACCEPT`, as an io_uring's fdinfo prints a request's opcode.
const ACCEPT_OP: &str = "op=13,";

/// Accept requests waiting in a ring, from its fdinfo: the `PollList:`
/// section lists each armed request as `  op=N, task_works=M` (5.10 to 7.x).
pub fn uring_accepts(fdinfo: &str) -> usize {
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

pub const EPOLLEXCLUSIVE: u32 = 1 << 28;
pub const EPOLLWAKEUP: u32 = 1 << 29;
pub const EPOLLONESHOT: u32 = 1 << 30;
pub const EPOLLET: u32 = 1 << 31;

/// The flags that decide how many waiters a ready listener wakes.
const NAMED_FLAGS: [(u32, &str); 4] = [
    (EPOLLEXCLUSIVE, "EPOLLEXCLUSIVE"),
    (EPOLLET, "EPOLLET"),
    (EPOLLONESHOT, "EPOLLONESHOT"),
    (EPOLLWAKEUP, "EPOLLWAKEUP"),
];

/// One file watched by an epoll instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Watch {
    /// The fd number in the process that called `epoll_ctl` (not
    /// necessarily the reader of this fdinfo).
    pub tfd: i32,
    /// The registered event mask, flags included.
    pub events: u32,
    /// The user data registered with the fd.
    pub data: u64,
    /// Inode of the watched file: for a socket, the inode in /proc/net/tcp.
    pub ino: u64,
    /// Device of the watched file (sockfs for a socket).
    pub sdev: u32,
}

impl Watch {
    #[cfg(test)]
    pub fn exclusive(&self) -> bool {
        self.events & EPOLLEXCLUSIVE != 0
    }

    #[cfg(test)]
    pub fn edge_triggered(&self) -> bool {
        self.events & EPOLLET != 0
    }

    #[cfg(test)]
    pub fn oneshot(&self) -> bool {
        self.events & EPOLLONESHOT != 0
    }

    /// Names of the wake-related flags set, e.g. `["EPOLLEXCLUSIVE"]`.
    pub fn flag_names(&self) -> Vec<&'static str> {
        flag_names(self.events)
    }
}

pub fn flag_names(events: u32) -> Vec<&'static str> {
    NAMED_FLAGS
        .iter()
        .filter(|(bit, _)| events & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Parses one `tfd:` line; None for any other line or a malformed one.
pub fn parse_watch_line(line: &str) -> Option<Watch> {
    if !line.starts_with("tfd:") {
        return None;
    }
    // Values follow "key:" either after spaces (tfd, events, data) or
    // directly (pos, ino, sdev).
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let mut tokens = line.split_whitespace();
    while let Some(tok) = tokens.next() {
        let (key, value) = tok.split_once(':')?;
        let value = if value.is_empty() {
            tokens.next()?
        } else {
            value
        };
        fields.push((key, value));
    }
    let get = |k: &str| fields.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    Some(Watch {
        tfd: get("tfd")?.parse().ok()?,
        events: u32::from_str_radix(get("events")?, 16).ok()?,
        data: get("data").map_or(Some(0), |d| u64::from_str_radix(d, 16).ok())?,
        ino: u64::from_str_radix(get("ino")?, 16).ok()?,
        sdev: get("sdev").map_or(Some(0), |d| u32::from_str_radix(d, 16).ok())?,
    })
}

/// Every watched file listed in an epoll fdinfo, plus the number of `tfd:`
/// lines that could not be read (a format this parser does not know).
pub fn parse_epoll_fdinfo(text: &str) -> (Vec<Watch>, usize) {
    let mut watches = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| l.starts_with("tfd:")) {
        match parse_watch_line(line) {
            Some(w) => watches.push(w),
            None => bad += 1,
        }
    }
    (watches, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An nginx 1.22 worker's epoll, saved from this host (tests/fixtures/proc/nginx-default).
    const NGINX_WORKER: &str = "pos:\t0
flags:\t02
mnt_id:\t17
ino:\t18
tfd:        8 events: 80000019 data:     55b45ea2d340  pos:0 ino:12 sdev:10
tfd:        6 events:     2019 data:     7fb582e7a100  pos:0 ino:77d65e sdev:9
tfd:        5 events: 10000019 data:     7fb582e7a010  pos:0 ino:77d65c sdev:9
";

    #[test]
    fn parses_an_nginx_worker_epoll() {
        let (w, bad) = parse_epoll_fdinfo(NGINX_WORKER);
        assert_eq!(bad, 0);
        assert_eq!(w.len(), 3, "the header's own ino: line is not a watch");
        assert_eq!(
            w[2],
            Watch {
                tfd: 5,
                events: 0x1000_0019,
                data: 0x7fb5_82e7_a010,
                ino: 7_853_660,
                sdev: 9
            }
        );
        assert!(w[2].exclusive() && !w[2].edge_triggered() && !w[2].oneshot());
        assert!(w[0].edge_triggered() && !w[0].exclusive());
        assert_eq!(w[0].ino, 0x12);
        assert_eq!(w[1].events, 0x2019);
        assert!(w[1].flag_names().is_empty());
    }

    #[test]
    fn names_flags() {
        assert_eq!(flag_names(0x19), Vec::<&str>::new());
        assert_eq!(
            flag_names(EPOLLEXCLUSIVE | libc::EPOLLIN as u32),
            vec!["EPOLLEXCLUSIVE"]
        );
        assert_eq!(
            flag_names(EPOLLET | EPOLLONESHOT | EPOLLWAKEUP | EPOLLEXCLUSIVE),
            vec!["EPOLLEXCLUSIVE", "EPOLLET", "EPOLLONESHOT", "EPOLLWAKEUP"]
        );
    }

    #[test]
    fn older_lines_without_pos_ino_sdev_fields_are_counted_bad() {
        // Without ino the watch cannot be matched to a socket.
        let (w, bad) = parse_epoll_fdinfo("tfd:        5 events:       19 data: 0\n");
        assert!(w.is_empty());
        assert_eq!(bad, 1);
    }

    #[test]
    fn rejects_malformed_lines() {
        for line in [
            "",
            "ino:\t18",
            "tfd: x events: 19 data: 0 pos:0 ino:1 sdev:9",
            "tfd: 5 events: zz data: 0 pos:0 ino:1 sdev:9",
            "tfd: 5 events: 19 data: 0 pos:0 ino:q sdev:9",
            "tfd: 5 events: 19 data: 0 pos:0 ino:1 sdev:9 stray",
            "tfd: 5 events:",
        ] {
            assert_eq!(parse_watch_line(line), None, "{line:?}");
        }
        // data and sdev are optional; tfd, events and ino are not.
        assert_eq!(
            parse_watch_line("tfd: 7 events: 1 ino:ff"),
            Some(Watch {
                tfd: 7,
                events: 1,
                data: 0,
                ino: 255,
                sdev: 0
            })
        );
    }

    /// 6.18's fdinfo of a ring with one accept armed (abridged).
    const RING_ONE_ACCEPT: &str = "pos:\t0\nSqMask:\t0x3f\nSqHead:\t251\nUserFiles:\t0\n\
                                   PollList:\n  op=13, task_works=0\nCqOverflowList:\n\
                                   NAPI:\tdisabled\n";

    #[test]
    fn uring_accepts_are_counted_in_the_poll_list_only() {
        assert_eq!(uring_accepts(RING_ONE_ACCEPT), 1);
        let two = "PollList:\n  op=13, task_works=0\n  op=6, task_works=0\n  \
                   op=13, task_works=1\nCqOverflowList:\n  op=13, task_works=0\n";
        assert_eq!(uring_accepts(two), 2);
        // A poll (op 6) or a recv (27) is not an accept; op=130 is not 13.
        assert_eq!(uring_accepts("PollList:\n  op=27, task_works=0\n"), 0);
        assert_eq!(uring_accepts("PollList:\n  op=130, task_works=0\n"), 0);
        assert_eq!(uring_accepts(""), 0);
        assert_eq!(uring_accepts("pos:\t0\nflags:\t02\n"), 0);
    }

    /// The layout above is the running kernel's: a ring of ours shows its
    /// armed accept.
    #[test]
    fn a_live_ring_shows_its_armed_accept() {
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
        let ring_fd = ring.fd();
        let link = std::fs::read_link(format!("/proc/self/fd/{ring_fd}")).expect("fd link");
        assert_eq!(link.to_string_lossy(), RING_LINK);
        let fdinfo =
            || std::fs::read_to_string(format!("/proc/self/fdinfo/{ring_fd}")).expect("fdinfo");
        assert_eq!(uring_accepts(&fdinfo()), 0);
        let l = sys::listener(0, 16, false, false, false).expect("listen");
        ring.push(&uring::accept_sqe(l.as_raw_fd(), 7, false))
            .expect("push");
        ring.enter(0).expect("submit");
        assert_eq!(uring_accepts(&fdinfo()), 1);
    }
}
