//! `herdtrace verify`: every server model (and the edge-triggered and
//! accept-batch variants) run on this kernel under tracing, compared with
//! the behaviour docs/herd-mechanics.md predicts; `verify --compare`: two
//! such runs (two kernels, or one before and after a patch) row by row.
//!
//! `expect` (the expectations and their sources), `row` (figures, checks,
//! verdict), `render` (table, JSON) and `compare` are pure; this file runs
//! the scenarios through `crate::scenario` and reads the compared files.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::ValueEnum as _;

use crate::{backend::BackendRequest, kernel, scenario};

pub mod compare;
pub mod expect;
pub mod render;
pub mod row;

use row::{Row, Setup};

/// `--rate`'s default (see there).
pub const DEFAULT_RATE: u32 = 20;

const EXAMPLES: &str = "\
Examples:
  sudo herdtrace verify
  sudo herdtrace verify --json > verify-$(uname -r).ndjson
  sudo herdtrace verify --models exclusive,blocking-accept --connections 500
  sudo herdtrace verify --backend tracepoint --workers 8 --rate 100
  sudo herdtrace verify --rate 200          # real hardware: a third of the time
  herdtrace verify --compare verify-6.1.json verify-6.12.json

Rows: epoll-per-worker (+et: --edge-triggered, +batch100: --accept-batch 100),
shared-epoll (+et), exclusive, reuseport, blocking-accept, io-uring, and tokio,
tokio-reuseport (a multi-threaded tokio runtime, as a typical Rust async server).
A row that does not pass is run again (--attempts); the table says so.
A departure while accepts lagged more than the gap between arrivals is not
blamed on the kernel (the workers were not all asleep): it is INVALID.
Exit status: 0 every row as expected; 1 the kernel departs from an expectation
in some row; 2 no departure, but some row could not be measured cleanly (or
the backend asked for is not available: one error line).

--compare A B reads two `verify --json` outputs and prints, row by row, what
changed beyond the runs' own spread. Each run carries its spread: the
standard deviation of every per-connection count (woken, wasted = EAGAIN
losers + spurious, winner EAGAIN) over its conn records, and the number of
pairs behind the same-worker share. A mean's difference is tested against
sqrt(sd_A²/n_A + sd_B²/n_B); the share's with the Agresti-Caffo interval for
two proportions ((x+1)/(n+2) in each run). A figure changed when the
difference exceeds --z standard errors (default 3.3: with ~40 figures per
comparison, about a 4% chance of one false alarm between two runs of the
same kernel). The split of wasted wakeups into EAGAIN and spurious is timing,
not kernel, and is not tested. Rows are matched by name; both runs must use
the same --workers; a row in B only (one added since A was saved) is
listed but does not change the exit status.
Exit status of --compare: 0 no verdict changed; 1 a row went from pass to
FAIL or back; 2 an input is unreadable or the runs are incompatible (one
error line); 3 no verdict changed, but a row of A is not measured cleanly in
either run or missing from B.";

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct VerifyArgs {
    /// NDJSON: one object per row.
    #[arg(long)]
    pub json: bool,
    /// Workers per server.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Connections per model (at least 2: the same-worker share needs pairs).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub connections: u32,
    /// Connections per second: slow enough that every worker is asleep
    /// again before the next connection arrives, which every expectation
    /// assumes, even in a VM under software emulation (QEMU TCG, Debian 6.1:
    /// 200/s broke the herd rows, 50/s left 3.64 of 4 workers woken, 20/s
    /// 3.89). On real hardware 200/s finishes in a third of the time (the
    /// 2-core development host passed at 1000/s and broke every row at 2000/s).
    #[arg(long, default_value_t = DEFAULT_RATE, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub rate: u32,
    /// Probe set of the tracer.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendRequest,
    /// Runs per row at most: a row that does not pass is run again (a
    /// passing retry is reported with the earlier attempts).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=5))]
    pub attempts: u32,
    /// Only these rows, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_name = "ROW,...")]
    pub models: Vec<String>,
    /// Run nothing: compare two `verify --json` outputs row by row (see below).
    #[arg(long, num_args = 2, value_names = ["A.json", "B.json"],
          conflicts_with_all = ["workers", "connections", "rate", "backend", "attempts", "models"])]
    pub compare: Vec<PathBuf>,
    /// With --compare: a figure changed when A and B differ by more than
    /// this many standard errors.
    #[arg(long, default_value_t = compare::DEFAULT_Z, requires = "compare")]
    pub z: f64,
}

/// Runs `plan` until it passes, at most `attempts` times; the last row,
/// carrying the earlier attempts' summaries.
fn run_plan(exe: &Path, plan: &expect::Plan, setup: &Setup, attempts: u32) -> Row {
    let sc = row::scenario_for(plan, setup);
    let mut earlier: Vec<Row> = Vec::new();
    loop {
        // Progress on stderr: a full run takes about a minute.
        eprintln!("herdtrace verify: {} ...", plan.name);
        let run = scenario::run_with(exe, &setup.backend, &sc, &[]).map_err(|e| format!("{e:#}"));
        let row =
            row::build(plan, setup, run.as_ref().map_err(Clone::clone)).after_attempts(&earlier);
        eprintln!("herdtrace verify: {} {}", plan.name, row.summary());
        if row.verdict == row::Verdict::Pass || row.attempts >= attempts {
            return row;
        }
        earlier.push(row);
    }
}

/// `--compare`: the report on stdout and its exit status; an unreadable or
/// incompatible input is one error line and [`compare::EXIT_BAD_INPUT`].
fn run_compare(files: &[PathBuf], z: f64, json: bool) -> i32 {
    let result = (|| -> Result<(String, i32)> {
        let mut runs = Vec::new();
        for path in files {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
            runs.push(compare::parse(&name, &text)?);
        }
        let [a, b] = runs.as_slice() else {
            bail!("--compare takes two files");
        };
        let c = compare::compare(a, b, z)?;
        let text = if json {
            compare::render_json(&c)?
        } else {
            compare::render(&c)
        };
        Ok((text, c.exit_code))
    })();
    match result {
        Ok((text, code)) => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => code,
                Err(e) => {
                    eprintln!("herdtrace: error: verify --compare: writing the report: {e}");
                    compare::EXIT_BAD_INPUT
                }
            }
        }
        Err(e) => {
            eprintln!("herdtrace: error: verify --compare: {e:#}");
            compare::EXIT_BAD_INPUT
        }
    }
}

/// Why the backend asked for cannot run here (checked before any row, so
/// an unavailable backend is one line, not an ERROR row per model).
fn backend_refusal(req: BackendRequest) -> Option<String> {
    crate::backend::choose(req, &crate::check::gather_facts()).err()
}

pub fn run(args: VerifyArgs) -> Result<i32> {
    if !args.compare.is_empty() {
        return Ok(run_compare(&args.compare, args.z, args.json));
    }
    let release = kernel::release().ok();
    let version = release.as_deref().and_then(kernel::major_minor);
    let plans = expect::select(args.workers, version, &args.models).map_err(|e| anyhow!(e))?;
    if let Some(problem) = kernel::privilege_problem() {
        bail!("verify traces the built-in server: {problem}");
    }
    if let Some(reason) = backend_refusal(args.backend) {
        // Exit 2 like a row that could not run: nothing was measured.
        eprintln!("herdtrace: error: verify: {reason}");
        return Ok(2);
    }
    let exe: PathBuf = std::env::current_exe().context("locating the herdtrace binary")?;
    let setup = Setup {
        kernel: release.unwrap_or_else(|| "unknown".to_string()),
        backend: args
            .backend
            .to_possible_value()
            .map_or_else(|| "auto".to_string(), |v| v.get_name().to_string()),
        workers: args.workers,
        connections: args.connections,
        rate: args.rate,
    };
    let mut rows: Vec<Row> = Vec::new();
    for plan in &plans {
        rows.push(run_plan(&exe, plan, &setup, args.attempts));
    }
    let text = if args.json {
        render::json_lines(&rows)?
    } else {
        render::table(&setup, &rows)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the verify output")?;
    Ok(row::exit_code(&rows))
}
