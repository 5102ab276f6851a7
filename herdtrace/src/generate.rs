//! `herdtrace generate` (hidden): the man pages and shell completions that
//! packages install, rendered from the clap definitions so that they never
//! drift from `--help`. `cargo xtask dist` runs it on the built binary.
//!
//! Pages follow git's layout: `herdtrace(1)` describes the tracer and lists
//! the subcommands, each of which has its own page (`man herdtrace-check`).
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Command, CommandFactory as _};
use clap_complete::Shell;
use clap_mangen::roff::{bold, roman, Roff};

use crate::cli::Cli;

const EXAMPLES: &str = "\
Examples:
  herdtrace generate man /tmp/man && man -l /tmp/man/herdtrace.1
  herdtrace generate completions bash > /usr/share/bash-completion/completions/herdtrace
  herdtrace generate completions zsh > /usr/share/zsh/vendor-completions/_herdtrace
  herdtrace generate completions fish > /usr/share/fish/vendor_completions.d/herdtrace.fish";

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Write herdtrace.1 and one page per subcommand (herdtrace-check.1, ...) into DIR
    /// and print their paths.
    Man {
        /// Directory for the pages (created if missing).
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on stdout.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

pub fn run(args: GenerateArgs) -> anyhow::Result<i32> {
    let mut stdout = std::io::stdout().lock();
    match args.what {
        What::Man { dir } => {
            for path in write_man_pages(&dir)? {
                writeln!(stdout, "{}", path.display()).context("write to stdout")?;
            }
        }
        What::Completions { shell } => {
            stdout
                .write_all(&completions(shell))
                .context("write to stdout")?;
        }
    }
    stdout.flush().context("write to stdout")?;
    Ok(0)
}

/// Writes every page of `man_pages` into `dir`; returns the paths written.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, text) in man_pages()? {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// (file name, roff source) of `herdtrace.1` and of one page per visible
/// subcommand, in that order.
pub fn man_pages() -> anyhow::Result<Vec<(String, String)>> {
    // clap's generated `help` subcommand is no page of its own (--help is).
    let mut root = Cli::command().disable_help_subcommand(true);
    // Building sets the subcommands' display names (`herdtrace-check`) and
    // bin names (`herdtrace check`) that the pages are titled and used by.
    root.build();
    let mut pages = Vec::new();
    collect_pages(&root, None, &mut pages)?;
    Ok(pages)
}

fn collect_pages(
    cmd: &Command,
    parent: Option<&str>,
    pages: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    let name = page_name(cmd);
    pages.push((format!("{name}.1"), render_page(cmd, parent)?));
    for sub in visible_subcommands(cmd) {
        collect_pages(sub, Some(&name), pages)?;
    }
    Ok(())
}

fn page_name(cmd: &Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

fn visible_subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

/// One page: clap_mangen's sections, then the `--help` epilogue as
/// EXAMPLES (kept line by line, as typed) and a SEE ALSO section.
fn render_page(cmd: &Command, parent: Option<&str>) -> anyhow::Result<String> {
    // Every page's footer names the program and version (not `check`).
    let man = clap_mangen::Man::new(cmd.clone())
        .source(format!("herdtrace {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    // Left-adjusted, no hyphenation: command and page names stay whole and
    // copyable (`herdtrace-diagnose(1)`, not `herdtrace-di- agnose(1)`).
    let mut layout = Roff::new();
    layout.control("nh", []).control("ad", ["l"]);
    layout.to_writer(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if visible_subcommands(cmd).next().is_some() {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::new();
    if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        epilogue(&mut roff, &after.to_string());
    }
    see_also(&mut roff, cmd, parent);
    roff.to_writer(&mut out)?;
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    let page = String::from_utf8(out).context("man page is not UTF-8")?;
    Ok(once_each(&page, &APOSTROPHE_PREAMBLE))
}

/// What roff puts before every rendered chunk so that `'` prints as an
/// apostrophe (copyable in `jq '...'` examples); the page needs it once.
const APOSTROPHE_PREAMBLE: [&str; 2] = [".ie \\n(.g .ds Aq \\(aq", ".el .ds Aq '"];

/// `page` with each of `lines` kept only where it first occurs.
fn once_each(page: &str, lines: &[&str]) -> String {
    let mut seen = std::collections::HashSet::new();
    let mut out = String::with_capacity(page.len());
    for line in page.lines() {
        if lines.contains(&line) && !seen.insert(line) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Widest example line kept as typed: a terminal of 80 columns less man's
/// indent of 7 and a margin.
const EXAMPLE_WIDTH: usize = 72;

/// The `--help` epilogue: the indented lines after `Examples:` become
/// EXAMPLES (set without filling, columns kept as in `--help`), the prose
/// before and after them NOTES (filled paragraphs, reflowed to the terminal).
fn epilogue(roff: &mut Roff, text: &str) {
    let (notes, examples) = split_epilogue(text);
    let paragraphs: Vec<String> = notes
        .split(|l| l.trim().is_empty())
        .filter(|p| !p.is_empty())
        .map(|p| p.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "))
        .collect();
    if !paragraphs.is_empty() {
        roff.control("SH", ["NOTES"]);
        for (i, p) in paragraphs.iter().enumerate() {
            if i > 0 {
                roff.control("PP", []);
            }
            roff.text([roman(p.as_str())]);
        }
    }
    if !examples.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        roff.control("nf", []);
        for line in layout_examples(&examples, EXAMPLE_WIDTH) {
            roff.text([roman(line)]);
        }
        roff.control("fi", []);
    }
}

/// (prose lines, example lines): the examples are the lines after an
/// `Examples:` line up to the first unindented one; the rest is prose.
fn split_epilogue(text: &str) -> (Vec<&str>, Vec<&str>) {
    let lines: Vec<&str> = text.lines().collect();
    let Some(at) = lines.iter().position(|l| l.trim() == "Examples:") else {
        return (lines, Vec::new());
    };
    let after = &lines[at + 1..];
    let end = after
        .iter()
        .position(|l| !l.trim().is_empty() && !l.starts_with(char::is_whitespace))
        .unwrap_or(after.len());
    let mut notes = lines[..at].to_vec();
    notes.push("");
    notes.extend(&after[end..]);
    (notes, trim_blank_ends(&after[..end]).to_vec())
}

fn lines_fit(entries: &[Vec<&str>], width: usize) -> bool {
    entries.iter().flatten().all(|l| l.chars().count() <= width)
}

/// Example lines without their common indent. When one is wider than
/// `width`, every example (a line and the deeper-indented lines continuing
/// its description) is stacked: the command alone, its description below,
/// indented by 4.
fn layout_examples(lines: &[&str], width: usize) -> Vec<String> {
    let indent = common_indent(lines);
    let lines: Vec<&str> = lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect();
    let mut entries: Vec<Vec<&str>> = Vec::new();
    for line in lines {
        match entries.last_mut() {
            Some(entry) if line.starts_with(' ') => entry.push(line),
            _ => entries.push(vec![line]),
        }
    }
    // One wide line stacks every example, so that the block reads evenly.
    if lines_fit(&entries, width) {
        return entries.concat().iter().map(|l| l.to_string()).collect();
    }
    let mut out = Vec::new();
    for entry in entries {
        let (command, description) = split_description(entry[0]);
        out.push(command.to_string());
        let rest = description
            .into_iter()
            .chain(entry[1..].iter().map(|l| l.trim()));
        out.extend(rest.filter(|l| !l.is_empty()).map(|l| format!("    {l}")));
    }
    out
}

/// `cmd --flag   what it does` -> (`cmd --flag`, Some(`what it does`)):
/// the description starts after the first run of two or more spaces.
fn split_description(line: &str) -> (&str, Option<&str>) {
    match line.find("  ") {
        Some(at) => {
            let description = line[at..].trim();
            (
                line[..at].trim_end(),
                (!description.is_empty()).then_some(description),
            )
        }
        None => (line, None),
    }
}

fn trim_blank_ends<'a, 'b>(lines: &'b [&'a str]) -> &'b [&'a str] {
    let start = lines.iter().position(|l| !l.trim().is_empty());
    let end = lines.iter().rposition(|l| !l.trim().is_empty());
    match (start, end) {
        (Some(s), Some(e)) => &lines[s..=e],
        _ => &[],
    }
}

/// The smallest leading-space count over the non-blank lines.
fn common_indent(lines: &[&str]) -> usize {
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0)
}

/// The parent page and the subcommands' pages.
fn see_also(roff: &mut Roff, cmd: &Command, parent: Option<&str>) {
    let mut refs: Vec<String> = parent.map(|p| format!("{p}(1)")).into_iter().collect();
    refs.extend(visible_subcommands(cmd).map(|s| format!("{}(1)", page_name(s))));
    if refs.is_empty() {
        return;
    }
    roff.control("SH", ["SEE ALSO"]);
    let last = refs.len() - 1;
    for (i, r) in refs.iter().enumerate() {
        let sep = if i == last { "" } else { "," };
        roff.text([bold(r.as_str()), roman(sep)]);
    }
}

/// The completion script for `shell`, without hidden subcommands.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut cmd = without_hidden_subcommands(&Cli::command());
    let mut buf = Vec::new();
    // Into memory: clap_complete panics on a write error, stdout may be closed.
    clap_complete::generate(shell, &mut cmd, "herdtrace", &mut buf);
    buf
}

/// `cmd` (herdtrace's) rebuilt with only its visible subcommands:
/// clap_complete offers every subcommand, hidden or not, and clap has no way
/// to remove one.
fn without_hidden_subcommands(cmd: &Command) -> Command {
    let mut out = Command::new("herdtrace")
        .args(cmd.get_arguments().cloned())
        .groups(cmd.get_groups().cloned())
        .subcommands(visible_subcommands(cmd).cloned())
        .args_conflicts_with_subcommands(cmd.is_args_conflicts_with_subcommands_set());
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if cmd.get_version().is_some() {
        out = out.version(env!("CARGO_PKG_VERSION"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible_names(cmd: &Command) -> Vec<String> {
        visible_subcommands(cmd)
            .map(|s| s.get_name().to_string())
            .collect()
    }

    #[test]
    fn one_page_per_visible_subcommand_and_none_for_hidden_ones() {
        let pages = man_pages().expect("pages");
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        let mut want = vec!["herdtrace.1".to_string()];
        want.extend(
            visible_names(&Cli::command())
                .iter()
                .map(|s| format!("herdtrace-{s}.1")),
        );
        assert_eq!(names, want);
        for hidden in ["selftest", "generate"] {
            assert!(!names.iter().any(|n| n.contains(hidden)), "{hidden}");
        }
        assert!(names.contains(&"herdtrace-check.1"));
        assert!(names.contains(&"herdtrace-diagnose.1"));
    }

    #[test]
    fn top_page_lists_subcommands_options_examples_and_see_also() {
        let pages = man_pages().expect("pages");
        let (_, top) = &pages[0];
        assert!(
            top.lines().any(|l| l.starts_with(".TH herdtrace 1 ")),
            "{top}"
        );
        for line in APOSTROPHE_PREAMBLE {
            assert_eq!(top.lines().filter(|l| *l == line).count(), 1, "{line}");
        }
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "SUBCOMMANDS",
            "EXAMPLES",
            "\"SEE ALSO\"",
            "VERSION",
        ] {
            assert!(top.contains(&format!("\n.SH {section}\n")), "{section}");
        }
        for sub in visible_names(&Cli::command()) {
            assert!(top.contains(&format!("herdtrace\\-{sub}(1)")), "{sub}");
        }
        assert!(!top.contains("selftest") && !top.contains("generate"));
        // The tracer's own options are on the top page.
        assert!(top.contains("\\-\\-prometheus"));
        assert!(top.contains(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn examples_keep_their_lines_and_alignment() {
        let pages = man_pages().expect("pages");
        let (_, check) = pages
            .iter()
            .find(|(n, _)| n == "herdtrace-check.1")
            .expect("check page");
        let examples = check
            .split("\n.SH EXAMPLES\n.nf\n")
            .nth(1)
            .and_then(|rest| rest.split("\n.fi\n").next())
            .expect("EXAMPLES block without filling");
        let lines: Vec<&str> = examples.lines().collect();
        // The two-space indent of --help is dropped; one example is wider
        // than 72 columns, so each description is under its command.
        assert_eq!(lines[0], "sudo herdtrace check", "{examples}");
        assert!(
            lines[1].starts_with("    programs, probe points"),
            "{examples}"
        );
        assert!(lines.contains(&"sudo herdtrace check \\-\\-json | jq \\*(Aq.backend.auto\\*(Aq"));
        assert!(check.contains("\n.SH \"SEE ALSO\"\n\\fBherdtrace(1)\\fR\n"));
        assert!(
            !check.contains(".SH VERSION"),
            "subcommands carry no version"
        );
    }

    #[test]
    fn epilogue_makes_prose_notes_and_examples_and_escapes_control_lines() {
        let mut roff = Roff::new();
        epilogue(
            &mut roff,
            "Prose first,\n.starts with a dot.\n\nSecond.\nExamples:\n  a -x\n    continued\n\n\
             After the examples.\n",
        );
        assert_eq!(
            roff.to_roff(),
            ".SH NOTES\nProse first, .starts with a dot.\n.PP\nSecond.\n.PP\nAfter the examples.\n\
             .SH EXAMPLES\n.nf\na \\-x\n  continued\n.fi\n"
        );
        let mut only_prose = Roff::new();
        epilogue(&mut only_prose, "Just text.");
        assert_eq!(only_prose.to_roff(), ".SH NOTES\nJust text.\n");
        let mut lead_dot = Roff::new();
        epilogue(&mut lead_dot, ".dot first");
        assert_eq!(lead_dot.to_roff(), ".SH NOTES\n\\&.dot first\n");
        let mut empty = Roff::new();
        epilogue(&mut empty, "Examples:\n\n");
        assert_eq!(empty.to_roff(), "");
    }

    #[test]
    fn split_epilogue_ends_examples_at_the_first_unindented_line() {
        let (notes, examples) = split_epilogue("Examples:\n  a\n  b\nRun it.\nTwice.");
        assert_eq!(examples, ["  a", "  b"]);
        assert_eq!(notes, ["", "Run it.", "Twice."]);
        let (notes, examples) = split_epilogue("Intro.\n\nExamples:\n  a\n");
        assert_eq!(examples, ["  a"]);
        assert_eq!(notes, ["Intro.", "", ""]);
        let (notes, examples) = split_epilogue("no examples\n  indented");
        assert!(examples.is_empty());
        assert_eq!(notes, ["no examples", "  indented"]);
    }

    #[test]
    fn wide_examples_are_stacked_narrow_ones_kept() {
        let lines = [
            "  short cmd      what",
            "  a much longer command line    and its description that runs on",
            "                                over two lines",
            "  cmd | jq '.x'",
        ];
        assert_eq!(
            layout_examples(&lines, 40),
            [
                "short cmd",
                "    what",
                "a much longer command line",
                "    and its description that runs on",
                "    over two lines",
                "cmd | jq '.x'",
            ]
        );
        // Everything fits: kept as typed, only the common indent dropped.
        assert_eq!(
            layout_examples(&lines, 80),
            [
                "short cmd      what",
                "a much longer command line    and its description that runs on",
                "                              over two lines",
                "cmd | jq '.x'",
            ]
        );
        // Too wide but nothing to split: kept whole.
        assert_eq!(layout_examples(&["  abcdefgh"], 4), ["abcdefgh"]);
        assert_eq!(split_description("a b  c d"), ("a b", Some("c d")));
        assert_eq!(split_description("a b   "), ("a b", None));
        assert_eq!(split_description("a b"), ("a b", None));
    }

    #[test]
    fn every_example_line_fits_the_width_unless_it_cannot_be_split() {
        let root = Cli::command();
        let mut checked = 0;
        for cmd in std::iter::once(&root).chain(visible_subcommands(&root)) {
            let Some(after) = cmd.get_after_help() else {
                continue;
            };
            let after = after.to_string();
            let (_, examples) = split_epilogue(&after);
            for line in layout_examples(&examples, EXAMPLE_WIDTH) {
                let fits = line.chars().count() <= EXAMPLE_WIDTH;
                assert!(
                    fits || !line.trim().contains("  "),
                    "{}: {line}",
                    cmd.get_name()
                );
                checked += 1;
            }
        }
        assert!(checked > 20, "{checked} example lines");
    }

    #[test]
    fn once_each_keeps_first_occurrences() {
        assert_eq!(once_each("a\nb\na\nc\nb\n", &["a", "b"]), "a\nb\nc\n");
        assert_eq!(once_each("x\nx\n", &["a"]), "x\nx\n");
    }

    #[test]
    fn indentation_helpers() {
        assert_eq!(common_indent(&["  a", "    b", "", "   "]), 2);
        assert_eq!(common_indent(&["a", "  b"]), 0);
        assert_eq!(common_indent(&[]), 0);
        assert_eq!(
            trim_blank_ends(&["", " ", "a", "", "b", ""]),
            &["a", "", "b"]
        );
        assert!(trim_blank_ends(&["", "  "]).is_empty());
    }

    #[test]
    fn completions_offer_visible_subcommands_and_options_only() {
        let cli = Cli::command();
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completions(shell)).expect("utf-8");
            for sub in visible_names(&cli) {
                assert!(script.contains(&sub), "{shell}: {sub}");
            }
            for hidden in ["selftest", "generate"] {
                assert!(!script.contains(hidden), "{shell}: {hidden}");
            }
            assert!(script.contains("prometheus"), "{shell}: tracer options");
            assert!(
                script.contains("--model") || script.contains("-l model"),
                "{shell}"
            );
        }
        let bash = String::from_utf8(completions(Shell::Bash)).expect("utf-8");
        assert!(bash.contains("complete -F _herdtrace"), "{bash}");
    }

    #[test]
    fn rebuilt_command_keeps_everything_but_hidden_subcommands() {
        let cli = Cli::command();
        let rebuilt = without_hidden_subcommands(&cli);
        let ids = |c: &Command| -> Vec<String> {
            c.get_arguments().map(|a| a.get_id().to_string()).collect()
        };
        assert_eq!(ids(&rebuilt), ids(&cli));
        assert_eq!(
            rebuilt
                .get_subcommands()
                .map(|s| s.get_name().to_string())
                .collect::<Vec<_>>(),
            visible_names(&cli)
        );
        assert!(rebuilt.is_args_conflicts_with_subcommands_set());
        assert_eq!(rebuilt.get_version(), cli.get_version());
        assert_eq!(rebuilt.get_name(), cli.get_name());
        assert!(cli.get_subcommands().any(|s| s.is_hide_set()));
        rebuilt.debug_assert();
    }
}
