//! Section "Engine throughput": a real max-rate trace is recorded
//! (`--record`), then `herdtrace replay FILE --bench-events N` (hidden)
//! decodes and reconstructs it in shifted passes, one thread, until N events;
//! this is repeated and the median run is the figure (one run on a shared
//! machine varies by a third).
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

use super::loadgen;
use super::report::SectionReport;
use super::server::Server;
use super::tracer::{self, Tracer, TracerSpec};
use super::{child, Ctx};
use crate::proc;

pub const TITLE: &str = "Engine throughput: decoding + reconstruction, one thread";
const MODEL: &str = "epoll-per-worker";
const WORKERS: u16 = 4;
/// events/s the engine must sustain (issue #15; docs/performance.md's
/// original goal was 5 M).
pub const GOAL: f64 = 9e6;
/// Replay runs; the median one is reported.
const REPEATS: usize = 5;

/// The `replay-bench ...` line the hidden flag prints on stderr.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub events: u64,
    pub passes: u64,
    pub connections: u64,
    pub seconds: f64,
}

pub fn parse_timing(stderr: &str) -> Result<Timing, String> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("replay-bench "))
        .ok_or_else(|| format!("no replay-bench line in {:?}", stderr.trim()))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |key: &str| -> Result<&str, String> {
        words
            .windows(2)
            .find(|w| w[0] == key)
            .map(|w| w[1])
            .ok_or_else(|| format!("no {key} in {line:?}"))
    };
    let count = |key: &str| -> Result<u64, String> {
        field(key)?
            .parse()
            .map_err(|_| format!("{key} is not a count in {line:?}"))
    };
    let seconds: f64 = field("seconds")?
        .parse()
        .map_err(|_| format!("seconds is not a number in {line:?}"))?;
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("seconds must be positive in {line:?}"));
    }
    Ok(Timing {
        events: count("events")?,
        passes: count("passes")?,
        connections: count("connections")?,
        seconds,
    })
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<SectionReport>> {
    let dir = proc::target_dir().join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = dir.join("engine.htr");
    let mut server = Server::start(&ctx.bin, MODEL, WORKERS)?;
    let mut spec = TracerSpec::new("tracepoint");
    spec.record = Some(file.clone());
    let t = Tracer::start(&ctx.bin, server.pid(), &spec)?;
    let l = loadgen::load(&ctx.bin, server.port, ctx.record_connections, None, 32)?;
    std::thread::sleep(super::overhead::SETTLE);
    let f = t.stop()?;
    let traced = tracer::parse_text_summary(&f.stdout).map_err(anyhow::Error::msg)?;
    let st = server.stop()?;
    if !st.success() {
        bail!("the server exited with {st}");
    }
    let size = std::fs::metadata(&file)
        .with_context(|| format!("{}", file.display()))?
        .len();
    let mut runs = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        runs.push(replay_once(ctx, &file)?);
    }
    let _ = std::fs::remove_file(&file);
    Ok(vec![summarize(
        &runs,
        l.rate_per_s,
        traced.connections,
        traced.lost_events,
        size,
    )])
}

fn replay_once(ctx: &Ctx, file: &std::path::Path) -> anyhow::Result<Timing> {
    let mut cmd = Command::new(&ctx.bin);
    cmd.arg("replay")
        .arg(file)
        .args(["--bench-events", &ctx.engine_events.to_string()]);
    let out = child::run(&mut cmd, Duration::from_secs(600))?;
    if !out.status.success() {
        bail!(
            "replay benchmark failed ({}): {}",
            out.status,
            out.stderr.trim()
        );
    }
    parse_timing(&out.stderr).map_err(|e| anyhow!(e))
}

fn rate(t: &Timing) -> f64 {
    t.events as f64 / t.seconds
}

/// The run of median rate (the upper one of an even count).
fn median(runs: &[Timing]) -> Option<Timing> {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    sorted.get(sorted.len() / 2).copied()
}

pub fn summarize(
    runs: &[Timing],
    rate_per_s: f64,
    conns: u64,
    lost: u64,
    bytes: u64,
) -> SectionReport {
    let mut r = SectionReport::new(TITLE);
    let Some(t) = median(runs) else {
        r.warnings.push("no replay run".into());
        return r;
    };
    let per_pass = t.events / t.passes.max(1);
    r.setup = vec![
        format!(
            "recording: `herdtrace --pid SERVER --backend tracepoint --record FILE` on \
             `herdtrace serve --model {MODEL} --workers {WORKERS}` at {rate_per_s:.0} conn/s: \
             {conns} connections, about {per_pass} events, {} KiB, {lost} events lost",
            bytes / 1024
        ),
        format!(
            "`herdtrace replay FILE --bench-events {}` (hidden flag): the recording decoded and \
             reconstructed {} times, timestamps, per-CPU sequence numbers and chain ids shifted \
             each pass, summary to a sink; one thread; {} runs, the median one counts",
            t.events,
            t.passes,
            runs.len()
        ),
    ];
    let rate = rate(&t);
    r.lines.push(format!(
        "{} events in {:.2} s: {:.2} million events/s ({} connections reconstructed, {:.2} million/s) (goal >= {:.0} million/s): {}",
        t.events,
        t.seconds,
        rate / 1e6,
        t.connections,
        t.connections as f64 / t.seconds / 1e6,
        GOAL / 1e6,
        if rate >= GOAL { "goal met" } else { "goal NOT met" }
    ));
    let mut rates: Vec<f64> = runs.iter().map(self::rate).collect();
    rates.sort_by(f64::total_cmp);
    let all: Vec<String> = rates.iter().map(|x| format!("{:.2}", x / 1e6)).collect();
    r.lines
        .push(format!("each run, million events/s: {}", all.join(", ")));
    if rate < GOAL {
        r.warnings.push(format!(
            "engine throughput {:.2} million events/s is below the goal",
            rate / 1e6
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "replay-bench events 10000000 passes 12 connections 1200000 seconds 0.800000 events_per_s 12500000";

    #[test]
    fn timing_line() {
        let t = parse_timing(&format!("noise\n{LINE}\n")).expect("parse");
        assert_eq!(
            t,
            Timing {
                events: 10_000_000,
                passes: 12,
                connections: 1_200_000,
                seconds: 0.8
            }
        );
        assert!(parse_timing("").is_err());
        assert!(parse_timing(&LINE.replace("seconds 0.800000", "seconds 0")).is_err());
        assert!(parse_timing(&LINE.replace("passes 12", "passes x")).is_err());
        assert!(parse_timing(&LINE.replace("connections 1200000 ", "")).is_err());
    }

    #[test]
    fn report_and_goal() {
        let t = parse_timing(LINE).expect("parse");
        let slow = Timing { seconds: 4.0, ..t };
        let fast = Timing { seconds: 0.5, ..t };
        // The median of three is the middle one, whatever the order.
        let r = summarize(&[fast, t, slow], 9000.0, 100_000, 0, 11 * 1024 * 1024);
        assert!(r.warnings.is_empty());
        assert_eq!(
            r.lines[0],
            "10000000 events in 0.80 s: 12.50 million events/s (1200000 connections reconstructed, 1.50 million/s) (goal >= 9 million/s): goal met"
        );
        assert_eq!(r.lines[1], "each run, million events/s: 2.50, 12.50, 20.00");
        assert!(r.setup[0].contains("about 833333 events, 11264 KiB"));
        assert!(r.setup[1].contains("3 runs, the median one counts"));
        let r = summarize(&[slow, slow, t], 9000.0, 100_000, 0, 0);
        assert!(r.lines[0].ends_with("goal NOT met"));
        assert_eq!(r.warnings.len(), 1);
        assert_eq!(median(&[slow, t]), Some(t));
        let r = summarize(&[], 9000.0, 0, 0, 0);
        assert_eq!(r.warnings, vec!["no replay run".to_string()]);
    }
}
