//! Section "Work": the overhead section's ratio as the server spends more CPU
//! time per request (`herdtrace serve --work-us W`). herdtrace's cost is a
//! fixed amount per connection, so its share falls as the work a connection
//! costs grows; the bare server at the maximum loopback rate (the overhead
//! section) is the worst case, and this section shows from which per-request
//! work on the goal holds.
use anyhow::{bail, Context as _};

use super::loadgen;
use super::overhead::{self, Measurement, Tool, GOAL};
use super::report::{SectionReport, Table};
use super::server::Server;
use super::tracer;
use super::Ctx;

pub const TITLE: &str = "Work: overhead as the server's work per request grows";
const MODEL: (&str, u16) = ("epoll-per-worker", 4);
/// Microseconds of busy work per request.
pub const WORK_US: [u32; 3] = [25, 100, 400];

/// One work level's runs, per tool.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkRuns {
    pub work_us: u32,
    pub runs: Vec<(Tool, Vec<Measurement>)>,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<SectionReport>> {
    let backends = tracer::backends(&ctx.bin)?;
    // bpftrace is compared in the overhead section; here only herdtrace moves.
    let (tools, notes) = overhead::tools(&backends, false);
    let tools: Vec<Tool> = tools.into_iter().filter(|t| *t != Tool::Bpftrace).collect();
    let notes: Vec<String> = notes
        .into_iter()
        .filter(|n| !n.starts_with("bpftrace"))
        .collect();
    // Slower connections: a quarter of the overhead section's count keeps
    // each run about as long.
    let n = u64::from((ctx.connections / 4).max(32));
    let mut all = Vec::new();
    for work in WORK_US {
        let arg = work.to_string();
        let mut server = Server::start_with(&ctx.bin, MODEL.0, MODEL.1, &["--work-us", &arg])?;
        loadgen::load(
            &ctx.bin,
            server.port,
            n / 4 + 1,
            None,
            overhead::CONCURRENCY,
        )?;
        let mut runs: Vec<(Tool, Vec<Measurement>)> =
            tools.iter().map(|t| (t.clone(), Vec::new())).collect();
        for round in 0..ctx.rounds as usize {
            for k in 0..runs.len() {
                let i = (k + round) % runs.len();
                let m = overhead::measure(&ctx.bin, &server, &runs[i].0, None, n, None)
                    .with_context(|| format!("--work-us {work}, {}", runs[i].0.label()))?;
                println!(
                    "   work {work:>4} us  {:<24} {:>8.0} conn/s",
                    runs[i].0.label(),
                    m.rate
                );
                runs[i].1.push(m);
            }
        }
        let st = server.stop()?;
        if !st.success() {
            bail!("the --work-us {work} server exited with {st}");
        }
        all.push(WorkRuns {
            work_us: work,
            runs,
        });
    }
    Ok(vec![summarize(&all, &notes, n, ctx.rounds)])
}

/// The report from the measurements (pure, so it is tested).
pub fn summarize(all: &[WorkRuns], notes: &[String], n: u64, rounds: u32) -> SectionReport {
    let mut r = SectionReport::new(TITLE);
    r.setup = vec![
        format!(
            "server: `herdtrace serve --model {} --workers {} --work-us W` (W us of busy work per request)",
            MODEL.0, MODEL.1
        ),
        format!(
            "load: `herdtrace load --connections {n} --concurrency {}` at its maximum rate; \
             {rounds} round(s), tools in rotating order; medians",
            overhead::CONCURRENCY
        ),
    ];
    r.setup.extend(notes.iter().cloned());
    let mut rows = Vec::new();
    for w in all {
        let rates = overhead::rates_and_ratios(&w.runs);
        for ((tool, ms), &(rate, ratio)) in w.runs.iter().zip(&rates) {
            let who = format!("work {} us, {}", w.work_us, tool.label());
            overhead::check_errors(&mut r, &who, ms);
            rows.push(vec![
                w.work_us.to_string(),
                tool.label(),
                rate.map_or("-".into(), |v| format!("{v:.0}")),
                ratio.map_or("-".into(), |v| format!("{v:.3}")),
            ]);
            if let (Tool::Herdtrace(b), Some(x)) = (tool, ratio) {
                let verdict = if x >= GOAL {
                    "goal met"
                } else {
                    "goal NOT met"
                };
                r.lines.push(format!(
                    "work {} us per request ({b}): herdtrace/untraced {x:.3} (goal >= {GOAL}): {verdict}",
                    w.work_us
                ));
            }
        }
        r.lines.extend(overhead::noise_line(
            &format!("work {} us", w.work_us),
            &w.runs,
        ));
    }
    r.table = Some(Table {
        header: ["work us/request", "tool", "conn/s", "ratio"]
            .map(String::from)
            .to_vec(),
        rows,
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rate: f64) -> Measurement {
        Measurement {
            rate,
            completed: 1000,
            ..Measurement::default()
        }
    }

    #[test]
    fn ratios_and_verdicts_per_work_level() {
        let all = [
            WorkRuns {
                work_us: 25,
                runs: vec![
                    (Tool::Untraced, vec![m(10000.0), m(10200.0), m(9900.0)]),
                    (
                        Tool::Herdtrace("tracepoint".into()),
                        vec![m(9400.0), m(9500.0), m(9000.0)],
                    ),
                    (Tool::ProbePoints, vec![m(9700.0)]),
                ],
            },
            WorkRuns {
                work_us: 400,
                runs: vec![
                    (Tool::Untraced, vec![m(4000.0)]),
                    (Tool::Herdtrace("tracepoint".into()), vec![m(3920.0)]),
                ],
            },
        ];
        let r = summarize(&all, &["kprobe: not available".into()], 5000, 3);
        let t = r.table.as_ref().expect("table");
        assert_eq!(t.rows[0], ["25", "untraced", "10000", "1.000"]);
        assert_eq!(t.rows[1], ["25", "herdtrace (tracepoint)", "9400", "0.940"]);
        assert_eq!(t.rows[2], ["25", "probe points only", "9700", "0.970"]);
        assert_eq!(
            t.rows[4],
            ["400", "herdtrace (tracepoint)", "3920", "0.980"]
        );
        assert_eq!(
            r.lines,
            [
                "work 25 us per request (tracepoint): herdtrace/untraced 0.940 (goal >= 0.97): goal NOT met",
                "work 25 us: noise: the untraced rounds ran at 9900-10200 conn/s (coefficient of \
                 variation 1.5%), so a ratio of medians of 3 rounds is good to about +/-0.031 \
                 (two standard errors); a ratio that close to a goal decides nothing",
                "work 400 us per request (tracepoint): herdtrace/untraced 0.980 (goal >= 0.97): goal met",
                "work 400 us: noise: not measured (1 round(s); --rounds 3 or more measure it), so \
                 these ratios say nothing about a goal"
            ]
        );
        assert!(r.setup.iter().any(|l| l == "kprobe: not available"));
        assert!(!r.failed);
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn failed_connections_fail_the_section() {
        let mut bad = m(100.0);
        bad.errors = 2;
        let all = [WorkRuns {
            work_us: 25,
            runs: vec![(Tool::Untraced, vec![bad])],
        }];
        let r = summarize(&all, &[], 32, 1);
        assert!(r.failed);
        assert_eq!(r.warnings, ["work 25 us, untraced: 2 failed connections"]);
    }
}
