//! `--cgroup PATH`: a container as users name it. Any directory under a
//! cgroup v2 mount (found in /proc/mounts, wherever it is mounted: alone at
//! /sys/fs/cgroup on most hosts, at /sys/fs/cgroup/unified beside the v1
//! controllers on hybrid ones); every process in it or in a cgroup below it
//! is traced, including processes that enter it later.
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

/// Mount points of cgroup v2 hierarchies in a `/proc/mounts` text.
pub fn cgroup2_mounts(mounts: &str) -> Vec<PathBuf> {
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(2) != Some(&"cgroup2") {
                return None;
            }
            Some(PathBuf::from(unescape(f.get(1)?)))
        })
        .collect()
}

/// `/proc/mounts` writes space, tab, newline and backslash as octal escapes.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if digits.len() == 3 && digits.chars().all(|d| ('0'..='7').contains(&d)) {
                if let Ok(v) = u8::from_str_radix(&digits, 8) {
                    out.push(v as char);
                    for _ in 0..3 {
                        chars.next();
                    }
                    continue;
                }
            }
        }
        out.push(c);
    }
    out
}

/// A validated `--cgroup` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The directory (canonical).
    pub dir: PathBuf,
    /// Its path relative to the cgroup2 mount, as `/proc/PID/cgroup` shows it.
    pub name: String,
}

impl std::fmt::Display for Cgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cgroup {}", self.name)
    }
}

/// Checks that `path` is a directory under one of `mounts` (canonical paths).
pub fn validate_under(path: &Path, canonical: &Path, mounts: &[PathBuf]) -> Result<Cgroup> {
    let Some(mount) = mounts
        .iter()
        .filter(|m| canonical.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
    else {
        let where_ = if mounts.is_empty() {
            "no cgroup2 file system is mounted".to_owned()
        } else {
            let list: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
            format!("cgroup2 is mounted at {}", list.join(", "))
        };
        bail!(
            "--cgroup {}: not a directory under a cgroup2 mount ({where_})",
            path.display()
        );
    };
    let rel = canonical
        .strip_prefix(mount)
        .map(|r| format!("/{}", r.display()))
        .unwrap_or_else(|_| "/".into());
    Ok(Cgroup {
        dir: canonical.to_path_buf(),
        name: if rel == "/" {
            rel
        } else {
            rel.trim_end_matches('/').to_owned()
        },
    })
}

/// Resolves `--cgroup PATH` on this machine.
pub fn resolve(path: &Path) -> Result<Cgroup> {
    let canonical = fs::canonicalize(path)
        .with_context(|| format!("--cgroup {}: no such directory", path.display()))?;
    if !canonical.is_dir() {
        bail!("--cgroup {}: not a directory", path.display());
    }
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    validate_under(path, &canonical, &cgroup2_mounts(&mounts))
}

/// Processes in `dir` and every cgroup below it (`cgroup.procs`); a cgroup
/// that disappears while it is read is skipped.
pub fn procs(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,noexec,mode=755 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup2 /mnt/odd\\040name cgroup2 rw 0 0
";

    #[test]
    fn finds_cgroup2_mounts_in_a_hybrid_layout() {
        assert_eq!(
            cgroup2_mounts(HYBRID),
            [
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/mnt/odd name")
            ]
        );
        assert!(cgroup2_mounts("cgroup /sys/fs/cgroup/memory cgroup rw 0 0\n").is_empty());
        assert!(cgroup2_mounts("").is_empty());
        assert_eq!(unescape("a\\011b\\134c\\9"), "a\tb\\c\\9");
    }

    #[test]
    fn paths_must_be_under_a_cgroup2_mount() {
        let mounts = cgroup2_mounts(HYBRID);
        let c = validate_under(
            Path::new("/sys/fs/cgroup/unified/web/"),
            Path::new("/sys/fs/cgroup/unified/web"),
            &mounts,
        )
        .expect("under the unified mount");
        assert_eq!(c.name, "/web");
        assert_eq!(c.to_string(), "cgroup /web");
        let root = validate_under(
            Path::new("/sys/fs/cgroup/unified"),
            Path::new("/sys/fs/cgroup/unified"),
            &mounts,
        )
        .expect("the root cgroup");
        assert_eq!(root.name, "/");
        let err = validate_under(
            Path::new("/sys/fs/cgroup/memory/x"),
            Path::new("/sys/fs/cgroup/memory/x"),
            &mounts,
        )
        .expect_err("a v1 controller is not cgroup2");
        assert_eq!(
            err.to_string(),
            "--cgroup /sys/fs/cgroup/memory/x: not a directory under a cgroup2 mount \
             (cgroup2 is mounted at /sys/fs/cgroup/unified, /mnt/odd name)"
        );
        let err = validate_under(Path::new("/x"), Path::new("/x"), &[]).expect_err("none");
        assert!(err
            .to_string()
            .ends_with("(no cgroup2 file system is mounted)"));
        // The longest matching mount names the cgroup.
        let nested = [PathBuf::from("/a"), PathBuf::from("/a/b")];
        let c = validate_under(Path::new("/a/b/c"), Path::new("/a/b/c"), &nested).expect("ok");
        assert_eq!(c.name, "/c");
    }

    #[test]
    fn procs_are_read_recursively() {
        let dir = std::env::temp_dir().join(format!("herdtrace-cg-{}", std::process::id()));
        let sub = dir.join("child").join("grandchild");
        fs::create_dir_all(&sub).expect("mkdir");
        fs::write(dir.join("cgroup.procs"), "12\n7\n").expect("write");
        fs::write(sub.join("cgroup.procs"), "7\n99\nnot-a-pid\n").expect("write");
        assert_eq!(procs(&dir), [7, 12, 99]);
        assert!(procs(&dir.join("gone")).is_empty());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
