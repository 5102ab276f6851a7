//! `cargo xtask dist`: what an operator installs, under `target/dist/`: the
//! static binary (eBPF object embedded), its man pages and shell completions
//! (rendered by the binary itself, `herdtrace generate`), the exporter's
//! systemd unit, and a Debian package holding all of them.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::vmtest::initramfs;
use crate::{proc, setup};

mod deb;
mod install_check;
mod licenses;

/// The target of the static build (there is no musl target on these machines).
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Debian's name for `STATIC_TARGET`'s architecture.
pub const DEB_ARCH: &str = "amd64";
/// The exporter's unit in the repository (`dist/`), installed as is.
pub const UNIT: &str = "herdtrace-exporter@.service";

/// Completion scripts: (`herdtrace generate completions` shell, file name
/// under target/dist/completions/, directory and name in the package).
pub const COMPLETIONS: [(&str, &str, &str); 3] = [
    (
        "bash",
        "herdtrace.bash",
        "usr/share/bash-completion/completions/herdtrace",
    ),
    (
        "zsh",
        "_herdtrace",
        "usr/share/zsh/vendor-completions/_herdtrace",
    ),
    (
        "fish",
        "herdtrace.fish",
        "usr/share/fish/vendor_completions.d/herdtrace.fish",
    ),
];

#[derive(Debug, Clone, Default, clap::Args)]
#[command(after_help = "\
Writes target/dist/: herdtrace (static, stripped), man/*.1, completions/,
herdtrace-exporter@.service and herdtrace_<version>_amd64.deb. With --check
(root) the package is then installed with dpkg -i, checked from its installed
paths (herdtrace check, man, systemd-analyze verify, bash/zsh/fish completions)
and purged again; `cargo xtask test` runs that.

Examples:
  cargo xtask dist
  sudo cargo xtask dist --check
  sudo dpkg -i target/dist/herdtrace_*_amd64.deb")]
pub struct DistArgs {
    /// Install the package on this machine, check it, then purge it (root).
    #[arg(long)]
    pub check: bool,
    /// Set when the caller already ran setup (`xtask test`).
    #[arg(skip)]
    pub skip_setup: bool,
}

/// `target/dist`.
pub fn dist_dir() -> PathBuf {
    proc::target_dir().join("dist")
}

/// The herdtrace feature that builds in `selftest`, `--empty-programs` and
/// the HERDTRACE_TEST_* hooks: never in the package, always in the binary
/// the QEMU guests run (`cargo xtask vmtest` runs `herdtrace selftest`).
pub const TEST_HOOKS: &str = "test-hooks";

/// Builds herdtrace statically linked, with its eBPF object embedded and
/// `features` on; returns cargo's output path (symbols kept).
fn build_static(features: &[&str]) -> anyhow::Result<PathBuf> {
    let mut cmd = proc::cargo([
        "build",
        "--release",
        "--target",
        STATIC_TARGET,
        "-p",
        "herdtrace",
    ]);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    cmd.env("RUSTFLAGS", "-C target-feature=+crt-static");
    proc::run(&mut cmd)?;
    Ok(proc::target_dir()
        .join(STATIC_TARGET)
        .join("release")
        .join("herdtrace"))
}

/// The binary that ships: the static build, stripped as Debian strips
/// executables, at `target/dist/herdtrace`.
pub fn static_binary() -> anyhow::Result<PathBuf> {
    stripped_static(&[], &dist_dir())
}

/// The binary the QEMU guests run: the shipped build plus [`TEST_HOOKS`],
/// at `target/vmtest/herdtrace` (the package's binary stays without them).
pub fn vmtest_binary() -> anyhow::Result<PathBuf> {
    stripped_static(&[TEST_HOOKS], &proc::target_dir().join("vmtest"))
}

/// The static build with `features`, stripped, as `dir/herdtrace`.
fn stripped_static(features: &[&str], dir: &Path) -> anyhow::Result<PathBuf> {
    let built = build_static(features)?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let out = dir.join("herdtrace");
    proc::run(
        Command::new("strip")
            .args(["--remove-section=.comment", "--remove-section=.note", "-o"])
            .arg(&out)
            .arg(&built),
    )?;
    initramfs::check_static(&out)?;
    Ok(out)
}

/// Runs `herdtrace` with `args` and returns its stdout.
fn herdtrace(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    proc::stdout(Command::new(bin).args(args))
}

/// The version the binary reports (`herdtrace 0.1.0` -> `0.1.0`).
pub fn parse_version(output: &str) -> anyhow::Result<String> {
    let mut words = output.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("herdtrace"), Some(v), None) if v.starts_with(|c: char| c.is_ascii_digit()) => {
            Ok(v.to_string())
        }
        _ => bail!("unexpected `herdtrace --version` output: {output:?}"),
    }
}

/// Renders the man pages and completions with the built binary.
fn generate(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let man = dir.join("man");
    if man.exists() {
        std::fs::remove_dir_all(&man).with_context(|| format!("clean {}", man.display()))?;
    }
    let listed = herdtrace(bin, &["generate", "man", &man.to_string_lossy()])?;
    println!("man pages: {}", listed.lines().count());
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("create {}", completions.display()))?;
    for (shell, file, _) in COMPLETIONS {
        let script = herdtrace(bin, &["generate", "completions", shell])?;
        if script.is_empty() {
            bail!("`herdtrace generate completions {shell}` printed nothing");
        }
        let path = completions.join(file);
        std::fs::write(&path, script).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Builds everything under target/dist/; returns the package's path.
pub fn build() -> anyhow::Result<PathBuf> {
    let bin = static_binary()?;
    let dir = dist_dir();
    let version = parse_version(&herdtrace(&bin, &["--version"])?)?;
    generate(&bin, &dir)?;
    let unit = dir.join(UNIT);
    let source = proc::workspace_root().join("dist").join(UNIT);
    std::fs::copy(&source, &unit)
        .with_context(|| format!("copy {} to {}", source.display(), unit.display()))?;
    let deb = deb::build(&dir, &version)?;
    println!("package: {}", deb.display());
    Ok(deb)
}

/// Runs the install check on `deb`; returns (passed, failed) and prints
/// one summary line.
fn check(deb: &Path) -> anyhow::Result<(u64, u64)> {
    let results = install_check::run(deb)?;
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.name)
        .collect();
    let passed = results.len() - failed.len();
    println!(
        "dist checks: {passed} passed, {} failed{}",
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {}", failed.join(", "))
        }
    );
    Ok((passed as u64, failed.len() as u64))
}

/// The `cargo xtask test` step: build, then (as root) the install check;
/// returns (passed, failed). Under CI=true the check must run.
pub fn test_step() -> anyhow::Result<(u64, u64)> {
    let deb = build()?;
    if !proc::is_root() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("CI=true: the package install check needs root");
        }
        println!("dist: install check skipped: installing a package needs root");
        return Ok((0, 0));
    }
    check(&deb)
}

pub fn run(args: DistArgs) -> anyhow::Result<i32> {
    if !args.skip_setup {
        setup::run(&setup::SetupArgs { no_vm: true })?;
    }
    let deb = build()?;
    if !args.check {
        return Ok(0);
    }
    let (_, failed) = check(&deb)?;
    Ok(if failed == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_the_binary() {
        assert_eq!(parse_version("herdtrace 0.1.0\n").expect("ok"), "0.1.0");
        assert_eq!(
            parse_version("herdtrace 12.3.4-rc1").expect("ok"),
            "12.3.4-rc1"
        );
        assert!(parse_version("").is_err());
        assert!(parse_version("herdtrace").is_err());
        assert!(parse_version("other 0.1.0").is_err());
        assert!(parse_version("herdtrace v0.1.0").is_err());
        assert!(parse_version("herdtrace 0.1.0 extra").is_err());
    }

    #[test]
    fn the_unit_named_here_is_in_the_repository() {
        let unit = proc::workspace_root().join("dist").join(UNIT);
        assert!(unit.is_file(), "{}", unit.display());
    }
}
