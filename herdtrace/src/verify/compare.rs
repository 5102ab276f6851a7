//! `verify --compare A B` (pure): two `verify --json` outputs row by row,
//! each figure's difference tested against the spread both runs carry, and
//! the verdict changes that gate a kernel CI.
//!
//! Spread: a per-connection mean (woken, wasted = EAGAIN losers + spurious,
//! winner EAGAIN) has a standard error of sd/sqrt(conns) from the run's own
//! conn records; the difference of two runs has sqrt(se_a² + se_b²). The
//! same-worker share is a proportion over its pairs, compared with the
//! Agresti-Caffo interval (one success and one failure added to each run,
//! which keeps shares of exactly 0 or 1 from having no spread at all).
//! A figure changed when the difference exceeds `z` of these errors.
//!
//! How the wasted wakeups split between EAGAIN and spurious is left out:
//! it depends on which loser reaches `accept` before the winner has taken
//! the connection, and two runs of the same kernel differ in it by several
//! of these errors (host, epoll-per-worker+et: 0.22/2.73 vs 0.00/3.00
//! losers/spurious, 8 se) while their sum moves by 0.05.
use std::fmt::Write as _;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::expect::Metric;
use super::row::{check_text, Measured, Verdict};

/// Default threshold in standard errors: with about 40 figures per
/// comparison (10 rows, up to 4 each), 3.3 (two-sided p = 0.001 each) keeps
/// the chance of one false alarm between two runs of the same kernel near 4 %.
pub const DEFAULT_Z: f64 = 3.3;

/// Exit status: no verdict changed and every row of A was compared.
pub const EXIT_SAME: i32 = 0;
/// Exit status: a row went from pass to FAIL or from FAIL to pass.
pub const EXIT_VERDICT_CHANGED: i32 = 1;
/// Exit status: an input cannot be read or the runs cannot be compared.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit status: no verdict changed, but some row of A could not be
/// compared (not measured cleanly in either run, or missing from B).
pub const EXIT_INCOMPLETE: i32 = 3;

/// One check of a row as read back from JSON.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CheckIn {
    pub metric: Metric,
    pub expected: String,
    pub measured: Option<f64>,
    pub pass: bool,
    pub source: String,
}

/// The part of a row every verdict has.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Head {
    model: String,
    kernel: String,
    backend: String,
    workers: u32,
    connections: u32,
    rate: u32,
    verdict: Verdict,
    checks: Vec<CheckIn>,
    problems: Vec<String>,
}

/// One row of a `verify --json` output.
#[derive(Debug, Clone, PartialEq)]
pub struct InRow {
    pub model: String,
    pub kernel: String,
    pub backend: String,
    pub workers: u32,
    pub connections: u32,
    pub rate: u32,
    pub verdict: Verdict,
    pub checks: Vec<CheckIn>,
    pub problems: Vec<String>,
    /// `None` for a row that could not be run (ERROR).
    pub measured: Option<Measured>,
}

/// A parsed input: its name (for messages) and rows in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub name: String,
    pub rows: Vec<InRow>,
}

/// Parses the NDJSON of `herdtrace verify --json`; `name` prefixes errors.
pub fn parse(name: &str, text: &str) -> Result<Run> {
    let mut rows: Vec<InRow> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{name} line {}", i + 1);
        let v: Value = serde_json::from_str(line).with_context(|| {
            format!(
                "{}: not JSON (expected one `herdtrace verify --json` row per line)",
                at()
            )
        })?;
        let head: Head = serde_json::from_value(v.clone())
            .with_context(|| format!("{}: not a `herdtrace verify --json` row", at()))?;
        // Rows that ran carry their figures flattened into the object.
        let measured = if v.get("woken_mean").is_some() {
            if v.get("spread").is_none() {
                bail!(
                    "{}: row {} has no \"spread\" (written by an older herdtrace verify); \
                     run `herdtrace verify --json` again",
                    at(),
                    head.model
                );
            }
            Some(
                serde_json::from_value::<Measured>(v)
                    .with_context(|| format!("{}: row {}: bad figures", at(), head.model))?,
            )
        } else {
            None
        };
        if let Some(first) = rows.iter().find(|r| r.model == head.model) {
            bail!(
                "{}: row {} appears twice (backends {} and {}); compare one run of \
                 `herdtrace verify --json` per file",
                at(),
                head.model,
                first.backend,
                head.backend
            );
        }
        rows.push(InRow {
            model: head.model,
            kernel: head.kernel,
            backend: head.backend,
            workers: head.workers,
            connections: head.connections,
            rate: head.rate,
            verdict: head.verdict,
            checks: head.checks,
            problems: head.problems,
            measured,
        });
    }
    if rows.is_empty() {
        bail!("{name}: no verify rows (expected the output of `herdtrace verify --json`)");
    }
    Ok(Run {
        name: name.to_string(),
        rows,
    })
}

/// A figure `verify --compare` tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    WokenMean,
    /// EAGAIN losers + spurious per connection.
    WastedPerConn,
    WinnerEagainPerConn,
    SameWorkerShare,
}

impl Figure {
    pub const ALL: [Figure; 4] = [
        Figure::WokenMean,
        Figure::WastedPerConn,
        Figure::WinnerEagainPerConn,
        Figure::SameWorkerShare,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Figure::WokenMean => "woken/conn",
            Figure::WastedPerConn => "wasted/conn",
            Figure::WinnerEagainPerConn => "win-EAGAIN/conn",
            Figure::SameWorkerShare => "same-worker share",
        }
    }

    /// (mean, sd, n) of a per-connection mean; `None` for the share.
    fn mean(self, m: &Measured) -> Option<(f64, f64, u64)> {
        let s = &m.spread;
        let (mean, sd) = match self {
            Figure::WokenMean => (m.woken_mean, s.woken_sd),
            // Without its own sd (an older row), the sum of the parts' bounds
            // it (Cauchy-Schwarz), which only makes the test more cautious.
            Figure::WastedPerConn => (
                m.eagain_losers_per_conn + m.spurious_per_conn,
                s.wasted_sd.unwrap_or(s.eagain_losers_sd + s.spurious_sd),
            ),
            Figure::WinnerEagainPerConn => (m.winner_eagain_per_conn, s.winner_eagain_sd),
            Figure::SameWorkerShare => return None,
        };
        Some((mean, sd, s.conns))
    }
}

/// One figure of one row in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FigureDiff {
    pub figure: Figure,
    pub a: f64,
    pub b: f64,
    /// Standard error of the difference.
    pub se: f64,
    /// Difference in standard errors (infinite when both runs have no spread).
    pub z: f64,
    pub changed: bool,
}

/// Differences below this are rounding, not a change (figures are means of
/// small integers, printed with 2 decimals).
const EPSILON: f64 = 1e-9;

/// Two per-connection means: difference over sqrt(se_a² + se_b²). With no
/// spread in either run (every connection the same), any difference is a change.
pub fn mean_diff(
    figure: Figure,
    a: (f64, f64, u64),
    b: (f64, f64, u64),
    z: f64,
) -> Option<FigureDiff> {
    let ((ma, sa, na), (mb, sb, nb)) = (a, b);
    if na == 0 || nb == 0 || !ma.is_finite() || !mb.is_finite() {
        return None;
    }
    let se = (sa * sa / na as f64 + sb * sb / nb as f64).sqrt();
    let d = mb - ma;
    let score = if d.abs() < EPSILON {
        0.0
    } else if se > 0.0 {
        d.abs() / se
    } else {
        f64::INFINITY
    };
    Some(FigureDiff {
        figure,
        a: ma,
        b: mb,
        se,
        z: score,
        changed: score > z,
    })
}

/// Two shares over their pairs, Agresti-Caffo: (x+1)/(n+2) in each run.
pub fn share_diff(a: (f64, u64), b: (f64, u64), z: f64) -> Option<FigureDiff> {
    let ((pa, na), (pb, nb)) = (a, b);
    if na == 0 || nb == 0 || !pa.is_finite() || !pb.is_finite() {
        return None;
    }
    let adjusted = |p: f64, n: u64| (p * n as f64 + 1.0) / (n as f64 + 2.0);
    let (ta, tb) = (adjusted(pa, na), adjusted(pb, nb));
    let se = (ta * (1.0 - ta) / (na as f64 + 2.0) + tb * (1.0 - tb) / (nb as f64 + 2.0)).sqrt();
    let d = tb - ta;
    let score = if (pb - pa).abs() < EPSILON {
        0.0
    } else {
        d.abs() / se
    };
    Some(FigureDiff {
        figure: Figure::SameWorkerShare,
        a: pa,
        b: pb,
        se,
        z: score,
        changed: score > z,
    })
}

/// Every figure both runs measured.
pub fn figure_diffs(a: &Measured, b: &Measured, z: f64) -> Vec<FigureDiff> {
    Figure::ALL
        .iter()
        .filter_map(|f| match (f.mean(a), f.mean(b)) {
            (Some(x), Some(y)) => mean_diff(*f, x, y, z),
            _ => match (a.same_worker_share, b.same_worker_share) {
                (Some(pa), Some(pb)) => share_diff(
                    (pa, a.spread.same_worker_pairs),
                    (pb, b.spread.same_worker_pairs),
                    z,
                ),
                _ => None,
            },
        })
        .collect()
}

/// What happened to one row between the runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Same verdict, no figure beyond the spread.
    Same,
    /// Same verdict, some figure beyond the spread.
    FiguresChanged,
    /// pass <-> FAIL: the kernel's behaviour crossed an expectation.
    VerdictChanged,
    /// INVALID or ERROR in either run: no claim about the kernel.
    NotComparable,
    /// In A only: B no longer covers it.
    OnlyInA,
    /// In B only (a row added since A): shown, not counted.
    OnlyInB,
}

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowDiff {
    pub model: String,
    pub verdict_a: Option<Verdict>,
    pub verdict_b: Option<Verdict>,
    pub status: Status,
    pub figures: Vec<FigureDiff>,
    /// Why a row is not comparable, and B's failing checks when it fails.
    pub notes: Vec<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub a: RunInfo,
    pub b: RunInfo,
    pub z: f64,
    pub rows: Vec<RowDiff>,
    /// Setup differences that do not prevent a comparison (rate, connections).
    pub warnings: Vec<String>,
    pub exit_code: i32,
}

/// Who a run was: file, kernel, backend, setup (from its first row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunInfo {
    pub file: String,
    pub kernel: String,
    pub backend: String,
    pub workers: u32,
    pub connections: u32,
    pub rate: u32,
}

impl RunInfo {
    fn of(run: &Run) -> RunInfo {
        let first = &run.rows[0];
        RunInfo {
            file: run.name.clone(),
            kernel: first.kernel.clone(),
            backend: first.backend.clone(),
            workers: first.workers,
            connections: first.connections,
            rate: first.rate,
        }
    }
}

/// Failing checks of a row, as `verify` prints them.
fn failing(row: &InRow) -> Vec<String> {
    row.checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| {
            format!(
                "{} [{}]",
                check_text(c.metric, c.measured, &c.expected),
                c.source
            )
        })
        .collect()
}

fn is_clean(v: Verdict) -> bool {
    matches!(v, Verdict::Pass | Verdict::Fail)
}

fn compare_row(a: &InRow, b: &InRow, z: f64) -> RowDiff {
    let mut diff = RowDiff {
        model: a.model.clone(),
        verdict_a: Some(a.verdict),
        verdict_b: Some(b.verdict),
        status: Status::Same,
        figures: Vec::new(),
        notes: Vec::new(),
    };
    if let (Some(ma), Some(mb)) = (&a.measured, &b.measured) {
        diff.figures = figure_diffs(ma, mb, z);
    }
    for (which, row) in [("A", a), ("B", b)] {
        if !is_clean(row.verdict) {
            let what = if row.verdict == Verdict::Error {
                "could not run"
            } else {
                "not measured cleanly"
            };
            diff.notes.push(format!(
                "{which} {what}: {}",
                if row.problems.is_empty() {
                    "no reason given".to_string()
                } else {
                    row.problems.join("; ")
                }
            ));
        }
    }
    diff.status = if !is_clean(a.verdict) || !is_clean(b.verdict) {
        Status::NotComparable
    } else if a.verdict != b.verdict {
        let (which, row) = if b.verdict == Verdict::Fail {
            ("B", b)
        } else {
            ("A", a)
        };
        diff.notes
            .push(format!("departs in {which}: {}", failing(row).join("; ")));
        Status::VerdictChanged
    } else if diff.figures.iter().any(|f| f.changed) {
        Status::FiguresChanged
    } else {
        Status::Same
    };
    diff
}

/// The exit status of a comparison (see the `EXIT_*` constants).
pub fn exit_code(rows: &[RowDiff]) -> i32 {
    if rows.iter().any(|r| r.status == Status::VerdictChanged) {
        EXIT_VERDICT_CHANGED
    } else if rows
        .iter()
        .any(|r| matches!(r.status, Status::NotComparable | Status::OnlyInA))
    {
        EXIT_INCOMPLETE
    } else {
        EXIT_SAME
    }
}

/// Compares `b` against `a`. Rows are matched by name; a row whose worker
/// count differs cannot be compared (every expectation scales with it).
pub fn compare(a: &Run, b: &Run, z: f64) -> Result<Comparison> {
    if !(z.is_finite() && z > 0.0) {
        bail!("--z must be a positive number, not {z}");
    }
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    for ra in &a.rows {
        let Some(rb) = b.rows.iter().find(|r| r.model == ra.model) else {
            rows.push(RowDiff {
                model: ra.model.clone(),
                verdict_a: Some(ra.verdict),
                verdict_b: None,
                status: Status::OnlyInA,
                figures: Vec::new(),
                notes: vec![format!("not in {}", b.name)],
            });
            continue;
        };
        if ra.workers != rb.workers {
            bail!(
                "row {}: {} ran {} workers, {} ran {}; the runs cannot be compared \
                 (run both with the same --workers)",
                ra.model,
                a.name,
                ra.workers,
                b.name,
                rb.workers
            );
        }
        for (what, x, y) in [
            ("rate", ra.rate, rb.rate),
            ("connections", ra.connections, rb.connections),
        ] {
            let w = format!("{what} differs: {x} in A, {y} in B");
            if x != y && !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        rows.push(compare_row(ra, rb, z));
    }
    for rb in b
        .rows
        .iter()
        .filter(|rb| a.rows.iter().all(|ra| ra.model != rb.model))
    {
        rows.push(RowDiff {
            model: rb.model.clone(),
            verdict_a: None,
            verdict_b: Some(rb.verdict),
            status: Status::OnlyInB,
            figures: Vec::new(),
            notes: vec![format!("not in {}", a.name)],
        });
    }
    let exit_code = exit_code(&rows);
    Ok(Comparison {
        a: RunInfo::of(a),
        b: RunInfo::of(b),
        z,
        rows,
        warnings,
        exit_code,
    })
}

fn verdict_word(v: Option<Verdict>) -> &'static str {
    v.map_or("-", Verdict::word)
}

/// "woken/conn 2.41 -> 2.25 (-0.16, 4.2 se)".
fn figure_text(f: &FigureDiff) -> String {
    let z = if f.z.is_finite() {
        format!("{:.1} se", f.z)
    } else {
        "no spread in either run".to_string()
    };
    format!(
        "{} {:.2} -> {:.2} ({:+.2}, {z})",
        f.figure.label(),
        f.a,
        f.b,
        f.b - f.a
    )
}

fn run_line(label: &str, r: &RunInfo) -> String {
    format!(
        "  {label}: kernel {}, backend {}, {} workers, {} connections at {}/s ({})\n",
        r.kernel, r.backend, r.workers, r.connections, r.rate, r.file
    )
}

/// The text report: the two runs, one line per row, a tally.
pub fn render(c: &Comparison) -> String {
    let mut out = String::from("herdtrace verify --compare\n");
    out.push_str(&run_line("A", &c.a));
    out.push_str(&run_line("B", &c.b));
    for w in &c.warnings {
        let _ = writeln!(out, "  note: {w}");
    }
    let _ = writeln!(
        out,
        "A figure changed when A and B differ by more than {} standard errors of the \
         difference\n(means: sd/sqrt(conns) of each run's conn records; same-worker share: \
         Agresti-Caffo).\n",
        c.z
    );
    let name_w = c.rows.iter().map(|r| r.model.len()).max().unwrap_or(0);
    for r in &c.rows {
        let verdicts = format!(
            "{} -> {}",
            verdict_word(r.verdict_a),
            verdict_word(r.verdict_b)
        );
        let mut parts: Vec<String> = Vec::new();
        match r.status {
            Status::VerdictChanged => parts.push("VERDICT CHANGED".to_string()),
            Status::NotComparable => parts.push("not compared".to_string()),
            Status::OnlyInA | Status::OnlyInB => {}
            Status::Same => parts.push("no change beyond the spread".to_string()),
            Status::FiguresChanged => {}
        }
        if r.status != Status::NotComparable {
            parts.extend(r.figures.iter().filter(|f| f.changed).map(figure_text));
        }
        parts.extend(r.notes.iter().cloned());
        let _ = writeln!(
            out,
            "{:<name_w$}  {verdicts:<18}  {}",
            r.model,
            parts.join("; ")
        );
    }
    let count = |s: Status| c.rows.iter().filter(|r| r.status == s).count();
    let _ = writeln!(
        out,
        "\n{} rows: {} verdict changed, {} with figures changed, {} the same, {} not compared, \
         {} only in A, {} only in B",
        c.rows.len(),
        count(Status::VerdictChanged),
        count(Status::FiguresChanged),
        count(Status::Same),
        count(Status::NotComparable),
        count(Status::OnlyInA),
        count(Status::OnlyInB)
    );
    out
}

/// One JSON object (exit code included).
pub fn render_json(c: &Comparison) -> Result<String> {
    let mut s = serde_json::to_string(c).context("encoding the comparison")?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::row::Spread;
    use serde_json::json;

    /// A JSON row as `verify --json` writes it.
    fn row_json(model: &str, verdict: &str, woken: f64, woken_sd: f64, share: f64) -> Value {
        json!({
            "model": model, "serve_model": model, "serve_args": [],
            "kernel": "6.1.0-56-cloud-amd64", "backend": "fentry",
            "workers": 4, "connections": 250, "rate": 50, "expected": "one",
            "woken_mean": woken, "woken_p99": 4,
            "eagain_losers_per_conn": 0.5, "spurious_per_conn": 2.0,
            "winner_eagain_per_conn": 0.0,
            "accepts_per_worker": [100, 50, 50, 50],
            "accept_share_max": 0.4, "accept_share_min": 0.2,
            "accept_latency_us_p50": 300, "accept_latency_us_p99": 900,
            "same_worker_share": share,
            "spread": {"conns": 250, "woken_sd": woken_sd, "eagain_losers_sd": 0.6,
                       "spurious_sd": 0.9, "winner_eagain_sd": 0.0, "same_worker_pairs": 249},
            "checks": [{"metric": "woken_mean", "expected": "0.5..1.5",
                        "measured": woken, "pass": verdict == "pass", "source": "H5"}],
            "problems": if verdict == "invalid" { json!(["3 events lost"]) } else { json!([]) },
            "verdict": verdict, "attempts": 1, "earlier_attempts": []
        })
    }

    fn text(rows: &[Value]) -> String {
        rows.iter().map(|r| format!("{r}\n")).collect()
    }

    fn run(name: &str, rows: &[Value]) -> Run {
        parse(name, &text(rows)).expect("parses")
    }

    fn measured(woken: f64, sd: f64, conns: u64) -> Measured {
        Measured {
            woken_mean: woken,
            woken_p99: 1,
            eagain_losers_per_conn: 0.0,
            spurious_per_conn: 0.0,
            winner_eagain_per_conn: 0.0,
            accepts_per_worker: vec![],
            accept_share_max: None,
            accept_share_min: None,
            accept_latency_us_p50: None,
            accept_latency_us_p99: None,
            same_worker_share: None,
            spread: Spread {
                conns,
                woken_sd: sd,
                eagain_losers_sd: 0.0,
                spurious_sd: 0.0,
                wasted_sd: Some(0.0),
                winner_eagain_sd: 0.0,
                same_worker_pairs: 0,
            },
        }
    }

    #[test]
    fn parses_rows_with_and_without_figures() {
        let mut error = row_json("reuseport", "error", 1.0, 0.0, 0.0);
        for k in [
            "woken_mean",
            "woken_p99",
            "spread",
            "eagain_losers_per_conn",
            "spurious_per_conn",
            "winner_eagain_per_conn",
            "accepts_per_worker",
            "accept_share_max",
            "accept_share_min",
            "accept_latency_us_p50",
            "accept_latency_us_p99",
            "same_worker_share",
        ] {
            error.as_object_mut().expect("object").remove(k);
        }
        let r = run(
            "a.json",
            &[row_json("exclusive", "pass", 1.0, 0.0, 1.0), error],
        );
        assert_eq!(r.rows.len(), 2);
        let m = r.rows[0].measured.as_ref().expect("figures");
        assert_eq!(m.spread.same_worker_pairs, 249);
        assert_eq!(m.same_worker_share, Some(1.0));
        assert_eq!(r.rows[0].backend, "fentry");
        assert_eq!(r.rows[0].checks[0].metric, Metric::WokenMean);
        assert_eq!(r.rows[1].verdict, Verdict::Error);
        assert!(r.rows[1].measured.is_none());
        // Blank lines are allowed.
        let t = format!("\n{}\n\n", row_json("exclusive", "pass", 1.0, 0.0, 1.0));
        assert_eq!(parse("a", &t).expect("parses").rows.len(), 1);
    }

    #[test]
    fn unreadable_inputs_are_one_line_errors() {
        let err = |name: &str, t: &str| format!("{:#}", parse(name, t).expect_err(t));
        assert_eq!(
            err("a.json", ""),
            "a.json: no verify rows (expected the output of `herdtrace verify --json`)"
        );
        assert!(err("a.json", "   \n").contains("no verify rows"));
        let e = err("a.json", "herdtrace verify: exclusive ...\n");
        assert!(e.starts_with("a.json line 1: not JSON"), "{e}");
        let good = row_json("exclusive", "pass", 1.0, 0.0, 1.0).to_string();
        let e = err("b.json", &format!("{good}\n{{\"type\":\"summary\"}}\n"));
        assert!(
            e.starts_with("b.json line 2: not a `herdtrace verify --json` row"),
            "{e}"
        );
        assert!(e.contains("missing field"), "{e}");
        let mut old = row_json("exclusive", "pass", 1.0, 0.0, 1.0);
        old.as_object_mut().expect("object").remove("spread");
        let e = err("old.json", &old.to_string());
        assert_eq!(
            e,
            "old.json line 1: row exclusive has no \"spread\" (written by an older herdtrace \
             verify); run `herdtrace verify --json` again"
        );
        let mut bad = row_json("exclusive", "pass", 1.0, 0.0, 1.0);
        bad["woken_mean"] = json!("many");
        assert!(err("a", &bad.to_string()).contains("row exclusive: bad figures"));
        let mut other = row_json("exclusive", "pass", 1.0, 0.0, 1.0);
        other["backend"] = json!("kprobe");
        let e = err("a.json", &format!("{good}\n{other}\n"));
        assert!(
            e.contains("line 2: row exclusive appears twice (backends fentry and kprobe)"),
            "{e}"
        );
        let mut verdict = row_json("exclusive", "pass", 1.0, 0.0, 1.0);
        verdict["verdict"] = json!("maybe");
        assert!(err("a", &verdict.to_string()).contains("not a `herdtrace verify --json` row"));
        // Every message is one line.
        for t in ["", "x", &old.to_string(), &format!("{good}\n{other}")] {
            assert!(!err("a", t).contains('\n'), "{t}");
        }
    }

    #[test]
    fn means_differ_beyond_their_standard_error() {
        // se = sqrt(1/100 + 1/100) = 0.1414.
        let d =
            mean_diff(Figure::WokenMean, (2.0, 1.0, 100), (2.5, 1.0, 100), 3.3).expect("compared");
        assert!((d.se - 0.02f64.sqrt()).abs() < 1e-12);
        assert!((d.z - 0.5 / 0.02f64.sqrt()).abs() < 1e-9);
        assert!(d.changed, "3.5 se");
        let d =
            mean_diff(Figure::WokenMean, (2.0, 1.0, 100), (2.4, 1.0, 100), 3.3).expect("compared");
        assert!(!d.changed, "2.8 se");
        // The threshold is the caller's.
        assert!(
            mean_diff(Figure::WokenMean, (2.0, 1.0, 100), (2.4, 1.0, 100), 2.0)
                .expect("compared")
                .changed
        );
        // Sizes differ: each run's own n.
        let d = mean_diff(Figure::WastedPerConn, (1.0, 2.0, 400), (1.0, 1.0, 25), 3.3)
            .expect("compared");
        assert!((d.se - (4.0f64 / 400.0 + 1.0 / 25.0).sqrt()).abs() < 1e-12);
        assert_eq!((d.z, d.changed), (0.0, false));
    }

    #[test]
    fn no_spread_in_either_run_makes_any_difference_a_change() {
        let d =
            mean_diff(Figure::WokenMean, (4.0, 0.0, 250), (3.0, 0.0, 250), 3.3).expect("compared");
        assert!(d.changed && d.z.is_infinite() && d.se == 0.0);
        let d =
            mean_diff(Figure::WokenMean, (1.0, 0.0, 250), (1.0, 0.0, 250), 3.3).expect("compared");
        assert!(!d.changed && d.z == 0.0);
        // One connection of 250 woke two: well within the spread it brings.
        let sd = sample_sd_of_one_two(250);
        let d =
            mean_diff(Figure::WokenMean, (1.0, 0.0, 250), (1.004, sd, 250), 3.3).expect("compared");
        assert!(!d.changed && d.z < 1.1, "{d:?}");
    }

    fn sample_sd_of_one_two(n: usize) -> f64 {
        let mut v = vec![1.0; n];
        v[0] = 2.0;
        crate::verify::row::sample_sd(&v)
    }

    #[test]
    fn nothing_to_compare_without_samples() {
        assert!(mean_diff(Figure::WokenMean, (1.0, 0.0, 0), (1.0, 0.0, 10), 3.3).is_none());
        assert!(mean_diff(Figure::WokenMean, (f64::NAN, 0.0, 5), (1.0, 0.0, 10), 3.3).is_none());
        assert!(share_diff((1.0, 0), (1.0, 10), 3.3).is_none());
        assert!(share_diff((1.0, 10), (f64::INFINITY, 10), 3.3).is_none());
    }

    #[test]
    fn shares_use_agresti_caffo() {
        // LIFO (1.00 of 249 pairs) vs random among 4 (0.25): a change.
        let d = share_diff((1.0, 249), (0.25, 249), 3.3).expect("compared");
        assert!(d.changed && d.z > 10.0, "{d:?}");
        // Exactly 1 in both: no spread of its own, but the same: no change.
        let d = share_diff((1.0, 249), (1.0, 249), 3.3).expect("compared");
        assert!(!d.changed && d.z == 0.0);
        // 1.00 vs 0.99 of 249 pairs (2 pairs differ): the adjusted interval
        // keeps a share of exactly 1 from having no spread.
        let d = share_diff((1.0, 249), (247.0 / 249.0, 249), 3.3).expect("compared");
        assert!(!d.changed, "{d:?}");
        assert!(d.se > 0.0);
        // The hand-computed value: (250/251 vs 248/251), n+2 = 251.
        let (ta, tb) = (250.0 / 251.0, 248.0 / 251.0);
        let se = (ta * (1.0 - ta) / 251.0 + tb * (1.0 - tb) / 251.0f64).sqrt();
        assert!((d.se - se).abs() < 1e-12 && (d.z - (ta - tb) / se).abs() < 1e-9);
        // Round-robin 0.00 vs 0.10 of 200 pairs: a change.
        assert!(
            share_diff((0.0, 200), (0.1, 200), 3.3)
                .expect("compared")
                .changed
        );
    }

    #[test]
    fn figure_diffs_cover_every_figure_both_runs_measured() {
        let mut a = measured(4.0, 0.1, 250);
        let mut b = measured(4.0, 0.1, 250);
        assert_eq!(
            figure_diffs(&a, &b, 3.3)
                .iter()
                .map(|d| d.figure)
                .collect::<Vec<_>>(),
            vec![
                Figure::WokenMean,
                Figure::WastedPerConn,
                Figure::WinnerEagainPerConn
            ],
            "no share in either run: not compared"
        );
        a.same_worker_share = Some(1.0);
        a.spread.same_worker_pairs = 249;
        assert_eq!(figure_diffs(&a, &b, 3.3).len(), 3, "share in A only");
        b.same_worker_share = Some(0.0);
        b.spread.same_worker_pairs = 249;
        let d = figure_diffs(&a, &b, 3.3);
        assert_eq!(d.len(), 4);
        assert_eq!(
            d.iter()
                .filter(|d| d.changed)
                .map(|d| d.figure)
                .collect::<Vec<_>>(),
            vec![Figure::SameWorkerShare]
        );
        b.spurious_per_conn = 0.5;
        let changed: Vec<Figure> = figure_diffs(&a, &b, 3.3)
            .iter()
            .filter(|d| d.changed)
            .map(|d| d.figure)
            .collect();
        assert_eq!(
            changed,
            vec![Figure::WastedPerConn, Figure::SameWorkerShare]
        );
    }

    #[test]
    fn wasted_is_losers_plus_spurious_and_the_split_is_not_tested() {
        let mut a = measured(4.0, 0.1, 250);
        (a.eagain_losers_per_conn, a.spurious_per_conn) = (0.22, 2.73);
        (a.spread.eagain_losers_sd, a.spread.spurious_sd) = (0.4, 0.5);
        a.spread.wasted_sd = Some(0.2);
        let mut b = a.clone();
        // The same-kernel runs of the host: the split moved, the sum did not.
        (b.eagain_losers_per_conn, b.spurious_per_conn) = (0.0, 3.0);
        let d = figure_diffs(&a, &b, 3.3);
        let w = d
            .iter()
            .find(|d| d.figure == Figure::WastedPerConn)
            .expect("wasted");
        assert!((w.a - 2.95).abs() < 1e-12 && (w.b - 3.0).abs() < 1e-12);
        assert!((w.se - (2.0 * 0.04 / 250.0f64).sqrt()).abs() < 1e-12);
        assert!(d.iter().all(|d| !d.changed), "{d:?}");
        // A row written before wasted_sd existed: bounded by the parts' sum.
        a.spread.wasted_sd = None;
        let w = figure_diffs(&a, &b, 3.3)
            .into_iter()
            .find(|d| d.figure == Figure::WastedPerConn)
            .expect("wasted");
        let se = ((0.9f64 * 0.9) / 250.0 + 0.04 / 250.0).sqrt();
        assert!((w.se - se).abs() < 1e-12, "{w:?}");
    }

    fn statuses(c: &Comparison) -> Vec<(String, Status)> {
        c.rows.iter().map(|r| (r.model.clone(), r.status)).collect()
    }

    #[test]
    fn same_runs_compare_equal_and_exit_zero() {
        let rows = [
            row_json("epoll-per-worker", "pass", 4.0, 0.1, 0.05),
            row_json("exclusive", "pass", 1.0, 0.0, 1.0),
        ];
        let c = compare(&run("a", &rows), &run("b", &rows), DEFAULT_Z).expect("compares");
        assert_eq!(
            statuses(&c),
            vec![
                ("epoll-per-worker".to_string(), Status::Same),
                ("exclusive".to_string(), Status::Same)
            ]
        );
        assert_eq!(c.exit_code, EXIT_SAME);
        assert!(c.warnings.is_empty());
        assert_eq!(c.a.kernel, "6.1.0-56-cloud-amd64");
        assert_eq!((c.b.workers, c.b.rate, c.b.file.as_str()), (4, 50, "b"));
    }

    #[test]
    fn an_edited_row_changes_its_verdict_and_exits_one() {
        let a = [
            row_json("exclusive", "pass", 1.0, 0.0, 1.0),
            row_json("reuseport", "pass", 1.0, 0.0, 0.25),
        ];
        let mut failing = row_json("exclusive", "fail", 3.9, 0.3, 1.0);
        failing["checks"][0]["pass"] = json!(false);
        let b = [failing, a[1].clone()];
        let c = compare(&run("a", &a), &run("b", &b), DEFAULT_Z).expect("compares");
        assert_eq!(c.rows[0].status, Status::VerdictChanged);
        assert_eq!(c.rows[1].status, Status::Same);
        assert_eq!(c.exit_code, EXIT_VERDICT_CHANGED);
        assert_eq!(
            c.rows[0].notes,
            vec!["departs in B: woken/conn 3.90 (0.5..1.5) [H5]".to_string()]
        );
        assert!(c.rows[0]
            .figures
            .iter()
            .any(|f| f.figure == Figure::WokenMean && f.changed));
        // The other way round: fixed by B, named from A's failing checks.
        let c = compare(&run("b", &b), &run("a", &a), DEFAULT_Z).expect("compares");
        assert_eq!(c.rows[0].status, Status::VerdictChanged);
        assert!(c.rows[0].notes[0].starts_with("departs in A: woken/conn 3.90"));
        let t = render(&c);
        assert!(
            t.lines().any(|l| l.starts_with("exclusive ")
                && l.contains("FAIL -> pass")
                && l.contains("VERDICT CHANGED")),
            "{t}"
        );
    }

    #[test]
    fn figures_changed_with_the_same_verdict_exit_zero() {
        let a = [row_json("shared-epoll", "pass", 2.2, 1.0, 0.4)];
        let b = [row_json("shared-epoll", "pass", 3.1, 1.0, 0.4)];
        let c = compare(&run("a", &a), &run("b", &b), DEFAULT_Z).expect("compares");
        assert_eq!(c.rows[0].status, Status::FiguresChanged);
        assert_eq!(c.exit_code, EXIT_SAME);
        let t = render(&c);
        assert!(
            t.contains(
                "shared-epoll  pass -> pass        woken/conn 2.20 -> 3.10 (+0.90, 10.1 se)"
            ),
            "{t}"
        );
    }

    #[test]
    fn unclean_or_missing_rows_make_the_comparison_incomplete() {
        let a = [
            row_json("exclusive", "pass", 1.0, 0.0, 1.0),
            row_json("reuseport", "pass", 1.0, 0.0, 0.25),
        ];
        let b = [row_json("exclusive", "invalid", 1.0, 0.0, 1.0)];
        let c = compare(&run("a", &a), &run("b.json", &b), DEFAULT_Z).expect("compares");
        assert_eq!(
            statuses(&c),
            vec![
                ("exclusive".to_string(), Status::NotComparable),
                ("reuseport".to_string(), Status::OnlyInA)
            ]
        );
        assert_eq!(
            c.rows[0].notes,
            vec!["B not measured cleanly: 3 events lost".to_string()]
        );
        assert_eq!(c.rows[1].notes, vec!["not in b.json".to_string()]);
        assert_eq!(c.exit_code, EXIT_INCOMPLETE);
        // A verdict change elsewhere outranks it.
        let mut fail = row_json("reuseport", "fail", 3.0, 0.1, 0.25);
        fail["checks"][0]["pass"] = json!(false);
        let b2 = [b[0].clone(), fail];
        let c = compare(&run("a", &a), &run("b", &b2), DEFAULT_Z).expect("compares");
        assert_eq!(c.exit_code, EXIT_VERDICT_CHANGED);
        // A row new in B is shown, not counted.
        let c = compare(&run("a", &a[..1]), &run("b", &a), DEFAULT_Z).expect("compares");
        assert_eq!(c.rows[1].status, Status::OnlyInB);
        assert_eq!(c.exit_code, EXIT_SAME);
        // An ERROR row in A.
        let mut error = row_json("exclusive", "error", 1.0, 0.0, 1.0);
        error["problems"] = json!(["the tracer did not start"]);
        let c = compare(&run("a", &[error]), &run("b", &a[..1]), DEFAULT_Z).expect("compares");
        assert_eq!(c.rows[0].status, Status::NotComparable);
        assert_eq!(
            c.rows[0].notes,
            vec!["A could not run: the tracer did not start".to_string()]
        );
        assert_eq!(c.exit_code, EXIT_INCOMPLETE);
    }

    #[test]
    fn failing_in_both_runs_is_no_change() {
        let mut f = row_json("exclusive", "fail", 3.9, 0.3, 1.0);
        f["checks"][0]["pass"] = json!(false);
        let c = compare(&run("a", &[f.clone()]), &run("b", &[f]), DEFAULT_Z).expect("compares");
        assert_eq!(c.rows[0].status, Status::Same);
        assert_eq!(c.exit_code, EXIT_SAME);
    }

    #[test]
    fn different_worker_counts_cannot_be_compared() {
        let a = [row_json("exclusive", "pass", 1.0, 0.0, 1.0)];
        let mut b8 = a[0].clone();
        b8["workers"] = json!(8);
        let e = compare(&run("a.json", &a), &run("b.json", &[b8]), DEFAULT_Z)
            .expect_err("incompatible");
        assert_eq!(
            e.to_string(),
            "row exclusive: a.json ran 4 workers, b.json ran 8; the runs cannot be compared \
             (run both with the same --workers)"
        );
        // Rate and connections only warn, once each.
        let rows = [
            row_json("exclusive", "pass", 1.0, 0.0, 1.0),
            row_json("reuseport", "pass", 1.0, 0.0, 0.25),
        ];
        let slow: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r["rate"] = json!(20);
                r
            })
            .collect();
        let c = compare(&run("a", &rows), &run("b", &slow), DEFAULT_Z).expect("compares");
        assert_eq!(
            c.warnings,
            vec!["rate differs: 50 in A, 20 in B".to_string()]
        );
        assert!(render(&c).contains("  note: rate differs: 50 in A, 20 in B\n"));
        for z in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(compare(&run("a", &rows), &run("b", &rows), z).is_err());
        }
    }

    #[test]
    fn text_and_json_reports() {
        let a = [
            row_json("epoll-per-worker", "pass", 4.0, 0.1, 0.05),
            row_json("exclusive", "pass", 1.0, 0.0, 1.0),
        ];
        let mut b = a.clone();
        b[1]["same_worker_share"] = json!(0.3);
        b[1]["verdict"] = json!("fail");
        b[1]["checks"] = json!([{"metric": "same_worker_share", "expected": ">=0.625",
                                  "measured": 0.3, "pass": false, "source": "C"}]);
        let c = compare(&run("a.json", &a), &run("b.json", &b), DEFAULT_Z).expect("compares");
        let t = render(&c);
        assert!(t.starts_with(
            "herdtrace verify --compare\n  A: kernel 6.1.0-56-cloud-amd64, backend fentry, 4 \
             workers, 250 connections at 50/s (a.json)\n"
        ));
        assert!(t.contains("more than 3.3 standard errors"), "{t}");
        assert!(
            t.contains("epoll-per-worker  pass -> pass        no change beyond the spread\n"),
            "{t}"
        );
        let ex = t
            .lines()
            .find(|l| l.starts_with("exclusive "))
            .expect("exclusive line");
        assert!(
            ex.contains("pass -> FAIL")
                && ex.contains("VERDICT CHANGED")
                && ex.contains("same-worker share 1.00 -> 0.30 (-0.70,")
                && ex.contains("departs in B: same-worker share 0.30 (>=0.625) [C]"),
            "{ex}"
        );
        assert!(t.ends_with(
            "2 rows: 1 verdict changed, 0 with figures changed, 1 the same, 0 not compared, \
             0 only in A, 0 only in B\n"
        ));
        let v: Value = serde_json::from_str(&render_json(&c).expect("json")).expect("one object");
        assert_eq!(v["exit_code"], 1);
        assert_eq!(v["z"], 3.3);
        assert_eq!(v["a"]["file"], "a.json");
        assert_eq!(v["rows"][1]["status"], "verdict_changed");
        assert_eq!(v["rows"][1]["verdict_a"], "pass");
        assert_eq!(v["rows"][1]["verdict_b"], "fail");
        let share = v["rows"][1]["figures"]
            .as_array()
            .expect("figures")
            .iter()
            .find(|f| f["figure"] == "same_worker_share")
            .expect("share")
            .clone();
        assert_eq!(share["changed"], true);
        assert_eq!(share["a"], 1.0);
        // Infinite z (no spread) is written as null, not as invalid JSON.
        let mut b2 = a.clone();
        b2[1]["woken_mean"] = json!(2.0);
        let c = compare(&run("a", &a), &run("b", &b2), DEFAULT_Z).expect("compares");
        assert!(render(&c).contains("woken/conn 1.00 -> 2.00 (+1.00, no spread in either run)"));
        let v: Value = serde_json::from_str(&render_json(&c).expect("json")).expect("valid");
        assert_eq!(v["rows"][1]["figures"][0]["z"], Value::Null);
    }

    #[test]
    fn exit_code_precedence() {
        let r = |s: Status| RowDiff {
            model: "x".into(),
            verdict_a: None,
            verdict_b: None,
            status: s,
            figures: vec![],
            notes: vec![],
        };
        assert_eq!(exit_code(&[]), EXIT_SAME);
        assert_eq!(
            exit_code(&[
                r(Status::Same),
                r(Status::FiguresChanged),
                r(Status::OnlyInB)
            ]),
            EXIT_SAME
        );
        assert_eq!(exit_code(&[r(Status::OnlyInA)]), EXIT_INCOMPLETE);
        assert_eq!(exit_code(&[r(Status::NotComparable)]), EXIT_INCOMPLETE);
        assert_eq!(
            exit_code(&[r(Status::NotComparable), r(Status::VerdictChanged)]),
            EXIT_VERDICT_CHANGED
        );
        let codes = [
            EXIT_SAME,
            EXIT_VERDICT_CHANGED,
            EXIT_BAD_INPUT,
            EXIT_INCOMPLETE,
        ];
        for (i, x) in codes.iter().enumerate() {
            assert!(codes[i + 1..].iter().all(|y| y != x), "distinct");
        }
    }
}
