//! Per-connection wake-episode reconstruction.
//!
//! Input: [`RawEvent`]s in ring-buffer order. Output: one [`ConnRecord`] per
//! connection (an *episode*: arrival, the tasks the kernel woke for it, how
//! each wake ended, the accept) plus running aggregates.
//!
//! How a wake ends (per woken task):
//! - *returned*: the task got back to user space with work (`epoll_wait` or
//!   `ep_send_events` returned > 0, or an accept it was blocked in returned);
//! - *spurious*: it did not: `ep_send_events` found nothing (back to sleep in
//!   the kernel), `epoll_wait` returned 0 or an error such as EINTR, the task
//!   was woken again by another connection before returning, it exited, or the
//!   episode timed out while the wake was still unresolved.
//!
//! An episode closes when it has its accept and every woken task has had its
//! chance to call accept (a later accept failure, poll return, wake or exit),
//! plus a short grace (`settle_grace_ns`) for wakes still being emitted by the
//! softirq on another CPU; or when stream time (the largest timestamp seen, as
//! CPUs' clocks interleave slightly out of order) passes arrival +
//! `episode_timeout_ns`; or when more than `max_open_episodes` are open (the
//! oldest is closed and flagged incomplete).
//!
//! Accepts are matched to episodes by the child socket. A successful accept
//! with no child (a probe that cannot see it) takes the oldest unaccepted
//! episode of its listener, as the accept queue is FIFO. An EAGAIN counts on
//! the task's last wake episode if it is on the same listener (or the listener
//! is unknown), else on the newest open episode of the listener; it is a
//! *loser's* EAGAIN when the task accepted nothing since it last returned to
//! user space (a batch-accepting winner's loop ends with one EAGAIN too).
//!
//! Lost events (a per-CPU `seq` gap, or drops reported with
//! [`Engine::note_lost`]) flag every episode open at that moment incomplete:
//! their counts are lower bounds, not silently wrong.
//!
//! EV_WAKE with `FLAG_WAKE_CASCADE` (a woken thread waking the next one on a
//! shared level-triggered epoll) is a wake of the same connection like any other.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use herdtrace_common::{
    RawEvent, EV_ACCEPT_RET, EV_ARRIVAL, EV_EPOLL_CB, EV_POLL_RET, EV_SEND_EVENTS, EV_TASK_EXIT,
    EV_TASK_NEW, EV_WAKE, FLAG_AFTER_POLL, FLAG_AFTER_POLL_WORK, FLAG_NESTED_SEND,
    FLAG_WAKE_CASCADE,
};
use serde::{Deserialize, Serialize};

use crate::events;
pub use crate::probes::AfterSkip;

pub mod balance;
mod episodes;
mod loss;
mod stats;
#[cfg(feature = "test-hooks")]
pub mod synth;
#[cfg(test)]
mod tests;
mod units;

use balance::BalanceTracker;
use episodes::{EpRef, Episodes, WakeState, Woken, NIL};
use loss::LossTracker;
use rustc_hash::FxHashMap;
#[cfg(test)]
pub(crate) use stats::task_shares;
pub use stats::{
    Balance, Diagnostics, Held, IntervalStats, SetupHint, Summary, Tally, TaskShare, TaskStats,
    WokenStats,
};
use units::Units;

const EAGAIN: i64 = -(libc::EAGAIN as i64);

/// The epoll return an event of a task carries ([`FLAG_AFTER_POLL`]), as
/// the `ret` it stands for: 1 when it gave events, else 0 (a held return's
/// count is not kept: user space needs only whether it found work).
pub fn held_poll_return(ev: &RawEvent) -> Option<i64> {
    let task_event = matches!(
        ev.kind,
        EV_WAKE | EV_POLL_RET | EV_SEND_EVENTS | EV_ACCEPT_RET | EV_TASK_EXIT
    );
    (task_event && ev.flags & FLAG_AFTER_POLL != 0)
        .then(|| i64::from(ev.flags & FLAG_AFTER_POLL_WORK != 0))
}

/// Tuning of the reconstruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// An episode still open this long after its arrival (stream time) is
    /// closed; unresolved wakes then count as spurious.
    pub episode_timeout_ns: u64,
    /// Memory bound: beyond this many open episodes the oldest is closed and
    /// flagged incomplete.
    pub max_open_episodes: usize,
    /// A complete episode is emitted only this long (stream time) after it
    /// completed, so that wakes of the same chain still in flight on another
    /// CPU are counted. 0 emits at once.
    pub settle_grace_ns: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            episode_timeout_ns: 1_000_000_000,
            max_open_episodes: 65_536,
            settle_grace_ns: 2_000_000,
        }
    }
}

/// What /proc showed of the traced server's setup when tracing started
/// (zeros: not known, as in replays of older recordings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownSetup {
    /// Workers able to accept (the N of the fair share).
    pub workers: u64,
    /// The most listening sockets on one address (2+: an SO_REUSEPORT group).
    pub listeners_per_addr: u64,
    /// The workers /proc named: the summary's task table lists them even
    /// when they neither woke nor accepted.
    pub tasks: Vec<KnownTask>,
    /// How they wait for connections (names the pattern of an imbalance).
    pub hint: SetupHint,
    /// Tasks outside the trace waiting on the same listeners.
    pub untraced: Untraced,
    /// Processes that run one accept loop on whichever of their threads is
    /// free (see `diagnose::layout::accept_loop_pids`): the balance verdict
    /// counts the loop, not the threads (see `units`).
    pub accept_loops: Vec<u32>,
}

/// Tasks outside the trace that wait on the traced listeners, as when
/// `--pid` names one worker of a pre-fork server instead of its master:
/// their wakeups and accepts are not seen, so "1 task woken per connection"
/// would read as no herd. The report says so and does not judge the balance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Untraced {
    /// The waiting tasks, with the traced listeners' ports they wait on.
    pub tasks: Vec<KnownTask>,
    /// The nearest process whose tree holds them and the traced ones, and
    /// which holds the listener itself (the server's master): trace it instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_pid: Option<u32>,
}

impl Untraced {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Their pids, each once, in order.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.tasks.iter().map(|t| t.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// A task /proc showed able to accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownTask {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// The local ports it listens on (the Prometheus exporter's zero series;
    /// absent in recordings made before them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// The task that accepted a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRef {
    pub pid: u32,
    pub tid: u32,
    /// Shared with the task's stats row: a record costs no allocation.
    pub comm: Arc<str>,
}

/// One reconstructed connection (wake episode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRecord {
    /// Arrival time (CLOCK_MONOTONIC ns).
    pub ts_ns: u64,
    /// Local (listening) port.
    pub port: u16,
    /// Client address, when the probe provided it.
    pub peer: Option<SocketAddr>,
    /// `None`: no traced task accepted it before the episode closed.
    pub accepted_by: Option<TaskRef>,
    /// Distinct tasks woken by the connection.
    pub woken: u32,
    /// Woken tasks that returned to user space with work.
    pub returned: u32,
    /// Woken tasks that did not (see the module docs).
    pub spurious: u32,
    /// `accept` calls that returned EAGAIN for this connection.
    pub eagain: u32,
    /// EAGAINs from tasks that accepted nothing since returning to user space
    /// or being woken (a batch-accepting winner's loop-ending EAGAIN is not a
    /// loss).
    pub eagain_losers: u32,
    /// Distinct epoll instances notified.
    pub epolls: u32,
    /// Arrival to successful accept, in microseconds.
    pub accept_latency_us: Option<u64>,
    /// Events were lost (or the episode was evicted) while it was open: the
    /// counts are lower bounds.
    pub incomplete: bool,
    /// The kernel skipped runs of the tracer's programs (its recursion
    /// guard) while the episode was open: some of its events may be
    /// missing. Separate from `incomplete`, which is certain loss.
    pub possibly_incomplete: bool,
    /// Network namespace (inode number) of the listener; 0 when unknown.
    pub netns: u32,
}

/// Live state of a task (keyed by tid).
#[derive(Debug, Clone, Copy)]
struct Task {
    pid: u32,
    comm: [u8; 16],
    /// Stats row of this identity, created on first activity.
    row: u32,
    /// Wake not yet resolved.
    pending: Option<EpRef>,
    /// Episode of the most recent wake.
    last: Option<EpRef>,
    /// Accepts since the task last returned from `epoll_wait` or was woken:
    /// an EAGAIN after none is a loss, after some the end of an accept loop.
    accepted_since_return: u32,
    /// `ep_send_events` already resolved this activation; the next poll
    /// return belongs to it.
    returning: bool,
}

impl Task {
    fn new(pid: u32, comm: [u8; 16]) -> Task {
        Task {
            pid,
            comm,
            row: NIL,
            pending: None,
            last: None,
            accepted_since_return: 0,
            returning: false,
        }
    }
}

#[derive(Debug, Clone)]
struct TaskRow {
    pid: u32,
    tid: u32,
    comm: [u8; 16],
    /// `comm` as text, made when it changes (not per connection).
    name: Arc<str>,
    accepts: u64,
    woken: u64,
    eagain: u64,
    /// Of `eagain`, those of a task that had accepted nothing since it
    /// returned (see `ConnRecord::eagain_losers`).
    eagain_losers: u64,
    spurious: u64,
}

/// The reconstruction state machine. See the module docs.
pub struct Engine {
    cfg: EngineConfig,
    eps: Episodes,
    chains: FxHashMap<u64, u32>,
    children: FxHashMap<u64, u32>,
    tasks: FxHashMap<u32, Task>,
    rows: Vec<TaskRow>,
    ready: VecDeque<(EpRef, u64)>,
    done: Vec<ConnRecord>,
    /// Episodes changed by the current event, checked for completion after it.
    touched: Vec<EpRef>,
    stream_ns: u64,
    loss: LossTracker,
    skipped_runs: u64,
    /// Bumped whenever skipped runs are reported: episodes open across a
    /// change are possibly incomplete.
    skip_epoch: u64,
    /// Successful accepts whose child socket had no episode yet, waiting
    /// for its arrival (the child joins the accept queue before its
    /// handshake tracepoint and wakeup run, so a task on another CPU can
    /// accept it first): (stream time, child, stats row).
    early_accepts: FxHashMap<u64, EarlyAccept>,
    /// `early_accepts` in arrival order, for expiry: (stream time, child);
    /// an entry whose child was matched (or re-added later) is skipped.
    early_order: VecDeque<(u64, u64)>,
    lost_at_interval: u64,
    diag: Diagnostics,
    totals: Tally,
    interval: Tally,
    hist: Vec<u64>,
    balance: BalanceTracker,
    /// The setup known from outside (/proc), zeros if not.
    known: KnownSetup,
    /// Balance units (tasks, or accept loops) with at least one accept.
    accepting_rows: u64,
    /// Of those, the ones whose task was not seen to exit, and the most there were at once:
    /// a reload (nginx -s reload) replaces every worker, and the old ones
    /// must not count towards N after they are gone.
    accepting_alive: u64,
    accepting_peak: u64,
    units: Units,
    /// Whether closed episodes are passed on as records (else only counted).
    records: bool,
    /// No timeout, early accept or settle-grace deadline falls before this
    /// stream time, so `expire` has nothing to do until then (a lower bound:
    /// lowered whenever a deadline is added, recomputed by `expire`).
    next_due_ns: u64,
    /// Whether closed episodes wait for the next skip sample before they
    /// are counted and passed on (see [`Engine::hold_for_skip_samples`]).
    hold: bool,
    /// Closed episodes waiting for a skip sample, in closing order.
    held: VecDeque<HeldRecord>,
    /// Clock time of the last skip sample applied.
    last_sample_ns: u64,
    /// The last sample showed skips that flag, and what they can leave
    /// stale in the next window (see [`AfterSkip`]).
    skip_after: Option<AfterSkip>,
}

/// A closed episode waiting for the skip sample that covers its last moments.
struct HeldRecord {
    /// Stream time at closing (at or after the episode's last event).
    closed_ns: u64,
    rec: ConnRecord,
    won: bool,
    accepted: bool,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            eps: Episodes::default(),
            chains: FxHashMap::default(),
            children: FxHashMap::default(),
            tasks: FxHashMap::default(),
            rows: Vec::new(),
            ready: VecDeque::new(),
            done: Vec::new(),
            touched: Vec::new(),
            stream_ns: 0,
            loss: LossTracker::default(),
            skipped_runs: 0,
            skip_epoch: 0,
            early_accepts: FxHashMap::default(),
            early_order: VecDeque::new(),
            lost_at_interval: 0,
            diag: Diagnostics::default(),
            totals: Tally::default(),
            interval: Tally::default(),
            hist: Vec::new(),
            balance: BalanceTracker::default(),
            known: KnownSetup::default(),
            accepting_rows: 0,
            accepting_alive: 0,
            accepting_peak: 0,
            units: Units::default(),
            records: true,
            next_due_ns: 0,
            hold: false,
            held: VecDeque::new(),
            last_sample_ns: 0,
            skip_after: None,
        }
    }

    /// Live tracing with skip samples: a closed episode is counted and passed
    /// on only at the first [`Engine::skip_sample`] taken after it closed, so
    /// that runs the kernel skipped while it was open flag it even when it
    /// closed before the sample showed them (a skip counter has no time, only
    /// the sample window it grew in).
    pub fn hold_for_skip_samples(&mut self) {
        self.hold = true;
    }

    /// Applies a skip sample taken at clock time `at_ns` (the per-program
    /// counters were read then, and every event before was fed since).
    /// `skipped`: the counters grew for programs that flag (see
    /// [`Engine::note_skipped_runs`], called first), and what their skips
    /// can leave stale. Every held episode that closed after the previous
    /// sample was open in the window the skips happened in, and is flagged
    /// possibly incomplete. So is the window after it, which the next
    /// sample covers: a skipped run leaves state stale until it is next
    /// written, which can fall after the sample. Per-CPU or global state
    /// ([`AfterSkip::Anything`]: an open wake chain) can touch any
    /// connection, and every episode open in that window is flagged; a
    /// task's own state ([`AfterSkip::TaskCascades`]: a syscall exit
    /// skipped, so the task still counts as woken by its last connection)
    /// only a connection the task wakes in cascade, and only episodes that
    /// get a cascade wakeup in that window are. Held episodes that closed
    /// by `at_ns` are then counted and passed to `sink`.
    pub fn skip_sample<F: FnMut(ConnRecord)>(
        &mut self,
        at_ns: u64,
        skipped: Option<AfterSkip>,
        sink: &mut F,
    ) {
        let flagged = skipped.is_some();
        let after = std::mem::replace(&mut self.skip_after, skipped);
        let after_all = after == Some(AfterSkip::Anything);
        if after_all && !flagged {
            // The episodes open now were open in the window after the skips.
            self.skip_epoch += 1;
        }
        if flagged || after_all {
            let since = self.last_sample_ns;
            for h in self.held.iter_mut().filter(|h| h.closed_ns >= since) {
                h.rec.possibly_incomplete = true;
            }
        }
        self.release_held(at_ns);
        self.last_sample_ns = self.last_sample_ns.max(at_ns);
        self.drain(sink);
    }

    /// Counts and passes on the held episodes that closed by `until_ns`.
    fn release_held(&mut self, until_ns: u64) {
        while self.held.front().is_some_and(|h| h.closed_ns <= until_ns) {
            if let Some(h) = self.held.pop_front() {
                self.count_closed(h.rec, h.won, h.accepted);
            }
        }
    }

    /// Whether records of closed episodes are wanted (they are by default);
    /// without, the sinks of [`Engine::push`] get none and the totals,
    /// histogram and balance are kept the same.
    pub fn set_records(&mut self, wanted: bool) {
        self.records = wanted;
    }

    /// What /proc showed of the setup: the fair share is judged against its
    /// workers (tasks that never accepted included), and an SO_REUSEPORT
    /// group is known even when every connection hashed to one socket.
    pub fn set_setup(&mut self, known: KnownSetup) {
        self.known = known;
    }

    /// N over the whole run: the workers known, or more if more tasks were
    /// seen accepting (shares are of the run's accepts, so workers that
    /// replaced others count too).
    pub fn workers(&self) -> u64 {
        self.known.workers.max(self.accepting_rows)
    }

    /// N now: the workers known, or more if more accepting tasks are alive.
    fn workers_now(&self) -> u64 {
        self.known.workers.max(self.accepting_alive)
    }

    /// Largest event timestamp (or clock given to [`Engine::advance_to`]) so far.
    pub fn stream_ns(&self) -> u64 {
        self.stream_ns
    }

    /// Episodes currently open.
    #[cfg(test)]
    pub fn open_episodes(&self) -> usize {
        self.eps.len()
    }

    /// Events lost so far: seq gaps and kernel-reported drops count the same
    /// drops, so this is the larger of the two, not their sum.
    pub fn lost_events(&self) -> u64 {
        self.loss.total()
    }

    /// Feeds one event; records of episodes that close are passed to `sink`.
    pub fn push<F: FnMut(ConnRecord)>(&mut self, ev: &RawEvent, sink: &mut F) {
        self.loss
            .observe(ev.cpu, ev.seq, ev.flags & FLAG_NESTED_SEND != 0);
        self.stream_ns = self.stream_ns.max(ev.ts_ns);
        if self.stream_ns >= self.next_due_ns {
            self.expire();
        }
        if let Some(ret) = held_poll_return(ev) {
            // The task's epoll return the programs held for this event (see
            // `POLL_HELD`): it came first.
            self.on_poll_ret(&RawEvent {
                kind: EV_POLL_RET,
                ret,
                flags: 0,
                ..*ev
            });
        }
        match ev.kind {
            EV_ARRIVAL => self.on_arrival(ev),
            EV_WAKE => self.on_wake(ev),
            EV_EPOLL_CB => self.on_epoll_cb(ev),
            EV_POLL_RET => self.on_poll_ret(ev),
            EV_SEND_EVENTS => self.on_send_events(ev),
            EV_ACCEPT_RET => self.on_accept_ret(ev),
            EV_TASK_NEW => self.on_task_new(ev),
            EV_TASK_EXIT => self.on_task_exit(ev),
            _ => {}
        }
        self.check_touched();
        self.drain(sink);
    }

    /// Drops reported by the kernel's counter (increments, not totals). Open
    /// episodes are flagged incomplete when this reveals drops that no seq
    /// gap showed.
    pub fn note_lost(&mut self, n: u64) {
        self.loss.report(n);
    }

    /// Program runs the kernel skipped (an increment); see
    /// [`Summary::skipped_runs`]. Every episode open now is flagged
    /// possibly incomplete.
    #[cfg(test)]
    pub fn note_skipped(&mut self, n: u64) {
        self.note_skipped_runs(n, true);
    }

    /// Skipped runs of programs whose events a connection's figures depend
    /// on (`flags`: the episodes open now are flagged possibly incomplete)
    /// or not (counted only).
    pub fn note_skipped_runs(&mut self, n: u64, flags: bool) {
        if n > 0 {
            self.skipped_runs = self.skipped_runs.saturating_add(n);
            if flags {
                self.skip_epoch += 1;
            }
        }
    }

    /// Moves the clock forward without an event (live mode when idle):
    /// closes timed-out and settled episodes.
    pub fn advance_to<F: FnMut(ConnRecord)>(&mut self, now_ns: u64, sink: &mut F) {
        self.stream_ns = self.stream_ns.max(now_ns);
        self.expire();
        self.drain(sink);
    }

    /// Closes every open episode (end of the run).
    pub fn finish<F: FnMut(ConnRecord)>(&mut self, sink: &mut F) {
        self.diag.unmatched_accepts += self.early_accepts.len() as u64;
        self.early_accepts.clear();
        self.early_order.clear();
        while let Some(slot) = self.eps.oldest() {
            self.close(slot, false);
        }
        // The last skip sample was applied before the end.
        self.release_held(u64::MAX);
        self.ready.clear();
        self.drain(sink);
    }

    /// Deltas since the previous call, stamped with the stream time.
    pub fn take_interval(&mut self) -> IntervalStats {
        let lost = self.lost_events();
        let deltas = self.units.take_deltas();
        let shares = stats::task_shares(
            deltas
                .into_iter()
                .map(|(row, delta)| self.named(row, delta)),
        );
        let out = IntervalStats {
            ts_ns: self.stream_ns,
            tally: std::mem::take(&mut self.interval),
            lost_events: lost - self.lost_at_interval,
            workers: self.workers_now().max(shares.len() as u64),
            shares,
        };
        self.lost_at_interval = lost;
        out
    }

    /// Whether the current interval has any connection or loss to report.
    pub fn has_interval_data(&self) -> bool {
        self.interval.connections > 0 || self.lost_events() > self.lost_at_interval
    }

    /// Totals over all closed episodes so far.
    pub fn summary(&self) -> Summary {
        let mut tasks: Vec<TaskStats> = self
            .rows
            .iter()
            .map(|r| TaskStats {
                pid: r.pid,
                tid: r.tid,
                comm: events::comm_str(&r.comm).into_owned(),
                accepts: r.accepts,
                woken: r.woken,
                eagain: r.eagain,
                eagain_losers: r.eagain_losers,
                spurious: r.spurious,
            })
            .collect();
        // Workers that did nothing, so that the table shows who took none.
        for k in &self.known.tasks {
            if !tasks.iter().any(|t| t.tid == k.tid) {
                tasks.push(TaskStats {
                    pid: k.pid,
                    tid: k.tid,
                    comm: k.comm.clone(),
                    accepts: 0,
                    woken: 0,
                    eagain: 0,
                    eagain_losers: 0,
                    spurious: 0,
                });
            }
        }
        tasks.sort_by(|a, b| {
            b.accepts
                .cmp(&a.accepts)
                .then(a.pid.cmp(&b.pid))
                .then(a.tid.cmp(&b.tid))
        });
        let balance = self.balance_summary();
        Summary {
            totals: self.totals,
            woken_per_conn: WokenStats::from_histogram(&self.hist),
            woken_histogram: self.hist.clone(),
            tasks,
            lost_events: self.lost_events(),
            skipped_runs: self.skipped_runs,
            skipped_by_program: Default::default(),
            insert_failed: Default::default(),
            late_records: 0,
            late_max_behind_ns: 0,
            diagnostics: self.diag,
            balance,
            untraced: self.known.untraced.clone(),
        }
    }

    /// `(pid, tid, comm, accepts)` of stats row `row`, for
    /// [`stats::task_shares`].
    fn named(&self, row: u32, accepts: u64) -> (u32, u32, String, u64) {
        let r = &self.rows[row as usize];
        (
            r.pid,
            r.tid,
            events::comm_str(&r.comm).into_owned(),
            accepts,
        )
    }

    fn balance_summary(&self) -> Balance {
        let workers = self.workers();
        let shares = stats::task_shares(self.units.iter().map(|u| self.named(u.row, u.accepts)));
        // The loop the top share is, if it is one (equal loops named by
        // one thread are alike).
        let loop_threads = shares.first().map_or(0, |top| {
            self.units
                .iter()
                .filter(|u| u.is_loop && u.accepts == top.accepts)
                .find(|u| self.rows[u.row as usize].tid == top.tid)
                .map_or(0, |u| u.threads)
        });
        let held = self.balance.longest_run(self.workers_now()).map(|r| {
            let unit_row = self.units.get(r.unit).map_or(0, |u| u.row);
            let row = &self.rows[unit_row as usize];
            Held {
                pid: row.pid,
                tid: row.tid,
                comm: events::comm_str(&row.comm).into_owned(),
                windows: r.windows,
                seconds: (r.to_ns - r.from_ns) as f64 / 1e9,
                from_ns: r.from_ns,
                to_ns: r.to_ns,
                share_min: r.share_min,
            }
        });
        Balance {
            workers,
            workers_at_once: self.known.workers.max(self.accepting_peak),
            setup: self.known.hint,
            workers_from_proc: self.known.workers,
            accepts: shares.iter().map(|s| s.accepts).sum(),
            accepting_tasks: shares.len() as u64,
            fair_share: balance::fair_share(workers),
            top: shares.into_iter().next(),
            loop_threads,
            same_worker_share: self.balance.same_worker_share(),
            held,
            windows: self.balance.windows(),
            listeners_per_port: self
                .balance
                .max_listeners_per_port()
                .max(self.known.listeners_per_addr),
            clients: self.balance.clients(workers),
            untraced_waiters: self.known.untraced.tasks.len() as u64,
            lost_events: self.lost_events(),
        }
    }

    // ---- closing ----------------------------------------------------------

    fn expire(&mut self) {
        while let Some(&(ts, child)) = self.early_order.front() {
            if ts.saturating_add(EARLY_ACCEPT_WAIT_NS) > self.stream_ns {
                break;
            }
            self.early_order.pop_front();
            if self
                .early_accepts
                .get(&child)
                .is_some_and(|a| a.ts_ns == ts)
            {
                self.early_accepts.remove(&child);
                self.diag.unmatched_accepts += 1;
            }
        }
        while let Some(slot) = self.eps.oldest() {
            if self.eps[slot]
                .ts_ns
                .saturating_add(self.cfg.episode_timeout_ns)
                > self.stream_ns
            {
                break;
            }
            self.close(slot, false);
        }
        while let Some(&(r, due)) = self.ready.front() {
            if due > self.stream_ns {
                break;
            }
            self.ready.pop_front();
            if !self.eps.valid(r) {
                continue;
            }
            self.eps[r.slot].queued = false;
            if self.eps[r.slot].is_complete() {
                self.close(r.slot, false);
            }
        }
        let early = self
            .early_order
            .front()
            .map(|&(ts, _)| ts.saturating_add(EARLY_ACCEPT_WAIT_NS));
        let timeout = self.eps.oldest().map(|slot| {
            self.eps[slot]
                .ts_ns
                .saturating_add(self.cfg.episode_timeout_ns)
        });
        let ready = self.ready.front().map(|&(_, due)| due);
        self.next_due_ns = [early, timeout, ready]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(u64::MAX);
    }

    /// Makes the next event run `expire` whatever its deadline (the tests
    /// compare the shortcut with an engine that expires at every event).
    #[cfg(test)]
    pub fn expire_at_next_event(&mut self) {
        self.next_due_ns = 0;
    }

    /// A new deadline for `expire` at stream time `due`.
    fn due_at(&mut self, due: u64) {
        self.next_due_ns = self.next_due_ns.min(due);
    }

    fn check_touched(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        for &r in &touched {
            if !self.eps.valid(r) || !self.eps[r.slot].is_complete() {
                continue;
            }
            if self.cfg.settle_grace_ns == 0 {
                self.close(r.slot, false);
            } else if !self.eps[r.slot].queued {
                self.eps[r.slot].queued = true;
                let due = self.stream_ns.saturating_add(self.cfg.settle_grace_ns);
                self.ready.push_back((r, due));
                self.due_at(due);
            }
        }
        touched.clear();
        self.touched = touched;
    }

    fn close(&mut self, slot: u32, evicted: bool) {
        let r = self.eps.ep_ref(slot);
        let e = &mut self.eps[slot];
        for w in e.woken.iter_mut() {
            if w.state == WakeState::Pending {
                // Never got back to user space before the episode ended.
                w.state = WakeState::Settled;
                e.spurious += 1;
                self.rows[w.row as usize].spurious += 1;
                if let Some(t) = self.tasks.get_mut(&w.tid) {
                    if t.pending == Some(r) {
                        t.pending = None;
                    }
                }
            }
        }
        // The accepting task is named only in records someone will read.
        let accepted_by = e.accepted_row.filter(|_| self.records).map(|row| {
            let r = &self.rows[row as usize];
            TaskRef {
                pid: r.pid,
                tid: r.tid,
                comm: Arc::clone(&r.name),
            }
        });
        let accepted = e.accepted_row.is_some();
        let won = e
            .accepted_row
            .is_some_and(|row| e.woken.iter().any(|w| w.row == row));
        let rec = ConnRecord {
            ts_ns: e.ts_ns,
            port: e.port,
            peer: e.peer,
            accepted_by,
            woken: e.woken.len() as u32,
            returned: e.returned,
            spurious: e.spurious,
            eagain: e.eagain,
            eagain_losers: e.eagain_losers,
            epolls: e.epolls.len() as u32,
            accept_latency_us: e
                .accepted_row
                .map(|_| e.accept_ts.saturating_sub(e.ts_ns) / 1000),
            incomplete: evicted || e.loss_epoch != self.loss.epoch(),
            possibly_incomplete: e.skip_epoch != self.skip_epoch || e.cascade_after_skip,
            netns: e.netns,
        };
        let (chain, child) = (e.chain, e.child);
        let was_oldest = self.eps.oldest() == Some(slot);
        self.eps.close(slot);
        if was_oldest {
            // The next oldest may be due before the deadline `expire` last saw
            // (arrival order is not timestamp order across CPUs).
            if let Some(next) = self.eps.oldest() {
                let due = self.eps[next]
                    .ts_ns
                    .saturating_add(self.cfg.episode_timeout_ns);
                self.due_at(due);
            }
        }
        if self.chains.get(&chain) == Some(&slot) {
            self.chains.remove(&chain);
        }
        if child != 0 && self.children.get(&child) == Some(&slot) {
            self.children.remove(&child);
        }

        if self.hold {
            self.held.push_back(HeldRecord {
                closed_ns: self.stream_ns,
                rec,
                won,
                accepted,
            });
        } else {
            self.count_closed(rec, won, accepted);
        }
    }

    /// Counts a closed episode and passes its record on (if wanted).
    fn count_closed(&mut self, rec: ConnRecord, won: bool, accepted: bool) {
        let n = rec.woken as usize;
        if self.hist.len() <= n {
            self.hist.resize(n + 1, 0);
        }
        self.hist[n] += 1;
        self.totals.add(&rec, won, accepted);
        self.interval.add(&rec, won, accepted);
        self.balance.on_conn(rec.peer);
        if self.records {
            self.done.push(rec);
        }
    }

    fn drain<F: FnMut(ConnRecord)>(&mut self, sink: &mut F) {
        for rec in self.done.drain(..) {
            sink(rec);
        }
    }

    // ---- tasks ------------------------------------------------------------

    /// The current identity of the event's task (created, or replaced when the
    /// tgid no longer matches: a reused tid whose exit was not seen).
    fn identify(&mut self, ev: &RawEvent) -> Task {
        let named = ev.comm[0] != 0;
        if let Some(t) = self.tasks.get_mut(&ev.tid) {
            if t.pid == 0 && ev.tgid != 0 {
                t.pid = ev.tgid;
                if t.row != NIL {
                    self.rows[t.row as usize].pid = ev.tgid;
                }
            }
            if ev.tgid == 0 || t.pid == ev.tgid {
                if named && t.comm != ev.comm {
                    t.comm = ev.comm;
                    if t.row != NIL {
                        let row = &mut self.rows[t.row as usize];
                        row.comm = ev.comm;
                        row.name = events::comm_str(&ev.comm).into();
                    }
                }
                return *t;
            }
            let old = *t;
            self.retire(ev.tid, old);
        }
        let t = Task::new(ev.tgid, ev.comm);
        self.tasks.insert(ev.tid, t);
        t
    }

    fn store(&mut self, tid: u32, t: Task) {
        self.tasks.insert(tid, t);
    }

    fn row_of(&mut self, tid: u32, t: &mut Task) -> u32 {
        if t.row == NIL {
            t.row = self.rows.len() as u32;
            self.rows.push(TaskRow {
                pid: t.pid,
                tid,
                comm: t.comm,
                name: events::comm_str(&t.comm).into(),
                accepts: 0,
                woken: 0,
                eagain: 0,
                eagain_losers: 0,
                spurious: 0,
            });
        }
        t.row
    }

    /// The task is gone (exit or replaced): an unresolved wake was wasted, and
    /// it will make no further accept attempt.
    fn retire(&mut self, tid: u32, t: Task) {
        if t.row != NIL && self.rows[t.row as usize].accepts > 0 {
            let ended = self.units.retire(t.row);
            self.accepting_alive = self.accepting_alive.saturating_sub(ended);
        }
        if let Some(p) = t.pending {
            self.resolve(p, tid, false);
        }
        if let Some(l) = t.last {
            self.settle(l, tid);
        }
    }

    /// Where the task stands in the episode's woken list, if in `state`.
    fn woken_index(&self, p: EpRef, tid: u32, state: WakeState) -> Option<usize> {
        if !self.eps.valid(p) {
            return None;
        }
        self.eps[p.slot]
            .woken
            .iter()
            .position(|w| w.tid == tid && w.state == state)
    }

    /// Resolves a pending wake as returned (true) or spurious (false).
    fn resolve(&mut self, p: EpRef, tid: u32, returned: bool) {
        let Some(i) = self.woken_index(p, tid, WakeState::Pending) else {
            return;
        };
        let e = &mut self.eps[p.slot];
        if returned {
            e.woken[i].state = WakeState::Returned;
            e.returned += 1;
        } else {
            e.woken[i].state = WakeState::Settled;
            e.spurious += 1;
            self.rows[e.woken[i].row as usize].spurious += 1;
        }
        self.touched.push(p);
    }

    /// The task had its chance to call accept for this episode.
    fn settle(&mut self, p: EpRef, tid: u32) {
        if let Some(i) = self.woken_index(p, tid, WakeState::Returned) {
            self.eps[p.slot].woken[i].state = WakeState::Settled;
            self.touched.push(p);
        }
    }

    // ---- event handlers ---------------------------------------------------

    fn on_arrival(&mut self, ev: &RawEvent) {
        // (listener_key below: arrivals without a listener socket are keyed by
        // namespace and port.)
        if self.chains.contains_key(&ev.chain) {
            return; // duplicate arrival of the same chain
        }
        if self.eps.len() >= self.cfg.max_open_episodes.max(1) {
            if let Some(oldest) = self.eps.oldest() {
                self.close(oldest, true);
            }
        }
        let (epoch, skip_epoch) = (self.loss.epoch(), self.skip_epoch);
        let netns = ev.aux as u32;
        let listener = listener_key(ev.sk, ev.local_port, netns);
        let slot = self.eps.open(listener, |e| {
            e.chain = ev.chain;
            e.child = ev.child;
            e.ts_ns = ev.ts_ns;
            e.port = ev.local_port;
            e.peer = events::peer(ev);
            e.loss_epoch = epoch;
            e.skip_epoch = skip_epoch;
            e.netns = netns;
        });
        self.due_at(ev.ts_ns.saturating_add(self.cfg.episode_timeout_ns));
        self.chains.insert(ev.chain, slot);
        if ev.child != 0 {
            self.children.insert(ev.child, slot);
            // Accepted before its arrival was reported?
            let early = if self.early_accepts.is_empty() {
                None
            } else {
                self.early_accepts.remove(&ev.child)
            };
            if let Some(a) = early {
                let r = self.eps.ep_ref(slot);
                let e = &mut self.eps[slot];
                e.accepted_row = Some(a.row);
                e.accept_ts = a.ts_ns.max(e.ts_ns);
                self.touched.push(r);
            }
        }
        self.balance.on_listener(ev.local_port, ev.sk);
    }

    fn on_wake(&mut self, ev: &RawEvent) {
        let Some(&slot) = self.chains.get(&ev.chain) else {
            self.diag.orphan_wakes += 1;
            return;
        };
        let r = self.eps.ep_ref(slot);
        let tid = ev.tid;
        if self.eps[slot].woken.iter().any(|w| w.tid == tid) {
            return; // already counted for this connection
        }
        if ev.flags & FLAG_WAKE_CASCADE != 0 && self.skip_after.is_some() {
            // The waker's mark may be one a skipped syscall exit left.
            self.eps[slot].cascade_after_skip = true;
        }
        let mut t = self.identify(ev);
        if let Some(p) = t.pending.take() {
            // Woken again before it returned: the earlier wake was wasted.
            self.resolve(p, tid, false);
        }
        if let Some(l) = t.last {
            self.settle(l, tid);
        }
        let row = self.row_of(tid, &mut t);
        self.rows[row as usize].woken += 1;
        self.eps[slot].woken.push(Woken {
            tid,
            row,
            state: WakeState::Pending,
        });
        t.pending = Some(r);
        t.last = Some(r);
        t.returning = false;
        // A task that sleeps where no return is traced (an io_uring ring's
        // worker, poll(2)) starts its attempt at this wake: its EAGAIN next
        // is a loser's, whatever it accepted before it slept.
        t.accepted_since_return = 0;
        self.store(tid, t);
    }

    fn on_epoll_cb(&mut self, ev: &RawEvent) {
        if let Some(&slot) = self.chains.get(&ev.chain) {
            let eps = &mut self.eps[slot].epolls;
            if !eps.contains(&ev.aux) {
                eps.push(ev.aux);
            }
        }
    }

    fn on_send_events(&mut self, ev: &RawEvent) {
        let Some(mut t) = self.tasks.get(&ev.tid).copied() else {
            return; // no wake of ours to resolve
        };
        if let Some(p) = t.pending.take() {
            // ret == 0: back to sleep in the kernel; < 0: returns with an error.
            self.resolve(p, ev.tid, ev.ret > 0);
        } else if let Some(l) = t.last {
            // Back inside epoll_wait: the previous activation had its chance.
            self.settle(l, ev.tid);
        }
        t.returning = ev.ret > 0;
        if t.returning {
            t.accepted_since_return = 0;
        }
        self.store(ev.tid, t);
    }

    fn on_poll_ret(&mut self, ev: &RawEvent) {
        let mut t = self.identify(ev);
        if t.returning {
            // ep_send_events already accounted for this activation.
            t.returning = false;
        } else if let Some(p) = t.pending.take() {
            // 0 events, or an error such as EINTR: the wake brought no work.
            self.resolve(p, ev.tid, ev.ret > 0);
        } else if let Some(l) = t.last {
            // Back in epoll_wait and out again: the previous activation had its chance.
            self.settle(l, ev.tid);
        }
        t.accepted_since_return = 0;
        self.store(ev.tid, t);
    }

    fn on_accept_ret(&mut self, ev: &RawEvent) {
        let tid = ev.tid;
        let mut t = self.identify(ev);
        let row = self.row_of(tid, &mut t);
        // A wake still pending resolves here: the task was woken inside accept
        // (blocking model) and this accept is its response.
        if let Some(p) = t.pending.take() {
            self.resolve(p, tid, true);
            self.settle(p, tid);
        }
        if ev.ret >= 0 {
            self.rows[row as usize].accepts += 1;
            let pid = self.rows[row as usize].pid;
            let in_loop = self.known.accept_loops.contains(&pid);
            let (unit, new) = self
                .units
                .on_accept(row, pid, (ev.sk, ev.local_port), in_loop);
            if new {
                self.accepting_rows += 1;
                self.accepting_alive += 1;
                self.accepting_peak = self.accepting_peak.max(self.accepting_alive);
            }
            let workers = self.workers_now();
            self.balance.on_accept(unit, ev.ts_ns, workers);
            t.accepted_since_return = t.accepted_since_return.saturating_add(1);
            let target = if ev.child != 0 {
                self.children.get(&ev.child).map(|&s| self.eps.ep_ref(s))
            } else if ev.sk != 0 {
                // No child socket from this probe: the accept queue is FIFO.
                self.eps.oldest_unaccepted_on(ev.sk)
            } else {
                None
            };
            match target {
                Some(r) if self.eps[r.slot].accepted_row.is_none() => {
                    let e = &mut self.eps[r.slot];
                    e.accepted_row = Some(row);
                    e.accept_ts = ev.ts_ns.max(e.ts_ns);
                    self.touched.push(r);
                }
                // Its arrival may still come (see `early_accepts`).
                None if ev.child != 0 => {
                    let early = EarlyAccept {
                        ts_ns: ev.ts_ns,
                        row,
                    };
                    // A child address accepted twice without an arrival:
                    // the older accept will never match.
                    if self.early_accepts.insert(ev.child, early).is_some() {
                        self.diag.unmatched_accepts += 1;
                    }
                    self.early_order.push_back((ev.ts_ns, ev.child));
                    self.due_at(ev.ts_ns.saturating_add(EARLY_ACCEPT_WAIT_NS));
                }
                _ => self.diag.unmatched_accepts += 1,
            }
            // No settle: a batch-accepting task goes on until EAGAIN.
        } else {
            if ev.ret == EAGAIN {
                self.rows[row as usize].eagain += 1;
                let by_port = port_key(ev.local_port, ev.aux as u32);
                let own = t.last.filter(|&l| {
                    self.eps.valid(l)
                        && (ev.sk == 0
                            || self.eps[l.slot].listener == ev.sk
                            || self.eps[l.slot].listener == by_port)
                });
                let target = own.or_else(|| {
                    if ev.sk != 0 {
                        self.eps
                            .newest_on(ev.sk)
                            .or_else(|| self.eps.newest_on(by_port))
                    } else {
                        None
                    }
                });
                match target {
                    Some(r) => {
                        let e = &mut self.eps[r.slot];
                        e.eagain += 1;
                        if t.accepted_since_return == 0 {
                            e.eagain_losers += 1;
                            self.rows[row as usize].eagain_losers += 1;
                        }
                        self.touched.push(r);
                    }
                    None => self.diag.eagain_unattributed += 1,
                }
            }
            if let Some(l) = t.last {
                self.settle(l, tid);
            }
        }
        self.store(tid, t);
    }

    fn on_task_new(&mut self, ev: &RawEvent) {
        if let Some(old) = self.tasks.remove(&ev.tid) {
            // A reused tid: the old identity keeps its stats row.
            self.retire(ev.tid, old);
        }
        self.tasks.insert(ev.tid, Task::new(ev.tgid, ev.comm));
    }

    fn on_task_exit(&mut self, ev: &RawEvent) {
        if let Some(old) = self.tasks.remove(&ev.tid) {
            self.retire(ev.tid, old);
        }
    }
}

/// Arrivals inferred without their listener socket (the pre-6.6
/// `inet_sock_set_state` substitute) are grouped by namespace and local
/// port instead; the key cannot collide with a kernel address (those have
/// the top bits set).
fn port_key(port: u16, netns: u32) -> u64 {
    u64::from(port) | (1 << 16) | (u64::from(netns & 0x7fff_ffff) << 17)
}

fn listener_key(sk: u64, port: u16, netns: u32) -> u64 {
    if sk != 0 {
        sk
    } else {
        port_key(port, netns)
    }
}

/// How long (stream time) an accept whose child has no episode waits for
/// that child's arrival before it counts as unmatched.
const EARLY_ACCEPT_WAIT_NS: u64 = 50_000_000;

/// A successful accept seen before its connection's arrival (keyed by child).
#[derive(Debug, Clone, Copy)]
struct EarlyAccept {
    ts_ns: u64,
    row: u32,
}
