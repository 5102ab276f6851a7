//! The balance verdict: did one worker take more than its fair share of the
//! accepts, for how long, and which known pattern explains it.
//!
//! - fewer than [`MIN_ACCEPTS`] accepts, or no worker count: no verdict;
//! - one worker: nothing to balance;
//! - imbalanced: the busiest task's share is at least
//!   [`dominance_threshold`] (twice the fair share 1/N, capped halfway to
//!   all) and beyond chance ([`MIN_Z`] standard deviations above a fair pick);
//! - balanced otherwise.
//!
//! Patterns named with an imbalance:
//! - *LIFO*: one shared listening socket and the same worker taking
//!   consecutive connections at least halfway between a random pick (1/N)
//!   and always ((1+1/N)/2): EPOLLEXCLUSIVE wakes the most recently queued
//!   waiter, so a worker that just went back to sleep wins again;
//! - *first ring*: the same consecutive wins where the workers accept
//!   through io_uring: a multishot accept never leaves the listener's wait
//!   queue, so the ring that armed first is woken for every connection;
//! - *reuseport hash*: an SO_REUSEPORT group (2+ listening sockets on a
//!   port) and few clients: at most 2N distinct client address:port pairs,
//!   or the N busiest pairs made half the connections or more. The kernel
//!   hashes addresses and ports to pick a socket, so few pairs cannot spread.
use serde::Serialize;

use super::pct;

#[cfg(doc)]
use crate::engine::balance::{dominance_threshold, MIN_Z};
use crate::engine::{
    balance::{is_dominant, z_score, MIN_ACCEPTS},
    Balance,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceVerdict {
    NoData,
    OneWorker,
    Balanced,
    Imbalanced,
}

/// A known cause named with an imbalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancePattern {
    Lifo,
    ReuseportHash,
    /// The workers take turns holding the listener (nginx's accept_mutex):
    /// the holder keeps taking connections while it can.
    TakingTurns,
    /// io_uring accepts: one ring keeps being woken (a multishot accept
    /// stays first in the listener's wait queue).
    FirstRing,
}

pub use crate::engine::SetupHint;

/// The verdict with what backs it, as reports print it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalanceFinding {
    #[serde(flatten)]
    pub balance: Balance,
    pub verdict: BalanceVerdict,
    pub pattern: Option<BalancePattern>,
    /// The busiest worker's share over the fair share (0 without data).
    pub top_over_fair: f64,
    /// Standard deviations above a fair pick.
    pub z: f64,
    pub line: String,
}

/// Same-worker share from which consecutive wins are the LIFO pattern.
pub fn lifo_threshold(workers: u64) -> f64 {
    (1.0 + 1.0 / workers.max(1) as f64) / 2.0
}

pub fn classify(b: &Balance) -> BalanceVerdict {
    let Some(top) = &b.top else {
        return BalanceVerdict::NoData;
    };
    // The untraced tasks' accepts are not seen: no share is known.
    if b.untraced_waiters > 0 {
        return BalanceVerdict::NoData;
    }
    if b.workers <= 1 {
        return if b.accepts > 0 {
            BalanceVerdict::OneWorker
        } else {
            BalanceVerdict::NoData
        };
    }
    if b.accepts < MIN_ACCEPTS {
        return BalanceVerdict::NoData;
    }
    if is_dominant(top.accepts, b.accepts, b.workers) {
        BalanceVerdict::Imbalanced
    } else {
        BalanceVerdict::Balanced
    }
}

/// Which known pattern explains an imbalance, if any, from the trace alone.
#[cfg(test)]
pub fn pattern(b: &Balance) -> Option<BalancePattern> {
    pattern_in(b, SetupHint::Unknown)
}

/// Which known pattern explains an imbalance, given what is known of the setup.
pub fn pattern_in(b: &Balance, hint: SetupHint) -> Option<BalancePattern> {
    match hint {
        SetupHint::TakingTurns => return Some(BalancePattern::TakingTurns),
        // Every idle worker is woken: no LIFO (the first to run wins), and no hash.
        SetupHint::Shared => return None,
        _ => {}
    }
    let reuseport = b.listeners_per_port >= 2 || hint == SetupHint::Reuseport;
    let c = &b.clients;
    let few_clients = c.connections >= MIN_ACCEPTS
        && !c.capped
        && (c.distinct_peers <= 2 * b.workers || c.top_peers_share >= 0.5);
    if reuseport && few_clients {
        return Some(BalancePattern::ReuseportHash);
    }
    if !reuseport
        && b.same_worker_share
            .is_some_and(|s| s >= lifo_threshold(b.workers))
    {
        return Some(if hint == SetupHint::Uring {
            BalancePattern::FirstRing
        } else {
            BalancePattern::Lifo
        });
    }
    None
}

pub fn finding(b: &Balance) -> BalanceFinding {
    finding_in(b, SetupHint::Unknown)
}

/// Mean woken per connection from which the trace itself shows a herd:
/// every idle worker is woken and the first to run wins, which is not the
/// LIFO pick of EPOLLEXCLUSIVE (one waiter woken).
pub const HERD_WOKEN_MEAN: f64 = 1.5;

/// What a trace says of the setup without reading it: a herd rules out
/// EPOLLEXCLUSIVE's LIFO pattern.
pub fn hint_from_woken(woken_mean: f64) -> SetupHint {
    if woken_mean >= HERD_WOKEN_MEAN {
        SetupHint::Shared
    } else {
        SetupHint::Unknown
    }
}

/// The finding of a traced summary: [`finding_in`] with the setup /proc
/// showed when tracing started, else the hint its own woken figure gives.
pub fn finding_of(b: &Balance, woken_mean: f64) -> BalanceFinding {
    let hint = match b.setup {
        SetupHint::Unknown => hint_from_woken(woken_mean),
        read => read,
    };
    finding_in(b, hint)
}

/// [`finding`], with the setup known (diagnose).
pub fn finding_in(b: &Balance, hint: SetupHint) -> BalanceFinding {
    let verdict = classify(b);
    let top_share = b.top.as_ref().map_or(0.0, |t| t.share);
    let top_over_fair = if b.fair_share > 0.0 {
        top_share / b.fair_share
    } else {
        0.0
    };
    let z = b
        .top
        .as_ref()
        .map_or(0.0, |t| z_score(t.accepts, b.accepts, b.workers));
    let pattern = (verdict == BalanceVerdict::Imbalanced)
        .then(|| pattern_in(b, hint))
        .flatten();
    let mut line = line(b, verdict, pattern, top_over_fair);
    if b.lost_events > 0
        && matches!(
            verdict,
            BalanceVerdict::Balanced | BalanceVerdict::Imbalanced
        )
    {
        line.push_str(&format!(
            "; from an incomplete trace ({} events lost): the shares may be skewed",
            b.lost_events
        ));
    }
    BalanceFinding {
        balance: b.clone(),
        verdict,
        pattern,
        top_over_fair,
        z,
        line,
    }
}

/// "4 workers", or, when workers were replaced during the run (a reload),
/// "8 workers over the run, at most 4 at once": the fair share is of the
/// run's accepts, which both generations shared.
fn workers_phrase(b: &Balance) -> String {
    if b.workers_at_once > 0 && b.workers_at_once < b.workers {
        format!(
            "{} workers over the run, at most {} at once",
            b.workers, b.workers_at_once
        )
    } else {
        format!("{} workers", b.workers)
    }
}

fn line(
    b: &Balance,
    verdict: BalanceVerdict,
    pattern: Option<BalancePattern>,
    top_over_fair: f64,
) -> String {
    let Some(top) = &b.top else {
        return "no balance verdict: no accept was traced".into();
    };
    let who = if b.loop_threads > 1 {
        format!(
            "the accept loop of {}[{}] ({} threads)",
            top.comm, top.pid, b.loop_threads
        )
    } else {
        format!("{}[{}/{}]", top.comm, top.pid, top.tid)
    };
    if b.untraced_waiters > 0 {
        return format!(
            "no balance verdict: {}, and their accepts are not seen",
            super::verdict::untraced_waiting(b.untraced_waiters)
        );
    }
    match verdict {
        BalanceVerdict::NoData if b.workers <= 1 => {
            "no balance verdict: the number of workers is not known".into()
        }
        BalanceVerdict::NoData => format!(
            "no balance verdict: {} accepts (at least {MIN_ACCEPTS} are needed)",
            b.accepts
        ),
        BalanceVerdict::OneWorker if b.loop_threads > 1 => format!(
            "one worker accepts, {who}: an async runtime runs it on whichever thread is \
             free, no balance to judge (connections may still be handed on after accept)"
        ),
        BalanceVerdict::OneWorker => format!(
            "one worker accepts ({who}): no balance to judge (connections may still be \
             handed on after accept)"
        ),
        BalanceVerdict::Balanced => format!(
            "balanced: the busiest worker, {who}, took {} of {} accepts (fair share {} \
             of {})",
            pct(top.share),
            b.accepts,
            pct(b.fair_share),
            workers_phrase(b)
        ),
        BalanceVerdict::Imbalanced => {
            let idle = b.workers.saturating_sub(b.accepting_tasks);
            let mut s = format!(
                "IMBALANCED: {who} took {} of {} accepts, {top_over_fair:.1}x the fair share \
                 of {} ({}{})",
                pct(top.share),
                b.accepts,
                pct(b.fair_share),
                workers_phrase(b),
                if idle > 0 {
                    format!(", {idle} took none")
                } else {
                    String::new()
                }
            );
            if let Some(h) = &b.held {
                s.push_str(&format!(
                    "; {}[{}/{}] held at least {} of the accepts for {:.0} s ({} of {} \
                     seconds with accepts)",
                    h.comm,
                    h.pid,
                    h.tid,
                    pct(h.share_min),
                    h.seconds,
                    h.windows,
                    b.windows
                ));
            }
            match pattern {
                Some(BalancePattern::Lifo) => s.push_str(&format!(
                    "; LIFO pattern: {} of consecutive accepts went to the worker that took \
                     the previous one (EPOLLEXCLUSIVE wakes the most recently queued waiter, \
                     so the worker that just went back to sleep wins again)",
                    pct(b.same_worker_share.unwrap_or(0.0))
                )),
                Some(BalancePattern::ReuseportHash) => s.push_str(&format!(
                    "; reuseport hash imbalance: the port has an SO_REUSEPORT group of {} \
                     sockets and the kernel picks a socket by hashing the client's address and port, but only {} client \
                     address:port pairs ({} addresses) made the connections, the {} busiest \
                     made {} of them",
                    b.listeners_per_port,
                    b.clients.distinct_peers,
                    b.clients.distinct_addrs,
                    b.workers,
                    pct(b.clients.top_peers_share)
                )),
                Some(BalancePattern::TakingTurns) => s.push_str(
                    "; the workers take turns watching the listener (like nginx's \
                     accept_mutex): the one holding it keeps taking connections while it can",
                ),
                Some(BalancePattern::FirstRing) => s.push_str(&format!(
                    "; first-ring pattern: {} of consecutive accepts went to the ring that \
                     took the previous one (an io_uring accept that stays armed, multishot, \
                     never leaves the listener's wait queue, and each connection wakes only \
                     the first ring waiting there, busy or not)",
                    pct(b.same_worker_share.unwrap_or(0.0))
                )),
                None => {}
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{balance::Clients, Held, TaskShare};

    fn balance(workers: u64, accepts: &[u64]) -> Balance {
        let total: u64 = accepts.iter().sum();
        let top = accepts.iter().copied().max().unwrap_or(0);
        Balance {
            workers,
            workers_at_once: workers,
            setup: SetupHint::Unknown,
            workers_from_proc: workers,
            accepts: total,
            accepting_tasks: accepts.iter().filter(|&&a| a > 0).count() as u64,
            fair_share: 1.0 / workers.max(1) as f64,
            top: (total > 0).then(|| TaskShare {
                pid: 10,
                tid: 10,
                comm: "w".into(),
                accepts: top,
                share: top as f64 / total as f64,
            }),
            loop_threads: 0,
            same_worker_share: None,
            held: None,
            windows: 0,
            listeners_per_port: 1,
            clients: Clients::default(),
            untraced_waiters: 0,
            lost_events: 0,
        }
    }

    #[test]
    fn a_balance_from_an_incomplete_trace_says_so() {
        let mut b = balance(4, &[103, 100, 99, 98]);
        b.lost_events = 6116;
        assert_eq!(
            finding(&b).line,
            "balanced: the busiest worker, w[10/10], took 26% of 400 accepts (fair share 25% \
             of 4 workers); from an incomplete trace (6116 events lost): the shares may be \
             skewed"
        );
        let mut b = balance(4, &[400, 0, 0, 0]);
        b.lost_events = 1;
        assert!(finding(&b)
            .line
            .ends_with("; from an incomplete trace (1 events lost): the shares may be skewed"));
        // No verdict, nothing to qualify.
        let mut b = balance(4, &[10]);
        b.lost_events = 5;
        assert!(!finding(&b).line.contains("incomplete"));
    }

    #[test]
    fn untraced_waiters_leave_the_balance_unjudged() {
        // The traced worker took every accept it saw: its share of all is unknown.
        let mut b = balance(1, &[145]);
        b.untraced_waiters = 3;
        let f = finding_in(&b, SetupHint::Unknown);
        assert_eq!(f.verdict, BalanceVerdict::NoData);
        assert_eq!(
            f.line,
            "no balance verdict: 3 untraced tasks also wait on these listeners, and their \
             accepts are not seen"
        );
        b.untraced_waiters = 1;
        assert!(finding_in(&b, SetupHint::Unknown)
            .line
            .contains(": 1 untraced task also waits on"));
        // Lopsided shares among traced workers are not judged either.
        let mut b = balance(4, &[300, 10, 10, 10]);
        assert_eq!(classify(&b), BalanceVerdict::Imbalanced);
        b.untraced_waiters = 2;
        assert_eq!(classify(&b), BalanceVerdict::NoData);
    }

    #[test]
    fn verdicts_by_share_evidence_and_worker_count() {
        assert_eq!(classify(&balance(4, &[])), BalanceVerdict::NoData);
        assert_eq!(
            classify(&balance(4, &[10, 0, 0, 0])),
            BalanceVerdict::NoData
        );
        assert_eq!(
            classify(&balance(1, &[500])),
            BalanceVerdict::OneWorker,
            "one worker"
        );
        assert_eq!(classify(&balance(0, &[500])), BalanceVerdict::OneWorker);
        assert_eq!(
            classify(&balance(4, &[400, 0, 0, 0])),
            BalanceVerdict::Imbalanced
        );
        assert_eq!(
            classify(&balance(4, &[103, 100, 99, 98])),
            BalanceVerdict::Balanced
        );
        // nginx with accept_mutex on (docs/real-servers.md): 447 301 252 0.
        assert_eq!(
            classify(&balance(4, &[447, 301, 252, 0])),
            BalanceVerdict::Balanced
        );
        // A published nginx report: 349 of 468 with 8 workers.
        let mut b = balance(8, &[349, 17, 17, 17, 17, 17, 17, 17]);
        assert_eq!(classify(&b), BalanceVerdict::Imbalanced);
        b.workers = 1;
        assert_eq!(classify(&b), BalanceVerdict::OneWorker);
    }

    #[test]
    fn an_accept_loop_on_several_threads_is_named_as_one_worker() {
        let mut b = balance(1, &[300]);
        b.loop_threads = 3;
        let f = finding(&b);
        assert_eq!(f.verdict, BalanceVerdict::OneWorker);
        assert_eq!(
            f.line,
            "one worker accepts, the accept loop of w[10] (3 threads): an async runtime \
             runs it on whichever thread is free, no balance to judge (connections may \
             still be handed on after accept)"
        );
        // Two such processes: the loops are the workers.
        let mut b = balance(2, &[400, 0]);
        b.loop_threads = 2;
        let f = finding(&b);
        assert_eq!(f.verdict, BalanceVerdict::Imbalanced);
        assert!(
            f.line
                .starts_with("IMBALANCED: the accept loop of w[10] (2 threads) took 100% of 400"),
            "{}",
            f.line
        );
        b.loop_threads = 0;
        assert!(finding(&b).line.starts_with("IMBALANCED: w[10/10] took"));
    }

    #[test]
    fn the_lifo_pattern_needs_a_shared_socket_and_repeated_wins() {
        let mut b = balance(4, &[400, 0, 0, 0]);
        assert_eq!(pattern(&b), None, "no same-worker figure");
        b.same_worker_share = Some(0.62);
        assert_eq!(pattern(&b), None, "below (1+1/4)/2");
        b.same_worker_share = Some(0.99);
        assert_eq!(pattern(&b), Some(BalancePattern::Lifo));
        b.listeners_per_port = 4;
        assert_eq!(pattern(&b), None, "SO_REUSEPORT: no shared wait queue");
        assert_eq!(lifo_threshold(4), 0.625);
        assert_eq!(lifo_threshold(0), 1.0);
    }

    /// A herd (every idle worker woken, first to run wins) is not named
    /// EPOLLEXCLUSIVE's LIFO pattern, however often one worker wins.
    #[test]
    fn a_herd_is_not_called_lifo() {
        let mut b = balance(4, &[400, 0, 0, 0]);
        b.same_worker_share = Some(1.0);
        assert_eq!(finding_of(&b, 1.0).pattern, Some(BalancePattern::Lifo));
        assert_eq!(finding_of(&b, 1.49).pattern, Some(BalancePattern::Lifo));
        let herd = finding_of(&b, 3.9);
        assert_eq!(herd.pattern, None);
        assert_eq!(herd.verdict, BalanceVerdict::Imbalanced);
        assert!(!herd.line.contains("LIFO"), "{}", herd.line);
    }

    #[test]
    fn a_trace_uses_the_setup_proc_showed_before_its_own_hint() {
        // nginx with accept_mutex on, traced: one worker takes everything,
        // one woken a connection, as EPOLLEXCLUSIVE's LIFO would look.
        let mut b = balance(4, &[400, 0, 0, 0]);
        b.same_worker_share = Some(1.0);
        b.setup = SetupHint::TakingTurns;
        let f = finding_of(&b, 1.0);
        assert_eq!(f.pattern, Some(BalancePattern::TakingTurns));
        assert!(f.line.contains("take turns"), "{}", f.line);
        assert!(!f.line.contains("EPOLLEXCLUSIVE"), "{}", f.line);
        // Read as a herd-prone shared socket: no LIFO, whatever the trace.
        b.setup = SetupHint::Shared;
        assert_eq!(finding_of(&b, 1.0).pattern, None);
        // Not read (an older recording): the trace's own hint.
        b.setup = SetupHint::Unknown;
        assert_eq!(finding_of(&b, 1.0).pattern, Some(BalancePattern::Lifo));
        let v = serde_json::to_value(finding_of(&b, 1.0)).expect("json");
        assert_eq!(v["setup"], "unknown");
    }

    #[test]
    fn a_known_setup_decides_the_pattern() {
        let mut b = balance(4, &[400, 0, 0, 0]);
        b.same_worker_share = Some(1.0);
        assert_eq!(
            pattern_in(&b, SetupHint::Unknown),
            Some(BalancePattern::Lifo)
        );
        assert_eq!(
            pattern_in(&b, SetupHint::Exclusive),
            Some(BalancePattern::Lifo)
        );
        assert_eq!(
            pattern_in(&b, SetupHint::TakingTurns),
            Some(BalancePattern::TakingTurns)
        );
        assert_eq!(pattern_in(&b, SetupHint::Shared), None);
        assert_eq!(pattern_in(&b, SetupHint::Reuseport), None, "many clients");
        assert_eq!(
            pattern_in(&b, SetupHint::Uring),
            Some(BalancePattern::FirstRing)
        );
        let f = finding_in(&b, SetupHint::Uring);
        assert!(f.line.contains("first-ring pattern: 100%"), "{}", f.line);
        assert!(!f.line.contains("EPOLLEXCLUSIVE"), "{}", f.line);
        // Rings that took turns (single-shot accepts go back to the end of
        // the queue): no pattern.
        b.same_worker_share = Some(0.3);
        assert_eq!(pattern_in(&b, SetupHint::Uring), None);
        b.same_worker_share = Some(1.0);
        let f = finding_in(&b, SetupHint::TakingTurns);
        assert!(
            f.line.contains("take turns watching the listener"),
            "{}",
            f.line
        );
        assert!(!f.line.contains("LIFO"), "{}", f.line);
        // A balanced run names no pattern whatever the setup.
        let even = balance(4, &[100, 100, 100, 100]);
        assert_eq!(finding_in(&even, SetupHint::TakingTurns).pattern, None);
    }

    #[test]
    fn a_reuseport_hash_imbalance_needs_few_clients() {
        let mut b = balance(4, &[300, 100, 0, 0]);
        b.listeners_per_port = 4;
        b.clients = Clients {
            connections: 400,
            distinct_peers: 400,
            distinct_addrs: 1,
            top_peers_share: 0.01,
            capped: false,
        };
        assert_eq!(pattern(&b), None, "many clients: not the hash");
        b.clients.distinct_peers = 6;
        assert_eq!(pattern(&b), Some(BalancePattern::ReuseportHash));
        b.clients.distinct_peers = 100;
        b.clients.top_peers_share = 0.7;
        assert_eq!(pattern(&b), Some(BalancePattern::ReuseportHash));
        b.clients.capped = true;
        assert_eq!(pattern(&b), None, "beyond the cap: not few");
        b.clients.capped = false;
        b.clients.connections = 5;
        assert_eq!(pattern(&b), None, "too few connections to tell");
    }

    #[test]
    fn the_imbalance_line_gives_share_fair_share_time_and_pattern() {
        let mut b = balance(4, &[400, 0, 0, 0]);
        b.same_worker_share = Some(1.0);
        b.windows = 5;
        b.held = Some(Held {
            pid: 10,
            tid: 10,
            comm: "w".into(),
            windows: 5,
            seconds: 5.0,
            from_ns: 0,
            to_ns: 5_000_000_000,
            share_min: 0.97,
        });
        let f = finding(&b);
        assert_eq!(f.verdict, BalanceVerdict::Imbalanced);
        assert_eq!(f.pattern, Some(BalancePattern::Lifo));
        assert_eq!(f.top_over_fair, 4.0);
        assert!(f.z > 3.0);
        assert_eq!(
            f.line,
            "IMBALANCED: w[10/10] took 100% of 400 accepts, 4.0x the fair share of 25% \
             (4 workers, 3 took none); w[10/10] held at least 97% of the accepts for 5 s \
             (5 of 5 seconds with accepts); LIFO pattern: 100% of consecutive accepts went \
             to the worker that took the previous one (EPOLLEXCLUSIVE wakes the most \
             recently queued waiter, so the worker that just went back to sleep wins again)"
        );
        let v = serde_json::to_value(&f).expect("json");
        assert_eq!(v["verdict"], "imbalanced");
        assert_eq!(v["pattern"], "lifo");
        assert_eq!(v["top"]["share"], 1.0);
        assert_eq!(v["workers"], 4);
        assert_eq!(v["held"]["seconds"], 5.0);
    }

    #[test]
    fn shares_under_ten_percent_keep_a_decimal() {
        // 1,000 accepts over 200 workers: fair share 0.5%, the busiest took 54.
        let mut accepts = vec![54, 20, 20];
        accepts.extend(std::iter::repeat_n(5, 181));
        accepts.extend(std::iter::repeat_n(0, 16));
        let f = finding(&balance(200, &accepts));
        assert!(
            f.line.starts_with(&format!(
                "IMBALANCED: w[10/10] took 5.4% of {} accepts, 10.8x the fair share of 0.5% \
                 (200 workers, 16 took none)",
                accepts.iter().sum::<u64>()
            )),
            "{}",
            f.line
        );
    }

    #[test]
    fn other_lines() {
        let f = finding(&balance(4, &[103, 100, 99, 98]));
        assert_eq!(
            f.line,
            "balanced: the busiest worker, w[10/10], took 26% of 400 accepts (fair share 25% \
             of 4 workers)"
        );
        assert_eq!(f.pattern, None);
        // A reload replaced the workers: both generations are in N.
        let mut reloaded = balance(8, &[55, 50, 50, 45, 52, 50, 50, 48]);
        reloaded.workers_at_once = 4;
        assert_eq!(
            finding(&reloaded).line,
            "balanced: the busiest worker, w[10/10], took 14% of 400 accepts (fair share 12% \
             of 8 workers over the run, at most 4 at once)"
        );
        let mut hashed = balance(4, &[300, 100, 0, 0]);
        hashed.listeners_per_port = 4;
        hashed.clients = Clients {
            connections: 400,
            distinct_peers: 2,
            distinct_addrs: 1,
            top_peers_share: 1.0,
            capped: false,
        };
        let f = finding(&hashed);
        assert!(
            f.line.contains("an SO_REUSEPORT group of 4 sockets")
                && f.line
                    .contains("only 2 client address:port pairs (1 addresses)"),
            "{}",
            f.line
        );
        assert!(finding(&balance(1, &[50]))
            .line
            .starts_with("one worker accepts"));
        assert_eq!(
            finding(&balance(4, &[5])).line,
            "no balance verdict: 5 accepts (at least 20 are needed)"
        );
        assert_eq!(
            finding(&balance(4, &[])).line,
            "no balance verdict: no accept was traced"
        );
        let f = finding(&Balance::default());
        assert_eq!(f.verdict, BalanceVerdict::NoData);
        assert_eq!((f.top_over_fair, f.z), (0.0, 0.0));
    }
}
