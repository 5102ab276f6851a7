//! Error kinds, the run summary, and its two renderings (human, JSON).
use std::fmt::Write as _;

use serde::Serialize;

use super::histogram::Histogram;
use super::rate::{LatencyFrom, StartLags};

/// Why a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    ConnectRefused,
    ConnectTimeout,
    /// Reset or broken pipe after the connection was up.
    Reset,
    /// EOF with no bytes, no HTTP status line, or inside the header block.
    ShortResponse,
    /// The per-connection timeout ran out after the connection was up.
    Timeout,
    Other,
}

impl ErrorKind {
    #[cfg(test)]
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::Reset,
        ErrorKind::ShortResponse,
        ErrorKind::Timeout,
        ErrorKind::Other,
    ];

    /// The JSON key.
    #[cfg(test)]
    pub fn key(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::ShortResponse => "short_response",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Other => "other",
        }
    }

    /// Classifies a socket errno; `connecting` while the handshake is not done.
    pub fn from_errno(errno: i32, connecting: bool) -> Self {
        match errno {
            libc::ECONNREFUSED => ErrorKind::ConnectRefused,
            libc::ETIMEDOUT if connecting => ErrorKind::ConnectTimeout,
            libc::ETIMEDOUT => ErrorKind::Timeout,
            libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => ErrorKind::Reset,
            _ => ErrorKind::Other,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Failure counts by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts([u64; 6]);

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind) {
        self.0[kind.index()] += 1;
    }

    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.0[kind.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// The JSON `errors_by_kind` object (every kind always present).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ErrorsByKind {
    pub connect_refused: u64,
    pub connect_timeout: u64,
    pub reset: u64,
    pub short_response: u64,
    pub timeout: u64,
    pub other: u64,
}

impl From<&ErrorCounts> for ErrorsByKind {
    fn from(c: &ErrorCounts) -> Self {
        Self {
            connect_refused: c.get(ErrorKind::ConnectRefused),
            connect_timeout: c.get(ErrorKind::ConnectTimeout),
            reset: c.get(ErrorKind::Reset),
            short_response: c.get(ErrorKind::ShortResponse),
            timeout: c.get(ErrorKind::Timeout),
            other: c.get(ErrorKind::Other),
        }
    }
}

/// p50/p99/max in µs; null when nothing was measured.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Quantiles {
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

impl From<&Histogram> for Quantiles {
    fn from(h: &Histogram) -> Self {
        Self {
            p50: h.quantile(0.50),
            p99: h.quantile(0.99),
            max: h.max(),
        }
    }
}

/// How late connections started against the schedule, in µs; all null
/// without a schedule.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct LagSummary {
    pub mean: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

impl From<&StartLags> for LagSummary {
    fn from(l: &StartLags) -> Self {
        Self {
            mean: l.mean_us(),
            p99: l.quantile_us(0.99),
            max: l.max_us(),
        }
    }
}

/// Everything a run reports; serialised as the `--json` object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Connections that got a complete response.
    pub connections: u64,
    /// Connections started (successes plus failures).
    pub attempted: u64,
    /// Failed connections.
    pub errors: u64,
    pub errors_by_kind: ErrorsByKind,
    /// Complete responses whose status was not 2xx (not counted as errors).
    pub non_2xx: u64,
    /// Finished connections (ok or failed) per second of elapsed time.
    pub rate_per_s: f64,
    /// `--rate`; None when as fast as possible.
    pub requested_rate_per_s: Option<f64>,
    pub elapsed_s: f64,
    /// From connect() to the handshake completing, for every connection that connected.
    pub connect_us: Quantiles,
    /// What `total_us` is measured from: the scheduled start with `--rate`.
    pub latency_from: LatencyFrom,
    /// From `latency_from` to EOF, for successful connections.
    pub total_us: Quantiles,
    /// From connect() to EOF, for successful connections (what `total_us`
    /// would be without the schedule; the same in closed loop).
    pub total_from_start_us: Quantiles,
    /// How late connections started against the schedule.
    pub start_lag_us: LagSummary,
    pub threads: usize,
    pub concurrency: usize,
    /// The first "other" error, to say what it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_other_error: Option<String>,
}

impl Summary {
    pub fn exit_code(&self) -> i32 {
        i32::from(self.errors > 0)
    }

    pub fn json(&self) -> String {
        // Serialising plain numbers, strings and options cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "connections  {} ok, {} failed of {} ({} threads, concurrency {})",
            self.connections, self.errors, self.attempted, self.threads, self.concurrency
        );
        if self.errors > 0 {
            let e = &self.errors_by_kind;
            let kinds = [
                ("connect refused", e.connect_refused),
                ("connect timeout", e.connect_timeout),
                ("reset", e.reset),
                ("short/no response", e.short_response),
                ("timeout", e.timeout),
                ("other", e.other),
            ];
            let list: Vec<String> = kinds
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(s, "errors       {}", list.join(", "));
            if let Some(o) = &self.first_other_error {
                let _ = writeln!(s, "first other  {o}");
            }
        }
        if self.non_2xx > 0 {
            let _ = writeln!(s, "non-2xx      {}", self.non_2xx);
        }
        let _ = writeln!(
            s,
            "elapsed      {:.3} s, {:.0} conn/s",
            self.elapsed_s, self.rate_per_s
        );
        let _ = writeln!(s, "connect µs   {}", fmt_q(&self.connect_us));
        let _ = writeln!(s, "total µs     {}", fmt_q(&self.total_us));
        match self.latency_from {
            LatencyFrom::Scheduled => {
                let _ = writeln!(s, "  from start {}", fmt_q(&self.total_from_start_us));
                let l = &self.start_lag_us;
                let _ = writeln!(
                    s,
                    "start lag µs mean {}  p99 {}  max {}",
                    fmt_v(l.mean),
                    fmt_v(l.p99),
                    fmt_v(l.max)
                );
                let rate = self
                    .requested_rate_per_s
                    .map(|r| format!(" (rate {r}/s)"))
                    .unwrap_or_default();
                let _ = write!(
                    s,
                    "latency      from each connection's scheduled start{rate}: \
                     includes time waiting for a free slot; \"from start\" leaves it out"
                );
            }
            LatencyFrom::Started => {
                let _ = write!(
                    s,
                    "latency      from each connection's actual start (no --rate: closed loop, no schedule)"
                );
            }
        }
        s
    }
}

fn fmt_v(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn fmt_q(q: &Quantiles) -> String {
    format!(
        "p50 {}  p99 {}  max {}",
        fmt_v(q.p50),
        fmt_v(q.p99),
        fmt_v(q.max)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(errors: ErrorCounts) -> Summary {
        let mut h = Histogram::new();
        for v in [10, 20, 30] {
            h.record(v);
        }
        Summary {
            connections: 3,
            attempted: 3 + errors.total(),
            errors: errors.total(),
            errors_by_kind: ErrorsByKind::from(&errors),
            non_2xx: 0,
            rate_per_s: 1500.0,
            requested_rate_per_s: None,
            elapsed_s: 0.002,
            connect_us: Quantiles::from(&h),
            latency_from: LatencyFrom::Started,
            total_us: Quantiles::from(&Histogram::new()),
            total_from_start_us: Quantiles::from(&Histogram::new()),
            start_lag_us: LagSummary::from(&StartLags::default()),
            threads: 2,
            concurrency: 32,
            first_other_error: None,
        }
    }

    #[test]
    fn errno_classification() {
        assert_eq!(
            ErrorKind::from_errno(libc::ECONNREFUSED, true),
            ErrorKind::ConnectRefused
        );
        assert_eq!(
            ErrorKind::from_errno(libc::ETIMEDOUT, true),
            ErrorKind::ConnectTimeout
        );
        assert_eq!(
            ErrorKind::from_errno(libc::ETIMEDOUT, false),
            ErrorKind::Timeout
        );
        assert_eq!(
            ErrorKind::from_errno(libc::ECONNRESET, false),
            ErrorKind::Reset
        );
        assert_eq!(ErrorKind::from_errno(libc::EPIPE, false), ErrorKind::Reset);
        assert_eq!(
            ErrorKind::from_errno(libc::EADDRNOTAVAIL, true),
            ErrorKind::Other
        );
    }

    #[test]
    fn counts_by_kind() {
        let mut c = ErrorCounts::default();
        for (i, k) in ErrorKind::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                c.add(k);
            }
        }
        for (i, k) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(c.get(k), i as u64 + 1);
        }
        assert_eq!(c.total(), 21);
        let mut d = ErrorCounts::default();
        d.add(ErrorKind::Reset);
        d.merge(&c);
        assert_eq!(d.get(ErrorKind::Reset), 4);
        assert_eq!(d.total(), 22);
    }

    #[test]
    fn json_has_the_promised_fields() {
        let mut e = ErrorCounts::default();
        e.add(ErrorKind::ConnectRefused);
        let s = summary(e);
        let v: serde_json::Value = serde_json::from_str(&s.json()).expect("valid JSON");
        assert_eq!(v["connections"], 3);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["attempted"], 4);
        assert_eq!(v["errors_by_kind"]["connect_refused"], 1);
        for k in ErrorKind::ALL {
            assert!(v["errors_by_kind"][k.key()].is_u64(), "{}", k.key());
        }
        assert_eq!(v["rate_per_s"], 1500.0);
        assert_eq!(v["elapsed_s"], 0.002);
        assert_eq!(v["connect_us"]["p50"], 20);
        assert_eq!(v["connect_us"]["p99"], 30);
        assert_eq!(v["connect_us"]["max"], 30);
        assert!(v["total_us"]["p50"].is_null());
        assert_eq!(v["latency_from"], "started");
        assert!(v["requested_rate_per_s"].is_null());
        assert!(v["total_from_start_us"]["p50"].is_null());
        for k in ["mean", "p99", "max"] {
            assert!(v["start_lag_us"][k].is_null(), "{k}");
        }
        assert!(v.get("first_other_error").is_none());
        assert_eq!(s.exit_code(), 1);
    }

    #[test]
    fn human_lists_only_nonzero_error_kinds() {
        let ok = summary(ErrorCounts::default());
        assert_eq!(ok.exit_code(), 0);
        let text = ok.human();
        assert!(text.contains("3 ok, 0 failed of 3"), "{text}");
        assert!(!text.contains("errors"), "{text}");
        assert!(
            text.contains("connect µs   p50 20  p99 30  max 30"),
            "{text}"
        );
        assert!(text.contains("total µs     p50 -"), "{text}");
        let mut e = ErrorCounts::default();
        e.add(ErrorKind::Timeout);
        e.add(ErrorKind::Timeout);
        let text = summary(e).human();
        assert!(text.contains("errors       timeout 2\n"), "{text}");
    }

    /// A --rate run whose server stalled: total from the schedule, the
    /// actual-start figures beside it, and lags.
    fn scheduled(rate: f64) -> Summary {
        let mut s = summary(ErrorCounts::default());
        let (mut total, mut from_start, mut lags) =
            (Histogram::new(), Histogram::new(), StartLags::default());
        for (lag_ms, took_ms) in [(0u64, 1u64), (0, 300), (290, 2), (280, 1)] {
            lags.record(std::time::Duration::from_millis(lag_ms));
            from_start.record(took_ms * 1000);
            total.record((lag_ms + took_ms) * 1000);
        }
        s.requested_rate_per_s = Some(rate);
        s.latency_from = LatencyFrom::Scheduled;
        s.total_us = Quantiles::from(&total);
        s.total_from_start_us = Quantiles::from(&from_start);
        s.start_lag_us = LagSummary::from(&lags);
        s
    }

    #[test]
    fn json_names_the_latency_origin_and_the_lag() {
        let v: serde_json::Value =
            serde_json::from_str(&scheduled(100.0).json()).expect("valid JSON");
        assert_eq!(v["latency_from"], "scheduled");
        assert_eq!(v["requested_rate_per_s"], 100.0);
        assert_eq!(v["total_us"]["max"], 300_000);
        assert_eq!(v["total_from_start_us"]["max"], 300_000);
        // Sorted from start: 1, 1, 2, 300 ms; total: 1, 281, 292, 300 ms.
        let p50 = |q: &str| v[q]["p50"].as_u64().expect("p50");
        assert!((1000..=1000 + 1000 / 32).contains(&p50("total_from_start_us")));
        assert!((281_000..=281_000 + 281_000 / 32).contains(&p50("total_us")));
        assert_eq!(v["start_lag_us"]["mean"], 142_500);
        assert_eq!(v["start_lag_us"]["max"], 290_000);
        // The fields other tools read are still there.
        for k in [
            "connections",
            "attempted",
            "errors",
            "non_2xx",
            "rate_per_s",
        ] {
            assert!(v[k].is_number(), "{k}");
        }
        assert!(v["connect_us"]["p50"].is_number());
    }

    #[test]
    fn human_says_where_latency_is_measured_from() {
        let text = summary(ErrorCounts::default()).human();
        assert!(
            text.ends_with(
                "\nlatency      from each connection's actual start \
                 (no --rate: closed loop, no schedule)"
            ),
            "{text}"
        );
        assert!(!text.contains("from start"), "{text}");
        assert!(!text.contains("start lag"), "{text}");

        let text = scheduled(2.5).human();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert!(lines[3].starts_with("total µs     p50 "), "{text}");
        assert!(lines[3].ends_with("max 300000"), "{text}");
        assert!(lines[4].starts_with("  from start p50 10"), "{text}");
        assert!(lines[4].ends_with("  p99 300000  max 300000"), "{text}");
        assert!(
            lines[5].starts_with("start lag µs mean 142500  p99 "),
            "{text}"
        );
        assert!(lines[5].ends_with("  max 290000"), "{text}");
        assert_eq!(
            lines[6],
            "latency      from each connection's scheduled start (rate 2.5/s): includes \
             time waiting for a free slot; \"from start\" leaves it out"
        );
    }
}
