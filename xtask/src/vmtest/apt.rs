//! A private apt configuration for downloading Debian kernel packages from
//! suites the machine does not use (bullseye, sid), without touching the
//! machine's own apt state. The mirror URIs are read from the machine's sources
//! at run time so that no host name is written into the repository.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use super::debver;
use super::kernel::Series;
use crate::proc;

const DEB822_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const ONE_LINE_SOURCES: &str = "/etc/apt/sources.list";
const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One `deb` source: its URIs, suites and optional `Signed-By` keyring path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceEntry {
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub signed_by: Option<String>,
}

/// Parses deb822 `.sources` text, keeping `Types: deb` stanzas that are not disabled.
pub fn parse_deb822(text: &str) -> Vec<SourceEntry> {
    let mut entries = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                // Continuation line (e.g. an inline Signed-By key block).
                if let Some((_, value)) = fields.last_mut() {
                    value.push('\n');
                    value.push_str(line.trim());
                }
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                fields.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let words = |key: &str| -> Vec<String> {
            get(key)
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let is_deb = words("types").iter().any(|t| t == "deb");
        let enabled = get("enabled").is_none_or(|v| v != "no");
        if !is_deb || !enabled {
            continue;
        }
        entries.push(SourceEntry {
            uris: words("uris"),
            suites: words("suites"),
            signed_by: get("signed-by").map(str::to_string),
        });
    }
    entries
}

/// Parses one-line `sources.list` text (`deb [opts] URI SUITE COMPONENTS...`).
pub fn parse_one_line(text: &str) -> Vec<SourceEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let mut rest = rest.trim_start();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else {
                continue;
            };
            signed_by = opts
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map(str::to_string);
            rest = after.trim_start();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        entries.push(SourceEntry {
            uris: vec![uri.to_string()],
            suites: vec![suite.to_string()],
            signed_by,
        });
    }
    entries
}

/// The Debian archive and security archive URIs to use, and the keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    pub debian: String,
    pub security: String,
    pub keyring: Option<String>,
}

/// Picks the main archive (an entry with a plain codename suite such as
/// `bookworm`) and the security archive (a `*-security` suite); without a
/// security entry, the conventional `<main>-security` path on the same host.
pub fn pick_mirrors(entries: &[SourceEntry]) -> Option<Mirrors> {
    let has_suite = |e: &SourceEntry, f: &dyn Fn(&str) -> bool| e.suites.iter().any(|s| f(s));
    let main = entries
        .iter()
        .filter(|e| !e.uris.is_empty() && has_suite(e, &|s| !s.contains('-') && !s.contains('/')))
        // Prefer a URI that looks like a Debian archive over third-party repositories.
        .max_by_key(|e| e.uris[0].trim_end_matches('/').ends_with("/debian"))?;
    let debian = main.uris[0].trim_end_matches('/').to_string();
    let security = entries
        .iter()
        .find(|e| !e.uris.is_empty() && has_suite(e, &|s| s.ends_with("-security")))
        .map(|e| e.uris[0].trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("{debian}-security"));
    // An inline key block cannot go into a one-line sources entry.
    let keyring = main
        .signed_by
        .clone()
        .filter(|k| !k.contains('\n') && k.starts_with('/'));
    Some(Mirrors {
        debian,
        security,
        keyring,
    })
}

/// Reads the machine's apt sources and picks the mirrors.
pub fn machine_mirrors() -> anyhow::Result<Mirrors> {
    let mut entries = Vec::new();
    if let Ok(text) = std::fs::read_to_string(DEB822_SOURCES) {
        entries.extend(parse_deb822(&text));
    }
    if let Ok(text) = std::fs::read_to_string(ONE_LINE_SOURCES) {
        entries.extend(parse_one_line(&text));
    }
    pick_mirrors(&entries).with_context(|| {
        format!("no Debian archive found in {DEB822_SOURCES} or {ONE_LINE_SOURCES}")
    })
}

/// The private `sources.list` for `suites` (security suites at the security URI).
pub fn sources_list(mirrors: &Mirrors, suites: &[&str]) -> String {
    let keyring = mirrors.keyring.clone().or_else(|| {
        Path::new(DEFAULT_KEYRING)
            .is_file()
            .then(|| DEFAULT_KEYRING.into())
    });
    let opts = keyring
        .map(|k| format!("[signed-by={k}] "))
        .unwrap_or_default();
    let mut out =
        String::from("# Written by `cargo xtask vmtest`; used only with its private apt state.\n");
    for suite in suites {
        let uri = if suite.ends_with("-security") {
            &mirrors.security
        } else {
            &mirrors.debian
        };
        out.push_str(&format!("deb {opts}{uri} {suite} main\n"));
    }
    out
}

/// One available version of a package, from `apt-cache madison`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub package: String,
    pub version: String,
    pub suite: String,
}

/// Parses `apt-cache madison` lines:
/// ` pkg | 6.1.158-1 | http://mirror/debian bookworm/main amd64 Packages`.
pub fn parse_madison(out: &str) -> Vec<Candidate> {
    out.lines()
        .filter_map(|line| {
            let mut cols = line.split('|').map(str::trim);
            let (package, version, source) = (cols.next()?, cols.next()?, cols.next()?);
            let suite = source.split_whitespace().nth(1)?.split('/').next()?;
            if package.is_empty() || version.is_empty() || suite.is_empty() {
                return None;
            }
            Some(Candidate {
                package: package.to_string(),
                version: version.to_string(),
                suite: suite.to_string(),
            })
        })
        .collect()
}

/// Package names from `apt-cache search --names-only` (`name - description`).
pub fn parse_search(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|line| line.split(" - ").next())
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains(' '))
        .map(str::to_string)
        .collect()
}

/// The newest candidate of `series` in its suites.
pub fn newest<'a>(series: &Series, candidates: &'a [Candidate]) -> Option<&'a Candidate> {
    candidates
        .iter()
        .filter(|c| series.suites.contains(&c.suite.as_str()) && series.matches(&c.package))
        .max_by(|a, b| debver::compare(&a.version, &b.version))
}

/// The value of `field` in the first stanza of `apt-cache show` output.
pub fn stanza_field(show: &str, field: &str) -> Option<String> {
    let stanza = show.split("\n\n").next()?;
    stanza.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(field)
            .then(|| value.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

/// A [`PrivateApt`] prepared (index downloaded) only when a kernel must be fetched.
pub struct LazyApt {
    dir: PathBuf,
    suites: Vec<&'static str>,
    apt: Option<PrivateApt>,
}

impl LazyApt {
    pub fn new(dir: PathBuf, suites: Vec<&'static str>) -> Self {
        LazyApt {
            dir,
            suites,
            apt: None,
        }
    }

    pub fn get(&mut self) -> anyhow::Result<&PrivateApt> {
        if self.apt.is_none() {
            self.apt = Some(PrivateApt::prepare(&self.dir, &self.suites)?);
        }
        self.apt.as_ref().context("private apt not prepared")
    }
}

/// apt-get/apt-cache bound to a private configuration directory.
pub struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    /// Writes the private sources list for `suites` and runs `apt-get update` on it.
    pub fn prepare(dir: &Path, suites: &[&str]) -> anyhow::Result<Self> {
        let mirrors = machine_mirrors()?;
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("create {}", dir.join(sub).display()))?;
        }
        let list = dir.join("sources.list");
        std::fs::write(&list, sources_list(&mirrors, suites))
            .with_context(|| format!("write {}", list.display()))?;
        let apt = PrivateApt {
            dir: dir.to_path_buf(),
        };
        proc::run(apt.cmd("apt-get").args(["-q", "update"]))
            .context("apt-get update (private sources)")?;
        Ok(apt)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
        for o in [
            opt("Dir::Etc::SourceList", &self.dir.join("sources.list")),
            "Dir::Etc::SourceParts=/dev/null".to_string(),
            opt("Dir::State::Lists", &self.dir.join("lists")),
            opt("Dir::Cache", &self.dir.join("cache")),
            // Files under target/ belong to root: the _apt sandbox user could not write them.
            "APT::Sandbox::User=root".to_string(),
            // Only the Packages indexes are needed: skip AppStream metadata and translations.
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_string(),
            "Acquire::Languages=none".to_string(),
        ] {
            cmd.arg("-o").arg(o);
        }
        cmd
    }

    /// The newest package of `series` in its suites.
    pub fn resolve(&self, series: &Series) -> anyhow::Result<Candidate> {
        let names = parse_search(&proc::stdout(
            self.cmd("apt-cache")
                .args(["search", "--names-only"])
                .arg(series.search_regex()),
        )?);
        let names: Vec<String> = names.into_iter().filter(|n| series.matches(n)).collect();
        if names.is_empty() {
            bail!(
                "no package matching {} in the Debian index",
                series.search_regex()
            );
        }
        let madison = proc::stdout(self.cmd("apt-cache").arg("madison").args(&names))?;
        let candidates = parse_madison(&madison);
        newest(series, &candidates).cloned().with_context(|| {
            format!(
                "no package matching {} in suite(s) {}",
                series.search_regex(),
                series.suites.join(", ")
            )
        })
    }

    /// The SHA256 the index records for `c`.
    pub fn sha256(&self, c: &Candidate) -> anyhow::Result<String> {
        let show = proc::stdout(
            self.cmd("apt-cache")
                .arg("show")
                .arg(format!("{}={}", c.package, c.version)),
        )?;
        stanza_field(&show, "SHA256")
            .map(|s| s.to_ascii_lowercase())
            .with_context(|| format!("no SHA256 for {} {} in the index", c.package, c.version))
    }

    /// Downloads `c` into the empty directory `dir`; returns the .deb path.
    pub fn download(&self, c: &Candidate, dir: &Path) -> anyhow::Result<PathBuf> {
        proc::run(
            self.cmd("apt-get")
                .args(["-q", "download"])
                .arg(format!("{}={}", c.package, c.version))
                .current_dir(dir),
        )?;
        let mut debs = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry.context("read dir entry")?.path();
            if path.extension().is_some_and(|e| e == "deb") {
                debs.push(path);
            }
        }
        match debs.as_slice() {
            [deb] => Ok(deb.clone()),
            _ => bail!(
                "expected one .deb in {} after apt-get download, found {}",
                dir.display(),
                debs.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmtest::kernel::SERIES;

    const DEB822: &str = "\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security/
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: trixie
Components: main
";

    fn series(name: &str) -> &'static Series {
        SERIES.iter().find(|s| s.name == name).expect("series")
    }

    #[test]
    fn deb822_keeps_enabled_deb_stanzas() {
        let entries = parse_deb822(DEB822);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].uris, vec!["http://mirror.example/debian"]);
        assert_eq!(entries[0].suites, vec!["bookworm", "bookworm-updates"]);
        assert_eq!(
            entries[0].signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        assert_eq!(entries[1].suites, vec!["bookworm-security"]);
    }

    #[test]
    fn deb822_inline_key_is_not_used_as_keyring() {
        let text = "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm\n\
                    Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n";
        let m = pick_mirrors(&parse_deb822(text)).expect("mirrors");
        assert_eq!(m.keyring, None);
        assert_eq!(m.security, "http://m.example/debian-security");
    }

    #[test]
    fn one_line_sources_with_and_without_options() {
        let text = "# comment\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n\
                    deb-src http://m.example/debian bookworm main\n\
                    deb http://m.example/debian-security bookworm-security main # trailing\n\
                    deb [broken http://x y\n";
        let entries = parse_one_line(text);
        assert_eq!(
            entries,
            vec![
                SourceEntry {
                    uris: vec!["http://m.example/debian".into()],
                    suites: vec!["bookworm".into()],
                    signed_by: Some("/k.gpg".into()),
                },
                SourceEntry {
                    uris: vec!["http://m.example/debian-security".into()],
                    suites: vec!["bookworm-security".into()],
                    signed_by: None,
                },
            ]
        );
    }

    #[test]
    fn mirrors_come_from_the_machine_entries() {
        let m = pick_mirrors(&parse_deb822(DEB822)).expect("mirrors");
        assert_eq!(
            m,
            Mirrors {
                debian: "http://mirror.example/debian".into(),
                security: "http://mirror.example/debian-security".into(),
                keyring: Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()),
            }
        );
        assert_eq!(pick_mirrors(&[]), None);
        let only_security = parse_one_line("deb http://m.example/ds bookworm-security main\n");
        assert_eq!(pick_mirrors(&only_security), None);
    }

    #[test]
    fn debian_archive_preferred_over_third_party() {
        let entries = parse_one_line(
            "deb https://deb.thirdparty.example/node_20.x nodistro main\n\
             deb http://m.example/debian/ bookworm main\n",
        );
        let m = pick_mirrors(&entries).expect("mirrors");
        assert_eq!(m.debian, "http://m.example/debian");
    }

    #[test]
    fn sources_list_puts_security_suites_on_security_uri() {
        let m = Mirrors {
            debian: "http://m.example/debian".into(),
            security: "http://s.example/debian-security".into(),
            keyring: Some("/k.gpg".into()),
        };
        let text = sources_list(&m, &["bullseye", "bookworm-security", "sid"]);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            vec![
                "deb [signed-by=/k.gpg] http://m.example/debian bullseye main",
                "deb [signed-by=/k.gpg] http://s.example/debian-security bookworm-security main",
                "deb [signed-by=/k.gpg] http://m.example/debian sid main",
            ]
        );
    }

    const MADISON: &str = "\
linux-image-6.1.0-55-cloud-amd64 | 6.1.153-1 | http://m.example/debian bookworm/main amd64 Packages
linux-image-6.1.0-56-cloud-amd64 | 6.1.158-1 | http://m.example/debian bookworm/main amd64 Packages
linux-image-6.1.0-57-cloud-amd64 | 6.1.160-1 | http://m.example/debian-security bookworm-security/main amd64 Packages
linux-image-6.12.117+deb12-cloud-amd64 | 6.12.117-1~deb12u1 | http://m.example/debian-security bookworm-security/main amd64 Packages
linux-image-6.12.9+deb12-cloud-amd64 | 6.12.9-1~deb12u1 | http://m.example/debian-security bookworm-security/main amd64 Packages
linux-image-6.1.0-56-cloud-amd64-dbg | 6.1.158-1 | http://m.example/debian bookworm/main amd64 Packages
garbage line
";

    #[test]
    fn madison_lines_parse_into_candidates() {
        let c = parse_madison(MADISON);
        assert_eq!(c.len(), 6);
        assert_eq!(
            c[0],
            Candidate {
                package: "linux-image-6.1.0-55-cloud-amd64".into(),
                version: "6.1.153-1".into(),
                suite: "bookworm".into(),
            }
        );
        assert_eq!(c[2].suite, "bookworm-security");
    }

    #[test]
    fn newest_is_per_series_and_suite_by_debian_version() {
        let c = parse_madison(MADISON);
        // 6.1 takes the newest of bookworm and bookworm-security.
        let n = newest(series("6.1"), &c).expect("6.1");
        assert_eq!(n.package, "linux-image-6.1.0-57-cloud-amd64");
        assert_eq!(n.suite, "bookworm-security");
        // A 6.1 only in a suite the series does not use is ignored.
        let mut c2 = c.clone();
        c2.iter_mut().for_each(|x| {
            if x.suite == "bookworm-security" {
                x.suite = "trixie".into();
            }
        });
        let n = newest(series("6.1"), &c2).expect("6.1");
        assert_eq!(n.package, "linux-image-6.1.0-56-cloud-amd64");
        assert_eq!(newest(series("6.12"), &c2), None);
        // 6.12.117 beats 6.12.9 numerically, not lexically.
        let n = newest(series("6.12"), &c).expect("6.12");
        assert_eq!(n.package, "linux-image-6.12.117+deb12-cloud-amd64");
        assert_eq!(newest(series("5.10"), &c), None);
        assert_eq!(newest(series("7.x"), &c), None);
    }

    #[test]
    fn search_output_gives_names() {
        let out = "linux-image-6.1.0-56-cloud-amd64 - Linux 6.1 for x86-64 cloud\n\
                   linux-image-6.1.0-56-cloud-amd64-dbg - Debug symbols for linux-image-6.1.0-56-cloud-amd64\n\n";
        assert_eq!(
            parse_search(out),
            vec![
                "linux-image-6.1.0-56-cloud-amd64",
                "linux-image-6.1.0-56-cloud-amd64-dbg"
            ]
        );
    }

    #[test]
    fn stanza_field_reads_first_stanza_only() {
        let show = "Package: linux-image-6.1.0-56-cloud-amd64\nVersion: 6.1.158-1\n\
                    SHA256: ABCDEF0123\nDescription: x\n\n\
                    Package: linux-image-6.1.0-56-cloud-amd64\nSHA256: 999\n";
        assert_eq!(stanza_field(show, "SHA256").as_deref(), Some("ABCDEF0123"));
        assert_eq!(stanza_field(show, "sha256").as_deref(), Some("ABCDEF0123"));
        assert_eq!(stanza_field(show, "Version").as_deref(), Some("6.1.158-1"));
        assert_eq!(stanza_field(show, "MD5sum"), None);
        assert_eq!(stanza_field("", "SHA256"), None);
    }
}
