//! `verify` output (pure): the behaviour table with the checks and their
//! sources, or one JSON object per row.
use std::fmt::Write as _;

use anyhow::{Context as _, Result};

use super::{
    expect::SOURCES,
    row::{Row, Setup, Verdict},
};

/// One NDJSON line per row.
pub fn json_lines(rows: &[Row]) -> Result<String> {
    let mut out = String::new();
    for r in rows {
        out.push_str(&serde_json::to_string(r).context("encoding a verify row")?);
        out.push('\n');
    }
    Ok(out)
}

fn f2(v: f64) -> String {
    format!("{v:.2}")
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{:.0}%", v * 100.0))
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The expected behaviour with its source keys: "one [H5]".
fn expected(r: &Row) -> String {
    let mut keys: Vec<&str> = Vec::new();
    for c in &r.checks {
        if !keys.contains(&c.source) {
            keys.push(c.source);
        }
    }
    if keys.is_empty() {
        r.expected.clone()
    } else {
        format!("{} [{}]", r.expected, keys.join(","))
    }
}

const LEGEND: &str = "
Columns:
  woken/conn, p99     tasks woken per connection (mean, 99th percentile)
  losers              accept() calls per connection that got EAGAIN and took nothing
  spurious            wakeups per connection that found no work (wasted = losers + spurious)
  win-EAGAIN          EAGAIN per connection that ends a winner's accept loop (not a loss)
  max-/min-share      largest and smallest share of the accepts one worker took (server's counts)
  lat-p50/p99-us      arrival to accept
  same-worker         share of connections taken by the worker that took the previous one: the
                      most recently sleeping worker, as arrivals are 1/rate apart and every worker
                      is asleep again in between (LIFO ~1, round-robin ~0, random 1/workers)

Sources:
";

/// Column names (one header line; the legend under the table explains them).
const HEAD: [&str; 12] = [
    "model",
    "woken/conn",
    "p99",
    "losers",
    "spurious",
    "win-EAGAIN",
    "max-share",
    "min-share",
    "lat-p50-us",
    "lat-p99-us",
    "same-worker",
    "expected",
];

/// The text table: a header naming the run, one line per row, then each
/// row's checks (expected vs measured), problems, and the sources.
pub fn table(setup: &Setup, rows: &[Row]) -> String {
    let kernel = rows
        .first()
        .map_or(setup.kernel.as_str(), |r| r.kernel.as_str());
    let backend = rows
        .first()
        .map_or(setup.backend.as_str(), |r| r.backend.as_str());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "herdtrace verify: kernel {kernel}, backend {backend}, {} workers, {} connections at {}/s per model\n",
        setup.workers, setup.connections, setup.rate
    );
    let mut lines: Vec<Vec<String>> = vec![HEAD.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let mut cells = vec![r.model.clone()];
        match &r.measured {
            Some(m) => cells.extend([
                f2(m.woken_mean),
                m.woken_p99.to_string(),
                f2(m.eagain_losers_per_conn),
                f2(m.spurious_per_conn),
                f2(m.winner_eagain_per_conn),
                pct(m.accept_share_max),
                pct(m.accept_share_min),
                opt(m.accept_latency_us_p50),
                opt(m.accept_latency_us_p99),
                m.same_worker_share.map_or_else(|| "-".to_string(), f2),
            ]),
            None => cells.extend(std::iter::repeat_n("-".to_string(), 10)),
        }
        cells.push(expected(r));
        lines.push(cells);
    }
    let widths: Vec<usize> = (0..HEAD.len())
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    for (n, l) in lines.iter().enumerate() {
        let mut line = String::new();
        for (i, cell) in l.iter().enumerate() {
            // Names and text left-aligned, figures right-aligned.
            if i == 0 || i + 1 == l.len() {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            } else {
                let _ = write!(line, "{cell:>w$}  ", w = widths[i]);
            }
        }
        match n.checked_sub(1).and_then(|k| rows.get(k)) {
            Some(r) => line.push_str(r.verdict.word()),
            None => line.push_str("verdict"),
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }

    out.push_str("\nExpected vs measured:\n");
    let name_w = rows.iter().map(|r| r.model.len()).max().unwrap_or(0);
    for r in rows {
        let mut parts: Vec<String> = r
            .checks
            .iter()
            .map(|c| {
                format!(
                    "{} {} [{}]",
                    c.text(),
                    if c.pass { "ok" } else { "DEPARTS" },
                    c.source
                )
            })
            .collect();
        parts.extend(r.problems.iter().map(|p| match r.verdict {
            Verdict::Error => format!("error: {p}"),
            _ => format!("not measured cleanly: {p}"),
        }));
        if r.attempts > 1 {
            parts.push(format!(
                "attempt {} (before: {})",
                r.attempts,
                r.earlier_attempts.join(" / ")
            ));
        }
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<7}  {}",
            r.model,
            r.verdict.word(),
            parts.join("; ")
        );
    }

    out.push_str(LEGEND);
    for s in SOURCES {
        let _ = writeln!(out, "  [{}] {}: {}", s.key, s.doc, s.claim);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::super::{expect::plans, row::build};
    use super::*;
    use crate::scenario::{ConnSample, Outcome};

    fn setup() -> Setup {
        Setup {
            kernel: "uname".into(),
            backend: "auto".into(),
            workers: 2,
            connections: 4,
            rate: 200,
        }
    }

    fn outcome(woken: f64, tids: [u32; 4]) -> Outcome {
        let mut accepts = BTreeMap::from([(1, (0, 0)), (2, (0, 0))]);
        for t in tids {
            let e = accepts.entry(t).or_insert((0, 0));
            e.0 += 1;
            e.1 += 1;
        }
        Outcome {
            scenario: "x".into(),
            backend: "tracepoint".into(),
            kernel: "6.18.44-test".into(),
            load_connections: 4,
            load_errors: 0,
            conn_records: 4,
            woken_mean: woken,
            woken_p99: 1,
            eagain_per_conn: 0.0,
            eagain_losers_per_conn: 0.0,
            spurious_per_conn: 0.0,
            lost_events: 0,
            accepts_by_tid: accepts,
            failures: Vec::new(),
            diagnostics: Vec::new(),
            skipped_by_program: BTreeMap::new(),
            explained: Vec::new(),
            tracer_stderr: String::new(),
            conns: tids
                .iter()
                .enumerate()
                .map(|(k, t)| ConnSample {
                    ts_ns: k as u64,
                    accepted_by: Some(*t),
                    accept_latency_us: Some(50 * (k as u64 + 1)),
                    peer: None,
                    woken: 1,
                    eagain: 0,
                    eagain_losers: 0,
                    spurious: 0,
                    flagged: false,
                })
                .collect(),
        }
    }

    fn rows() -> Vec<Row> {
        let plans = plans(2);
        let get = |n: &str| plans.iter().find(|p| p.name == n).expect("plan");
        vec![
            build(get("exclusive"), &setup(), Ok(&outcome(1.0, [1, 1, 1, 1]))),
            build(
                get("blocking-accept"),
                &setup(),
                Ok(&outcome(1.0, [1, 1, 1, 1])),
            ),
            build(get("reuseport"), &setup(), Err("server failed".into())),
        ]
    }

    #[test]
    fn json_has_one_object_per_row_with_model_kernel_backend_and_figures() {
        let text = json_lines(&rows()).expect("json");
        let objs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("valid json line"))
            .collect();
        assert_eq!(objs.len(), 3);
        let names: Vec<&str> = objs
            .iter()
            .map(|o| o["model"].as_str().expect("model"))
            .collect();
        assert_eq!(names, ["exclusive", "blocking-accept", "reuseport"]);
        let o = &objs[0];
        assert_eq!(o["kernel"], "6.18.44-test");
        assert_eq!(o["backend"], "tracepoint");
        assert_eq!(o["serve_model"], "exclusive");
        assert_eq!(o["workers"], 2);
        assert_eq!(o["woken_mean"], 1.0);
        assert_eq!(o["woken_p99"], 1);
        assert_eq!(o["accept_share_max"], 1.0);
        assert_eq!(o["accept_share_min"], 0.0);
        assert_eq!(o["accepts_per_worker"], serde_json::json!([4, 0]));
        assert_eq!(o["accept_latency_us_p50"], 100);
        assert_eq!(o["accept_latency_us_p99"], 200);
        assert_eq!(o["same_worker_share"], 1.0);
        // What `verify --compare` estimates the spread from.
        assert_eq!(o["spread"]["conns"], 4);
        assert_eq!(o["spread"]["woken_sd"], 0.0);
        assert_eq!(o["spread"]["same_worker_pairs"], 3);
        assert_eq!(o["verdict"], "pass");
        assert_eq!(o["attempts"], 1);
        assert_eq!(o["earlier_attempts"], serde_json::json!([]));
        assert_eq!(o["checks"][0]["metric"], "woken_mean");
        assert_eq!(o["checks"][0]["expected"], "0.5..1.5");
        assert_eq!(o["checks"][0]["pass"], true);
        assert_eq!(o["checks"][1]["metric"], "same_worker_share");
        assert_eq!(o["checks"][1]["source"], "C");
        // Same worker every time is not round-robin.
        assert_eq!(objs[1]["verdict"], "fail");
        // The failed run: setup's kernel and backend, no figures, the error.
        assert_eq!(objs[2]["verdict"], "error");
        assert_eq!(objs[2]["kernel"], "uname");
        assert_eq!(objs[2]["backend"], "auto");
        assert!(objs[2].get("woken_mean").is_none());
        assert_eq!(objs[2]["problems"][0], "server failed");
    }

    #[test]
    fn table_has_header_rows_checks_and_sources() {
        let t = table(&setup(), &rows());
        assert!(
            t.starts_with(
                "herdtrace verify: kernel 6.18.44-test, backend tracepoint, 2 workers, 4 connections at 200/s per model\n"
            ),
            "{t}"
        );
        let line = |prefix: &str| {
            t.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line {prefix:?} in\n{t}"))
                .to_string()
        };
        let header = line("model ");
        assert!(
            header.ends_with("verdict") && header.contains("woken/conn"),
            "{header}"
        );
        let ex = line("exclusive ");
        let cells: Vec<&str> = ex.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "exclusive",
                "1.00",
                "1",
                "0.00",
                "0.00",
                "0.00",
                "100%",
                "0%",
                "100",
                "200",
                "1.00",
                "one",
                "or",
                "a",
                "few;",
                "LIFO",
                "[H4,C]",
                "pass"
            ]
        );
        assert!(line("blocking-accept ").ends_with("FAIL"));
        let err = line("reuseport ");
        assert!(err.ends_with("ERROR") && err.contains(" - "), "{err}");
        // Columns line up: every table line's verdict starts at the same column.
        let col = |l: &str| l.rfind(' ').expect("space");
        assert_eq!(col(&header), col(&ex));
        assert!(
            t.contains("same-worker share 1.00 (<=0.25) DEPARTS [C]"),
            "{t}"
        );
        assert!(t.contains("woken/conn 1.00 (0.5..1.5) ok [H4]"), "{t}");
        assert!(t.contains("error: server failed"), "{t}");
        for s in SOURCES {
            assert!(t.contains(&format!("[{}] {}", s.key, s.doc)), "{}", s.key);
        }
    }

    #[test]
    fn table_of_no_rows_names_the_setup() {
        let t = table(&setup(), &[]);
        assert!(
            t.starts_with("herdtrace verify: kernel uname, backend auto,"),
            "{t}"
        );
        assert!(t.contains("Sources:"));
    }

    #[test]
    fn a_retried_row_shows_its_earlier_attempts() {
        let plans = plans(2);
        let p = plans.iter().find(|p| p.name == "exclusive").expect("plan");
        let first = build(p, &setup(), Ok(&outcome(1.0, [1, 2, 1, 2])));
        let second = build(p, &setup(), Ok(&outcome(1.0, [1, 1, 1, 1]))).after_attempts(&[first]);
        let t = table(&setup(), std::slice::from_ref(&second));
        assert!(
            t.contains("attempt 2 (before: FAIL: same-worker share 0.00 (>=0.75))"),
            "{t}"
        );
        let json: Value =
            serde_json::from_str(json_lines(&[second]).expect("json").trim()).expect("one object");
        assert_eq!(json["attempts"], 2);
        assert_eq!(
            json["earlier_attempts"][0],
            "FAIL: same-worker share 0.00 (>=0.75)"
        );
    }

    #[test]
    fn invalid_rows_say_why() {
        let plans = plans(2);
        let p = plans.iter().find(|p| p.name == "reuseport").expect("plan");
        let mut o = outcome(1.0, [1, 2, 1, 2]);
        o.lost_events = 2;
        let r = build(p, &setup(), Ok(&o));
        let t = table(&setup(), &[r]);
        assert!(t.contains("not measured cleanly: 2 events lost"), "{t}");
        assert!(t
            .lines()
            .any(|l| l.starts_with("reuseport ") && l.ends_with("INVALID")));
    }
}
