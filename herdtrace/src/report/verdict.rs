//! The one-line conclusion of a run.
//!
//! Judged on the tasks woken per connection:
//! - no connections: nothing to judge;
//! - mean <= 1.2: one task per connection (a little slack for the occasional
//!   double wake of a shared epoll) — unless at least 1% of connections woke
//!   two or more tasks, which is an intermittent herd: the workers were busy
//!   most of the time (a loaded server), but whenever several were idle a
//!   connection woke them all;
//! - mean <= 2.0: mild herd;
//! - above: herd.
//!
//! A trace that left out tasks waiting on the same listeners (`--pid` of one
//! worker) saw only some of each connection's wakeups: its counts are lower
//! bounds, so "no herd" is not concluded from it (no verdict), and a herd
//! found is said to be at least that.
//!
//! A trace that lost events while connections were open has lower bounds
//! for those connections too: from 1% of them incomplete, "no herd" is not
//! concluded, and any verdict says it comes from an incomplete trace.
//!
//! What the herd cost is given as one figure, the wasted wakeups per
//! connection (EAGAIN from tasks that accepted nothing + spurious wakes), and
//! as a share of all wakeups.
use crate::engine::Summary;

/// Mean woken per connection at or below which there is no steady herd.
pub const NO_HERD_MAX: f64 = 1.2;
/// Mean woken per connection at or below which the herd is mild.
pub const MILD_HERD_MAX: f64 = 2.0;
/// Share of connections waking 2+ tasks from which a low mean is still a herd.
pub const INTERMITTENT_MIN_SHARE: f64 = 0.01;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    NoData,
    NoHerd,
    /// Low mean, but a noticeable share of connections woke several tasks.
    IntermittentHerd,
    MildHerd,
    Herd,
}

impl Verdict {
    /// Short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::NoData => "no data",
            Verdict::NoHerd => "no herd",
            Verdict::IntermittentHerd => "intermittent herd",
            Verdict::MildHerd => "mild herd",
            Verdict::Herd => "HERD",
        }
    }
}

/// Share of connections that woke two or more tasks.
fn multi_wake_share(s: &Summary) -> f64 {
    let total: u64 = s.woken_histogram.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let multi: u64 = s.woken_histogram.iter().skip(2).sum();
    multi as f64 / total as f64
}

/// Connections whose counts are lower bounds because events were lost while
/// they were open (a share of all).
fn incomplete_share(s: &Summary) -> f64 {
    s.totals.incomplete as f64 / s.totals.connections.max(1) as f64
}

pub fn classify(s: &Summary) -> Verdict {
    if s.totals.connections == 0 {
        return Verdict::NoData;
    }
    let mean = s.totals.woken_mean();
    if mean <= NO_HERD_MAX {
        if multi_wake_share(s) >= INTERMITTENT_MIN_SHARE {
            Verdict::IntermittentHerd
        } else if !s.untraced.is_empty() || incomplete_share(s) >= INTERMITTENT_MIN_SHARE {
            // Lower bounds: the untraced tasks' wakeups are not seen, or lost
            // events hid some (as many incomplete connections as make an
            // intermittent herd could each have woken several).
            Verdict::NoData
        } else {
            Verdict::NoHerd
        }
    } else if mean <= MILD_HERD_MAX {
        Verdict::MildHerd
    } else {
        Verdict::Herd
    }
}

/// "3 untraced tasks also wait on these listeners" (the balance line's too).
pub(crate) fn untraced_waiting(n: u64) -> String {
    match n {
        1 => "1 untraced task also waits on these listeners".to_string(),
        n => format!("{n} untraced tasks also wait on these listeners"),
    }
}

/// [`untraced_waiting`], with the process to trace instead if known.
fn untraced_clause(s: &Summary) -> String {
    let u = &s.untraced;
    let who = untraced_waiting(u.tasks.len() as u64);
    match u.trace_pid {
        Some(pid) => format!("{who} (trace --pid {pid} for all)"),
        None => who,
    }
}

/// The verdict sentence.
pub fn verdict_line(s: &Summary) -> String {
    let t = &s.totals;
    let wasted = t.wasted_per_conn();
    let share = if t.woken == 0 {
        0.0
    } else {
        100.0 * (t.eagain_losers + t.spurious) as f64 / t.woken as f64
    };
    let cost = format!(
        "{wasted:.2} wasted wakeups per connection ({share:.0}% of all wakeups: \
         EAGAIN losers {:.2} + spurious {:.2})",
        t.per_conn_losers(),
        t.spurious_per_conn()
    );
    let verdict = classify(s);
    let line = match verdict {
        Verdict::NoData if t.connections > 0 && s.untraced.is_empty() => {
            return format!(
                "no verdict: {} of {} connections are incomplete ({} events lost), and their \
                 wakeups may be missing; what was seen: mean {:.2} woken per connection (try a \
                 larger --ringbuf-size); {cost}",
                t.incomplete,
                t.connections,
                s.lost_events,
                t.woken_mean()
            );
        }
        Verdict::NoData if t.connections > 0 => format!(
            "no verdict: {}, and their wakeups are not seen; the traced tasks alone: mean {:.2} \
             woken per connection; {cost}",
            untraced_clause(s),
            t.woken_mean()
        ),
        Verdict::NoData => "no verdict: no connection was traced".to_string(),
        Verdict::NoHerd => format!(
            "no herd: ~1 task woken per connection (mean {:.2}); {cost}",
            t.woken_mean()
        ),
        Verdict::IntermittentHerd => format!(
            "intermittent herd: mean {:.2} tasks woken per connection, but {:.1}% of \
             connections woke 2 or more (max {}): the workers were mostly busy, and each \
             connection that found several idle woke them all; {cost}",
            t.woken_mean(),
            100.0 * multi_wake_share(s),
            s.woken_per_conn.max
        ),
        Verdict::MildHerd => format!(
            "mild herd: {:.2} tasks woken per connection on average; {cost}",
            t.woken_mean()
        ),
        Verdict::Herd => format!(
            "herd: every connection woke {:.2} tasks on average; {cost}",
            t.woken_mean()
        ),
    };
    let line = match verdict {
        Verdict::IntermittentHerd | Verdict::MildHerd | Verdict::Herd if !s.untraced.is_empty() => {
            format!("{line}; at least: {}", untraced_clause(s))
        }
        _ => line,
    };
    match incomplete_clause(s) {
        Some(clause) => format!("{line}; {clause}"),
        None => line,
    }
}

/// Said in the verdict itself, not only in the warning above it, so that
/// whoever reads the verdict alone (JSON, a grep) knows what it rests on: a
/// herd found from lower bounds is one at least.
fn incomplete_clause(s: &Summary) -> Option<String> {
    let t = &s.totals;
    if s.lost_events == 0 && t.incomplete == 0 {
        return None;
    }
    Some(format!(
        "from an incomplete trace ({} events lost, {} of {} connections incomplete): the \
         counts are lower bounds",
        s.lost_events, t.incomplete, t.connections
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Tally;

    fn summary(connections: u64, woken: u64, won: u64, losers: u64, spurious: u64) -> Summary {
        Summary {
            totals: Tally {
                connections,
                woken,
                woken_won: won,
                eagain: losers,
                eagain_losers: losers,
                spurious,
                ..Tally::default()
            },
            ..Summary::default()
        }
    }

    fn with_histogram(mut s: Summary, hist: Vec<u64>) -> Summary {
        s.woken_per_conn.max = hist.len().saturating_sub(1) as u32;
        s.woken_histogram = hist;
        s
    }

    fn partial(mut s: Summary, trace_pid: Option<u32>) -> Summary {
        s.untraced = crate::engine::Untraced {
            tasks: [11, 12, 13]
                .map(|pid| crate::engine::KnownTask {
                    pid,
                    tid: pid,
                    comm: "nginx".into(),
                    ports: vec![80],
                })
                .to_vec(),
            trace_pid,
        };
        s
    }

    #[test]
    fn a_partial_trace_concludes_no_herd_never_and_a_herd_at_least() {
        // One traced worker of four: each connection woke it, the others unseen.
        let one = partial(summary(100, 100, 27, 3, 70), Some(10));
        assert_eq!(classify(&one), Verdict::NoData);
        assert_eq!(
            verdict_line(&one),
            "no verdict: 3 untraced tasks also wait on these listeners (trace --pid 10 for \
             all), and their wakeups are not seen; the traced tasks alone: mean 1.00 woken per \
             connection; 0.73 wasted wakeups per connection (73% of all wakeups: EAGAIN \
             losers 0.03 + spurious 0.70)"
        );
        // Two of four traced and both woken each time: a herd, at least.
        let two = partial(summary(100, 200, 100, 10, 90), None);
        assert_eq!(classify(&two), Verdict::MildHerd);
        let line = verdict_line(&two);
        assert!(line.starts_with("mild herd: 2.00 tasks"), "{line}");
        assert!(
            line.ends_with("; at least: 3 untraced tasks also wait on these listeners"),
            "{line}"
        );
        // Nothing arrived: no connection, whatever was left out.
        assert_eq!(
            verdict_line(&partial(summary(0, 0, 0, 0, 0), Some(10))),
            "no verdict: no connection was traced"
        );
    }

    #[test]
    fn a_trace_with_lost_events_says_so_in_the_verdict() {
        let mut s = summary(100, 398, 100, 291, 7);
        s.lost_events = 250;
        s.totals.incomplete = 60;
        assert_eq!(
            classify(&s),
            Verdict::Herd,
            "a herd from lower bounds stands"
        );
        assert_eq!(
            verdict_line(&s),
            "herd: every connection woke 3.98 tasks on average; 2.98 wasted wakeups per \
             connection (75% of all wakeups: EAGAIN losers 2.91 + spurious 0.07); from an \
             incomplete trace (250 events lost, 60 of 100 connections incomplete): the counts \
             are lower bounds"
        );
        // "No herd" is not concluded from 1% of connections incomplete.
        let mut one = summary(1000, 1000, 1000, 0, 0);
        one.lost_events = 40;
        one.totals.incomplete = 9;
        assert_eq!(classify(&one), Verdict::NoHerd);
        assert!(
            verdict_line(&one).ends_with(
                "; from an incomplete trace (40 events lost, 9 of 1000 connections \
                 incomplete): the counts are lower bounds"
            ),
            "{}",
            verdict_line(&one)
        );
        one.totals.incomplete = 10;
        assert_eq!(classify(&one), Verdict::NoData);
        assert_eq!(
            verdict_line(&one),
            "no verdict: 10 of 1000 connections are incomplete (40 events lost), and their \
             wakeups may be missing; what was seen: mean 1.00 woken per connection (try a \
             larger --ringbuf-size); 0.00 wasted wakeups per connection (0% of all wakeups: \
             EAGAIN losers 0.00 + spurious 0.00)"
        );
        // Events lost while no connection was open: the counts seen are whole.
        one.totals.incomplete = 0;
        assert_eq!(classify(&one), Verdict::NoHerd);
        // Lost events with no connection seen: still said.
        let mut none = summary(0, 0, 0, 0, 0);
        none.lost_events = 9;
        assert_eq!(
            verdict_line(&none),
            "no verdict: no connection was traced; from an incomplete trace (9 events lost, 0 \
             of 0 connections incomplete): the counts are lower bounds"
        );
        // A partial trace that also lost events gets both.
        let mut both = partial(summary(100, 200, 100, 10, 90), None);
        both.totals.incomplete = 1;
        let line = verdict_line(&both);
        assert!(
            line.contains(
                "; at least: 3 untraced tasks also wait on these listeners; from an \
                           incomplete trace (0 events lost, 1 of 100"
            ),
            "{line}"
        );
    }

    #[test]
    fn thresholds() {
        assert_eq!(classify(&summary(0, 0, 0, 0, 0)), Verdict::NoData);
        assert_eq!(classify(&summary(10, 12, 10, 0, 2)), Verdict::NoHerd);
        assert_eq!(classify(&summary(10, 13, 10, 3, 0)), Verdict::MildHerd);
        assert_eq!(classify(&summary(10, 20, 10, 10, 0)), Verdict::MildHerd);
        assert_eq!(classify(&summary(10, 21, 10, 11, 0)), Verdict::Herd);
        assert_eq!(classify(&summary(10, 0, 0, 0, 0)), Verdict::NoHerd);
    }

    #[test]
    fn a_low_mean_with_multi_wakes_is_an_intermittent_herd() {
        // A busy lighttpd: 1000 connections, 950 woke nobody, 50 woke all 4.
        let s = with_histogram(summary(1000, 200, 50, 10, 140), vec![950, 0, 0, 0, 50]);
        assert_eq!(classify(&s), Verdict::IntermittentHerd);
        let line = verdict_line(&s);
        assert!(line.starts_with("intermittent herd: mean 0.20"), "{line}");
        assert!(
            line.contains("5.0% of connections woke 2 or more (max 4)"),
            "{line}"
        );
        // Below 1% of multi-wakes it is no herd.
        let s = with_histogram(summary(1000, 1005, 1000, 0, 5), vec![0, 995, 5]);
        assert_eq!(classify(&s), Verdict::NoHerd);
    }

    #[test]
    fn sentences_give_one_cost_figure() {
        assert_eq!(
            verdict_line(&summary(100, 398, 100, 291, 7)),
            "herd: every connection woke 3.98 tasks on average; 2.98 wasted wakeups per \
             connection (75% of all wakeups: EAGAIN losers 2.91 + spurious 0.07)"
        );
        assert_eq!(
            verdict_line(&summary(100, 102, 100, 0, 2)),
            "no herd: ~1 task woken per connection (mean 1.02); 0.02 wasted wakeups per \
             connection (2% of all wakeups: EAGAIN losers 0.00 + spurious 0.02)"
        );
        assert!(verdict_line(&summary(4, 6, 4, 2, 0)).starts_with("mild herd: "));
        assert_eq!(
            verdict_line(&summary(0, 0, 0, 0, 0)),
            "no verdict: no connection was traced"
        );
    }
}
