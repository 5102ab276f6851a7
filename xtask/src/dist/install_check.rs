//! `cargo xtask dist --check`: installs the package with `dpkg -i` on this
//! machine, checks every part from its installed path as a user would use
//! it, then removes and purges it so that the machine is left as it was.
use std::path::Path;
use std::process::{Command, Output};

use anyhow::bail;

use super::deb::{DOC_DIR, MAN_DIR, UNIT_DIR};
use super::{COMPLETIONS, UNIT};
use crate::proc;

const PACKAGE: &str = "herdtrace";
const BIN: &str = "/usr/bin/herdtrace";

/// One named check and whether it passed (its finding is printed).
#[derive(Debug)]
pub struct CheckResult {
    pub name: &'static str,
    pub passed: bool,
}

fn run_quiet(cmd: &mut Command) -> anyhow::Result<Output> {
    println!("==> {}", proc::display(cmd));
    proc::output(cmd)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Ok(detail) when the command exited 0, else Err(exit status and stderr).
fn ok_output(cmd: &mut Command) -> anyhow::Result<(String, String)> {
    let out = run_quiet(cmd)?;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if !out.status.success() {
        bail!("{} ({}): {}", proc::display(cmd), out.status, stderr.trim());
    }
    Ok((stdout, stderr))
}

/// dpkg's state of the package (`install ok installed`), None if unknown.
fn package_status() -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .ok()?;
    let status = text(&out.stdout);
    (out.status.success() && !status.trim().is_empty()).then(|| status.trim().to_string())
}

/// The paths every package must hold (besides the subcommand man pages).
pub fn expected_paths() -> Vec<String> {
    let mut paths = vec![
        BIN.to_string(),
        format!("/{MAN_DIR}/herdtrace.1.gz"),
        format!("/{UNIT_DIR}/{UNIT}"),
        format!("/{DOC_DIR}/copyright"),
        format!("/{DOC_DIR}/changelog.gz"),
    ];
    paths.extend(COMPLETIONS.iter().map(|(_, _, rel)| format!("/{rel}")));
    paths
}

/// `herdtrace check` text: exit 0 and the automatic choice is the
/// tracepoint backend (the only one this host kernel allows: no kprobes, and
/// fentry is refused).
pub fn backend_auto(check_output: &str) -> Option<&str> {
    check_output
        .lines()
        .find_map(|l| l.trim().strip_prefix("backend auto: "))
        .and_then(|rest| rest.split_whitespace().next())
}

/// The subcommand page names the package holds (`herdtrace-check`, ...).
fn subcommand_pages(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("/{MAN_DIR}/")))
        .filter_map(|f| f.strip_suffix(".1.gz"))
        .filter(|n| n.starts_with("herdtrace-"))
        .map(str::to_string)
        .collect()
}

/// The visible words of a rendered page (man's bold/underline removed).
fn plain(rendered: &str) -> String {
    // col -b: overstrikes "c\bc" and "_\bc" become "c".
    let mut out = String::new();
    for c in rendered.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out
}

fn check_files() -> anyhow::Result<String> {
    let (listing, _) = ok_output(Command::new("dpkg").args(["-L", PACKAGE]))?;
    let missing: Vec<String> = expected_paths()
        .into_iter()
        .filter(|p| !listing.lines().any(|l| l == p))
        .collect();
    if !missing.is_empty() {
        bail!("not in `dpkg -L {PACKAGE}`: {}", missing.join(", "));
    }
    let pages = subcommand_pages(&listing);
    if pages.is_empty() {
        bail!("no subcommand man pages");
    }
    for path in expected_paths() {
        if !Path::new(&path).is_file() {
            bail!("{path} listed but not on disk");
        }
    }
    Ok(format!(
        "{} files listed, {} subcommand pages",
        listing.lines().count(),
        pages.len()
    ))
}

fn check_herdtrace() -> anyhow::Result<String> {
    let (out, _) = ok_output(Command::new(BIN).arg("check"))?;
    match backend_auto(&out) {
        Some("tracepoint") => {}
        other => bail!("`{BIN} check` reports backend auto {other:?}, want tracepoint:\n{out}"),
    }
    let (version, _) = ok_output(Command::new(BIN).arg("--version"))?;
    // Built without the test hooks: their entry points are not there at all.
    let selftest = run_quiet(Command::new(BIN).arg("selftest"))?;
    if selftest.status.code() != Some(2)
        || !text(&selftest.stderr).contains("unrecognized subcommand 'selftest'")
    {
        bail!(
            "`{BIN} selftest` ({}) should be unknown in the package: {}",
            selftest.status,
            text(&selftest.stderr).trim()
        );
    }
    Ok(format!(
        "{}: backend auto: tracepoint; no selftest",
        version.trim()
    ))
}

/// `man -l` renders every page without a groff warning, `man -w` finds
/// them by name, and the top page names every subcommand page.
fn check_man() -> anyhow::Result<String> {
    let (listing, _) = ok_output(Command::new("dpkg").args(["-L", PACKAGE]))?;
    let pages = subcommand_pages(&listing);
    let man = |args: &[&str]| {
        let mut cmd = Command::new("man");
        cmd.args(args).env("MANWIDTH", "80").env("MANPAGER", "cat");
        cmd
    };
    let top_path = format!("/{MAN_DIR}/herdtrace.1.gz");
    let (top, warnings) = ok_output(&mut man(&["--warnings", "-l", &top_path]))?;
    let top = plain(&top);
    if top.trim().is_empty() || !warnings.trim().is_empty() {
        bail!(
            "man -l {top_path}: {} bytes, warnings: {}",
            top.len(),
            warnings.trim()
        );
    }
    for page in &pages {
        if !top.contains(&format!("{page}(1)")) {
            bail!("herdtrace(1) does not name {page}(1)");
        }
        let path = format!("/{MAN_DIR}/{page}.1.gz");
        let (body, warnings) = ok_output(&mut man(&["--warnings", "-l", &path]))?;
        let sub = page.trim_start_matches("herdtrace-");
        if !plain(&body).contains(&format!("herdtrace {sub}")) || !warnings.trim().is_empty() {
            bail!(
                "man -l {path}: no `herdtrace {sub}` or warnings: {}",
                warnings.trim()
            );
        }
    }
    for name in ["herdtrace", "herdtrace-check"] {
        let (found, _) = ok_output(&mut man(&["-w", name]))?;
        if found.trim() != format!("/{MAN_DIR}/{name}.1.gz") {
            bail!("man -w {name} finds {:?}", found.trim());
        }
    }
    Ok(format!(
        "herdtrace(1): {} lines, names {} subcommand pages; no groff warnings",
        top.lines().count(),
        pages.len()
    ))
}

/// `systemd-analyze verify` of the template and of one instance; any
/// message (it exits 0 on unknown keys) counts as a failure.
fn check_unit() -> anyhow::Result<String> {
    let template = format!("/{UNIT_DIR}/{UNIT}");
    let instance = format!("/{UNIT_DIR}/{}", UNIT.replace("@.", "@nginx."));
    let mut said = Vec::new();
    for path in [&template, &instance] {
        let (out, err) = ok_output(Command::new("systemd-analyze").args(["verify", path]))?;
        let all = format!("{out}{err}");
        if !all.trim().is_empty() {
            said.push(format!("{path}: {}", all.trim()));
        }
    }
    if !said.is_empty() {
        bail!("systemd-analyze verify: {}", said.join("; "));
    }
    Ok(format!("{template} and its instance @nginx verify cleanly"))
}

/// What `herdtrace ch<TAB>` completes to in bash, through the installed
/// script as bash-completion loads it.
fn check_bash() -> anyhow::Result<String> {
    let file = format!("/{}", COMPLETIONS[0].2);
    let script = format!(
        "source {file} && complete -p herdtrace && \
         COMP_WORDS=(herdtrace ch) COMP_CWORD=1 COMP_LINE='herdtrace ch' COMP_POINT=12 && \
         _herdtrace herdtrace ch herdtrace && echo \"reply: ${{COMPREPLY[*]}}\""
    );
    let (out, _) = ok_output(Command::new("bash").args(["--norc", "-c", &script]))?;
    if !out.contains("-F _herdtrace") || !out.lines().any(|l| l == "reply: check") {
        bail!("bash completion of `herdtrace ch`: {out}");
    }
    Ok("complete -F _herdtrace herdtrace; `herdtrace ch<TAB>` -> check".into())
}

/// zsh's compinit picks the function up from the vendor directory.
fn check_zsh() -> anyhow::Result<String> {
    let script = "autoload -Uz compinit && compinit -u -d \"$TMPDIR/zcompdump\" && \
                  print -r -- \"compdef: $_comps[herdtrace]\"";
    let tmp = std::env::temp_dir().join(format!("xtask-zsh-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = ok_output(
        Command::new("zsh")
            .args(["-f", "-c", script])
            .env("TMPDIR", &tmp),
    );
    let _ = std::fs::remove_dir_all(&tmp);
    let (out, _) = result?;
    if !out.lines().any(|l| l == "compdef: _herdtrace") {
        bail!("zsh compinit did not register _herdtrace: {out}");
    }
    let file = format!("/{}", COMPLETIONS[1].2);
    ok_output(Command::new("zsh").args(["-n", &file]))?;
    Ok("compinit registers _herdtrace; the script parses".into())
}

/// fish loads vendor completions itself: `complete -C` is what TAB shows.
fn check_fish() -> anyhow::Result<String> {
    let (out, _) = ok_output(Command::new("fish").args(["-c", "complete -C 'herdtrace ch'"]))?;
    if !out.lines().any(|l| l.split('\t').next() == Some("check")) {
        bail!("fish completion of `herdtrace ch`: {out}");
    }
    Ok("`herdtrace ch<TAB>` -> check".into())
}

/// Removes the package (`dpkg -r`: files gone) then purges it (dpkg keeps
/// a package with maintainer scripts as `config-files` until purged).
fn remove() -> anyhow::Result<String> {
    ok_output(Command::new("dpkg").args(["-r", PACKAGE]))?;
    let left: Vec<String> = expected_paths()
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    if !left.is_empty() {
        bail!("left after dpkg -r: {}", left.join(", "));
    }
    ok_output(Command::new("dpkg").args(["--purge", PACKAGE]))?;
    match package_status() {
        None => Ok("dpkg -r and --purge: no file and no dpkg record left".into()),
        Some(s) if s.ends_with("not-installed") => {
            Ok("dpkg -r and --purge: no file and no dpkg record left".into())
        }
        Some(s) => bail!("dpkg still records {PACKAGE}: {s}"),
    }
}

/// Installs `deb`, runs every check, removes the package whatever happened.
pub fn run(deb: &Path) -> anyhow::Result<Vec<CheckResult>> {
    if !proc::is_root() {
        bail!("installing the package needs root; re-run as root");
    }
    if let Some(status) = package_status().filter(|s| s.ends_with(" installed")) {
        println!("note: {PACKAGE} is already installed ({status}); it is replaced, then removed");
    }
    let mut results = Vec::new();
    let mut record = |name: &'static str, r: anyhow::Result<String>| {
        let (passed, detail) = match r {
            Ok(d) => (true, d),
            Err(e) => (false, format!("{e:#}")),
        };
        println!(
            "{} dist {name}: {detail}",
            if passed { "PASS" } else { "FAIL" }
        );
        results.push(CheckResult { name, passed });
    };
    let installed = ok_output(Command::new("dpkg").arg("-i").arg(deb)).map(|_| {
        format!(
            "dpkg -i {}: {}",
            deb.display(),
            package_status().unwrap_or_default()
        )
    });
    let install_ok = installed.is_ok();
    record("install", installed);
    if install_ok {
        record("files", check_files());
        record("herdtrace-check", check_herdtrace());
        record("man", check_man());
        record("systemd-unit", check_unit());
        record("bash-completion", check_bash());
        record("zsh-completion", check_zsh());
        record("fish-completion", check_fish());
    }
    // Also after a failed install: dpkg may have unpacked part of it.
    if package_status().is_some_and(|s| !s.ends_with("not-installed")) {
        record("remove", remove());
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_auto_is_read_from_check_text() {
        let out =
            "kernel: 6.18\nbackend tracepoint: ok\nbackend auto: tracepoint (kprobe unavailable)\n";
        assert_eq!(backend_auto(out), Some("tracepoint"));
        assert_eq!(backend_auto("  backend auto: fentry\n"), Some("fentry"));
        assert_eq!(backend_auto("backend auto: none (x)\n"), Some("none"));
        assert_eq!(backend_auto("backend tracepoint: ok\n"), None);
        assert_eq!(backend_auto(""), None);
    }

    #[test]
    fn subcommand_pages_come_from_the_man_directory_only() {
        let listing = "/.\n/usr/share/man/man1/herdtrace.1.gz\n\
                       /usr/share/man/man1/herdtrace-check.1.gz\n\
                       /usr/share/man/man1/herdtrace-load.1.gz\n\
                       /usr/share/doc/herdtrace-x.1.gz\n/usr/bin/herdtrace\n";
        assert_eq!(
            subcommand_pages(listing),
            ["herdtrace-check", "herdtrace-load"]
        );
        assert!(subcommand_pages("").is_empty());
    }

    #[test]
    fn expected_paths_cover_binary_man_unit_docs_and_three_shells() {
        let paths = expected_paths();
        assert_eq!(paths.len(), 8);
        assert!(paths.contains(&"/usr/bin/herdtrace".to_string()));
        assert!(paths.contains(&"/lib/systemd/system/herdtrace-exporter@.service".to_string()));
        assert!(paths.contains(&"/usr/share/bash-completion/completions/herdtrace".to_string()));
        assert!(paths
            .iter()
            .all(|p| p.starts_with('/') && !p.contains("//")));
    }

    #[test]
    fn plain_removes_overstrikes() {
        assert_eq!(plain("h\u{8}he\u{8}el\u{8}lp"), "help");
        assert_eq!(plain("_\u{8}x y"), "x y");
        assert_eq!(plain("plain"), "plain");
    }
}
