//! Fuzzing of the recording decoder and the reconstruction engine, through
//! `replay` as `herdtrace replay` runs it: any bytes give a summary or a
//! one-line error, never a panic, and a summary always matches the
//! connection lines printed before it.
//!
//! Cases: 100,000 under CI=true (CI runs the tests in release mode), else
//! PROPTEST_CASES or 3,000. A failing input is saved (shrunk) to
//! `tests/fixtures/fuzz-corpus/`, whose every file `corpus_replays_without_panic`
//! replays from then on: the regression corpus is kept in the repository.
use std::path::{Path, PathBuf};

use herdtrace::engine::synth::herd_stream;
use herdtrace::events;
use herdtrace::record::SkippedRuns;
use herdtrace::record::{Reader, RecordHeader, Recorder};
use herdtrace::replay::replay;
use herdtrace::report::OutputOptions;
use herdtrace_common::{RawEvent, EV_MAX, RAW_EVENT_SIZE};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use serde_json::Value;

const CI_CASES: u32 = 100_000;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-corpus")
}

/// Replays `bytes` both as text and as NDJSON (with intervals); checks the
/// outcome. `Err` is a property violation (a panic is caught by proptest).
fn check(bytes: &[u8], interval_ns: Option<u64>) -> Result<(), String> {
    let opts = OutputOptions {
        json: true,
        per_conn: true,
        intervals: interval_ns.is_some(),
    };
    let mut out = Vec::new();
    let result = Reader::new(bytes).and_then(|r| replay(r, opts, interval_ns, &mut out));
    match result {
        Err(e) => {
            let msg = format!("{e:#}");
            if msg.contains('\n') || msg.is_empty() {
                return Err(format!("error is not one line: {msg:?}"));
            }
        }
        Ok(summary) => {
            let text = std::str::from_utf8(&out).map_err(|e| e.to_string())?;
            let lines: Vec<Value> = text
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("output is not NDJSON: {e}"))?;
            let conns = lines.iter().filter(|v| v["type"] == "conn").count() as u64;
            if conns != summary.totals.connections {
                return Err(format!(
                    "{conns} conn lines but the summary says {}",
                    summary.totals.connections
                ));
            }
            let last = lines.last().ok_or("no summary line")?;
            if last["type"] != "summary" || last["connections"] != summary.totals.connections {
                return Err(format!("last line is not the summary: {last}"));
            }
            if summary.totals.returned + summary.totals.spurious > summary.totals.woken {
                return Err(format!("more outcomes than wakes: {:?}", summary.totals));
            }
        }
    }
    // The text output of the same bytes must not panic either.
    let text_opts = OutputOptions {
        json: false,
        per_conn: true,
        intervals: interval_ns.is_some(),
    };
    let _ = Reader::new(bytes).and_then(|r| replay(r, text_opts, interval_ns, std::io::sink()));
    Ok(())
}

fn header() -> RecordHeader {
    RecordHeader {
        kernel: "6.18.0".into(),
        backend: "tracepoint".into(),
        created_unix_s: 1_700_000_000,
        herdtrace_version: "0.1.0".into(),
        event_size: RAW_EVENT_SIZE as u32,
        clock: None,
        workers: None,
        listeners_per_addr: None,
        worker_tasks: Vec::new(),
        setup_hint: None,
        untraced: Default::default(),
        accept_loops: Vec::new(),
        skip_samples: false,
    }
}

/// Events with, after event `at` of each `lost` pair, a drop of `n`, a
/// skip sample at time `n` (wild when `n` is) and `n` failed inserts.
fn recording(events: &[RawEvent], lost: &[(usize, u64)]) -> Vec<u8> {
    let mut h = header();
    h.skip_samples = !lost.is_empty();
    let mut rec = Recorder::new(Vec::new(), &h).expect("header");
    for (i, ev) in events.iter().enumerate() {
        rec.write_event(ev).expect("event");
        for &(at, n) in lost {
            if at == i {
                rec.write_lost(n).expect("lost");
                // Task-scoped and per-CPU programs, flagging or not.
                let program = ["tp_poll_exit", "btf_softirq_exit", "x"][(n % 3) as usize];
                let skipped = SkippedRuns::of(program.into(), n);
                rec.write_skips(n, &[skipped]).expect("skips");
                rec.write_insert_failed("ACTIVE", n).expect("inserts");
            }
        }
    }
    rec.finish().expect("finish")
}

/// Events with a valid kind and every other byte random: fields the engine
/// must survive (wild timestamps, cpus, sockets, return values).
fn arb_raw_event() -> impl Strategy<Value = RawEvent> {
    (
        1..=EV_MAX,
        proptest::collection::vec(any::<u8>(), RAW_EVENT_SIZE - 4),
    )
        .prop_map(|(kind, rest)| {
            let mut b = kind.to_le_bytes().to_vec();
            b.extend_from_slice(&rest);
            events::decode(&b).expect("valid kind")
        })
}

/// A realistic herd stream with some fields perturbed.
fn arb_stream() -> impl Strategy<Value = Vec<RawEvent>> {
    prop_oneof![
        (1u64..12, 1u32..5).prop_map(|(c, w)| herd_stream(c, w)),
        proptest::collection::vec(arb_raw_event(), 0..40),
        (
            (1u64..8, 1u32..4),
            proptest::collection::vec(arb_raw_event(), 0..8)
        )
            .prop_map(|((c, w), extra)| {
                let mut v = herd_stream(c, w);
                for (i, e) in extra.into_iter().enumerate() {
                    let at = (i * 7) % (v.len() + 1);
                    v.insert(at, e);
                }
                v
            }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ]
}

fn mutate(mut bytes: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = bytes.len();
        match *m {
            Mutation::Flip(i, x) if len > 0 => bytes[i % len] ^= x,
            Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Mutation::Remove(i) if len > 0 => {
                bytes.remove(i % len);
            }
            _ => {}
        }
    }
    bytes
}

/// Inputs: raw garbage, garbage after a valid magic, valid recordings of
/// random streams, and valid recordings with a few byte-level mutations.
fn arb_input() -> impl Strategy<Value = (Vec<u8>, Option<u64>)> {
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..400),
        proptest::collection::vec(any::<u8>(), 0..400).prop_map(|tail| {
            let mut b = b"HERDTRC\0\x01\0\0\0".to_vec();
            b.extend(tail);
            b
        }),
        (
            arb_stream(),
            proptest::collection::vec((0usize..60, any::<u64>()), 0..3)
        )
            .prop_map(|(events, lost)| recording(&events, &lost)),
        (
            arb_stream(),
            proptest::collection::vec(arb_mutation(), 1..4)
        )
            .prop_map(|(events, muts)| mutate(recording(&events, &[]), &muts)),
    ];
    let interval = prop_oneof![
        Just(None),
        Just(Some(1_000_000u64)),
        (1u64..u64::MAX).prop_map(Some),
    ];
    (bytes, interval)
}

fn cases() -> u32 {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        return CI_CASES;
    }
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

#[test]
fn replay_never_panics_on_any_input() {
    let cases = cases();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let started = std::time::Instant::now();
    let result = runner.run(&arb_input(), |(bytes, interval)| {
        check(&bytes, interval).map_err(TestCaseError::fail)
    });
    eprintln!(
        "fuzz_replay: {cases} cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Err(TestError::Fail(why, (bytes, interval))) = result {
        // Keep the shrunk input as a regression case.
        let dir = corpus_dir();
        let _ = std::fs::create_dir_all(&dir);
        let name = format!("crash-{:016x}.bin", fnv(&bytes));
        let _ = std::fs::write(dir.join(&name), &bytes);
        panic!("{why} (interval {interval:?}); input saved as tests/fixtures/fuzz-corpus/{name}");
    } else if let Err(e) = result {
        panic!("{e}");
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Every file of the corpus (seeds and saved failures), with and without intervals.
#[test]
fn corpus_replays_without_panic() {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read corpus file");
        for interval in [None, Some(1_000_000), Some(1)] {
            if let Err(e) = check(&bytes, interval) {
                panic!("{}: {e}", path.display());
            }
        }
        n += 1;
    }
    assert!(n >= 8, "the corpus has its seeds ({n} files)");
}

/// The seeds: one file per way a recording goes wrong, and why each fails.
#[test]
fn corpus_seeds_fail_with_their_reason() {
    let want = [
        ("empty.bin", "empty file, not a herdtrace recording"),
        ("foreign.bin", "not a herdtrace recording (bad magic)"),
        ("short-magic.bin", "truncated header (5 bytes)"),
        ("version-9.bin", "unsupported recording format version 9"),
        (
            "huge-header.bin",
            "corrupt header: length 4294967295 is implausible",
        ),
        ("event-size.bin", "unsupported event size 64"),
        ("bad-tag.bin", "unknown tag 0x07"),
        ("cut-event.bin", "truncated event at offset"),
        ("bad-kind.bin", "unknown event kind 0"),
    ];
    for (name, reason) in want {
        let bytes = std::fs::read(corpus_dir().join(name)).expect(name);
        let err = Reader::new(&bytes[..])
            .and_then(|r| replay(r, OutputOptions::default(), None, std::io::sink()))
            .expect_err(name);
        let msg = format!("{err:#}");
        assert!(msg.contains(reason), "{name}: want {reason:?} in {msg}");
    }
    // Valid seeds replay: drop markers only, and wild timestamps with intervals.
    for name in ["lost-only.bin", "wild-times.bin"] {
        let bytes = std::fs::read(corpus_dir().join(name)).expect(name);
        check(&bytes, Some(1)).expect(name);
        let r = Reader::new(&bytes[..]).expect(name);
        replay(r, OutputOptions::default(), None, std::io::sink()).expect(name);
    }
}

/// Writes the seed files (run once by hand: `cargo test --test fuzz_replay
/// -- --ignored write_seed_corpus`); kept so the seeds can be regenerated.
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).expect("dir");
    let good = recording(&herd_stream(3, 2), &[(4, 2)]);
    let hlen = u32::from_le_bytes(good[12..16].try_into().expect("4")) as usize;
    let first = 16 + hlen;
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    let mut small = header();
    small.event_size = 64;
    let event_size = {
        let mut rec = Recorder::new(Vec::new(), &small).expect("hdr");
        rec.write_lost(1).expect("lost");
        rec.finish().expect("finish")
    };
    let mut wild = herd_stream(4, 2);
    for (i, e) in wild.iter_mut().enumerate() {
        e.ts_ns = if i % 2 == 0 {
            u64::MAX - i as u64
        } else {
            i as u64
        };
    }
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("empty.bin", Vec::new()),
        ("foreign.bin", b"\x7fELF\x02\x01\x01\0".to_vec()),
        ("short-magic.bin", b"HERDT".to_vec()),
        ("version-9.bin", with(&|b| b[8] = 9)),
        (
            "huge-header.bin",
            with(&|b| b[12..16].copy_from_slice(&[0xff; 4])),
        ),
        ("event-size.bin", event_size),
        ("bad-tag.bin", with(&|b| b[first] = 7)),
        ("cut-event.bin", with(&|b| b.truncate(first + 50))),
        (
            "bad-kind.bin",
            with(&|b| b[first + 1..first + 5].copy_from_slice(&[0; 4])),
        ),
        (
            "lost-only.bin",
            recording(&[], &[])
                .into_iter()
                .chain([2u8])
                .chain(7u64.to_le_bytes())
                .collect(),
        ),
        ("wild-times.bin", recording(&wild, &[])),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
}
