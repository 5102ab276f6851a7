//! `herdtrace verify --compare` on real `verify --json` runs kept in
//! `tests/fixtures/verify/` (no root needed): two runs of the same kernel
//! (the development host, tracepoint backend), two Debian kernels in QEMU
//! (fentry backend, from `cargo xtask vmtest --verify`), and the newer
//! kernel's run with one row edited to depart from its expectation.
use std::{
    path::{Path, PathBuf},
    process::Output,
};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/verify")
        .join(name)
}

fn compare(a: &Path, b: &Path, extra: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_herdtrace"))
        .args(["verify", "--compare"])
        .arg(a)
        .arg(b)
        .args(extra)
        .output()
        .expect("run herdtrace verify --compare")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The report line of one row.
fn row_line<'a>(out: &'a str, model: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(model))
        .unwrap_or_else(|| panic!("no line for {model} in\n{out}"))
}

const ROWS: [&str; 8] = [
    "epoll-per-worker",
    "epoll-per-worker+et",
    "epoll-per-worker+batch100",
    "shared-epoll",
    "shared-epoll+et",
    "exclusive",
    "reuseport",
    "blocking-accept",
];

#[test]
fn two_runs_of_the_same_kernel_keep_every_verdict() {
    let o = compare(
        &fixture("host-6.18-tracepoint-a.json"),
        &fixture("host-6.18-tracepoint-b.json"),
        &[],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(err.is_empty(), "{err}");
    assert!(
        out.starts_with("herdtrace verify --compare\n  A: kernel 6.18"),
        "{out}"
    );
    for m in ROWS {
        let l = row_line(&out, m);
        assert!(l.contains("pass -> pass"), "{l}");
        assert!(!l.contains("VERDICT CHANGED"), "{l}");
    }
    assert!(out.contains("8 rows: 0 verdict changed"), "{out}");
}

#[test]
fn two_kernels_are_compared_row_by_row() {
    let o = compare(
        &fixture("vm-6.1-fentry.json"),
        &fixture("vm-6.12-fentry.json"),
        &[],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("A: kernel 6.1.0-"), "{out}");
    assert!(out.contains("B: kernel 6.12."), "{out}");
    assert!(out.contains("backend fentry"), "{out}");
    for m in ROWS {
        assert!(row_line(&out, m).contains("pass -> pass"), "{m}: {out}");
    }
    assert!(out.contains("8 rows: 0 verdict changed"), "{out}");
}

#[test]
fn an_edited_row_is_flagged_and_fails_the_comparison() {
    let o = compare(
        &fixture("vm-6.12-fentry.json"),
        &fixture("vm-6.12-fentry-edited.json"),
        &[],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let l = row_line(&out, "exclusive");
    assert!(
        l.contains("pass -> FAIL") && l.contains("VERDICT CHANGED"),
        "{l}"
    );
    assert!(l.contains("same-worker share 0.88 -> 0.26"), "{l}");
    assert!(
        l.contains("departs in B: same-worker share 0.26 (>=0.625) [C]"),
        "{l}"
    );
    for m in ROWS.iter().filter(|m| **m != "exclusive") {
        let l = row_line(&out, m);
        assert!(l.contains("no change beyond the spread"), "{l}");
    }
    assert!(out.contains("8 rows: 1 verdict changed, 0 with figures changed, 7 the same"));
    // Machine-readable: the same verdicts and the exit status.
    let o = compare(
        &fixture("vm-6.12-fentry.json"),
        &fixture("vm-6.12-fentry-edited.json"),
        &["--json"],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["exit_code"], 1);
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 8);
    let ex = rows
        .iter()
        .find(|r| r["model"] == "exclusive")
        .expect("exclusive");
    assert_eq!(ex["status"], "verdict_changed");
    assert_eq!(
        (&ex["verdict_a"], &ex["verdict_b"]),
        (&"pass".into(), &"fail".into())
    );
}

/// A copy of a fixture with `edit` applied to every row.
fn edited(name: &str, out: &str, edit: impl Fn(&mut Value)) -> PathBuf {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("row");
            edit(&mut v);
            v.to_string()
        })
        .collect();
    let path = std::env::temp_dir().join(format!("verify-compare-{}-{out}", std::process::id()));
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

#[test]
fn unreadable_or_incompatible_input_is_one_line_and_exit_two() {
    let a = fixture("vm-6.1-fentry.json");
    let garbage =
        std::env::temp_dir().join(format!("verify-compare-{}-garbage", std::process::id()));
    std::fs::write(&garbage, "herdtrace verify: exclusive ...\n").expect("write");
    let old = edited("vm-6.1-fentry.json", "old", |v| {
        v.as_object_mut().expect("object").remove("spread");
    });
    let eight = edited("vm-6.12-fentry.json", "eight", |v| v["workers"] = 8.into());
    let cases: [(&Path, &str); 4] = [
        (&garbage, "not JSON"),
        (
            Path::new("/nonexistent/verify.json"),
            "reading /nonexistent/verify.json",
        ),
        (
            &old,
            "has no \"spread\" (written by an older herdtrace verify)",
        ),
        (
            &eight,
            "the runs cannot be compared (run both with the same --workers)",
        ),
    ];
    for (b, why) in cases {
        let o = compare(&a, b, &[]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{}: {out}{err}", b.display());
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("herdtrace: error: verify --compare: "),
            "{err}"
        );
        assert!(err.contains(why), "{why}: {err}");
    }
    for p in [garbage, old, eight] {
        std::fs::remove_file(p).expect("cleanup");
    }
    // Usage errors are clap's: also exit 2.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_herdtrace"))
        .args(["verify", "--compare"])
        .arg(&a)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn compare_takes_no_run_options() {
    let a = fixture("vm-6.1-fentry.json");
    for extra in [
        &["--rate", "20"][..],
        &["--models", "exclusive"],
        &["--backend", "fentry"],
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_herdtrace"))
            .args(["verify", "--compare"])
            .arg(&a)
            .arg(&a)
            .args(extra)
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(2), "{extra:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be used with"));
    }
}
