//! `cargo xtask bench`: speed goals are checked by benchmarks that print
//! figures and ratios measured in one run (not by timed tests), because
//! absolute figures vary between machines and with background load.
//!
//! The run is a list of sections, each measuring one thing; a report is
//! printed and written to `target/bench/report.md`. Layout: `loadgen` (the
//! section herdtrace load vs ab), `server` (the `herdtrace serve` under load),
//! `child` (tools run with a deadline), `parse` (tool output, medians),
//! `machine` (naming the machine), `report` (text and markdown).
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;

use crate::{proc, setup};

mod child;
mod loadgen;
mod machine;
mod parse;
mod report;
mod server;

use report::{Report, SectionReport};

const DEFAULT_ROUNDS: u32 = 5;
const DEFAULT_CONNECTIONS: u32 = 20_000;
const QUICK_ROUNDS: u32 = 1;
const QUICK_CONNECTIONS: u32 = 2_000;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  cargo xtask bench                      5 rounds of 20000 connections per tool
  cargo xtask bench --quick              1 round of 2000 connections (a smoke run)
  cargo xtask bench --rounds 9 --connections 50000

Section \"Load generator vs ApacheBench\": `ab -n N -c 32` and `herdtrace load
--connections N --concurrency 32` alternate against one `herdtrace serve --model
reuseport --workers 4`; the ratio herdtrace/ab of the median rates should be
>= 1.0 (aim 1.5). The report is also written to target/bench/report.md.

Exit status: 0 when every tool ran and no request failed, 1 otherwise. A ratio
below its goal prints a warning but does not change the exit status.")]
pub struct BenchArgs {
    /// Small run: 1 round of 2000 connections (--rounds/--connections still win).
    #[arg(long)]
    pub quick: bool,
    /// Rounds per section; medians are taken over them [default: 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: Option<u32>,
    /// Connections per tool per round; at least the concurrency, 32 [default: 20000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..=10_000_000))]
    pub connections: Option<u32>,
}

/// What every section gets.
pub struct Ctx {
    /// The release `herdtrace` binary.
    pub bin: PathBuf,
    pub rounds: u32,
    pub connections: u32,
}

/// One section of the benchmark.
struct Section {
    title: &'static str,
    run: fn(&Ctx) -> anyhow::Result<SectionReport>,
}

const SECTIONS: &[Section] = &[Section {
    title: loadgen::TITLE,
    run: loadgen::run,
}];

/// Rounds and connections after --quick and the explicit values.
fn sizes(args: &BenchArgs) -> (u32, u32) {
    let (rounds, connections) = if args.quick {
        (QUICK_ROUNDS, QUICK_CONNECTIONS)
    } else {
        (DEFAULT_ROUNDS, DEFAULT_CONNECTIONS)
    };
    (
        args.rounds.unwrap_or(rounds),
        args.connections.unwrap_or(connections),
    )
}

pub fn run(args: BenchArgs) -> anyhow::Result<i32> {
    let start = Instant::now();
    setup::run(&setup::SetupArgs { no_vm: true })?;
    proc::run(&mut proc::cargo(["build", "--release", "-p", "herdtrace"]))?;
    let (rounds, connections) = sizes(&args);
    let ctx = Ctx {
        bin: proc::target_dir().join("release").join("herdtrace"),
        rounds,
        connections,
    };
    let mut sections = Vec::new();
    for s in SECTIONS {
        println!("\n==> section: {}", s.title);
        // A failed section is reported and the others still run.
        sections.push((s.run)(&ctx).unwrap_or_else(|e| SectionReport::failure(s.title, &e)));
    }
    let report = Report {
        machine: machine::Machine::current(),
        sections,
        elapsed_s: start.elapsed().as_secs_f64(),
    };
    println!("\n{}", report.text());
    let dir = proc::target_dir().join("bench");
    let path = dir.join("report.md");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(&path, report.markdown())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("report written to {}", path.display());
    Ok(i32::from(report.failed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        Wrap::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).map(|w| w.args)
    }

    fn sizes_of(argv: &[&str]) -> (u32, u32) {
        sizes(&parse(argv).expect("valid arguments"))
    }

    #[test]
    fn sizes_default_quick_and_explicit() {
        assert_eq!(sizes_of(&[]), (5, 20_000));
        assert_eq!(sizes_of(&["--quick"]), (1, 2_000));
        assert_eq!(sizes_of(&["--rounds", "3"]), (3, 20_000));
        assert_eq!(sizes_of(&["--quick", "--rounds", "3"]), (3, 2_000));
        assert_eq!(sizes_of(&["--quick", "--connections", "500"]), (1, 500));
        assert_eq!(sizes_of(&["--rounds", "2", "--connections", "32"]), (2, 32));
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for argv in [
            &["--rounds", "0"][..],
            &["--connections", "31"],
            &["--connections", "x"],
            &["--rounds", "-1"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?}");
        }
    }
}
