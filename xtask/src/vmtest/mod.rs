//! `cargo xtask vmtest`: boot stock Debian kernels in QEMU and run herdtrace
//! inside them (the host kernel has no kprobes and refuses fentry).
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::{dist, proc, setup};

mod apt;
mod console;
mod debver;
pub(crate) mod initramfs;
mod kernel;
mod qemu;
mod report;

use console::Verdict;
use kernel::{Series, SERIES};
use report::SeriesResult;

const BUSYBOX: &str = "/bin/busybox";
/// What a VM runs by default: what the kernel offers, then the tracer
/// scenarios (the same ones as the host tests, `herdtrace::scenario`) under
/// the backends asked for (`working`: every backend the kernel supports,
/// the others reported as SKIP), then once more with those backends attached
/// together, checking that they agree. The rate is lower than on the host
/// because software emulation is ~20x slower and the scenarios need idle workers.
pub fn default_commands(backends: &str) -> Vec<String> {
    vec![
        "herdtrace check".to_string(),
        format!("herdtrace selftest --backend {backends} --agree --rate 50 --connections 200"),
        // The same connections under concurrent load, compared one by one
        // (the woken bounds assume idle workers and are not checked here).
        format!(
            "herdtrace selftest --backend {backends} --agree --agree-only --concurrency 8 \
             --rate 100 --connections 200"
        ),
    ]
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Kernels are the newest Debian cloud images of each series, fetched once into
target/vmtest/kernels/<series>/ (VERSION records the exact package). Each command
runs in the VM as a shell script (busybox sh) with the arguments after `--` as \"$@\";
its output goes to target/vmtest/<series>/out-<n>.txt, the console to
target/vmtest/<series>.log, the summary to target/vmtest/report.md. Exit code 0
only if every kernel booted and every command exited 0.

Examples:
  cargo xtask vmtest --kernel 6.1
  cargo xtask vmtest --kernel 6.1,6.12 --run 'herdtrace check --json'
  cargo xtask vmtest --kernel all --run 'herdtrace --help' --run 'herdtrace check'
  cargo xtask vmtest --run 'herdtrace \"$@\"' -- check --json")]
pub struct VmtestArgs {
    /// Kernel series to boot (repeat or comma-separate).
    #[arg(long = "kernel", value_delimiter = ',', default_value = "all",
          value_parser = ["5.10", "6.1", "6.12", "7.x", "all"])]
    pub kernels: Vec<String>,
    /// Shell command to run inside the VM, in order (repeatable) [default: `herdtrace check`, then the tracer scenarios under every backend].
    #[arg(long = "run", value_name = "CMD")]
    pub run: Vec<String>,
    /// Backends for the default scenarios, comma-separated (tracepoint, kprobe,
    /// fentry), or `working`: every backend `check` finds usable in that kernel.
    #[arg(long = "backend", value_delimiter = ',', default_value = "working",
          value_parser = ["tracepoint", "kprobe", "fentry", "working"])]
    pub backends: Vec<String>,
    /// Time limit for one boot, in seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Look the newest kernel packages up again even when a kernel is cached.
    #[arg(long)]
    pub refresh: bool,
    /// Another static executable to put in the VM's /bin (repeatable).
    #[arg(long = "bin", value_name = "PATH")]
    pub bins: Vec<PathBuf>,
    /// Arguments for the in-VM commands ("$@" there).
    #[arg(last = true)]
    pub args: Vec<String>,
    /// Set when the caller already ran setup (`xtask test`).
    #[arg(skip)]
    pub skip_setup: bool,
}

impl VmtestArgs {
    /// The kernels CI boots, default commands: what `cargo xtask test` runs.
    /// (7.x oopsed once under multi-threaded TCG; every guest now runs
    /// single-threaded, see docs/kernel-matrix.md.)
    pub fn ci_kernels() -> Self {
        VmtestArgs {
            kernels: vec!["5.10".into(), "6.1".into(), "6.12".into(), "7.x".into()],
            run: Vec::new(),
            backends: vec!["working".into()],
            timeout: 900,
            refresh: false,
            bins: Vec::new(),
            args: Vec::new(),
            skip_setup: true,
        }
    }
}

/// `--backend` values → selftest's `--backend` (`working` wins over a list).
fn backend_spec(backends: &[String]) -> String {
    if backends.is_empty() || backends.iter().any(|b| b == "working") {
        return "working".into();
    }
    let mut list: Vec<&str> = Vec::new();
    // Tracepoint first: it is the reference of the agreement check.
    for b in ["tracepoint", "kprobe", "fentry"] {
        if backends.iter().any(|x| x == b) {
            list.push(b);
        }
    }
    list.join(",")
}

/// The selected series in canonical order, without duplicates.
fn selected(names: &[String]) -> Vec<&'static Series> {
    SERIES
        .iter()
        .filter(|s| names.iter().any(|n| n == "all" || n == s.name))
        .collect()
}

/// Writes each command's output to `<dir>/out-<n>.txt` (old ones removed first).
fn save_outputs(dir: &Path, console: &console::Console, commands: usize) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clean {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for n in 1..=commands {
        let lines = console.outputs.get(&n).cloned().unwrap_or_default();
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        let path = dir.join(format!("out-{n}.txt"));
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Fetches (or reuses) one kernel, boots it and collects the result.
fn run_series(
    series: &'static Series,
    root: &Path,
    initrd: &Path,
    commands: &[String],
    args: &VmtestArgs,
    lazy_apt: &mut apt::LazyApt,
) -> anyhow::Result<SeriesResult> {
    let kernel = match kernel::ensure(series, &root.join("kernels"), args.refresh, lazy_apt) {
        Ok(k) => k,
        Err(err) => {
            return Ok(SeriesResult {
                series: series.name.into(),
                package: None,
                verdict: Verdict::Fail(format!("kernel fetch: {err:#}")),
                seconds: 0.0,
                commands: commands.iter().map(|c| (c.clone(), None)).collect(),
                tail: Vec::new(),
                scenario_lines: Vec::new(),
            })
        }
    };
    // Each kernel gets its own config at the path tools look for it.
    let initrd = match &kernel.config {
        Some(config) => {
            let name = config
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("config");
            let work = root.join("boot").join(series.name);
            let out = work.join("initrd.gz");
            initramfs::with_overlay(
                initrd,
                &work.join("overlay"),
                &[(config.clone(), format!("boot/{name}"))],
                &out,
            )?;
            out
        }
        None => initrd.to_path_buf(),
    };
    let log = root.join(format!("{}.log", series.name));
    let boot = qemu::boot(
        &kernel.vmlinuz,
        &initrd,
        series.single_thread_tcg,
        &log,
        Duration::from_secs(args.timeout),
    )?;
    save_outputs(&root.join(series.name), &boot.console, commands.len())?;
    let verdict = console::decide(&boot.console, boot.ending, commands.len());
    let failed = verdict != Verdict::Pass;
    Ok(SeriesResult {
        series: series.name.into(),
        package: Some((kernel.info.package, kernel.info.version)),
        verdict,
        seconds: boot.elapsed.as_secs_f64(),
        commands: commands
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), boot.console.rcs.get(&(i + 1)).copied()))
            .collect(),
        tail: if failed {
            boot.console.tail()
        } else {
            Vec::new()
        },
        scenario_lines: boot
            .console
            .outputs
            .values()
            .flatten()
            .filter(|l| ["PASS ", "FAIL ", "SKIP "].iter().any(|p| l.starts_with(p)))
            .cloned()
            .collect(),
    })
}

fn print_result(r: &SeriesResult) {
    let version = r
        .package
        .as_ref()
        .map(|(p, v)| format!("{p} {v}"))
        .unwrap_or_else(|| "no kernel".into());
    match &r.verdict {
        Verdict::Pass => println!("vmtest {}: PASS ({version}, {:.1} s)", r.series, r.seconds),
        Verdict::Fail(reason) => println!(
            "vmtest {}: FAIL {reason} ({version}, {:.1} s)",
            r.series, r.seconds
        ),
    }
    for (i, (cmd, rc)) in r.commands.iter().enumerate() {
        let rc = rc.map_or("none".to_string(), |rc| rc.to_string());
        println!("  [{}] rc={rc} {cmd}", i + 1);
    }
    if !r.tail.is_empty() {
        println!("  last console lines:");
        for line in &r.tail {
            println!("  | {line}");
        }
    }
}

pub fn run(args: VmtestArgs) -> anyhow::Result<i32> {
    if !args.skip_setup {
        setup::run(&setup::SetupArgs { no_vm: false })?;
    }
    let series = selected(&args.kernels);
    if !args.run.is_empty() && args.backends != ["working"] {
        anyhow::bail!("--backend selects the default scenarios; it has no effect with --run");
    }
    let commands: Vec<String> = if args.run.is_empty() {
        default_commands(&backend_spec(&args.backends))
    } else {
        args.run.clone()
    };
    let root = proc::target_dir().join("vmtest");
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;

    // The binary that ships (target/dist/herdtrace), so the guests test it.
    let herdtrace = dist::static_binary()?;
    let mut bins = vec![herdtrace];
    bins.extend(args.bins.iter().cloned());
    let initrd = root.join("initrd.gz");
    initramfs::build(
        &root.join("initramfs"),
        &initrd,
        &initramfs::Contents {
            busybox: Path::new(BUSYBOX),
            bins: &bins,
            commands: &commands,
            args: &args.args,
        },
    )?;

    let mut suites: Vec<&'static str> = Vec::new();
    for suite in series.iter().flat_map(|s| s.suites) {
        if !suites.contains(suite) {
            suites.push(suite);
        }
    }
    let mut lazy_apt = apt::LazyApt::new(root.join("apt"), suites);
    let mut results = Vec::new();
    for s in series {
        let r = run_series(s, &root, &initrd, &commands, &args, &mut lazy_apt)?;
        print_result(&r);
        results.push(r);
    }
    let report_path = root.join("report.md");
    std::fs::write(&report_path, report::render(&results))
        .with_context(|| format!("write {}", report_path.display()))?;
    println!("report: {}", report_path.display());
    let all_pass = results.iter().all(|r| r.verdict == Verdict::Pass);
    Ok(if all_pass { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_expands_all_dedups_and_keeps_canonical_order() {
        let names = |v: &[&str]| -> Vec<&str> {
            selected(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(names(&["all"]), vec!["5.10", "6.1", "6.12", "7.x"]);
        assert_eq!(names(&["7.x", "6.1", "6.1"]), vec!["6.1", "7.x"]);
        assert_eq!(names(&["6.12", "all"]), vec!["5.10", "6.1", "6.12", "7.x"]);
        assert!(names(&[]).is_empty());
    }

    #[test]
    fn backend_filter_becomes_the_selftest_backend_list() {
        let spec = |v: &[&str]| backend_spec(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(spec(&["working"]), "working");
        assert_eq!(spec(&[]), "working");
        assert_eq!(spec(&["fentry", "tracepoint"]), "tracepoint,fentry");
        assert_eq!(spec(&["kprobe", "working"]), "working");
        assert_eq!(
            default_commands("kprobe")[1],
            "herdtrace selftest --backend kprobe --agree --rate 50 --connections 200"
        );
        assert_eq!(default_commands("working")[0], "herdtrace check");
    }

    #[test]
    fn outputs_are_saved_per_command_including_empty_ones() {
        let dir = std::env::temp_dir().join(format!("xtask-out-{}", std::process::id()));
        let mut c = console::Console::default();
        for line in [
            "=== BEGIN 1",
            "hello",
            "world",
            "=== END 1 rc=0",
            "=== BEGIN 2",
        ] {
            c.feed(line);
        }
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("out-9.txt"), "stale").expect("write");
        save_outputs(&dir, &c, 3).expect("save");
        let read =
            |n: u32| std::fs::read_to_string(dir.join(format!("out-{n}.txt"))).expect("read");
        assert_eq!(read(1), "hello\nworld\n");
        assert_eq!(read(2), "");
        assert_eq!(read(3), "");
        assert!(!dir.join("out-9.txt").exists(), "stale outputs are removed");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
