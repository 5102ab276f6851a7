//! `target/vmtest/report.md`: kernel, exact package version, per-command rc.
use super::console::Verdict;

/// `herdtrace::scenario::AGREEMENT_TOLERANCE`, as printed in the report.
const AGREEMENT_PERCENT: u32 = 10;

/// The outcome for one kernel series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesResult {
    pub series: String,
    /// Package and exact version; `None` if the kernel could not be fetched.
    pub package: Option<(String, String)>,
    pub verdict: Verdict,
    pub seconds: f64,
    /// Each command with its rc (`None`: it never finished).
    pub commands: Vec<(String, Option<i32>)>,
    /// Last console lines, kept for failures.
    pub tail: Vec<String>,
    /// `herdtrace selftest` result lines printed in this kernel.
    pub scenario_lines: Vec<String>,
}

/// One `herdtrace selftest` result: `PASS epoll-per-worker kprobe: woken/conn
/// 3.98 eagain/conn 0.39 losers/conn 0.39 spurious/conn 2.54 conns 200/200 lost
/// 0 {limits} [failures]`, `FAIL model backend: error`, or `SKIP model backend:
/// unavailable: reason`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioRow {
    pub status: Status,
    pub model: String,
    pub backend: String,
    /// woken, eagain, eagain_losers, spurious per connection; conns; None when the run failed early.
    pub figures: Option<([String; 4], String)>,
    /// What the kernel denied the tracer (its warnings), `;`-separated.
    pub limits: String,
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// Splits `PASS rest` / `FAIL rest` / `SKIP rest`.
fn status_of(line: &str) -> Option<(Status, &str)> {
    [
        ("PASS ", Status::Pass),
        ("FAIL ", Status::Fail),
        ("SKIP ", Status::Skip),
    ]
    .iter()
    .find_map(|(p, st)| line.strip_prefix(p).map(|r| (*st, r)))
}

/// The text between `open` and the next `close`.
fn between(text: &str, open: char, close: char) -> Option<String> {
    let i = text.find(open)?;
    let j = text[i..].find(close)? + i;
    Some(text[i + 1..j].to_string())
}

pub fn parse_scenario_line(line: &str) -> Option<ScenarioRow> {
    let (status, rest) = status_of(line)?;
    let (head, tail) = rest.split_once(": ")?;
    let (model, backend) = head.split_once(' ')?;
    if model == "agree" {
        return None;
    }
    let words: Vec<&str> = tail.split_whitespace().collect();
    let value = |key: &str| {
        words
            .windows(2)
            .find(|w| w[0] == key)
            .map(|w| w[1].to_string())
    };
    let figures = match (
        value("woken/conn"),
        value("eagain/conn"),
        value("losers/conn"),
        value("spurious/conn"),
        value("conns"),
    ) {
        (Some(w), Some(e), Some(l), Some(s), Some(c)) => Some(([w, e, l, s], c)),
        _ => None,
    };
    let (limits, note) = match figures {
        Some(_) => (
            between(tail, '{', '}').unwrap_or_default(),
            between(tail, '[', ']').unwrap_or_default(),
        ),
        None => (String::new(), tail.to_string()),
    };
    Some(ScenarioRow {
        status,
        model: model.to_string(),
        backend: backend.to_string(),
        figures,
        limits,
        note,
    })
}

/// `PASS agree MODEL A~B: woken/conn X vs Y diff D% [failures]`: two backends
/// attached together to the same run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgreeRow {
    pub passed: bool,
    pub model: String,
    pub backends: String,
    /// "X vs Y" and "D%"; None when the run failed early.
    pub figures: Option<(String, String)>,
    pub note: String,
}

pub fn parse_agree_line(line: &str) -> Option<AgreeRow> {
    let (status, rest) = status_of(line)?;
    let rest = rest.strip_prefix("agree ")?;
    let (head, tail) = rest.split_once(": ")?;
    let (model, backends) = head.split_once(' ')?;
    let words: Vec<&str> = tail.split_whitespace().collect();
    let figures = match words.as_slice() {
        ["woken/conn", a, "vs", b, "diff", d, ..] => Some((format!("{a} vs {b}"), d.to_string())),
        _ => None,
    };
    let note = match figures {
        Some(_) => between(tail, '[', ']').unwrap_or_default(),
        None => tail.to_string(),
    };
    Some(AgreeRow {
        passed: status == Status::Pass,
        model: model.to_string(),
        backends: backends.to_string(),
        figures,
        note,
    })
}

fn result_cell(status: Status, note: &str) -> String {
    match (status, note.is_empty()) {
        (Status::Pass, _) => "pass".to_string(),
        (Status::Skip, _) => format!("not run: {}", cell(note)),
        (Status::Fail, true) => "FAIL".to_string(),
        (Status::Fail, false) => format!("FAIL: {}", cell(note)),
    }
}

/// kernel x backend x model table of every selftest line.
pub fn render_matrix(results: &[SeriesResult]) -> String {
    let mut s = String::from(
        "| kernel | backend | model | woken/conn | eagain/conn | eagain_losers/conn | spurious/conn | conns | kernel limits | result |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let version = r.package.as_ref().map_or("-", |(_, v)| v.as_str());
        for row in r
            .scenario_lines
            .iter()
            .filter_map(|l| parse_scenario_line(l))
        {
            let (f, conns) = row
                .figures
                .clone()
                .unwrap_or_else(|| (["-".into(), "-".into(), "-".into(), "-".into()], "-".into()));
            let limits = if row.limits.is_empty() {
                "-".to_string()
            } else {
                cell(&row.limits)
            };
            s.push_str(&format!(
                "| {} ({version}) | {} | {} | {} | {} | {} | {} | {conns} | {limits} | {} |\n",
                r.series,
                row.backend,
                row.model,
                f[0],
                f[1],
                f[2],
                f[3],
                result_cell(row.status, &row.note)
            ));
        }
    }
    s
}

/// kernel x model table of the agreement runs (backends attached together).
pub fn render_agreement(results: &[SeriesResult]) -> String {
    let mut s = String::from(
        "| kernel | model | backends | woken/conn | difference | result |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in results {
        let version = r.package.as_ref().map_or("-", |(_, v)| v.as_str());
        for row in r.scenario_lines.iter().filter_map(|l| parse_agree_line(l)) {
            let (woken, diff) = row.figures.clone().unwrap_or(("-".into(), "-".into()));
            let status = if row.passed {
                Status::Pass
            } else {
                Status::Fail
            };
            s.push_str(&format!(
                "| {} ({version}) | {} | {} | {woken} | {diff} | {} |\n",
                r.series,
                row.model,
                row.backends,
                result_cell(status, &row.note)
            ));
        }
    }
    s
}

/// `N/A MODEL: why`: a scenario outside its kernel range, not run there.
pub fn parse_not_applicable_line(line: &str) -> Option<(&str, &str)> {
    line.strip_prefix("N/A ")?.split_once(": ")
}

/// kernel x model table of the scenarios a kernel is too old (or new) for,
/// so their absence from the tables above is explained, not silent.
pub fn render_not_applicable(results: &[SeriesResult]) -> String {
    let mut s = String::from("| kernel | model | why |\n|---|---|---|\n");
    for r in results {
        let version = r.package.as_ref().map_or("-", |(_, v)| v.as_str());
        let rows = r
            .scenario_lines
            .iter()
            .filter_map(|l| parse_not_applicable_line(l));
        for (model, why) in rows {
            s.push_str(&format!(
                "| {} ({version}) | {} | {} |\n",
                r.series,
                cell(model),
                cell(why)
            ));
        }
    }
    s
}

fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Pass => "PASS".into(),
        Verdict::Fail(reason) => format!("FAIL: {reason}"),
    }
}

/// Markdown table cell text: no newlines, escaped pipes.
pub(super) fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render(results: &[SeriesResult]) -> String {
    let mut s = String::from("# herdtrace vmtest report\n\n");
    s.push_str("| Kernel | Package | Version | Result | Boot + run |\n");
    s.push_str("|---|---|---|---|---|\n");
    for r in results {
        let (pkg, ver) = r
            .package
            .as_ref()
            .map(|(p, v)| (p.as_str(), v.as_str()))
            .unwrap_or(("-", "-"));
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} s |\n",
            r.series,
            pkg,
            ver,
            cell(&verdict_text(&r.verdict)),
            r.seconds
        ));
    }
    if results.iter().any(|r| !r.scenario_lines.is_empty()) {
        s.push_str("\n## Scenarios\n\n");
        s.push_str(&render_matrix(results));
    }
    let agree_lines = results
        .iter()
        .flat_map(|r| &r.scenario_lines)
        .any(|l| parse_agree_line(l).is_some());
    if agree_lines {
        s.push_str(&format!(
            "\n## Agreement\n\nAll backends attached together to the same run; the mean woken \
             per connection of each must be within {AGREEMENT_PERCENT}% of the tracepoint backend's.\n\n"
        ));
        s.push_str(&render_agreement(results));
    }
    let not_applicable = results
        .iter()
        .flat_map(|r| &r.scenario_lines)
        .any(|l| parse_not_applicable_line(l).is_some());
    if not_applicable {
        s.push_str(
            "\n## Not applicable\n\nScenarios outside their kernel range, not run there.\n\n",
        );
        s.push_str(&render_not_applicable(results));
    }
    for r in results {
        s.push_str(&format!("\n## {}\n\n", r.series));
        if !r.commands.is_empty() {
            s.push_str("| # | Command | rc | Output |\n|---|---|---|---|\n");
            for (i, (cmd, rc)) in r.commands.iter().enumerate() {
                let n = i + 1;
                let rc = rc.map_or("none".to_string(), |rc| rc.to_string());
                s.push_str(&format!(
                    "| {n} | `{}` | {rc} | {}/out-{n}.txt |\n",
                    cell(cmd),
                    r.series
                ));
            }
        }
        if !r.tail.is_empty() {
            s.push_str(&format!(
                "\nLast console lines ({}.log):\n\n```\n{}\n```\n",
                r.series,
                r.tail.join("\n")
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_selftest_lines() {
        let row = parse_scenario_line(
            "PASS epoll-per-worker kprobe: woken/conn 3.98 eagain/conn 0.39 losers/conn 0.39 \
             spurious/conn 2.54 conns 200/200 lost 0",
        )
        .expect("row");
        assert_eq!(row.status, Status::Pass);
        assert_eq!(row.limits, "");
        assert_eq!(
            (row.model.as_str(), row.backend.as_str()),
            ("epoll-per-worker", "kprobe")
        );
        assert_eq!(
            row.figures,
            Some((
                ["3.98".into(), "0.39".into(), "0.39".into(), "2.54".into()],
                "200/200".into()
            ))
        );
        let row = parse_scenario_line(
            "FAIL reuseport kprobe: woken/conn 1.02 eagain/conn 0.00 losers/conn 0.00 \
             spurious/conn 0.01 conns 199/200 lost 0 [199 conn records for 200 connections]",
        )
        .expect("row");
        assert_eq!(row.status, Status::Fail);
        assert_eq!(row.note, "199 conn records for 200 connections");
        let row =
            parse_scenario_line("FAIL exclusive fentry: the tracer did not start: x").expect("row");
        assert_eq!(row.figures, None);
        assert_eq!(row.note, "the tracer did not start: x");
        assert_eq!(parse_scenario_line("kernel: 6.1"), None);
        let row = parse_scenario_line(
            "PASS exclusive tracepoint: woken/conn 1.00 eagain/conn 0.00 losers/conn 0.00 \
             spurious/conn 0.00 conns 200/200 lost 0 {tracepoint sock:sk_data_ready missing \
             (added in 6.6); ep_send_events cannot be probed (inlined or missing)}",
        )
        .expect("row");
        assert_eq!(
            row.limits,
            "tracepoint sock:sk_data_ready missing (added in 6.6); ep_send_events cannot be probed (inlined or missing)"
        );
        assert_eq!(row.note, "");
        let row = parse_scenario_line(
            "SKIP reuseport fentry: unavailable: fentry backend unavailable: load returned EPERM",
        )
        .expect("row");
        assert_eq!(row.status, Status::Skip);
        assert_eq!(row.figures, None);
        assert_eq!(
            row.note,
            "unavailable: fentry backend unavailable: load returned EPERM"
        );
        assert_eq!(
            parse_scenario_line(
                "PASS agree exclusive tracepoint~kprobe: woken/conn 1.00 vs 1.00 diff 0.0%"
            ),
            None,
            "agreement lines have their own table"
        );
    }

    #[test]
    fn parses_agreement_lines() {
        let row = parse_agree_line(
            "PASS agree shared-epoll tracepoint~kprobe: woken/conn 2.50 vs 2.40 diff 4.2%",
        )
        .expect("row");
        assert!(row.passed);
        assert_eq!(
            (row.model.as_str(), row.backends.as_str()),
            ("shared-epoll", "tracepoint~kprobe")
        );
        assert_eq!(row.figures, Some(("2.50 vs 2.40".into(), "4.2%".into())));
        let row = parse_agree_line(
            "FAIL agree epoll-per-worker tracepoint~fentry: woken/conn 4.00 vs 3.50 diff 14.3% \
             [differ by 14.3% > 10%]",
        )
        .expect("row");
        assert!(!row.passed);
        assert_eq!(row.note, "differ by 14.3% > 10%");
        let row = parse_agree_line(
            "FAIL agree reuseport tracepoint~kprobe~fentry: the kprobe tracer did not start: x",
        )
        .expect("row");
        assert_eq!(row.figures, None);
        assert_eq!(row.note, "the kprobe tracer did not start: x");
        assert_eq!(
            parse_agree_line("PASS exclusive kprobe: woken/conn 1.00"),
            None
        );
        let results = vec![SeriesResult {
            series: "6.1".into(),
            package: Some(("p".into(), "6.1.1-1".into())),
            verdict: Verdict::Pass,
            seconds: 1.0,
            commands: vec![],
            tail: vec![],
            scenario_lines: vec![
                "PASS agree shared-epoll tracepoint~kprobe: woken/conn 2.50 vs 2.40 diff 4.2%"
                    .into(),
                "SKIP shared-epoll fentry: unavailable: no".into(),
                "N/A io-uring-multishot: needs Linux 5.19+, this kernel is 5.10.0".into(),
            ],
        }];
        let md = render(&results);
        assert!(
            md.contains(
                "| 6.1 (6.1.1-1) | shared-epoll | tracepoint~kprobe | 2.50 vs 2.40 | 4.2% | pass |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 6.1 (6.1.1-1) | fentry | shared-epoll | - | - | - | - | - | - | not run: unavailable: no |"),
            "{md}"
        );
        assert!(
            md.contains(
                "## Not applicable\n\nScenarios outside their kernel range, not run there.\n\n\
                 | kernel | model | why |\n|---|---|---|\n\
                 | 6.1 (6.1.1-1) | io-uring-multishot | needs Linux 5.19+, this kernel is 5.10.0 |\n"
            ),
            "{md}"
        );
        assert_eq!(parse_not_applicable_line("PASS x: y"), None);
    }

    #[test]
    fn report_lists_series_versions_and_command_rcs() {
        let results = vec![
            SeriesResult {
                series: "6.1".into(),
                package: Some((
                    "linux-image-6.1.0-56-cloud-amd64".into(),
                    "6.1.158-1".into(),
                )),
                verdict: Verdict::Fail("commands failed: 2".into()),
                seconds: 12.34,
                commands: vec![
                    ("herdtrace --help".into(), Some(0)),
                    ("herdtrace check | head".into(), Some(1)),
                    ("never".into(), None),
                ],
                tail: vec!["last line".into()],
                scenario_lines: Vec::new(),
            },
            SeriesResult {
                series: "5.10".into(),
                package: None,
                verdict: Verdict::Fail("kernel fetch: no package".into()),
                seconds: 0.0,
                commands: vec![],
                tail: vec![],
                scenario_lines: Vec::new(),
            },
        ];
        let md = render(&results);
        assert!(md.contains(
            "| 6.1 | linux-image-6.1.0-56-cloud-amd64 | 6.1.158-1 | FAIL: commands failed: 2 | 12.3 s |"
        ));
        assert!(md.contains("| 5.10 | - | - | FAIL: kernel fetch: no package | 0.0 s |"));
        assert!(md.contains("| 1 | `herdtrace --help` | 0 | 6.1/out-1.txt |"));
        assert!(md.contains("| 2 | `herdtrace check \\| head` | 1 | 6.1/out-2.txt |"));
        assert!(md.contains("| 3 | `never` | none | 6.1/out-3.txt |"));
        assert!(md.contains("```\nlast line\n```"));
        assert!(md.contains("\n## 5.10\n"));
    }
}
