//! The server's accept setup as /proc shows it, without probes: its
//! processes and threads, the TCP listening sockets they hold, each epoll
//! instance's watched files (from fdinfo) and what each thread is blocked in.
//!
//! Everything is read below a `proc_root`, so the tests run on saved trees
//! (tests/fixtures/proc/*). Whether two epoll fds are one instance (created
//! before fork, or a dup) is asked of a `SameFile` function: kcmp(2) on a
//! live system.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use super::fdinfo::{self, Watch};
use crate::procstat::ProcStat;
use crate::targets::{self, ListenSocket};

/// `/proc/PID/task/TID/syscall` numbers that mean "waiting for a connection".
#[cfg(target_arch = "x86_64")]
mod nr {
    pub const EPOLL_WAITS: &[i64] = &[232, 281, 441]; // epoll_wait, epoll_pwait, epoll_pwait2
    pub const ACCEPTS: &[i64] = &[43, 288]; // accept, accept4
    pub const SELECTS: &[i64] = &[23, 270]; // select, pselect6
    pub const POLLS: &[i64] = &[7, 271]; // poll, ppoll
    pub const FCNTL: i64 = 72;
    pub const FLOCK: i64 = 73;
    pub const SEMOPS: &[i64] = &[65, 220]; // semop, semtimedop
    pub const FUTEX: i64 = 202;
    pub const IO_URING_ENTER: i64 = 426;
}
#[cfg(target_arch = "aarch64")]
mod nr {
    pub const EPOLL_WAITS: &[i64] = &[22, 441]; // epoll_pwait, epoll_pwait2
    pub const ACCEPTS: &[i64] = &[202, 242]; // accept, accept4
    pub const SELECTS: &[i64] = &[72]; // pselect6
    pub const POLLS: &[i64] = &[73]; // ppoll
    pub const FCNTL: i64 = 25;
    pub const FLOCK: i64 = 32;
    pub const SEMOPS: &[i64] = &[193, 192]; // semop, semtimedop
    pub const FUTEX: i64 = 98;
    pub const IO_URING_ENTER: i64 = 426;
}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod nr {
    pub const EPOLL_WAITS: &[i64] = &[];
    pub const ACCEPTS: &[i64] = &[];
    pub const SELECTS: &[i64] = &[];
    pub const POLLS: &[i64] = &[];
    pub const FCNTL: i64 = -2;
    pub const FLOCK: i64 = -2;
    pub const SEMOPS: &[i64] = &[];
    pub const FUTEX: i64 = -2;
    pub const IO_URING_ENTER: i64 = -2;
}

/// fcntl commands that wait for a record lock: F_SETLKW, F_OFD_SETLKW.
const FCNTL_LOCK_WAITS: &[i64] = &[7, 38];
/// futex operations that wait (FUTEX_WAIT, FUTEX_LOCK_PI, FUTEX_WAIT_BITSET,
/// FUTEX_LOCK_PI2); without FUTEX_PRIVATE_FLAG the futex is in memory shared
/// between processes (a process-shared pthread mutex).
const FUTEX_WAITS: &[i64] = &[0, 6, 9, 13];
const FUTEX_PRIVATE_FLAG: i64 = 128;

/// Is system call `nr` with these first two arguments a wait for a lock
/// shared between processes (an accept mutex: httpd's `Mutex mpm-accept`,
/// uWSGI's `--thunder-lock`)? fcntl(F_SETLKW), flock, System V semaphores,
/// and futex waits that are not process-private.
fn is_shared_lock_wait(nr: i64, arg1: Option<i64>) -> bool {
    if nr == nr::FCNTL {
        return arg1.is_some_and(|cmd| FCNTL_LOCK_WAITS.contains(&cmd));
    }
    if nr == nr::FUTEX {
        return arg1
            .is_some_and(|op| op & FUTEX_PRIVATE_FLAG == 0 && FUTEX_WAITS.contains(&(op & 127)));
    }
    nr == nr::FLOCK || nr::SEMOPS.contains(&nr)
}

/// Environment variables kept from /proc/PID/environ: the ones that change
/// how a recognised server shares connections.
pub const ENV_KEPT: &[&str] = &["NODE_CLUSTER_SCHED_POLICY"];

/// What a thread was doing when /proc was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Blocked {
    /// Asleep in epoll_wait/epoll_pwait(2) on this epoll fd.
    EpollWait { epfd: i32 },
    /// Asleep in accept/accept4 on this fd.
    Accept { fd: i32 },
    /// Asleep in select/pselect6 over fds below `nfds` (gunicorn's sync
    /// worker): a listening fd below `nfds` may be among them.
    Select { nfds: i32 },
    /// Asleep in poll/ppoll (which fds is not visible in /proc).
    Poll,
    /// In io_uring_enter, waiting for completions of its ring (an armed
    /// `IORING_OP_ACCEPT` among them, perhaps).
    Uring,
    /// Waiting for a lock shared between processes (see
    /// `is_shared_lock_wait`): a worker waiting for its turn at an accept
    /// mutex.
    Lock { nr: i64 },
    /// In another system call.
    Other { nr: i64 },
    /// Running in user space (no system call to show).
    Running,
    /// Not readable (permissions, exited, unknown format).
    Unknown,
}

/// Parses `/proc/PID/task/TID/syscall`: `NR ARG0 ARG1 ... SP PC`, `-1 SP PC`
/// (not in a system call, blocked) or `running`.
pub fn parse_syscall(text: &str) -> Blocked {
    let mut f = text.split_whitespace();
    let Some(first) = f.next() else {
        return Blocked::Unknown;
    };
    if first == "running" {
        return Blocked::Running;
    }
    let Ok(nr) = first.parse::<i64>() else {
        return Blocked::Unknown;
    };
    let mut arg = || {
        f.next()
            .and_then(|a| i64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
    };
    let arg0 = arg().and_then(|a| i32::try_from(a).ok());
    let arg1 = arg();
    match arg0 {
        Some(fd) if nr::EPOLL_WAITS.contains(&nr) => Blocked::EpollWait { epfd: fd },
        Some(fd) if nr::ACCEPTS.contains(&nr) => Blocked::Accept { fd },
        Some(nfds) if nr::SELECTS.contains(&nr) => Blocked::Select { nfds },
        _ if nr::POLLS.contains(&nr) => Blocked::Poll,
        _ if nr == nr::IO_URING_ENTER => Blocked::Uring,
        _ if is_shared_lock_wait(nr, arg1) => Blocked::Lock { nr },
        _ => Blocked::Other { nr },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadInfo {
    pub tid: u32,
    pub blocked: Blocked,
}

/// One epoll fd of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EpollFd {
    pub fd: i32,
    /// Index into `Snapshot::instances`: fds of one epoll instance (shared
    /// across fork) have the same index.
    pub instance: usize,
    pub watches: Vec<Watch>,
}

/// One listening socket fd of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ListenFd {
    pub fd: i32,
    pub inode: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// /proc/PID/exe (empty when unreadable, as in saved trees).
    pub exe: String,
    /// /proc/PID/cmdline, one argument each.
    pub cmdline: Vec<String>,
    /// File names of the shared objects mapped (/proc/PID/maps), e.g. an
    /// Apache httpd child's `mod_mpm_event.so`.
    pub libraries: Vec<String>,
    /// The [`ENV_KEPT`] variables set in /proc/PID/environ, as `KEY=VALUE`.
    pub env: Vec<String>,
    pub threads: Vec<ThreadInfo>,
    pub listen_fds: Vec<ListenFd>,
    pub epolls: Vec<EpollFd>,
    /// `IORING_OP_ACCEPT`s armed in its io_urings (their fdinfo), on
    /// whichever of its listening sockets.
    pub uring_accepts: usize,
}

/// The (pid, fd) that first showed an epoll instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FdRef {
    pub pid: u32,
    pub fd: i32,
}

/// A server's accept setup at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// The root process first, then its descendants by pid.
    pub processes: Vec<ProcessInfo>,
    /// The listening sockets any of the processes holds, by address then inode.
    pub listeners: Vec<ListenSocket>,
    /// Each distinct epoll instance, by its first fd.
    pub instances: Vec<FdRef>,
    /// Epoll `tfd:` lines that could not be parsed.
    pub unparsed_watch_lines: usize,
    /// True when instance identity across processes could not be checked
    /// (each fd is then taken as its own instance).
    pub identity_unknown: bool,
    /// The kernel's (major, minor), from the tree's `sys/kernel/osrelease`
    /// (None: not in a saved tree; the newest behaviour is assumed).
    pub kernel: Option<(u32, u32)>,
}

impl Snapshot {
    #[cfg(test)]
    pub fn process(&self, pid: u32) -> Option<&ProcessInfo> {
        self.processes.iter().find(|p| p.pid == pid)
    }
}

/// Answers whether two fds (of possibly different processes) are one open
/// file; None if it cannot tell.
pub type SameFile<'a> = &'a dyn Fn(FdRef, FdRef) -> Option<bool>;

/// kcmp(2) KCMP_FILE: needs ptrace access to both processes (root).
pub fn kcmp_same_file(a: FdRef, b: FdRef) -> Option<bool> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp only reads the two processes' file tables; bad pids or
    // fds return an error.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            a.pid as libc::c_long,
            b.pid as libc::c_long,
            KCMP_FILE,
            a.fd as libc::c_long,
            b.fd as libc::c_long,
        )
    };
    (r >= 0).then_some(r == 0)
}

/// (fd, link target) of a `/proc/PID/fd` directory; empty if the process
/// exited, an error if it may not be read (another user's process).
fn fd_entries(dir: &Path) -> Result<Vec<(i32, String)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "reading {} (run as root to see another user's process)",
                    dir.display()
                )
            })
        }
    };
    let mut out: Vec<(i32, String)> = entries
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// NUL-separated strings (cmdline, environ).
pub fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// File names of the shared objects in a maps file, each once, sorted.
pub fn parse_map_libraries(maps: &str) -> Vec<String> {
    let set: BTreeSet<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|path| path.starts_with('/') && path.contains(".so"))
        .filter_map(|path| path.rsplit('/').next())
        .map(str::to_string)
        .collect();
    set.into_iter().collect()
}

/// Who the process is: executable, arguments, libraries, kept environment.
fn read_identity(dir: &Path) -> (String, Vec<String>, Vec<String>, Vec<String>) {
    let exe = fs::read_link(dir.join("exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cmdline = fs::read(dir.join("cmdline"))
        .map(|b| split_nul(&b))
        .unwrap_or_default();
    let libraries = fs::read_to_string(dir.join("maps"))
        .map(|m| parse_map_libraries(&m))
        .unwrap_or_default();
    let env = fs::read(dir.join("environ"))
        .map(|b| {
            split_nul(&b)
                .into_iter()
                .filter(|kv| {
                    kv.split_once('=')
                        .is_some_and(|(k, _)| ENV_KEPT.contains(&k))
                })
                .collect()
        })
        .unwrap_or_default();
    (exe, cmdline, libraries, env)
}

fn read_threads(pid_dir: &Path) -> Vec<ThreadInfo> {
    let Ok(entries) = fs::read_dir(pid_dir.join("task")) else {
        return Vec::new();
    };
    let mut out: Vec<ThreadInfo> = entries
        .flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse().ok()?;
            let blocked = fs::read_to_string(e.path().join("syscall"))
                .map_or(Blocked::Unknown, |t| parse_syscall(&t));
            Some(ThreadInfo { tid, blocked })
        })
        .collect();
    out.sort_by_key(|t| t.tid);
    out
}

/// Reads the setup of `root` and its descendants below `proc_root`.
pub fn read_snapshot(proc_root: &Path, root: u32, same_file: SameFile) -> Result<Snapshot> {
    let all = targets::scan(proc_root)?;
    if !all.iter().any(|p| p.pid == root) {
        bail!("no such process: {root}");
    }
    let mut pids = targets::with_descendants(&all, &[root]);
    pids.retain(|&p| p != root);
    pids.insert(0, root);
    read_snapshot_of(proc_root, &all, &pids, same_file)
}

/// Reads the setup of the processes `pids` (the first one's network
/// namespace names the listeners), from the process list `all`.
pub fn read_snapshot_of(
    proc_root: &Path,
    all: &[ProcStat],
    pids: &[u32],
    same_file: SameFile,
) -> Result<Snapshot> {
    let Some(&root) = pids.first() else {
        bail!("no process to read");
    };
    let Some(root_info) = all.iter().find(|p| p.pid == root) else {
        bail!("no such process: {root}");
    };
    // The server's own network namespace (a container's), not ours: its
    // /proc/PID/net shows the tables of the namespace it lives in.
    let own = proc_root.join(root.to_string());
    let listen_all = if own.join("net/tcp").exists() {
        targets::listen_sockets(&own)
    } else {
        targets::listen_sockets(proc_root)
    };

    let mut processes = Vec::new();
    let mut held: BTreeSet<u64> = BTreeSet::new();
    let mut instances: Vec<FdRef> = Vec::new();
    let mut unparsed = 0;
    let mut identity_unknown = false;
    for &pid in pids {
        let Some(info) = all.iter().find(|p| p.pid == pid) else {
            continue;
        };
        let dir: PathBuf = proc_root.join(pid.to_string());
        let mut listen_fds = Vec::new();
        let mut epolls = Vec::new();
        let mut uring_accepts = 0;
        for (fd, target) in fd_entries(&dir.join("fd"))? {
            if let Some(inode) = targets::parse_socket_link(&target) {
                if listen_all.iter().any(|l| l.inode == inode) {
                    listen_fds.push(ListenFd { fd, inode });
                    held.insert(inode);
                }
            } else if target == fdinfo::RING_LINK {
                let path = dir.join("fdinfo").join(fd.to_string());
                // Closed since the listing, or unreadable: no accept armed there.
                if let Ok(text) = fs::read_to_string(&path) {
                    uring_accepts += fdinfo::uring_accepts(&text);
                }
            } else if target == "anon_inode:[eventpoll]" {
                let path = dir.join("fdinfo").join(fd.to_string());
                let text = match fs::read_to_string(&path) {
                    Ok(t) => t,
                    // Closed since the listing: not part of the setup.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                };
                let (watches, bad) = fdinfo::parse_epoll_fdinfo(&text);
                unparsed += bad;
                let me = FdRef { pid, fd };
                // Fds of other processes may be the same instance (epoll
                // created before fork), and so may two fds of one process:
                // mio (so every tokio server) dups its epoll fd for its
                // `Registry`, which without this check reads as two
                // instances, each with one waiter.
                let mut instance = None;
                for (i, first) in instances.iter().enumerate() {
                    match same_file(*first, me) {
                        Some(true) => {
                            instance = Some(i);
                            break;
                        }
                        Some(false) => {}
                        None => identity_unknown = true,
                    }
                }
                let instance = instance.unwrap_or_else(|| {
                    instances.push(me);
                    instances.len() - 1
                });
                epolls.push(EpollFd {
                    fd,
                    instance,
                    watches,
                });
            }
        }
        let (exe, cmdline, libraries, env) = read_identity(&dir);
        processes.push(ProcessInfo {
            pid,
            ppid: info.ppid,
            comm: info.comm.clone(),
            exe,
            cmdline,
            libraries,
            env,
            threads: read_threads(&dir),
            listen_fds,
            epolls,
            uring_accepts,
        });
    }
    if processes.is_empty() {
        bail!(
            "process {root} ({}) exited while being read",
            root_info.comm
        );
    }
    let mut listeners: Vec<ListenSocket> = listen_all
        .into_iter()
        .filter(|l| held.contains(&l.inode))
        .collect();
    listeners.sort_by_key(|l| (l.addr, l.inode));
    listeners.dedup();
    Ok(Snapshot {
        processes,
        listeners,
        instances,
        unparsed_watch_lines: unparsed,
        identity_unknown,
        kernel: fs::read_to_string(proc_root.join("sys/kernel/osrelease"))
            .ok()
            .and_then(|r| crate::kernel::major_minor(r.trim())),
    })
}

/// Voluntary + involuntary context switches of every thread of `pids`,
/// from /proc/PID/task/TID/status.
pub fn context_switches(proc_root: &Path, pids: &[u32]) -> u64 {
    pids.iter()
        .flat_map(|&pid| {
            targets::threads(proc_root, pid)
                .into_iter()
                .map(move |t| (pid, t))
        })
        .filter_map(|(pid, tid)| {
            let path = proc_root
                .join(pid.to_string())
                .join("task")
                .join(tid.to_string())
                .join("status");
            fs::read_to_string(path).ok()
        })
        .map(|text| parse_ctxt_switches(&text))
        .sum()
}

/// Sum of `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` in a status file.
pub fn parse_ctxt_switches(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "voluntary_ctxt_switches" | "nonvoluntary_ctxt_switches")
                .then(|| v.trim().parse::<u64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::fixture;

    /// Fixtures hold no kcmp answer: the saved servers create their epoll
    /// after fork, so every fd is its own instance.
    fn distinct(_: FdRef, _: FdRef) -> Option<bool> {
        Some(false)
    }

    fn read(name: &str, root: u32) -> Snapshot {
        read_snapshot(&fixture(name), root, &distinct).expect("fixture snapshot")
    }

    #[test]
    fn parses_syscall_files() {
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(
                parse_syscall(
                    "232 0x7 0x55b484ae0eb0 0x200 0xffffffff 0x8cd90d 0x0 0x7fff 0x7fb5\n"
                ),
                Blocked::EpollWait { epfd: 7 }
            );
            assert_eq!(
                parse_syscall("288 0x3 0x0 0x0 0x80800 0x0 0x0 0x7ffc 0x7f1"),
                Blocked::Accept { fd: 3 }
            );
            assert_eq!(
                parse_syscall("130 0x7fff93be4770 0x8 0x5 0x4 0x55b4 0x877 0x7fff 0x7fb5"),
                Blocked::Other { nr: 130 }
            );
        }
        // `serve --model io-uring`'s worker waiting for its accept (426 on
        // both architectures).
        assert_eq!(
            parse_syscall("426 0x4 0x0 0x1 0x1 0x0 0x0 0x7ffc 0x7f2"),
            Blocked::Uring
        );
        #[cfg(target_arch = "x86_64")]
        {
            // gunicorn's sync worker and its master, in pselect6.
            assert_eq!(
                parse_syscall("270 0x8 0x7f 0x0 0x0 0x7ffd 0x0 0x7ffd 0x7f"),
                Blocked::Select { nfds: 8 }
            );
            assert_eq!(
                parse_syscall("23 0x4 0x7f 0x0 0x0 0x0 0x0 0x7ffd 0x7f"),
                Blocked::Select { nfds: 4 }
            );
            assert_eq!(
                parse_syscall("7 0x7ffd 0x2 0xffffffff 0x0 0x0 0x0 0x7ffd 0x7f"),
                Blocked::Poll
            );
            assert_eq!(
                parse_syscall("271 0x7ffd 0x2 0x0 0x0 0x8 0x0 0x7ffd 0x7f"),
                Blocked::Poll
            );
        }
        #[cfg(target_arch = "x86_64")]
        {
            let (lock, other) = (Blocked::Lock { nr: 0 }, Blocked::Other { nr: 0 });
            for (line, want) in [
                // An httpd prefork child waiting for the accept mutex (fcntl
                // F_SETLKW), as /proc showed it.
                (
                    "72 0x7 0x7 0x7faa26555dc0 0x5580032a3ff8 0x0 0x0 0x7ffcc8570280 0x7faa26430810",
                    lock,
                ),
                // F_SETLK does not wait; F_OFD_SETLKW does.
                ("72 0x7 0x6 0x7f 0x0 0x0 0x0 0x7ffc 0x7f", other),
                ("72 0x7 0x26 0x7f 0x0 0x0 0x0 0x7ffc 0x7f", lock),
                // flock, semop, semtimedop.
                ("73 0x7 0x2 0x0 0x0 0x0 0x0 0x7ffc 0x7f", lock),
                ("65 0x8000 0x7ffc 0x1 0x0 0x0 0x0 0x7ffc 0x7f", lock),
                ("220 0x8000 0x7ffc 0x1 0x0 0x0 0x0 0x7ffc 0x7f", lock),
                // A process-shared futex wait (FUTEX_WAIT, uWSGI's lock) is a
                // lock between processes; a private one (FUTEX_WAIT_PRIVATE,
                // FUTEX_WAIT_BITSET_PRIVATE: a thread's condition variable)
                // is not; nor is FUTEX_WAKE.
                ("202 0x7f3a10001000 0x0 0x2 0x0 0x0 0x0 0x7ffc 0x7f", lock),
                ("202 0x7f59bea89000 0x6 0x0 0x0 0x0 0x0 0x7ffc 0x7f", lock),
                ("202 0x7f3a10001000 0x89 0x0 0x0 0x0 0xffffffff 0x7ffc 0x7f", other),
                ("202 0x7f3a10001000 0x80 0x2 0x0 0x0 0x0 0x7ffc 0x7f", other),
                ("202 0x7f3a10001000 0x1 0x1 0x0 0x0 0x0 0x7ffc 0x7f", other),
            ] {
                let nr = line.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let want = match want {
                    Blocked::Lock { .. } => Blocked::Lock { nr },
                    _ => Blocked::Other { nr },
                };
                assert_eq!(parse_syscall(line), want, "{line}");
            }
        }
        assert_eq!(parse_syscall("running\n"), Blocked::Running);
        assert_eq!(parse_syscall("-1 0x7ffc 0x7f1"), Blocked::Other { nr: -1 });
        assert_eq!(parse_syscall(""), Blocked::Unknown);
        assert_eq!(parse_syscall("garbage"), Blocked::Unknown);
    }

    #[test]
    fn splits_cmdline_and_environ() {
        assert_eq!(
            split_nul(b"/usr/bin/python3\0/usr/bin/gunicorn\0--workers\0\x34\0"),
            vec!["/usr/bin/python3", "/usr/bin/gunicorn", "--workers", "4"]
        );
        assert!(split_nul(b"").is_empty());
        assert_eq!(split_nul(b"a\0\0b"), vec!["a", "b"]);
    }

    #[test]
    fn lists_mapped_libraries_once() {
        let maps = "\
7f1c0000-7f1c1000 r--p 00000000 08:01 123 /usr/lib/apache2/modules/mod_mpm_event.so
7f1c1000-7f1c2000 r-xp 00001000 08:01 123 /usr/lib/apache2/modules/mod_mpm_event.so
7f1d0000-7f1d1000 r-xp 00000000 08:01 124 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]
55e00000-55e01000 r-xp 00000000 08:01 125 /usr/sbin/apache2
7f1e0000-7f1e1000 rw-p 00000000 00:00 0
";
        assert_eq!(
            parse_map_libraries(maps),
            vec!["libc.so.6", "mod_mpm_event.so"]
        );
        assert!(parse_map_libraries("").is_empty());
    }

    #[test]
    fn parses_context_switches() {
        let status = "Name:\tnginx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_ctxt_switches(status), 15);
        assert_eq!(parse_ctxt_switches("Name:\tx\n"), 0);
    }

    #[test]
    fn reads_nginx_default_fixture() {
        let s = read("nginx-default", 2162);
        let pids: Vec<u32> = s.processes.iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![2162, 2164, 2165, 2166, 2167]);
        assert!(s.processes.iter().all(|p| p.comm == "nginx"));
        // Only the server's listener, not the machine's other one (port 2024).
        assert_eq!(s.listeners.len(), 1);
        assert_eq!(
            s.listeners[0].addr,
            "127.0.0.1:28480".parse().expect("addr")
        );
        assert_eq!(s.listeners[0].inode, 7_853_660);
        // The master holds the listener but has no epoll; each worker has one.
        let master = s.process(2162).expect("master");
        assert_eq!(
            master.listen_fds,
            vec![ListenFd {
                fd: 5,
                inode: 7_853_660
            }]
        );
        assert!(master.epolls.is_empty());
        assert_eq!(master.threads[0].blocked, Blocked::Other { nr: 130 });
        for pid in [2164, 2165, 2166, 2167] {
            let w = s.process(pid).expect("worker");
            assert_eq!(w.epolls.len(), 1, "{pid}");
            let listener = w.epolls[0]
                .watches
                .iter()
                .find(|x| x.ino == 7_853_660)
                .expect("listener watched");
            assert!(listener.exclusive(), "nginx default uses EPOLLEXCLUSIVE");
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                w.threads[0].blocked,
                Blocked::EpollWait {
                    epfd: w.epolls[0].fd
                }
            );
        }
        assert_eq!(s.instances.len(), 4);
        assert_eq!(s.unparsed_watch_lines, 0);
        assert!(!s.identity_unknown);
    }

    #[test]
    fn reads_lighttpd_fixture() {
        let s = read("lighttpd-4-workers", 5790);
        assert_eq!(s.processes.len(), 5);
        assert_eq!(s.listeners.len(), 1);
        let ino = s.listeners[0].inode;
        let watching: Vec<&Watch> = s
            .processes
            .iter()
            .flat_map(|p| &p.epolls)
            .flat_map(|e| &e.watches)
            .filter(|w| w.ino == ino)
            .collect();
        assert_eq!(watching.len(), 4);
        assert!(watching.iter().all(|w| w.events == 0x19));
    }

    #[test]
    fn reads_nginx_reuseport_fixture() {
        let s = read("nginx-reuseport", 4519);
        assert_eq!(s.listeners.len(), 4, "{:?}", s.listeners);
        let addr = s.listeners[0].addr;
        assert!(s.listeners.iter().all(|l| l.addr == addr));
    }

    #[test]
    fn instance_identity_comes_from_same_file() {
        // As if the four nginx workers had inherited one epoll from the master.
        let all_same = |_: FdRef, _: FdRef| Some(true);
        let s = read_snapshot(&fixture("nginx-default"), 2162, &all_same).expect("snapshot");
        assert_eq!(s.instances.len(), 1);
        assert!(s
            .processes
            .iter()
            .flat_map(|p| &p.epolls)
            .all(|e| e.instance == 0));
        let unknown = |_: FdRef, _: FdRef| None;
        let s = read_snapshot(&fixture("nginx-default"), 2162, &unknown).expect("snapshot");
        assert_eq!(s.instances.len(), 4);
        assert!(s.identity_unknown);
    }

    #[test]
    fn missing_process_is_an_error() {
        let err = read_snapshot(&fixture("nginx-default"), 1, &distinct).expect_err("no pid 1");
        assert!(err.to_string().contains("no such process: 1"), "{err}");
    }

    /// A new epoll instance of this process watching `fd` with `events`
    /// and `data`; closed when dropped.
    fn epoll_watching(fd: i32, events: i32, data: u64) -> std::os::fd::OwnedFd {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscalls; the new fd is owned by the OwnedFd below.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(ep >= 0, "epoll_create1");
        let ep = unsafe { std::os::fd::OwnedFd::from_raw_fd(ep) };
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: data,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: both fds are open; `ev` is valid for the call.
        let rc = unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert_eq!(rc, 0, "epoll_ctl");
        ep
    }

    #[test]
    fn reads_this_process_live() {
        // A listener in an epoll with EPOLLEXCLUSIVE, in this very process.
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let epoll = epoll_watching(
            listener.as_raw_fd(),
            libc::EPOLLIN | libc::EPOLLEXCLUSIVE,
            42,
        );
        let ep = epoll.as_raw_fd();
        let me = std::process::id();
        let s = read_snapshot(Path::new("/proc"), me, &kcmp_same_file).expect("snapshot");
        drop(epoll);
        let addr = listener.local_addr().expect("addr");
        let l = s
            .listeners
            .iter()
            .find(|l| l.addr == addr)
            .expect("listener");
        let p = s.process(me).expect("self");
        // Who it is, as the server recognition reads it.
        assert_eq!(
            p.exe,
            std::env::current_exe()
                .expect("exe")
                .to_string_lossy()
                .into_owned()
        );
        assert!(!p.cmdline.is_empty());
        assert!(
            p.libraries.iter().any(|l| l.starts_with("libc.so")),
            "{:?}",
            p.libraries
        );
        assert!(p
            .env
            .iter()
            .all(|kv| kv.starts_with("NODE_CLUSTER_SCHED_POLICY=")));
        assert!(p
            .listen_fds
            .iter()
            .any(|f| f.fd == listener.as_raw_fd() && f.inode == l.inode));
        let e = p.epolls.iter().find(|e| e.fd == ep).expect("epoll fd");
        assert_eq!(e.watches.len(), 1);
        assert_eq!(e.watches[0].ino, l.inode);
        assert_eq!(e.watches[0].data, 42);
        assert!(e.watches[0].exclusive());
    }

    #[test]
    fn a_duplicated_epoll_fd_is_one_instance() {
        // As mio does for its Registry (F_DUPFD_CLOEXEC): two fds of one
        // process, one epoll instance.
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let epoll = epoll_watching(listener.as_raw_fd(), libc::EPOLLIN, 7);
        // OwnedFd::try_clone is F_DUPFD_CLOEXEC, as mio's.
        let dup_fd = epoll.try_clone().expect("dup");
        let other_fd = epoll_watching(listener.as_raw_fd(), libc::EPOLLIN, 7);
        let (ep, dup, other) = (epoll.as_raw_fd(), dup_fd.as_raw_fd(), other_fd.as_raw_fd());
        let me = std::process::id();
        let s = read_snapshot(Path::new("/proc"), me, &kcmp_same_file).expect("snapshot");
        let p = s.process(me).expect("self");
        let instance = |fd: i32| {
            p.epolls
                .iter()
                .find(|e| e.fd == fd)
                .map(|e| e.instance)
                .expect("epoll fd")
        };
        if s.identity_unknown {
            // kcmp refused (no ptrace access to ourselves, e.g. under a
            // seccomp filter): every fd is its own instance, as documented.
            assert_ne!(instance(ep), instance(dup));
            return;
        }
        assert_eq!(instance(ep), instance(dup));
        assert_ne!(instance(ep), instance(other));
    }
}
