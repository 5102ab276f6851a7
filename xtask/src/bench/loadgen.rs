//! Section: `herdtrace load` against ApacheBench (`ab`), the reference load
//! generator, on the same `herdtrace serve` in alternating rounds.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

use super::parse::{self, AbRun, LoadRun};
use super::report::{SectionReport, Table};
use super::server::Server;
use super::{child, Ctx};
use crate::proc;

pub const TITLE: &str = "Load generator vs ApacheBench";
/// `ab -n 20000 -c 32` is the reference run from the issue.
const CONCURRENCY: u32 = 32;
const MODEL: &str = "reuseport";
const WORKERS: u16 = 4;
/// herdtrace/ab of the median rates: GOAL is required, AIM is what we work towards.
const GOAL: f64 = 1.0;
const AIM: f64 = 1.5;

/// One tool's result in one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// The tool's own figure: ab's requests/s, herdtrace's finished connections/s.
    pub rate: f64,
    /// Failed, non-2xx and never-finished requests.
    pub errors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Round {
    pub ab: Measured,
    pub load: Measured,
}

pub fn ab_measured(r: &AbRun, requested: u64) -> Measured {
    Measured {
        rate: r.requests_per_s,
        errors: r.failed + r.non_2xx + requested.saturating_sub(r.complete),
    }
}

pub fn load_measured(r: &LoadRun, requested: u64) -> Measured {
    Measured {
        rate: r.rate_per_s,
        errors: r.errors + r.non_2xx + requested.saturating_sub(r.attempted),
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<SectionReport> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let ab = proc::which_in("ab", &path).context(
        "`ab` not found on PATH (Debian package apache2-utils; `cargo xtask setup` installs it)",
    )?;
    let mut server = Server::start(&ctx.bin, MODEL, WORKERS)?;
    let n = u64::from(ctx.connections);
    let mut rounds = Vec::new();
    for i in 0..ctx.rounds {
        println!("-- round {}/{}", i + 1, ctx.rounds);
        // Alternating which tool goes first keeps warm-up or drift from favouring one.
        let (ab_run, load_run) = if i % 2 == 0 {
            let a = run_ab(&ab, server.port, n)?;
            (a, run_load(&ctx.bin, server.port, n)?)
        } else {
            let l = run_load(&ctx.bin, server.port, n)?;
            (run_ab(&ab, server.port, n)?, l)
        };
        if !server.is_running() {
            bail!("the server exited during round {}", i + 1);
        }
        let round = Round {
            ab: ab_measured(&ab_run, n),
            load: load_measured(&load_run, n),
        };
        println!(
            "   ab {:.0} req/s ({} errors), herdtrace {:.0} conn/s ({} errors)",
            round.ab.rate, round.ab.errors, round.load.rate, round.load.errors
        );
        rounds.push(round);
    }
    let status = server.stop()?;
    let mut report = summarize(&rounds, ctx.connections);
    if !status.success() {
        report.failed = true;
        report
            .warnings
            .push(format!("the server exited with {status} after SIGTERM"));
    }
    Ok(report)
}

/// The longest a tool may take: generous, it only catches a hang.
fn tool_timeout(connections: u64) -> Duration {
    Duration::from_secs(60 + connections / 200)
}

fn run_ab(ab: &Path, port: u16, n: u64) -> anyhow::Result<AbRun> {
    let mut cmd = Command::new(ab);
    cmd.args(["-q", "-n", &n.to_string(), "-c", &CONCURRENCY.to_string()])
        .arg(format!("http://127.0.0.1:{port}/"));
    let f = child::run(&mut cmd, tool_timeout(n))?;
    if !f.status.success() {
        bail!("`ab` failed ({}): {}", f.status, f.stderr.trim());
    }
    parse::parse_ab(&f.stdout).map_err(|e| anyhow!(e))
}

fn run_load(bin: &Path, port: u16, n: u64) -> anyhow::Result<LoadRun> {
    load(bin, port, n, None, CONCURRENCY)
}

/// `herdtrace load` of `n` connections, as fast as possible or at `rate`/s.
pub fn load(
    bin: &Path,
    port: u16,
    n: u64,
    rate: Option<f64>,
    concurrency: u32,
) -> anyhow::Result<LoadRun> {
    load_wrapped(&[], bin, port, n, rate, concurrency)
}

/// As [`load`], run by `wrapper` (a command line ending in `--`, such as
/// `perf record ... --`); nothing when empty.
pub fn load_wrapped(
    wrapper: &[String],
    bin: &Path,
    port: u16,
    n: u64,
    rate: Option<f64>,
    concurrency: u32,
) -> anyhow::Result<LoadRun> {
    let mut cmd = match wrapper.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(["load", "--addr", &format!("127.0.0.1:{port}")])
        .args(["--connections", &n.to_string()])
        .args(["--concurrency", &concurrency.to_string(), "--json"]);
    if let Some(r) = rate {
        cmd.args(["--rate", &format!("{r:.0}")]);
    }
    // At a set rate the run lasts n/rate seconds; the margin only catches a hang.
    let timeout = tool_timeout(n)
        + rate.map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64(n as f64 / r.max(1.0))
        });
    let f = child::run(&mut cmd, timeout)?;
    let parsed = parse::parse_load_json(&f.stdout);
    match parsed {
        // Exit status 1 with a report means "some connections failed": counted, not fatal.
        Ok(r) if f.status.success() || r.errors > 0 => Ok(r),
        Ok(_) => bail!(
            "`herdtrace load` failed ({}): {}",
            f.status,
            f.stderr.trim()
        ),
        Err(e) => bail!(
            "`herdtrace load` ({}): {e}; stderr: {}",
            f.status,
            f.stderr.trim()
        ),
    }
}

/// Builds the section report from measured rounds (pure, so it is tested).
pub fn summarize(rounds: &[Round], connections: u32) -> SectionReport {
    let mut r = SectionReport::new(TITLE);
    r.setup = vec![
        format!("server: `herdtrace serve --model {MODEL} --workers {WORKERS}` on 127.0.0.1"),
        format!("ab: `ab -q -n {connections} -c {CONCURRENCY} http://127.0.0.1:PORT/`"),
        format!(
            "herdtrace: `herdtrace load --addr 127.0.0.1:PORT --connections {connections} \
             --concurrency {CONCURRENCY} --json`"
        ),
        format!(
            "{} round(s), alternating which tool runs first; each rate is the tool's own \
             (ab: requests per second; herdtrace: finished connections per second)",
            rounds.len()
        ),
    ];
    let ratio = |a: f64, l: f64| {
        if a > 0.0 {
            format!("{:.2}", l / a)
        } else {
            "-".into()
        }
    };
    let mut rows: Vec<Vec<String>> = rounds
        .iter()
        .enumerate()
        .map(|(i, x)| {
            vec![
                (i + 1).to_string(),
                format!("{:.0}", x.ab.rate),
                x.ab.errors.to_string(),
                format!("{:.0}", x.load.rate),
                x.load.errors.to_string(),
                ratio(x.ab.rate, x.load.rate),
            ]
        })
        .collect();
    let ab_rates: Vec<f64> = rounds.iter().map(|x| x.ab.rate).collect();
    let load_rates: Vec<f64> = rounds.iter().map(|x| x.load.rate).collect();
    let ab_errors: u64 = rounds.iter().map(|x| x.ab.errors).sum();
    let load_errors: u64 = rounds.iter().map(|x| x.load.errors).sum();
    let (Some(ab_med), Some(load_med)) = (parse::median(&ab_rates), parse::median(&load_rates))
    else {
        r.failed = true;
        r.warnings.push("no round was measured".into());
        return r;
    };
    rows.push(vec![
        "median".into(),
        format!("{ab_med:.0}"),
        String::new(),
        format!("{load_med:.0}"),
        String::new(),
        ratio(ab_med, load_med),
    ]);
    r.table = Some(Table {
        header: [
            "round",
            "ab req/s",
            "ab errors",
            "herdtrace conn/s",
            "herdtrace errors",
            "herdtrace/ab",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    r.lines.push(format!(
        "errors over all rounds: ab {ab_errors}, herdtrace {load_errors}"
    ));
    if ab_med > 0.0 {
        let q = load_med / ab_med;
        let verdict = if q >= AIM {
            "goal met, aim reached"
        } else if q >= GOAL {
            "goal met, aim not reached"
        } else {
            "goal NOT met"
        };
        r.lines.push(format!(
            "ratio herdtrace/ab of the medians: {q:.2} (goal >= {GOAL:.1} required, aim {AIM:.1}): {verdict}"
        ));
        if q < GOAL {
            r.warnings.push(format!(
                "ratio below 1.0 ({q:.2}): herdtrace load was slower than ab in this run"
            ));
        }
    } else {
        r.warnings.push("ab measured a rate of 0: no ratio".into());
    }
    if ab_errors + load_errors > 0 {
        r.failed = true;
        r.warnings.push(format!(
            "errors occurred: ab {ab_errors}, herdtrace {load_errors}"
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(ab: f64, load: f64) -> Round {
        Round {
            ab: Measured {
                rate: ab,
                errors: 0,
            },
            load: Measured {
                rate: load,
                errors: 0,
            },
        }
    }

    fn cell(r: &SectionReport, row: usize, col: usize) -> String {
        r.table.as_ref().expect("table").rows[row][col].clone()
    }

    #[test]
    fn measured_counts_failures_non_2xx_and_missing() {
        let ab = AbRun {
            complete: 1990,
            failed: 3,
            non_2xx: 2,
            requests_per_s: 100.5,
        };
        assert_eq!(
            ab_measured(&ab, 2000),
            Measured {
                rate: 100.5,
                errors: 15
            }
        );
        let load = LoadRun {
            attempted: 1995,
            errors: 4,
            non_2xx: 1,
            rate_per_s: 7.0,
        };
        assert_eq!(
            load_measured(&load, 2000),
            Measured {
                rate: 7.0,
                errors: 10
            }
        );
        let clean = LoadRun {
            attempted: 2000,
            errors: 0,
            non_2xx: 0,
            rate_per_s: 7.0,
        };
        assert_eq!(load_measured(&clean, 2000).errors, 0);
    }

    #[test]
    fn medians_ratio_and_table() {
        let r = summarize(
            &[
                round(10000.0, 12000.0),
                round(11000.0, 30000.0),
                round(9000.0, 13000.0),
            ],
            20000,
        );
        assert!(!r.failed);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let t = r.table.as_ref().expect("table");
        assert_eq!(t.rows.len(), 4, "3 rounds + median");
        assert_eq!(t.rows[1], ["2", "11000", "0", "30000", "0", "2.73"]);
        assert_eq!(t.rows[3], ["median", "10000", "", "13000", "", "1.30"]);
        assert!(r.lines.iter().any(|l| l
            == "ratio herdtrace/ab of the medians: 1.30 (goal >= 1.0 required, aim 1.5): goal met, aim not reached"));
        assert!(r.setup.iter().any(|l| l.contains("-n 20000 -c 32")));
        assert!(r.setup.iter().any(|l| l.starts_with("3 round(s)")));
    }

    #[test]
    fn verdicts_at_the_thresholds() {
        let r = summarize(&[round(1000.0, 1500.0)], 2000);
        assert!(r
            .lines
            .iter()
            .any(|l| l.ends_with("1.50 (goal >= 1.0 required, aim 1.5): goal met, aim reached")));
        let r = summarize(&[round(1000.0, 1000.0)], 2000);
        assert!(r
            .lines
            .iter()
            .any(|l| l.ends_with("goal met, aim not reached")));
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn ratio_below_one_warns_but_does_not_fail() {
        let r = summarize(&[round(1000.0, 800.0), round(1000.0, 900.0)], 2000);
        assert!(!r.failed, "ratios are tracked, not asserted");
        assert_eq!(cell(&r, 2, 5), "0.85");
        assert!(r.lines.iter().any(|l| l.ends_with("goal NOT met")));
        assert_eq!(
            r.warnings,
            ["ratio below 1.0 (0.85): herdtrace load was slower than ab in this run"]
        );
    }

    #[test]
    fn errors_fail_the_section() {
        let mut x = round(1000.0, 2000.0);
        x.ab.errors = 2;
        let mut y = round(1000.0, 2000.0);
        y.load.errors = 5;
        let r = summarize(&[x, y], 2000);
        assert!(r.failed);
        assert_eq!(cell(&r, 0, 2), "2");
        assert_eq!(cell(&r, 1, 4), "5");
        assert!(r
            .lines
            .contains(&"errors over all rounds: ab 2, herdtrace 5".to_string()));
        assert_eq!(r.warnings, ["errors occurred: ab 2, herdtrace 5"]);
    }

    #[test]
    fn zero_ab_rate_has_no_ratio_and_no_rounds_fail() {
        let r = summarize(&[round(0.0, 10.0)], 2000);
        assert_eq!(cell(&r, 0, 5), "-");
        assert_eq!(r.warnings, ["ab measured a rate of 0: no ratio"]);
        let r = summarize(&[], 2000);
        assert!(r.failed);
        assert!(r.table.is_none());
    }

    #[test]
    fn timeout_grows_with_connections() {
        assert_eq!(tool_timeout(2000), Duration::from_secs(70));
        assert_eq!(tool_timeout(20000), Duration::from_secs(160));
    }
}
