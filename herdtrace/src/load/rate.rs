//! The start schedule for `--rate`: connection k is due at start + k/rate,
//! computed from k, never by adding intervals, so lateness does not drift.
//!
//! With a schedule, latency runs from each connection's *scheduled* start, so
//! a generator that fell behind (all slots busy, a stalled server) cannot hide
//! the wait by starting late: no coordinated omission (wrk2, HdrHistogram).
//! Without one (closed loop) latency runs from the actual start.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::histogram::Histogram;

/// The lowest `--rate` other than 0: the schedule of any reachable connection
/// then fits the clock with room to spare.
pub const MIN_RATE: f64 = 0.001;

/// The granularity of epoll_wait's timeout.
const WAKE_QUANTUM: Duration = Duration::from_millis(1);

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

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When connection `k` (0-based) is due, relative to the start
    /// (saturating at `Duration::MAX` instead of panicking).
    pub fn offset(&self, k: u64) -> Duration {
        Duration::try_from_secs_f64(k as f64 / self.rate).unwrap_or(Duration::MAX)
    }

    /// Whether each thread should wake for each due start on time (to the
    /// nanosecond) rather than on the next millisecond. On time costs a wake
    /// per start, no more than the millisecond wait while a thread's starts
    /// are at least 1 ms apart. Closer starts are woken each millisecond, in
    /// batches: waking for each cost ~35 µs of CPU per connection at
    /// 10,000/s on a 2-vCPU VM, and the lag batching adds is counted.
    pub fn wakes_on_time(&self, threads: usize) -> bool {
        threads as f64 / self.rate >= WAKE_QUANTUM.as_secs_f64()
    }

    /// When connection `k` is due; None if that is beyond what the clock can
    /// represent (never, for any run that could end).
    pub fn due(&self, start: Instant, k: u64) -> Option<Instant> {
        start.checked_add(self.offset(k))
    }
}

/// Where latency is measured from (the JSON `latency_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencyFrom {
    /// The connection's scheduled start (`--rate`).
    Scheduled,
    /// When the connection was actually started (closed loop: no schedule).
    Started,
}

impl LatencyFrom {
    pub fn of(schedule: Option<&Schedule>) -> Self {
        if schedule.is_some() {
            LatencyFrom::Scheduled
        } else {
            LatencyFrom::Started
        }
    }
}

/// One connection's start: when connect() was called and, with a schedule,
/// how long after the scheduled start that was. Keeping the lag (not the due
/// time) keeps both measures one subtraction away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub at: Instant,
    /// None in closed loop; zero when on time.
    pub lag: Option<Duration>,
}

impl Start {
    /// A start at `at` of a connection due at `due` (None: no schedule). A
    /// start before its due time (never done) counts as on time.
    pub fn new(due: Option<Instant>, at: Instant) -> Self {
        Self {
            at,
            lag: due.map(|d| at.saturating_duration_since(d)),
        }
    }

    /// Latency to `end` from the origin: the scheduled start if there is one.
    pub fn latency(&self, end: Instant) -> Duration {
        self.since_start(end)
            .saturating_add(self.lag.unwrap_or(Duration::ZERO))
    }

    /// Time from the actual start to `end`, whatever the schedule.
    pub fn since_start(&self, end: Instant) -> Duration {
        end.saturating_duration_since(self.at)
    }
}

/// Whole microseconds, saturating at u64::MAX (half a million years).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// How late connections started against the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartLags {
    us: Histogram,
    /// u128: cannot overflow however long the run.
    sum_us: u128,
}

impl StartLags {
    pub fn record(&mut self, lag: Duration) {
        let us = micros(lag);
        self.us.record(us);
        self.sum_us += u128::from(us);
    }

    pub fn merge(&mut self, other: &StartLags) {
        self.us.merge(&other.us);
        self.sum_us += other.sum_us;
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.us.count()
    }

    /// Mean lag in µs, rounded down; None when nothing was recorded.
    pub fn mean_us(&self) -> Option<u64> {
        let n = u128::from(self.us.count());
        (n > 0).then(|| u64::try_from(self.sum_us / n).unwrap_or(u64::MAX))
    }

    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        self.us.quantile(q)
    }

    pub fn max_us(&self) -> Option<u64> {
        self.us.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

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
        assert_eq!(s.rate(), 1000.0);
        assert_eq!(s.offset(0), Duration::ZERO);
        for k in [1u64, 7, 999, 1000, 123_456] {
            let want = Duration::from_millis(k);
            let got = s.offset(k);
            let diff = got.abs_diff(want);
            assert!(diff <= Duration::from_nanos(1), "k {k}: {got:?}");
        }
    }

    #[test]
    fn fractional_rates_round_to_the_nanosecond() {
        // 1/3 s and 1/7 s are not whole nanoseconds: each offset is within
        // 1 ns of k/rate, with no accumulated error.
        for rate in [3.0, 7.0, 2.5, 0.001, 12_345.678] {
            let s = Schedule::new(rate).expect("valid");
            for k in [1u64, 2, 3, 10, 1_000_001] {
                let exact_ns = k as f64 * 1e9 / rate;
                let got_ns = s.offset(k).as_nanos() as f64;
                assert!(
                    (got_ns - exact_ns).abs() <= 1.0 + exact_ns * 1e-15,
                    "rate {rate} k {k}: {got_ns} vs {exact_ns}"
                );
            }
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

    #[test]
    fn due_times_are_start_plus_offset_and_never_panic() {
        let t0 = Instant::now();
        let s = Schedule::new(200.0).expect("valid");
        assert_eq!(s.due(t0, 0), Some(t0));
        assert_eq!(s.due(t0, 3), Some(t0 + Duration::from_millis(15)));
        // A year of 1M connections/s: still exact.
        let k = 365 * 86_400 * 1_000_000u64;
        let s = Schedule::new(1e6).expect("valid");
        assert_eq!(s.due(t0, k), Some(t0 + Duration::from_secs(365 * 86_400)));
        // Beyond any clock: saturates instead of panicking.
        let s = Schedule::new(1e-300).expect("valid");
        assert_eq!(s.offset(1), Duration::MAX);
        assert_eq!(s.due(t0, 1), None);
        let s = Schedule::new(MIN_RATE).expect("valid");
        assert_eq!(s.offset(u64::MAX), Duration::MAX);
        assert_eq!(s.due(t0, u64::MAX), None);
    }

    #[test]
    fn threads_wake_on_time_while_their_starts_are_a_millisecond_apart() {
        let on_time =
            |rate: f64, threads| Schedule::new(rate).expect("valid").wakes_on_time(threads);
        assert!(on_time(200.0, 1));
        assert!(on_time(1000.0, 1));
        assert!(!on_time(1001.0, 1));
        assert!(on_time(2000.0, 2));
        assert!(!on_time(2001.0, 2));
        assert!(!on_time(10_000.0, 2));
        assert!(on_time(10_000.0, 16));
        assert!(on_time(MIN_RATE, 1));
    }

    #[test]
    fn latency_origin_follows_the_schedule() {
        let s = Schedule::new(10.0).expect("valid");
        assert_eq!(LatencyFrom::of(Some(&s)), LatencyFrom::Scheduled);
        assert_eq!(LatencyFrom::of(None), LatencyFrom::Started);
        let json = serde_json::to_string(&[LatencyFrom::Scheduled, LatencyFrom::Started])
            .expect("serialize");
        assert_eq!(json, r#"["scheduled","started"]"#);
    }

    #[test]
    fn on_time_start_latency_equals_time_since_start() {
        let t0 = Instant::now();
        let s = Start::new(Some(t0), t0);
        assert_eq!(s.lag, Some(Duration::ZERO));
        assert_eq!(s.latency(t0 + 7 * MS), 7 * MS);
        assert_eq!(s.since_start(t0 + 7 * MS), 7 * MS);
    }

    #[test]
    fn late_start_latency_includes_the_lag() {
        // Due at t0, started 300 ms late (no free slot: a stalled server),
        // answered 1 ms after its start.
        let t0 = Instant::now();
        let s = Start::new(Some(t0), t0 + 300 * MS);
        assert_eq!(s.lag, Some(300 * MS));
        assert_eq!(s.since_start(t0 + 301 * MS), MS);
        assert_eq!(s.latency(t0 + 301 * MS), 301 * MS);
    }

    #[test]
    fn closed_loop_has_no_lag() {
        let t0 = Instant::now();
        let s = Start::new(None, t0 + 300 * MS);
        assert_eq!(s.lag, None);
        assert_eq!(s.latency(t0 + 301 * MS), MS);
        assert_eq!(s.since_start(t0 + 301 * MS), MS);
    }

    /// Every ordering of due, start and end on a millisecond grid.
    #[test]
    fn latency_arithmetic_exhaustively() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let sub = |a: u64, b: u64| Duration::from_millis(a.saturating_sub(b));
        for due in 0..=20 {
            for start in 0..=20 {
                for end in 0..=20 {
                    let closed = Start::new(None, at(start));
                    assert_eq!(closed.latency(at(end)), sub(end, start));
                    assert_eq!(closed.since_start(at(end)), sub(end, start));

                    let s = Start::new(Some(at(due)), at(start));
                    let ctx = format!("due {due} start {start} end {end}");
                    assert_eq!(s.lag, Some(sub(start, due)), "{ctx}");
                    assert_eq!(s.since_start(at(end)), sub(end, start), "{ctx}");
                    assert_eq!(
                        s.latency(at(end)),
                        sub(end, start) + sub(start, due),
                        "{ctx}"
                    );
                    assert!(s.latency(at(end)) >= s.since_start(at(end)), "{ctx}");
                    if due <= start && start <= end {
                        // The engine's case: started when due or later.
                        assert_eq!(s.latency(at(end)), sub(end, due), "{ctx}");
                    }
                }
            }
        }
    }

    #[test]
    fn huge_lags_saturate() {
        let t0 = Instant::now();
        let s = Start {
            at: t0,
            lag: Some(Duration::MAX),
        };
        assert_eq!(s.latency(t0 + MS), Duration::MAX);
        assert_eq!(micros(Duration::MAX), u64::MAX);
        assert_eq!(micros(Duration::from_nanos(1999)), 1);
        assert_eq!(micros(Duration::from_nanos(999)), 0);
        // A week-long run's latency in µs is exact.
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(micros(week), 7 * 86_400 * 1_000_000);
    }

    #[test]
    fn start_lags_summary() {
        let mut l = StartLags::default();
        assert_eq!((l.count(), l.mean_us(), l.max_us()), (0, None, None));
        assert_eq!(l.quantile_us(0.99), None);
        for ms in 1..=100u64 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.count(), 100);
        assert_eq!(l.mean_us(), Some(50_500));
        assert_eq!(l.max_us(), Some(100_000));
        let p99 = l.quantile_us(0.99).expect("non-empty");
        assert!((99_000..=99_000 + 99_000 / 32).contains(&p99), "{p99}");
        // Mean rounds down; sub-µs lags count as 0.
        let mut r = StartLags::default();
        r.record(Duration::from_nanos(999));
        r.record(Duration::from_micros(2));
        assert_eq!(r.mean_us(), Some(1));
    }

    #[test]
    fn start_lags_merge_and_never_overflow() {
        let (mut a, mut b, mut all) = (
            StartLags::default(),
            StartLags::default(),
            StartLags::default(),
        );
        for us in [0u64, 5, 70, 900] {
            a.record(Duration::from_micros(us));
            all.record(Duration::from_micros(us));
        }
        for us in [3u64, 1_000_000] {
            b.record(Duration::from_micros(us));
            all.record(Duration::from_micros(us));
        }
        a.merge(&b);
        assert_eq!(a, all);
        let mut huge = StartLags::default();
        for _ in 0..3 {
            huge.record(Duration::MAX);
        }
        assert_eq!(huge.mean_us(), Some(u64::MAX));
        assert_eq!(huge.max_us(), Some(u64::MAX));
    }
}
