//! `herdtrace verify` on the real host kernel (tracepoint backend): every
//! row present with a pass verdict, the JSON fields that let runs from
//! different machines be compared, exit status 0. That a departure gives a
//! non-zero exit is tested on synthetic rows in `verify::row` (the kernel
//! cannot be made to misbehave here); the command-line half of it, bad
//! input, is tested below.
//!
//! Needs root and BPF: outside CI the live test skips (printing why) when
//! not root; under CI=true it must run.
use std::{
    process::{Command, Output},
    time::Instant,
};

use serde_json::Value;

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: the verify test needs root and must not be skipped");
    }
    eprintln!("skipping: herdtrace verify needs root (BPF)");
    false
}

fn verify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herdtrace"))
        .arg("verify")
        .args(args)
        .output()
        .expect("run herdtrace verify")
}

/// This machine's kernel is 5.19 or newer: it has the multishot row.
const ROWS: [&str; 12] = [
    "epoll-per-worker",
    "epoll-per-worker+et",
    "epoll-per-worker+batch100",
    "shared-epoll",
    "shared-epoll+et",
    "exclusive",
    "reuseport",
    "blocking-accept",
    "io-uring",
    "io-uring+multishot",
    "tokio",
    "tokio-reuseport",
];

fn num(row: &Value, key: &str) -> f64 {
    row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{}: no number {key}: {row}", row["model"]))
}

#[test]
fn every_model_behaves_as_expected_on_this_kernel() {
    if !can_run() {
        return;
    }
    let start = Instant::now();
    let out = verify(&["--json", "--backend", "tracepoint"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "verify took {:.1} s\n{stdout}",
        start.elapsed().as_secs_f64()
    );
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["model"].as_str().expect("model"))
        .collect();
    assert_eq!(names, ROWS, "stderr:\n{stderr}");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    for r in &rows {
        let name = r["model"].as_str().expect("model");
        assert_eq!(r["verdict"], "pass", "{name}: {r}\nstderr:\n{stderr}");
        assert_eq!(r["kernel"], release.trim(), "{name}");
        assert_eq!(r["backend"], "tracepoint", "{name}");
        assert_eq!(r["workers"], 4, "{name}");
        assert_eq!(r["connections"], 250, "{name}");
        assert!(r["serve_model"].is_string() && r["serve_args"].is_array());
        assert!(r["expected"].is_string());
        // A row may take a second run on a noisy machine (--attempts 2).
        assert!(
            r["attempts"].as_u64().is_some_and(|a| (1..=2).contains(&a)),
            "{name}"
        );
        assert!(r["earlier_attempts"].is_array());
        assert!(
            r["problems"].as_array().is_some_and(Vec::is_empty),
            "{name}"
        );
        let checks = r["checks"].as_array().expect("checks");
        assert!(!checks.is_empty(), "{name}");
        for c in checks {
            assert_eq!(c["pass"], true, "{name}: {c}");
            assert!(c["source"].is_string() && c["expected"].is_string());
        }
        let woken = num(r, "woken_mean");
        let p99 = num(r, "woken_p99");
        // At most the 4 workers, but for rare strays: the tracepoint backend
        // gives a connection any wakeup of a traced task made on its CPU while
        // its softirq runs, e.g. an interrupt waking the supervisor for its
        // 100 ms timer (docs/backends.md, "Tracepoint-backend precision"). Seen once in
        // CI: one in 250 connections (mean 4.004); a systematic excess fails.
        let strays = 2.0 / num(r, "connections");
        assert!(
            (0.0..=4.0 + strays).contains(&woken),
            "{name}: mean {woken}"
        );
        assert!(
            (1.0..=4.0).contains(&p99),
            "{name}: p99 {p99} with 4 workers"
        );
        for k in [
            "eagain_losers_per_conn",
            "spurious_per_conn",
            "winner_eagain_per_conn",
        ] {
            assert!(num(r, k) >= 0.0, "{name} {k}");
        }
        let accepts = r["accepts_per_worker"].as_array().expect("accepts");
        assert_eq!(accepts.len(), 4, "{name}: one count per worker");
        let total: u64 = accepts.iter().filter_map(Value::as_u64).sum();
        assert_eq!(total, 250, "{name}: every connection accepted once");
        let (max, min) = (num(r, "accept_share_max"), num(r, "accept_share_min"));
        assert!((0.25..=1.0).contains(&max) && (0.0..=0.25).contains(&min) && min <= max);
        let (p50, p99) = (
            num(r, "accept_latency_us_p50"),
            num(r, "accept_latency_us_p99"),
        );
        assert!(p50 <= p99, "{name}: latency p50 {p50} > p99 {p99}");
        let same = num(r, "same_worker_share");
        assert!((0.0..=1.0).contains(&same), "{name}");
    }
    assert!(
        out.status.success(),
        "exit {:?}, stderr:\n{stderr}",
        out.status
    );
}

#[test]
fn bad_input_is_one_line_and_non_zero() {
    // An unknown row is refused before anything runs, root or not.
    let out = verify(&["--models", "exclusive,no-such-model"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "herdtrace: error: --models: unknown row \"no-such-model\" (rows: epoll-per-worker,"
        ),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    for args in [
        &["--workers", "0"][..],
        &["--connections", "1"],
        &["--rate", "0"],
        &["--rate", "1001"],
        &["--attempts", "0"],
        &["--backend", "nope"],
    ] {
        let out = verify(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
