//! Section "Memory": the tracer's resident memory, sampled every second for a
//! long run at a fixed connection rate. Episode state is bounded by timeouts
//! and caps, so after warm-up the RSS must stay flat; the maximum is tracked.
use std::time::Duration;

use anyhow::bail;

use super::loadgen;
use super::overhead::{self, cpu_per_1000};
use super::procfs::{RssSampler, Sample};
use super::report::{SectionReport, Table};
use super::server::Server;
use super::tracer::{self, Tracer, TracerSpec};
use super::Ctx;

pub const TITLE: &str = "Memory: the tracer's RSS over a long run at a fixed rate";
const MODEL: &str = "epoll-per-worker";
const WORKERS: u16 = 4;
const CONCURRENCY: u32 = 64;
/// Maximum RSS allowed, in MB.
pub const GOAL_MB: f64 = 50.0;
/// "Flat": the last quarter's peak exceeds the first quarter's by at most
/// this share, plus [`FLAT_SLACK_KB`] for allocator noise.
pub const FLAT_SHARE: f64 = 0.10;
pub const FLAT_SLACK_KB: u64 = 1024;

/// What the samples say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub first_kb: u64,
    pub max_kb: u64,
    pub first_quarter_max_kb: u64,
    pub last_quarter_max_kb: u64,
    pub samples: usize,
}

impl Shape {
    pub fn of(samples: &[Sample]) -> Option<Shape> {
        let first = samples.first()?.1;
        let n = samples.len();
        let q = n.div_ceil(4);
        let peak = |s: &[Sample]| s.iter().map(|x| x.1).max().unwrap_or(0);
        Some(Shape {
            first_kb: first,
            max_kb: peak(samples),
            first_quarter_max_kb: peak(&samples[..q]),
            last_quarter_max_kb: peak(&samples[n - q..]),
            samples: n,
        })
    }

    pub fn flat(&self) -> bool {
        let allowed = self.first_quarter_max_kb as f64 * (1.0 + FLAT_SHARE) + FLAT_SLACK_KB as f64;
        self.last_quarter_max_kb as f64 <= allowed
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<SectionReport>> {
    let mut server = Server::start(&ctx.bin, MODEL, WORKERS)?;
    let t = Tracer::start(&ctx.bin, server.pid(), &TracerSpec::new("tracepoint"))?;
    let every = Duration::from_secs_f64((ctx.memory_secs / 100.0).clamp(0.1, 1.0));
    let sampler = RssSampler::start(t.pid(), every);
    let n = (ctx.memory_rate * ctx.memory_secs) as u64;
    let l = loadgen::load(&ctx.bin, server.port, n, Some(ctx.memory_rate), CONCURRENCY)?;
    std::thread::sleep(overhead::SETTLE);
    let cpu = t.cpu_since_ready();
    let (samples, hwm) = sampler.finish();
    let f = t.stop()?;
    let s = tracer::parse_text_summary(&f.stdout).map_err(anyhow::Error::msg)?;
    let st = server.stop()?;
    if !st.success() {
        bail!("the server exited with {st}");
    }
    let run = Run {
        target_rate: ctx.memory_rate,
        rate: l.rate_per_s,
        seconds: l.attempted as f64 / l.rate_per_s.max(1e-9),
        completed: l.attempted.saturating_sub(l.errors),
        seen: s.connections,
        lost: s.lost_events,
        cpu_s: cpu,
        hwm_kb: hwm,
    };
    Ok(vec![summarize(&run, &samples)])
}

/// The run's figures besides the samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run {
    pub target_rate: f64,
    pub rate: f64,
    pub seconds: f64,
    pub completed: u64,
    pub seen: u64,
    pub lost: u64,
    pub cpu_s: f64,
    pub hwm_kb: u64,
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

pub fn summarize(run: &Run, samples: &[Sample]) -> SectionReport {
    let mut r = SectionReport::new(TITLE);
    r.setup = vec![
        format!(
            "server: `herdtrace serve --model {MODEL} --workers {WORKERS}`; load: \
             `herdtrace load --rate {:.0} --concurrency {CONCURRENCY}` for {:.0} s",
            run.target_rate, run.seconds
        ),
        "tracer: `herdtrace --pid SERVER --backend tracepoint` (defaults); VmRSS from \
         /proc/PID/status sampled through the run, VmHWM at its end"
            .into(),
    ];
    let Some(shape) = Shape::of(samples) else {
        r.failed = true;
        r.warnings.push("no memory sample was taken".into());
        return r;
    };
    // Ten evenly spaced samples show the curve without a row per second.
    let step = samples.len().div_ceil(10).max(1);
    let short = samples.last().is_some_and(|l| l.0 < 60.0);
    let row = |(t, kb): &Sample| {
        let t = if short {
            format!("{t:.1}")
        } else {
            format!("{t:.0}")
        };
        vec![t, mb(*kb)]
    };
    let mut rows: Vec<Vec<String>> = samples.iter().step_by(step).map(row).collect();
    if let Some(last) = samples.last() {
        if !(samples.len() - 1).is_multiple_of(step) {
            rows.push(row(last));
        }
    }
    r.table = Some(Table {
        header: vec!["s".into(), "RSS MB".into()],
        rows,
    });
    // The goal is on the RSS while tracing; VmHWM also holds the startup
    // peak (reading kernel BTF, loading the programs), shown beside it.
    let max_kb = shape.max_kb;
    let under = (max_kb as f64 / 1024.0) <= GOAL_MB;
    r.lines.push(format!(
        "{:.0} conn/s achieved (asked {:.0}), {} connections seen of {} completed, {} events lost",
        run.rate, run.target_rate, run.seen, run.completed, run.lost
    ));
    r.lines.push(format!(
        "RSS while tracing: first {} MB, peak {} MB (goal <= {GOAL_MB:.0} MB): {}; VmHWM {} MB (includes the startup peak)",
        mb(shape.first_kb),
        mb(shape.max_kb),
        if under { "goal met" } else { "goal NOT met" },
        mb(run.hwm_kb)
    ));
    r.lines.push(format!(
        "flat: last-quarter peak {} MB vs first-quarter peak {} MB ({} samples): {}",
        mb(shape.last_quarter_max_kb),
        mb(shape.first_quarter_max_kb),
        shape.samples,
        if shape.flat() { "flat" } else { "GROWING" }
    ));
    if let Some(c) = cpu_per_1000(run.cpu_s, run.completed) {
        r.lines.push(format!(
            "tracer CPU: {:.1} s, {c:.1} ms per 1000 connections at {:.0} conn/s ({:.1}% of a core)",
            run.cpu_s,
            run.rate,
            100.0 * run.cpu_s / run.seconds.max(1e-9)
        ));
    }
    if !under {
        r.warnings
            .push(format!("peak RSS {} MB above {GOAL_MB:.0} MB", mb(max_kb)));
    }
    if !shape.flat() {
        r.warnings
            .push("the tracer's RSS grew through the run".into());
    }
    if run.lost > 0 {
        r.warnings.push(format!("{} events lost", run.lost));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(kb: &[u64]) -> Vec<Sample> {
        kb.iter().enumerate().map(|(i, &k)| (i as f64, k)).collect()
    }

    #[test]
    fn shape_quarters() {
        let s =
            Shape::of(&samples(&[8000, 9000, 9100, 9050, 9100, 9000, 9080, 9090])).expect("shape");
        assert_eq!(s.first_kb, 8000);
        assert_eq!(s.max_kb, 9100);
        assert_eq!(s.first_quarter_max_kb, 9000);
        assert_eq!(s.last_quarter_max_kb, 9090);
        assert!(s.flat());
        assert_eq!(Shape::of(&[]), None);
        let one = Shape::of(&samples(&[5000])).expect("one");
        assert_eq!(
            (one.first_quarter_max_kb, one.last_quarter_max_kb),
            (5000, 5000)
        );
    }

    #[test]
    fn growth_is_not_flat() {
        let s = Shape::of(&samples(&[
            10000, 10000, 12000, 14000, 16000, 18000, 20000, 22000,
        ]))
        .expect("shape");
        assert!(!s.flat());
        // At the bound: 10% + 1 MB of slack above the first quarter is still flat.
        let s = Shape::of(&samples(&[10000, 10000, 10000, 12024])).expect("shape");
        assert!(s.flat());
        let s = Shape::of(&samples(&[10000, 10000, 10000, 12025])).expect("shape");
        assert!(!s.flat());
    }

    fn run() -> Run {
        Run {
            target_rate: 10000.0,
            rate: 9990.0,
            seconds: 600.0,
            completed: 6_000_000,
            seen: 6_000_000,
            lost: 0,
            cpu_s: 60.0,
            hwm_kb: 20480,
        }
    }

    #[test]
    fn report_lines_and_table() {
        let kb: Vec<u64> = (0..25).map(|i| 18000 + (i % 3) * 10).collect();
        let r = summarize(&run(), &samples(&kb));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(
            r.lines[1],
            "RSS while tracing: first 17.6 MB, peak 17.6 MB (goal <= 50 MB): goal met; \
             VmHWM 20.0 MB (includes the startup peak)"
        );
        assert!(r.lines[2].ends_with("(25 samples): flat"));
        assert_eq!(
            r.lines[3],
            "tracer CPU: 60.0 s, 10.0 ms per 1000 connections at 9990 conn/s (10.0% of a core)"
        );
        let t = r.table.as_ref().expect("table");
        // 25 samples, every 3rd (0, 3, ..., 24): 9 rows, the last sample among them.
        assert_eq!(t.rows.len(), 9);
        assert_eq!(t.rows[8][0], "24.0", "a short run shows tenths of seconds");
    }

    #[test]
    fn over_goal_growth_and_no_samples() {
        let mut big = run();
        big.hwm_kb = 70 * 1024;
        big.lost = 3;
        let r = summarize(&big, &samples(&[10000, 30000, 50000, 61440]));
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
        assert!(
            r.lines[1].contains("peak 60.0 MB (goal <= 50 MB): goal NOT met; VmHWM 70.0 MB"),
            "{}",
            r.lines[1]
        );
        let r = summarize(&run(), &[]);
        assert!(r.failed);
    }
}
