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
            },
            SeriesResult {
                series: "5.10".into(),
                package: None,
                verdict: Verdict::Fail("kernel fetch: no package".into()),
                seconds: 0.0,
                commands: vec![],
                tail: vec![],
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
