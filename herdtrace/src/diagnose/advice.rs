//! What to change, naming the concrete setting for the server at hand.
use serde::Serialize;

use super::layout::Pattern;
use crate::report::verdict::Verdict;

/// Which server it is, from the root process's name: the advice names its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    Nginx,
    Lighttpd,
    /// `herdtrace serve`.
    BuiltIn,
    Generic,
}

impl ServerKind {
    pub fn from_comm(comm: &str) -> ServerKind {
        match comm {
            "nginx" => ServerKind::Nginx,
            "lighttpd" => ServerKind::Lighttpd,
            "herdtrace" => ServerKind::BuiltIn,
            _ => ServerKind::Generic,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Advice {
    /// Nothing to change.
    pub fine: bool,
    /// The conclusion, one sentence.
    pub headline: String,
    /// Concrete changes (empty when fine) or remarks.
    pub items: Vec<String>,
}

/// Advice for one endpoint: the setup decides what to change; the
/// measurement (None: no trace) confirms or qualifies it.
pub fn advise(kind: &ServerKind, pattern: Pattern, measured: Option<Verdict>) -> Advice {
    let herd_measured = matches!(
        measured,
        Some(Verdict::Herd | Verdict::MildHerd | Verdict::IntermittentHerd)
    );
    if !pattern.herd_prone() {
        let mut a = fine_advice(kind, pattern);
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
    Advice {
        fine: false,
        headline,
        items: herd_fixes(kind, pattern),
    }
}

fn fine_advice(kind: &ServerKind, pattern: Pattern) -> Advice {
    let (headline, mut items): (String, Vec<String>) = match pattern {
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
        Pattern::TakingTurns { .. } => (
            "fine: one worker at a time watches the listener, so one is woken per connection"
                .into(),
            vec![],
        ),
        Pattern::SingleWaiter => (
            "fine: a single task waits for connections, there is no herd to wake".into(),
            vec![],
        ),
        Pattern::NoWaiter => (
            "no task waited on the listener when /proc was read; nothing to change from the \
             setup alone"
                .into(),
            vec![],
        ),
    };
    match (kind, pattern) {
        (ServerKind::Nginx, Pattern::EpollPerWorker { .. }) => {
            items.push("this is nginx's default (`accept_mutex off;`, Linux >= 4.5)".into());
        }
        (ServerKind::Nginx, Pattern::TakingTurns { .. }) => {
            items.push(
                "this is nginx's `accept_mutex on;`; `accept_mutex off;` (the default since \
                 1.11.3) uses EPOLLEXCLUSIVE instead and spares the `accept_mutex_delay` wait"
                    .into(),
            );
        }
        (ServerKind::Nginx, Pattern::Reuseport { .. }) => {
            items.insert(0, "this is nginx's `listen ... reuseport;`".into());
        }
        _ => {}
    }
    Advice {
        fine: true,
        headline,
        items,
    }
}

fn herd_fixes(kind: &ServerKind, pattern: Pattern) -> Vec<String> {
    let shared_lt = matches!(pattern, Pattern::SharedEpoll { .. });
    match kind {
        ServerKind::Nginx => vec![
            "add `reuseport` to the `listen` directive (`listen ADDR:PORT reuseport;`): one \
             SO_REUSEPORT socket per worker"
                .into(),
            "or set `accept_mutex on;` in `events {}`: one worker watches the listener at a time"
                .into(),
            "nginx >= 1.11.3 on Linux >= 4.5 registers the listener with EPOLLEXCLUSIVE when \
             `accept_mutex` is off: an older nginx is worth upgrading"
                .into(),
        ],
        ServerKind::Lighttpd => vec![
            "lighttpd has no EPOLLEXCLUSIVE or SO_REUSEPORT setting: with \
             `server.max-worker = N` every worker's epoll is woken for every connection"
                .into(),
            "remove `server.max-worker` (or set it to 0): one lighttpd process has no herd; \
             keep the workers only if one process cannot keep up with the load, and accept \
             the wasted wakeups measured above"
                .into(),
        ],
        ServerKind::BuiltIn if shared_lt => vec![
            "`herdtrace serve --model shared-epoll --edge-triggered` (EPOLLET), or \
             `--model exclusive` / `--model reuseport`"
                .into(),
        ],
        ServerKind::BuiltIn => vec![
            "`herdtrace serve --model exclusive` (EPOLLEXCLUSIVE) or `--model reuseport` \
             (SO_REUSEPORT)"
                .into(),
        ],
        ServerKind::Generic if shared_lt => vec![
            "register the listening socket with EPOLLET (edge-triggered) or EPOLLONESHOT \
             (re-arm with EPOLL_CTL_MOD after accepting) in the shared epoll: level-triggered \
             lets each woken thread wake the next; EPOLLEXCLUSIVE does not help inside one \
             instance"
                .into(),
            "or give each thread its own epoll with the listener added as \
             `EPOLLIN | EPOLLEXCLUSIVE`, or its own SO_REUSEPORT socket"
                .into(),
        ],
        ServerKind::Generic => vec![
            "add EPOLLEXCLUSIVE when adding the listening socket to each worker's epoll \
             (`epoll_ctl(EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLEXCLUSIVE)`, Linux >= 4.5)"
                .into(),
            "or give each worker its own listening socket with SO_REUSEPORT (set before \
             bind): the kernel then picks one socket per connection"
                .into(),
        ],
    }
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
    const FINE: [Pattern; 7] = [
        EXCLUSIVE,
        SHARED_ET,
        Pattern::Reuseport {
            sockets: 4,
            max_woken: 1,
        },
        Pattern::BlockingAccept { threads: 4 },
        Pattern::TakingTurns {
            workers: 4,
            watching: 1,
        },
        Pattern::SingleWaiter,
        Pattern::NoWaiter,
    ];
    const KINDS: [ServerKind; 4] = [
        ServerKind::Nginx,
        ServerKind::Lighttpd,
        ServerKind::BuiltIn,
        ServerKind::Generic,
    ];

    fn text(a: &Advice) -> String {
        format!("{} | {}", a.headline, a.items.join(" | "))
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
                    let a = advise(kind, p, measured);
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
        let a = advise(&ServerKind::Generic, EXCLUSIVE, Some(Verdict::Herd));
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
            let a = advise(&ServerKind::Generic, HERD, measured);
            assert!(!a.fine);
            let t = text(&a);
            assert!(
                t.contains("EPOLLEXCLUSIVE") && t.contains("SO_REUSEPORT"),
                "{t}"
            );
            assert!(t.contains("every connection wakes 4 tasks"), "{t}");
        }
        let t = text(&advise(&ServerKind::Generic, HERD, Some(Verdict::NoHerd)));
        assert!(t.contains("none measured in this trace"), "{t}");
        let t = text(&advise(&ServerKind::Generic, HERD, Some(Verdict::Herd)));
        assert!(t.starts_with("thundering herd"), "{t}");
    }

    #[test]
    fn shared_level_triggered_epoll_names_epollet() {
        let t = text(&advise(
            &ServerKind::Generic,
            SHARED_LT,
            Some(Verdict::MildHerd),
        ));
        assert!(t.contains("EPOLLET") && t.contains("EPOLLONESHOT"), "{t}");
        assert!(t.contains("1 to 4 tasks"), "{t}");
        let t = text(&advise(&ServerKind::BuiltIn, SHARED_LT, None));
        assert!(t.contains("--edge-triggered"), "{t}");
    }

    #[test]
    fn server_specific_settings() {
        let t = text(&advise(&ServerKind::Nginx, HERD, Some(Verdict::Herd)));
        assert!(
            t.contains("reuseport;") && t.contains("accept_mutex on;"),
            "{t}"
        );
        let t = text(&advise(&ServerKind::Lighttpd, HERD, Some(Verdict::Herd)));
        assert!(t.contains("server.max-worker"), "{t}");
        let t = text(&advise(&ServerKind::BuiltIn, HERD, Some(Verdict::Herd)));
        assert!(
            t.contains("--model exclusive") && t.contains("--model reuseport"),
            "{t}"
        );
        let t = text(&advise(
            &ServerKind::Nginx,
            EXCLUSIVE,
            Some(Verdict::NoHerd),
        ));
        assert!(t.contains("nginx's default"), "{t}");
        let turns = Pattern::TakingTurns {
            workers: 4,
            watching: 0,
        };
        let t = text(&advise(&ServerKind::Nginx, turns, Some(Verdict::NoHerd)));
        assert!(t.contains("accept_mutex on;"), "{t}");
    }
}
