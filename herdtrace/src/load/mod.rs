//! `herdtrace load`: a load generator that opens short HTTP/1.0 connections
//! (connect, request, read to EOF, close) as fast as possible or at a rate.
//!
//! Layout: `engine` (one thread's epoll loop), `histogram` (latencies),
//! `rate` (the start schedule, and latency measured from it), `response`
//! (judging a response), `report` (summary and output), `target` (address
//! and request parsing).
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub mod engine;
pub mod histogram;
pub mod rate;
pub mod report;
pub mod response;
pub mod target;

use engine::{Plan, Shared, ThreadReport};
use histogram::Histogram;
use report::{ErrorCounts, ErrorsByKind, LagSummary, Quantiles, Summary};

const EXAMPLES: &str = "\
Examples:
  herdtrace load --addr 127.0.0.1:8080
  herdtrace load --addr 127.0.0.1:8080 --connections 20000 --concurrency 64 --json
  herdtrace load --addr localhost:8080 --rate 500 --connections 5000   (500 new connections/s)
  herdtrace load --addr 127.0.0.1:8080 --rate 200 --concurrency 4 --json   (latency under a fixed schedule)

Latency: with --rate R, connection i is due at i/R s after the start (an open-loop
schedule) and its latency (total) runs from that scheduled start to the end of the
response, so time spent waiting for a free slot behind a slow or stalled server counts
instead of being left out (no coordinated omission, as in wrk2). \"from start\" is the
same from the actual connect(), and the start lag is how late connections started:
large lags mean the rate was not kept (all slots busy, or the machine too slow).
Above 1000/s per thread, starts are woken in 1 ms batches, which adds up to 1 ms of
counted lag. Without --rate (closed loop) there is no schedule: latency runs from
each connection's actual start. connect is always from connect() to the handshake.

Exit status: 0 when every connection got a complete HTTP response, 1 otherwise.
--json prints one object: connections (ok), attempted, errors, errors_by_kind
{connect_refused, connect_timeout, reset, short_response, timeout, other}, non_2xx,
rate_per_s, requested_rate_per_s (null without --rate), elapsed_s,
connect_us {p50, p99, max}, latency_from (\"scheduled\" with --rate, else \"started\"),
total_us {p50, p99, max} (from latency_from), total_from_start_us {p50, p99, max},
start_lag_us {mean, p99, max} (null without --rate), threads, concurrency.
Latency quantiles are at most 1/32 above the exact value.";

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct LoadArgs {
    /// Server address: IP:PORT, [IPv6]:PORT or localhost:PORT.
    #[arg(long, value_parser = target::parse_addr)]
    pub addr: SocketAddr,
    /// Number of connections to make.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: u64,
    /// New connections per second on a fixed schedule; latency then counts
    /// from each connection's scheduled start (0 = as fast as possible;
    /// otherwise at least 0.001).
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Connections in flight at once (over all threads).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub concurrency: u32,
    /// Load threads (default: number of CPUs).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Give up on a connection after this long.
    #[arg(long, default_value_t = 5000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// Print one JSON object instead of the text block.
    #[arg(long)]
    pub json: bool,
    /// Request path.
    #[arg(long, default_value = "/", value_name = "PATH", value_parser = target::parse_path)]
    pub request: String,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("not a number: {s:?}"))?;
    if !r.is_finite() || r < 0.0 {
        return Err("the rate must be a finite number >= 0".into());
    }
    if r > 0.0 && r < rate::MIN_RATE {
        return Err(format!(
            "the rate must be 0 (as fast as possible) or at least {} per second",
            rate::MIN_RATE
        ));
    }
    Ok(r)
}

/// Splits `concurrency` over at most `threads` threads: each share >= 1.
pub fn split(concurrency: usize, threads: usize) -> Vec<usize> {
    let t = threads.clamp(1, concurrency.max(1));
    (0..t)
        .map(|i| concurrency / t + usize::from(i < concurrency % t))
        .collect()
}

/// Raises the soft fd limit if `needed` descriptors would not fit.
fn ensure_fds(needed: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is writable.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit");
    }
    if lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max < needed {
        anyhow::bail!(
            "--concurrency needs about {needed} file descriptors but the hard limit is {}",
            lim.rlim_max
        );
    }
    lim.rlim_cur = needed;
    // SAFETY: lim is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("raise RLIMIT_NOFILE");
    }
    Ok(())
}

/// Runs the load; returns the exit code (1 if any connection failed).
pub fn run(args: LoadArgs) -> anyhow::Result<i32> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.map_or(cpus, usize::from);
    let shares = split(args.concurrency as usize, threads);
    ensure_fds(u64::from(args.concurrency) + 64 + 4 * shares.len() as u64)?;
    let schedule = rate::Schedule::new(args.rate);
    let plan = Plan {
        target: target::RawAddr::new(args.addr),
        connections: args.connections,
        timeout: Duration::from_millis(args.timeout_ms),
        request: target::request_bytes(&args.request),
        schedule,
        wake_on_time: schedule.is_some_and(|s| s.wakes_on_time(shares.len())),
        start: Instant::now(),
    };
    let shared = Shared::new(shares.len());
    let reports = std::thread::scope(|s| -> anyhow::Result<Vec<ThreadReport>> {
        let mut handles = Vec::with_capacity(shares.len());
        for (i, &n) in shares.iter().enumerate() {
            let (plan, shared) = (&plan, &shared);
            let h = std::thread::Builder::new()
                .name(format!("load-{i}"))
                .spawn_scoped(s, move || engine::run_thread(plan, shared, i, n))
                .context("spawn load thread")?;
            handles.push(h);
        }
        let mut progress = ProgressLine::new(plan.start, args.connections);
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
            progress.update(&shared);
        }
        progress.clear();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(r) => r.context("load thread"),
                Err(_) => Err(anyhow::anyhow!("a load thread panicked")),
            })
            .collect()
    })?;
    let summary = summarize(&plan, &reports, args.concurrency as usize);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", summary.json())?;
    } else {
        writeln!(out, "{}", summary.human())?;
    }
    out.flush()?;
    Ok(summary.exit_code())
}

fn summarize(plan: &Plan, reports: &[ThreadReport], concurrency: usize) -> Summary {
    let mut connect = Histogram::new();
    let mut total = Histogram::new();
    let mut from_start = Histogram::new();
    let mut lags = rate::StartLags::default();
    let mut errors = ErrorCounts::default();
    let (mut ok, mut non_2xx) = (0, 0);
    let mut end = plan.start;
    let mut first_other = None;
    for r in reports {
        connect.merge(&r.connect_us);
        total.merge(&r.total_us);
        from_start.merge(&r.from_start_us);
        lags.merge(&r.start_lag);
        errors.merge(&r.errors);
        ok += r.ok;
        non_2xx += r.non_2xx;
        end = end.max(r.finished);
        if first_other.is_none() {
            first_other = r.first_other.as_ref().map(ToString::to_string);
        }
    }
    let elapsed = end.duration_since(plan.start).as_secs_f64();
    let finished = ok + errors.total();
    Summary {
        connections: ok,
        attempted: finished,
        errors: errors.total(),
        errors_by_kind: ErrorsByKind::from(&errors),
        non_2xx,
        rate_per_s: if elapsed > 0.0 {
            finished as f64 / elapsed
        } else {
            0.0
        },
        requested_rate_per_s: plan.schedule.map(|s| s.rate()),
        elapsed_s: elapsed,
        connect_us: Quantiles::from(&connect),
        latency_from: rate::LatencyFrom::of(plan.schedule.as_ref()),
        total_us: Quantiles::from(&total),
        total_from_start_us: Quantiles::from(&from_start),
        start_lag_us: LagSummary::from(&lags),
        threads: reports.len(),
        concurrency,
        first_other_error: first_other,
    }
}

/// A carriage-return progress line on stderr, only on a terminal and only
/// once the run has lasted a while.
struct ProgressLine {
    enabled: bool,
    start: Instant,
    total: u64,
    shown: bool,
    last: Instant,
}

impl ProgressLine {
    const AFTER: Duration = Duration::from_secs(2);
    const EVERY: Duration = Duration::from_millis(250);

    fn new(start: Instant, total: u64) -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            start,
            total,
            shown: false,
            last: start,
        }
    }

    fn update(&mut self, shared: &Shared) {
        let elapsed = self.start.elapsed();
        if !self.enabled || elapsed < Self::AFTER || self.last.elapsed() < Self::EVERY {
            return;
        }
        self.last = Instant::now();
        let done: u64 = shared
            .progress
            .iter()
            .map(|p| p.done.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        let errors: u64 = shared
            .progress
            .iter()
            .map(|p| p.errors.load(std::sync::atomic::Ordering::Relaxed))
            .sum();
        let rate = done as f64 / elapsed.as_secs_f64();
        eprint!(
            "\r{done}/{} connections, {rate:.0}/s, {errors} errors   ",
            self.total
        );
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(args: &[&str]) -> Result<LoadArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("load").chain(args.iter().copied())).map(|c| c.load)
    }

    #[test]
    fn defaults() {
        let a = parse(&["--addr", "127.0.0.1:8080"]).expect("valid");
        assert_eq!(
            a.addr,
            "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(a.connections, 1000);
        assert_eq!(a.rate, 0.0);
        assert_eq!(a.concurrency, 32);
        assert_eq!(a.threads, None);
        assert_eq!(a.timeout_ms, 5000);
        assert!(!a.json);
        assert_eq!(a.request, "/");
    }

    #[test]
    fn every_option_is_read() {
        let a = parse(&[
            "--addr",
            "localhost:81",
            "--connections",
            "7",
            "--rate",
            "2.5",
            "--concurrency",
            "3",
            "--threads",
            "2",
            "--timeout-ms",
            "100",
            "--json",
            "--request",
            "/x",
        ])
        .expect("valid");
        assert_eq!(a.addr.port(), 81);
        assert_eq!(
            (a.connections, a.rate, a.concurrency, a.threads),
            (7, 2.5, 3, Some(2))
        );
        assert_eq!(
            (a.timeout_ms, a.json, a.request.as_str()),
            (100, true, "/x")
        );
    }

    #[test]
    fn bad_values_are_clap_errors() {
        for bad in [
            &[][..],
            &["--addr", "nonsense"],
            &["--addr", "127.0.0.1:0"],
            &["--addr", "127.0.0.1:1", "--connections", "0"],
            &["--addr", "127.0.0.1:1", "--rate", "-1"],
            &["--addr", "127.0.0.1:1", "--rate", "inf"],
            &["--addr", "127.0.0.1:1", "--rate", "fast"],
            &["--addr", "127.0.0.1:1", "--rate", "1e-300"],
            &["--addr", "127.0.0.1:1", "--rate", "0.0009"],
            &["--addr", "127.0.0.1:1", "--concurrency", "0"],
            &["--addr", "127.0.0.1:1", "--threads", "0"],
            &["--addr", "127.0.0.1:1", "--timeout-ms", "0"],
            &["--addr", "127.0.0.1:1", "--request", "nopath"],
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} must be rejected"));
            assert_ne!(err.kind(), clap::error::ErrorKind::DisplayHelp, "{bad:?}");
        }
    }

    #[test]
    fn concurrency_split() {
        assert_eq!(split(32, 2), vec![16, 16]);
        assert_eq!(split(33, 2), vec![17, 16]);
        assert_eq!(split(3, 8), vec![1, 1, 1]);
        assert_eq!(split(1, 1), vec![1]);
        assert_eq!(split(10, 0), vec![10]);
        for (c, t) in [(1000, 7), (5, 5), (64, 3)] {
            let s = split(c, t);
            assert_eq!(s.iter().sum::<usize>(), c);
            assert!(s.iter().all(|&n| n >= 1));
            assert!(s.iter().max().expect("non-empty") - s.iter().min().expect("non-empty") <= 1);
        }
    }

    #[test]
    fn fd_limit_is_left_alone_when_enough() {
        ensure_fds(16).expect("16 fds are always available");
    }
}
