//! What the server does, from a [`Snapshot`]: for each listening address,
//! its sockets (several = an `SO_REUSEPORT` group), the epoll instances and
//! threads waiting on each, and the accept pattern that follows.
use std::{collections::BTreeSet, fmt::Write as _, net::SocketAddr};

use serde::Serialize;

use super::{
    fdinfo,
    procfs::{Blocked, Snapshot},
};

/// An epoll instance watching a listening socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Watcher {
    /// Index into `Snapshot::instances`.
    pub instance: usize,
    /// Processes with an fd of this instance.
    pub pids: Vec<u32>,
    /// The instance's fd in the first of `pids`.
    pub fd: i32,
    /// The registered event mask (EPOLLEXCLUSIVE, EPOLLET, ... included).
    pub events: u32,
    pub flags: Vec<&'static str>,
    /// Threads asleep in epoll_wait on it when /proc was read.
    pub waiting_threads: Vec<u32>,
    /// Waiting threads plus threads running in user space of a process with
    /// no other epoll: the likely waiters (a snapshot under load misses some).
    pub likely_waiters: usize,
}

impl Watcher {
    fn exclusive(&self) -> bool {
        self.events & fdinfo::EPOLLEXCLUSIVE != 0
    }
}

/// One listening socket and who waits on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketSetup {
    pub inode: u64,
    /// Processes holding an fd of the socket.
    pub holders: Vec<u32>,
    pub watchers: Vec<Watcher>,
    /// Threads asleep in accept() on it.
    pub accepting_threads: Vec<u32>,
    /// Threads of holders asleep in select()/poll() that can include it
    /// (select's `nfds` above the fd; any poll, whose fds /proc does not show).
    pub polling_threads: Vec<u32>,
    /// Holders that have an epoll instance (of any use): the worker processes.
    pub workers_with_epoll: Vec<u32>,
    /// Processes whose epoll watches the socket but which wait for a lock
    /// shared between processes, none of their threads in that epoll: an
    /// accept mutex's queue.
    pub lock_waiters: Vec<u32>,
    /// `IORING_OP_ACCEPT`s armed in the io_urings of its holders.
    pub uring_accepts: usize,
    /// io_uring waits for a connection exclusively on this kernel (5.18+).
    pub uring_exclusive: bool,
}

/// How connections to one address reach the server's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pattern {
    /// One socket watched by several epoll instances; `exclusive` of them
    /// registered it with EPOLLEXCLUSIVE. `threads`: the instances belong to
    /// threads of one process rather than to several processes.
    EpollPerWorker {
        instances: usize,
        exclusive: usize,
        threads: bool,
    },
    /// One socket in one epoll instance on which several threads wait.
    SharedEpoll {
        threads: usize,
        edge_triggered: bool,
        oneshot: bool,
    },
    /// An SO_REUSEPORT group: `sockets` listening sockets on one address;
    /// `max_woken`: the most epoll waiters one connection can wake on one socket.
    Reuseport { sockets: usize, max_woken: usize },
    /// Tasks asleep in accept() (no epoll): the kernel wakes one.
    BlockingAccept { threads: usize },
    /// Workers asleep in select()/poll() on the shared socket (gunicorn's
    /// sync worker): their waits are not exclusive, every one is woken.
    SelectPerWorker { tasks: usize },
    /// Several worker processes hold the socket but at most one epoll watches
    /// it at a time (nginx `accept_mutex on`), or each epoll watches it but
    /// `locked` workers wait for a lock between processes instead of in
    /// their epoll (httpd's accept mutex, uWSGI's `--thunder-lock`).
    TakingTurns {
        workers: usize,
        watching: usize,
        locked: usize,
    },
    /// `accepts` io_uring accepts (`IORING_OP_ACCEPT`) armed on the socket,
    /// each a poll on its wait queue: `exclusive` from Linux 5.18, before
    /// which every ring is woken.
    UringAccept { accepts: usize, exclusive: bool },
    /// One task waits for connections.
    SingleWaiter,
    /// Nobody was waiting on the socket when /proc was read.
    NoWaiter,
}

impl Pattern {
    /// Tasks one connection can wake when every worker is idle: (fewest, most).
    pub fn expected_woken(self) -> (usize, usize) {
        match self {
            Pattern::EpollPerWorker {
                instances,
                exclusive,
                ..
            } => {
                let n = instances - exclusive + usize::from(exclusive > 0);
                (n, n)
            }
            Pattern::SharedEpoll {
                threads,
                edge_triggered,
                oneshot,
            } => {
                if edge_triggered || oneshot {
                    (1, 1)
                } else {
                    (1, threads)
                }
            }
            Pattern::Reuseport { max_woken, .. } => (1, max_woken.max(1)),
            Pattern::SelectPerWorker { tasks } => (tasks, tasks),
            Pattern::BlockingAccept { .. } | Pattern::SingleWaiter => (1, 1),
            Pattern::TakingTurns { watching, .. } => (watching.min(1), 1),
            Pattern::UringAccept {
                exclusive: true, ..
            } => (1, 1),
            Pattern::UringAccept { accepts, .. } => (accepts, accepts),
            Pattern::NoWaiter => (0, 0),
        }
    }

    /// Whether the setup can wake more than one task per connection.
    pub fn herd_prone(self) -> bool {
        self.expected_woken().1 > 1
    }

    /// Tasks that can take a connection (the N of the fair share 1/N); for
    /// an SO_REUSEPORT group see [`Endpoint::acceptors`].
    pub fn acceptors(self) -> usize {
        match self {
            Pattern::EpollPerWorker { instances, .. } => instances,
            Pattern::SharedEpoll { threads, .. } => threads,
            Pattern::Reuseport { sockets, .. } => sockets,
            Pattern::BlockingAccept { threads } => threads,
            Pattern::SelectPerWorker { tasks } => tasks,
            Pattern::TakingTurns { workers, .. } => workers,
            Pattern::UringAccept { accepts, .. } => accepts,
            Pattern::SingleWaiter => 1,
            Pattern::NoWaiter => 0,
        }
    }
}

/// One listening address of the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub sockets: Vec<SocketSetup>,
    pub pattern: Pattern,
    /// Tasks that can take a connection on this address (every socket's, for
    /// an SO_REUSEPORT group): the N of the fair share 1/N.
    pub acceptors: usize,
    /// One sentence: "4 processes, each with its own epoll on 127.0.0.1:80, no EPOLLEXCLUSIVE".
    pub description: String,
}

fn socket_setup(snap: &Snapshot, inode: u64) -> SocketSetup {
    let holders: Vec<u32> = snap
        .processes
        .iter()
        .filter(|p| p.listen_fds.iter().any(|f| f.inode == inode))
        .map(|p| p.pid)
        .collect();
    let mut watchers: Vec<Watcher> = Vec::new();
    for p in &snap.processes {
        for e in &p.epolls {
            let Some(w) = e.watches.iter().find(|w| w.ino == inode) else {
                continue;
            };
            if let Some(existing) = watchers.iter_mut().find(|x| x.instance == e.instance) {
                if !existing.pids.contains(&p.pid) {
                    existing.pids.push(p.pid);
                }
                continue;
            }
            watchers.push(Watcher {
                instance: e.instance,
                pids: vec![p.pid],
                fd: e.fd,
                events: w.events,
                flags: w.flag_names(),
                waiting_threads: Vec::new(),
                likely_waiters: 0,
            });
        }
    }
    for w in &mut watchers {
        let mut waiting = BTreeSet::new();
        let mut running = 0;
        for p in snap.processes.iter().filter(|p| w.pids.contains(&p.pid)) {
            let only_instance = p.epolls.iter().all(|e| e.instance == w.instance);
            for t in &p.threads {
                match t.blocked {
                    Blocked::EpollWait { epfd }
                        if p.epolls
                            .iter()
                            .any(|e| e.fd == epfd && e.instance == w.instance) =>
                    {
                        waiting.insert(t.tid);
                    }
                    Blocked::Running if only_instance => running += 1,
                    _ => {}
                }
            }
        }
        w.waiting_threads = waiting.into_iter().collect();
        w.likely_waiters = w.waiting_threads.len() + running;
    }
    let accepting_threads = snap
        .processes
        .iter()
        .flat_map(|p| {
            p.threads.iter().filter(move |t| match t.blocked {
                Blocked::Accept { fd } => {
                    p.listen_fds.iter().any(|f| f.fd == fd && f.inode == inode)
                }
                _ => false,
            })
        })
        .map(|t| t.tid)
        .collect();
    let workers_with_epoll = snap
        .processes
        .iter()
        .filter(|p| holders.contains(&p.pid) && !p.epolls.is_empty())
        .map(|p| p.pid)
        .collect();
    let polling_threads = snap
        .processes
        .iter()
        .flat_map(|p| {
            let fd = p.listen_fds.iter().find(|f| f.inode == inode).map(|f| f.fd);
            p.threads.iter().filter(move |t| match (t.blocked, fd) {
                (Blocked::Select { nfds }, Some(fd)) => nfds > fd,
                (Blocked::Poll, Some(_)) => p.epolls.is_empty(),
                _ => false,
            })
        })
        .map(|t| t.tid)
        .collect();
    let lock_waiters = lock_waiters(snap, &watchers);
    let uring_accepts = snap
        .processes
        .iter()
        .filter(|p| holders.contains(&p.pid))
        .map(|p| p.uring_accepts)
        .sum();
    SocketSetup {
        inode,
        holders,
        watchers,
        accepting_threads,
        polling_threads,
        workers_with_epoll,
        lock_waiters,
        uring_accepts,
        uring_exclusive: snap.kernel.is_none_or(|v| v >= URING_EXCLUSIVE_SINCE),
    }
}

/// The processes of `watchers` that wait for a lock shared between
/// processes and have no thread waiting in the epolls watching the socket.
fn lock_waiters(snap: &Snapshot, watchers: &[Watcher]) -> Vec<u32> {
    let waiting: BTreeSet<u32> = watchers
        .iter()
        .flat_map(|w| w.waiting_threads.iter().copied())
        .collect();
    let pids = watcher_pids(watchers);
    snap.processes
        .iter()
        .filter(|p| pids.contains(&p.pid))
        .filter(|p| !p.threads.iter().any(|t| waiting.contains(&t.tid)))
        .filter(|p| {
            p.threads
                .iter()
                .any(|t| matches!(t.blocked, Blocked::Lock { .. }))
        })
        .map(|p| p.pid)
        .collect()
}

/// Workers taking turns through a lock: two or more wait for it, and at
/// most one epoll watching the socket has a waiter (the lock's holder, if
/// it is not busy with a connection).
fn turns_through_a_lock(s: &SocketSetup) -> Option<Pattern> {
    let waiting_epolls = s.watchers.iter().filter(|w| w.likely_waiters > 0).count();
    let one_each = s.watchers.iter().all(|w| w.likely_waiters < 2);
    (s.lock_waiters.len() >= 2 && waiting_epolls <= 1 && one_each).then(|| Pattern::TakingTurns {
        workers: watcher_pids(&s.watchers).len(),
        watching: waiting_epolls,
        locked: s.lock_waiters.len(),
    })
}

/// The processes whose epolls watch the socket (not a master that holds
/// it with an epoll of its own, as uWSGI's does).
fn watcher_pids(watchers: &[Watcher]) -> BTreeSet<u32> {
    watchers
        .iter()
        .flat_map(|w| w.pids.iter().copied())
        .collect()
}

/// Tasks asleep in accept() on the socket while the epolls that watch it
/// have nobody waiting in them: httpd's prefork children with one `Listen`
/// keep the socket in a pollset they never wait in and block in accept().
fn accept_beside_idle_epolls(s: &SocketSetup) -> bool {
    !s.accepting_threads.is_empty() && s.watchers.iter().all(|w| w.likely_waiters == 0)
}

/// The first kernel whose io_uring waits for a connection exclusively
/// (`poll_exclusive` for `IORING_OP_ACCEPT`): before it every worker's ring
/// is woken. Measured: Debian's 5.10 wakes every worker, its 6.1 one.
/// `verify` expects by it too.
pub const URING_EXCLUSIVE_SINCE: (u32, u32) = (5, 18);

/// The first kernel with multishot accepts (`IORING_ACCEPT_MULTISHOT`).
pub const URING_MULTISHOT_SINCE: (u32, u32) = (5, 19);

/// io_uring accepts armed on the socket and no task waiting on it any other
/// way (an io_uring server keeps no epoll on the listener and calls no
/// accept()).
fn uring_only(s: &SocketSetup) -> bool {
    s.uring_accepts > 0
        && s.accepting_threads.is_empty()
        && s.polling_threads.is_empty()
        && s.watchers.iter().all(|w| w.likely_waiters == 0)
}

/// The pattern of a single socket (not a reuseport group).
fn single_socket_pattern(s: &SocketSetup) -> Pattern {
    if let Some(turns) = turns_through_a_lock(s) {
        return turns;
    }
    if uring_only(s) {
        return Pattern::UringAccept {
            accepts: s.uring_accepts,
            exclusive: s.uring_exclusive,
        };
    }
    if accept_beside_idle_epolls(s) {
        return Pattern::BlockingAccept {
            threads: s.accepting_threads.len(),
        };
    }
    match s.watchers.len() {
        0 if !s.accepting_threads.is_empty() => Pattern::BlockingAccept {
            threads: s.accepting_threads.len(),
        },
        0 if s.polling_threads.len() >= 2 => Pattern::SelectPerWorker {
            tasks: s.polling_threads.len(),
        },
        0 if s.polling_threads.len() == 1 => Pattern::SingleWaiter,
        0 | 1
            if s.workers_with_epoll.len() >= 2
                && s.watchers.first().is_none_or(|w| w.likely_waiters < 2) =>
        {
            Pattern::TakingTurns {
                workers: s.workers_with_epoll.len(),
                watching: s.watchers.len(),
                locked: 0,
            }
        }
        0 => Pattern::NoWaiter,
        1 => {
            let w = &s.watchers[0];
            if w.likely_waiters >= 2 {
                Pattern::SharedEpoll {
                    threads: w.likely_waiters,
                    edge_triggered: w.events & fdinfo::EPOLLET != 0,
                    oneshot: w.events & fdinfo::EPOLLONESHOT != 0,
                }
            } else {
                Pattern::SingleWaiter
            }
        }
        n => {
            let pids: BTreeSet<u32> = s.watchers.iter().flat_map(|w| w.pids.clone()).collect();
            Pattern::EpollPerWorker {
                instances: n,
                exclusive: s.watchers.iter().filter(|w| w.exclusive()).count(),
                threads: pids.len() == 1,
            }
        }
    }
}

/// Tasks waiting on one socket of an SO_REUSEPORT group: its epoll
/// waiters, accept() and select()/poll() sleepers; at least one (under load
/// a snapshot can catch its worker busy). Every worker holds every socket of
/// an nginx group, so holders do not count.
fn group_member_acceptors(s: &SocketSetup) -> usize {
    let waiters: usize = if accept_beside_idle_epolls(s) {
        0
    } else {
        s.watchers.iter().map(|w| w.likely_waiters.max(1)).sum()
    };
    (waiters + s.accepting_threads.len() + s.polling_threads.len()).max(1)
}

/// Groups the snapshot's listening sockets by address and classifies each.
pub fn endpoints(snap: &Snapshot) -> Vec<Endpoint> {
    let addrs: BTreeSet<SocketAddr> = snap.listeners.iter().map(|l| l.addr).collect();
    addrs
        .into_iter()
        .map(|addr| {
            let sockets: Vec<SocketSetup> = snap
                .listeners
                .iter()
                .filter(|l| l.addr == addr)
                .map(|l| socket_setup(snap, l.inode))
                .collect();
            let pattern = if sockets.len() >= 2 {
                let max_woken = sockets
                    .iter()
                    .map(|s| single_socket_pattern(s).expected_woken().1)
                    .max()
                    .unwrap_or(0);
                Pattern::Reuseport {
                    sockets: sockets.len(),
                    max_woken,
                }
            } else {
                sockets
                    .first()
                    .map_or(Pattern::NoWaiter, single_socket_pattern)
            };
            let acceptors = if sockets.len() >= 2 {
                sockets.iter().map(group_member_acceptors).sum()
            } else {
                pattern.acceptors()
            };
            let description = describe(addr, &sockets, pattern);
            Endpoint {
                addr,
                sockets,
                pattern,
                acceptors,
                description,
            }
        })
        .collect()
}

/// Multi-threaded processes that wait for connections through one epoll
/// instance, with at most one of their threads seen able to take them: one
/// accept loop, which an async runtime (tokio, Go's netpoller) runs on
/// whichever of its threads is free, so the thread that accepts changes
/// without there being a second worker. The balance verdict counts such a
/// loop as one worker, whichever of its threads accept (see
/// `engine::units`). A process that also waits another way (accept(),
/// select(), a second epoll) is not one.
pub fn accept_loop_pids(snap: &Snapshot, endpoints: &[Endpoint]) -> Vec<u32> {
    let mut loops = BTreeSet::new();
    let mut not_loops = BTreeSet::new();
    for e in endpoints {
        let tasks = acceptor_tasks(snap, e);
        for p in snap.processes.iter().filter(|p| p.threads.len() > 1) {
            let instances: BTreeSet<usize> = e
                .sockets
                .iter()
                .flat_map(|s| &s.watchers)
                .filter(|w| w.pids.contains(&p.pid))
                .map(|w| w.instance)
                .collect();
            let own_thread = |tid: &u32| p.threads.iter().any(|t| t.tid == *tid);
            let waits_otherwise = e.sockets.iter().any(|s| {
                s.accepting_threads.iter().any(own_thread)
                    || s.polling_threads.iter().any(own_thread)
            });
            if instances.is_empty() && !waits_otherwise {
                continue;
            }
            let own_tasks = tasks.iter().filter(|(pid, _)| *pid == p.pid).count();
            if instances.len() == 1 && !waits_otherwise && own_tasks <= 1 {
                loops.insert(p.pid);
            } else {
                not_loops.insert(p.pid);
            }
        }
    }
    loops.difference(&not_loops).copied().collect()
}

/// The tasks, as `(pid, tid)`, that can take a connection on `e`, as far as
/// /proc shows them, by the same rule as [`Endpoint::acceptors`]: the
/// threads waiting on each watching epoll (or running, in a process with
/// no other epoll), the threads asleep in accept() or
/// select()/poll() on a socket, and for workers taking turns every
/// single-threaded holder with an epoll. The per-task table lists them
/// even when they accept nothing: with `accept_mutex on` or a LIFO wakeup
/// those empty rows are the finding.
pub fn acceptor_tasks(snap: &Snapshot, e: &Endpoint) -> Vec<(u32, u32)> {
    let process = |pid: u32| snap.processes.iter().find(|p| p.pid == pid);
    let owner = |tid: u32| {
        snap.processes
            .iter()
            .find(|p| p.threads.iter().any(|t| t.tid == tid))
            .map(|p| (p.pid, tid))
    };
    // A process's own task when it has only one, else its threads seen waiting.
    let single = |pid: u32| {
        process(pid)
            .filter(|p| p.threads.len() == 1)
            .map(|_| (pid, pid))
    };
    // Only a single socket's pattern says the holders take turns: those
    // with an epoll, or through a lock those whose epolls watch it.
    let mut tasks = BTreeSet::new();
    for s in &e.sockets {
        match e.pattern {
            Pattern::TakingTurns { locked: 0, .. } => {
                tasks.extend(s.workers_with_epoll.iter().filter_map(|&pid| single(pid)));
            }
            Pattern::TakingTurns { .. } => {
                // A multi-threaded child (httpd's worker MPM) takes its turn
                // in its listener thread: the one waiting for the lock.
                for pid in watcher_pids(&s.watchers) {
                    match (single(pid), process(pid)) {
                        (Some(task), _) => {
                            tasks.insert(task);
                        }
                        (None, Some(p)) => tasks.extend(
                            p.threads
                                .iter()
                                .filter(|t| matches!(t.blocked, Blocked::Lock { .. }))
                                .map(|t| (pid, t.tid)),
                        ),
                        (None, None) => {}
                    }
                }
            }
            _ => {}
        }
        for w in &s.watchers {
            tasks.extend(w.waiting_threads.iter().filter_map(|&tid| owner(tid)));
            // As `likely_waiters` counts them: running in user space, in a
            // process with no other epoll (a snapshot under load).
            for p in w.pids.iter().filter_map(|&pid| process(pid)) {
                if p.epolls.iter().all(|x| x.instance == w.instance) {
                    let running = p.threads.iter().filter(|t| t.blocked == Blocked::Running);
                    tasks.extend(running.map(|t| (p.pid, t.tid)));
                }
            }
        }
        tasks.extend(s.accepting_threads.iter().filter_map(|&tid| owner(tid)));
        tasks.extend(s.polling_threads.iter().filter_map(|&tid| owner(tid)));
        if matches!(e.pattern, Pattern::UringAccept { .. }) {
            // The rings' owners: threads waiting in io_uring_enter.
            for p in snap
                .processes
                .iter()
                .filter(|p| s.holders.contains(&p.pid) && p.uring_accepts > 0)
            {
                let waiting = p.threads.iter().filter(|t| t.blocked == Blocked::Uring);
                tasks.extend(waiting.map(|t| (p.pid, t.tid)));
            }
        }
    }
    tasks.into_iter().collect()
}

pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The sentence for an endpoint.
pub fn describe(addr: SocketAddr, sockets: &[SocketSetup], pattern: Pattern) -> String {
    let mut s = String::new();
    match pattern {
        Pattern::EpollPerWorker {
            instances,
            exclusive,
            threads,
        } => {
            let who = if threads {
                let pid = sockets
                    .first()
                    .and_then(|s| s.watchers.first())
                    .and_then(|w| w.pids.first())
                    .copied()
                    .unwrap_or(0);
                format!("{instances} threads of process {pid}")
            } else {
                format!("{instances} processes")
            };
            let excl = match exclusive {
                0 => "no EPOLLEXCLUSIVE".to_string(),
                e if e == instances => "all with EPOLLEXCLUSIVE".to_string(),
                e => format!("only {e} of them with EPOLLEXCLUSIVE"),
            };
            let _ = write!(s, "{who}, each with its own epoll on {addr}, {excl}");
        }
        Pattern::SharedEpoll {
            threads,
            edge_triggered,
            oneshot,
        } => {
            let mode = match (edge_triggered, oneshot) {
                (_, true) => "EPOLLONESHOT",
                (true, false) => "edge-triggered (EPOLLET)",
                (false, false) => "level-triggered",
            };
            let _ = write!(
                s,
                "{threads} threads waiting on one shared epoll on {addr}, {mode}"
            );
        }
        Pattern::Reuseport { sockets: n, .. } => {
            let watched: Vec<usize> = sockets.iter().map(|s| s.watchers.len()).collect();
            let each = if sockets.iter().all(accept_beside_idle_epolls) {
                "each with tasks blocked in accept()".to_string()
            } else if watched.iter().all(|&w| w == 1) {
                "each watched by one epoll".to_string()
            } else {
                format!("epolls watching each: {watched:?}")
            };
            let _ = write!(
                s,
                "SO_REUSEPORT group of {n} listening sockets on {addr}, {each}"
            );
        }
        Pattern::BlockingAccept { threads } => {
            let epolls = if sockets.iter().any(|x| !x.watchers.is_empty()) {
                "epolls watch it, but nobody waits in them"
            } else {
                "no epoll"
            };
            let _ = write!(
                s,
                "{} in accept() on {addr}, {epolls}",
                plural(threads, "task blocked", "tasks blocked")
            );
        }
        Pattern::SelectPerWorker { tasks } => {
            let _ = write!(
                s,
                "{tasks} tasks waiting in select()/poll() on the shared socket {addr}, no epoll"
            );
        }
        Pattern::TakingTurns {
            workers,
            watching,
            locked,
        } if locked > 0 => {
            let _ = write!(
                s,
                "{workers} worker processes watch {addr} in their epolls, but {locked} of them wait for a lock shared between them (an accept mutex) and {} (the workers take turns)",
                match watching {
                    0 => "none waits in its epoll at this moment".to_string(),
                    _ => "1 waits in its epoll".to_string(),
                }
            );
        }
        Pattern::TakingTurns {
            workers, watching, ..
        } => {
            let _ = write!(
                s,
                "{workers} worker processes hold {addr}, but {} it at this moment (the workers take turns, like nginx's accept_mutex)",
                match watching {
                    0 => "no epoll watches".to_string(),
                    n => format!("only {} watches", plural(n, "epoll", "epolls")),
                }
            );
        }
        Pattern::UringAccept { accepts, exclusive } => {
            let _ = write!(
                s,
                "{} armed on {addr} (no epoll or accept() waits on it); {}",
                plural(
                    accepts,
                    "io_uring accept (IORING_OP_ACCEPT)",
                    "io_uring accepts (IORING_OP_ACCEPT)"
                ),
                if exclusive {
                    "io_uring waits for a connection exclusively (Linux 5.18+): one ring is woken per connection"
                } else {
                    "before Linux 5.18 io_uring does not wait exclusively: every ring is woken per connection"
                }
            );
        }
        Pattern::SingleWaiter => {
            let _ = write!(s, "one task waits for connections on {addr}");
        }
        Pattern::NoWaiter => {
            let _ = write!(
                s,
                "no task was waiting for connections on {addr} when /proc was read"
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{
        fdinfo::{Watch, EPOLLET, EPOLLEXCLUSIVE, EPOLLONESHOT},
        fixture,
        procfs::{read_snapshot, EpollFd, FdRef, ListenFd, ProcessInfo, ThreadInfo},
    };
    use crate::targets::ListenSocket;

    fn fixture_endpoints(name: &str, root: u32) -> Vec<Endpoint> {
        let distinct = |_: FdRef, _: FdRef| Some(false);
        let snap = read_snapshot(&fixture(name), root, &distinct).expect("fixture");
        endpoints(&snap)
    }

    #[test]
    fn nginx_default_is_exclusive() {
        let e = fixture_endpoints("nginx-default", 2162);
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].pattern,
            Pattern::EpollPerWorker {
                instances: 4,
                exclusive: 4,
                threads: false
            }
        );
        assert_eq!(e[0].sockets[0].holders.len(), 5, "master + 4 workers");
        assert_eq!(
            e[0].description,
            "4 processes, each with its own epoll on 127.0.0.1:28480, all with EPOLLEXCLUSIVE"
        );
        assert!(!e[0].pattern.herd_prone());
    }

    #[test]
    fn lighttpd_is_a_herd() {
        let e = fixture_endpoints("lighttpd-4-workers", 5790);
        assert_eq!(
            e[0].pattern,
            Pattern::EpollPerWorker {
                instances: 4,
                exclusive: 0,
                threads: false
            }
        );
        assert_eq!(
            e[0].description,
            "4 processes, each with its own epoll on 127.0.0.1:28483, no EPOLLEXCLUSIVE"
        );
        assert_eq!(e[0].pattern.expected_woken(), (4, 4));
        assert!(e[0].pattern.herd_prone());
    }

    #[test]
    fn nginx_reuseport_is_a_group() {
        let e = fixture_endpoints("nginx-reuseport", 4519);
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].pattern,
            Pattern::Reuseport {
                sockets: 4,
                max_woken: 1
            }
        );
        assert!(e[0].description.starts_with(
            "SO_REUSEPORT group of 4 listening sockets on 127.0.0.1:28481, each watched by one epoll"
        ));
        assert!(!e[0].pattern.herd_prone());
    }

    #[test]
    fn nginx_accept_mutex_takes_turns() {
        let e = fixture_endpoints("nginx-accept-mutex", 5275);
        assert_eq!(
            e[0].pattern,
            Pattern::TakingTurns {
                workers: 4,
                watching: 1,
                locked: 0,
            }
        );
        assert!(
            e[0].description.contains("only 1 epoll watches"),
            "{}",
            e[0].description
        );
        assert!(!e[0].pattern.herd_prone());
    }

    // Synthetic snapshots for the patterns the fixtures do not cover.

    const INO: u64 = 1000;

    fn watch(events: u32) -> Watch {
        Watch {
            tfd: 3,
            events,
            data: 0,
            ino: INO,
            sdev: 9,
        }
    }

    fn process(pid: u32, epolls: Vec<EpollFd>, threads: Vec<ThreadInfo>) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: 1,
            comm: "srv".into(),
            exe: String::new(),
            cmdline: Vec::new(),
            libraries: Vec::new(),
            env: Vec::new(),
            threads,
            listen_fds: vec![ListenFd { fd: 3, inode: INO }],
            epolls,
            uring_accepts: 0,
        }
    }

    fn thread(tid: u32, blocked: Blocked) -> ThreadInfo {
        ThreadInfo { tid, blocked }
    }

    fn snapshot(processes: Vec<ProcessInfo>, sockets: &[u64]) -> Snapshot {
        let instances = processes
            .iter()
            .flat_map(|p| p.epolls.iter().map(move |e| (p.pid, e)))
            .fold(Vec::<FdRef>::new(), |mut v, (pid, e)| {
                if v.len() <= e.instance {
                    v.push(FdRef { pid, fd: e.fd });
                }
                v
            });
        Snapshot {
            processes,
            listeners: sockets
                .iter()
                .map(|&inode| ListenSocket {
                    inode,
                    addr: "0.0.0.0:80".parse().expect("addr"),
                })
                .collect(),
            instances,
            unparsed_watch_lines: 0,
            identity_unknown: false,
            kernel: None,
        }
    }

    fn ep(fd: i32, instance: usize, events: u32) -> EpollFd {
        EpollFd {
            fd,
            instance,
            watches: vec![watch(events)],
        }
    }

    #[test]
    fn threads_sharing_one_epoll() {
        for (events, et, os, max) in [
            (0x19, false, false, 4),
            (0x19 | EPOLLET, true, false, 1),
            (0x19 | EPOLLONESHOT, false, true, 1),
        ] {
            let threads = (10..14)
                .map(|t| thread(t, Blocked::EpollWait { epfd: 4 }))
                .collect();
            let snap = snapshot(vec![process(10, vec![ep(4, 0, events)], threads)], &[INO]);
            let e = &endpoints(&snap)[0];
            assert_eq!(
                e.pattern,
                Pattern::SharedEpoll {
                    threads: 4,
                    edge_triggered: et,
                    oneshot: os
                }
            );
            assert_eq!(e.pattern.expected_woken(), (1, max));
            assert!(e
                .description
                .starts_with("4 threads waiting on one shared epoll on 0.0.0.0:80"));
        }
    }

    #[test]
    fn running_threads_count_as_likely_waiters() {
        // Under load two threads were in user space, two in epoll_wait.
        let threads = vec![
            thread(10, Blocked::EpollWait { epfd: 4 }),
            thread(11, Blocked::Running),
            thread(12, Blocked::Running),
            thread(13, Blocked::EpollWait { epfd: 4 }),
        ];
        let snap = snapshot(vec![process(10, vec![ep(4, 0, 0x19)], threads)], &[INO]);
        let e = &endpoints(&snap)[0];
        assert_eq!(e.sockets[0].watchers[0].waiting_threads, vec![10, 13]);
        assert!(matches!(e.pattern, Pattern::SharedEpoll { threads: 4, .. }));
    }

    #[test]
    fn one_epoll_with_one_waiting_thread_is_an_accept_loop() {
        // tokio: the thread holding the driver waits in epoll_wait, the
        // other workers are parked; any of them may run the accept task.
        let parked = |tid| thread(tid, Blocked::Other { nr: 202 });
        let tokio = process(
            10,
            vec![ep(4, 0, 0x19 | EPOLLET)],
            vec![
                thread(10, Blocked::Other { nr: 7 }),
                thread(11, Blocked::EpollWait { epfd: 4 }),
                parked(12),
                parked(13),
            ],
        );
        let snap = snapshot(vec![tokio.clone()], &[INO]);
        assert_eq!(accept_loop_pids(&snap, &endpoints(&snap)), vec![10]);
        // The driver busy when /proc was read: no waiter seen, still one loop.
        let mut busy = tokio.clone();
        busy.threads[1] = parked(11);
        let snap = snapshot(vec![busy], &[INO]);
        assert_eq!(accept_loop_pids(&snap, &endpoints(&snap)), vec![10]);
        // Two threads waiting on the one epoll: a shared epoll, they compete.
        let mut shared = tokio.clone();
        shared.threads[2] = thread(12, Blocked::EpollWait { epfd: 4 });
        let snap = snapshot(vec![shared], &[INO]);
        assert!(accept_loop_pids(&snap, &endpoints(&snap)).is_empty());
        // An epoll per thread (haproxy), one caught waiting: separate workers.
        let epolls = (0..4).map(|i| ep(4 + i, i as usize, 0x19)).collect();
        let mut threads: Vec<ThreadInfo> = (0..4).map(|i| parked(10 + i)).collect();
        threads[0] = thread(10, Blocked::EpollWait { epfd: 4 });
        let snap = snapshot(vec![process(10, epolls, threads)], &[INO]);
        assert!(accept_loop_pids(&snap, &endpoints(&snap)).is_empty());
        // One epoll and a thread blocked in accept() too: two ways to wait.
        let mut both = tokio.clone();
        both.threads[2] = thread(12, Blocked::Accept { fd: 3 });
        let snap = snapshot(vec![both], &[INO]);
        assert!(accept_loop_pids(&snap, &endpoints(&snap)).is_empty());
        // A single-threaded worker is its own thread: nothing to group.
        let single = process(10, vec![ep(4, 0, 0x19)], vec![parked(10)]);
        let snap = snapshot(vec![single], &[INO]);
        assert!(accept_loop_pids(&snap, &endpoints(&snap)).is_empty());
    }

    #[test]
    fn threads_each_with_own_epoll() {
        let epolls = (0..4).map(|i| ep(4 + i, i as usize, 0x19)).collect();
        let threads = (0..4)
            .map(|i| thread(10 + i, Blocked::EpollWait { epfd: 4 + i as i32 }))
            .collect();
        let snap = snapshot(vec![process(10, epolls, threads)], &[INO]);
        let e = &endpoints(&snap)[0];
        assert_eq!(
            e.pattern,
            Pattern::EpollPerWorker {
                instances: 4,
                exclusive: 0,
                threads: true
            }
        );
        assert_eq!(
            e.description,
            "4 threads of process 10, each with its own epoll on 0.0.0.0:80, no EPOLLEXCLUSIVE"
        );
    }

    #[test]
    fn partly_exclusive_wakes_the_non_exclusive_ones_plus_one() {
        let procs = (0..4)
            .map(|i| {
                let ev = if i < 3 { 0x19 | EPOLLEXCLUSIVE } else { 0x19 };
                process(
                    10 + i,
                    vec![ep(4, i as usize, ev)],
                    vec![thread(10 + i, Blocked::EpollWait { epfd: 4 })],
                )
            })
            .collect();
        let e = &endpoints(&snapshot(procs, &[INO]))[0];
        assert_eq!(e.pattern.expected_woken(), (2, 2));
        assert!(e.pattern.herd_prone());
        assert!(
            e.description
                .ends_with("only 3 of them with EPOLLEXCLUSIVE"),
            "{}",
            e.description
        );
    }

    #[test]
    fn blocking_accept_and_single_and_idle() {
        let procs = (0..3)
            .map(|i| {
                process(
                    10 + i,
                    vec![],
                    vec![thread(10 + i, Blocked::Accept { fd: 3 })],
                )
            })
            .collect();
        let e = &endpoints(&snapshot(procs, &[INO]))[0];
        assert_eq!(e.pattern, Pattern::BlockingAccept { threads: 3 });
        assert_eq!(
            e.description,
            "3 tasks blocked in accept() on 0.0.0.0:80, no epoll"
        );
        assert!(!e.pattern.herd_prone());

        let one = vec![process(
            10,
            vec![ep(4, 0, 0x19)],
            vec![thread(10, Blocked::EpollWait { epfd: 4 })],
        )];
        assert_eq!(
            endpoints(&snapshot(one, &[INO]))[0].pattern,
            Pattern::SingleWaiter
        );

        let idle = vec![process(
            10,
            vec![],
            vec![thread(10, Blocked::Other { nr: 7 })],
        )];
        let e = &endpoints(&snapshot(idle, &[INO]))[0];
        assert_eq!(e.pattern, Pattern::NoWaiter);
        assert_eq!(e.pattern.expected_woken(), (0, 0));
    }

    #[test]
    fn workers_in_select_over_the_listener_are_a_herd() {
        // gunicorn: the master holds fd 3 but selects over fds < 3 only.
        let mut procs: Vec<ProcessInfo> = (0..4)
            .map(|i| {
                process(
                    11 + i,
                    vec![],
                    vec![thread(11 + i, Blocked::Select { nfds: 8 })],
                )
            })
            .collect();
        procs.insert(
            0,
            process(10, vec![], vec![thread(10, Blocked::Select { nfds: 3 })]),
        );
        let e = &endpoints(&snapshot(procs.clone(), &[INO]))[0];
        assert_eq!(e.pattern, Pattern::SelectPerWorker { tasks: 4 });
        assert_eq!(e.sockets[0].polling_threads, vec![11, 12, 13, 14]);
        assert_eq!(e.pattern.expected_woken(), (4, 4));
        assert!(e.pattern.herd_prone());
        assert_eq!(e.acceptors, 4);
        assert_eq!(
            e.description,
            "4 tasks waiting in select()/poll() on the shared socket 0.0.0.0:80, no epoll"
        );
        // poll(): counted when the process has no epoll to wait in instead.
        procs[1].threads[0].blocked = Blocked::Poll;
        let e = &endpoints(&snapshot(procs, &[INO]))[0];
        assert_eq!(e.pattern, Pattern::SelectPerWorker { tasks: 4 });
        let one = vec![process(
            10,
            vec![],
            vec![thread(10, Blocked::Select { nfds: 4 })],
        )];
        assert_eq!(
            endpoints(&snapshot(one, &[INO]))[0].pattern,
            Pattern::SingleWaiter
        );
    }

    #[test]
    fn acceptors_count_the_tasks_that_can_take_a_connection() {
        for (p, n) in [
            (
                Pattern::EpollPerWorker {
                    instances: 4,
                    exclusive: 4,
                    threads: false,
                },
                4,
            ),
            (
                Pattern::SharedEpoll {
                    threads: 3,
                    edge_triggered: false,
                    oneshot: false,
                },
                3,
            ),
            (
                Pattern::Reuseport {
                    sockets: 2,
                    max_woken: 1,
                },
                2,
            ),
            (Pattern::BlockingAccept { threads: 5 }, 5),
            (Pattern::SelectPerWorker { tasks: 6 }, 6),
            (
                Pattern::TakingTurns {
                    workers: 4,
                    watching: 1,
                    locked: 0,
                },
                4,
            ),
            (Pattern::SingleWaiter, 1),
            (Pattern::NoWaiter, 0),
        ] {
            assert_eq!(p.acceptors(), n, "{p:?}");
        }
        assert_eq!(fixture_endpoints("nginx-default", 2162)[0].acceptors, 4);
        assert_eq!(fixture_endpoints("nginx-reuseport", 4519)[0].acceptors, 4);
        assert_eq!(
            fixture_endpoints("nginx-accept-mutex", 5275)[0].acceptors,
            4
        );
        assert_eq!(
            fixture_endpoints("lighttpd-4-workers", 5790)[0].acceptors,
            4
        );
    }

    #[test]
    fn acceptor_tasks_name_the_workers_not_the_master() {
        for (name, root, workers) in [
            ("nginx-default", 2162, [2164, 2165, 2166, 2167]),
            ("nginx-reuseport", 4519, [4524, 4525, 4526, 4527]),
            ("nginx-accept-mutex", 5275, [5282, 5283, 5284, 5285]),
            ("lighttpd-4-workers", 5790, [5792, 5793, 5794, 5796]),
        ] {
            let distinct = |_: FdRef, _: FdRef| Some(false);
            let snap = read_snapshot(&fixture(name), root, &distinct).expect("fixture");
            let e = &endpoints(&snap)[0];
            let tasks = acceptor_tasks(&snap, e);
            let want: Vec<(u32, u32)> = workers.iter().map(|&p| (p, p)).collect();
            assert_eq!(tasks, want, "{name}");
            assert_eq!(tasks.len(), e.acceptors, "{name}");
        }
    }

    #[test]
    fn io_uring_accepts_armed_are_one_ring_woken_from_5_18_and_a_herd_before() {
        // `serve --model io-uring`, as /proc showed it: each worker sleeps in
        // io_uring_enter with an IORING_OP_ACCEPT armed in its ring.
        let procs: Vec<ProcessInfo> = (0..4)
            .map(|i| ProcessInfo {
                uring_accepts: 1,
                ..process(10 + i, Vec::new(), vec![thread(10 + i, Blocked::Uring)])
            })
            .collect();
        let mut snap = snapshot(procs, &[INO]);
        let e = endpoints(&snap)[0].clone();
        assert_eq!(
            e.pattern,
            Pattern::UringAccept {
                accepts: 4,
                exclusive: true
            }
        );
        assert_eq!((e.pattern.expected_woken(), e.acceptors), ((1, 1), 4));
        assert_eq!(
            e.description,
            "4 io_uring accepts (IORING_OP_ACCEPT) armed on 0.0.0.0:80 (no epoll or accept() \
             waits on it); io_uring waits for a connection exclusively (Linux 5.18+): one ring \
             is woken per connection"
        );
        assert_eq!(
            acceptor_tasks(&snap, &e),
            vec![(10, 10), (11, 11), (12, 12), (13, 13)]
        );
        snap.kernel = Some((5, 10));
        let old = &endpoints(&snap)[0];
        assert_eq!(
            old.pattern,
            Pattern::UringAccept {
                accepts: 4,
                exclusive: false
            }
        );
        assert!(old.pattern.herd_prone());
        assert_eq!(old.pattern.expected_woken(), (4, 4));
        assert!(old.description.ends_with(
            "before Linux 5.18 io_uring does not wait exclusively: every ring is woken per \
             connection"
        ));
        snap.kernel = Some((5, 18));
        assert!(!endpoints(&snap)[0].pattern.herd_prone());
        // A ring beside an epoll with a waiter on the socket is not an
        // io_uring server's setup: the epoll decides.
        let mut mixed = snap.clone();
        mixed.processes[0].epolls = vec![ep(6, 0, 0x19)];
        mixed.processes[0].threads = vec![thread(10, Blocked::EpollWait { epfd: 6 })];
        assert!(!matches!(
            endpoints(&mixed)[0].pattern,
            Pattern::UringAccept { .. }
        ));
    }

    #[test]
    fn accept_sleepers_beside_idle_epolls_are_blocking_accept() {
        // httpd prefork with one `Listen`, as /proc showed it: each child's
        // epoll watches the socket, nobody waits in it, the children sleep in
        // accept4(3).
        let procs: Vec<ProcessInfo> = (0..4)
            .map(|i| {
                let pid = 10 + i as u32;
                process(
                    pid,
                    vec![ep(6, i, 0x19)],
                    vec![thread(pid, Blocked::Accept { fd: 3 })],
                )
            })
            .collect();
        let snap = snapshot(procs.clone(), &[INO]);
        let e = &endpoints(&snap)[0];
        assert_eq!(e.pattern, Pattern::BlockingAccept { threads: 4 });
        assert!(!e.pattern.herd_prone());
        assert_eq!(
            e.description,
            "4 tasks blocked in accept() on 0.0.0.0:80, epolls watch it, but nobody waits in them"
        );
        assert_eq!(
            acceptor_tasks(&snap, e),
            vec![(10, 10), (11, 11), (12, 12), (13, 13)]
        );
        // httpd prefork's buckets (`ListenCoresBucketsRatio`): an SO_REUSEPORT
        // pair, two children blocked in accept() on each, one per child.
        let bucket = |pid: u32, ino: u64| {
            let mut p = process(
                pid,
                vec![ep(6, (pid - 10) as usize, 0x19)],
                vec![thread(pid, Blocked::Accept { fd: 3 })],
            );
            p.listen_fds = vec![ListenFd { fd: 3, inode: ino }];
            p.epolls[0].watches[0].ino = ino;
            p
        };
        let snap = snapshot(
            vec![
                bucket(10, INO),
                bucket(11, INO + 1),
                bucket(12, INO),
                bucket(13, INO + 1),
            ],
            &[INO, INO + 1],
        );
        let e = &endpoints(&snap)[0];
        assert_eq!(
            e.pattern,
            Pattern::Reuseport {
                sockets: 2,
                max_woken: 1
            }
        );
        assert_eq!(
            e.acceptors, 4,
            "one per child, not its epoll and its accept"
        );
        assert_eq!(
            e.description,
            "SO_REUSEPORT group of 2 listening sockets on 0.0.0.0:80, each with tasks blocked in accept()"
        );
        // One of them waiting in its epoll instead: that epoll can be woken
        // with the accept sleepers, as before.
        let mut mixed = procs;
        mixed[0].threads[0].blocked = Blocked::EpollWait { epfd: 6 };
        let e = &endpoints(&snapshot(mixed, &[INO]))[0];
        assert!(
            matches!(e.pattern, Pattern::EpollPerWorker { instances: 4, .. }),
            "{:?}",
            e.pattern
        );
    }

    #[test]
    fn workers_waiting_for_an_accept_mutex_take_turns() {
        // httpd prefork with two `Listen`s, as /proc showed it: every child's
        // epoll watches the socket, one child waits in it, the others in
        // fcntl(F_SETLKW) on the accept mutex.
        let lock = Blocked::Lock { nr: 72 };
        let procs = (0..4)
            .map(|i| {
                let pid = 10 + i as u32;
                let blocked = if i == 0 {
                    Blocked::EpollWait { epfd: 8 }
                } else {
                    lock
                };
                process(pid, vec![ep(8, i, 0x19)], vec![thread(pid, blocked)])
            })
            .collect::<Vec<_>>();
        // A master holding the socket with an epoll of its own (uWSGI's) is
        // not one of the workers.
        let master = process(
            9,
            vec![EpollFd {
                fd: 15,
                instance: 4,
                watches: vec![],
            }],
            vec![thread(9, Blocked::EpollWait { epfd: 15 })],
        );
        let with_master: Vec<ProcessInfo> = std::iter::once(master).chain(procs.clone()).collect();
        let snap = snapshot(with_master, &[INO]);
        let e = &endpoints(&snap)[0];
        assert_eq!(
            e.pattern,
            Pattern::TakingTurns {
                workers: 4,
                watching: 1,
                locked: 3,
            }
        );
        assert!(!e.pattern.herd_prone());
        assert_eq!(
            e.description,
            "4 worker processes watch 0.0.0.0:80 in their epolls, but 3 of them wait for a lock \
             shared between them (an accept mutex) and 1 waits in its epoll (the workers take turns)"
        );
        assert_eq!(
            acceptor_tasks(&snap, e),
            vec![(10, 10), (11, 11), (12, 12), (13, 13)]
        );
        // httpd's worker MPM: each child's listener thread waits for the
        // lock (or in the epoll), its worker threads on private futexes.
        let threaded: Vec<ProcessInfo> = procs
            .iter()
            .map(|p| {
                let mut p = p.clone();
                let listener = p.threads[0].blocked;
                p.threads = vec![
                    thread(p.pid, Blocked::Other { nr: 0 }),
                    thread(p.pid * 10, Blocked::Other { nr: 202 }),
                    thread(p.pid * 10 + 1, listener),
                ];
                p
            })
            .collect();
        let snap = snapshot(threaded, &[INO]);
        let e = &endpoints(&snap)[0];
        assert!(
            matches!(
                e.pattern,
                Pattern::TakingTurns {
                    workers: 4,
                    watching: 1,
                    locked: 3
                }
            ),
            "{:?}",
            e.pattern
        );
        assert_eq!(
            acceptor_tasks(&snap, e),
            vec![(10, 101), (11, 111), (12, 121), (13, 131)]
        );
        // The holder busy with a connection: nobody in an epoll.
        let mut busy = procs.clone();
        busy[0].threads[0].blocked = Blocked::Other { nr: 0 };
        let e = &endpoints(&snapshot(busy, &[INO]))[0];
        assert!(
            matches!(
                e.pattern,
                Pattern::TakingTurns {
                    watching: 0,
                    locked: 3,
                    ..
                }
            ),
            "{:?}",
            e.pattern
        );
        // Two epolls with a waiter each are a herd whatever else waits.
        let mut two = procs.clone();
        two[1].threads[0].blocked = Blocked::EpollWait { epfd: 8 };
        let e = &endpoints(&snapshot(two, &[INO]))[0];
        assert!(matches!(
            e.pattern,
            Pattern::EpollPerWorker { instances: 4, .. }
        ));
        // One worker in the lock is not a queue of them (and a herd server's
        // busy workers are not in a lock at all).
        let mut one = procs;
        for p in &mut one[2..] {
            p.threads[0].blocked = Blocked::Other { nr: 0 };
        }
        let e = &endpoints(&snapshot(one, &[INO]))[0];
        assert!(matches!(
            e.pattern,
            Pattern::EpollPerWorker { instances: 4, .. }
        ));
    }

    #[test]
    fn acceptor_tasks_of_threads() {
        // One shared epoll: the threads waiting in it, and the running ones.
        let threads = vec![
            thread(10, Blocked::EpollWait { epfd: 4 }),
            thread(11, Blocked::Running),
            thread(12, Blocked::Other { nr: 7 }),
            thread(13, Blocked::EpollWait { epfd: 4 }),
        ];
        let snap = snapshot(vec![process(10, vec![ep(4, 0, 0x19)], threads)], &[INO]);
        let e = &endpoints(&snap)[0];
        assert_eq!(acceptor_tasks(&snap, e), vec![(10, 10), (10, 11), (10, 13)]);
        // A master holding the shared epoll but waiting elsewhere is not a worker.
        let master = process(
            9,
            vec![ep(4, 0, 0x19)],
            vec![thread(9, Blocked::Other { nr: 61 })],
        );
        let workers = (10..12).map(|t| {
            process(
                t,
                vec![ep(4, 0, 0x19)],
                vec![thread(t, Blocked::EpollWait { epfd: 4 })],
            )
        });
        let snap = snapshot(std::iter::once(master).chain(workers).collect(), &[INO]);
        let e = &endpoints(&snap)[0];
        assert_eq!(acceptor_tasks(&snap, e), vec![(10, 10), (11, 11)]);
        // Blocking accept and select(): the sleeping threads, with their process.
        let threads = (20..23)
            .map(|t| thread(t, Blocked::Accept { fd: 3 }))
            .collect();
        let snap = snapshot(vec![process(20, vec![], threads)], &[INO]);
        let e = &endpoints(&snap)[0];
        assert_eq!(acceptor_tasks(&snap, e), vec![(20, 20), (20, 21), (20, 22)]);
        let procs = (30..32)
            .map(|p| process(p, vec![], vec![thread(p, Blocked::Select { nfds: 8 })]))
            .collect();
        let snap = snapshot(procs, &[INO]);
        let e = &endpoints(&snap)[0];
        assert_eq!(acceptor_tasks(&snap, e), vec![(30, 30), (31, 31)]);
        // Nobody waiting: nobody named.
        let idle = vec![process(
            40,
            vec![],
            vec![thread(40, Blocked::Other { nr: 7 })],
        )];
        let snap = snapshot(idle, &[INO]);
        assert!(acceptor_tasks(&snap, &endpoints(&snap)[0]).is_empty());
    }

    #[test]
    fn accept_mutex_with_no_holder() {
        // Four workers with epolls watching other things, none the listener.
        let procs = (0..4)
            .map(|i| {
                let mut e = ep(4, i as usize, 0x19);
                e.watches[0].ino = 5;
                process(
                    10 + i,
                    vec![e],
                    vec![thread(10 + i, Blocked::EpollWait { epfd: 4 })],
                )
            })
            .collect();
        let e = &endpoints(&snapshot(procs, &[INO]))[0];
        assert_eq!(
            e.pattern,
            Pattern::TakingTurns {
                workers: 4,
                watching: 0,
                locked: 0,
            }
        );
        assert!(
            e.description.contains("no epoll watches it"),
            "{}",
            e.description
        );
    }

    #[test]
    fn reuseport_with_a_herd_inside_one_socket() {
        // Socket 2000 is watched by two non-exclusive epolls.
        let mut procs: Vec<ProcessInfo> = (0..3)
            .map(|i| {
                process(
                    10 + i,
                    vec![ep(4, i as usize, 0x19)],
                    vec![thread(10 + i, Blocked::EpollWait { epfd: 4 })],
                )
            })
            .collect();
        procs[0].listen_fds[0].inode = 2000;
        procs[0].epolls[0].watches[0].ino = 2000;
        procs[1].listen_fds[0].inode = 2000;
        procs[1].epolls[0].watches[0].ino = 2000;
        let e = &endpoints(&snapshot(procs, &[INO, 2000]))[0];
        assert_eq!(
            e.pattern,
            Pattern::Reuseport {
                sockets: 2,
                max_woken: 2
            }
        );
        assert!(e.pattern.herd_prone());
        assert!(
            e.description.contains("epolls watching each: [1, 2]"),
            "{}",
            e.description
        );
    }

    #[test]
    fn one_epoll_shared_across_processes() {
        // Created before fork: one instance, four processes, one waiter each.
        let procs = (0..4)
            .map(|i| {
                process(
                    10 + i,
                    vec![ep(4, 0, 0x19)],
                    vec![thread(10 + i, Blocked::EpollWait { epfd: 4 })],
                )
            })
            .collect();
        let e = &endpoints(&snapshot(procs, &[INO]))[0];
        assert_eq!(e.sockets[0].watchers.len(), 1);
        assert_eq!(e.sockets[0].watchers[0].pids, vec![10, 11, 12, 13]);
        assert!(matches!(e.pattern, Pattern::SharedEpoll { threads: 4, .. }));
    }
}
