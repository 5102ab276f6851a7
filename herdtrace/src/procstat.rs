//! `/proc/PID/stat` (proc(5)): the fields herdtrace, its tests and its
//! benchmarks read, from one parser.
//!
//! The command name is field 2, in parentheses, and may itself hold spaces
//! and parentheses (`4242 (we (ird) comm) S 1 ...`): it runs from the first
//! `(` to the *last* `)`, and the other fields are counted after that.
//!
//! xtask compiles this file in with `#[path]` (it cannot depend on the
//! herdtrace crate), so it uses only std and anyhow.
use std::path::Path;

use anyhow::{bail, Context as _, Result};

/// The fields of one `/proc/PID/stat` line that are read somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 1.
    pub pid: u32,
    /// Field 2, without its parentheses.
    pub comm: String,
    /// Field 3: `R`, `S`, `D`, `Z`, `T`, ...
    pub state: char,
    /// Field 4: the parent's pid (0 for the kernel's own roots).
    pub ppid: u32,
    /// Field 14: CPU time in user mode, in clock ticks.
    pub utime: u64,
    /// Field 15: CPU time in kernel mode, in clock ticks.
    pub stime: u64,
    /// Field 22: start time in clock ticks since boot (tells a reused pid apart).
    pub start_ticks: u64,
}

impl ProcStat {
    /// Parses the text of `/proc/PID/stat`. Anything short of the fields
    /// above, or not numbers where numbers belong, is an error naming the
    /// field; nothing panics.
    pub fn parse(text: &str) -> Result<ProcStat> {
        let open = text.find('(').context("no '(' opening the command name")?;
        let close = text.rfind(')').context("no ')' closing the command name")?;
        if close < open {
            bail!("')' before '(' around the command name");
        }
        let pid = text[..open].trim();
        let pid = pid
            .parse()
            .with_context(|| format!("field 1 (pid) is not a pid: {pid:?}"))?;
        let comm = text[open + 1..close].to_owned();
        // After the command name: field 3 first.
        let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
        let field = |n: usize| -> Result<&str> {
            rest.get(n - 3)
                .copied()
                .with_context(|| format!("field {n} missing ({} fields)", rest.len() + 2))
        };
        let number = |n: usize| -> Result<u64> {
            let f = field(n)?;
            f.parse()
                .with_context(|| format!("field {n} is not a number: {f:?}"))
        };
        let state = match field(3)?.as_bytes() {
            &[c] if c.is_ascii_alphabetic() => char::from(c),
            other => bail!(
                "field 3 (state) is not one letter: {:?}",
                String::from_utf8_lossy(other)
            ),
        };
        let ppid = field(4)?;
        let ppid = ppid
            .parse()
            .with_context(|| format!("field 4 (ppid) is not a pid: {ppid:?}"))?;
        Ok(ProcStat {
            pid,
            comm,
            state,
            ppid,
            utime: number(14)?,
            stime: number(15)?,
            start_ticks: number(22)?,
        })
    }

    /// Reads and parses `<proc_root>/<pid>/stat`. A command name that is not
    /// UTF-8 is read lossily (the process is still found).
    pub fn read(proc_root: &Path, pid: u32) -> Result<ProcStat> {
        let path = proc_root.join(pid.to_string()).join("stat");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        ProcStat::parse(&String::from_utf8_lossy(&bytes))
            .with_context(|| format!("parsing {}", path.display()))
    }

    /// CPU time used, user and kernel, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime.saturating_add(self.stime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line as Linux 6.x writes it (52 fields), for `comm`.
    fn line(comm: &str) -> String {
        format!(
            "4242 ({comm}) S 1 4242 4242 0 -1 4194560 1510 0 0 0 125 37 0 0 20 0 3 0 \
             123456 9000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 \
             0 0 0 0 0 0 0 0 0 0 0\n"
        )
    }

    fn err(text: &str) -> String {
        format!("{:#}", ProcStat::parse(text).expect_err(text))
    }

    #[test]
    fn reads_every_field_it_names() {
        let s = ProcStat::parse(&line("nginx")).expect("valid");
        assert_eq!(
            s,
            ProcStat {
                pid: 4242,
                comm: "nginx".into(),
                state: 'S',
                ppid: 1,
                utime: 125,
                stime: 37,
                start_ticks: 123456,
            }
        );
        assert_eq!(s.cpu_ticks(), 162);
    }

    #[test]
    fn command_names_with_spaces_and_parentheses() {
        for comm in [
            "we (ird) comm",
            "a) (b",
            "x)",
            ")",
            "((",
            "",
            " lead",
            "trail ",
            "1 (2) S 3",
        ] {
            let s = ProcStat::parse(&line(comm)).unwrap_or_else(|e| panic!("{comm:?}: {e:#}"));
            assert_eq!(s.comm, comm);
            assert_eq!(
                (s.pid, s.ppid, s.start_ticks),
                (4242, 1, 123456),
                "{comm:?}"
            );
        }
    }

    #[test]
    fn missing_fields_are_named() {
        assert!(err("1 (a) S").contains("field 4 missing"));
        assert!(err("1 (a) S 1 2 3 4 5 6 7 8 9 10").contains("field 14 missing"));
        let short = "1 (a) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18";
        assert!(err(short).contains("field 22 missing"), "{}", err(short));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(err("").contains("no '('"));
        assert!(err("12 nocomm S 1").contains("no '('"));
        assert!(err("12 (open S 1").contains("no ')'"));
        assert!(err("1 )x( S 1").contains("')' before '('"));
        assert!(err(&line("a").replacen("4242", "x", 1)).contains("field 1 (pid)"));
        assert!(err(&line("a").replacen("4242", "-1", 1)).contains("field 1 (pid)"));
        assert!(err(&line("a").replace(") S 1 ", ") S x ")).contains("field 4 (ppid)"));
        assert!(err(&line("a").replace(") S ", ") Sx ")).contains("field 3 (state)"));
        assert!(err(&line("a").replace(") S ", ") 7 ")).contains("field 3 (state)"));
        assert!(err(&line("a").replace(" 125 ", " -5 ")).contains("field 14"));
        assert!(err(&line("a").replace(" 123456 ", " 1e5 ")).contains("field 22"));
    }

    #[test]
    fn never_panics_on_any_cut_or_odd_byte() {
        let full = line("we (ird) comm");
        for end in 0..=full.len() {
            let _ = ProcStat::parse(&full[..end]);
        }
        for odd in [
            "\u{0}",
            "é",
            "(",
            ")",
            " ",
            "\n",
            "-",
            "99999999999999999999999",
        ] {
            for at in 0..full.len() {
                let mut text = full.clone();
                text.insert_str(at, odd);
                let _ = ProcStat::parse(&text);
            }
        }
    }

    #[test]
    fn reads_a_proc_tree_including_a_non_utf8_name() {
        let root = std::env::temp_dir().join(format!("herdtrace-proc-stat-{}", std::process::id()));
        std::fs::create_dir_all(root.join("7")).expect("mkdir");
        let mut bytes = line("ab").into_bytes();
        bytes[6] = 0xff; // the 'a'
        bytes.splice(0..4, *b"7   ");
        std::fs::write(root.join("7/stat"), &bytes).expect("write");
        let s = ProcStat::read(&root, 7).expect("lossy comm");
        assert_eq!((s.pid, s.comm.as_str()), (7, "\u{fffd}b"));
        let e = format!("{:#}", ProcStat::read(&root, 8).expect_err("absent"));
        assert!(e.contains("8/stat"), "{e}");
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let s = ProcStat::read(Path::new("/proc"), me).expect("own stat");
        assert_eq!(s.pid, me);
        assert!(
            s.ppid > 0 && s.start_ticks > 0 && !s.comm.is_empty(),
            "{s:?}"
        );
    }
}
