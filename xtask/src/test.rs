//! `cargo xtask test`: the whole CI pipeline (what `.ci/run` executes).
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context as _;

use crate::{dist, proc, setup, vmtest};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Steps: setup, cargo fmt --check, clippy -D warnings (all targets, and
herdtrace's library and binary without the test hooks), cargo build --release,
cargo test --workspace --exclude herdtrace-ebpf --release (as root, so BPF
tests run for real), cargo xtask bench --quick (a smoke run of every
benchmark), cargo xtask dist --check (build the .deb, install it, check it,
purge it), then the QEMU kernel tests (cargo xtask vmtest --kernel
5.10,6.1,6.12,7.x --jobs 2 (7.x boots last, alone): herdtrace check and the tracer scenarios under
every backend) unless --no-vm. Every step runs even if an earlier one failed.
The last line is `N passed, N failed` summed over every `test result:` line.

Examples:
  cargo xtask test
  CI=true cargo xtask test --no-vm")]
pub struct TestArgs {
    /// Skip the QEMU kernel tests and the packages only they need.
    #[arg(long)]
    pub no_vm: bool,
}

/// Passed/failed counts summed over libtest summaries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

impl Tally {
    /// Adds the counts of one output line if it is a libtest summary.
    pub fn add_line(&mut self, line: &str) {
        if let Some((passed, failed)) = parse_result_line(line) {
            self.passed += passed;
            self.failed += failed;
        }
    }
}

/// Parses a libtest summary such as
/// `test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s`
/// into (passed, failed). Other lines give `None`.
pub fn parse_result_line(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim_start().strip_prefix("test result:")?;
    let mut passed = None;
    let mut failed = None;
    for segment in rest.split(';') {
        let words: Vec<&str> = segment.split_whitespace().collect();
        // "ok. 3 passed" / "1 failed": a count directly before the keyword.
        for pair in words.windows(2) {
            let Ok(n) = pair[0].parse::<u64>() else {
                continue;
            };
            match pair[1] {
                "passed" => passed = Some(n),
                "failed" => failed = Some(n),
                _ => {}
            }
        }
    }
    Some((passed?, failed?))
}

/// Runs `cmd`, copying its stdout through line by line while tallying test results.
fn run_tallied(cmd: &mut Command, tally: &mut Tally) -> anyhow::Result<bool> {
    println!("==> {}", proc::display(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", proc::display(cmd)))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    let mut out = std::io::stdout();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .context("read cargo test output")?;
        if n == 0 {
            break;
        }
        out.write_all(&buf).context("write to stdout")?;
        out.flush().context("flush stdout")?;
        tally.add_line(&String::from_utf8_lossy(&buf));
    }
    let status = child.wait().context("wait for cargo test")?;
    Ok(status.success())
}

/// One pipeline step: runs it, times it, records its name on failure. An
/// error (a command that cannot start, a failed build inside vmtest) is a
/// failed step, so the remaining steps and the summary still run.
fn step(name: &str, failed: &mut Vec<String>, f: impl FnOnce() -> anyhow::Result<bool>) {
    let start = Instant::now();
    let ok = f().unwrap_or_else(|err| {
        println!("{name}: error: {err:#}");
        false
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "--- {name}: {} ({secs:.1} s)",
        if ok { "ok" } else { "FAILED" }
    );
    if !ok {
        failed.push(name.to_string());
    }
}

pub fn run(args: &TestArgs) -> anyhow::Result<i32> {
    let start = Instant::now();
    if let Ok(ci) = std::env::var("CI") {
        println!("CI={ci} (passed through to the tests)");
    }
    setup::run(&setup::SetupArgs { no_vm: args.no_vm })?;

    // Independent checks all run so one CI round shows every problem.
    let mut failed = Vec::new();
    step("fmt", &mut failed, || {
        Ok(proc::status(&mut proc::cargo(["fmt", "--all", "--", "--check"]))?.success())
    });
    step("clippy", &mut failed, || {
        let mut cmd = proc::cargo([
            "clippy",
            "-p",
            "herdtrace",
            "-p",
            "herdtrace-common",
            "-p",
            "xtask",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        // The tests enable herdtrace's test hooks (its dev-dependency on
        // itself); the library and binary alone are what ships, without them.
        let mut shipped = proc::cargo(["clippy", "-p", "herdtrace", "--", "-D", "warnings"]);
        Ok(proc::status(&mut cmd)?.success() & proc::status(&mut shipped)?.success())
    });
    step("build", &mut failed, || {
        Ok(proc::status(&mut proc::cargo(["build", "--release"]))?.success())
    });
    let mut tally = Tally::default();
    step("test", &mut failed, || {
        // The eBPF crate is a `no_main` bin for the BPF target: its host test
        // harness cannot link (no `main`), so it is left out.
        let mut cmd = proc::cargo([
            "test",
            "--workspace",
            "--exclude",
            "herdtrace-ebpf",
            "--release",
        ]);
        run_tallied(&mut cmd, &mut tally)
    });
    // Benchmarks are not tests; this only checks that every section still
    // runs (a few seconds per section), and the figures are not judged.
    step("bench-smoke", &mut failed, || {
        Ok(crate::bench::run(crate::bench::BenchArgs::quick())? == 0)
    });
    // The package: built, installed with dpkg -i, checked from its installed
    // paths, purged. Before vmtest, which boots the same static binary.
    step("dist", &mut failed, || {
        let (passed, failed) = dist::test_step()?;
        tally.passed += passed;
        tally.failed += failed;
        Ok(failed == 0)
    });
    if !args.no_vm {
        step("vmtest", &mut failed, || {
            let ok = vmtest::run(vmtest::VmtestArgs::ci_kernels())? == 0;
            // Each scenario run inside a VM is a test too.
            let c = scenario_results(&proc::target_dir().join("vmtest"));
            println!(
                "vmtest scenarios: {} passed, {} failed, {} not applicable to their kernel",
                c.passed, c.failed, c.not_applicable
            );
            tally.passed += c.passed;
            tally.failed += c.failed;
            Ok(ok)
        });
    }

    println!("total time {:.1} min", start.elapsed().as_secs_f64() / 60.0);
    if !failed.is_empty() {
        println!("failed steps: {}", failed.join(", "));
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(if failed.is_empty() && tally.failed == 0 {
        0
    } else {
        1
    })
}

/// What `herdtrace selftest` printed in one output.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScenarioCount {
    pub passed: u64,
    pub failed: u64,
    /// `N/A`: a scenario outside its kernel range (e.g. multishot io_uring
    /// accepts before 5.19), neither passed nor failed.
    pub not_applicable: u64,
}

/// Counts the `PASS` / `FAIL` / `SKIP` / `N/A` lines of `herdtrace selftest`.
/// A `SKIP` (a backend the kernel refused) counts as a failure: CI's kernels
/// must run every backend.
pub fn count_scenario_lines(text: &str) -> ScenarioCount {
    text.lines().fold(ScenarioCount::default(), |mut c, line| {
        if line.starts_with("PASS ") {
            c.passed += 1;
        } else if line.starts_with("FAIL ") || line.starts_with("SKIP ") {
            c.failed += 1;
        } else if line.starts_with("N/A ") {
            c.not_applicable += 1;
        }
        c
    })
}

/// Sums the scenario results of every kernel's saved command outputs.
fn scenario_results(root: &std::path::Path) -> ScenarioCount {
    let mut total = ScenarioCount::default();
    let Ok(kernels) = std::fs::read_dir(root) else {
        return total;
    };
    for kernel in kernels.flatten().filter(|e| e.path().is_dir()) {
        let Ok(outputs) = std::fs::read_dir(kernel.path()) else {
            continue;
        };
        for out in outputs.flatten() {
            let name = out.file_name();
            if !name.to_string_lossy().starts_with("out-") {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(out.path()) {
                let c = count_scenario_lines(&text);
                total.passed += c.passed;
                total.failed += c.failed;
                total.not_applicable += c.not_applicable;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_selftest_lines() {
        let text = "PASS epoll-per-worker kprobe: woken/conn 3.98\n\
                    FAIL exclusive fentry: the tracer did not start\n\
                    PASS reuseport kprobe: x\n\
                    SKIP reuseport fentry: unavailable: EPERM\n\
                    PASS agree reuseport tracepoint~kprobe: woken/conn 1.00 vs 1.00 diff 0.0%\n\
                    N/A io-uring-multishot: a multishot io_uring accept needs Linux 5.19+\n\
                    kernel: 6.1\n  PASS indented is not a result\n  N/A nor this\n";
        let want = ScenarioCount {
            passed: 3,
            failed: 2,
            not_applicable: 1,
        };
        assert_eq!(count_scenario_lines(text), want);
        assert_eq!(count_scenario_lines(""), ScenarioCount::default());
    }

    #[test]
    fn parses_ok_and_failed_summaries() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.03s"
            ),
            Some((12, 0))
        );
        assert_eq!(
            parse_result_line(
                "test result: FAILED. 3 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 1.20s"
            ),
            Some((3, 2))
        );
        assert_eq!(
            parse_result_line(
                "  test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 5 filtered out"
            ),
            Some((0, 0))
        );
    }

    #[test]
    fn ignores_lines_that_are_not_summaries() {
        assert_eq!(parse_result_line("test foo::bar ... ok"), None);
        assert_eq!(parse_result_line("running 3 tests"), None);
        assert_eq!(parse_result_line("failures:"), None);
        assert_eq!(parse_result_line("test result: garbled"), None);
        assert_eq!(parse_result_line("test result: ok. 3 passed"), None);
        assert_eq!(
            parse_result_line("my test result: ok. 3 passed; 0 failed"),
            None
        );
        assert_eq!(parse_result_line(""), None);
    }

    #[test]
    fn tally_sums_only_summary_lines() {
        let output = "\
running 2 tests
test a ... ok
test b ... FAILED
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

running 5 tests
test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s
   Doc-tests herdtrace
test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.50s
";
        let mut tally = Tally::default();
        for line in output.lines() {
            tally.add_line(line);
        }
        assert_eq!(
            tally,
            Tally {
                passed: 8,
                failed: 1
            }
        );
    }
}
