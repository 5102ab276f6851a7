//! The one-line conclusion of a run.
//!
//! Thresholds on the mean number of tasks woken per connection:
//! - no connections: nothing to judge;
//! - mean <= 1.2: no herd (one task per connection, with a little slack for
//!   the occasional double wake of a shared epoll);
//! - mean <= 2.0: mild herd;
//! - above: herd.
//!
//! The wasted work is reported next to it as (EAGAIN losers + spurious
//! wakes) per connection: what the herd actually cost.
use crate::engine::Summary;

/// Mean woken per connection at or below which there is no herd.
pub const NO_HERD_MAX: f64 = 1.2;
/// Mean woken per connection at or below which the herd is mild.
pub const MILD_HERD_MAX: f64 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    NoData,
    NoHerd,
    MildHerd,
    Herd,
}

pub fn classify(s: &Summary) -> Verdict {
    if s.totals.connections == 0 {
        return Verdict::NoData;
    }
    let mean = s.totals.woken_mean();
    if mean <= NO_HERD_MAX {
        Verdict::NoHerd
    } else if mean <= MILD_HERD_MAX {
        Verdict::MildHerd
    } else {
        Verdict::Herd
    }
}

/// The verdict sentence.
pub fn verdict_line(s: &Summary) -> String {
    let t = &s.totals;
    let herd_text = |label: &str| {
        format!(
            "{label}: every connection woke {:.2} tasks on average, {:.2} of them for nothing \
             (eagain_losers+spurious = {:.2}/conn)",
            t.woken_mean(),
            t.woken_for_nothing_per_conn(),
            t.wasted_per_conn()
        )
    };
    match classify(s) {
        Verdict::NoData => "no verdict: no connection was traced".to_string(),
        Verdict::NoHerd => format!(
            "no herd: ~1 task woken per connection (mean {:.2}, wasted {:.2}/conn)",
            t.woken_mean(),
            t.wasted_per_conn()
        ),
        Verdict::MildHerd => herd_text("mild herd"),
        Verdict::Herd => herd_text("herd"),
    }
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
    fn sentences() {
        assert_eq!(
            verdict_line(&summary(100, 398, 100, 291, 7)),
            "herd: every connection woke 3.98 tasks on average, 2.98 of them for nothing \
             (eagain_losers+spurious = 2.98/conn)"
        );
        assert_eq!(
            verdict_line(&summary(100, 102, 100, 0, 2)),
            "no herd: ~1 task woken per connection (mean 1.02, wasted 0.02/conn)"
        );
        assert!(verdict_line(&summary(4, 6, 4, 2, 0)).starts_with("mild herd: "));
        assert_eq!(
            verdict_line(&summary(0, 0, 0, 0, 0)),
            "no verdict: no connection was traced"
        );
    }
}
