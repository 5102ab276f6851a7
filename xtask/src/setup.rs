//! `cargo xtask setup`: idempotent installation of everything the build, the
//! tests and the VM harness need on a Debian machine.
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::proc;

/// bpf-linker version matching aya 0.14 and the nightly's LLVM 22.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where Debian's LLVM 22 lives; bpf-linker's build needs it (else "-lLLVM" is not found).
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const TRACEFS: &str = "/sys/kernel/tracing";

/// Needed to build bpf-linker against Debian's LLVM 22.
const PKGS_BPF_LINKER: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
/// `ab`, `bpftrace` and `perf` for the benchmarks, `bpftool` for the detach tests,
/// the real servers `diagnose`'s tests recognise (nginx, lighttpd, Apache
/// httpd, uWSGI with its Python 3 plugin, gunicorn, Node.js, HAProxy),
/// prometheus for the exporter's.
const PKGS_TESTS: &[&str] = &[
    "apache2-utils",
    "bpftool",
    "bpftrace",
    "linux-perf",
    "nginx",
    "lighttpd",
    "apache2",
    "uwsgi",
    "uwsgi-plugin-python3",
    "gunicorn",
    "nodejs",
    "haproxy",
    "prometheus",
];
/// `cargo xtask dist` and its install check: `strip`, `man`,
/// `systemd-analyze verify`, and the shells whose completions it loads.
const PKGS_DIST: &[&str] = &["binutils", "man-db", "systemd", "zsh", "fish"];
/// QEMU and the initramfs tools for `cargo xtask vmtest`.
const PKGS_VM: &[&str] = &["qemu-system-x86", "busybox-static", "cpio"];

#[derive(Debug, Clone, Default, clap::Args)]
pub struct SetupArgs {
    /// Skip what only the QEMU tests need (qemu-system-x86, busybox-static, cpio).
    #[arg(long)]
    pub no_vm: bool,
}

/// The Debian packages setup wants, in install order.
pub fn wanted_packages(no_vm: bool) -> Vec<&'static str> {
    let mut pkgs: Vec<&'static str> = PKGS_BPF_LINKER
        .iter()
        .chain(PKGS_TESTS)
        .chain(PKGS_DIST)
        .copied()
        .collect();
    if !no_vm {
        pkgs.extend(PKGS_VM);
    }
    pkgs
}

/// Parses `dpkg-query -W -f='${Package}\t${Status}\n'` output into package -> installed.
/// The status is "want flag state"; only the state `installed` counts (a package
/// removed but not purged shows `deinstall ok config-files`).
pub fn parse_dpkg_query(out: &str) -> HashMap<String, bool> {
    out.lines()
        .filter_map(|line| {
            let (name, status) = line.split_once('\t')?;
            let name = name.trim();
            if name.is_empty() {
                return None;
            }
            Some((name.to_string(), dpkg_status_installed(status)))
        })
        .collect()
}

/// Whether one dpkg `${Status}` value means "installed".
pub fn dpkg_status_installed(status: &str) -> bool {
    let words: Vec<&str> = status.split_whitespace().collect();
    words.len() == 3 && words[2] == "installed"
}

/// The packages of `wanted` that the parsed dpkg state does not show installed
/// (unknown packages are missing: dpkg-query prints nothing for them).
pub fn missing_packages<'a>(wanted: &[&'a str], state: &HashMap<String, bool>) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|p| !state.get(*p).copied().unwrap_or(false))
        .collect()
}

/// Whether a `rustup component list --installed` listing contains `component`
/// (listed as `rust-src` or with a target suffix, `rustfmt-x86_64-unknown-linux-gnu`).
pub fn has_component(listing: &str, component: &str) -> bool {
    let target_suffix = format!("-{}-", std::env::consts::ARCH);
    listing.lines().map(str::trim).any(|line| {
        line == component
            || line
                .strip_prefix(component)
                .is_some_and(|rest| rest.starts_with(&target_suffix))
    })
}

/// Whether `rustup toolchain list` shows a toolchain called `name` (any host triple).
pub fn has_toolchain(listing: &str, name: &str) -> bool {
    listing.lines().any(|line| {
        let id = line.split_whitespace().next().unwrap_or("");
        id == name || id.starts_with(&format!("{name}-{}-", std::env::consts::ARCH))
    })
}

/// Whether bpf-linker must be (re)installed given `bpf-linker --version` output
/// (`None` when it is not installed or does not run).
pub fn bpf_linker_needs_install(version_output: Option<&str>) -> bool {
    let Some(out) = version_output else {
        return true;
    };
    let mut words = out.split_whitespace();
    !(words.next() == Some("bpf-linker") && words.next() == Some(BPF_LINKER_VERSION))
}

/// Whether `/proc/mounts` content shows tracefs mounted at `mountpoint`.
pub fn tracefs_mounted(mounts: &str, mountpoint: &str) -> bool {
    mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 3 && fields[1] == mountpoint && fields[2] == "tracefs"
    })
}

/// What setup found missing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub packages: Vec<&'static str>,
    pub nightly: bool,
    pub rust_src: bool,
    /// Components of the default toolchain (rustfmt, clippy) for `xtask test`.
    pub components: Vec<&'static str>,
    pub bpf_linker: bool,
    pub tracefs: bool,
}

impl Plan {
    /// What needs root (apt-get, mount), for the one-line refusal when not root.
    pub fn needs_root(&self) -> Vec<String> {
        let mut v: Vec<String> = self.packages.iter().map(|p| p.to_string()).collect();
        if self.tracefs {
            v.push(format!("tracefs mount at {TRACEFS}"));
        }
        v
    }

    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

/// Checks the machine and prints one `ok <item>` / `installing <item>` line each.
fn survey(args: &SetupArgs) -> anyhow::Result<Plan> {
    let mut plan = Plan::default();
    let line = |missing: bool, item: &str| {
        println!("{} {item}", if missing { "installing" } else { "ok" });
    };

    let wanted = wanted_packages(args.no_vm);
    let out = proc::output(
        Command::new("dpkg-query")
            .arg("-W")
            .arg("-f=${Package}\t${Status}\n")
            .args(&wanted),
    )
    .context("dpkg-query is needed: setup supports Debian only")?;
    let state = parse_dpkg_query(&String::from_utf8_lossy(&out.stdout));
    plan.packages = missing_packages(&wanted, &state);
    for p in &wanted {
        line(plan.packages.contains(p), p);
    }

    let toolchains = proc::stdout(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed (https://rustup.rs)")?;
    plan.nightly = !has_toolchain(&toolchains, "nightly");
    line(plan.nightly, "nightly toolchain");
    plan.rust_src = plan.nightly || {
        let listing = proc::stdout(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            "nightly",
        ]))?;
        !has_component(&listing, "rust-src")
    };
    line(plan.rust_src, "rust-src (nightly)");

    let default_listing =
        proc::stdout(Command::new("rustup").args(["component", "list", "--installed"]))?;
    for c in ["rustfmt", "clippy"] {
        let missing = !has_component(&default_listing, c);
        if missing {
            plan.components.push(c);
        }
        line(missing, c);
    }

    let version = bpf_linker_path().and_then(|p| {
        let out = Command::new(p).arg("--version").output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    plan.bpf_linker = bpf_linker_needs_install(version.as_deref());
    line(plan.bpf_linker, &format!("bpf-linker {BPF_LINKER_VERSION}"));

    let mounts = std::fs::read_to_string("/proc/mounts").context("read /proc/mounts")?;
    plan.tracefs = !tracefs_mounted(&mounts, TRACEFS);
    line(plan.tracefs, &format!("tracefs at {TRACEFS}"));
    Ok(plan)
}

/// bpf-linker on PATH or in the cargo bin directory.
fn bpf_linker_path() -> Option<PathBuf> {
    proc::which_in("bpf-linker", &proc::path_with_cargo_bin())
}

/// Runs the whole setup; prints one line per item.
pub fn run(args: &SetupArgs) -> anyhow::Result<()> {
    let plan = survey(args)?;
    if plan.is_empty() {
        return Ok(());
    }
    let root_items = plan.needs_root();
    if !root_items.is_empty() && !proc::is_root() {
        bail!(
            "setup must run as root to install {}; re-run as root",
            root_items.join(", ")
        );
    }
    if !plan.packages.is_empty() {
        let apt = |args: &[&str]| {
            let mut cmd = Command::new("apt-get");
            cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            cmd
        };
        proc::run(&mut apt(&["update"]))?;
        let mut install = apt(&["install", "-y", "--no-install-recommends"]);
        install.args(&plan.packages);
        proc::run(&mut install)?;
    }
    if plan.nightly {
        proc::run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    } else if plan.rust_src {
        proc::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if !plan.components.is_empty() {
        proc::run(
            Command::new("rustup")
                .args(["component", "add"])
                .args(&plan.components),
        )?;
    }
    if plan.bpf_linker {
        proc::run(
            Command::new("cargo")
                .args([
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--locked",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )?;
        if bpf_linker_path().is_none() {
            bail!("bpf-linker was installed but is not in PATH nor in the cargo bin directory");
        }
    }
    if plan.tracefs {
        proc::run(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DPKG_OUT: &str = "cpio\tinstall ok installed\n\
                            bpftool\tdeinstall ok config-files\n\
                            apache2-utils\tunknown ok not-installed\n\
                            zlib1g-dev\thold ok installed\n\
                            busybox-static\tinstall ok unpacked\n";

    #[test]
    fn dpkg_status_only_installed_state_counts() {
        assert!(dpkg_status_installed("install ok installed"));
        assert!(dpkg_status_installed("hold ok installed"));
        assert!(!dpkg_status_installed("deinstall ok config-files"));
        assert!(!dpkg_status_installed("unknown ok not-installed"));
        assert!(!dpkg_status_installed("install ok unpacked"));
        assert!(!dpkg_status_installed("install ok half-configured"));
        assert!(!dpkg_status_installed(""));
        assert!(!dpkg_status_installed("installed"));
    }

    #[test]
    fn parse_dpkg_query_maps_each_package() {
        let state = parse_dpkg_query(DPKG_OUT);
        assert_eq!(state.len(), 5);
        assert_eq!(state.get("cpio"), Some(&true));
        assert_eq!(state.get("zlib1g-dev"), Some(&true));
        assert_eq!(state.get("bpftool"), Some(&false));
        assert_eq!(state.get("apache2-utils"), Some(&false));
        assert_eq!(state.get("busybox-static"), Some(&false));
        assert!(parse_dpkg_query("no tab here\n\n\tinstall ok installed\n").is_empty());
    }

    #[test]
    fn missing_packages_keeps_order_and_counts_unknown_as_missing() {
        let state = parse_dpkg_query(DPKG_OUT);
        let wanted = [
            "cpio",
            "bpftool",
            "llvm-22-dev",
            "zlib1g-dev",
            "busybox-static",
        ];
        assert_eq!(
            missing_packages(&wanted, &state),
            vec!["bpftool", "llvm-22-dev", "busybox-static"]
        );
        let all = parse_dpkg_query("cpio\tinstall ok installed\n");
        assert!(missing_packages(&["cpio"], &all).is_empty());
    }

    #[test]
    fn wanted_packages_drop_only_vm_packages_with_no_vm() {
        let all = wanted_packages(false);
        let no_vm = wanted_packages(true);
        for p in PKGS_BPF_LINKER.iter().chain(PKGS_TESTS).chain(PKGS_DIST) {
            assert!(all.contains(p) && no_vm.contains(p), "{p}");
        }
        for p in PKGS_VM {
            assert!(all.contains(p) && !no_vm.contains(p), "{p}");
        }
        // LLVM first: bpf-linker's build needs it.
        assert_eq!(all[0], "llvm-22-dev");
    }

    #[test]
    fn has_component_matches_name_with_or_without_target() {
        let a = std::env::consts::ARCH;
        let listing = format!(
            "cargo-{a}-unknown-linux-gnu\nclippy-{a}-unknown-linux-gnu\nrust-src\n\
             rust-std-{a}-unknown-linux-gnu\nrustfmt-{a}-unknown-linux-gnu\n"
        );
        let listing = listing.as_str();
        assert!(has_component(listing, "rust-src"));
        assert!(has_component(listing, "clippy"));
        assert!(has_component(listing, "rustfmt"));
        assert!(!has_component(listing, "rust-analyzer"));
        assert!(
            !has_component(listing, "rustc"),
            "rustc must not match rustfmt"
        );
        // `rust` must not match rust-src / rust-std / rust-docs.
        assert!(!has_component(listing, "rust"));
        assert!(!has_component(
            &format!("rust-std-{a}-unknown-linux-gnu\n"),
            "rust-src"
        ));
        assert!(!has_component("", "rust-src"));
    }

    #[test]
    fn has_toolchain_matches_channel_with_host() {
        let listing = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                       nightly-x86_64-unknown-linux-gnu\n1.95.0-x86_64-unknown-linux-gnu\n";
        assert!(has_toolchain(listing, "nightly"));
        assert!(has_toolchain(listing, "stable"));
        assert!(!has_toolchain(listing, "beta"));
        assert!(!has_toolchain(
            "nightly-2026-05-19-x86_64-unknown-linux-gnu\n",
            "nightly"
        ));
        assert!(!has_toolchain("no installed toolchains\n", "nightly"));
    }

    #[test]
    fn bpf_linker_install_decision() {
        assert!(bpf_linker_needs_install(None));
        assert!(!bpf_linker_needs_install(Some("bpf-linker 0.13.0\n")));
        assert!(bpf_linker_needs_install(Some("bpf-linker 0.12.1\n")));
        assert!(bpf_linker_needs_install(Some("bpf-linker 0.13.01\n")));
        assert!(bpf_linker_needs_install(Some("")));
        assert!(bpf_linker_needs_install(Some("other 0.13.0")));
    }

    #[test]
    fn tracefs_mount_detection() {
        let mounts = "proc /proc proc rw 0 0\n\
                      nodev /sys/kernel/debug debugfs rw 0 0\n\
                      tracefs /sys/kernel/debug/tracing tracefs rw 0 0\n";
        assert!(!tracefs_mounted(mounts, TRACEFS));
        let mounted = format!("{mounts}nodev /sys/kernel/tracing tracefs rw,relatime 0 0\n");
        assert!(tracefs_mounted(&mounted, TRACEFS));
        assert!(!tracefs_mounted(
            "tmpfs /sys/kernel/tracing tmpfs rw 0 0\n",
            TRACEFS
        ));
    }

    #[test]
    fn plan_root_items_and_emptiness() {
        assert!(Plan::default().is_empty());
        assert!(Plan::default().needs_root().is_empty());
        let user_only = Plan {
            rust_src: true,
            bpf_linker: true,
            ..Plan::default()
        };
        assert!(!user_only.is_empty());
        assert!(
            user_only.needs_root().is_empty(),
            "rustup/cargo need no root"
        );
        let rooted = Plan {
            packages: vec!["cpio"],
            tracefs: true,
            ..Plan::default()
        };
        assert_eq!(
            rooted.needs_root(),
            vec!["cpio".to_string(), format!("tracefs mount at {TRACEFS}")]
        );
    }
}
