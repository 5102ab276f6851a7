//! Aggregates over closed episodes: running totals, per-interval deltas and
//! the final summary.
use serde::{Deserialize, Serialize};

use super::{balance::Clients, ConnRecord};

/// Counts summed over a set of connection records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub connections: u64,
    /// Sum of `woken` over the records.
    pub woken: u64,
    /// Largest `woken` of one record.
    pub woken_max: u32,
    /// Records whose accepting task was among the woken (the woken "winners").
    pub woken_won: u64,
    pub returned: u64,
    pub spurious: u64,
    pub eagain: u64,
    pub eagain_losers: u64,
    pub incomplete: u64,
    /// Records open while the kernel skipped runs of the tracer's programs.
    pub possibly_incomplete: u64,
    /// Records with no accept by a traced task.
    pub unaccepted: u64,
}

impl Tally {
    /// `accepted`: a traced task accepted it (`r.accepted_by` is left out of
    /// records nobody reads).
    pub(crate) fn add(&mut self, r: &ConnRecord, won: bool, accepted: bool) {
        self.connections += 1;
        self.woken += u64::from(r.woken);
        self.woken_max = self.woken_max.max(r.woken);
        self.woken_won += u64::from(won);
        self.returned += u64::from(r.returned);
        self.spurious += u64::from(r.spurious);
        self.eagain += u64::from(r.eagain);
        self.eagain_losers += u64::from(r.eagain_losers);
        self.incomplete += u64::from(r.incomplete);
        self.possibly_incomplete += u64::from(r.possibly_incomplete);
        self.unaccepted += u64::from(!accepted);
    }

    fn per_conn(&self, v: u64) -> f64 {
        if self.connections == 0 {
            0.0
        } else {
            v as f64 / self.connections as f64
        }
    }

    /// Mean number of tasks woken per connection (0 with no connections).
    pub fn woken_mean(&self) -> f64 {
        self.per_conn(self.woken)
    }

    pub fn eagain_per_conn(&self) -> f64 {
        self.per_conn(self.eagain)
    }

    /// EAGAINs from tasks that accepted nothing, per connection.
    pub fn per_conn_losers(&self) -> f64 {
        self.per_conn(self.eagain_losers)
    }

    pub fn spurious_per_conn(&self) -> f64 {
        self.per_conn(self.spurious)
    }

    /// Wakeups that led nowhere per connection: losers' EAGAINs plus spurious wakes.
    pub fn wasted_per_conn(&self) -> f64 {
        self.per_conn(self.eagain_losers + self.spurious)
    }

    /// Woken tasks per connection that did not get the connection.
    #[cfg(test)]
    pub fn woken_for_nothing_per_conn(&self) -> f64 {
        self.per_conn(self.woken.saturating_sub(self.woken_won))
    }
}

/// What happened in one live interval (deltas since the previous one).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IntervalStats {
    /// Stream time (CLOCK_MONOTONIC ns) at the end of the interval.
    pub ts_ns: u64,
    pub tally: Tally,
    /// Events lost during the interval.
    pub lost_events: u64,
    /// Tasks that accepted during the interval, most accepts first, with
    /// their share of the interval's accepts.
    pub shares: Vec<TaskShare>,
    /// Workers able to accept (N; the fair share is 1/N), 0 if unknown.
    pub workers: u64,
}

impl IntervalStats {
    /// Accepts made during the interval.
    pub fn accepts(&self) -> u64 {
        self.shares.iter().map(|s| s.accepts).sum()
    }

    /// The largest share one task took (0 without accepts).
    pub fn share_max(&self) -> f64 {
        self.shares.first().map_or(0.0, |s| s.share)
    }
}

/// One task's part of the accepts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskShare {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub accepts: u64,
    /// accepts / all accepts (0..1).
    pub share: f64,
}

/// Shares of `(pid, tid, comm, accepts)` rows: the rows with accepts, most
/// first (then by pid, tid), each with its share of the total.
pub fn task_shares(rows: impl IntoIterator<Item = (u32, u32, String, u64)>) -> Vec<TaskShare> {
    let mut v: Vec<TaskShare> = rows
        .into_iter()
        .filter(|r| r.3 > 0)
        .map(|(pid, tid, comm, accepts)| TaskShare {
            pid,
            tid,
            comm,
            accepts,
            share: 0.0,
        })
        .collect();
    let total: u64 = v.iter().map(|s| s.accepts).sum();
    for s in &mut v {
        s.share = s.accepts as f64 / total as f64;
    }
    v.sort_by(|a, b| {
        b.accepts
            .cmp(&a.accepts)
            .then(a.pid.cmp(&b.pid))
            .then(a.tid.cmp(&b.tid))
    });
    v
}

/// How long one task held an imbalanced share (see `engine::balance`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Held {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// Consecutive 1 s windows with accepts in which it dominated.
    pub windows: u64,
    /// From the start of the first such window to the end of the last
    /// (stream time; windows without accepts in between included).
    pub seconds: f64,
    pub from_ns: u64,
    pub to_ns: u64,
    /// Its smallest share in one of those windows.
    pub share_min: f64,
}

/// What is known of the server's setup when judging the balance (read from
/// /proc: by diagnose, and by the tracer when it starts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetupHint {
    #[default]
    Unknown,
    /// One shared socket in exclusive waits (EPOLLEXCLUSIVE).
    Exclusive,
    /// One shared socket, waits not exclusive (every idle worker is woken).
    Shared,
    /// Workers take turns watching the socket.
    TakingTurns,
    /// An SO_REUSEPORT group.
    Reuseport,
    /// io_uring accepts armed on one shared socket, in exclusive waits
    /// (5.18+: one ring woken per connection).
    Uring,
}

/// How evenly the workers shared the accepts over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Balance {
    /// Workers able to accept: N, the fair share being 1/N (the larger of the
    /// count read from /proc, if any, and the tasks seen accepting).
    pub workers: u64,
    /// The most of them able to accept at one time: fewer than `workers`
    /// when workers were replaced during the run (a reload, a restart).
    pub workers_at_once: u64,
    /// The setup /proc showed at the start, which names the pattern behind
    /// an imbalance (`unknown` when not read, as in a replay of an older
    /// recording).
    pub setup: SetupHint,
    /// Workers read from /proc at the start (0: not known).
    pub workers_from_proc: u64,
    /// Successful accepts of all tasks.
    pub accepts: u64,
    /// Tasks that accepted at least once.
    pub accepting_tasks: u64,
    /// 1/N.
    pub fair_share: f64,
    /// The task with the most accepts (a process's accept loop counts as
    /// one task, named by its first thread that accepted).
    pub top: Option<TaskShare>,
    /// When `top` is a process's accept loop (see `KnownSetup::accept_loops`),
    /// how many of its threads accepted; 0 otherwise.
    #[serde(skip_serializing_if = "is_zero")]
    pub loop_threads: u64,
    /// Share of consecutive accepts made by the task that made the previous one.
    pub same_worker_share: Option<f64>,
    /// The longest run of 1 s windows one task dominated.
    pub held: Option<Held>,
    /// 1 s windows with accepts.
    pub windows: u64,
    /// The most listening sockets on one port, seen by arrivals or read from
    /// /proc at the start (2+: an SO_REUSEPORT group).
    pub listeners_per_port: u64,
    pub clients: Clients,
    /// Tasks outside the trace waiting on the same listeners: their share
    /// of the accepts is not known, so no verdict is given.
    pub untraced_waiters: u64,
    /// Events the kernel dropped: accepts among them are missing, and a
    /// CPU's ring buffer overflows alone, so the shares of the workers
    /// running there may be skewed.
    pub lost_events: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Distribution of tasks woken per connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WokenStats {
    pub mean: f64,
    pub p50: u32,
    pub p99: u32,
    pub max: u32,
}

impl WokenStats {
    /// Exact statistics from a histogram (`hist[n]` = connections that woke `n` tasks).
    pub fn from_histogram(hist: &[u64]) -> WokenStats {
        let total: u64 = hist.iter().sum();
        if total == 0 {
            return WokenStats::default();
        }
        let sum: u64 = hist.iter().enumerate().map(|(n, c)| n as u64 * c).sum();
        let max = hist.iter().rposition(|&c| c > 0).unwrap_or(0);
        WokenStats {
            mean: sum as f64 / total as f64,
            p50: nearest_rank(hist, total, 50),
            p99: nearest_rank(hist, total, 99),
            max: max as u32,
        }
    }
}

/// Nearest-rank percentile: the smallest value whose cumulative count reaches
/// `ceil(pct/100 * total)`.
fn nearest_rank(hist: &[u64], total: u64, pct: u64) -> u32 {
    let rank = (total * pct).div_ceil(100).max(1);
    let mut seen = 0;
    for (n, &c) in hist.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return n as u32;
        }
    }
    hist.len().saturating_sub(1) as u32
}

/// Per-task counters. A reused tid (new task identity) is a separate row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskStats {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// Successful accepts (matched to a traced arrival or not).
    pub accepts: u64,
    /// Times woken inside a traced wake chain.
    pub woken: u64,
    /// `accept` calls that returned EAGAIN.
    pub eagain: u64,
    /// Of those, the EAGAINs of a woken task that lost the race (it had
    /// accepted nothing since it returned; see `ConnRecord::eagain_losers`);
    /// the others end an accept loop that emptied the queue.
    pub eagain_losers: u64,
    /// Wakes that never reached user space with work (see `ConnRecord::spurious`).
    pub spurious: u64,
}

/// Events the engine could not attribute (diagnostics, not errors).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Diagnostics {
    /// EV_WAKE for a chain with no open episode (arrival not traced, or already closed).
    pub orphan_wakes: u64,
    /// Successful accepts whose child socket matched no open episode.
    pub unmatched_accepts: u64,
    /// EAGAINs with no open episode on the task or its listener.
    pub eagain_unattributed: u64,
}

/// Everything the final report needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub totals: Tally,
    pub woken_per_conn: WokenStats,
    /// `woken_histogram[n]` = connections that woke `n` tasks.
    pub woken_histogram: Vec<u64>,
    /// Tasks with any activity, sorted by accepts (descending), then pid, tid.
    pub tasks: Vec<TaskStats>,
    pub lost_events: u64,
    /// Runs of the tracer's programs the kernel skipped because another BPF
    /// program was running on that CPU (its recursion guard). Most are
    /// wakeups of untraced tasks, so they are not counted as lost events;
    /// any that concerned traced tasks are missing from the counts.
    pub skipped_runs: u64,
    /// `skipped_runs` by program (filled in by the live pipeline from the
    /// kernel's per-program counters; empty in a replay).
    pub skipped_by_program: std::collections::BTreeMap<String, u64>,
    /// Inserts the programs could not make because a map was full, by map
    /// (live runs only): what they could not remember (a task, a listener...).
    pub insert_failed: std::collections::BTreeMap<String, u64>,
    /// Records the live merge of the ring buffers released out of time
    /// order (filled in by the live pipeline; 0 in a replay), and the most
    /// any was stamped before the merge that missed it.
    pub late_records: u64,
    pub late_max_behind_ns: u64,
    pub diagnostics: Diagnostics,
    pub balance: Balance,
    /// Tasks outside the trace waiting on the same listeners (read from
    /// /proc at the start): the counts cover the traced tasks only.
    pub untraced: super::Untraced,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn woken_stats_are_exact_from_the_histogram() {
        // 98 connections woke 1 task, 1 woke 4, 1 woke 9.
        let mut hist = vec![0u64; 10];
        hist[1] = 98;
        hist[4] = 1;
        hist[9] = 1;
        let s = WokenStats::from_histogram(&hist);
        assert_eq!(s.p50, 1);
        assert_eq!(s.p99, 4);
        assert_eq!(s.max, 9);
        assert!((s.mean - (98.0 + 4.0 + 9.0) / 100.0).abs() < 1e-12);
    }

    #[test]
    fn woken_stats_of_nothing_are_zero() {
        assert_eq!(WokenStats::from_histogram(&[]), WokenStats::default());
        assert_eq!(WokenStats::from_histogram(&[0, 0]), WokenStats::default());
    }

    #[test]
    fn percentiles_of_a_single_value() {
        let s = WokenStats::from_histogram(&[0, 0, 0, 5]);
        assert_eq!((s.p50, s.p99, s.max), (3, 3, 3));
        assert_eq!(s.mean, 3.0);
    }

    #[test]
    fn task_shares_keep_accepting_tasks_most_first() {
        let rows = vec![
            (1, 1, "a".to_string(), 1),
            (2, 2, "b".to_string(), 0),
            (3, 3, "c".to_string(), 3),
            (0, 9, "d".to_string(), 1),
        ];
        let s = task_shares(rows);
        let order: Vec<(u32, u64)> = s.iter().map(|t| (t.tid, t.accepts)).collect();
        assert_eq!(order, vec![(3, 3), (9, 1), (1, 1)], "ties by pid");
        assert_eq!(s[0].share, 0.6);
        assert_eq!(s[1].share, 0.2);
        assert!(task_shares(Vec::new()).is_empty());
        assert!(task_shares(vec![(1, 1, "a".to_string(), 0)]).is_empty());
        let i = IntervalStats {
            shares: s,
            ..IntervalStats::default()
        };
        assert_eq!((i.accepts(), i.share_max()), (5, 0.6));
        assert_eq!(IntervalStats::default().share_max(), 0.0);
    }

    #[test]
    fn per_conn_rates_divide_by_connections() {
        let t = Tally {
            connections: 4,
            woken: 16,
            woken_won: 4,
            eagain: 12,
            eagain_losers: 12,
            spurious: 2,
            ..Tally::default()
        };
        assert_eq!(t.woken_mean(), 4.0);
        assert_eq!(t.eagain_per_conn(), 3.0);
        assert_eq!(t.spurious_per_conn(), 0.5);
        assert_eq!(t.wasted_per_conn(), 3.5);
        assert_eq!(t.woken_for_nothing_per_conn(), 3.0);
        assert_eq!(Tally::default().woken_mean(), 0.0);
    }
}
