//! `cargo xtask vmtest --verify`: `herdtrace verify --json` under every
//! backend in each kernel, its rows read back from the console, and the
//! kernel-by-kernel table of docs/kernel-behaviour.md (pure, except
//! [`splice_doc`]'s caller writing the file).
use std::fmt::Write as _;

use serde_json::Value;

use super::console::{self, Console, Ending, Verdict};
use super::report::cell;

/// Every backend, in the order the rows are shown.
pub const BACKENDS: [&str; 3] = ["tracepoint", "kprobe", "fentry"];

/// Connections per second in the VM: `herdtrace verify`'s default, which
/// software emulation sustains (every expectation assumes the workers are
/// asleep again before the next connection; at 50/s Debian 6.1 under TCG
/// woke only 3.64 of 4 workers per connection, at 20/s 3.89), see
/// docs/kernel-behaviour.md.
pub const RATE: u32 = 20;
/// Connections per row: `herdtrace verify`'s default, so the rows compare
/// with host runs without a setup warning; the standard error of woken/conn
/// is then about sd/16.
pub const CONNECTIONS: u32 = 250;

/// Markers around the generated part of docs/kernel-behaviour.md.
pub const DOC_BEGIN: &str = "<!-- BEGIN cargo xtask vmtest --verify -->";
pub const DOC_END: &str = "<!-- END cargo xtask vmtest --verify -->";

/// What the VM runs in `--verify` mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub backends: Vec<String>,
    /// `working`: a backend the kernel refuses is reported, not a failure.
    pub skip_unavailable: bool,
    pub rate: u32,
    pub connections: u32,
}

impl Plan {
    /// From `--backend` (a list, or `working`: all three, refusals allowed).
    pub fn new(backends: &[String], rate: u32, connections: u32) -> Plan {
        let working = backends.is_empty() || backends.iter().any(|b| b == "working");
        let chosen: Vec<String> = BACKENDS
            .iter()
            .filter(|b| working || backends.iter().any(|x| x == *b))
            .map(|b| b.to_string())
            .collect();
        Plan {
            backends: chosen,
            skip_unavailable: working,
            rate,
            connections,
        }
    }

    /// `herdtrace check` (what the kernel offers), then one verify per backend.
    pub fn commands(&self) -> Vec<String> {
        let mut v = vec!["herdtrace check".to_string()];
        v.extend(self.backends.iter().map(|b| {
            format!(
                "herdtrace verify --json --backend {b} --rate {} --connections {}",
                self.rate, self.connections
            )
        }));
        v
    }

    /// The backend command `n` (1-based, as on the console) verifies.
    pub fn backend_of(&self, n: usize) -> Option<&str> {
        n.checked_sub(2)
            .and_then(|i| self.backends.get(i))
            .map(String::as_str)
    }
}

/// One row of `herdtrace verify --json`, as the table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The line as printed (written back to `verify-<backend>.json`).
    pub line: String,
    pub model: String,
    pub kernel: String,
    pub verdict: String,
    pub woken_mean: Option<f64>,
    pub woken_p99: Option<u64>,
    pub losers: Option<f64>,
    pub spurious: Option<f64>,
    pub win_eagain: Option<f64>,
    pub same_worker: Option<f64>,
    pub latency_p99_us: Option<u64>,
    pub attempts: u64,
    /// Failing checks and problems, for rows that did not pass.
    pub why: Vec<String>,
}

impl Row {
    pub fn parse(line: &str) -> Option<Row> {
        let v: Value = serde_json::from_str(line).ok()?;
        let model = v.get("model")?.as_str()?.to_string();
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        let mut why: Vec<String> = v
            .get("checks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c.get("pass").and_then(Value::as_bool) == Some(false))
            .map(|c| {
                let measured = c
                    .get("measured")
                    .and_then(Value::as_f64)
                    .map_or_else(|| "not measured".to_string(), |m| format!("{m:.2}"));
                format!(
                    "{} {measured} ({})",
                    c.get("metric").and_then(Value::as_str).unwrap_or("?"),
                    c.get("expected").and_then(Value::as_str).unwrap_or("?")
                )
            })
            .collect();
        why.extend(
            v.get("problems")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_string)),
        );
        Some(Row {
            line: line.to_string(),
            model,
            kernel: v.get("kernel")?.as_str()?.to_string(),
            verdict: v.get("verdict")?.as_str()?.to_string(),
            woken_mean: f("woken_mean"),
            woken_p99: u("woken_p99"),
            losers: f("eagain_losers_per_conn"),
            spurious: f("spurious_per_conn"),
            win_eagain: f("winner_eagain_per_conn"),
            same_worker: f("same_worker_share"),
            latency_p99_us: u("accept_latency_us_p99"),
            attempts: u("attempts").unwrap_or(1),
            why,
        })
    }

    pub fn passed(&self) -> bool {
        self.verdict == "pass"
    }
}

/// What one backend's `herdtrace verify` gave in one kernel.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendRun {
    /// Its rows; `unreadable` counts `{` lines that did not parse (a
    /// kernel message printed into the middle of a row, say).
    Rows { rows: Vec<Row>, unreadable: usize },
    /// The kernel refuses this backend (verify's one error line).
    Unavailable(String),
    /// No rows and no refusal: what the output ended with.
    Failed(String),
}

/// Verify's line for a backend the kernel refuses.
const UNAVAILABLE: &str = "backend unavailable: ";
const ERROR_PREFIX: &str = "herdtrace: error: verify: ";

/// Reads one verify command's console output.
pub fn parse_output(lines: &[String]) -> BackendRun {
    let mut rows = Vec::new();
    let mut unreadable = 0;
    for l in lines.iter().map(|l| l.trim()) {
        if l.starts_with('{') {
            match Row::parse(l) {
                Some(r) => rows.push(r),
                None => unreadable += 1,
            }
        }
    }
    if !rows.is_empty() || unreadable > 0 {
        return BackendRun::Rows { rows, unreadable };
    }
    if let Some(l) = lines.iter().find(|l| l.contains(UNAVAILABLE)) {
        let reason = l.split_once(ERROR_PREFIX).map_or(l.as_str(), |(_, r)| r);
        return BackendRun::Unavailable(reason.trim().to_string());
    }
    BackendRun::Failed(
        lines
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map_or_else(|| "no output".to_string(), |l| l.trim().to_string()),
    )
}

/// Every backend's run in one kernel, by command number.
pub fn runs(console: &Console, plan: &Plan) -> Vec<(String, BackendRun)> {
    (1..=plan.backends.len() + 1)
        .filter_map(|n| plan.backend_of(n).map(|b| (n, b)))
        .map(|(n, b)| {
            let lines = console.outputs.get(&n).cloned().unwrap_or_default();
            let run = if console.rcs.contains_key(&n) {
                parse_output(&lines)
            } else {
                BackendRun::Failed(format!("did not finish ({} lines of output)", lines.len()))
            };
            (b.to_string(), run)
        })
        .collect()
}

/// The kernel's verdict in `--verify` mode: it booted and ran every command
/// to its end, `check` worked, and every backend that ran passed every row
/// (a backend the kernel refuses is fine under `working`).
pub fn decide(console: &Console, ending: Ending, plan: &Plan) -> Verdict {
    let commands = plan.backends.len() + 1;
    if console.fatal.is_some() || console.verdict.is_none() {
        return console::decide(console, ending, commands);
    }
    let mut failures: Vec<String> = Vec::new();
    match console.rcs.get(&1) {
        Some(0) => {}
        Some(rc) => failures.push(format!("herdtrace check rc={rc}")),
        None => failures.push("herdtrace check did not finish".to_string()),
    }
    for (backend, run) in runs(console, plan) {
        match run {
            BackendRun::Rows { rows, unreadable } => {
                let bad: Vec<String> = rows
                    .iter()
                    .filter(|r| !r.passed())
                    .map(|r| format!("{} {}", r.model, r.verdict.to_uppercase()))
                    .collect();
                if !bad.is_empty() {
                    failures.push(format!("{backend}: {}", bad.join(", ")));
                }
                if unreadable > 0 {
                    failures.push(format!("{backend}: {unreadable} unreadable rows"));
                }
                if rows.is_empty() {
                    failures.push(format!("{backend}: no rows"));
                }
            }
            BackendRun::Unavailable(reason) if !plan.skip_unavailable => {
                failures.push(format!("{backend}: {reason}"));
            }
            BackendRun::Unavailable(_) => {}
            BackendRun::Failed(why) => failures.push(format!("{backend}: {why}")),
        }
    }
    if failures.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(failures.join("; "))
    }
}

/// One kernel's results for the table.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRuns {
    /// "5.10", ..., or the `--kernel-image` label.
    pub series: String,
    /// Package and version, as in the report.
    pub package: Option<(String, String)>,
    pub runs: Vec<(String, BackendRun)>,
    pub seconds: f64,
}

impl KernelRuns {
    /// The release the rows report (`uname -r` in the VM).
    pub fn release(&self) -> Option<&str> {
        self.runs.iter().find_map(|(_, r)| match r {
            BackendRun::Rows { rows, .. } => rows.first().map(|r| r.kernel.as_str()),
            _ => None,
        })
    }

    fn rows(&self, backend: &str) -> Option<&[Row]> {
        self.runs.iter().find_map(|(b, r)| match r {
            BackendRun::Rows { rows, .. } if b == backend => Some(rows.as_slice()),
            _ => None,
        })
    }
}

/// The NDJSON a backend's rows are saved as (`herdtrace verify --compare` input).
pub fn ndjson(rows: &[Row]) -> String {
    rows.iter().map(|r| format!("{}\n", r.line)).collect()
}

fn f2(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Verify row names in the order they first appear.
fn models(kernels: &[KernelRuns]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for k in kernels {
        for (_, run) in &k.runs {
            if let BackendRun::Rows { rows, .. } = run {
                for r in rows {
                    if !names.contains(&r.model) {
                        names.push(r.model.clone());
                    }
                }
            }
        }
    }
    names
}

/// A verdict as the table shows it (attempts when a retry was needed).
fn verdict_cell(r: &Row) -> String {
    let word = if r.passed() {
        "pass".to_string()
    } else {
        r.verdict.to_uppercase()
    };
    if r.attempts > 1 {
        format!("{word} ({} runs)", r.attempts)
    } else {
        word
    }
}

/// The generated tables: runs, verdicts side by side, then per backend the
/// figures of every row in every kernel, then the comparisons.
pub fn render(kernels: &[KernelRuns], plan: &Plan, compares: &[(String, String)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Each kernel: `herdtrace verify --json --backend B --rate {} --connections {}` \
         for each backend B, {} workers per server (verify's default).\n",
        plan.rate, plan.connections, 4
    );
    s.push_str("| kernel | package | version | release (uname -r) | boot + all runs |\n");
    s.push_str("|---|---|---|---|---|\n");
    for k in kernels {
        let (p, v) = k
            .package
            .as_ref()
            .map_or(("-", "-"), |(p, v)| (p.as_str(), v.as_str()));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} s |",
            k.series,
            cell(p),
            cell(v),
            k.release().unwrap_or("-"),
            k.seconds
        );
    }

    let names = models(kernels);
    s.push_str("\n### Verdicts\n\n");
    let backends_label = plan.backends.join(" / ");
    s.push_str("| row |");
    for k in kernels {
        let _ = write!(s, " {} ({backends_label}) |", k.series);
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(kernels.len()));
    s.push('\n');
    for m in &names {
        let _ = write!(s, "| {m} |");
        for k in kernels {
            let cells: Vec<String> = plan
                .backends
                .iter()
                .map(
                    |b| match k.runs.iter().find(|(x, _)| x == b).map(|(_, r)| r) {
                        Some(BackendRun::Rows { rows, .. }) => rows
                            .iter()
                            .find(|r| &r.model == m)
                            .map_or_else(|| "-".to_string(), verdict_cell),
                        Some(BackendRun::Unavailable(_)) => "n/a".to_string(),
                        Some(BackendRun::Failed(_)) => "ERROR".to_string(),
                        None => "-".to_string(),
                    },
                )
                .collect();
            let _ = write!(s, " {} |", cells.join(" / "));
        }
        s.push('\n');
    }
    let refusals: Vec<String> = kernels
        .iter()
        .flat_map(|k| {
            k.runs.iter().filter_map(move |(b, r)| match r {
                BackendRun::Unavailable(why) => Some(format!("{} {b}: {why}", k.series)),
                BackendRun::Failed(why) => Some(format!("{} {b}: ERROR {why}", k.series)),
                _ => None,
            })
        })
        .collect();
    if !refusals.is_empty() {
        s.push_str("\nn/a: the kernel refuses the backend; ERROR: verify did not run:\n\n");
        for r in refusals {
            let _ = writeln!(s, "- {}", cell(&r));
        }
    }

    for b in &plan.backends {
        if !kernels.iter().any(|k| k.rows(b).is_some()) {
            continue;
        }
        let _ = writeln!(s, "\n### Backend {b}\n");
        s.push_str(
            "| row | kernel | woken/conn | p99 | EAGAIN losers/conn | spurious/conn | \
             win-EAGAIN/conn | same-worker | accept p99 µs | verdict |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for m in &names {
            for k in kernels {
                let Some(r) = k
                    .rows(b)
                    .and_then(|rows| rows.iter().find(|r| &r.model == m))
                else {
                    continue;
                };
                let mut verdict = verdict_cell(r);
                if !r.passed() && !r.why.is_empty() {
                    verdict = format!("{verdict}: {}", r.why.join("; "));
                }
                let _ = writeln!(
                    s,
                    "| {m} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    k.series,
                    f2(r.woken_mean),
                    opt(r.woken_p99),
                    f2(r.losers),
                    f2(r.spurious),
                    f2(r.win_eagain),
                    f2(r.same_worker),
                    opt(r.latency_p99_us),
                    cell(&verdict)
                );
            }
        }
    }

    if !compares.is_empty() {
        s.push_str(
            "\n### Differences beyond the spread\n\n`herdtrace verify --compare` of each \
             kernel's run against the previous kernel's, per backend (exit status 0: no \
             verdict changed).\n",
        );
        for (title, out) in compares {
            let _ = write!(s, "\n{title}\n\n```\n{}\n```\n", out.trim_end());
        }
    }
    s
}

/// The consecutive kernel pairs to compare, per backend: (backend, older, newer).
pub fn compare_pairs(kernels: &[KernelRuns], plan: &Plan) -> Vec<(String, usize, usize)> {
    let mut pairs = Vec::new();
    for b in &plan.backends {
        let with: Vec<usize> = kernels
            .iter()
            .enumerate()
            .filter(|(_, k)| k.rows(b).is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| i)
            .collect();
        for w in with.windows(2) {
            pairs.push((b.clone(), w[0], w[1]));
        }
    }
    pairs
}

/// `doc` with the text between [`DOC_BEGIN`] and [`DOC_END`] replaced by `generated`.
pub fn splice_doc(doc: &str, generated: &str) -> Result<String, String> {
    let begin = doc
        .find(DOC_BEGIN)
        .ok_or_else(|| format!("no {DOC_BEGIN} marker"))?;
    let end = doc
        .find(DOC_END)
        .ok_or_else(|| format!("no {DOC_END} marker"))?;
    if end < begin {
        return Err("the END marker comes before the BEGIN marker".to_string());
    }
    Ok(format!(
        "{}{DOC_BEGIN}\n{}\n{}",
        &doc[..begin],
        generated.trim_end(),
        &doc[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_line(model: &str, verdict: &str, woken: f64) -> String {
        serde_json::json!({
            "model": model, "kernel": "6.1.0-56-cloud-amd64", "backend": "fentry",
            "workers": 4, "connections": 150, "rate": 20, "verdict": verdict,
            "woken_mean": woken, "woken_p99": 4, "eagain_losers_per_conn": 0.61,
            "spurious_per_conn": 2.37, "winner_eagain_per_conn": 0.0,
            "same_worker_share": 0.05, "accept_latency_us_p99": 950, "attempts": 1,
            "checks": [{"metric": "woken_mean", "expected": ">=3.5", "measured": woken,
                        "pass": verdict == "pass", "source": "H1"}],
            "problems": []
        })
        .to_string()
    }

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plan_from_backend_argument() {
        let p = Plan::new(&["working".to_string()], 20, 150);
        assert_eq!(p.backends, ["tracepoint", "kprobe", "fentry"]);
        assert!(p.skip_unavailable);
        assert_eq!(Plan::new(&[], 20, 150).backends.len(), 3);
        let p = Plan::new(&["fentry".to_string(), "tracepoint".to_string()], 10, 50);
        assert_eq!(p.backends, ["tracepoint", "fentry"], "canonical order");
        assert!(!p.skip_unavailable);
        assert_eq!(
            p.commands(),
            [
                "herdtrace check",
                "herdtrace verify --json --backend tracepoint --rate 10 --connections 50",
                "herdtrace verify --json --backend fentry --rate 10 --connections 50"
            ]
        );
        assert_eq!(p.backend_of(1), None);
        assert_eq!(p.backend_of(2), Some("tracepoint"));
        assert_eq!(p.backend_of(3), Some("fentry"));
        assert_eq!(p.backend_of(4), None);
        assert_eq!(p.backend_of(0), None);
    }

    #[test]
    fn rows_refusals_and_failures_are_told_apart() {
        let out = lines(&[
            "herdtrace verify: epoll-per-worker ...",
            &row_line("epoll-per-worker", "pass", 4.0),
            "herdtrace verify: epoll-per-worker pass",
            &row_line("exclusive", "fail", 3.0),
        ]);
        let BackendRun::Rows { rows, unreadable } = parse_output(&out) else {
            panic!("rows expected");
        };
        assert_eq!(unreadable, 0);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].model, "epoll-per-worker");
        assert_eq!(rows[0].woken_mean, Some(4.0));
        assert_eq!(rows[0].woken_p99, Some(4));
        assert_eq!(rows[0].latency_p99_us, Some(950));
        assert!(rows[0].passed() && rows[0].why.is_empty());
        assert_eq!(rows[1].why, ["woken_mean 3.00 (>=3.5)"]);
        assert_eq!(rows[0].line, out[1]);

        let refused = lines(&[
            "herdtrace: error: verify: kprobe backend unavailable: refused: kernel built without CONFIG_KPROBES",
        ]);
        assert_eq!(
            parse_output(&refused),
            BackendRun::Unavailable(
                "kprobe backend unavailable: refused: kernel built without CONFIG_KPROBES".into()
            )
        );
        assert_eq!(
            parse_output(&lines(&["x", "Segmentation fault", ""])),
            BackendRun::Failed("Segmentation fault".into())
        );
        assert_eq!(parse_output(&[]), BackendRun::Failed("no output".into()));
        // A row cut by a kernel message is counted, not dropped silently.
        let cut = lines(&[
            &row_line("reuseport", "pass", 1.0),
            "{\"model\":\"exclusive\",\"ker[   30.1] random: crng init done",
        ]);
        assert!(matches!(
            parse_output(&cut),
            BackendRun::Rows { ref rows, unreadable: 1 } if rows.len() == 1
        ));
    }

    fn console(outputs: &[(usize, Vec<String>, i32)], sentinel: bool) -> Console {
        let mut c = Console::default();
        for (n, out, rc) in outputs {
            c.feed(&format!("=== BEGIN {n}"));
            for l in out {
                c.feed(l);
            }
            c.feed(&format!("=== END {n} rc={rc}"));
        }
        if sentinel {
            c.feed("HERDTRACE-VMTEST-RESULT: FAIL commands failed: 3");
        }
        c
    }

    #[test]
    fn a_refused_backend_passes_under_working_only() {
        let plan = Plan::new(&["working".to_string()], 20, 150);
        let pass = vec![row_line("exclusive", "pass", 1.0)];
        let c = console(
            &[
                (1, lines(&["kernel: 6.1"]), 0),
                (2, pass.clone(), 0),
                (
                    3,
                    lines(&["herdtrace: error: verify: kprobe backend unavailable: no"]),
                    2,
                ),
                (4, pass.clone(), 0),
            ],
            true,
        );
        assert_eq!(decide(&c, Ending::Exited, &plan), Verdict::Pass);
        let strict = Plan::new(
            &["tracepoint".into(), "kprobe".into(), "fentry".into()],
            20,
            150,
        );
        assert_eq!(
            decide(&c, Ending::Exited, &strict),
            Verdict::Fail("kprobe: kprobe backend unavailable: no".into())
        );
        let runs = runs(&c, &plan);
        assert_eq!(runs.len(), 3);
        assert!(matches!(runs[1].1, BackendRun::Unavailable(_)));
    }

    #[test]
    fn failing_rows_crashes_and_unfinished_runs_fail_the_kernel() {
        let plan = Plan::new(&["tracepoint".into(), "fentry".into()], 20, 150);
        let c = console(
            &[
                (1, vec![], 0),
                (
                    2,
                    vec![
                        row_line("exclusive", "fail", 3.0),
                        row_line("reuseport", "invalid", 1.0),
                    ],
                    1,
                ),
                (3, lines(&["Killed"]), 137),
            ],
            true,
        );
        assert_eq!(
            decide(&c, Ending::Exited, &plan),
            Verdict::Fail("tracepoint: exclusive FAIL, reuseport INVALID; fentry: Killed".into())
        );
        // check failing, and a backend that never ran.
        let c = console(
            &[(1, vec![], 1), (2, vec![row_line("a", "pass", 1.0)], 0)],
            true,
        );
        assert_eq!(
            decide(&c, Ending::Exited, &plan),
            Verdict::Fail(
                "herdtrace check rc=1; fentry: did not finish (0 lines of output)".into()
            )
        );
        // A command cut short: the result line inside it is output, not a result.
        let mut c = console(
            &[(1, vec![], 0), (2, vec![row_line("a", "pass", 1.0)], 0)],
            false,
        );
        c.feed("=== BEGIN 3");
        c.feed("HERDTRACE-VMTEST-RESULT: PASS");
        assert_eq!(
            decide(&c, Ending::TimedOut(60), &plan),
            Verdict::Fail("timeout after 60 s".into())
        );
        // No result line at all: the boot's own verdict.
        let c = console(&[(1, vec![], 0)], false);
        assert_eq!(
            decide(&c, Ending::TimedOut(900), &plan),
            Verdict::Fail("timeout after 900 s".into())
        );
        let mut c = console(&[(1, vec![], 0)], true);
        c.feed("[   9.000000] Kernel panic - not syncing: x");
        assert!(
            matches!(decide(&c, Ending::Exited, &plan), Verdict::Fail(m) if m.starts_with("kernel failure"))
        );
    }

    fn kernel(series: &str, backends: &[(&str, BackendRun)]) -> KernelRuns {
        KernelRuns {
            series: series.into(),
            package: Some((format!("linux-image-{series}"), format!("{series}.1-1"))),
            runs: backends
                .iter()
                .map(|(b, r)| (b.to_string(), r.clone()))
                .collect(),
            seconds: 600.0,
        }
    }

    fn rows(v: &[(&str, &str, f64)]) -> BackendRun {
        BackendRun::Rows {
            rows: v
                .iter()
                .map(|(m, verdict, w)| Row::parse(&row_line(m, verdict, *w)).expect("row"))
                .collect(),
            unreadable: 0,
        }
    }

    #[test]
    fn tables_put_kernels_side_by_side() {
        let plan = Plan::new(&["working".to_string()], 20, 150);
        let ks = [
            kernel(
                "5.10",
                &[
                    (
                        "tracepoint",
                        rows(&[
                            ("epoll-per-worker", "pass", 4.0),
                            ("exclusive", "pass", 1.0),
                        ]),
                    ),
                    (
                        "kprobe",
                        BackendRun::Unavailable("kprobe backend unavailable: x".into()),
                    ),
                    ("fentry", rows(&[("epoll-per-worker", "pass", 3.98)])),
                ],
            ),
            kernel(
                "6.1",
                &[
                    (
                        "tracepoint",
                        rows(&[
                            ("epoll-per-worker", "pass", 3.99),
                            ("exclusive", "fail", 2.0),
                        ]),
                    ),
                    ("kprobe", BackendRun::Failed("Killed".into())),
                    ("fentry", rows(&[("epoll-per-worker", "pass", 4.0)])),
                ],
            ),
        ];
        let compares = vec![(
            "**tracepoint**, 5.10 -> 6.1".to_string(),
            "herdtrace verify --compare\n".to_string(),
        )];
        let md = render(&ks, &plan, &compares);
        assert!(md.contains("`herdtrace verify --json --backend B --rate 20 --connections 150`"));
        assert!(
            md.contains("| 5.10 | linux-image-5.10 | 5.10.1-1 | 6.1.0-56-cloud-amd64 | 600 s |"),
            "{md}"
        );
        assert!(md.contains("| row | 5.10 (tracepoint / kprobe / fentry) | 6.1 (tracepoint / kprobe / fentry) |"), "{md}");
        assert!(
            md.contains("| epoll-per-worker | pass / n/a / pass | pass / ERROR / pass |"),
            "{md}"
        );
        assert!(
            md.contains("| exclusive | pass / n/a / - | FAIL / ERROR / - |"),
            "{md}"
        );
        assert!(
            md.contains("- 5.10 kprobe: kprobe backend unavailable: x"),
            "{md}"
        );
        assert!(md.contains("- 6.1 kprobe: ERROR Killed"), "{md}");
        // Per backend, the kernels of one row are adjacent.
        let tp = md.find("### Backend tracepoint").expect("tracepoint table");
        let fe = md.find("### Backend fentry").expect("fentry table");
        assert!(
            !md.contains("### Backend kprobe"),
            "no kprobe rows anywhere"
        );
        let table = &md[tp..fe];
        let a = table
            .find("| epoll-per-worker | 5.10 | 4.00 | 4 | 0.61 | 2.37 | 0.00 | 0.05 | 950 | pass |")
            .expect("5.10 row");
        let b = table
            .find("| epoll-per-worker | 6.1 | 3.99 |")
            .expect("6.1 row");
        let c = table.find("| exclusive | 5.10 |").expect("exclusive");
        assert!(a < b && b < c, "{table}");
        assert!(table.contains("| exclusive | 6.1 | 2.00 | 4 | 0.61 | 2.37 | 0.00 | 0.05 | 950 | FAIL: woken_mean 2.00 (>=3.5) |"), "{table}");
        assert!(md.contains("### Differences beyond the spread"));
        assert!(
            md.contains("**tracepoint**, 5.10 -> 6.1\n\n```\nherdtrace verify --compare\n```\n")
        );
        assert_eq!(ks[0].release(), Some("6.1.0-56-cloud-amd64"));
    }

    #[test]
    fn pairs_follow_the_kernels_that_have_rows() {
        let plan = Plan::new(&["working".to_string()], 20, 150);
        let r = || rows(&[("exclusive", "pass", 1.0)]);
        let ks = [
            kernel(
                "5.10",
                &[
                    ("tracepoint", r()),
                    ("kprobe", BackendRun::Failed("x".into())),
                ],
            ),
            kernel("6.1", &[("tracepoint", r()), ("kprobe", r())]),
            kernel("6.12", &[("tracepoint", r()), ("kprobe", r())]),
        ];
        assert_eq!(
            compare_pairs(&ks, &plan),
            vec![
                ("tracepoint".to_string(), 0, 1),
                ("tracepoint".to_string(), 1, 2),
                ("kprobe".to_string(), 1, 2)
            ]
        );
        assert!(compare_pairs(&ks[..1], &plan).is_empty());
    }

    #[test]
    fn ndjson_round_trips_the_lines() {
        let BackendRun::Rows { rows, .. } = rows(&[("a", "pass", 1.0), ("b", "pass", 2.0)]) else {
            panic!("rows");
        };
        let text = ndjson(&rows);
        assert_eq!(text.lines().count(), 2);
        assert_eq!(
            Row::parse(text.lines().nth(1).expect("line"))
                .expect("row")
                .model,
            "b"
        );
        assert!(Row::parse("{\"kernel\":\"x\"}").is_none(), "no model");
        assert!(Row::parse("not json").is_none());
    }

    #[test]
    fn doc_splice_replaces_only_the_generated_part() {
        let doc = format!("# Title\nprose\n{DOC_BEGIN}\nold table\n{DOC_END}\nmore prose\n");
        let out = splice_doc(&doc, "new table\n\n").expect("spliced");
        assert_eq!(
            out,
            format!("# Title\nprose\n{DOC_BEGIN}\nnew table\n{DOC_END}\nmore prose\n")
        );
        assert_eq!(
            splice_doc(&out, "new table").expect("again"),
            out,
            "idempotent"
        );
        assert!(splice_doc("# no markers", "x").is_err());
        assert!(splice_doc(&format!("{DOC_END}\n{DOC_BEGIN}"), "x").is_err());
        assert!(splice_doc(&format!("{DOC_BEGIN} only"), "x").is_err());
    }
}
