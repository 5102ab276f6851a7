//! What each server model should do on a Linux kernel, with the source of
//! each expectation. Bounds scale with the number of workers N and leave
//! room for a noisy 2-core machine (the values for N = 4 are the ones the
//! host scenarios have proven: `scenario::all`).
use serde::{Deserialize, Serialize};

use crate::serve::model::Model;

/// A figure of a row that an expectation constrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Mean tasks woken per connection.
    WokenMean,
    /// Wakeups that took no connection, per connection (EAGAIN losers + spurious).
    WastedPerConn,
    /// EAGAIN that ends a winner's accept loop, per connection (EAGAIN minus losers).
    WinnerEagainPerConn,
    /// Share of connections taken by the worker that took the previous one.
    SameWorkerShare,
}

impl Metric {
    /// Short name used in the table and in failure lines.
    pub fn label(self) -> &'static str {
        match self {
            Metric::WokenMean => "woken/conn",
            Metric::WastedPerConn => "wasted/conn",
            Metric::WinnerEagainPerConn => "win-EAGAIN/conn",
            Metric::SameWorkerShare => "same-worker share",
        }
    }
}

/// A documented claim an expectation rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Source {
    /// Footnote key in the table: "H1", "C", ...
    pub key: &'static str,
    /// Document in the repository, with the section's stable anchor.
    pub doc: &'static str,
    /// What it says, in brief.
    pub claim: &'static str,
}

pub const HERD: Source = Source {
    key: "H1",
    doc: "docs/herd-mechanics.md#h1 (one epoll per worker)",
    claim: "one listening socket, one epoll per worker, none exclusive: every idle worker is \
            woken for every connection",
};
pub const SHARED_LT: Source = Source {
    key: "H2",
    doc: "docs/herd-mechanics.md#h2 (shared epoll, level-triggered)",
    claim: "one epoll shared by threads, level-triggered: the woken thread re-adds the item \
            and wakes the next, so one, some or all threads wake",
};
pub const SHARED_ET: Source = Source {
    key: "H3",
    doc: "docs/herd-mechanics.md#h3 (edge-triggered)",
    claim: "edge-triggered: a delivered item is not re-added to the ready list, so a shared \
            epoll wakes fewer threads (one); ET changes nothing on the listener's wait queue, so \
            one epoll per worker still wakes every idle worker (inferred from H1)",
};
pub const EXCLUSIVE: Source = Source {
    key: "H4",
    doc: "docs/herd-mechanics.md#h4 (EPOLLEXCLUSIVE)",
    claim: "EPOLLEXCLUSIVE: the epoll entry is an exclusive waiter, usually one epoll \
            instance is woken (\"one or more\" per the man page)",
};
pub const REUSEPORT: Source = Source {
    key: "H5",
    doc: "docs/herd-mechanics.md#h5 (SO_REUSEPORT)",
    claim: "SO_REUSEPORT: the kernel hashes each connection to one worker's socket, one \
            worker wakes",
};
pub const BLOCKING: Source = Source {
    key: "H6",
    doc: "docs/herd-mechanics.md#h6 (blocking accept)",
    claim: "blocking accept: the accept wait is exclusive, one task wakes (round-robin-ish)",
};
pub const WINNER_EAGAIN: Source = Source {
    key: "H7",
    doc: "docs/herd-mechanics.md#h7 (accept loops)",
    claim: "a server accepting in a loop until EAGAIN ends each loop with one EAGAIN of its \
            own, which is not a herd loss",
};
pub const URING: Source = Source {
    key: "H8",
    doc: "docs/herd-mechanics.md#h8 (io_uring accept)",
    claim: "io_uring arms its poll for IORING_OP_ACCEPT as an exclusive, one-shot waiter on \
            the listener: one worker's ring is woken per connection, as with blocking accept",
};
pub const URING_OLD: Source = Source {
    key: "H8b",
    doc: "docs/herd-mechanics.md#h8 (io_uring accept)",
    claim: "before 5.18 io_uring armed an accept's poll without EPOLLEXCLUSIVE: every \
            worker's ring is woken, and the losers retry inside the kernel (woken for \
            nothing: no EAGAIN reaches user space)",
};
pub const URING_MULTISHOT: Source = Source {
    key: "H8c",
    doc: "docs/herd-mechanics.md#h8 (io_uring accept)",
    claim: "a multishot io_uring accept (5.19+) is armed without EPOLLONESHOT and never \
            leaves the listener's wait queue: the ring first in it is woken for every \
            connection, busy or not",
};
pub const CLOUDFLARE: Source = Source {
    key: "C",
    doc: "docs/herd-mechanics.md#cloudflare (published figures, Cloudflare 2017)",
    claim: "EPOLLEXCLUSIVE + non-blocking accept: 6 of 6 connections went to the same worker \
            (LIFO wait queue); blocking accept spread them round-robin",
};

pub const TOKIO: Source = Source {
    key: "T",
    doc: "docs/architecture.md#tokio (tokio's single I/O driver)",
    claim: "a tokio runtime has one epoll instance, waited in by one worker thread at a time, \
            and registers each listener in it once, edge-triggered: a connection wakes that one \
            thread, which then runs the accept itself; TcpListener::accept retries until EAGAIN",
};

/// Every source, in footnote order.
pub const SOURCES: [Source; 12] = [
    HERD,
    SHARED_LT,
    SHARED_ET,
    EXCLUSIVE,
    REUSEPORT,
    BLOCKING,
    WINNER_EAGAIN,
    URING,
    URING_OLD,
    URING_MULTISHOT,
    CLOUDFLARE,
    TOKIO,
];

/// `min <= metric <= max` (either side open).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Expect {
    pub metric: Metric,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub source: Source,
}

impl Expect {
    pub fn holds(&self, value: f64) -> bool {
        self.min.is_none_or(|m| value >= m) && self.max.is_none_or(|m| value <= m)
    }

    /// The bound as text: "≥ 3.5", "≤ 1.5", "0.5..1.5".
    pub fn bound_text(&self) -> String {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) => format!("{}..{}", num(lo), num(hi)),
            (Some(lo), None) => format!(">={}", num(lo)),
            (None, Some(hi)) => format!("<={}", num(hi)),
            (None, None) => "any".to_string(),
        }
    }
}

/// Short form of a bound: 3.5, 0.625, 4 (at most 4 decimals).
fn num(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// One row of `verify`: a server configuration and what it should do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Row name, also the `model` field of the JSON: the serve model, plus
    /// `+et` / `+batch100` for the variants.
    pub name: &'static str,
    pub model: Model,
    pub serve_args: Vec<&'static str>,
    /// The behaviour in words, for the table.
    pub expected: String,
    pub expects: Vec<Expect>,
}

/// Lower bound on the mean woken for the "one" models: a connection taken by
/// a worker that was already awake needs no wake (mean 0.98 seen for reuseport).
const ONE_MIN: f64 = 0.5;
/// Upper bound for the "one" models (a few connections may wake two).
const ONE_MAX: f64 = 1.5;
/// Slack below N for "every idle worker": a worker still busy with the
/// previous connection is not idle.
const HERD_SLACK: f64 = 0.5;

fn expect(metric: Metric, min: Option<f64>, max: Option<f64>, source: Source) -> Expect {
    Expect {
        metric,
        min,
        max,
        source,
    }
}

/// The herd expectations for N idle workers: all woken, all but one wasted.
fn herd(n: f64) -> Vec<Expect> {
    let mut v = vec![expect(Metric::WokenMean, Some(n - HERD_SLACK), None, HERD)];
    // With one worker nothing can be wasted: the bound would be vacuous.
    if n >= 2.0 {
        v.push(expect(
            Metric::WastedPerConn,
            Some(n - 1.0 - HERD_SLACK),
            None,
            HERD,
        ));
    }
    v
}

fn one(source: Source) -> Expect {
    expect(Metric::WokenMean, Some(ONE_MIN), Some(ONE_MAX), source)
}

/// One EAGAIN per winner's loop; fewer when one loop takes two connections
/// that arrived close together.
fn winner_eagain() -> Expect {
    expect(
        Metric::WinnerEagainPerConn,
        Some(0.5),
        Some(1.1),
        WINNER_EAGAIN,
    )
}

/// LIFO: the worker that took the previous connection takes the next.
/// Bound: halfway between a random pick (1/N) and always (1).
pub fn lifo(n: f64) -> Option<Expect> {
    (n >= 2.0).then(|| {
        expect(
            Metric::SameWorkerShare,
            Some((1.0 + 1.0 / n) / 2.0),
            None,
            CLOUDFLARE,
        )
    })
}

/// The first ring keeps every connection: the LIFO bound, with its own source.
fn first_ring(n: f64) -> Option<Expect> {
    lifo(n).map(|e| Expect {
        source: URING_MULTISHOT,
        ..e
    })
}

/// Round-robin: the previous worker is last in line. Bound: halfway between
/// never (0) and a random pick (1/N).
pub fn round_robin(n: f64) -> Option<Expect> {
    (n >= 2.0).then(|| expect(Metric::SameWorkerShare, None, Some(0.5 / n), CLOUDFLARE))
}

/// [`plans_for`] the newest kernels.
#[cfg(test)]
pub fn plans(workers: u32) -> Vec<Plan> {
    plans_for(workers, None)
}

/// Every row, in table order, for `workers` workers on a kernel of this
/// `version` (major, minor; None: the newest behaviour).
pub fn plans_for(workers: u32, version: Option<(u32, u32)>) -> Vec<Plan> {
    use crate::diagnose::layout::{URING_EXCLUSIVE_SINCE, URING_MULTISHOT_SINCE};
    let uring_herd = version.is_some_and(|v| v < URING_EXCLUSIVE_SINCE);
    let multishot = version.is_none_or(|v| v >= URING_MULTISHOT_SINCE);
    let n = f64::from(workers);
    let every = format!("every idle worker ({workers})");
    let plan = |name, model, serve_args: &[&'static str], expected: &str, expects| Plan {
        name,
        model,
        serve_args: serve_args.to_vec(),
        expected: expected.to_string(),
        expects,
    };
    let herd_with_loop = {
        let mut v = herd(n);
        v.push(winner_eagain());
        v
    };
    let mut herd_et = herd_with_loop.clone();
    // The per-worker herd comes from the listener's queue, which ET does not change.
    herd_et[0].source = SHARED_ET;
    vec![
        plan(
            "epoll-per-worker",
            Model::EpollPerWorker,
            &[],
            &every,
            herd(n),
        ),
        plan(
            "epoll-per-worker+et",
            Model::EpollPerWorker,
            &["--edge-triggered"],
            &every,
            herd_et,
        ),
        plan(
            "epoll-per-worker+batch100",
            Model::EpollPerWorker,
            &["--accept-batch", "100"],
            &every,
            herd_with_loop,
        ),
        plan(
            "shared-epoll",
            Model::SharedEpoll,
            &[],
            &format!("one to {workers}"),
            vec![expect(Metric::WokenMean, Some(ONE_MIN), Some(n), SHARED_LT)],
        ),
        plan(
            "shared-epoll+et",
            Model::SharedEpoll,
            &["--edge-triggered"],
            "one",
            vec![one(SHARED_ET), winner_eagain()],
        ),
        plan(
            "exclusive",
            Model::Exclusive,
            &[],
            "one or a few; LIFO",
            [Some(one(EXCLUSIVE)), lifo(n)]
                .into_iter()
                .flatten()
                .collect(),
        ),
        plan(
            "reuseport",
            Model::Reuseport,
            &[],
            "one",
            vec![one(REUSEPORT)],
        ),
        plan(
            "blocking-accept",
            Model::BlockingAccept,
            &[],
            "one; round-robin",
            [Some(one(BLOCKING)), round_robin(n)]
                .into_iter()
                .flatten()
                .collect(),
        ),
        if uring_herd {
            plan(
                "io-uring",
                Model::IoUring,
                &[],
                "every idle worker (before 5.18)",
                herd(n)
                    .into_iter()
                    .map(|e| Expect {
                        source: URING_OLD,
                        ..e
                    })
                    .collect(),
            )
        } else {
            plan("io-uring", Model::IoUring, &[], "one", vec![one(URING)])
        },
        plan(
            "io-uring+multishot",
            Model::IoUring,
            &["--multishot"],
            "one; always the same ring",
            [Some(one(URING_MULTISHOT)), first_ring(n)]
                .into_iter()
                .flatten()
                .collect(),
        ),
        // SO_REUSEPORT spreads connections over sockets, but every socket is
        // in the same runtime's one epoll: still one thread woken.
        plan(
            "tokio",
            Model::Tokio,
            &[],
            "one (the epoll owner)",
            vec![one(TOKIO), winner_eagain()],
        ),
        plan(
            "tokio-reuseport",
            Model::TokioReuseport,
            &[],
            "one (the epoll owner)",
            vec![one(TOKIO), winner_eagain()],
        ),
    ]
    .into_iter()
    // No multishot accept before 5.19: the server could not run the row.
    .filter(|p| multishot || !p.serve_args.contains(&"--multishot"))
    .collect()
}

/// The rows `--models` asks for (all of this kernel's when empty), in the
/// order asked. A row that exists but not on this kernel says so rather than
/// being called unknown.
pub fn select(
    workers: u32,
    version: Option<(u32, u32)>,
    requested: &[String],
) -> Result<Vec<Plan>, String> {
    let here = plans_for(workers, version);
    if requested.is_empty() {
        return Ok(here);
    }
    let names = |plans: &[Plan]| plans.iter().map(|p| p.name).collect::<Vec<_>>().join(", ");
    requested
        .iter()
        .map(|name| {
            if let Some(p) = here.iter().find(|p| p.name == name) {
                return Ok(p.clone());
            }
            let anywhere = plans_for(workers, None).iter().any(|p| p.name == name);
            Err(match (anywhere, version) {
                (true, Some((major, minor))) => format!(
                    "--models: row {name:?} needs a newer kernel than {major}.{minor} \
                     (rows on this kernel: {})",
                    names(&here)
                ),
                _ => format!("--models: unknown row {name:?} (rows: {})", names(&here)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_is_a_herd_before_5_18_only() {
        let uring = |v| {
            plans_for(4, v)
                .into_iter()
                .find(|p| p.name == "io-uring")
                .expect("io-uring row")
        };
        let old = uring(Some((5, 10)));
        assert_eq!(old.expected, "every idle worker (before 5.18)");
        assert!(old
            .expects
            .iter()
            .any(|e| e.metric == Metric::WokenMean && e.min.is_some_and(|m| m > 3.0)));
        assert!(old
            .expects
            .iter()
            .all(|e| e.source.claim == URING_OLD.claim));
        for v in [Some((5, 18)), Some((6, 1)), None] {
            let new = uring(v);
            assert_eq!(new.expected, "one", "{v:?}");
            assert_eq!(new.expects[0].max, Some(ONE_MAX));
        }
    }

    #[test]
    fn the_multishot_row_is_for_5_19_and_later() {
        let has = |v| {
            plans_for(4, v)
                .iter()
                .any(|p| p.name == "io-uring+multishot")
        };
        assert!(!has(Some((5, 10))));
        assert!(!has(Some((5, 18))));
        assert!(has(Some((5, 19))) && has(Some((6, 1))) && has(None));
        let p = find(&plans_for(4, Some((6, 1))), "io-uring+multishot");
        assert_eq!(p.serve_args, ["--multishot"]);
        assert_eq!(bounds(&p, Metric::WokenMean), (Some(0.5), Some(1.5)));
        assert_eq!(bounds(&p, Metric::SameWorkerShare), (Some(0.625), None));
        assert!(p.expects.iter().all(|e| e.source.key == "H8c"));
    }

    fn find(plans: &[Plan], name: &str) -> Plan {
        plans
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no plan {name}"))
    }

    fn bounds(p: &Plan, metric: Metric) -> (Option<f64>, Option<f64>) {
        let e = p
            .expects
            .iter()
            .find(|e| e.metric == metric)
            .unwrap_or_else(|| panic!("{}: no {metric:?}", p.name));
        (e.min, e.max)
    }

    #[test]
    fn every_model_and_variant_has_a_row_with_unique_names() {
        let plans = plans(4);
        let names: Vec<&str> = plans.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "epoll-per-worker",
                "epoll-per-worker+et",
                "epoll-per-worker+batch100",
                "shared-epoll",
                "shared-epoll+et",
                "exclusive",
                "reuseport",
                "blocking-accept",
                "io-uring",
                "io-uring+multishot",
                "tokio",
                "tokio-reuseport"
            ]
        );
        for m in Model::ALL {
            assert!(plans.iter().any(|p| p.model == m), "{m} has no row");
        }
        for p in &plans {
            assert!(!p.expects.is_empty(), "{} expects nothing", p.name);
            assert!(
                p.expects.iter().any(|e| e.metric == Metric::WokenMean),
                "{} has no woken expectation",
                p.name
            );
        }
    }

    #[test]
    fn four_workers_use_the_proven_scenario_bounds() {
        let plans = plans(4);
        for name in [
            "epoll-per-worker",
            "epoll-per-worker+et",
            "epoll-per-worker+batch100",
        ] {
            let p = find(&plans, name);
            assert_eq!(bounds(&p, Metric::WokenMean), (Some(3.5), None), "{name}");
            assert_eq!(
                bounds(&p, Metric::WastedPerConn),
                (Some(2.5), None),
                "{name}"
            );
        }
        for name in [
            "shared-epoll+et",
            "exclusive",
            "reuseport",
            "blocking-accept",
            "tokio",
            "tokio-reuseport",
        ] {
            let p = find(&plans, name);
            assert_eq!(
                bounds(&p, Metric::WokenMean),
                (Some(0.5), Some(1.5)),
                "{name}"
            );
        }
        assert_eq!(
            bounds(&find(&plans, "shared-epoll"), Metric::WokenMean),
            (Some(0.5), Some(4.0))
        );
        // Not a proven scenario yet: blocking-accept's woken bound.
        let u = find(&plans, "io-uring");
        assert_eq!(bounds(&u, Metric::WokenMean), (Some(0.5), Some(1.5)));
        assert_eq!(u.expects.len(), 1);
        assert_eq!(
            bounds(&find(&plans, "exclusive"), Metric::SameWorkerShare),
            (Some(0.625), None)
        );
        assert_eq!(
            bounds(&find(&plans, "blocking-accept"), Metric::SameWorkerShare),
            (None, Some(0.125))
        );
    }

    #[test]
    fn loop_until_eagain_rows_expect_one_winner_eagain_and_others_do_not() {
        for p in plans(4) {
            let has = p
                .expects
                .iter()
                .any(|e| e.metric == Metric::WinnerEagainPerConn);
            // tokio's TcpListener::accept retries until EAGAIN.
            let loops = p.serve_args.contains(&"--edge-triggered")
                || p.serve_args.contains(&"--accept-batch")
                || p.model.is_tokio();
            assert_eq!(has, loops, "{}", p.name);
        }
    }

    #[test]
    fn bounds_scale_with_workers() {
        let plans = plans(8);
        let p = find(&plans, "epoll-per-worker");
        assert_eq!(bounds(&p, Metric::WokenMean), (Some(7.5), None));
        assert_eq!(bounds(&p, Metric::WastedPerConn), (Some(6.5), None));
        assert_eq!(
            bounds(&find(&plans, "shared-epoll"), Metric::WokenMean),
            (Some(0.5), Some(8.0))
        );
        assert_eq!(
            bounds(&find(&plans, "exclusive"), Metric::SameWorkerShare),
            (Some(0.5625), None)
        );
        assert_eq!(
            bounds(&find(&plans, "blocking-accept"), Metric::SameWorkerShare),
            (None, Some(0.0625))
        );
    }

    #[test]
    fn one_worker_drops_the_vacuous_expectations() {
        let plans = plans(1);
        let p = find(&plans, "epoll-per-worker");
        assert!(p.expects.iter().all(|e| e.metric != Metric::WastedPerConn));
        for name in ["exclusive", "blocking-accept"] {
            let p = find(&plans, name);
            assert!(
                p.expects
                    .iter()
                    .all(|e| e.metric != Metric::SameWorkerShare),
                "{name}"
            );
        }
        assert!(lifo(1.0).is_none() && round_robin(1.0).is_none());
        assert!(lifo(2.0).is_some() && round_robin(2.0).is_some());
    }

    #[test]
    fn holds_is_inclusive_on_both_sides() {
        let e = expect(Metric::WokenMean, Some(0.5), Some(1.5), REUSEPORT);
        assert!(e.holds(0.5) && e.holds(1.0) && e.holds(1.5));
        assert!(!e.holds(0.49) && !e.holds(1.51));
        let lo = expect(Metric::WokenMean, Some(3.5), None, HERD);
        assert!(lo.holds(100.0) && !lo.holds(3.4));
        let hi = expect(Metric::SameWorkerShare, None, Some(0.125), CLOUDFLARE);
        assert!(hi.holds(0.0) && !hi.holds(0.2));
        assert!(!e.holds(f64::NAN) && !lo.holds(f64::NAN) && !hi.holds(f64::NAN));
    }

    #[test]
    fn bound_texts() {
        assert_eq!(
            expect(Metric::WokenMean, Some(0.5), Some(1.5), HERD).bound_text(),
            "0.5..1.5"
        );
        assert_eq!(
            expect(Metric::WokenMean, Some(3.5), None, HERD).bound_text(),
            ">=3.5"
        );
        assert_eq!(
            expect(Metric::WokenMean, None, Some(0.125), HERD).bound_text(),
            "<=0.125"
        );
        assert_eq!(
            expect(Metric::WokenMean, Some(4.0), None, HERD).bound_text(),
            ">=4"
        );
        assert_eq!(
            expect(Metric::WokenMean, None, None, HERD).bound_text(),
            "any"
        );
        assert_eq!(num(0.5625), "0.5625");
        assert_eq!(num(1.0 / 3.0), "0.3333");
    }

    /// Every source names a file of the repository and an anchor that file defines.
    #[test]
    fn sources_cite_anchors_that_exist_in_the_repository() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        for s in SOURCES {
            let target = s.doc.split_whitespace().next().expect("a path");
            let (path, anchor) = target.split_once('#').expect("path#anchor");
            let text = std::fs::read_to_string(root.join(path))
                .unwrap_or_else(|e| panic!("{}: {path}: {e}", s.key));
            assert!(
                text.contains(&format!("<a id=\"{anchor}\"></a>")),
                "{}: {path} has no anchor {anchor}",
                s.key
            );
            // The section names the key it is cited by.
            assert!(text.contains(&format!("[{}]", s.key)), "{}", s.key);
        }
    }

    #[test]
    fn sources_have_unique_keys_and_every_expectation_cites_a_listed_one() {
        let mut keys: Vec<&str> = SOURCES.iter().map(|s| s.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SOURCES.len());
        for n in [1, 2, 4, 8] {
            for p in plans(n) {
                for e in &p.expects {
                    assert!(SOURCES.contains(&e.source), "{}: {:?}", p.name, e.source);
                }
            }
        }
    }

    #[test]
    fn models_selects_rows_in_order_and_names_rows_this_kernel_lacks() {
        let all = select(4, Some((6, 1)), &[]).expect("all rows");
        assert_eq!(all.len(), plans_for(4, Some((6, 1))).len());
        let asked = ["io-uring".to_string(), "exclusive".to_string()];
        let picked = select(4, Some((5, 10)), &asked).expect("rows");
        assert_eq!(
            picked.iter().map(|p| p.name).collect::<Vec<_>>(),
            ["io-uring", "exclusive"]
        );
        let multishot = ["io-uring+multishot".to_string()];
        let err = select(4, Some((5, 10)), &multishot).expect_err("not on 5.10");
        assert!(
            err.starts_with("--models: row \"io-uring+multishot\" needs a newer kernel than 5.10 (rows on this kernel: epoll-per-worker,"),
            "{err}"
        );
        assert!(select(4, Some((5, 19)), &multishot).is_ok());
        let err = select(4, Some((6, 1)), &["nope".to_string()]).expect_err("unknown");
        assert!(
            err.starts_with("--models: unknown row \"nope\" (rows: "),
            "{err}"
        );
    }
}
