//! Project automation: `cargo xtask setup | test | demo | dist | vmtest | bench | soak`.
//!
//! Everything a fresh Debian machine needs to build, test and demo herdtrace is
//! installed from here, so that CI (`.ci/run`) and a new developer need the same
//! two commands.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod dist;
mod herdtrace_src;
mod proc;
mod setup;
mod test;
mod vmtest;

const EXAMPLES: &str = "\
Examples:
  cargo xtask setup                     install what is missing (apt, rust-src, bpf-linker)
  cargo xtask test                      fmt, clippy, release build, all tests (as root)
  cargo xtask demo                      build and run `herdtrace demo`
  cargo xtask dist                      static binary, man pages, completions, unit, .deb in target/dist
  cargo xtask dist --check              ... then install the .deb, check it, purge it (root)
  cargo xtask vmtest --kernel 6.1       boot a Debian 6.1 kernel in QEMU, run `herdtrace check`
  cargo xtask vmtest --run 'herdtrace check --json' --run 'herdtrace --help'
  cargo xtask bench --quick             every benchmark, tiny sizes; report in target/bench/report.md
  cargo xtask soak --quick              the tracer over a growing and shrinking process set";

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "herdtrace project tasks",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what is missing: Debian packages, rust-src, bpf-linker 0.13.0, tracefs mount.
    Setup(setup::SetupArgs),
    /// The CI pipeline: setup, fmt check, clippy, release build, tests, QEMU kernel tests.
    Test(test::TestArgs),
    /// Setup, release build, then `target/release/herdtrace demo [ARGS]`.
    Demo(demo::DemoArgs),
    /// Build what an operator installs: static binary, man pages, completions, unit, .deb.
    Dist(dist::DistArgs),
    /// Boot stock Debian kernels in QEMU (TCG) and run commands inside them.
    Vmtest(vmtest::VmtestArgs),
    /// Benchmarks: print figures and ratios measured in one run (target/bench/report.md).
    Bench(bench::BenchArgs),
    /// Long run over a growing and shrinking traced process set (target/bench/soak.md).
    Soak(bench::soak::SoakArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(a) => setup::run(&a).map(|()| 0),
        Command::Test(a) => test::run(&a),
        Command::Demo(a) => demo::run(a),
        Command::Dist(a) => dist::run(a),
        Command::Vmtest(a) => vmtest::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Soak(a) => bench::soak::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            // One line: the outermost context first, then the causes.
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
