//! Error kinds, the run summary, and its two renderings (human, JSON).
use std::fmt::Write as _;

use serde::Serialize;

use super::histogram::Histogram;

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
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::Reset,
        ErrorKind::ShortResponse,
        ErrorKind::Timeout,
        ErrorKind::Other,
    ];

    /// The JSON key.
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
    pub elapsed_s: f64,
    /// From connect() to the handshake completing, for every connection that connected.
    pub connect_us: Quantiles,
    /// From connect() to EOF, for successful connections.
    pub total_us: Quantiles,
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
        let _ = write!(s, "total µs     {}", fmt_q(&self.total_us));
        s
    }
}

fn fmt_q(q: &Quantiles) -> String {
    let f = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    format!("p50 {}  p99 {}  max {}", f(q.p50), f(q.p99), f(q.max))
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
            elapsed_s: 0.002,
            connect_us: Quantiles::from(&h),
            total_us: Quantiles::from(&Histogram::new()),
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
}
