//! Reading the VM's serial console: per-command output between markers, the
//! result sentinel, and kernel failures (panic, RCU stall).
use std::collections::{BTreeMap, VecDeque};

/// Printed by `/init` before command `n`'s output.
pub const BEGIN: &str = "=== BEGIN ";
/// Printed by `/init` after command `n`: `=== END <n> rc=<rc>`.
pub const END: &str = "=== END ";
/// Printed by `/init` last: `PASS` or `FAIL <reason>`.
pub const SENTINEL: &str = "HERDTRACE-VMTEST-RESULT: ";
/// Lines kept for the failure report.
const TAIL_LINES: usize = 30;

/// Console text that means the kernel is broken.
const FATAL: &[&str] = &[
    "Kernel panic",
    "self-detected stall",
    "detected stalls on CPU",
    "RCU stall",
];

/// The in-VM verdict line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
}

/// Removes terminal escape sequences and control characters: the firmware and
/// the kernel reset the terminal (`ESC c`, `ESC [2J`) on the same line as the
/// first marker, and programs may colour their output.
pub fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // Two-character sequences such as `ESC c` (reset).
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// What a terminal would show of one console line: the text after the last
/// carriage return (firmware and progress output rewrite the line), without
/// escape sequences and control characters.
pub fn visible_text(raw: &str) -> String {
    let line = raw.trim_end_matches(['\r', '\n']);
    strip_escapes(line.rsplit('\r').next().unwrap_or(line))
}

/// Whether a line comes from the kernel's printk (`[   12.345678] ...`).
pub fn is_kernel_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('[') else {
        return false;
    };
    let Some((stamp, _)) = rest.split_once(']') else {
        return false;
    };
    let stamp = stamp.trim_start();
    let Some((secs, micros)) = stamp.split_once('.') else {
        return false;
    };
    !secs.is_empty()
        && !micros.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && micros.bytes().all(|b| b.is_ascii_digit())
}

/// Accumulated console state, fed one line at a time.
#[derive(Debug, Default)]
pub struct Console {
    current: Option<usize>,
    /// Output of each command, by its 1-based number.
    pub outputs: BTreeMap<usize, Vec<String>>,
    /// Exit code of each command that finished.
    pub rcs: BTreeMap<usize, i32>,
    pub verdict: Option<Verdict>,
    /// The first fatal kernel line seen.
    pub fatal: Option<String>,
    tail: VecDeque<String>,
}

impl Console {
    /// Feeds one console line; see [`visible_text`] for what is kept.
    pub fn feed(&mut self, raw: &str) {
        let clean = visible_text(raw);
        let line = clean.as_str();
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());

        let kernel = is_kernel_line(line);
        // Command output may legitimately contain these words; kernel lines
        // and lines outside commands may not.
        if self.fatal.is_none()
            && (kernel || self.current.is_none())
            && FATAL.iter().any(|f| line.contains(f))
        {
            self.fatal = Some(line.to_string());
        }
        // Markers are searched anywhere in the line: output without a final
        // newline (`printf x`) or firmware text can precede them.
        if let Some(n) = self.current {
            if let Some(pos) = line.find(END) {
                if let Some(rc) = parse_end(&line[pos + END.len()..], n) {
                    let before = &line[..pos];
                    if !before.is_empty() && !kernel {
                        self.outputs.entry(n).or_default().push(before.to_string());
                    }
                    self.rcs.insert(n, rc);
                    self.current = None;
                    return;
                }
            }
            if !kernel {
                self.outputs.entry(n).or_default().push(line.to_string());
            }
            return;
        }
        let after = |marker: &str| line.find(marker).map(|pos| &line[pos + marker.len()..]);
        if let Some(n) = after(BEGIN).and_then(|r| r.trim().parse().ok()) {
            self.current = Some(n);
            self.outputs.entry(n).or_default();
        } else if let Some(v) = after(SENTINEL) {
            let v = v.trim();
            self.verdict = Some(if v == "PASS" {
                Verdict::Pass
            } else {
                Verdict::Fail(v.strip_prefix("FAIL").unwrap_or(v).trim().to_string())
            });
        }
    }

    /// The last console lines, for failure reports.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}

/// Parses the rest of `=== END <n> rc=<rc>` for command `n`.
fn parse_end(rest: &str, n: usize) -> Option<i32> {
    let (num, rc) = rest.trim().split_once(' ')?;
    if num.parse::<usize>().ok()? != n {
        return None;
    }
    rc.trim().strip_prefix("rc=")?.parse().ok()
}

/// How a boot ended, as seen from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited by itself.
    Exited,
    /// The time limit (seconds) ran out.
    TimedOut(u64),
}

/// Final pass/fail decision from the console and how QEMU ended.
/// `commands` is how many commands the init script was given.
pub fn decide(console: &Console, ending: Ending, commands: usize) -> Verdict {
    if let Some(line) = &console.fatal {
        return Verdict::Fail(format!("kernel failure: {}", line.trim()));
    }
    match (&console.verdict, ending) {
        (Some(Verdict::Pass), _) => {
            let missing: Vec<String> = (1..=commands)
                .filter(|n| !console.rcs.contains_key(n))
                .map(|n| n.to_string())
                .collect();
            let failed: Vec<String> = console
                .rcs
                .iter()
                .filter(|(_, rc)| **rc != 0)
                .map(|(n, rc)| format!("{n} (rc={rc})"))
                .collect();
            if !missing.is_empty() {
                Verdict::Fail(format!("no END marker for command {}", missing.join(", ")))
            } else if !failed.is_empty() {
                Verdict::Fail(format!("commands failed: {}", failed.join(", ")))
            } else {
                Verdict::Pass
            }
        }
        (Some(Verdict::Fail(reason)), _) => Verdict::Fail(reason.clone()),
        (None, Ending::TimedOut(secs)) => Verdict::Fail(format!("timeout after {secs} s")),
        (None, Ending::Exited) => Verdict::Fail("QEMU exited without a result line".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(text: &str) -> Console {
        let mut c = Console::default();
        for line in text.lines() {
            c.feed(line);
        }
        c
    }

    #[test]
    fn escapes_and_controls_are_stripped() {
        assert_eq!(
            strip_escapes("\x1bc\x1b[?7l\x1b[2J=== BEGIN 1\r"),
            "=== BEGIN 1"
        );
        assert_eq!(
            strip_escapes("\x1b[1m\x1b[4mUsage:\x1b[0m \x1b[1mherdtrace\x1b[0m"),
            "Usage: herdtrace"
        );
        assert_eq!(strip_escapes("\x1b]0;title\x07text"), "text");
        assert_eq!(strip_escapes("\x1b]0;title\x1b\\text"), "text");
        assert_eq!(strip_escapes("a\tb\x08c\u{7f}d"), "a\tbcd");
        assert_eq!(strip_escapes("plain ünïcode"), "plain ünïcode");
        assert_eq!(strip_escapes("cut \x1b["), "cut ");
    }

    #[test]
    fn visible_text_keeps_what_follows_the_last_carriage_return() {
        assert_eq!(visible_text("line\r\n"), "line");
        assert_eq!(visible_text("10%\r50%\r100%\r"), "100%");
        assert_eq!(
            visible_text("Booting from ROM..\x1bc\x1b[?7l\x1b[2J\x1b[0m.\r=== BEGIN 1"),
            "=== BEGIN 1"
        );
        assert_eq!(visible_text(""), "");
    }

    #[test]
    fn firmware_text_before_markers_does_not_hide_them() {
        let c = feed(
            "\x1bc\x1b[?7l\x1b[2J=== BEGIN 1\r\nout\r\n=== END 1 rc=0\r\n\
             Booting from ROM...=== BEGIN 2\n=== END 2 rc=0\n\
             junk HERDTRACE-VMTEST-RESULT: PASS\n",
        );
        assert_eq!(c.rcs.get(&1), Some(&0));
        assert_eq!(c.outputs.get(&1), Some(&vec!["out".to_string()]));
        assert_eq!(c.rcs.get(&2), Some(&0));
        assert_eq!(c.verdict, Some(Verdict::Pass));
    }

    #[test]
    fn output_without_final_newline_is_split_from_end_marker() {
        let c = feed("=== BEGIN 1\nfirst\npartial=== END 1 rc=4\n");
        assert_eq!(c.rcs.get(&1), Some(&4));
        assert_eq!(
            c.outputs.get(&1),
            Some(&vec!["first".to_string(), "partial".to_string()])
        );
    }

    #[test]
    fn kernel_lines_are_recognised() {
        assert!(is_kernel_line("[    0.000000] Linux version 6.1.0"));
        assert!(is_kernel_line("[12345.678901] x"));
        assert!(!is_kernel_line("[ok] something"));
        assert!(!is_kernel_line("[    1.5 ] x"));
        assert!(!is_kernel_line("[.5] x"));
        assert!(!is_kernel_line("herdtrace: error"));
        assert!(!is_kernel_line("[1.2"));
    }

    #[test]
    fn commands_outputs_and_rcs_are_collected() {
        let c = feed(
            "[    1.000000] Run /init as init process\r\n\
             === BEGIN 1\r\n\
             usage: herdtrace\r\n\
             [    2.000000] random: crng init done\r\n\
             \r\n\
             === END 1 rc=0\r\n\
             noise between commands\n\
             === BEGIN 2\n\
             herdtrace: error: check: not implemented yet\n\
             === END 2 rc=1\n\
             HERDTRACE-VMTEST-RESULT: FAIL commands failed: 2\n",
        );
        assert_eq!(
            c.outputs.get(&1),
            Some(&vec!["usage: herdtrace".to_string(), String::new()])
        );
        assert_eq!(
            c.outputs.get(&2),
            Some(&vec![
                "herdtrace: error: check: not implemented yet".to_string()
            ])
        );
        assert_eq!(c.rcs.get(&1), Some(&0));
        assert_eq!(c.rcs.get(&2), Some(&1));
        assert_eq!(c.verdict, Some(Verdict::Fail("commands failed: 2".into())));
        assert_eq!(c.fatal, None);
        assert_eq!(
            decide(&c, Ending::Exited, 2),
            Verdict::Fail("commands failed: 2".into())
        );
    }

    #[test]
    fn end_marker_of_another_command_is_output() {
        let c = feed("=== BEGIN 1\n=== END 2 rc=0\n=== END 1 rc=x\n=== END 1 rc=3\n");
        assert_eq!(
            c.outputs.get(&1),
            Some(&vec![
                "=== END 2 rc=0".to_string(),
                "=== END 1 rc=x".to_string()
            ])
        );
        assert_eq!(c.rcs.get(&1), Some(&3));
        assert!(!c.rcs.contains_key(&2));
    }

    #[test]
    fn sentinel_inside_command_output_is_ignored() {
        let c = feed("=== BEGIN 1\nHERDTRACE-VMTEST-RESULT: PASS\n");
        assert_eq!(c.verdict, None);
        assert_eq!(
            decide(&c, Ending::TimedOut(300), 1),
            Verdict::Fail("timeout after 300 s".into())
        );
    }

    #[test]
    fn pass_requires_every_command_to_end_with_rc_zero() {
        let ok = feed("=== BEGIN 1\n=== END 1 rc=0\nHERDTRACE-VMTEST-RESULT: PASS\n");
        assert_eq!(decide(&ok, Ending::Exited, 1), Verdict::Pass);
        assert_eq!(
            decide(&ok, Ending::Exited, 2),
            Verdict::Fail("no END marker for command 2".into())
        );
        let bad = feed("=== BEGIN 1\n=== END 1 rc=2\nHERDTRACE-VMTEST-RESULT: PASS\n");
        assert_eq!(
            decide(&bad, Ending::Exited, 1),
            Verdict::Fail("commands failed: 1 (rc=2)".into())
        );
        let none = feed("[    1.000000] booting\n");
        assert_eq!(
            decide(&none, Ending::Exited, 1),
            Verdict::Fail("QEMU exited without a result line".into())
        );
    }

    #[test]
    fn panic_and_stalls_fail_even_after_pass() {
        let panic = feed(
            "HERDTRACE-VMTEST-RESULT: PASS\n\
             [    3.000000] Kernel panic - not syncing: Attempted to kill init!\n",
        );
        assert_eq!(
            decide(&panic, Ending::Exited, 0),
            Verdict::Fail(
                "kernel failure: [    3.000000] Kernel panic - not syncing: Attempted to kill init!"
                    .into()
            )
        );
        let stall = feed(
            "=== BEGIN 1\n\
             [   30.000000] rcu: INFO: rcu_sched self-detected stall on CPU\n",
        );
        assert!(stall.fatal.is_some(), "kernel lines count inside commands");
        let text = feed("=== BEGIN 1\nprinting the words Kernel panic is fine\n=== END 1 rc=0\n");
        assert_eq!(text.fatal, None);
    }

    #[test]
    fn tail_keeps_the_last_30_lines() {
        let mut c = Console::default();
        for i in 0..100 {
            c.feed(&format!("line {i}"));
        }
        let tail = c.tail();
        assert_eq!(tail.len(), 30);
        assert_eq!(tail[0], "line 70");
        assert_eq!(tail[29], "line 99");
    }
}
