//! What the accept setup cost during the trace, from the tracer's summary.
//!
//! Extra context switches are estimated as two per wasted wakeup (the
//! switch to the woken task and back away from it when it finds nothing and
//! sleeps again); the measured switches of the server's threads
//! (/proc/PID/task/TID/status, before and after) are given alongside, since
//! they also include the useful work.
use serde::Serialize;

use crate::{
    engine::Summary,
    report::verdict::{self, Verdict},
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    /// Seconds actually traced.
    pub seconds: f64,
    pub connections: u64,
    pub connections_per_s: f64,
    pub woken_per_conn: f64,
    pub woken_max: u32,
    /// EAGAIN from tasks that accepted nothing + wakes that never reached user space.
    pub wasted_per_conn: f64,
    pub wasted_per_s: f64,
    /// Every EAGAIN from accept (a winner's final EAGAIN of an accept loop included).
    pub eagain_per_s: f64,
    pub eagain_losers_per_s: f64,
    pub spurious_per_s: f64,
    /// Two per wasted wakeup (see the module comment).
    pub extra_context_switches_per_s: f64,
    /// Context switches of the server's threads per connection, all causes.
    pub measured_context_switches_per_conn: Option<f64>,
    pub lost_events: u64,
    pub verdict: &'static str,
    pub verdict_line: String,
    #[serde(skip)]
    pub verdict_kind: Verdict,
}

pub fn cost(summary: &Summary, seconds: f64, context_switches: Option<u64>) -> Cost {
    let t = &summary.totals;
    let per_s = |v: u64| {
        if seconds > 0.0 {
            v as f64 / seconds
        } else {
            0.0
        }
    };
    let wasted = t.eagain_losers + t.spurious;
    let kind = verdict::classify(summary);
    Cost {
        seconds,
        connections: t.connections,
        connections_per_s: per_s(t.connections),
        woken_per_conn: t.woken_mean(),
        woken_max: summary.woken_per_conn.max,
        wasted_per_conn: t.wasted_per_conn(),
        wasted_per_s: per_s(wasted),
        eagain_per_s: per_s(t.eagain),
        eagain_losers_per_s: per_s(t.eagain_losers),
        spurious_per_s: per_s(t.spurious),
        extra_context_switches_per_s: 2.0 * per_s(wasted),
        measured_context_switches_per_conn: context_switches
            .filter(|_| t.connections > 0)
            .map(|c| c as f64 / t.connections as f64),
        lost_events: summary.lost_events,
        verdict: kind.label(),
        verdict_line: verdict::verdict_line(summary),
        verdict_kind: kind,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::engine::{Tally, WokenStats};

    /// A run in which every connection woke the same number of tasks.
    pub(in crate::diagnose) fn summary(
        connections: u64,
        woken: u64,
        losers: u64,
        spurious: u64,
        eagain: u64,
    ) -> Summary {
        let mut hist = vec![0u64; 5];
        if connections > 0 {
            hist[(woken / connections) as usize] = connections;
        }
        Summary {
            totals: Tally {
                connections,
                woken,
                eagain,
                eagain_losers: losers,
                spurious,
                ..Tally::default()
            },
            woken_per_conn: WokenStats::from_histogram(&hist),
            woken_histogram: hist,
            ..Summary::default()
        }
    }

    #[test]
    fn herd_costs_per_second() {
        // 100 connections in 2 s, 4 woken each: 3 wasted each (1 EAGAIN loser + 2 spurious).
        let c = cost(&summary(100, 400, 100, 200, 120), 2.0, Some(1000));
        assert_eq!(c.connections_per_s, 50.0);
        assert_eq!(c.woken_per_conn, 4.0);
        assert_eq!(c.wasted_per_conn, 3.0);
        assert_eq!(c.wasted_per_s, 150.0);
        assert_eq!(c.eagain_per_s, 60.0);
        assert_eq!(c.eagain_losers_per_s, 50.0);
        assert_eq!(c.spurious_per_s, 100.0);
        assert_eq!(c.extra_context_switches_per_s, 300.0);
        assert_eq!(c.measured_context_switches_per_conn, Some(10.0));
        assert_eq!(c.verdict_kind, Verdict::Herd);
        assert_eq!(c.verdict, "HERD");
    }

    #[test]
    fn no_herd_and_no_data() {
        let c = cost(&summary(100, 100, 0, 0, 0), 1.0, None);
        assert_eq!(c.verdict_kind, Verdict::NoHerd);
        assert_eq!(c.extra_context_switches_per_s, 0.0);
        assert_eq!(c.measured_context_switches_per_conn, None);
        let c = cost(&summary(0, 0, 0, 0, 0), 0.0, Some(5));
        assert_eq!(c.verdict_kind, Verdict::NoData);
        assert_eq!(c.connections_per_s, 0.0);
        assert_eq!(c.measured_context_switches_per_conn, None);
    }
}
