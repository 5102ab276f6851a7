//! What to change, naming the concrete setting of the server at hand
//! (its knob, the version that has it, and where that is documented), or
//! the system calls for a server herdtrace does not know.
use serde::Serialize;

use super::layout::Pattern;
use super::server::ServerId;
pub use super::server::ServerKind;
use crate::report::{
    balance::{BalanceFinding, BalancePattern, BalanceVerdict},
    verdict::Verdict,
};

/// A server's setting named by the advice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Knob {
    pub server: &'static str,
    /// As written in the server's configuration or command line.
    pub setting: &'static str,
    /// The version that has it.
    pub since: &'static str,
    /// Where it is documented (documentation page or commit).
    pub source: &'static str,
}

impl Knob {
    /// "`setting` (since; source)".
    pub fn cite(&self) -> String {
        format!("{} {}: {}", self.since, self.setting, self.source)
    }
}

pub mod knobs {
    //! The settings the advice names, one constant each.
    use super::Knob;

    pub const NGINX_REUSEPORT: Knob = Knob {
        server: "nginx",
        setting: "listen ADDR:PORT reuseport;",
        since: "nginx 1.9.1",
        source:
            "nginx documentation, ngx_http_core_module, directive `listen`, parameter `reuseport`",
    };
    pub const NGINX_ACCEPT_MUTEX: Knob = Knob {
        server: "nginx",
        setting: "accept_mutex on;",
        since: "nginx 1.11.3 (default off since then, with EPOLLEXCLUSIVE on Linux >= 4.5)",
        source: "nginx documentation, ngx_core_module, directive `accept_mutex`",
    };
    pub const LIGHTTPD_MAX_WORKER: Knob = Knob {
        server: "lighttpd",
        setting: "server.max-worker = 0",
        since: "lighttpd 1.4 (no EPOLLEXCLUSIVE or SO_REUSEPORT option in any version)",
        source: "lighttpd documentation, configuration option `server.max-worker`",
    };
    pub const APACHE_BUCKETS: Knob = Knob {
        server: "Apache httpd",
        setting: "ListenCoresBucketsRatio N",
        since: "Apache httpd 2.4.17 (event, worker and prefork MPMs)",
        source: "Apache httpd documentation, mpm_common, directive `ListenCoresBucketsRatio`",
    };
    pub const APACHE_ACCEPT_MUTEX: Knob = Knob {
        server: "Apache httpd",
        setting: "Mutex MECHANISM mpm-accept",
        since: "Apache httpd 2.3.4 (AcceptMutex before; prefork and worker MPMs, with more than one Listen)",
        source: "Apache httpd documentation, core, directive `Mutex` (mutex `mpm-accept`)",
    };
    pub const UWSGI_THUNDER_LOCK: Knob = Knob {
        server: "uWSGI",
        setting: "--thunder-lock (ini: thunder-lock = true)",
        since: "uWSGI 1.4.6",
        source: "uWSGI documentation, article \"Serializing accept(), AKA Thundering Herd, AKA the Zeeg Problem\"",
    };
    pub const GUNICORN_REUSE_PORT: Knob = Knob {
        server: "gunicorn",
        setting: "--reuse-port (setting reuse_port)",
        since: "gunicorn releases after 23.0.0 give each worker its own socket with it (pull request #2938); 19.7 to 23.0.0 only set SO_REUSEPORT on the one shared socket",
        source: "gunicorn documentation, settings, `reuse_port`; benoitc/gunicorn pull request #2938 \"Fix reuse-port to balance requests across Gunicorn workers\"",
    };
    pub const NODE_SCHED_RR: Knob = Knob {
        server: "Node.js",
        setting: "cluster.schedulingPolicy = cluster.SCHED_RR (or NODE_CLUSTER_SCHED_POLICY=rr)",
        since: "Node.js 0.11.2 (the default on every platform but Windows)",
        source: "Node.js documentation, cluster, `cluster.schedulingPolicy`",
    };
    pub const NODE_REUSE_PORT: Knob = Knob {
        server: "Node.js",
        setting: "server.listen({ port, reusePort: true })",
        since: "Node.js 22.12.0 and 23.1.0",
        source: "Node.js documentation, net, `server.listen(options)`, option `reusePort`",
    };
    pub const HAPROXY_SHARDS: Knob = Knob {
        server: "HAProxy",
        setting: "bind ADDR:PORT shards by-thread",
        since: "HAProxy 2.6",
        source: "HAProxy configuration manual (configuration.txt), bind option `shards`",
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// Nothing to change.
    pub fine: bool,
    /// The conclusion, one sentence.
    pub headline: String,
    /// Concrete changes (empty when fine) or remarks.
    pub items: Vec<String>,
    /// The server settings named in `items`.
    pub knobs: Vec<Knob>,
}

/// Advice for one endpoint: the setup decides what to change; the
/// measurement (None: no trace) confirms or qualifies it.
pub fn advise(server: &ServerId, pattern: Pattern, measured: Option<Verdict>) -> Advice {
    let kind = &server.kind;
    let herd_measured = matches!(
        measured,
        Some(Verdict::Herd | Verdict::MildHerd | Verdict::IntermittentHerd)
    );
    // uWSGI's thunder lock: every worker's epoll watches the socket, but
    // only the lock holder waits in it.
    let serialized = *kind == ServerKind::Uwsgi && server.thunder_lock;
    if !pattern.herd_prone() || (serialized && !herd_measured) {
        let mut a = fine_advice(server, pattern);
        if herd_measured {
            // The setup should wake one task, yet more were woken: say so
            // rather than call it fine.
            a.fine = false;
            let setup = std::mem::replace(
                &mut a.headline,
                "the setup should wake one task per connection, but the trace measured more".into(),
            );
            a.items.insert(0, format!("setup: {setup}"));
            a.items.push(
                "check for other processes or threads on the same socket that this pid's \
                 tree does not include, and compare with `herdtrace --pid PID --per-conn`"
                    .into(),
            );
        }
        return a;
    }
    let (lo, hi) = pattern.expected_woken();
    let expect = if lo == hi {
        format!("every connection wakes {hi} tasks when the workers are idle")
    } else {
        format!("a connection can wake {lo} to {hi} tasks when the workers are idle")
    };
    let headline = match measured {
        Some(Verdict::NoHerd) => format!(
            "herd-prone setup ({expect}); none measured in this trace, most likely because \
             the workers were busy: idle workers will be woken together"
        ),
        Some(Verdict::NoData) | None => format!("herd-prone setup: {expect}"),
        Some(_) => format!("thundering herd: {expect}"),
    };
    let (items, knobs) = herd_fixes(server, pattern);
    Advice {
        fine: false,
        headline,
        items,
        knobs,
    }
}

fn fine_advice(server: &ServerId, pattern: Pattern) -> Advice {
    let (headline, mut items): (String, Vec<String>) = match pattern {
        Pattern::EpollPerWorker { .. } if server.kind == ServerKind::Uwsgi && server.thunder_lock => (
            "fine: uWSGI's --thunder-lock lets one worker at a time wait on the socket, so one \
             is woken per connection"
                .into(),
            vec![],
        ),
        Pattern::EpollPerWorker { .. } => (
            "fine: EPOLLEXCLUSIVE in every epoll, one worker is woken per connection".into(),
            vec![],
        ),
        Pattern::SharedEpoll { .. } => (
            "fine: the shared epoll watches the listener edge-triggered or one-shot, so a \
             connection wakes one thread"
                .into(),
            vec![],
        ),
        Pattern::Reuseport { .. } => (
            "fine: SO_REUSEPORT, the kernel hashes each connection to one socket and wakes \
             one worker"
                .into(),
            vec![
                "the hash ignores how busy a worker is: a busy worker's queue waits \
                  while others idle (EPOLLEXCLUSIVE on one shared socket balances better)"
                    .into(),
            ],
        ),
        Pattern::BlockingAccept { .. } => (
            "fine: accept() waits are exclusive, the kernel wakes one task per connection".into(),
            vec![],
        ),
        Pattern::TakingTurns { locked, .. } if locked > 0 => (
            "fine: the workers take turns at a lock (an accept mutex), so one at a time waits \
             on the listener and one is woken per connection"
                .into(),
            vec![],
        ),
        Pattern::TakingTurns { .. } => (
            "fine: one worker at a time watches the listener, so one is woken per connection"
                .into(),
            vec![],
        ),
        Pattern::UringAccept { .. } => (
            "fine: io_uring waits for a connection exclusively (Linux 5.18+), one ring is \
             woken per connection"
                .into(),
            vec![],
        ),
        Pattern::SingleWaiter => (
            "fine: a single task waits for connections, there is no herd to wake".into(),
            vec![],
        ),
        Pattern::NoWaiter | Pattern::SelectPerWorker { .. } => (
            "no task waited on the listener when /proc was read; nothing to change from the \
             setup alone"
                .into(),
            vec![],
        ),
    };
    let mut knobs = Vec::new();
    match (server.kind, pattern) {
        (ServerKind::Nginx, Pattern::EpollPerWorker { .. }) => {
            items.push("this is nginx's default (`accept_mutex off;`, Linux >= 4.5)".into());
            knobs.push(knobs::NGINX_ACCEPT_MUTEX);
        }
        (ServerKind::Nginx, Pattern::TakingTurns { .. }) => {
            items.push(
                "this is nginx's `accept_mutex on;`; `accept_mutex off;` (the default since \
                 1.11.3) uses EPOLLEXCLUSIVE instead and spares the `accept_mutex_delay` wait"
                    .into(),
            );
            knobs.push(knobs::NGINX_ACCEPT_MUTEX);
        }
        (ServerKind::Nginx, Pattern::Reuseport { .. }) => {
            items.insert(0, "this is nginx's `listen ... reuseport;`".into());
            knobs.push(knobs::NGINX_REUSEPORT);
        }
        (ServerKind::ApacheHttpd, Pattern::Reuseport { .. }) => {
            items.insert(
                0,
                "this is httpd's `ListenCoresBucketsRatio`: one SO_REUSEPORT listening \
                 socket (bucket) per group of children"
                    .into(),
            );
            knobs.push(knobs::APACHE_BUCKETS);
        }
        (ServerKind::ApacheHttpd, Pattern::TakingTurns { locked, .. }) if locked > 0 => {
            items.push(
                "this is httpd's accept mutex: with more than one `Listen`, prefork and worker \
                 children take turns at it; `ListenCoresBucketsRatio` splits the children into \
                 buckets with their own sockets and mutex"
                    .into(),
            );
            knobs.push(knobs::APACHE_ACCEPT_MUTEX);
        }
        (ServerKind::Uwsgi, Pattern::EpollPerWorker { .. }) if server.thunder_lock => {
            knobs.push(knobs::UWSGI_THUNDER_LOCK);
        }
        // Caught while only the lock holder had the socket in its epoll.
        (ServerKind::Uwsgi, Pattern::TakingTurns { .. }) if server.thunder_lock => {
            items.push("this is uWSGI's `--thunder-lock`".into());
            knobs.push(knobs::UWSGI_THUNDER_LOCK);
        }
        (ServerKind::Nodejs, Pattern::SingleWaiter) => {
            items.push(
                "this is Node.js cluster's round-robin scheduling (SCHED_RR, the default on \
                 Linux): the primary accepts every connection and hands it to a worker in turn"
                    .into(),
            );
            knobs.push(knobs::NODE_SCHED_RR);
        }
        (ServerKind::Haproxy, Pattern::Reuseport { .. }) => {
            items.insert(0, "this is HAProxy's `shards` on the `bind` line".into());
            knobs.push(knobs::HAPROXY_SHARDS);
        }
        _ => {}
    }
    for k in &knobs {
        items.push(format!("source: {}", k.cite()));
    }
    Advice {
        fine: true,
        headline,
        items,
        knobs,
    }
}

/// The changes for a herd-prone setup, in the server's own terms.
fn herd_fixes(server: &ServerId, pattern: Pattern) -> (Vec<String>, Vec<Knob>) {
    if let Pattern::UringAccept { .. } = pattern {
        // The kernel's doing, whatever the server: no server setting changes it.
        return (
            vec![
                "upgrade to Linux 5.18 or later: io_uring then waits for a connection \
                 exclusively (`EPOLLEXCLUSIVE` on its internal poll), one ring is woken per \
                 connection"
                    .into(),
                "or give each worker's ring its own SO_REUSEPORT listening socket: the kernel \
                 hashes each connection to one socket"
                    .into(),
            ],
            vec![],
        );
    }
    let shared_lt = matches!(pattern, Pattern::SharedEpoll { .. });
    let (mut items, knobs): (Vec<String>, Vec<Knob>) = match server.kind {
        ServerKind::Nginx => (
            vec![
                "add `reuseport` to the `listen` directive (`listen ADDR:PORT reuseport;`): one \
                 SO_REUSEPORT socket per worker"
                    .into(),
                "or set `accept_mutex on;` in `events {}`: one worker watches the listener at a \
                 time"
                    .into(),
                "nginx >= 1.11.3 on Linux >= 4.5 registers the listener with EPOLLEXCLUSIVE when \
                 `accept_mutex` is off: an older nginx is worth upgrading"
                    .into(),
            ],
            vec![knobs::NGINX_REUSEPORT, knobs::NGINX_ACCEPT_MUTEX],
        ),
        ServerKind::Lighttpd => (
            vec![
                "lighttpd has no EPOLLEXCLUSIVE or SO_REUSEPORT setting: with \
                 `server.max-worker = N` every worker's epoll is woken for every connection"
                    .into(),
                "remove `server.max-worker` (or set it to 0): one lighttpd process has no herd; \
                 keep the workers only if one process cannot keep up with the load, and accept \
                 the wasted wakeups measured above"
                    .into(),
            ],
            vec![knobs::LIGHTTPD_MAX_WORKER],
        ),
        ServerKind::ApacheHttpd => (
            vec![
                format!(
                    "set `ListenCoresBucketsRatio N` (httpd >= 2.4.17): httpd then opens (online \
                     CPUs / N) SO_REUSEPORT listening sockets, buckets, and gives each child one, \
                     so a connection wakes only the children of one bucket; with one bucket per \
                     child (at least as many buckets as `StartServers`) it wakes one{}",
                    server
                        .mpm
                        .as_deref()
                        .map(|m| format!(" (this httpd runs mpm_{m})"))
                        .unwrap_or_default()
                ),
                "or fewer children with more threads each (`StartServers`, `ThreadsPerChild`): \
                 with mpm_event one listener thread per child waits on the socket, so fewer \
                 children are fewer tasks to wake"
                    .into(),
            ],
            vec![knobs::APACHE_BUCKETS],
        ),
        ServerKind::Uwsgi => (
            vec![
                "add `--thunder-lock` (ini: `thunder-lock = true`): each worker takes a lock \
                 before waiting on the socket, so one worker is woken per connection"
                    .into(),
            ],
            vec![knobs::UWSGI_THUNDER_LOCK],
        ),
        ServerKind::Gunicorn => (
            vec![
                format!(
                    "gunicorn's {} workers all wait on the one socket the master opened; with a \
                     gunicorn newer than 23.0.0, `--reuse-port` gives each worker its own \
                     SO_REUSEPORT socket, so the kernel picks one worker per connection",
                    server.worker_class.as_deref().unwrap_or("sync")
                ),
                "with gunicorn <= 23.0.0 (Debian 12 has 20.1.0) `--reuse-port` only marks the \
                 shared socket; run several gunicorn instances with `--workers 1 --reuse-port` \
                 on the same address instead: each binds its own socket"
                    .into(),
            ],
            vec![knobs::GUNICORN_REUSE_PORT],
        ),
        ServerKind::Nodejs => (
            vec![
                "the workers accept on the shared socket (cluster.SCHED_NONE): set \
                 `cluster.schedulingPolicy = cluster.SCHED_RR` before forking, or \
                 NODE_CLUSTER_SCHED_POLICY=rr (the default on Linux), so the primary accepts \
                 and hands connections to the workers in turn"
                    .into(),
                "or, with Node.js >= 22.12, listen in each worker with \
                 `server.listen({ port, reusePort: true })`: one SO_REUSEPORT socket per worker"
                    .into(),
            ],
            vec![knobs::NODE_SCHED_RR, knobs::NODE_REUSE_PORT],
        ),
        ServerKind::Haproxy => (
            vec![
                "add `shards by-thread` to the `bind` line (`bind ADDR:PORT shards by-thread`): \
                 one SO_REUSEPORT socket per thread, so a connection wakes one thread"
                    .into(),
                "HAProxy's accepted connections are then still spread over the threads by \
                 `tune.listener.multi-queue` (on by default)"
                    .into(),
            ],
            vec![knobs::HAPROXY_SHARDS],
        ),
        ServerKind::BuiltIn if shared_lt => (
            vec![
                "`herdtrace serve --model shared-epoll --edge-triggered` (EPOLLET), or \
                 `--model exclusive` / `--model reuseport`"
                    .into(),
            ],
            vec![],
        ),
        ServerKind::BuiltIn => (
            vec![
                "`herdtrace serve --model exclusive` (EPOLLEXCLUSIVE) or `--model reuseport` \
                 (SO_REUSEPORT)"
                    .into(),
            ],
            vec![],
        ),
        ServerKind::Generic => (generic_fixes(pattern), vec![]),
    };
    for k in &knobs {
        items.push(format!("source: {}", k.cite()));
    }
    (items, knobs)
}

/// The system calls to change, for a server without known settings.
fn generic_fixes(pattern: Pattern) -> Vec<String> {
    match pattern {
        Pattern::SharedEpoll { .. } => vec![
            "register the listening socket with EPOLLET (edge-triggered) or EPOLLONESHOT \
             (re-arm with EPOLL_CTL_MOD after accepting) in the shared epoll: level-triggered \
             lets each woken thread wake the next; EPOLLEXCLUSIVE does not help inside one \
             instance"
                .into(),
            "or give each thread its own epoll with the listener added as \
             `EPOLLIN | EPOLLEXCLUSIVE`, or its own SO_REUSEPORT socket"
                .into(),
        ],
        Pattern::SelectPerWorker { .. } => vec![
            "select() and poll() waits are never exclusive: wait in an epoll with the listener \
             added as `EPOLLIN | EPOLLEXCLUSIVE` (Linux >= 4.5), block in accept() (an \
             exclusive wait), or give each worker its own SO_REUSEPORT socket"
                .into(),
        ],
        _ => vec![
            "add EPOLLEXCLUSIVE when adding the listening socket to each worker's epoll \
             (`epoll_ctl(EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLEXCLUSIVE)`, Linux >= 4.5)"
                .into(),
            "or give each worker its own listening socket with SO_REUSEPORT (set before \
             bind): the kernel then picks one socket per connection"
                .into(),
        ],
    }
}

/// What the kernel version changes for the balance between workers.
pub fn kernel_notes(release: &str) -> Vec<String> {
    let Some(v) = crate::kernel::major_minor(release) else {
        return vec![format!(
            "kernel {release}: version not recognised; EPOLLEXCLUSIVE needs Linux >= 4.5 and \
             SO_REUSEPORT >= 3.9"
        )];
    };
    let has = |m: (u32, u32)| v >= m;
    let mut notes = vec![format!(
        "kernel {release}: EPOLLEXCLUSIVE (4.5+) {}; SO_REUSEPORT (3.9+) {}; a reuseport BPF \
         program to pick the socket by another rule than the hash (SO_ATTACH_REUSEPORT_EBPF, \
         4.6+) {}",
        if has((4, 5)) {
            "available"
        } else {
            "missing: every epoll waiter is woken"
        },
        if has((3, 9)) { "available" } else { "missing" },
        if has((4, 6)) { "available" } else { "missing" },
    )];
    if has((5, 14)) {
        notes.push(
            "Linux >= 5.14: `sysctl net.ipv4.tcp_migrate_req=1` moves the queued connections of \
             a closing SO_REUSEPORT socket to another one of the group (reloads drop none)"
                .into(),
        );
    }
    notes
}

/// Advice on how the accepts were shared, when the trace found one worker
/// taking more than its fair share; None when balanced or not judged.
pub fn balance_advice(
    server: &ServerId,
    patterns: &[Pattern],
    finding: &BalanceFinding,
    kernel: &str,
) -> Option<Advice> {
    if finding.verdict != BalanceVerdict::Imbalanced {
        return None;
    }
    let reuseport = patterns
        .iter()
        .any(|p| matches!(p, Pattern::Reuseport { .. }));
    let mut items = Vec::new();
    let mut knobs = Vec::new();
    if finding.pattern == Some(BalancePattern::TakingTurns) && server.kind == ServerKind::Nginx {
        items.push(
            "`accept_mutex off;` (the default since 1.11.3): every worker keeps the listener in \
             its epoll with EPOLLEXCLUSIVE instead of one holder taking the connections"
                .into(),
        );
        items
            .push("or `listen ADDR:PORT reuseport;`: one socket per worker, spread by hash".into());
        knobs.extend([knobs::NGINX_ACCEPT_MUTEX, knobs::NGINX_REUSEPORT]);
    } else if finding.pattern == Some(BalancePattern::FirstRing) {
        items.push(
            "arm single-shot io_uring accepts, one at a time per ring: each leaves the \
             listener's wait queue when it completes and is queued again at the back, so the \
             rings take turns; or give each ring its own SO_REUSEPORT socket (spread by hash)"
                .into(),
        );
    } else if finding.pattern == Some(BalancePattern::ReuseportHash) || reuseport {
        items.push(
            "SO_REUSEPORT picks a socket by hashing the client's address and port: with few \
             clients (a load balancer with few connections, a test client reusing ports) the \
             hash cannot spread them; more client connections spread better, or go back to one \
             shared socket with EPOLLEXCLUSIVE, which skips a busy worker"
                .into(),
        );
    } else {
        match server.kind {
            ServerKind::Nginx => {
                items.push(
                    "`listen ADDR:PORT reuseport;`: one socket per worker, the kernel spreads \
                     connections by hash instead of waking the most recently idle worker"
                        .into(),
                );
                items.push(
                    "or `accept_mutex on;`: the workers take turns holding the listener (at the \
                     cost of up to `accept_mutex_delay`, 500 ms by default, before an idle \
                     worker takes over)"
                        .into(),
                );
                knobs.extend([knobs::NGINX_REUSEPORT, knobs::NGINX_ACCEPT_MUTEX]);
            }
            ServerKind::Lighttpd => {
                items.push(
                    "lighttpd has no setting for how its workers share connections: every \
                     worker is woken and the first to call accept() wins; fewer workers \
                     (`server.max-worker`) narrow the gap"
                        .into(),
                );
                knobs.push(knobs::LIGHTTPD_MAX_WORKER);
            }
            ServerKind::ApacheHttpd => {
                items.push(
                    "`ListenCoresBucketsRatio N`: one SO_REUSEPORT socket per bucket of \
                     children, connections spread over the buckets by hash"
                        .into(),
                );
                knobs.push(knobs::APACHE_BUCKETS);
            }
            ServerKind::Gunicorn => {
                items.push(
                    "`--reuse-port` with a gunicorn newer than 23.0.0 (or several single-worker \
                     instances with `--reuse-port`): one socket per worker, spread by hash"
                        .into(),
                );
                knobs.push(knobs::GUNICORN_REUSE_PORT);
            }
            ServerKind::Nodejs => {
                items.push(
                    "cluster's round-robin (`cluster.SCHED_RR`, NODE_CLUSTER_SCHED_POLICY=rr) \
                     hands connections to the workers in turn"
                        .into(),
                );
                knobs.push(knobs::NODE_SCHED_RR);
            }
            ServerKind::Haproxy => {
                items.push(
                    "`shards by-thread` on the `bind` line: one socket per thread, spread by hash"
                        .into(),
                );
                knobs.push(knobs::HAPROXY_SHARDS);
            }
            ServerKind::Uwsgi => {
                items.push(
                    "`--thunder-lock`: the workers queue for a lock before waiting on the socket"
                        .into(),
                );
                knobs.push(knobs::UWSGI_THUNDER_LOCK);
            }
            ServerKind::BuiltIn => items.push(
                "`herdtrace serve --model reuseport` (spread by hash) or `--model \
                 blocking-accept` (the accept wait queue is FIFO: round-robin)"
                    .into(),
            ),
            ServerKind::Generic => items.push(
                "give each worker its own SO_REUSEPORT socket (the kernel spreads connections \
                 by hash), or block in accept() (its wait queue is FIFO: the workers take \
                 turns); with EPOLLEXCLUSIVE the most recently idle worker keeps winning"
                    .into(),
            ),
        }
    }
    items.extend(kernel_notes(kernel));
    for k in &knobs {
        items.push(format!("source: {}", k.cite()));
    }
    let top = finding.balance.top.as_ref()?;
    Some(Advice {
        fine: false,
        headline: format!(
            "one worker takes most connections: {}[{}] took {} of the accepts, {:.1}x \
             its fair share ({} of {} workers){}",
            top.comm,
            top.pid,
            crate::report::pct(top.share),
            finding.top_over_fair,
            crate::report::pct(finding.balance.fair_share),
            finding.balance.workers,
            match finding.pattern {
                Some(BalancePattern::Lifo) => "; the LIFO pattern of EPOLLEXCLUSIVE",
                Some(BalancePattern::ReuseportHash) => "; a reuseport hash imbalance",
                Some(BalancePattern::TakingTurns) => "; the worker holding the listener keeps it",
                Some(BalancePattern::FirstRing) =>
                    "; the first ring in the listener's queue keeps it",
                None => "",
            }
        ),
        items,
        knobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERD: Pattern = Pattern::EpollPerWorker {
        instances: 4,
        exclusive: 0,
        threads: false,
    };
    const EXCLUSIVE: Pattern = Pattern::EpollPerWorker {
        instances: 4,
        exclusive: 4,
        threads: false,
    };
    const SHARED_LT: Pattern = Pattern::SharedEpoll {
        threads: 4,
        edge_triggered: false,
        oneshot: false,
    };
    const SHARED_ET: Pattern = Pattern::SharedEpoll {
        threads: 4,
        edge_triggered: true,
        oneshot: false,
    };
    const FINE: [Pattern; 8] = [
        EXCLUSIVE,
        Pattern::UringAccept {
            accepts: 4,
            exclusive: true,
        },
        SHARED_ET,
        Pattern::Reuseport {
            sockets: 4,
            max_woken: 1,
        },
        Pattern::BlockingAccept { threads: 4 },
        Pattern::TakingTurns {
            workers: 4,
            watching: 1,
            locked: 0,
        },
        Pattern::SingleWaiter,
        Pattern::NoWaiter,
    ];
    const KINDS: [ServerKind; 9] = [
        ServerKind::Nginx,
        ServerKind::Lighttpd,
        ServerKind::ApacheHttpd,
        ServerKind::Uwsgi,
        ServerKind::Gunicorn,
        ServerKind::Nodejs,
        ServerKind::Haproxy,
        ServerKind::BuiltIn,
        ServerKind::Generic,
    ];

    fn id(kind: ServerKind) -> ServerId {
        ServerId::new(kind, "test".into())
    }

    fn text(a: &Advice) -> String {
        format!("{} | {}", a.headline, a.items.join(" | "))
    }

    #[test]
    fn an_io_uring_herd_is_the_kernels_doing_whatever_the_server() {
        let old = Pattern::UringAccept {
            accepts: 4,
            exclusive: false,
        };
        for kind in KINDS {
            let a = advise(&id(kind), old, Some(Verdict::Herd));
            assert!(!a.fine, "{kind:?}");
            assert!(a.knobs.is_empty(), "{kind:?}");
            assert!(
                a.items[0].starts_with("upgrade to Linux 5.18"),
                "{}",
                text(&a)
            );
            assert!(a.items[1].contains("SO_REUSEPORT"), "{}", text(&a));
        }
        let new = advise(
            &id(ServerKind::Generic),
            Pattern::UringAccept {
                accepts: 4,
                exclusive: true,
            },
            None,
        );
        assert!(
            new.headline.starts_with("fine: io_uring waits"),
            "{}",
            new.headline
        );
    }

    #[test]
    fn kinds_from_comm() {
        assert_eq!(ServerKind::from_comm("nginx"), ServerKind::Nginx);
        assert_eq!(ServerKind::from_comm("lighttpd"), ServerKind::Lighttpd);
        assert_eq!(ServerKind::from_comm("herdtrace"), ServerKind::BuiltIn);
        assert_eq!(ServerKind::from_comm("myserver"), ServerKind::Generic);
    }

    #[test]
    fn every_fine_setup_is_fine_for_every_server() {
        for kind in &KINDS {
            for p in FINE {
                for measured in [None, Some(Verdict::NoHerd), Some(Verdict::NoData)] {
                    let a = advise(&id(*kind), p, measured);
                    assert!(a.fine, "{kind:?} {p:?} {measured:?}: {}", text(&a));
                    assert!(
                        a.headline.starts_with("fine") || p == Pattern::NoWaiter,
                        "{}",
                        a.headline
                    );
                }
            }
        }
    }

    #[test]
    fn a_measured_herd_overrides_a_fine_setup() {
        let a = advise(&id(ServerKind::Generic), EXCLUSIVE, Some(Verdict::Herd));
        assert!(!a.fine);
        assert!(
            a.headline.contains("the trace measured more"),
            "{}",
            text(&a)
        );
    }

    #[test]
    fn generic_herd_names_epollexclusive_and_reuseport() {
        for measured in [
            None,
            Some(Verdict::Herd),
            Some(Verdict::NoHerd),
            Some(Verdict::NoData),
        ] {
            let a = advise(&id(ServerKind::Generic), HERD, measured);
            assert!(!a.fine);
            let t = text(&a);
            assert!(
                t.contains("EPOLLEXCLUSIVE") && t.contains("SO_REUSEPORT"),
                "{t}"
            );
            assert!(t.contains("every connection wakes 4 tasks"), "{t}");
        }
        let t = text(&advise(
            &id(ServerKind::Generic),
            HERD,
            Some(Verdict::NoHerd),
        ));
        assert!(t.contains("none measured in this trace"), "{t}");
        let t = text(&advise(&id(ServerKind::Generic), HERD, Some(Verdict::Herd)));
        assert!(t.starts_with("thundering herd"), "{t}");
    }

    #[test]
    fn shared_level_triggered_epoll_names_epollet() {
        let t = text(&advise(
            &id(ServerKind::Generic),
            SHARED_LT,
            Some(Verdict::MildHerd),
        ));
        assert!(t.contains("EPOLLET") && t.contains("EPOLLONESHOT"), "{t}");
        assert!(t.contains("1 to 4 tasks"), "{t}");
        let t = text(&advise(&id(ServerKind::BuiltIn), SHARED_LT, None));
        assert!(t.contains("--edge-triggered"), "{t}");
    }

    #[test]
    fn server_specific_settings() {
        let t = text(&advise(&id(ServerKind::Nginx), HERD, Some(Verdict::Herd)));
        assert!(
            t.contains("reuseport;") && t.contains("accept_mutex on;"),
            "{t}"
        );
        let t = text(&advise(
            &id(ServerKind::Lighttpd),
            HERD,
            Some(Verdict::Herd),
        ));
        assert!(t.contains("server.max-worker"), "{t}");
        let t = text(&advise(&id(ServerKind::BuiltIn), HERD, Some(Verdict::Herd)));
        assert!(
            t.contains("--model exclusive") && t.contains("--model reuseport"),
            "{t}"
        );
        let t = text(&advise(
            &id(ServerKind::Nginx),
            EXCLUSIVE,
            Some(Verdict::NoHerd),
        ));
        assert!(t.contains("nginx's default"), "{t}");
        let turns = Pattern::TakingTurns {
            workers: 4,
            watching: 0,
            locked: 0,
        };
        let t = text(&advise(
            &id(ServerKind::Nginx),
            turns,
            Some(Verdict::NoHerd),
        ));
        assert!(t.contains("accept_mutex on;"), "{t}");
    }

    #[test]
    fn every_known_server_names_its_own_knob_for_a_herd() {
        for (kind, setting, since) in [
            (ServerKind::Nginx, "reuseport", "nginx 1.9.1"),
            (ServerKind::Lighttpd, "server.max-worker", "lighttpd 1.4"),
            (
                ServerKind::ApacheHttpd,
                "ListenCoresBucketsRatio",
                "httpd 2.4.17",
            ),
            (ServerKind::Uwsgi, "--thunder-lock", "uWSGI 1.4.6"),
            (ServerKind::Gunicorn, "--reuse-port", "23.0.0"),
            (ServerKind::Nodejs, "SCHED_RR", "Node.js 0.11.2"),
            (ServerKind::Haproxy, "shards by-thread", "HAProxy 2.6"),
        ] {
            let a = advise(&id(kind), HERD, Some(Verdict::Herd));
            assert!(!a.fine);
            let k = a
                .knobs
                .first()
                .unwrap_or_else(|| panic!("{kind:?}: no knob"));
            assert!(k.setting.contains(setting), "{kind:?}: {k:?}");
            assert!(k.since.contains(since), "{kind:?}: {k:?}");
            assert!(!k.source.is_empty());
            let t = text(&a);
            assert!(t.contains(setting), "{kind:?}: {t}");
            assert!(t.contains(&format!("source: {}", k.cite())), "{t}");
            // Not the generic system-call advice an operator cannot apply.
            assert!(!t.contains("epoll_ctl(EPOLL_CTL_ADD"), "{kind:?}: {t}");
        }
        let g = advise(&id(ServerKind::Generic), HERD, Some(Verdict::Herd));
        assert!(g.knobs.is_empty());
        assert!(text(&g).contains("epoll_ctl(EPOLL_CTL_ADD"));
    }

    #[test]
    fn apache_names_the_mpm_and_gunicorn_its_worker_class() {
        let mut httpd = id(ServerKind::ApacheHttpd);
        httpd.mpm = Some("event".into());
        let t = text(&advise(&httpd, HERD, Some(Verdict::Herd)));
        assert!(t.contains("this httpd runs mpm_event"), "{t}");
        let mut g = id(ServerKind::Gunicorn);
        g.worker_class = Some("sync".into());
        let select = Pattern::SelectPerWorker { tasks: 4 };
        let a = advise(&g, select, Some(Verdict::Herd));
        assert!(
            a.headline.contains("every connection wakes 4 tasks"),
            "{}",
            a.headline
        );
        assert!(text(&a).contains("gunicorn's sync workers"), "{}", text(&a));
        let t = text(&advise(&id(ServerKind::Generic), select, None));
        assert!(
            t.contains("select() and poll() waits are never exclusive"),
            "{t}"
        );
    }

    #[test]
    fn fine_setups_say_which_server_setting_made_them_fine() {
        let mut uwsgi = id(ServerKind::Uwsgi);
        uwsgi.thunder_lock = true;
        let a = advise(&uwsgi, HERD, Some(Verdict::NoHerd));
        assert!(a.fine, "{}", text(&a));
        assert!(a.headline.contains("--thunder-lock"), "{}", a.headline);
        assert_eq!(a.knobs, vec![knobs::UWSGI_THUNDER_LOCK]);
        // A herd measured despite the lock is reported, not called fine.
        assert!(!advise(&uwsgi, HERD, Some(Verdict::Herd)).fine);
        // /proc read while only the lock holder watched the socket.
        let turns = Pattern::TakingTurns {
            workers: 4,
            watching: 1,
            locked: 3,
        };
        let a = advise(&uwsgi, turns, Some(Verdict::NoHerd));
        assert!(
            a.fine && text(&a).contains("uWSGI's `--thunder-lock`"),
            "{}",
            text(&a)
        );
        assert_eq!(a.knobs, vec![knobs::UWSGI_THUNDER_LOCK]);
        // httpd's children waiting for the accept mutex (two `Listen`s).
        let a = advise(&id(ServerKind::ApacheHttpd), turns, Some(Verdict::NoHerd));
        assert!(a.fine, "{}", text(&a));
        assert!(
            a.headline
                .starts_with("fine: the workers take turns at a lock"),
            "{}",
            a.headline
        );
        assert!(text(&a).contains("httpd's accept mutex"), "{}", text(&a));
        assert_eq!(a.knobs, vec![knobs::APACHE_ACCEPT_MUTEX]);
        let a = advise(
            &id(ServerKind::Nodejs),
            Pattern::SingleWaiter,
            Some(Verdict::NoHerd),
        );
        assert!(a.fine && text(&a).contains("round-robin"), "{}", text(&a));
        assert_eq!(a.knobs, vec![knobs::NODE_SCHED_RR]);
        let rp = Pattern::Reuseport {
            sockets: 2,
            max_woken: 1,
        };
        assert_eq!(
            advise(&id(ServerKind::ApacheHttpd), rp, None).knobs,
            vec![knobs::APACHE_BUCKETS]
        );
        assert_eq!(
            advise(&id(ServerKind::Haproxy), rp, None).knobs,
            vec![knobs::HAPROXY_SHARDS]
        );
    }

    #[test]
    fn kernel_versions_and_what_they_change() {
        let new = kernel_notes("6.18.44");
        assert!(
            new[0].contains("EPOLLEXCLUSIVE (4.5+) available"),
            "{new:?}"
        );
        assert!(new.iter().any(|n| n.contains("tcp_migrate_req")));
        let old = kernel_notes("4.4.0");
        assert!(old[0].contains("EPOLLEXCLUSIVE (4.5+) missing"), "{old:?}");
        assert!(old[0].contains("SO_REUSEPORT (3.9+) available"));
        assert_eq!(old.len(), 1);
        assert!(kernel_notes("weird")[0].contains("not recognised"));
    }

    fn imbalanced(pattern: Option<BalancePattern>) -> BalanceFinding {
        use crate::engine::{Balance, TaskShare};
        let b = Balance {
            workers: 4,
            workers_at_once: 4,
            setup: Default::default(),
            accepts: 400,
            accepting_tasks: 1,
            fair_share: 0.25,
            top: Some(TaskShare {
                pid: 7,
                tid: 7,
                comm: "nginx".into(),
                accepts: 400,
                share: 1.0,
            }),
            same_worker_share: Some(1.0),
            listeners_per_port: 1,
            ..Balance::default()
        };
        let mut f = crate::report::balance::finding(&b);
        f.pattern = pattern;
        f
    }

    #[test]
    fn an_imbalance_gets_the_servers_own_remedy_and_the_kernel_notes() {
        let f = imbalanced(Some(BalancePattern::Lifo));
        assert_eq!(f.verdict, BalanceVerdict::Imbalanced);
        let a =
            balance_advice(&id(ServerKind::Nginx), &[EXCLUSIVE], &f, "6.18.44").expect("advice");
        assert!(!a.fine);
        assert!(
            a.headline
                .contains("took 100% of the accepts, 4.0x its fair share (25% of 4 workers)")
                && a.headline.contains("LIFO"),
            "{}",
            a.headline
        );
        assert_eq!(
            a.knobs,
            vec![knobs::NGINX_REUSEPORT, knobs::NGINX_ACCEPT_MUTEX]
        );
        let t = text(&a);
        assert!(
            t.contains("accept_mutex_delay") && t.contains("kernel 6.18.44"),
            "{t}"
        );
        for kind in KINDS {
            let a = balance_advice(&id(kind), &[EXCLUSIVE], &f, "6.1.0").expect("advice");
            assert!(!a.items.is_empty(), "{kind:?}");
        }
        let hashed = imbalanced(Some(BalancePattern::ReuseportHash));
        let rp = Pattern::Reuseport {
            sockets: 4,
            max_woken: 1,
        };
        let t = text(&balance_advice(&id(ServerKind::Nginx), &[rp], &hashed, "6.1.0").expect("a"));
        assert!(t.contains("hashing the client's address and port"), "{t}");
        assert!(t.contains("reuseport hash imbalance"), "{t}");
        let turns = imbalanced(Some(BalancePattern::TakingTurns));
        let a = balance_advice(&id(ServerKind::Nginx), &[], &turns, "6.1.0").expect("a");
        assert_eq!(a.knobs[0], knobs::NGINX_ACCEPT_MUTEX);
        assert!(text(&a).contains("`accept_mutex off;`"), "{}", text(&a));
        let ring = imbalanced(Some(BalancePattern::FirstRing));
        let uring = Pattern::UringAccept {
            accepts: 4,
            exclusive: true,
        };
        let a = balance_advice(&id(ServerKind::Generic), &[uring], &ring, "6.18.44").expect("a");
        assert!(a.headline.contains("the first ring"), "{}", a.headline);
        assert!(
            text(&a).contains("single-shot io_uring accepts"),
            "{}",
            text(&a)
        );
        // Balanced or not judged: nothing to advise.
        let mut ok = imbalanced(None);
        ok.verdict = BalanceVerdict::Balanced;
        assert!(balance_advice(&id(ServerKind::Nginx), &[EXCLUSIVE], &ok, "6.1").is_none());
    }
}
