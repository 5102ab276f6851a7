//! `target/vmtest/report.md`: kernel, exact package version, per-command rc.
use super::console::Verdict;

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
/// 0 [failures]`, or `FAIL model backend: error`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioRow {
    pub passed: bool,
    pub model: String,
    pub backend: String,
    /// woken, eagain, eagain_losers, spurious per connection; conns; None when the run failed early.
    pub figures: Option<([String; 4], String)>,
    pub note: String,
}

pub fn parse_scenario_line(line: &str) -> Option<ScenarioRow> {
    let (passed, rest) = if let Some(r) = line.strip_prefix("PASS ") {
        (true, r)
    } else {
        (false, line.strip_prefix("FAIL ")?)
    };
    let (head, tail) = rest.split_once(": ")?;
    let (model, backend) = head.split_once(' ')?;
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
    let note = match (&figures, tail.find('[')) {
        (Some(_), Some(i)) => tail[i..].trim_matches(|c| c == '[' || c == ']').to_string(),
        (Some(_), None) => String::new(),
        (None, _) => tail.to_string(),
    };
    Some(ScenarioRow {
        passed,
        model: model.to_string(),
        backend: backend.to_string(),
        figures,
        note,
    })
}

/// kernel x backend x model table of every selftest line.
pub fn render_matrix(results: &[SeriesResult]) -> String {
    let mut s = String::from(
        "| kernel | backend | model | woken/conn | eagain/conn | eagain_losers/conn | spurious/conn | conns | result |\n\
         |---|---|---|---|---|---|---|---|---|\n",
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
            let result = match (row.passed, row.note.is_empty()) {
                (true, _) => "pass".to_string(),
                (false, true) => "FAIL".to_string(),
                (false, false) => format!("FAIL: {}", cell(&row.note)),
            };
            s.push_str(&format!(
                "| {} ({version}) | {} | {} | {} | {} | {} | {} | {conns} | {result} |\n",
                r.series, row.backend, row.model, f[0], f[1], f[2], f[3]
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
fn cell(s: &str) -> String {
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
        assert!(row.passed);
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
        assert!(!row.passed);
        assert_eq!(row.note, "199 conn records for 200 connections");
        let row =
            parse_scenario_line("FAIL exclusive fentry: the tracer did not start: x").expect("row");
        assert_eq!(row.figures, None);
        assert_eq!(row.note, "the tracer did not start: x");
        assert_eq!(parse_scenario_line("kernel: 6.1"), None);
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
