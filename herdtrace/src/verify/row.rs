//! One row of `verify` (pure): the figures measured for a plan, each
//! expectation checked against them, and the verdict.
use serde::{Deserialize, Serialize};

use super::expect::{Expect, Metric, Plan};
use crate::scenario::{self, Bound, ConnSample, Outcome, Scenario};

/// How a row was run (the same for every row of one `verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// Kernel release, used when a run failed before the tracer reported it.
    pub kernel: String,
    /// The backend asked for, used likewise.
    pub backend: String,
    pub workers: u32,
    pub connections: u32,
    pub rate: u32,
}

/// The scenario that measures `plan`: its woken bound is the plan's own, so
/// the scenario's checks and the row's agree.
pub fn scenario_for(plan: &Plan, setup: &Setup) -> Scenario {
    let bound_of = |metric| plan.expects.iter().find(|e: &&Expect| e.metric == metric);
    let bound = match (bound_of(Metric::WokenMean), bound_of(Metric::WastedPerConn)) {
        (Some(w), Some(x)) => Bound::Herd {
            woken: w.min.unwrap_or(0.0),
            wasted: x.min.unwrap_or(0.0),
        },
        (Some(w), None) => Bound::Between(w.min.unwrap_or(0.0), w.max.unwrap_or(f64::INFINITY)),
        (None, _) => Bound::Between(0.0, f64::INFINITY),
    };
    Scenario {
        name: plan.name,
        model: plan.model,
        serve_args: plan.serve_args.clone(),
        workers: setup.workers,
        connections: setup.connections,
        rate: setup.rate,
        concurrency: 2,
        bound,
        // The plans for a kernel hold only what runs on it.
        min_kernel: None,
    }
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub woken_mean: f64,
    pub woken_p99: u64,
    pub eagain_losers_per_conn: f64,
    pub spurious_per_conn: f64,
    /// EAGAIN that are not losses: the end of a winner's accept loop.
    pub winner_eagain_per_conn: f64,
    /// The server's own accept count per worker (ordered by tid).
    pub accepts_per_worker: Vec<u64>,
    /// Largest and smallest share of the accepts one worker took.
    pub accept_share_max: Option<f64>,
    pub accept_share_min: Option<f64>,
    pub accept_latency_us_p50: Option<u64>,
    pub accept_latency_us_p99: Option<u64>,
    /// Share of connections (2nd on) taken by the worker that took the previous one.
    pub same_worker_share: Option<f64>,
    /// What the spread of the figures above is estimated from.
    pub spread: Spread,
}

/// The sample sizes and per-connection standard deviations behind a row's
/// figures, so that two runs can be compared against their own noise
/// (`verify --compare`): a per-connection mean has a standard error of
/// sd/sqrt(conns), a share a binomial one over its pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Conn records the standard deviations are computed over.
    pub conns: u64,
    /// Sample standard deviations (n-1) of the per-connection counts.
    pub woken_sd: f64,
    pub eagain_losers_sd: f64,
    pub spurious_sd: f64,
    /// Of losers + spurious per connection (the wasted wakeups); absent from
    /// rows written before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasted_sd: Option<f64>,
    pub winner_eagain_sd: f64,
    /// Consecutive pairs with a known acceptor behind `same_worker_share`.
    pub same_worker_pairs: u64,
}

impl Spread {
    pub fn of(conns: &[ConnSample]) -> Spread {
        let sd_of =
            |f: &dyn Fn(&ConnSample) -> f64| sample_sd(&conns.iter().map(f).collect::<Vec<f64>>());
        Spread {
            conns: conns.len() as u64,
            woken_sd: sd_of(&|c| f64::from(c.woken)),
            eagain_losers_sd: sd_of(&|c| f64::from(c.eagain_losers)),
            spurious_sd: sd_of(&|c| f64::from(c.spurious)),
            wasted_sd: Some(sd_of(&|c| f64::from(c.eagain_losers + c.spurious))),
            winner_eagain_sd: sd_of(&|c| f64::from(c.eagain.saturating_sub(c.eagain_losers))),
            same_worker_pairs: same_worker_counts(conns).1,
        }
    }
}

/// Sample standard deviation (n-1); 0 for fewer than two values.
pub fn sample_sd(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    (ss / (n - 1.0)).sqrt()
}

impl Measured {
    pub fn from_outcome(o: &Outcome) -> Measured {
        let accepts: Vec<u64> = o
            .accepts_by_tid
            .values()
            .map(|(server, _)| *server)
            .collect();
        let (share_max, share_min) = match shares(&accepts) {
            Some((max, min)) => (Some(max), Some(min)),
            None => (None, None),
        };
        let mut latencies: Vec<u64> = o.conns.iter().filter_map(|c| c.accept_latency_us).collect();
        latencies.sort_unstable();
        Measured {
            woken_mean: o.woken_mean,
            woken_p99: o.woken_p99,
            eagain_losers_per_conn: o.eagain_losers_per_conn,
            spurious_per_conn: o.spurious_per_conn,
            winner_eagain_per_conn: (o.eagain_per_conn - o.eagain_losers_per_conn).max(0.0),
            accepts_per_worker: accepts,
            accept_share_max: share_max,
            accept_share_min: share_min,
            accept_latency_us_p50: percentile(&latencies, 50),
            accept_latency_us_p99: percentile(&latencies, 99),
            same_worker_share: same_worker_share(&o.conns),
            spread: Spread::of(&o.conns),
        }
    }

    /// The figure an expectation constrains; `None` when there was nothing to measure.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::WokenMean => Some(self.woken_mean),
            Metric::WastedPerConn => Some(self.eagain_losers_per_conn + self.spurious_per_conn),
            Metric::WinnerEagainPerConn => Some(self.winner_eagain_per_conn),
            Metric::SameWorkerShare => self.same_worker_share,
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], pct: u64) -> Option<u64> {
    let n = sorted.len() as u64;
    if n == 0 {
        return None;
    }
    let rank = (n * pct.min(100)).div_ceil(100).max(1);
    sorted.get((rank - 1) as usize).copied()
}

/// (max, min) share of the total; `None` without workers or accepts.
pub fn shares(accepts: &[u64]) -> Option<(f64, f64)> {
    let total: u64 = accepts.iter().sum();
    let max = accepts.iter().max()?;
    let min = accepts.iter().min()?;
    (total > 0).then(|| (*max as f64 / total as f64, *min as f64 / total as f64))
}

/// With arrivals spaced so that every worker is asleep again before the
/// next one, the worker that took connection k-1 is the most recently
/// sleeping one when connection k arrives: the share of consecutive pairs
/// (in arrival order; the tracer prints in closing order) taken by the same
/// worker. Pairs with an unknown acceptor are left out.
pub fn same_worker_share(conns: &[ConnSample]) -> Option<f64> {
    let (same, pairs) = same_worker_counts(conns);
    (pairs > 0).then(|| same as f64 / pairs as f64)
}

/// (pairs taken by the same worker, pairs) behind [`same_worker_share`].
pub fn same_worker_counts(conns: &[ConnSample]) -> (u64, u64) {
    let mut ordered: Vec<&ConnSample> = conns.iter().collect();
    ordered.sort_by_key(|c| c.ts_ns);
    let (mut pairs, mut same) = (0u64, 0u64);
    for w in ordered.windows(2) {
        if let (Some(prev), Some(next)) = (w[0].accepted_by, w[1].accepted_by) {
            pairs += 1;
            same += u64::from(prev == next);
        }
    }
    (same, pairs)
}

/// One expectation checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub metric: Metric,
    pub expected: String,
    pub measured: Option<f64>,
    pub pass: bool,
    /// Key of the source (see `expect::SOURCES`).
    pub source: &'static str,
}

impl Check {
    pub fn of(e: &Expect, m: &Measured) -> Check {
        let measured = m.value(e.metric);
        Check {
            metric: e.metric,
            expected: e.bound_text(),
            measured,
            pass: measured.is_some_and(|v| e.holds(v)),
            source: e.source.key,
        }
    }

    /// "woken/conn 4.00 (>=3.5)".
    pub fn text(&self) -> String {
        check_text(self.metric, self.measured, &self.expected)
    }
}

/// A check as text: "woken/conn 4.00 (>=3.5)" (also for checks read back by `--compare`).
pub fn check_text(metric: Metric, measured: Option<f64>, expected: &str) -> String {
    let value = measured.map_or_else(|| "not measured".to_string(), |v| format!("{v:.2}"));
    format!("{} {value} ({expected})", metric.label())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every expectation holds.
    Pass,
    /// The kernel departs from an expectation.
    Fail,
    /// The run did not measure cleanly (lost events, counts disagree): no verdict on the kernel.
    Invalid,
    /// The run could not be done.
    Error,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Invalid => "INVALID",
            Verdict::Error => "ERROR",
        }
    }
}

/// One row of the table and one JSON object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The plan's name: serve model plus variant.
    pub model: String,
    pub serve_model: &'static str,
    pub serve_args: Vec<&'static str>,
    pub kernel: String,
    pub backend: String,
    pub workers: u32,
    pub connections: u32,
    pub rate: u32,
    pub expected: String,
    #[serde(flatten)]
    pub measured: Option<Measured>,
    pub checks: Vec<Check>,
    /// Why the measurement is invalid, or the error.
    pub problems: Vec<String>,
    pub verdict: Verdict,
    /// Runs it took (a row that does not pass is run again, up to `--attempts`).
    pub attempts: u32,
    /// One line per earlier attempt that did not pass (see [`Row::summary`]).
    pub earlier_attempts: Vec<String>,
}

impl Row {
    /// "FAIL: woken/conn 3.42 (>=3.5)": the verdict and what did not hold.
    pub fn summary(&self) -> String {
        let mut why: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.pass)
            .map(Check::text)
            .collect();
        why.extend(self.problems.iter().cloned());
        if why.is_empty() {
            self.verdict.word().to_string()
        } else {
            format!("{}: {}", self.verdict.word(), why.join("; "))
        }
    }

    /// Records the attempts before this one (`earlier` in order).
    pub fn after_attempts(mut self, earlier: &[Row]) -> Row {
        self.attempts = earlier.len() as u32 + 1;
        self.earlier_attempts = earlier.iter().map(Row::summary).collect();
        self
    }
}

/// The premise of every expectation is that all workers are asleep when a
/// connection arrives. When the winner's accept latency p99 exceeds the gap
/// between arrivals, the machine was too busy for that (a worker woken for
/// one connection may not have run before the next): a departure then says
/// nothing about the kernel.
pub fn premise_problem(m: &Measured, rate: u32) -> Option<String> {
    let gap_us = 1_000_000 / u64::from(rate.max(1));
    let p99 = m.accept_latency_us_p99?;
    (p99 > gap_us).then(|| {
        format!(
            "machine too busy: accept latency p99 {p99} us > {gap_us} us between arrivals \
             (workers may not have been asleep when connections arrived)"
        )
    })
}

/// The row for `plan` from its run (`Err`: the run failed with this message).
pub fn build(plan: &Plan, setup: &Setup, run: Result<&Outcome, String>) -> Row {
    let mut row = Row {
        model: plan.name.to_string(),
        serve_model: plan.model.name(),
        serve_args: plan.serve_args.clone(),
        kernel: setup.kernel.clone(),
        backend: setup.backend.clone(),
        workers: setup.workers,
        connections: setup.connections,
        rate: setup.rate,
        expected: plan.expected.clone(),
        measured: None,
        checks: Vec::new(),
        problems: Vec::new(),
        verdict: Verdict::Error,
        attempts: 1,
        earlier_attempts: Vec::new(),
    };
    let outcome = match run {
        Ok(o) => o,
        Err(e) => {
            row.problems.push(e);
            return row;
        }
    };
    if !outcome.kernel.is_empty() {
        row.kernel = outcome.kernel.clone();
    }
    row.backend = outcome.backend.clone();
    let measured = Measured::from_outcome(outcome);
    row.checks = plan
        .expects
        .iter()
        .map(|e| Check::of(e, &measured))
        .collect();
    row.problems = scenario::integrity_failures(&scenario_for(plan, setup), outcome);
    if row.checks.iter().any(|c| !c.pass) {
        row.problems.extend(premise_problem(&measured, setup.rate));
    }
    row.measured = Some(measured);
    row.verdict = if !row.problems.is_empty() {
        Verdict::Invalid
    } else if row.checks.iter().all(|c| c.pass) {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    row
}

/// 0: every row passes; 1: the kernel departs from an expectation in some
/// row; 2: no departure, but some row could not be measured.
pub fn exit_code(rows: &[Row]) -> i32 {
    if rows.iter().any(|r| r.verdict == Verdict::Fail) {
        1
    } else if rows.iter().all(|r| r.verdict == Verdict::Pass) {
        0
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::expect::plans;
    use super::*;

    fn setup() -> Setup {
        Setup {
            kernel: "uname-kernel".into(),
            backend: "auto".into(),
            workers: 4,
            connections: 8,
            rate: 200,
        }
    }

    fn plan(name: &str) -> Plan {
        plans(4)
            .into_iter()
            .find(|p| p.name == name)
            .expect("known plan")
    }

    fn conn(ts_ns: u64, tid: Option<u32>, lat: Option<u64>) -> ConnSample {
        ConnSample {
            ts_ns,
            accepted_by: tid,
            accept_latency_us: lat,
            peer: None,
            woken: 1,
            eagain: 0,
            eagain_losers: 0,
            spurious: 0,
            flagged: false,
        }
    }

    /// An outcome of 8 connections whose figures are consistent (integrity holds).
    fn outcome(woken: f64, losers: f64, spurious: f64, eagain: f64, tids: &[u32]) -> Outcome {
        let conns: Vec<ConnSample> = tids
            .iter()
            .enumerate()
            .map(|(k, t)| conn(1000 * k as u64, Some(*t), Some(100 + k as u64)))
            .collect();
        let mut accepts: BTreeMap<u32, (u64, u64)> =
            [10, 11, 12, 13].iter().map(|t| (*t, (0, 0))).collect();
        for t in tids {
            let e = accepts.entry(*t).or_insert((0, 0));
            e.0 += 1;
            e.1 += 1;
        }
        Outcome {
            scenario: "x".into(),
            backend: "tracepoint".into(),
            kernel: "6.18.44".into(),
            load_connections: conns.len() as u64,
            load_errors: 0,
            conn_records: conns.len() as u64,
            woken_mean: woken,
            woken_p99: woken.ceil() as u64,
            eagain_per_conn: eagain,
            eagain_losers_per_conn: losers,
            spurious_per_conn: spurious,
            lost_events: 0,
            accepts_by_tid: accepts,
            failures: Vec::new(),
            diagnostics: Vec::new(),
            skipped_by_program: BTreeMap::new(),
            explained: Vec::new(),
            tracer_stderr: String::new(),
            conns,
        }
    }

    const SAME: [u32; 8] = [10; 8];
    const ROUND: [u32; 8] = [10, 11, 12, 13, 10, 11, 12, 13];

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[7], 99), Some(7));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50), Some(50));
        assert_eq!(percentile(&hundred, 99), Some(99));
        assert_eq!(percentile(&hundred, 100), Some(100));
        assert_eq!(percentile(&hundred, 0), Some(1));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 99), Some(4));
    }

    #[test]
    fn shares_of_accepts() {
        assert_eq!(shares(&[]), None);
        assert_eq!(shares(&[0, 0]), None);
        assert_eq!(shares(&[250, 0, 0, 0]), Some((1.0, 0.0)));
        assert_eq!(shares(&[1, 1, 1, 1]), Some((0.25, 0.25)));
        assert_eq!(shares(&[3, 1]), Some((0.75, 0.25)));
    }

    #[test]
    fn same_worker_share_follows_arrival_order_not_print_order() {
        // Printed out of order; by ts: A A B B -> pairs AA, AB, BB: 2 of 3 same.
        let c = [
            conn(30, Some(2), None),
            conn(10, Some(1), None),
            conn(40, Some(2), None),
            conn(20, Some(1), None),
        ];
        let share = same_worker_share(&c).expect("pairs");
        assert!((share - 2.0 / 3.0).abs() < 1e-12, "{share}");
        // Round-robin: never the same.
        let rr: Vec<ConnSample> = ROUND
            .iter()
            .enumerate()
            .map(|(k, t)| conn(k as u64, Some(*t), None))
            .collect();
        assert_eq!(same_worker_share(&rr), Some(0.0));
    }

    #[test]
    fn same_worker_share_skips_unknown_acceptors_and_needs_a_pair() {
        assert_eq!(same_worker_share(&[]), None);
        assert_eq!(same_worker_share(&[conn(1, Some(1), None)]), None);
        assert_eq!(
            same_worker_share(&[conn(1, Some(1), None), conn(2, None, None)]),
            None
        );
        // 1, ?, 1, 1: only the last pair counts.
        let c = [
            conn(1, Some(1), None),
            conn(2, None, None),
            conn(3, Some(1), None),
            conn(4, Some(1), None),
        ];
        assert_eq!(same_worker_share(&c), Some(1.0));
    }

    #[test]
    fn sample_sd_uses_n_minus_one() {
        assert_eq!(sample_sd(&[]), 0.0);
        assert_eq!(sample_sd(&[3.0]), 0.0);
        assert_eq!(sample_sd(&[4.0, 4.0, 4.0]), 0.0);
        // 2, 4, 4, 4, 5, 5, 7, 9: sum of squares 32, n-1 = 7.
        let sd = sample_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12, "{sd}");
    }

    #[test]
    fn spread_comes_from_the_conn_records() {
        let mut c: Vec<ConnSample> = (0..4)
            .map(|k| conn(k, Some(if k < 3 { 1 } else { 2 }), None))
            .collect();
        // woken 4,4,2,2; losers 1,0,0,1; spurious 2,3,1,0; eagain 2,1,0,1
        // (winner EAGAIN 1,1,0,0).
        for (k, (w, l, s, e)) in [(4, 1, 2, 2), (4, 0, 3, 1), (2, 0, 1, 0), (2, 1, 0, 1)]
            .into_iter()
            .enumerate()
        {
            (c[k].woken, c[k].eagain_losers, c[k].spurious, c[k].eagain) = (w, l, s, e);
        }
        let s = Spread::of(&c);
        let half = sample_sd(&[1.0, 1.0, 0.0, 0.0]);
        assert_eq!(s.conns, 4);
        assert!((s.woken_sd - 2.0 * half).abs() < 1e-12, "{s:?}");
        assert!((s.eagain_losers_sd - half).abs() < 1e-12, "{s:?}");
        assert!((s.spurious_sd - sample_sd(&[2.0, 3.0, 1.0, 0.0])).abs() < 1e-12);
        // losers + spurious: 3, 3, 1, 1.
        let wasted = s.wasted_sd.expect("wasted sd");
        assert!((wasted - 2.0 * half).abs() < 1e-12, "{s:?}");
        assert!((s.winner_eagain_sd - half).abs() < 1e-12, "{s:?}");
        // Pairs 1-1, 1-1, 1-2: three pairs, two by the same worker.
        assert_eq!(s.same_worker_pairs, 3);
        assert_eq!(same_worker_counts(&c), (2, 3));
        // An unknown acceptor removes the pairs it is part of.
        c[1].accepted_by = None;
        assert_eq!(same_worker_counts(&c), (0, 1));
        assert_eq!(Spread::of(&[]).conns, 0);
    }

    #[test]
    fn measured_figures_from_an_outcome() {
        let o = outcome(4.0, 0.6, 2.4, 1.6, &ROUND);
        let m = Measured::from_outcome(&o);
        assert_eq!(m.woken_p99, 4);
        assert!((m.winner_eagain_per_conn - 1.0).abs() < 1e-12);
        assert_eq!(m.accepts_per_worker, vec![2, 2, 2, 2]);
        assert_eq!(m.accept_share_max, Some(0.25));
        assert_eq!(m.accept_share_min, Some(0.25));
        // Latencies 100..=107.
        assert_eq!(m.accept_latency_us_p50, Some(103));
        assert_eq!(m.accept_latency_us_p99, Some(107));
        assert_eq!(m.same_worker_share, Some(0.0));
        assert_eq!(m.value(Metric::WastedPerConn), Some(3.0));
        assert_eq!(m.value(Metric::WokenMean), Some(4.0));
        assert_eq!(m.value(Metric::WinnerEagainPerConn), Some(1.0));
        assert_eq!(m.value(Metric::SameWorkerShare), Some(0.0));
        // EAGAIN below the losers (cannot happen, but never negative).
        let m = Measured::from_outcome(&outcome(4.0, 0.6, 2.4, 0.5, &ROUND));
        assert_eq!(m.winner_eagain_per_conn, 0.0);
    }

    #[test]
    fn the_measured_host_figures_pass_every_row() {
        // Figures of the kind measured on the 6.18 host (4 workers).
        let cases: [(&str, Outcome); 8] = [
            ("epoll-per-worker", outcome(4.0, 0.63, 2.37, 0.63, &ROUND)),
            (
                "epoll-per-worker+et",
                outcome(3.99, 0.54, 2.45, 1.54, &ROUND),
            ),
            (
                "epoll-per-worker+batch100",
                outcome(3.97, 0.05, 2.93, 1.04, &ROUND),
            ),
            ("shared-epoll", outcome(2.68, 0.68, 1.0, 0.68, &ROUND)),
            ("shared-epoll+et", outcome(1.0, 0.0, 0.0, 1.0, &SAME)),
            ("exclusive", outcome(1.0, 0.0, 0.0, 0.0, &SAME)),
            ("reuseport", outcome(0.98, 0.0, 0.0, 0.0, &ROUND)),
            ("blocking-accept", outcome(1.0, 0.0, 0.02, 0.0, &ROUND)),
        ];
        for (name, o) in &cases {
            let row = build(&plan(name), &setup(), Ok(o));
            assert_eq!(row.verdict, Verdict::Pass, "{name}: {:?}", row.checks);
            assert_eq!(row.kernel, "6.18.44");
            assert_eq!(row.backend, "tracepoint");
            assert!(row.problems.is_empty());
        }
    }

    #[test]
    fn each_departure_fails_its_row() {
        let cases: [(&str, Outcome, Metric); 10] = [
            // Too few woken for a herd (wasted figures left as a herd's).
            (
                "epoll-per-worker",
                outcome(1.0, 0.5, 2.5, 0.5, &ROUND),
                Metric::WokenMean,
            ),
            // Every worker woken but none wasted: impossible for a herd.
            (
                "epoll-per-worker",
                outcome(4.0, 0.5, 0.5, 0.5, &ROUND),
                Metric::WastedPerConn,
            ),
            // A loop that never ends in EAGAIN.
            (
                "epoll-per-worker+batch100",
                outcome(4.0, 0.5, 2.5, 0.5, &ROUND),
                Metric::WinnerEagainPerConn,
            ),
            (
                "shared-epoll",
                outcome(4.5, 0.5, 2.5, 0.5, &ROUND),
                Metric::WokenMean,
            ),
            (
                "shared-epoll+et",
                outcome(2.5, 0.0, 1.5, 1.0, &ROUND),
                Metric::WokenMean,
            ),
            (
                "exclusive",
                outcome(3.9, 0.0, 2.9, 0.0, &SAME),
                Metric::WokenMean,
            ),
            // One woken, but spread round-robin: not the LIFO pick.
            (
                "exclusive",
                outcome(1.0, 0.0, 0.0, 0.0, &ROUND),
                Metric::SameWorkerShare,
            ),
            (
                "reuseport",
                outcome(4.0, 1.0, 2.0, 1.0, &ROUND),
                Metric::WokenMean,
            ),
            (
                "blocking-accept",
                outcome(0.2, 0.0, 0.0, 0.0, &ROUND),
                Metric::WokenMean,
            ),
            // One woken, but always the same worker: not round-robin.
            (
                "blocking-accept",
                outcome(1.0, 0.0, 0.0, 0.0, &SAME),
                Metric::SameWorkerShare,
            ),
        ];
        for (name, o, metric) in &cases {
            let row = build(&plan(name), &setup(), Ok(o));
            assert_eq!(row.verdict, Verdict::Fail, "{name} {metric:?}");
            let failed: Vec<Metric> = row
                .checks
                .iter()
                .filter(|c| !c.pass)
                .map(|c| c.metric)
                .collect();
            assert_eq!(failed, vec![*metric], "{name}");
            assert_eq!(exit_code(&[row]), 1);
        }
    }

    #[test]
    fn an_unclean_measurement_is_invalid_not_a_departure() {
        let p = plan("exclusive");
        let mut o = outcome(1.0, 0.0, 0.0, 0.0, &SAME);
        o.lost_events = 3;
        let row = build(&p, &setup(), Ok(&o));
        assert_eq!(row.verdict, Verdict::Invalid);
        assert!(
            row.problems.iter().any(|m| m.contains("3 events lost")),
            "{:?}",
            row.problems
        );
        // Still shows what it measured.
        assert!(row.measured.is_some() && row.checks.iter().all(|c| c.pass));

        let mut o = outcome(1.0, 0.0, 0.0, 0.0, &SAME);
        o.accepts_by_tid.insert(10, (8, 7));
        let row = build(&p, &setup(), Ok(&o));
        assert_eq!(row.verdict, Verdict::Invalid);
        assert!(row.problems.iter().any(|m| m.contains("task 10")));

        // Fewer connections than asked for: load failed.
        let mut s = setup();
        s.connections = 9;
        let row = build(&p, &s, Ok(&outcome(1.0, 0.0, 0.0, 0.0, &SAME)));
        assert_eq!(row.verdict, Verdict::Invalid);
        assert!(row.problems.iter().any(|m| m.contains("8 of 9")));
        // Invalid even when an expectation fails too: no claim about the kernel.
        let mut o = outcome(4.0, 0.0, 3.0, 0.0, &ROUND);
        o.lost_events = 1;
        assert_eq!(build(&p, &setup(), Ok(&o)).verdict, Verdict::Invalid);
    }

    #[test]
    fn a_failed_run_is_an_error_row_with_the_setup_kernel() {
        let row = build(
            &plan("reuseport"),
            &setup(),
            Err("the tracer did not start".into()),
        );
        assert_eq!(row.verdict, Verdict::Error);
        assert_eq!(row.kernel, "uname-kernel");
        assert_eq!(row.backend, "auto");
        assert_eq!(row.measured, None);
        assert!(row.checks.is_empty());
        assert_eq!(row.problems, vec!["the tracer did not start".to_string()]);
    }

    #[test]
    fn an_unmeasurable_check_does_not_pass() {
        let mut o = outcome(1.0, 0.0, 0.0, 0.0, &SAME);
        for c in &mut o.conns {
            c.accepted_by = None;
        }
        let row = build(&plan("exclusive"), &setup(), Ok(&o));
        let c = row
            .checks
            .iter()
            .find(|c| c.metric == Metric::SameWorkerShare)
            .expect("lifo check");
        assert!(!c.pass && c.measured.is_none());
        assert_eq!(c.text(), "same-worker share not measured (>=0.625)");
        assert_eq!(row.verdict, Verdict::Fail);
    }

    #[test]
    fn a_departure_on_a_busy_machine_is_invalid_not_a_fail() {
        let p = plan("epoll-per-worker");
        let slow = |mut o: Outcome| {
            // One connection of 8 waited 30 ms for its accept: p99 = 30 ms > 5 ms gap.
            o.conns[3].accept_latency_us = Some(30_000);
            o
        };
        let row = build(&p, &setup(), Ok(&slow(outcome(3.4, 0.1, 2.3, 0.1, &ROUND))));
        assert_eq!(row.verdict, Verdict::Invalid);
        assert_eq!(
            row.problems,
            vec![
                "machine too busy: accept latency p99 30000 us > 5000 us between arrivals \
                  (workers may not have been asleep when connections arrived)"
                    .to_string()
            ]
        );
        // The same latency when every expectation holds: a pass, no problem.
        let row = build(&p, &setup(), Ok(&slow(outcome(4.0, 0.6, 2.4, 0.6, &ROUND))));
        assert_eq!(row.verdict, Verdict::Pass);
        assert!(row.problems.is_empty());
        // A departure with prompt accepts stays a departure.
        let row = build(&p, &setup(), Ok(&outcome(3.4, 0.1, 2.3, 0.1, &ROUND)));
        assert_eq!(row.verdict, Verdict::Fail);
    }

    #[test]
    fn premise_is_latency_p99_within_the_arrival_gap() {
        let mut m = Measured::from_outcome(&outcome(1.0, 0.0, 0.0, 0.0, &ROUND));
        m.accept_latency_us_p99 = Some(5000);
        assert_eq!(premise_problem(&m, 200), None, "equal to the gap is fine");
        m.accept_latency_us_p99 = Some(5001);
        assert!(premise_problem(&m, 200).is_some_and(|p| p.contains("5001 us > 5000 us")));
        assert_eq!(premise_problem(&m, 100), None, "10 ms gap");
        m.accept_latency_us_p99 = None;
        assert_eq!(premise_problem(&m, 200), None, "nothing measured: no claim");
        m.accept_latency_us_p99 = Some(2);
        assert!(premise_problem(&m, 1_000_000).is_some());
    }

    #[test]
    fn summaries_and_attempts() {
        let p = plan("epoll-per-worker");
        let fail = build(&p, &setup(), Ok(&outcome(3.4, 0.1, 2.3, 0.1, &ROUND)));
        assert_eq!(
            fail.summary(),
            "FAIL: woken/conn 3.40 (>=3.5); wasted/conn 2.40 (>=2.5)"
        );
        let error = build(&p, &setup(), Err("tracer died".into()));
        assert_eq!(error.summary(), "ERROR: tracer died");
        let pass = build(&p, &setup(), Ok(&outcome(4.0, 0.6, 2.4, 0.6, &ROUND)));
        assert_eq!(pass.summary(), "pass");
        assert_eq!((pass.attempts, pass.earlier_attempts.len()), (1, 0));
        let third = pass.after_attempts(&[fail.clone(), error]);
        assert_eq!(third.attempts, 3);
        assert_eq!(
            third.earlier_attempts,
            vec![fail.summary(), "ERROR: tracer died".to_string()]
        );
        assert_eq!(third.verdict, Verdict::Pass);
    }

    #[test]
    fn exit_codes() {
        let p = plan("reuseport");
        let pass = build(&p, &setup(), Ok(&outcome(1.0, 0.0, 0.0, 0.0, &ROUND)));
        let fail = build(&p, &setup(), Ok(&outcome(3.0, 0.0, 2.0, 0.0, &ROUND)));
        let error = build(&p, &setup(), Err("x".into()));
        let mut lost = outcome(1.0, 0.0, 0.0, 0.0, &ROUND);
        lost.lost_events = 1;
        let invalid = build(&p, &setup(), Ok(&lost));
        assert_eq!(exit_code(&[]), 0);
        assert_eq!(exit_code(&[pass.clone(), pass.clone()]), 0);
        assert_eq!(exit_code(&[pass.clone(), fail.clone()]), 1);
        assert_eq!(exit_code(&[pass.clone(), error.clone()]), 2);
        assert_eq!(exit_code(&[invalid.clone(), pass.clone()]), 2);
        // A departure outranks an unmeasured row.
        assert_eq!(exit_code(&[error, fail, invalid]), 1);
    }

    #[test]
    fn the_scenario_carries_the_plan_bounds() {
        let s = setup();
        let sc = scenario_for(&plan("epoll-per-worker"), &s);
        assert_eq!(
            sc.bound,
            Bound::Herd {
                woken: 3.5,
                wasted: 2.5
            }
        );
        assert_eq!((sc.workers, sc.connections, sc.rate), (4, 8, 200));
        assert_eq!(sc.serve_args, Vec::<&str>::new());
        let sc = scenario_for(&plan("shared-epoll+et"), &s);
        assert_eq!(sc.bound, Bound::Between(0.5, 1.5));
        assert_eq!(sc.serve_args, vec!["--edge-triggered"]);
        assert_eq!(sc.name, "shared-epoll+et");
        let sc = scenario_for(&plan("epoll-per-worker+batch100"), &s);
        assert_eq!(sc.serve_args, vec!["--accept-batch", "100"]);
    }

    #[test]
    fn check_text() {
        let p = plan("epoll-per-worker");
        let m = Measured::from_outcome(&outcome(4.0, 0.6, 2.4, 0.6, &ROUND));
        let c = Check::of(&p.expects[0], &m);
        assert_eq!(c.text(), "woken/conn 4.00 (>=3.5)");
        assert!(c.pass);
        assert_eq!(c.source, "H1");
    }
}
