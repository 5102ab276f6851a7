//! The kernel series under test and their cache under `target/vmtest/kernels/`.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use super::apt::LazyApt;
use crate::proc;

/// One kernel series: which Debian package family, in which suite.
#[derive(Debug, PartialEq, Eq)]
pub struct Series {
    /// The name used on the command line and for directories (`6.1`).
    pub name: &'static str,
    /// Suites searched; the newest version across them wins.
    pub suites: &'static [&'static str],
    /// Package name prefix, e.g. `linux-image-6.1.` (the trailing dot keeps 6.1 from matching 6.12).
    prefix: &'static str,
    /// Run both vCPUs on one host thread (`-accel tcg,thread=single`). 7.x
    /// oopsed under multi-threaded TCG on an int3 left at a text-patching site
    /// (a static key flipped while the other vCPU ran a stale translation of
    /// that code); with one TCG thread the patching is seen by every vCPU at
    /// once. 5.10 and 6.1 hung in the runs that attach kprobes while another
    /// tracer runs (with raw and with classic tracepoints alike), the same
    /// text patching, so every series runs single-threaded.
    pub single_thread_tcg: bool,
    /// Boot with no other guest running, after the others (`--jobs` aside).
    /// The 7.x kernel preempts eBPF programs, and the kernel skips a
    /// program's runs that collide with a preempted run of it (its
    /// recursion guard); under emulation a timer tick lands inside a
    /// program about 100 times as often as on hardware, and more often
    /// still when the host's CPU is shared, since the guest then runs
    /// slower against the same wall-clock tick. Each skip flags the
    /// connections open around it (2026-12-01, `--concurrency 8`
    /// shared-epoll tracepoint~fentry: 96-121 of 200 flagged in three runs
    /// with the guest alone, 130 beside another guest, where the ten c8
    /// lines flagged 58-160 and the check fails above 150).
    pub alone: bool,
}

const FLAVOUR: &str = "-cloud-amd64";

pub const SERIES: [Series; 4] = [
    Series {
        name: "5.10",
        suites: &["bullseye"],
        prefix: "linux-image-5.10.",
        single_thread_tcg: true,
        alone: false,
    },
    Series {
        name: "6.1",
        // Point releases lag behind: the newest 6.1 builds are in bookworm-security.
        suites: &["bookworm", "bookworm-security"],
        prefix: "linux-image-6.1.",
        single_thread_tcg: true,
        alone: false,
    },
    Series {
        name: "6.12",
        suites: &["bookworm-security"],
        prefix: "linux-image-6.12.",
        single_thread_tcg: true,
        alone: false,
    },
    // In sid `linux-image-*` is a meta package; the kernel is in `linux-binary-*`.
    Series {
        name: "7.x",
        suites: &["sid"],
        prefix: "linux-binary-7.",
        single_thread_tcg: true,
        alone: true,
    },
];

impl Series {
    /// Whether `package` is a kernel of this series (not -dbg, -unsigned, ...).
    pub fn matches(&self, package: &str) -> bool {
        package
            .strip_prefix(self.prefix)
            .and_then(|rest| rest.strip_suffix(FLAVOUR))
            .is_some_and(|middle| {
                !middle.is_empty()
                    && middle
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
            })
    }

    /// POSIX regex for `apt-cache search --names-only`.
    pub fn search_regex(&self) -> String {
        format!(
            "^{}.*{}$",
            self.prefix.replace('.', "\\."),
            FLAVOUR.replace('.', "\\.")
        )
    }
}

/// What is cached for one series (`VERSION` file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub package: String,
    pub version: String,
    pub sha256: String,
}

impl KernelInfo {
    pub fn render(&self) -> String {
        format!(
            "package {}\nversion {}\nsha256 {}\n",
            self.package, self.version, self.sha256
        )
    }

    pub fn parse(text: &str) -> Option<KernelInfo> {
        let field = |key: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key && !v.trim().is_empty()).then(|| v.trim().to_string())
            })
        };
        Some(KernelInfo {
            package: field("package")?,
            version: field("version")?,
            sha256: field("sha256")?,
        })
    }
}

/// Regular files in `dir` whose name starts with `prefix`, sorted.
fn files_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    found
}

/// The kernel build config of an extracted package (`boot/config-<release>`),
/// if it ships one (sid's linux-binary does not).
pub fn find_config(root: &Path) -> Option<PathBuf> {
    files_with_prefix(&root.join("boot"), "config-").pop()
}

/// Finds the kernel image in an extracted package: `boot/vmlinuz-*` (linux-image)
/// or `usr/lib/modules/<version>/vmlinuz` (sid's linux-binary).
pub fn find_vmlinuz(root: &Path) -> Option<PathBuf> {
    if let Some(p) = files_with_prefix(&root.join("boot"), "vmlinuz-").pop() {
        return Some(p);
    }
    for modules in ["usr/lib/modules", "lib/modules"] {
        if let Ok(entries) = std::fs::read_dir(root.join(modules)) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path().join("vmlinuz")))
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            if let Some(p) = found.pop() {
                return Some(p);
            }
        }
    }
    None
}

/// SHA256 of a file, with coreutils' sha256sum.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let out = proc::stdout(Command::new("sha256sum").arg(path))?;
    out.split_whitespace()
        .next()
        .map(str::to_ascii_lowercase)
        .with_context(|| format!("sha256sum printed nothing for {}", path.display()))
}

/// A kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    pub info: KernelInfo,
    /// `config-<release>`, installed in the VM as `/boot/config-<release>`
    /// where tools (herdtrace check) look for the kernel configuration.
    pub config: Option<PathBuf>,
}

/// Returns the cached kernel of `series`, fetching the newest package first when
/// nothing is cached or `refresh` is set.
pub fn ensure(
    series: &'static Series,
    kernels_dir: &Path,
    refresh: bool,
    apt: &mut LazyApt,
) -> anyhow::Result<Kernel> {
    let dir = kernels_dir.join(series.name);
    let vmlinuz = dir.join("vmlinuz");
    let version_file = dir.join("VERSION");
    if !refresh && vmlinuz.is_file() {
        if let Some(info) = std::fs::read_to_string(&version_file)
            .ok()
            .and_then(|t| KernelInfo::parse(&t))
        {
            println!(
                "kernel {}: cached {} {}",
                series.name, info.package, info.version
            );
            return Ok(Kernel {
                config: files_with_prefix(&dir, "config-").pop(),
                vmlinuz,
                info,
            });
        }
    }
    let apt = apt.get()?;
    let cand = apt.resolve(series)?;
    if !refresh_needed(&version_file, &cand, &vmlinuz) {
        let info = KernelInfo::parse(&std::fs::read_to_string(&version_file)?)
            .context("VERSION vanished")?;
        println!(
            "kernel {}: {} {} is still the newest",
            series.name, info.package, info.version
        );
        return Ok(Kernel {
            config: files_with_prefix(&dir, "config-").pop(),
            vmlinuz,
            info,
        });
    }
    println!(
        "kernel {}: fetching {} {} ({})",
        series.name, cand.package, cand.version, cand.suite
    );
    let expected = apt.sha256(&cand)?;
    let work = dir.join("download");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clean {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
    let deb = apt.download(&cand, &work)?;
    let actual = sha256_file(&deb)?;
    if actual != expected {
        bail!(
            "{}: SHA256 {actual} does not match the index ({expected})",
            deb.display()
        );
    }
    let tree = work.join("tree");
    proc::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree))?;
    let image = find_vmlinuz(&tree).with_context(|| {
        format!(
            "{} {} contains no boot/vmlinuz-* nor usr/lib/modules/*/vmlinuz",
            cand.package, cand.version
        )
    })?;
    // VERSION is written last and the image renamed into place, so an
    // interrupted fetch never looks like a valid cache entry.
    let _ = std::fs::remove_file(&version_file);
    let tmp = dir.join("vmlinuz.tmp");
    std::fs::copy(&image, &tmp).with_context(|| format!("copy {}", image.display()))?;
    std::fs::rename(&tmp, &vmlinuz).with_context(|| format!("rename to {}", vmlinuz.display()))?;
    for old in files_with_prefix(&dir, "config-") {
        std::fs::remove_file(&old).with_context(|| format!("remove {}", old.display()))?;
    }
    if let Some(config) = find_config(&tree) {
        let name = config.file_name().context("config file name")?;
        std::fs::copy(&config, dir.join(name))
            .with_context(|| format!("copy {}", config.display()))?;
    }
    let info = KernelInfo {
        package: cand.package,
        version: cand.version,
        sha256: actual,
    };
    std::fs::write(&version_file, info.render())
        .with_context(|| format!("write {}", version_file.display()))?;
    std::fs::remove_dir_all(&work).with_context(|| format!("clean {}", work.display()))?;
    Ok(Kernel {
        config: files_with_prefix(&dir, "config-").pop(),
        vmlinuz,
        info,
    })
}

/// Whether the cache differs from the newest candidate (or is incomplete).
fn refresh_needed(version_file: &Path, cand: &super::apt::Candidate, vmlinuz: &Path) -> bool {
    let cached = std::fs::read_to_string(version_file)
        .ok()
        .and_then(|t| KernelInfo::parse(&t));
    !(vmlinuz.is_file()
        && cached.is_some_and(|c| c.package == cand.package && c.version == cand.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str) -> &'static Series {
        SERIES.iter().find(|s| s.name == name).expect("series")
    }

    #[test]
    fn series_match_only_their_kernel_packages() {
        assert!(s("5.10").matches("linux-image-5.10.0-32-cloud-amd64"));
        assert!(s("6.1").matches("linux-image-6.1.0-56-cloud-amd64"));
        assert!(s("6.12").matches("linux-image-6.12.117+deb12-cloud-amd64"));
        assert!(s("7.x").matches("linux-binary-7.2.13+deb14-cloud-amd64"));
        assert!(!s("6.1").matches("linux-image-6.12.117+deb12-cloud-amd64"));
        assert!(!s("6.1").matches("linux-image-6.1.0-56-cloud-amd64-dbg"));
        assert!(!s("6.1").matches("linux-image-6.1.0-56-cloud-amd64-unsigned"));
        assert!(!s("6.1").matches("linux-image-6.1.0-56-amd64"));
        assert!(!s("6.1").matches("linux-image-6.1.-cloud-amd64"));
        assert!(!s("7.x").matches("linux-image-7.2.13+deb14-cloud-amd64"));
        assert!(!s("5.10").matches("linux-headers-5.10.0-32-cloud-amd64"));
    }

    #[test]
    fn search_regex_escapes_dots() {
        assert_eq!(
            s("6.1").search_regex(),
            "^linux-image-6\\.1\\..*-cloud-amd64$"
        );
        assert_eq!(s("7.x").search_regex(), "^linux-binary-7\\..*-cloud-amd64$");
    }

    #[test]
    fn version_file_round_trip_and_rejects_incomplete() {
        let info = KernelInfo {
            package: "linux-image-6.1.0-56-cloud-amd64".into(),
            version: "6.1.158-1".into(),
            sha256: "ab12".into(),
        };
        assert_eq!(KernelInfo::parse(&info.render()), Some(info));
        assert_eq!(KernelInfo::parse("package p\nversion v\n"), None);
        assert_eq!(KernelInfo::parse("package p\nversion \nsha256 x\n"), None);
        assert_eq!(KernelInfo::parse(""), None);
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn vmlinuz_found_in_boot_or_modules_dir() {
        let root = tmp("vmlinuz-boot");
        std::fs::create_dir_all(root.join("boot")).expect("mkdir");
        std::fs::write(root.join("boot/config-6.1.0-56-cloud-amd64"), b"").expect("write");
        std::fs::create_dir_all(root.join("boot/vmlinuz-dir")).expect("mkdir");
        assert_eq!(find_vmlinuz(&root), None, "only files count");
        assert_eq!(
            find_config(&root),
            Some(root.join("boot/config-6.1.0-56-cloud-amd64"))
        );
        std::fs::write(root.join("boot/vmlinuz-6.1.0-56-cloud-amd64"), b"k").expect("write");
        assert_eq!(
            find_vmlinuz(&root),
            Some(root.join("boot/vmlinuz-6.1.0-56-cloud-amd64"))
        );
        std::fs::remove_dir_all(&root).expect("cleanup");

        let root = tmp("vmlinuz-modules");
        let dir = root.join("usr/lib/modules/7.2.13+deb14-cloud-amd64");
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(find_vmlinuz(&root), None);
        assert_eq!(find_config(&root), None);
        std::fs::write(dir.join("vmlinuz"), b"k").expect("write");
        assert_eq!(find_vmlinuz(&root), Some(dir.join("vmlinuz")));
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn refresh_needed_unless_cache_matches_candidate() {
        let dir = tmp("refresh");
        let vf = dir.join("VERSION");
        let vm = dir.join("vmlinuz");
        let cand = super::super::apt::Candidate {
            package: "p".into(),
            version: "2".into(),
            suite: "sid".into(),
        };
        assert!(refresh_needed(&vf, &cand, &vm), "nothing cached");
        std::fs::write(&vf, "package p\nversion 2\nsha256 x\n").expect("write");
        assert!(refresh_needed(&vf, &cand, &vm), "image missing");
        std::fs::write(&vm, b"k").expect("write");
        assert!(!refresh_needed(&vf, &cand, &vm));
        std::fs::write(&vf, "package p\nversion 1\nsha256 x\n").expect("write");
        assert!(refresh_needed(&vf, &cand, &vm), "older version cached");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
