//! Running external commands: echo them, check their status, locate the workspace.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

use anyhow::{bail, Context as _};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where `cargo install` puts bpf-linker.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home).join("bin"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cargo").join("bin"))
}

/// `PATH` with the cargo bin directory appended when missing, so a freshly
/// installed bpf-linker is found by the eBPF build even on a bare CI shell.
pub fn path_with_cargo_bin() -> OsString {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&current).collect();
    if let Some(bin) = cargo_bin_dir() {
        if !dirs.contains(&bin) {
            dirs.push(bin);
        }
    }
    std::env::join_paths(dirs).unwrap_or(current)
}

/// A `cargo` command run in the workspace root that always does the real eBPF
/// build: an `AYA_BUILD_SKIP` left in a developer's shell would otherwise embed
/// an empty object and make tests and the demo fail in confusing ways.
pub fn cargo<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new("cargo");
    cmd.args(args)
        .current_dir(workspace_root())
        .env_remove("AYA_BUILD_SKIP")
        .env("PATH", path_with_cargo_bin());
    cmd
}

/// Shell-like rendering of a command, for the `==>` progress lines.
pub fn display(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        // Only the variables we set on purpose are interesting; PATH is noise.
        if key == "PATH" {
            continue;
        }
        if let Some(value) = value {
            parts.push(format!(
                "{}={}",
                key.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with inherited stdio, echoing it first; returns its status.
pub fn status(cmd: &mut Command) -> anyhow::Result<ExitStatus> {
    println!("==> {}", display(cmd));
    cmd.status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))
}

/// Runs `cmd` with inherited stdio and fails unless it exits 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let st = status(cmd)?;
    if !st.success() {
        bail!("`{}` failed ({st})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its output whatever the exit status.
pub fn output(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.output()
        .with_context(|| format!("cannot start `{}`", display(cmd)))
}

/// Runs `cmd` quietly; fails (with its stderr) unless it exits 0; returns stdout.
pub fn stdout(cmd: &mut Command) -> anyhow::Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the current process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Finds `name` in the directories of `path` (a `PATH`-style list).
pub fn which_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_set_env_program_and_args_but_not_path() {
        let mut cmd = Command::new("cargo");
        cmd.arg("build")
            .arg("--release")
            .env("RUSTFLAGS", "-C x")
            .env("PATH", "/bin");
        assert_eq!(display(&cmd), "RUSTFLAGS=-C x cargo build --release");
    }

    #[test]
    fn cargo_command_removes_aya_build_skip_and_runs_in_workspace() {
        let cmd = cargo(["build"]);
        let removed = cmd
            .get_envs()
            .any(|(k, v)| k == "AYA_BUILD_SKIP" && v.is_none());
        assert!(removed, "AYA_BUILD_SKIP must be removed");
        assert_eq!(cmd.get_current_dir(), Some(workspace_root().as_path()));
        assert!(workspace_root().join("Cargo.toml").is_file());
    }

    #[test]
    fn which_in_finds_files_only_in_listed_dirs() {
        let dir = std::env::temp_dir().join(format!("xtask-which-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("tool"), b"").expect("write");
        let path = std::env::join_paths([dir.join("sub"), dir.clone()]).expect("join");
        assert_eq!(which_in("tool", &path), Some(dir.join("tool")));
        assert_eq!(which_in("sub", &path), None, "directories are not commands");
        assert_eq!(which_in("missing", &path), None);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
