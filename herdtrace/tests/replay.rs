//! Record -> replay, end to end: the committed fixture, the CLI's exit codes
//! and errors on corrupt recordings, and a closed stdout pipe.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herdtrace::engine::synth::{StreamBuilder, SynthTask};
use herdtrace::record::{RecordHeader, Recorder};
use herdtrace::replay::replay_file;
use herdtrace::report::OutputOptions;
use serde_json::{json, Value};

const L: u64 = 0xffff_8880_0aa0_0000;
const W: [SynthTask; 4] = [
    SynthTask::process(2001, "worker"),
    SynthTask::process(2002, "worker"),
    SynthTask::process(2003, "worker"),
    SynthTask::process(2004, "worker"),
];

fn child(n: u64) -> u64 {
    0xffff_8881_0bb0_0000 + n * 0x800
}

/// The committed fixture, built from a described scenario:
/// - connections 0..6: one epoll per worker, all 4 woken, worker `i % 4` wins,
///   the 3 others get EAGAIN;
/// - connection 6: W1 and W2 woken, W2 finds nothing (spurious), W1 accepts it
///   and connection 7 (which woke nobody) in a loop ended by one EAGAIN;
/// - connection 8: W3 woken, 3 events reported lost while it is open;
/// - W4 accepts a connection that arrived before tracing (unmatched).
fn fixture_bytes() -> Vec<u8> {
    let header = RecordHeader {
        kernel: "6.18.0-synthetic".into(),
        backend: "tracepoint".into(),
        created_unix_s: 1_700_000_000,
        herdtrace_version: "0.1.0".into(),
        event_size: 112,
        clock: None,
        workers: None,
        listeners_per_addr: None,
        worker_tasks: Vec::new(),
        setup_hint: None,
        untraced: Default::default(),
        accept_loops: Vec::new(),
        skip_samples: false,
    };
    let mut rec = Recorder::new(Vec::new(), &header).expect("header");
    let mut b = StreamBuilder::new();
    for i in 0..6u64 {
        b.at(1_000_000_000 + i * 10_000_000);
        b.arrival(0, i, L, child(i));
        for (k, w) in W.iter().enumerate() {
            b.epoll_cb(0, i, 0xe000 + k as u64);
            b.wake(0, i, *w);
        }
        for (k, w) in W.iter().enumerate() {
            b.poll_ret(1, *w, 1);
            if k as u64 == i % 4 {
                b.accept(1, *w, L, child(i));
            } else {
                b.eagain(1, *w, L);
            }
        }
    }
    b.at(1_100_000_000)
        .arrival(0, 6, L, child(6))
        .wake(0, 6, W[0])
        .wake(0, 6, W[1])
        .arrival(0, 7, L, child(7))
        .poll_ret(1, W[1], 0)
        .poll_ret(2, W[0], 1)
        .accept(2, W[0], L, child(6))
        .accept(2, W[0], L, child(7))
        .eagain(2, W[0], L);
    b.at(1_200_000_000)
        .arrival(0, 8, L, child(8))
        .wake(0, 8, W[2]);
    for ev in b.take() {
        rec.write_event(&ev).expect("event");
    }
    rec.write_lost(3).expect("lost");
    b.poll_ret(3, W[2], 1)
        .accept(3, W[2], L, child(8))
        .poll_ret(3, W[3], 1)
        .accept(3, W[3], L, 0xdead_0000);
    for ev in b.take() {
        rec.write_event(&ev).expect("event");
    }
    rec.finish().expect("finish")
}

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/herd-sample.htr")
}

#[test]
fn committed_fixture_matches_its_generator() {
    let bytes = fixture_bytes();
    let path = fixture_path();
    if std::env::var_os("HERDTRACE_REGEN_FIXTURES").is_some() {
        std::fs::write(&path, &bytes).expect("write fixture");
    }
    let committed = std::fs::read(&path).expect("read fixture");
    assert!(
        committed == bytes,
        "{} is stale: regenerate with HERDTRACE_REGEN_FIXTURES=1 cargo test -p herdtrace --test replay",
        path.display()
    );
    assert!(committed.len() < 16 * 1024, "keep the fixture small");
}

/// What the scenario above must give, worked out by hand from the spec.
/// Checks the summary fields added with wall-clock time and the balance
/// verdict on the fixture, and returns the summary without them.
fn checked_new_fields(mut summary: Value) -> Value {
    let o = summary.as_object_mut().expect("object");
    // The fixture has no clock reference: no wall-clock time is invented.
    assert_eq!(o.remove("time"), Some(Value::Null));
    let clock = o.remove("wall_clock").expect("wall_clock");
    assert!(
        clock.as_str().expect("text").starts_with("none: "),
        "{clock}"
    );
    // The last event of the fixture (stream time).
    assert!(o.remove("ts_ns").and_then(|t| t.as_u64()) > Some(1_000_000_000));
    // 10 accepts by 4 workers (4 2 2 2): too few to judge.
    let b = o.remove("balance").expect("balance");
    assert_eq!(b["verdict"], "no_data", "{b}");
    assert_eq!(
        (&b["accepts"], &b["workers"]),
        (&json!(10), &json!(4)),
        "{b}"
    );
    assert_eq!(b["top"]["pid"], 2001, "{b}");
    summary
}

fn expected_summary() -> Value {
    let task = |pid: u32, accepts, woken, eagain, eagain_losers, spurious| {
        json!({"pid": pid, "tid": pid, "comm": "worker", "accepts": accepts,
               "woken": woken, "eagain": eagain, "eagain_losers": eagain_losers,
               "spurious": spurious})
    };
    json!({
        "type": "summary",
        "backend": "tracepoint",
        "kernel": "6.18.0-synthetic",
        // A replay attaches nothing and knows no listeners.
        "attach": [],
        "scope": null,
        "listeners": [],
        "connections": 9,
        // woken per connection: 0 (conn 7), 1 (conn 8), 2 (conn 6), 4 x 6.
        "woken_per_conn": {"mean": 3.0, "p50": 4, "p99": 4, "max": 4},
        "woken_histogram": [1, 1, 1, 0, 6],
        "returned": 26,
        "eagain": 19,
        "eagain_losers": 18,
        "spurious": 1,
        "incomplete": 1,
        "possibly_incomplete": 0,
        "unaccepted": 0,
        "tasks": [
            // The tasks' losers add up to the summary's 18.
            task(2001, 4, 7, 5, 4, 0),
            task(2002, 2, 7, 4, 4, 1),
            task(2003, 2, 7, 5, 5, 0),
            task(2004, 2, 6, 5, 5, 0),
        ],
        "lost_events": 3,
        "skipped_runs": 0,
        // Kernel-side counters exist only in a live run.
        "skipped_by_program": {},
        "insert_failed": {},
        // So is the merge of the ring buffers.
        "late_records": 0,
        "late_max_behind_ns": 0,
        "diagnostics": {"orphan_wakes": 0, "unmatched_accepts": 1, "eagain_unattributed": 0},
        // Every waiting task was traced.
        "untraced": {"tasks": []},
        // 27 wakes: 18 EAGAIN losers + 1 spurious = 19 wasted, 19/9 per connection;
        // the 3 lost events left one connection incomplete.
        "verdict": "herd: every connection woke 3.00 tasks on average; 2.11 wasted wakeups per \
                    connection (70% of all wakeups: EAGAIN losers 2.00 + spurious 0.11); from an \
                    incomplete trace (3 events lost, 1 of 9 connections incomplete): the counts \
                    are lower bounds"
    })
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn fixture_replays_to_the_expected_summary() {
    let opts = OutputOptions {
        json: true,
        per_conn: true,
        intervals: false,
    };
    let mut out = Vec::new();
    let summary = replay_file(&fixture_path(), opts, None, &mut out).expect("replay");
    assert_eq!(summary.totals.connections, 9);
    let lines = json_lines(std::str::from_utf8(&out).expect("utf8"));
    assert_eq!(
        lines.last().map(|l| checked_new_fields(l.clone())),
        Some(expected_summary())
    );
    let conns: Vec<&Value> = lines.iter().filter(|l| l["type"] == "conn").collect();
    assert_eq!(conns.len(), 9);
    let incomplete: Vec<&&Value> = conns.iter().filter(|c| c["incomplete"] == true).collect();
    assert_eq!(incomplete.len(), 1);
    assert_eq!(incomplete[0]["accepted_by"]["pid"], 2003);
    let conn6 = conns
        .iter()
        .find(|c| c["ts_ns"] == 1_100_000_000u64)
        .expect("connection 6");
    assert_eq!(
        (&conn6["woken"], &conn6["returned"], &conn6["spurious"]),
        (&json!(2), &json!(1), &json!(1))
    );
    assert_eq!(
        (&conn6["eagain"], &conn6["eagain_losers"]),
        (&json!(1), &json!(0))
    );
}

fn herdtrace() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herdtrace"))
}

/// Runs the binary with a deadline; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let mut child = herdtrace()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herdtrace");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().expect("kill");
            panic!("herdtrace {args:?} did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = out_t.join().expect("join").expect("read stdout");
    let err = err_t.join().expect("join").expect("read stderr");
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn cli_replays_the_fixture_as_json_and_text() {
    let path = fixture_path();
    let p = path.to_str().expect("utf8 path");
    let (code, out, err) = run(&["replay", p, "--json"]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    // As live tracing: one "conn" object per connection, then the summary.
    let (summary, conns) = lines.split_last().expect("at least the summary");
    assert_eq!(checked_new_fields(summary.clone()), expected_summary());
    assert!(!conns.is_empty(), "conn lines: {out}");
    assert!(conns.iter().all(|c| c["type"] == "conn"), "{out}");
    let closed = summary["connections"].as_u64().expect("connections")
        + summary["unaccepted"].as_u64().unwrap_or(0);
    assert!(conns.len() as u64 >= summary["connections"].as_u64().expect("n"));
    assert!(
        conns.len() as u64 <= closed,
        "{} conn lines, {closed} episodes",
        conns.len()
    );

    let (code, out, err) = run(&["replay", p, "--per-conn", "--interval", "0.05"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("accepted by worker[2001/2001]"), "{out}");
    assert!(out.contains("conns "), "interval lines: {out}");
    assert!(
        out.contains("WARNING: 3 events LOST, 1 episodes INCOMPLETE"),
        "{out}"
    );
    assert!(out.contains("verdict: herd: "), "{out}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herdtrace-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn corrupt_recordings_fail_with_one_line() {
    let dir = scratch("corrupt");
    let good = fixture_bytes();
    let mut wrong_version = good.clone();
    wrong_version[8] = 2;
    let mut bad_header = good.clone();
    bad_header[16] = b'!';
    let mut bad_kind = good.clone();
    let header_len = u32::from_le_bytes(good[12..16].try_into().expect("4 bytes")) as usize;
    let first_event = 16 + header_len;
    assert_eq!(good[first_event], 1, "an event tag");
    bad_kind[first_event + 1] = 200;
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("empty", Vec::new(), "empty file".into()),
        (
            "foreign",
            b"#!/bin/sh\necho hi\n".to_vec(),
            "bad magic".into(),
        ),
        (
            "truncated",
            good[..good.len() - 50].to_vec(),
            "truncated event at offset".into(),
        ),
        (
            "version",
            wrong_version,
            "unsupported recording format version 2".into(),
        ),
        ("header", bad_header, "corrupt header".into()),
        (
            "kind",
            bad_kind,
            format!("bad event at offset {first_event}: unknown event kind 200"),
        ),
    ];
    for (name, bytes, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).expect("write case");
        let (code, _out, err) = run(&["replay", path.to_str().expect("utf8")]);
        assert_eq!(code, 1, "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
        assert!(
            err.starts_with("herdtrace: error: replay "),
            "{name}: {err}"
        );
        assert!(err.contains(&want), "{name}: want {want:?} in {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn record_then_replay_roundtrip_through_a_file() {
    let dir = scratch("roundtrip");
    let path = dir.join("t.htr");
    let events = herdtrace::engine::synth::herd_stream(50, 3);
    let mut rec = Recorder::create(&path, &RecordHeader::new("6.1.0", "fentry")).expect("create");
    for ev in &events {
        rec.write_event(ev).expect("write");
    }
    rec.finish().expect("finish");
    let mut out = Vec::new();
    let opts = OutputOptions {
        json: true,
        ..OutputOptions::default()
    };
    let s = replay_file(&path, opts, None, &mut out).expect("replay");
    // The same stream fed straight to an engine gives the same summary.
    let mut direct = herdtrace::engine::Engine::new(Default::default());
    for ev in &events {
        direct.push(ev, &mut |_| {});
    }
    direct.finish(&mut |_| {});
    assert_eq!(s, direct.summary());
    assert_eq!(s.totals.connections, 50);
    let v = json_lines(std::str::from_utf8(&out).expect("utf8"));
    assert_eq!(v[0]["backend"], "fentry");
    assert_eq!(v[0]["kernel"], "6.1.0");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn closed_stdout_pipe_ends_the_replay_quietly() {
    let mut child = herdtrace()
        .args([
            "replay",
            fixture_path().to_str().expect("utf8"),
            "--per-conn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Close the read end before the child writes anything.
    drop(child.stdout.take());
    let mut stderr = child.stderr.take().expect("stderr");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "replay hung on a closed pipe");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    stderr.read_to_string(&mut err).expect("stderr");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}

/// A real recording: `herdtrace --pid <server> --record` on the 6.18 host
/// (tracepoint backend) while `herdtrace serve --model epoll-per-worker
/// --workers 4 --stats` took 60 connections at 100/s. The server's own
/// `--stats` said: accepts 27/23/7/3 (tids 23167..23170), EAGAIN 12/9/6/3.
#[test]
fn real_host_recording_reconstructs_the_herd_and_the_servers_own_counts() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host-6.18-epoll-per-worker.htr");
    let p = path.to_str().expect("utf8 path");
    let (code, out, err) = run(&["replay", p, "--json"]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    let (summary, conns) = lines.split_last().expect("summary");
    assert_eq!(conns.len(), 60);
    assert!(conns
        .iter()
        .all(|c| c["woken"] == 4 && c["incomplete"] == false));
    assert_eq!(summary["backend"], "tracepoint");
    assert_eq!(summary["connections"], 60);
    assert_eq!(summary["woken_per_conn"]["mean"], 4.0);
    assert_eq!(summary["eagain"], 30);
    assert_eq!(summary["eagain_losers"], 30);
    assert_eq!(summary["lost_events"], 0);
    let tasks: Vec<(u64, u64, u64)> = summary["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            let n = |k: &str| t[k].as_u64().expect("number");
            (n("tid"), n("accepts"), n("eagain"))
        })
        .collect();
    assert_eq!(
        tasks,
        vec![
            (23167, 27, 12),
            (23168, 23, 9),
            (23169, 7, 6),
            (23170, 3, 3)
        ]
    );
}
