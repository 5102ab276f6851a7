//! `cargo xtask bench`: speed goals are checked by benchmarks that print
//! figures and ratios measured in one run (not by timed tests), because
//! absolute figures vary between machines and with background load.
//!
//! The run is a list of sections, each measuring one thing; a report is
//! printed and written to `target/bench/report.md`. Sections: `loadgen`
//! (herdtrace load vs ab), `overhead` (throughput untraced / herdtrace /
//! bpftrace, and the tools' CPU), `drops` (lost events), `engine`
//! (reconstruction throughput), `memory` (the tracer's RSS), `syscalls` (what
//! every other syscall of the machine pays while herdtrace runs), `profile`
//! (where tracing's CPU goes, by sampling with perf). Helpers: `server`
//! (the `herdtrace serve` under load), `tracer` and `bpftrace` (the measured
//! tools), `bg` (a tool in the background), `child` (tools run with a
//! deadline), `procfs` (CPU and memory of a process), `parse` (tool output,
//! medians), `machine` (naming the machine), `report` (text and markdown).
//! `soak` is `cargo xtask soak`, built from the same parts.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;

use crate::{proc, setup};

mod bg;
mod bpftrace;
mod child;
mod drops;
mod engine;
mod kcost;
mod loadgen;
mod machine;
mod memory;
mod nop_ring;
mod overhead;
mod parse;
mod procfs;
mod profile;
mod report;
mod server;
pub mod soak;
mod syscalls;
mod tracer;
mod wakeups;
mod work;

use report::{Report, SectionReport};

const DEFAULT_ROUNDS: u32 = 5;
const DEFAULT_CONNECTIONS: u32 = 20_000;
const QUICK_ROUNDS: u32 = 1;
const QUICK_CONNECTIONS: u32 = 2_000;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  cargo xtask bench                      every section, full sizes (about 20 minutes)
  cargo xtask bench --quick              every section, tiny sizes (a smoke run, under a minute)
  cargo xtask bench --only overhead --rounds 9
  cargo xtask bench --only memory --memory-secs 120 --memory-rate 5000
  cargo xtask bench --only drops --drop-secs 10 --sweep-secs 2

Sections (--only NAME, repeatable):
  loadgen   `herdtrace load` vs `ab -n N -c 32`; ratio of median rates (goal >= 1.0, aim 1.5)
  overhead  epoll-per-worker and reuseport (4 workers) at the maximum rate: untraced,
            herdtrace (each backend this kernel offers), the tracepoint backend's probe
            points with do-nothing programs, bpftrace's aggregate script; traced/untraced
            ratios (goal >= 0.97) and each tool's CPU per 1000 connections
  work      the overhead ratio with the server busy 25, 100 and 400 us per request
            (`serve --work-us`): herdtrace's cost per connection is fixed, its share falls
  kernel    the time the kernel spends in herdtrace's eBPF programs per connection, per
            program (kernel.bpf_stats_enabled), and its share of the untraced CPU time;
            do-nothing programs on the same probe points give the statistics' floor
  syscalls  ns per getppid of the bench process (not traced) untraced and with each backend
            attached: what every syscall of the machine pays; the tracepoint backend also
            as on 5.11-5.14 (HERDTRACE_MISSING=bpf_task_pt_regs: entry tracepoints too)
  profile   `perf record -a` of a traced max-rate run (4x --connections) with the statistics off: ns per
            connection in the programs (own work, ring buffer, clock, maps, kernel reads),
            in their dispatch, in the syscall slow path, and in the tracer's process
  drops     the maximum rate for --drop-secs with default settings (goal: 0 lost events),
            then ring-buffer sizes x rates for --sweep-secs each: where drops begin
  engine    a recorded max-rate trace replayed in shifted passes: events/s (median of 5 runs, goal >= 9M/s)
  memory    the tracer's RSS at --memory-rate for --memory-secs (goal: flat, <= 50 MB)

The report is also written to target/bench/report.md.
Exit status: 0 when every tool ran and no connection failed, 1 otherwise. A
figure below its goal prints a warning but does not change the exit status.")]
pub struct BenchArgs {
    /// Tiny sizes everywhere (explicit flags still win): a smoke run.
    #[arg(long)]
    pub quick: bool,
    /// Only these sections (repeatable) [default: all].
    #[arg(long, value_enum, value_name = "SECTION")]
    pub only: Vec<SectionName>,
    /// Rounds of the loadgen and overhead sections; medians are taken [default: 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: Option<u32>,
    /// Connections per tool per round; at least the concurrency, 32 [default: 20000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(32..=10_000_000))]
    pub connections: Option<u32>,
    /// Seconds of the long maximum-rate run of the drops section [default: 30].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub drop_secs: Option<f64>,
    /// Seconds per cell of the ring-buffer sweep [default: 5].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub sweep_secs: Option<f64>,
    /// Seconds of the memory run [default: 600].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub memory_secs: Option<f64>,
    /// Connections per second of the memory run [default: 10000].
    #[arg(long, value_name = "RATE", value_parser = parse_secs)]
    pub memory_rate: Option<f64>,
    /// Events the engine section reconstructs [default: 10000000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub engine_events: Option<u64>,
    /// Connections of the recording the engine section replays [default: 50000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub record_connections: Option<u64>,
}

impl BenchArgs {
    /// `--quick` alone: the smoke run CI does.
    pub fn quick() -> Self {
        Self {
            quick: true,
            only: Vec::new(),
            rounds: None,
            connections: None,
            drop_secs: None,
            sweep_secs: None,
            memory_secs: None,
            memory_rate: None,
            engine_events: None,
            record_connections: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SectionName {
    Loadgen,
    Overhead,
    Work,
    Kernel,
    Syscalls,
    Profile,
    Drops,
    Engine,
    Memory,
}

/// A positive, finite number (seconds or a rate).
fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

/// What every section gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Ctx {
    /// The release `herdtrace` binary.
    pub bin: PathBuf,
    pub quick: bool,
    pub rounds: u32,
    pub connections: u32,
    pub drop_secs: f64,
    pub sweep_secs: f64,
    pub memory_secs: f64,
    pub memory_rate: f64,
    pub engine_events: u64,
    pub record_connections: u64,
}

/// One section of the benchmark; some produce two reports.
struct Section {
    name: SectionName,
    title: &'static str,
    run: fn(&Ctx) -> anyhow::Result<Vec<SectionReport>>,
}

const SECTIONS: &[Section] = &[
    Section {
        name: SectionName::Loadgen,
        title: loadgen::TITLE,
        run: |c| loadgen::run(c).map(|r| vec![r]),
    },
    Section {
        name: SectionName::Overhead,
        title: overhead::TITLE,
        run: overhead::run,
    },
    Section {
        name: SectionName::Work,
        title: work::TITLE,
        run: work::run,
    },
    Section {
        name: SectionName::Kernel,
        title: kcost::TITLE,
        run: kcost::run,
    },
    Section {
        name: SectionName::Syscalls,
        title: syscalls::TITLE,
        run: syscalls::run,
    },
    Section {
        name: SectionName::Profile,
        title: profile::TITLE,
        run: profile::run,
    },
    Section {
        name: SectionName::Drops,
        title: drops::TITLE,
        run: drops::run,
    },
    Section {
        name: SectionName::Engine,
        title: engine::TITLE,
        run: engine::run,
    },
    Section {
        name: SectionName::Memory,
        title: memory::TITLE,
        run: memory::run,
    },
];

/// The sizes after --quick and the explicit values.
fn ctx(args: &BenchArgs, bin: PathBuf) -> Ctx {
    let q = args.quick;
    let pick = |v: Option<f64>, quick: f64, full: f64| v.unwrap_or(if q { quick } else { full });
    let (rounds, connections) = sizes(args);
    Ctx {
        bin,
        quick: q,
        rounds,
        connections,
        drop_secs: pick(args.drop_secs, 2.0, 30.0),
        sweep_secs: pick(args.sweep_secs, 1.0, 5.0),
        memory_secs: pick(args.memory_secs, 3.0, 600.0),
        memory_rate: pick(args.memory_rate, 2000.0, 10_000.0),
        engine_events: args
            .engine_events
            .unwrap_or(if q { 1_000_000 } else { 10_000_000 }),
        record_connections: args
            .record_connections
            .unwrap_or(if q { 2_000 } else { 50_000 }),
    }
}

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
    // The kernel-cost sections attach do-nothing programs (`--empty-programs`).
    proc::run(&mut proc::cargo([
        "build",
        "--release",
        "-p",
        "herdtrace",
        "--features",
        crate::dist::TEST_HOOKS,
    ]))?;
    let ctx = ctx(&args, release_bin());
    let mut sections = Vec::new();
    if let Some(check) = kcost::other_tracers_check() {
        for w in &check.warnings {
            println!("WARNING: {w}");
        }
        sections.push(check);
    }
    for s in SECTIONS {
        if !args.only.is_empty() && !args.only.contains(&s.name) {
            continue;
        }
        println!("\n==> section: {}", s.title);
        // A failed section is reported and the others still run.
        sections
            .extend((s.run)(&ctx).unwrap_or_else(|e| vec![SectionReport::failure(s.title, &e)]));
    }
    let report = Report {
        machine: machine::Machine::current(),
        sections,
        elapsed_s: start.elapsed().as_secs_f64(),
    };
    println!("\n{}", report.text());
    let path = write_report("report.md", &report.markdown())?;
    println!("report written to {}", path.display());
    Ok(i32::from(report.failed()))
}

/// The release binary `cargo build --release -p herdtrace` leaves.
fn release_bin() -> PathBuf {
    proc::target_dir().join("release").join("herdtrace")
}

/// Writes `target/bench/NAME`.
fn write_report(name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let dir = proc::target_dir().join("bench");
    let path = dir.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
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
    fn ctx_quick_full_and_explicit() {
        let full = ctx(&parse(&[]).expect("args"), PathBuf::from("b"));
        assert_eq!(
            (
                full.drop_secs,
                full.sweep_secs,
                full.memory_secs,
                full.memory_rate
            ),
            (30.0, 5.0, 600.0, 10_000.0)
        );
        assert_eq!(
            (full.engine_events, full.record_connections),
            (10_000_000, 50_000)
        );
        assert!(!full.quick);
        let quick = ctx(&parse(&["--quick"]).expect("args"), PathBuf::from("b"));
        assert_eq!(ctx(&BenchArgs::quick(), PathBuf::from("b")), quick);
        assert_eq!(
            (quick.drop_secs, quick.memory_secs, quick.memory_rate),
            (2.0, 3.0, 2000.0)
        );
        assert_eq!(quick.engine_events, 1_000_000);
        let mixed = ctx(
            &parse(&[
                "--quick",
                "--memory-secs",
                "60",
                "--engine-events",
                "5",
                "--drop-secs",
                "0.5",
            ])
            .expect("args"),
            PathBuf::from("b"),
        );
        assert_eq!(
            (mixed.memory_secs, mixed.engine_events, mixed.drop_secs),
            (60.0, 5, 0.5)
        );
    }

    #[test]
    fn only_selects_sections() {
        let a = parse(&["--only", "memory", "--only", "drops"]).expect("args");
        assert_eq!(a.only, [SectionName::Memory, SectionName::Drops]);
        assert!(parse(&["--only", "nope"]).is_err());
        let names: Vec<SectionName> = SECTIONS.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                SectionName::Loadgen,
                SectionName::Overhead,
                SectionName::Work,
                SectionName::Kernel,
                SectionName::Syscalls,
                SectionName::Profile,
                SectionName::Drops,
                SectionName::Engine,
                SectionName::Memory
            ]
        );
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for argv in [
            &["--rounds", "0"][..],
            &["--connections", "31"],
            &["--connections", "x"],
            &["--rounds", "-1"],
            &["--memory-secs", "0"],
            &["--drop-secs", "nan"],
            &["--memory-rate", "-5"],
            &["--engine-events", "0"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?}");
        }
    }
}
