//! What a run prints and how: the output options, the facts shown in the
//! summary, the wall-clock labels, and the text and NDJSON writers that
//! [`crate::pipeline::Pipeline`] drives.
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

pub mod balance;
pub mod clock;
pub mod json;
pub mod text;
pub mod verdict;

/// A share as a percentage: whole percents from 10 % up, one decimal below,
/// so a fair share of 200 workers reads 0.5%, not 0%.
pub fn pct(share: f64) -> String {
    let v = 100.0 * share;
    // Below 9.95 the decimal shows; above, it would round to "10.0%".
    if v != 0.0 && v < 9.95 {
        format!("{v:.1}%")
    } else {
        format!("{v:.0}%")
    }
}

/// What to print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputOptions {
    /// NDJSON instead of text.
    pub json: bool,
    /// One line per connection.
    pub per_conn: bool,
    /// An interval line at every [`crate::pipeline::Pipeline::on_tick`].
    pub intervals: bool,
}

/// Facts about the run shown in the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunInfo {
    /// e.g. "tracepoint", "fentry", "kprobe".
    pub backend: String,
    /// Kernel release.
    pub kernel: String,
    /// What the tracer attached (`kind target <- program`, as `check --json`
    /// lists a plan); empty in a replay.
    pub attach: Vec<String>,
    /// What was traced beyond the processes named: `cgroup /web` (empty if nothing).
    pub scope: String,
    /// The traced tasks' listeners found (`addr (netns N)`).
    pub listeners: Vec<String>,
}

/// What the wall-clock stamps rest on, for the summary.
pub const WALL_CLOCK_LIVE: &str = "live: CLOCK_REALTIME read with CLOCK_MONOTONIC at the start";

/// Maps event time (CLOCK_MONOTONIC ns) to wall-clock time for labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    pub mono_ns: u64,
    pub unix_ns: u64,
}

impl WallClock {
    /// The two clocks read now (live tracing).
    pub fn now() -> WallClock {
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let mono_ns = if rc == 0 {
            ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
        } else {
            0
        };
        WallClock { mono_ns, unix_ns }
    }

    /// RFC 3339 (UTC, microseconds) of the moment `mono_ns`.
    pub fn rfc3339_of(&self, mono_ns: u64) -> String {
        clock::rfc3339_utc(self.unix_ns_of(mono_ns))
    }

    fn unix_ns_of(&self, mono_ns: u64) -> u64 {
        if mono_ns >= self.mono_ns {
            self.unix_ns.saturating_add(mono_ns - self.mono_ns)
        } else {
            self.unix_ns.saturating_sub(self.mono_ns - mono_ns)
        }
    }
}

/// Local time of day `HH:MM:SS` of a Unix time.
fn local_hms(unix_s: u64) -> (i32, i32, i32) {
    let t = unix_s.min(i64::MAX as u64) as libc::time_t;
    // SAFETY: an all-zero `tm` is valid (the zone pointer is null).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is reentrant.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok {
        (tm.tm_hour, tm.tm_min, tm.tm_sec)
    } else {
        let s = (unix_s % 86_400) as i32;
        (s / 3600, s / 60 % 60, s % 60)
    }
}

/// The label of a moment: wall-clock `HH:MM:SS` (with `.micros` if asked) when
/// a clock is known, else seconds of monotonic time.
pub(crate) fn time_label(clock: Option<WallClock>, mono_ns: u64, micros: bool) -> String {
    match clock {
        Some(c) => {
            let unix_ns = c.unix_ns_of(mono_ns);
            let (h, m, s) = local_hms(unix_ns / 1_000_000_000);
            if micros {
                format!("{h:02}:{m:02}:{s:02}.{:06}", unix_ns % 1_000_000_000 / 1000)
            } else {
                format!("{h:02}:{m:02}:{s:02}")
            }
        }
        None if micros => clock::mono_seconds(mono_ns),
        None => format!("{}s", mono_ns / 1_000_000_000),
    }
}

/// True when the error comes from writing to a closed pipe (`herdtrace | head`):
/// the caller should end quietly with success.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_without_a_clock_are_monotonic_seconds() {
        assert_eq!(time_label(None, 12_345_678_901, false), "12s");
        assert_eq!(time_label(None, 12_345_678_901, true), "12.345678");
        let c = WallClock {
            mono_ns: 10,
            unix_ns: 5,
        };
        assert_eq!(c.unix_ns_of(4), 0, "saturates before the epoch");
        assert_eq!(c.unix_ns_of(20), 15);
    }

    #[test]
    fn percentages_keep_a_decimal_below_ten() {
        assert_eq!(pct(0.0), "0%");
        assert_eq!(pct(0.005), "0.5%");
        assert_eq!(pct(0.054), "5.4%");
        assert_eq!(pct(0.0999), "10%");
        assert_eq!(pct(0.125), "12%");
        assert_eq!(pct(1.0), "100%");
    }
}
