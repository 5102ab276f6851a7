//! Command-line interface: argument definitions and dispatch.
use clap::{Parser, Subcommand};

use crate::{check, diagnose, generate, load, logging, replay, serve, trace, verify};

const EXAMPLES: &str = "\
Examples:
  sudo herdtrace --pid $(pgrep -o nginx)      trace an nginx master and its workers
  sudo herdtrace -c lighttpd -d 10 --json     10 s of NDJSON for every lighttpd process
  sudo herdtrace demo                         built-in server + load, three models side by side
  sudo herdtrace check                        what this kernel offers (backends, probe points)
  sudo herdtrace verify                       every server model on this kernel vs the expected herd
  sudo herdtrace diagnose --pid $(pgrep -o nginx)   what the server does, what it costs, what to change
  sudo herdtrace -c nginx --prometheus 127.0.0.1:9435   serve /metrics for Prometheus
  sudo herdtrace -c nginx --prometheus 127.0.0.1:9435 --quiet   exporter only: nothing on stdout
  sudo herdtrace -p 1234 -v                   also show what the eBPF programs report (a full map)
  herdtrace serve --model epoll-per-worker --workers 4 --stats
  herdtrace load --addr 127.0.0.1:8080 --connections 1000
  herdtrace replay trace.htr --json           re-run the reconstruction on a recording";

#[derive(Debug, Parser)]
#[command(
    name = "herdtrace",
    version,
    about = "Per-connection accept thundering-herd tracer (eBPF)",
    long_about = "Shows, per accepted connection, how many tasks the kernel woke, how many \
                  returned EAGAIN from accept and how many woke for nothing.",
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub trace: trace::TraceArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report what the running kernel offers the tool (program types, probe points, backend).
    Check(check::CheckArgs),
    /// Run the built-in epoll test server.
    Serve(serve::ServeArgs),
    /// Run the built-in load generator (connect, request, read to EOF, close).
    Load(load::LoadArgs),
    /// Re-run the reconstruction on a file written by --record.
    Replay(replay::ReplayArgs),
    /// Built-in server + load + tracer: epoll-per-worker, exclusive, reuseport side by side.
    Demo(trace::DemoArgs),
    /// Run every server model on this kernel under tracing; compare with the expected behaviour.
    Verify(verify::VerifyArgs),
    /// Read a running server's accept setup from /proc, trace it, and say what to change.
    Diagnose(diagnose::DiagnoseArgs),
    /// Run the built-in end-to-end scenarios (server + tracer + load) and check the results.
    #[cfg(feature = "test-hooks")]
    #[command(hide = true)]
    Selftest(crate::selftest::SelftestArgs),
    /// Write the man pages or print a shell completion script (for packagers).
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match &cli.command {
        None => logging::init(&cli.trace.log),
        Some(Command::Demo(a)) => logging::init(&a.log),
        Some(Command::Diagnose(a)) => logging::init(&a.log),
        Some(_) => {}
    }
    let result = match cli.command {
        Some(Command::Check(a)) => check::run(a),
        Some(Command::Serve(a)) => serve::run(a),
        Some(Command::Load(a)) => load::run(a),
        Some(Command::Replay(a)) => replay::run(a),
        Some(Command::Demo(a)) => trace::demo(a),
        Some(Command::Verify(a)) => verify::run(a),
        Some(Command::Diagnose(a)) => diagnose::run(a),
        #[cfg(feature = "test-hooks")]
        Some(Command::Selftest(a)) => crate::selftest::run(a),
        Some(Command::Generate(a)) => generate::run(a),
        None => trace::run(cli.trace),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line: the outermost context first, then the causes.
            eprintln!("herdtrace: error: {err:#}");
            1
        }
    }
}
