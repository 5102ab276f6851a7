//! The start schedule for `--rate`: connection k is due at start + k/rate,
//! computed from k, never by adding intervals, so lateness does not drift.

use std::time::Duration;

/// A fixed-rate start schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
}

impl Schedule {
    /// None for rate 0 (as fast as possible) or a value that is not a finite positive number.
    pub fn new(rate_per_s: f64) -> Option<Self> {
        (rate_per_s.is_finite() && rate_per_s > 0.0).then_some(Self { rate: rate_per_s })
    }

    /// When connection `k` (0-based) is due, relative to the start.
    pub fn offset(&self, k: u64) -> Duration {
        Duration::from_secs_f64(k as f64 / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_invalid_rates_mean_unlimited() {
        assert_eq!(Schedule::new(0.0), None);
        assert_eq!(Schedule::new(-1.0), None);
        assert_eq!(Schedule::new(f64::NAN), None);
        assert_eq!(Schedule::new(f64::INFINITY), None);
    }

    #[test]
    fn offsets_are_k_over_rate() {
        let s = Schedule::new(1000.0).expect("valid");
        assert_eq!(s.offset(0), Duration::ZERO);
        for k in [1u64, 7, 999, 1000, 123_456] {
            let want = Duration::from_millis(k);
            let got = s.offset(k);
            let diff = got.abs_diff(want);
            assert!(diff <= Duration::from_nanos(1), "k {k}: {got:?}");
        }
    }

    #[test]
    fn no_drift_over_long_runs() {
        // 1/3 s is not representable; summing intervals would drift, k/rate does not.
        let s = Schedule::new(3.0).expect("valid");
        let got = s.offset(3_000_000);
        assert_eq!(got, Duration::from_secs(1_000_000));
        let s = Schedule::new(0.5).expect("valid");
        assert_eq!(s.offset(3), Duration::from_secs(6));
    }

    #[test]
    fn offsets_are_monotonic() {
        let s = Schedule::new(7919.0).expect("valid");
        let mut last = Duration::ZERO;
        for k in 0..20_000 {
            let o = s.offset(k);
            assert!(o >= last);
            last = o;
        }
    }
}
