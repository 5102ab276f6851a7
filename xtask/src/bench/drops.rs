//! Section "Lost events": the tracer at the maximum rate for a long run with
//! default settings (the goal: zero ring-buffer drops), then a sweep of
//! ring-buffer sizes against rates to show where drops begin and what a
//! larger `--ringbuf-size` buys.
use anyhow::{bail, Context as _};

use super::loadgen;
use super::overhead::{self, Measurement};
use super::report::{SectionReport, Table};
use super::server::Server;
use super::tracer::{self, Tracer, TracerSpec};
use super::Ctx;

pub const TITLE: &str = "Lost events: ring-buffer drops at high connection rates";
/// The heaviest stream: every connection wakes every worker.
const MODEL: &str = "epoll-per-worker";
const WORKERS: u16 = 4;
const CONCURRENCY: u32 = 32;
/// Connections of the untraced run that finds the maximum rate.
const CALIBRATION: u64 = 20_000;
/// Sizes swept; the default (4M) among them.
pub const SIZES: [&str; 6] = ["16K", "64K", "256K", "1M", "4M", "16M"];
pub const QUICK_SIZES: [&str; 2] = ["16K", "4M"];
/// Shares of the maximum rate swept (1.0 = no --rate).
pub const SHARES: [f64; 4] = [0.25, 0.5, 0.75, 1.0];
pub const QUICK_SHARES: [f64; 2] = [0.5, 1.0];

/// One traced run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub m: Measurement,
    /// The rate asked for (None = as fast as possible).
    pub target: Option<f64>,
    pub seconds: f64,
}

fn traced(
    ctx: &Ctx,
    server: &Server,
    ringbuf: &str,
    max_rate: f64,
    share: f64,
    secs: f64,
) -> anyhow::Result<Run> {
    let target = (share < 1.0).then_some(max_rate * share);
    let n = ((target.unwrap_or(max_rate) * secs) as u64).max(100);
    let mut spec = TracerSpec::new("tracepoint");
    spec.ringbuf = ringbuf;
    let t = Tracer::start(&ctx.bin, server.pid(), &spec)?;
    let l = loadgen::load(&ctx.bin, server.port, n, target, CONCURRENCY)?;
    std::thread::sleep(overhead::SETTLE);
    let cpu = t.cpu_since_ready();
    let f = t.stop()?;
    let s = tracer::parse_text_summary(&f.stdout).map_err(anyhow::Error::msg)?;
    let m = Measurement {
        tool_cpu_s: Some(cpu),
        seen: Some(s.connections),
        lost: Some(s.lost_events),
        ..overhead::from_load(&l)
    };
    println!(
        "   ringbuf {ringbuf:>4} target {:>8} -> {:.0} conn/s, lost {}",
        target.map_or("max".into(), |t| format!("{t:.0}")),
        m.rate,
        s.lost_events
    );
    Ok(Run {
        m,
        target,
        seconds: secs,
    })
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<SectionReport>> {
    let mut server = Server::start(&ctx.bin, MODEL, WORKERS)?;
    let calib = loadgen::load(
        &ctx.bin,
        server.port,
        CALIBRATION.min(u64::from(ctx.connections) * 4),
        None,
        CONCURRENCY,
    )?;
    let max_rate = calib.rate_per_s;
    if max_rate <= 0.0 {
        bail!("the calibration run measured no rate");
    }
    println!("-- maximum untraced rate {max_rate:.0} conn/s; long run, default settings");
    let long = traced(
        ctx,
        &server,
        tracer::DEFAULT_RINGBUF,
        max_rate,
        1.0,
        ctx.drop_secs,
    )
    .context("long run")?;
    let (sizes, shares): (&[&str], &[f64]) = if ctx.quick {
        (&QUICK_SIZES, &QUICK_SHARES)
    } else {
        (&SIZES, &SHARES)
    };
    let mut grid = Vec::new();
    for &size in sizes {
        let mut row = Vec::new();
        for &share in shares {
            row.push(traced(ctx, &server, size, max_rate, share, ctx.sweep_secs)?);
        }
        grid.push((size.to_string(), row));
    }
    let st = server.stop()?;
    if !st.success() {
        bail!("the server exited with {st}");
    }
    Ok(vec![summarize(max_rate, &long, &grid, shares)])
}

/// The lowest measured rate with drops in a row, or None.
pub fn onset(row: &[Run]) -> Option<f64> {
    row.iter()
        .filter(|r| r.m.lost.unwrap_or(0) > 0)
        .map(|r| r.m.rate)
        .min_by(f64::total_cmp)
}

pub fn summarize(
    max_rate: f64,
    long: &Run,
    grid: &[(String, Vec<Run>)],
    shares: &[f64],
) -> SectionReport {
    let mut r = SectionReport::new(TITLE);
    r.setup = vec![
        format!("server: `herdtrace serve --model {MODEL} --workers {WORKERS}` (every connection wakes every worker: the most events per connection)"),
        format!("maximum untraced rate: {max_rate:.0} conn/s (`herdtrace load --concurrency {CONCURRENCY}`)"),
        format!("tracer: `herdtrace --pid SERVER --backend tracepoint --ringbuf-size SIZE`, text output"),
    ];
    let lost = long.m.lost.unwrap_or(0);
    r.lines.push(format!(
        "default settings (--ringbuf-size {}), maximum rate for {:.0} s: {:.0} conn/s traced, \
         {} connections seen of {} completed, {lost} events lost: {}",
        tracer::DEFAULT_RINGBUF,
        long.seconds,
        long.m.rate,
        long.m.seen.unwrap_or(0),
        long.m.completed,
        if lost == 0 {
            "goal met"
        } else {
            "goal NOT met"
        }
    ));
    if lost > 0 {
        r.warnings.push(format!(
            "{lost} events lost at the maximum rate with default settings (goal: 0)"
        ));
    }
    let mut header = vec!["--ringbuf-size".to_string()];
    header.extend(shares.iter().map(|&s| {
        if s >= 1.0 {
            "lost @ max".to_string()
        } else {
            format!("lost @ {:.0}%", s * 100.0)
        }
    }));
    header.push("drops begin at".into());
    let rows = grid
        .iter()
        .map(|(size, runs)| {
            let mut row = vec![size.clone()];
            row.extend(runs.iter().map(|x| {
                format!(
                    "{} ({:.0}/s)",
                    x.m.lost.map_or("-".into(), |l| l.to_string()),
                    x.m.rate
                )
            }));
            row.push(onset(runs).map_or_else(
                || {
                    format!(
                        "none up to {:.0}/s",
                        runs.iter().map(|x| x.m.rate).fold(0.0, f64::max)
                    )
                },
                |o| format!("{o:.0}/s"),
            ));
            row
        })
        .collect();
    r.table = Some(Table { header, rows });
    if let Some(secs) = grid
        .first()
        .and_then(|(_, runs)| runs.first())
        .map(|x| x.seconds)
    {
        r.lines.push(format!(
            "sweep: {secs:.0} s per cell; each cell is `lost events (achieved conn/s)`; \
             rates are shares of the untraced maximum"
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64, lost: u64) -> Run {
        Run {
            m: Measurement {
                rate,
                completed: 1000,
                seen: Some(1000),
                lost: Some(lost),
                ..Measurement::default()
            },
            target: None,
            seconds: 5.0,
        }
    }

    #[test]
    fn onset_is_the_lowest_rate_with_drops() {
        assert_eq!(
            onset(&[run(100.0, 0), run(300.0, 5), run(200.0, 1)]),
            Some(200.0)
        );
        assert_eq!(onset(&[run(100.0, 0)]), None);
        assert_eq!(onset(&[]), None);
    }

    #[test]
    fn report_lines_and_grid() {
        let mut long = run(9000.0, 0);
        long.seconds = 30.0;
        let grid = vec![
            ("16K".to_string(), vec![run(4500.0, 0), run(9000.0, 12)]),
            ("4M".to_string(), vec![run(4500.0, 0), run(8900.0, 0)]),
        ];
        let r = summarize(9500.0, &long, &grid, &[0.5, 1.0]);
        assert!(r.warnings.is_empty());
        assert!(
            r.lines[0].ends_with("0 events lost: goal met"),
            "{}",
            r.lines[0]
        );
        assert!(r.lines[0].contains("maximum rate for 30 s: 9000 conn/s"));
        let t = r.table.as_ref().expect("table");
        assert_eq!(
            t.header,
            [
                "--ringbuf-size",
                "lost @ 50%",
                "lost @ max",
                "drops begin at"
            ]
        );
        assert_eq!(t.rows[0], ["16K", "0 (4500/s)", "12 (9000/s)", "9000/s"]);
        assert_eq!(t.rows[1][3], "none up to 8900/s");
        assert!(r.lines[1].starts_with("sweep: 5 s per cell"));

        let lossy = run(9000.0, 7);
        let r = summarize(9500.0, &lossy, &grid, &[0.5, 1.0]);
        assert!(r.lines[0].ends_with("7 events lost: goal NOT met"));
        assert_eq!(r.warnings.len(), 1);
    }
}
