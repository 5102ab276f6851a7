//! One probe table, one decision: for every gap a kernel can have (each
//! target of the probe table, each program type, BTF) simulated with
//! HERDTRACE_MISSING, the backend `herdtrace check` reports is the one the
//! tracer then attaches, program for program, or both refuse with the same
//! reason. Needs root and BPF: skipped with a printed reason otherwise,
//! except under CI=true, where it must run.
mod common;

use std::process::Command;
use std::time::Duration;

use common::server::{bin, TestServer};
use serde_json::Value;

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn can_run() -> bool {
    match herdtrace::kernel::privilege_problem() {
        None => true,
        Some(r) => {
            assert!(!in_ci(), "CI=true, so this must run, but: {r}");
            eprintln!("skipped: {r}");
            false
        }
    }
}

/// Every item HERDTRACE_MISSING understands that names something in the table.
fn gaps() -> Vec<String> {
    let mut items = vec!["btf".to_owned()];
    items.extend(["tracepoint", "tp_btf", "kprobe", "fentry"].map(str::to_owned));
    items.extend(herdtrace::probes::Feature::ALL.map(|f| f.name().to_owned()));
    for (kind, target) in herdtrace::check::table_targets() {
        use herdtrace::probes::Kind;
        let item = match kind {
            Kind::Tracepoint => target.to_owned(),
            // A BTF tracepoint is its event: named by the classic one's category.
            Kind::BtfTracepoint => herdtrace::probes::classic_tracepoints()
                .into_iter()
                .find(|t| herdtrace::probes::event_name(t) == target)
                .unwrap_or_else(|| panic!("no classic form of {target}"))
                .to_owned(),
            _ => target.to_owned(),
        };
        if !items.contains(&item) {
            items.push(item);
        }
    }
    items
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Attached {
        backend: String,
        attach: Vec<String>,
    },
    Refused(String),
}

fn check_decision(missing: &str) -> Decision {
    let out = Command::new(bin())
        .args(["check", "--json"])
        .env("HERDTRACE_MISSING", missing)
        .output()
        .expect("check runs");
    assert_eq!(out.status.code(), Some(0), "check with {missing}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("check --json");
    let auto = &v["backend"]["auto"];
    match auto["status"].as_str() {
        Some("ok") => Decision::Attached {
            backend: auto["backend"].as_str().expect("backend").to_owned(),
            attach: auto["attach"]
                .as_array()
                .expect("attach list")
                .iter()
                .map(|a| a.as_str().expect("string").to_owned())
                .collect(),
        },
        _ => Decision::Refused(auto["reason"].as_str().expect("reason").to_owned()),
    }
}

fn trace_decision(missing: &str, pid: i32) -> (Decision, String) {
    let out = Command::new(bin())
        .args(["--pid", &pid.to_string(), "--json", "-d", "0.5"])
        .env("HERDTRACE_MISSING", missing)
        .output()
        .expect("tracer runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.code() != Some(0) {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        let reason = stderr
            .trim()
            .strip_prefix("herdtrace: error: ")
            .unwrap_or_else(|| panic!("error line: {stderr}"))
            .to_owned();
        return (Decision::Refused(reason), stderr);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary in {text}\n{stderr}"));
    let attach = summary["attach"]
        .as_array()
        .expect("attach in the summary")
        .iter()
        .map(|a| a.as_str().expect("string").to_owned())
        .collect();
    (
        Decision::Attached {
            backend: summary["backend"].as_str().expect("backend").to_owned(),
            attach,
        },
        stderr,
    )
}

#[test]
fn check_reports_what_the_tracer_attaches_for_every_kernel_gap() {
    if !can_run() {
        return;
    }
    let srv = TestServer::start(&["--model", "epoll-per-worker", "--workers", "2"]);
    let gaps = gaps();
    assert!(gaps.len() > 25, "{gaps:?}");
    let mut refused = 0;
    for missing in &gaps {
        let checked = check_decision(missing);
        let (traced, stderr) = trace_decision(missing, srv.pid());
        match (&checked, &traced) {
            (Decision::Refused(c), Decision::Refused(t)) => {
                // check names the auto choice's reason; the tracer's error is
                // the same sentence.
                assert_eq!(c, t, "HERDTRACE_MISSING={missing}");
                refused += 1;
            }
            _ => assert_eq!(checked, traced, "HERDTRACE_MISSING={missing}\n{stderr}"),
        }
        // Each warning is written once.
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("herdtrace: warning: "))
            .collect();
        let mut unique = warnings.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), warnings.len(), "{missing}: {warnings:?}");
        if let Decision::Attached { attach, .. } = &traced {
            // Nothing of what was simulated missing was attached.
            for a in attach {
                let target = a.split(" <- ").next().unwrap_or(a);
                let named = target.split_once(' ').map(|(_, t)| t).unwrap_or(target);
                assert!(
                    named != missing
                        && herdtrace::probes::event_name(named)
                            != herdtrace::probes::event_name(missing)
                        && !target.contains(&format!("(with {missing})")),
                    "{missing} is missing, yet attached {a}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{} gaps simulated, {refused} refused by both check and the tracer",
        gaps.len()
    );
    assert!(
        refused >= 2,
        "btf and the tracepoint program type refuse everything here"
    );
}
