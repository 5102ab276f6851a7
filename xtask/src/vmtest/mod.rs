//! `cargo xtask vmtest`: boot stock Debian kernels in QEMU and run herdtrace
//! inside them (the host kernel has no kprobes and refuses fentry).
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::{dist, proc, setup};

mod apt;
mod console;
mod debver;
mod image;
pub(crate) mod initramfs;
mod kernel;
mod qemu;
mod report;
mod verify;

use console::Verdict;
use kernel::{Series, SERIES};
use report::SeriesResult;

const BUSYBOX: &str = "/bin/busybox";
/// The scenarios a VM runs by default: one per kernel wake path. The tokio
/// models add nothing kernel-specific (one epoll waiter per runtime, as
/// `shared-epoll` with a single waiter) and run on the host and in `--verify`.
/// `io-uring-multishot` needs 5.19+: older kernels report it as SKIP.
pub const VM_SCENARIOS: [&str; 7] = [
    "epoll-per-worker",
    "shared-epoll",
    "exclusive",
    "reuseport",
    "blocking-accept",
    "io-uring",
    "io-uring-multishot",
];

/// What a VM runs by default: what the kernel offers, then each scenario with
/// the tracepoint tracer and one other backend attached together (`working`:
/// every backend the kernel supports, the others reported as SKIP): each
/// tracer's figures are checked against the server's own counts and the
/// herd bounds, and the two are compared connection by connection. The rate
/// is lower than on the host because software emulation is ~20x slower, two
/// tracers run, CI boots two guests at once, and the herd bounds need idle
/// workers (at 50/s epoll-per-worker woke 2.7-3.4 of 4). Then the same
/// under concurrent load.
/// (No run per backend alone: a pair run checks each backend as fully, and
/// a kernel's runs then fit CI's time.)
pub fn default_commands(backends: &str) -> Vec<String> {
    let scenarios: String = VM_SCENARIOS
        .iter()
        .map(|s| format!(" --scenario {s}"))
        .collect();
    vec![
        "herdtrace check".to_string(),
        format!(
            "herdtrace selftest --backend {backends} --agree --agree-only --rate 25 \
             --connections 200{scenarios}"
        ),
        // The same connections under concurrent load, compared one by one
        // (the woken bounds assume idle workers and are not checked here).
        format!(
            "herdtrace selftest --backend {backends} --agree --agree-only --concurrency 8 \
             --rate 100 --connections 200{scenarios}"
        ),
    ]
}

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Kernels are the newest Debian cloud images of each series, fetched once into
target/vmtest/kernels/<series>/ (VERSION records the exact package), or the
image given with --kernel-image (target/vmtest/image/). Each command
runs in the VM as a shell script (busybox sh) with the arguments after `--` as \"$@\";
its output goes to target/vmtest/<series>/out-<n>.txt, the console to
target/vmtest/<series>.log, the summary to target/vmtest/report.md. Exit code 0
only if every kernel booted and every command exited 0.

--verify runs `herdtrace check`, then `herdtrace verify --json` once per backend
(--backend; `working`: all three, those the kernel refuses reported as n/a)
at --verify-rate connections/s. Each backend's rows are saved as
target/vmtest/<series>/verify-<backend>.json, consecutive kernels are compared
with `herdtrace verify --compare`, and the side-by-side tables go to
target/vmtest/kernel-behaviour.md (--update-doc: also into
docs/kernel-behaviour.md between its markers). Exit code 0 only if every row
passed under every backend that ran. About 15 minutes per kernel.

--kernel-image boots a kernel you built (a bzImage; it needs BTF, a serial
console, devtmpfs and an initramfs, see docs/kernel-behaviour.md) the same way:
its release comes from the image's header, its config from config-<release>
beside it or the tree's .config, its modules (if any) from --modules.

Examples:
  cargo xtask vmtest --kernel 6.1
  cargo xtask vmtest --kernel 6.1,6.12 --run 'herdtrace check --json'
  cargo xtask vmtest --kernel all --run 'herdtrace --help' --run 'herdtrace check'
  cargo xtask vmtest --run 'herdtrace \"$@\"' -- check --json
  cargo xtask vmtest --kernel 6.1 --run 'herdtrace verify --json --rate 20'
  cargo xtask vmtest --kernel all --verify --update-doc
  cargo xtask vmtest --kernel-image ~/linux/arch/x86/boot/bzImage --verify
  cargo xtask vmtest --kernel-image /boot/vmlinuz-6.1.0-57-cloud-amd64 --modules / --run 'herdtrace check'")]
pub struct VmtestArgs {
    /// Kernel series to boot (repeat or comma-separate).
    #[arg(long = "kernel", value_delimiter = ',', default_value = "all",
          value_parser = ["5.10", "6.1", "6.12", "7.x", "all"])]
    pub kernels: Vec<String>,
    /// Shell command to run inside the VM, in order (repeatable) [default: `herdtrace check`, then the tracer scenarios under every backend].
    #[arg(long = "run", value_name = "CMD")]
    pub run: Vec<String>,
    /// Backends for the default scenarios or --verify, comma-separated (tracepoint,
    /// kprobe, fentry), or `working`: every backend that kernel supports.
    #[arg(long = "backend", value_delimiter = ',', default_value = "working",
          value_parser = ["tracepoint", "kprobe", "fentry", "working"])]
    pub backends: Vec<String>,
    /// Run `herdtrace verify --json` under each backend instead of the
    /// default scenarios, and write the kernel-behaviour tables.
    #[arg(long, conflicts_with = "run")]
    pub verify: bool,
    /// Connections per second for --verify (software emulation is ~20x slower than the host).
    #[arg(long, default_value_t = verify::RATE, requires = "verify",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub verify_rate: u32,
    /// Connections per verify row for --verify.
    #[arg(long, default_value_t = verify::CONNECTIONS, requires = "verify",
          value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub verify_connections: u32,
    /// With --verify: also write the tables into docs/kernel-behaviour.md.
    #[arg(long, requires = "verify")]
    pub update_doc: bool,
    /// Boot this kernel image (a bzImage with BTF) instead of Debian's.
    #[arg(long, value_name = "PATH", conflicts_with = "kernels")]
    pub kernel_image: Option<PathBuf>,
    /// Modules for --kernel-image, copied to /lib/modules/<release>/ in the VM
    /// (a `make modules_install INSTALL_MOD_PATH=DIR`, an unpacked package, or the release directory).
    #[arg(long, value_name = "DIR", requires = "kernel_image")]
    pub modules: Option<PathBuf>,
    /// Time limit for one boot, in seconds [default: 900; 5400 with --verify].
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Look the newest kernel packages up again even when a kernel is cached.
    #[arg(long)]
    pub refresh: bool,
    /// Kernels booted at once (each guest is one emulated thread: up to one
    /// per host core).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub jobs: u32,
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
            verify: false,
            verify_rate: verify::RATE,
            verify_connections: verify::CONNECTIONS,
            update_doc: false,
            kernel_image: None,
            modules: None,
            timeout: None,
            refresh: false,
            // Two guests at once on CI's two cores: the four kernels fit its time.
            jobs: 2,
            bins: Vec::new(),
            args: Vec::new(),
            skip_setup: true,
        }
    }
}

impl VmtestArgs {
    /// The time limit of one boot.
    fn boot_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or(if self.verify { 5400 } else { 900 }))
    }

    /// The `--verify` plan, if any.
    fn verify_plan(&self) -> Option<verify::Plan> {
        self.verify
            .then(|| verify::Plan::new(&self.backends, self.verify_rate, self.verify_connections))
    }

    /// The commands every VM runs: `--run`, the `--verify` plan's, or the default scenarios.
    fn commands(&self) -> anyhow::Result<Vec<String>> {
        if let Some(plan) = self.verify_plan() {
            return Ok(plan.commands());
        }
        if !self.run.is_empty() {
            if self.backends != ["working"] {
                anyhow::bail!(
                    "--backend selects the default scenarios or --verify's backends; it has no \
                     effect with --run"
                );
            }
            return Ok(self.run.clone());
        }
        Ok(default_commands(&backend_spec(&self.backends)))
    }

    /// The kernels to boot, in order.
    fn targets(&self) -> Vec<Target> {
        match &self.kernel_image {
            Some(path) => vec![Target::Image {
                path: path.clone(),
                modules: self.modules.clone(),
            }],
            None => selected(&self.kernels)
                .into_iter()
                .map(Target::Debian)
                .collect(),
        }
    }
}

/// One kernel to boot.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// The newest Debian package of a series.
    Debian(&'static Series),
    /// `--kernel-image` (and `--modules`).
    Image {
        path: PathBuf,
        modules: Option<PathBuf>,
    },
}

impl Target {
    /// Directory and report name.
    fn name(&self) -> &'static str {
        match self {
            Target::Debian(s) => s.name,
            Target::Image { .. } => image::NAME,
        }
    }

    /// Boots with no other guest running (see `kernel::Series::alone`).
    fn boots_alone(&self) -> bool {
        matches!(self, Target::Debian(s) if s.alone)
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

/// The kernel of one target and the files its VM gets on top of the shared
/// initramfs: the kernel config at the path tools look for it, and the
/// modules of a `--kernel-image`.
fn resolve(
    target: &Target,
    root: &Path,
    args: &VmtestArgs,
    lazy_apt: &mut apt::LazyApt,
) -> anyhow::Result<(kernel::Kernel, Vec<(PathBuf, String)>)> {
    match target {
        Target::Debian(series) => {
            let kernel = kernel::ensure(series, &root.join("kernels"), args.refresh, lazy_apt)?;
            let overlay = kernel
                .config
                .iter()
                .map(|config| {
                    let name = config
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("config");
                    (config.clone(), format!("boot/{name}"))
                })
                .collect();
            Ok((kernel, overlay))
        }
        Target::Image { path, modules } => {
            let img = image::prepare(path, modules.as_deref())?;
            println!("kernel image: {} ({})", path.display(), img.describe());
            Ok((img.kernel, img.overlay))
        }
    }
}

/// Fetches (or reuses) one kernel, boots it and collects the result (and,
/// with `--verify`, each backend's rows).
/// One series, its kernel fetched and its initrd ready, waiting to boot.
struct ReadySeries<'a> {
    target: &'a Target,
    kernel: kernel::Kernel,
    initrd: PathBuf,
}

/// Series result and verify runs of one boot (or of a failed fetch).
type SeriesOutcome = (SeriesResult, Option<verify::KernelRuns>);

/// Fetches `target`'s kernel and builds its initrd (sequential: the apt
/// cache is shared); `Err` carries the outcome of a failed fetch.
fn prepare_series<'a>(
    target: &'a Target,
    root: &Path,
    initrd: &Path,
    commands: &[String],
    args: &VmtestArgs,
    lazy_apt: &mut apt::LazyApt,
) -> anyhow::Result<Result<ReadySeries<'a>, SeriesOutcome>> {
    let name = target.name();
    let plan = args.verify_plan();
    let (kernel, overlay) = match resolve(target, root, args, lazy_apt) {
        Ok(k) => k,
        Err(err) => {
            let result = SeriesResult {
                series: name.into(),
                package: None,
                verdict: Verdict::Fail(format!("kernel fetch: {err:#}")),
                seconds: 0.0,
                commands: commands.iter().map(|c| (c.clone(), None)).collect(),
                tail: Vec::new(),
                scenario_lines: Vec::new(),
            };
            let runs = plan.map(|_| verify::KernelRuns {
                series: name.into(),
                package: None,
                runs: Vec::new(),
                seconds: 0.0,
            });
            return Ok(Err((result, runs)));
        }
    };
    let initrd = if overlay.is_empty() {
        initrd.to_path_buf()
    } else {
        let work = root.join("boot").join(name);
        let out = work.join("initrd.gz");
        initramfs::with_overlay(initrd, &work.join("overlay"), &overlay, &out)?;
        out
    };
    Ok(Ok(ReadySeries {
        target,
        kernel,
        initrd,
    }))
}

/// Boots one prepared series and judges its console.
fn boot_series(
    ready: ReadySeries<'_>,
    root: &Path,
    commands: &[String],
    args: &VmtestArgs,
) -> anyhow::Result<SeriesOutcome> {
    let ReadySeries {
        target,
        kernel,
        initrd,
    } = ready;
    let name = target.name();
    let plan = args.verify_plan();
    let log = root.join(format!("{name}.log"));
    // Every series runs single-threaded TCG (see kernel::Series); so does an image.
    let single_thread = match target {
        Target::Debian(s) => s.single_thread_tcg,
        Target::Image { .. } => true,
    };
    let boot = qemu::boot(
        &kernel.vmlinuz,
        &initrd,
        single_thread,
        &log,
        args.boot_timeout(),
    )?;
    let out_dir = root.join(name);
    save_outputs(&out_dir, &boot.console, commands.len())?;
    let verdict = match &plan {
        Some(p) => verify::decide(&boot.console, boot.ending, p),
        None => console::decide(&boot.console, boot.ending, commands.len()),
    };
    let runs = match &plan {
        Some(p) => {
            let runs = verify::runs(&boot.console, p);
            save_verify_rows(&out_dir, &runs)?;
            Some(verify::KernelRuns {
                series: name.into(),
                package: Some((kernel.info.package.clone(), kernel.info.version.clone())),
                runs,
                seconds: boot.elapsed.as_secs_f64(),
            })
        }
        None => None,
    };
    let failed = verdict != Verdict::Pass;
    let result = SeriesResult {
        series: name.into(),
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
            .filter(|l| {
                ["PASS ", "FAIL ", "SKIP ", "N/A "]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .cloned()
            .collect(),
    };
    Ok((result, runs))
}

/// `<dir>/verify-<backend>.json`: each backend's rows, ready for `herdtrace verify --compare`.
fn save_verify_rows(dir: &Path, runs: &[(String, verify::BackendRun)]) -> anyhow::Result<()> {
    for (backend, run) in runs {
        if let verify::BackendRun::Rows { rows, .. } = run {
            let path = dir.join(format!("verify-{backend}.json"));
            std::fs::write(&path, verify::ndjson(rows))
                .with_context(|| format!("write {}", path.display()))?;
        }
    }
    Ok(())
}

/// After every kernel of `--verify`: `herdtrace verify --compare` of
/// consecutive kernels per backend, the tables in
/// `target/vmtest/kernel-behaviour.md`, and with `--update-doc` in the docs.
fn finish_verify(
    root: &Path,
    herdtrace: &Path,
    kernels: &[verify::KernelRuns],
    plan: &verify::Plan,
    update_doc: bool,
) -> anyhow::Result<()> {
    let mut compares = Vec::new();
    for (backend, a, b) in verify::compare_pairs(kernels, plan) {
        let file =
            |k: &verify::KernelRuns| root.join(&k.series).join(format!("verify-{backend}.json"));
        let out = std::process::Command::new(herdtrace)
            .args(["verify", "--compare"])
            .arg(file(&kernels[a]))
            .arg(file(&kernels[b]))
            .output()
            .with_context(|| format!("run {} verify --compare", herdtrace.display()))?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        // Absolute paths of this machine do not belong in the docs.
        let text = text.replace(&format!("{}/", root.display()), "target/vmtest/");
        let code = out
            .status
            .code()
            .map_or("killed".to_string(), |c| c.to_string());
        compares.push((
            format!(
                "**{backend}**: {} -> {} (exit status {code})",
                kernels[a].series, kernels[b].series
            ),
            text,
        ));
    }
    let generated = verify::render(kernels, plan, &compares);
    let path = root.join("kernel-behaviour.md");
    std::fs::write(&path, &generated).with_context(|| format!("write {}", path.display()))?;
    println!("kernel behaviour tables: {}", path.display());
    if update_doc {
        let doc = proc::workspace_root().join("docs/kernel-behaviour.md");
        let text =
            std::fs::read_to_string(&doc).with_context(|| format!("read {}", doc.display()))?;
        let new = verify::splice_doc(&text, &generated)
            .map_err(|e| anyhow::anyhow!("{}: {e}", doc.display()))?;
        std::fs::write(&doc, new).with_context(|| format!("write {}", doc.display()))?;
        println!("updated {}", doc.display());
    }
    Ok(())
}

/// Boots the prepared series, `args.jobs` at a time, each result tagged
/// with its index. A guest is one emulated thread, so guests on separate
/// host cores do not slow each other down.
fn boot_all(
    ready: Vec<(usize, ReadySeries<'_>)>,
    root: &Path,
    commands: &[String],
    args: &VmtestArgs,
) -> anyhow::Result<Vec<(usize, SeriesOutcome)>> {
    let (alone, shared): (Vec<_>, Vec<_>) =
        ready.into_iter().partition(|(_, r)| r.target.boots_alone());
    let mut all = boot_pool(shared, root, commands, args, args.jobs.max(1) as usize)?;
    all.extend(boot_pool(alone, root, commands, args, 1)?);
    Ok(all)
}

/// Boots `ready` with up to `jobs` guests at once.
fn boot_pool(
    ready: Vec<(usize, ReadySeries<'_>)>,
    root: &Path,
    commands: &[String],
    args: &VmtestArgs,
    jobs: usize,
) -> anyhow::Result<Vec<(usize, SeriesOutcome)>> {
    let queue = std::sync::Mutex::new(ready.into_iter());
    let next = || queue.lock().ok().and_then(|mut q| q.next());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<Vec<(usize, SeriesOutcome)>> {
                    let mut done = Vec::new();
                    while let Some((i, r)) = next() {
                        let name = r.target.name();
                        let outcome = boot_series(r, root, commands, args)?;
                        println!("vmtest {name}: done");
                        done.push((i, outcome));
                    }
                    Ok(done)
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            let done = w
                .join()
                .map_err(|_| anyhow::anyhow!("a vmtest boot thread panicked"))??;
            all.extend(done);
        }
        Ok(all)
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
    let commands = args.commands()?;
    let targets = args.targets();
    // A bad image is the user's input: refuse it before building anything.
    if let Some(path) = &args.kernel_image {
        image::prepare(path, args.modules.as_deref())?;
    }
    if !args.skip_setup {
        setup::run(&setup::SetupArgs { no_vm: false })?;
    }
    let root = proc::target_dir().join("vmtest");
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;

    // The binary that ships, built with the test hooks (`herdtrace selftest`).
    let herdtrace = dist::vmtest_binary()?;
    let mut bins = vec![herdtrace.clone()];
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
    for t in &targets {
        if let Target::Debian(s) = t {
            for suite in s.suites {
                if !suites.contains(suite) {
                    suites.push(suite);
                }
            }
        }
    }
    let mut lazy_apt = apt::LazyApt::new(root.join("apt"), suites);
    let mut outcomes: Vec<Option<SeriesOutcome>> = Vec::new();
    let mut ready = Vec::new();
    for t in &targets {
        match prepare_series(t, &root, &initrd, &commands, &args, &mut lazy_apt)? {
            Ok(r) => {
                ready.push((outcomes.len(), r));
                outcomes.push(None);
            }
            Err(failed) => outcomes.push(Some(failed)),
        }
    }
    for (i, outcome) in boot_all(ready, &root, &commands, &args)? {
        outcomes[i] = Some(outcome);
    }
    let mut results = Vec::new();
    let mut verify_runs = Vec::new();
    for (r, runs) in outcomes.into_iter().flatten() {
        print_result(&r);
        results.push(r);
        verify_runs.extend(runs);
    }
    if let Some(plan) = args.verify_plan() {
        finish_verify(&root, &herdtrace, &verify_runs, &plan, args.update_doc)?;
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
    use clap::Parser as _;

    /// `cargo xtask vmtest ARGS` as clap parses it.
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: VmtestArgs,
    }

    fn parse(args: &[&str]) -> Result<VmtestArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("vmtest").chain(args.iter().copied())).map(|c| c.args)
    }

    fn parsed(args: &[&str]) -> VmtestArgs {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn run_commands_go_to_the_vm_as_given() {
        let a = parsed(&["--kernel", "6.1", "--run", "herdtrace verify --json"]);
        assert_eq!(a.commands().expect("commands"), ["herdtrace verify --json"]);
        assert_eq!(a.targets(), vec![Target::Debian(&SERIES[1])]);
        assert_eq!(a.boot_timeout(), Duration::from_secs(900));
        assert!(a.verify_plan().is_none());
        // --backend only means something for the scenarios and --verify.
        let a = parsed(&["--run", "x", "--backend", "kprobe"]);
        assert!(a.commands().is_err());
        // Default: check, then the scenarios.
        assert_eq!(
            parsed(&[]).commands().expect("default"),
            default_commands("working")
        );
    }

    #[test]
    fn verify_mode_runs_check_then_verify_per_backend() {
        let a = parsed(&["--verify"]);
        let cmds = a.commands().expect("commands");
        assert_eq!(cmds.len(), 4);
        assert_eq!(cmds[0], "herdtrace check");
        assert_eq!(
            cmds[1],
            format!(
                "herdtrace verify --json --backend tracepoint --rate {} --connections {}",
                verify::RATE,
                verify::CONNECTIONS
            )
        );
        assert_eq!(a.boot_timeout(), Duration::from_secs(5400));
        assert_eq!(a.targets().len(), 4, "every series");
        let a = parsed(&[
            "--verify",
            "--backend",
            "fentry",
            "--verify-rate",
            "10",
            "--verify-connections",
            "60",
            "--timeout",
            "100",
            "--update-doc",
        ]);
        assert_eq!(
            a.commands().expect("commands"),
            [
                "herdtrace check",
                "herdtrace verify --json --backend fentry --rate 10 --connections 60"
            ]
        );
        assert!(a.update_doc);
        assert_eq!(a.boot_timeout(), Duration::from_secs(100));
        let plan = a.verify_plan().expect("plan");
        assert!(!plan.skip_unavailable);
    }

    #[test]
    fn verify_options_need_verify_and_exclude_run() {
        for bad in [
            &["--verify", "--run", "x"][..],
            &["--verify-rate", "10"],
            &["--verify-connections", "10"],
            &["--update-doc"],
            &["--verify", "--verify-rate", "0"],
            &["--verify", "--verify-connections", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn kernel_image_replaces_the_series() {
        let a = parsed(&["--kernel-image", "/k/bzImage", "--modules", "/k/mods"]);
        assert_eq!(
            a.targets(),
            vec![Target::Image {
                path: PathBuf::from("/k/bzImage"),
                modules: Some(PathBuf::from("/k/mods"))
            }]
        );
        assert_eq!(a.targets()[0].name(), "image");
        assert_eq!(a.commands().expect("default"), default_commands("working"));
        let a = parsed(&["--kernel-image", "/k/bzImage", "--verify"]);
        assert_eq!(a.commands().expect("verify").len(), 4);
        assert_eq!(
            a.targets(),
            vec![Target::Image {
                path: PathBuf::from("/k/bzImage"),
                modules: None
            }]
        );
        // Not both, and no modules without an image.
        assert!(parse(&["--kernel-image", "/k", "--kernel", "6.1"]).is_err());
        assert!(parse(&["--modules", "/m"]).is_err());
        assert!(parse(&["--kernel-image"]).is_err());
    }

    #[test]
    fn a_bad_image_is_refused_before_anything_is_built() {
        let dir = std::env::temp_dir().join(format!("xtask-badimage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("bzImage");
        std::fs::write(&path, b"not a kernel").expect("write");
        let a = parsed(&[
            "--kernel-image",
            path.to_str().expect("utf-8"),
            "--run",
            "true",
        ]);
        let err = format!("{:#}", run(a).expect_err("refused"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert!(err.contains("not an x86 bzImage"), "{err}");
    }

    #[test]
    fn ci_kernels_keep_the_default_scenarios() {
        let a = VmtestArgs::ci_kernels();
        assert_eq!(a.commands().expect("commands"), default_commands("working"));
        assert_eq!(a.targets().len(), 4);
        assert!(!a.verify && a.kernel_image.is_none());
        assert_eq!(a.boot_timeout(), Duration::from_secs(900));
        assert_eq!(a.jobs, 2);
        assert_eq!(parsed(&[]).jobs, 1);
    }

    /// 7.x boots after the others, with no other guest beside it; the
    /// rest share the `--jobs` slots, and so does an image.
    #[test]
    fn only_7x_boots_alone() {
        for s in &kernel::SERIES {
            assert_eq!(
                Target::Debian(s).boots_alone(),
                s.name == "7.x",
                "{}",
                s.name
            );
        }
        let image = Target::Image {
            path: PathBuf::from("/boot/vmlinuz"),
            modules: None,
        };
        assert!(!image.boots_alone());
    }

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
            "herdtrace selftest --backend kprobe --agree --agree-only --rate 25 --connections 200 \
             --scenario epoll-per-worker --scenario shared-epoll --scenario exclusive \
             --scenario reuseport --scenario blocking-accept --scenario io-uring \
             --scenario io-uring-multishot"
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
