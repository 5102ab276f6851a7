//! The Debian package: a staged tree packed with `dpkg-deb` (no debhelper).
//! The hand-written parts (control fields, maintainer scripts, copyright,
//! changelog) live in `dist/debian/`; this adds what only the build knows:
//! version, size, the statically linked glibc and the linked crates.
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

use super::{licenses, COMPLETIONS, DEB_ARCH, UNIT};
use crate::proc;

/// Where the unit goes: Debian 12's systemd (and debhelper) install system
/// units under /lib; with a merged /usr that is /usr/lib as well.
pub const UNIT_DIR: &str = "lib/systemd/system";
pub const DOC_DIR: &str = "usr/share/doc/herdtrace";
pub const MAN_DIR: &str = "usr/share/man/man1";
/// Maintainer scripts (systemd reload, stop on removal), installed 0755.
const SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];
/// Placeholder in `dist/debian/copyright` for the list of linked crates.
const CRATES_MARK: &str = "@LINKED_CRATES@";

fn debian_src() -> PathBuf {
    proc::workspace_root().join("dist").join("debian")
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

/// Copies `from` to `stage/rel` with `mode`, creating parent directories.
fn install(from: &Path, stage: &Path, rel: &str, mode: u32) -> anyhow::Result<()> {
    let to = stage.join(rel);
    write_file(
        &to,
        &fs::read(from).with_context(|| format!("read {}", from.display()))?,
        mode,
    )
}

fn write_file(to: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    fs::write(to, bytes).with_context(|| format!("write {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

/// `gzip -9n`: maximum compression, no name or time stamp (reproducible),
/// as Debian wants man pages and changelogs.
fn gzip(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let out = File::create(to).with_context(|| format!("create {}", to.display()))?;
    let mut cmd = Command::new("gzip");
    cmd.args(["-9n", "-c"]).arg(from).stdout(Stdio::from(out));
    let status = proc::output(&mut cmd)?.status;
    if !status.success() {
        bail!("`{}` failed ({status})", proc::display(&cmd));
    }
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", to.display()))
}

/// The version of the newest entry of a Debian changelog:
/// `herdtrace (0.1.0) unstable; urgency=medium` -> `0.1.0`.
pub fn changelog_version(text: &str) -> Option<&str> {
    let first = text.lines().find(|l| !l.trim().is_empty())?;
    let rest = first.strip_prefix("herdtrace (")?;
    let (version, _) = rest.split_once(')')?;
    (!version.is_empty()).then_some(version)
}

/// The control file: the hand-written fields of `dist/debian/control` with
/// Version, Architecture, Installed-Size and Built-Using put before the
/// Description (which runs to the end of the file).
pub fn control(
    template: &str,
    version: &str,
    installed_kib: u64,
    built_using: &str,
) -> anyhow::Result<String> {
    for generated in [
        "Version:",
        "Architecture:",
        "Installed-Size:",
        "Built-Using:",
    ] {
        if template.lines().any(|l| l.starts_with(generated)) {
            bail!("dist/debian/control must not set {generated} (the build does)");
        }
    }
    let Some(at) = template.find("\nDescription:") else {
        bail!("dist/debian/control has no Description field");
    };
    let (head, description) = template.split_at(at + 1);
    let mut out = head.to_string();
    out.push_str(&format!(
        "Version: {version}\nArchitecture: {DEB_ARCH}\nInstalled-Size: {installed_kib}\n\
         Built-Using: {built_using}\n"
    ));
    out.push_str(description.trim_end());
    out.push('\n');
    Ok(out)
}

/// `dist/debian/copyright` with the linked crates in place of the marker
/// line (one ` name version: license` continuation line each).
pub fn copyright(template: &str, crates: &[licenses::Crate]) -> anyhow::Result<String> {
    let marker = format!(" {CRATES_MARK}");
    if template.lines().filter(|l| *l == marker).count() != 1 {
        bail!("dist/debian/copyright needs exactly one line `{marker}`");
    }
    let list: Vec<String> = crates
        .iter()
        .map(|c| format!(" {} {}: {}", c.name, c.version, c.license))
        .collect();
    Ok(template
        .lines()
        .map(|l| {
            if l == marker {
                list.join("\n")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

/// KiB that `path` takes for dpkg: each file rounded up, 1 per directory.
fn size_kib(path: &Path) -> anyhow::Result<u64> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(meta.len().div_ceil(1024));
    }
    let mut total = 1;
    for entry in fs::read_dir(path).with_context(|| format!("read {}", path.display()))? {
        total += size_kib(
            &entry
                .with_context(|| format!("read {}", path.display()))?
                .path(),
        )?;
    }
    Ok(total)
}

/// dpkg's Installed-Size (KiB) of the staged tree, without DEBIAN/.
pub fn installed_size(stage: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(stage).with_context(|| format!("read {}", stage.display()))? {
        let entry = entry.with_context(|| format!("read {}", stage.display()))?;
        if entry.file_name() != "DEBIAN" {
            total += size_kib(&entry.path())?;
        }
    }
    Ok(total)
}

/// `glibc (= 2.36-9+deb12u13)`: the source of the libc.a linked in, which
/// Debian names in Built-Using so that its source is kept available.
fn built_using() -> anyhow::Result<String> {
    let out = proc::stdout(Command::new("dpkg-query").args([
        "-W",
        "-f=${source:Package} (= ${source:Version})",
        "libc6-dev",
    ]))?;
    let out = out.trim();
    if !out.starts_with("glibc (= ") {
        bail!("unexpected source of libc6-dev: {out:?}");
    }
    Ok(out.to_string())
}

/// Man pages written by `herdtrace generate man`, sorted by name.
fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut pages: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    if pages.is_empty() {
        bail!("no man pages in {}", dir.display());
    }
    Ok(pages)
}

/// `md5sums` of the staged files, as dpkg --verify reads them.
fn md5sums(stage: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    for top in ["usr", "lib"] {
        walk(stage, &stage.join(top), &mut files)?;
    }
    files.sort();
    proc::stdout(Command::new("md5sum").args(&files).current_dir(stage))
}

/// Stages the package tree from target/dist/ and packs it; returns the .deb.
pub fn build(dist: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let name = format!("herdtrace_{version}_{DEB_ARCH}");
    let stage = dist.join("deb").join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clean {}", stage.display()))?;
    }
    let src = debian_src();

    install(&dist.join("herdtrace"), &stage, "usr/bin/herdtrace", 0o755)?;
    for page in man_pages(&dist.join("man"))? {
        let file = page.file_name().context("man page name")?.to_string_lossy();
        gzip(&page, &stage.join(MAN_DIR).join(format!("{file}.gz")))?;
    }
    for (_, file, rel) in COMPLETIONS {
        install(&dist.join("completions").join(file), &stage, rel, 0o644)?;
    }
    install(
        &dist.join(UNIT),
        &stage,
        &format!("{UNIT_DIR}/{UNIT}"),
        0o644,
    )?;

    let changelog = read(&src.join("changelog"))?;
    match changelog_version(&changelog) {
        Some(v) if v == version => {}
        other => bail!(
            "dist/debian/changelog's newest entry is {other:?} but the binary is {version}: \
             add an entry for {version}"
        ),
    }
    // A native package (no Debian revision): the changelog is changelog.gz.
    gzip(
        &src.join("changelog"),
        &stage.join(DOC_DIR).join("changelog.gz"),
    )?;
    let crates = licenses::linked_crates()?;
    let copyright_text = copyright(&read(&src.join("copyright"))?, &crates)?;
    write_file(
        &stage.join(DOC_DIR).join("copyright"),
        copyright_text.as_bytes(),
        0o644,
    )?;

    let control_dir = stage.join("DEBIAN");
    for script in SCRIPTS {
        install(
            &src.join(script),
            &stage,
            &format!("DEBIAN/{script}"),
            0o755,
        )?;
    }
    write_file(
        &control_dir.join("md5sums"),
        md5sums(&stage)?.as_bytes(),
        0o644,
    )?;
    let control_text = control(
        &read(&src.join("control"))?,
        version,
        installed_size(&stage)?,
        &built_using()?,
    )?;
    write_file(&control_dir.join("control"), control_text.as_bytes(), 0o644)?;
    // Directories as dpkg expects them whatever the umask.
    set_dir_modes(&stage)?;

    let deb = dist.join(format!("{name}.deb"));
    proc::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    Ok(deb)
}

fn set_dir_modes(dir: &Path) -> anyhow::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", dir.display()))?;
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            set_dir_modes(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "Package: herdtrace\nSection: admin\n\
                            Description: a tracer\n more text\n .\n end\n";

    #[test]
    fn control_inserts_build_fields_before_the_description() {
        let c = control(TEMPLATE, "0.1.0", 4242, "glibc (= 2.36-9)").expect("control");
        assert_eq!(
            c,
            "Package: herdtrace\nSection: admin\nVersion: 0.1.0\nArchitecture: amd64\n\
             Installed-Size: 4242\nBuilt-Using: glibc (= 2.36-9)\n\
             Description: a tracer\n more text\n .\n end\n"
        );
        assert!(
            control("Package: x\n", "1", 1, "g").is_err(),
            "no Description"
        );
        let with_version = format!("Version: 9\n{TEMPLATE}");
        assert!(control(&with_version, "1", 1, "g").is_err());
    }

    #[test]
    fn repository_control_template_makes_a_valid_control_file() {
        let template = read(&debian_src().join("control")).expect("dist/debian/control");
        let c = control(&template, "0.1.0", 1, "glibc (= 1)").expect("control");
        for field in [
            "Package: herdtrace\n",
            "Maintainer: ",
            "Section: ",
            "Priority: ",
        ] {
            assert!(c.contains(field), "{field}");
        }
        // Every line is a field or a continuation (no blank line: one paragraph).
        for line in c.lines() {
            assert!(
                line.starts_with(' ') || line.split_once(": ").is_some(),
                "{line:?}"
            );
        }
    }

    #[test]
    fn changelog_version_reads_the_newest_entry() {
        let text = "herdtrace (0.2.0) unstable; urgency=medium\n\n  * x\n\n -- A <a@b>  date\n\n\
                    herdtrace (0.1.0) unstable; urgency=medium\n";
        assert_eq!(changelog_version(text), Some("0.2.0"));
        assert_eq!(changelog_version("\nherdtrace (1.0) x\n"), Some("1.0"));
        assert_eq!(changelog_version("other (1.0) x"), None);
        assert_eq!(changelog_version("herdtrace () x"), None);
        assert_eq!(changelog_version(""), None);
        let repo = read(&debian_src().join("changelog")).expect("dist/debian/changelog");
        assert_eq!(changelog_version(&repo), Some(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn copyright_lists_crates_at_the_marker_only() {
        let crates = [
            licenses::Crate {
                name: "a".into(),
                version: "1.0.0".into(),
                license: "MIT".into(),
            },
            licenses::Crate {
                name: "b".into(),
                version: "2.0.0".into(),
                license: "MIT OR Apache-2.0".into(),
            },
        ];
        let t = format!("Comment: x\n .\n {CRATES_MARK}\n\nLicense: MIT\n");
        assert_eq!(
            copyright(&t, &crates).expect("ok"),
            "Comment: x\n .\n a 1.0.0: MIT\n b 2.0.0: MIT OR Apache-2.0\n\nLicense: MIT\n"
        );
        assert!(copyright("no marker\n", &crates).is_err());
        let twice = format!(" {CRATES_MARK}\n {CRATES_MARK}\n");
        assert!(copyright(&twice, &crates).is_err());
        let repo = read(&debian_src().join("copyright")).expect("dist/debian/copyright");
        assert!(copyright(&repo, &crates).is_ok());
    }

    #[test]
    fn installed_size_rounds_files_up_and_counts_dirs_but_not_debian() {
        let dir = std::env::temp_dir().join(format!("xtask-size-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("usr/bin")).expect("mkdir");
        fs::create_dir_all(dir.join("DEBIAN")).expect("mkdir");
        fs::write(dir.join("usr/bin/a"), vec![0u8; 1025]).expect("write");
        fs::write(dir.join("usr/b"), b"x").expect("write");
        fs::write(dir.join("DEBIAN/control"), vec![0u8; 5000]).expect("write");
        // usr + usr/bin directories, 2 KiB + 1 KiB of files.
        assert_eq!(installed_size(&dir).expect("size"), 2 + 2 + 1);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
