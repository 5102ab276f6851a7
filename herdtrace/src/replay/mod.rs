//! `herdtrace replay FILE`: the live reconstruction and output, run offline
//! on a recording. Intervals are cut by recorded (stream) time.
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::engine::{EngineConfig, KnownSetup, Summary};
use crate::pipeline::Pipeline;
use crate::record::{Reader, Record};
use crate::report::{is_broken_pipe, OutputOptions, RunInfo, WallClock};

mod bench;
mod events;

const EXAMPLES: &str = "\
Examples:
  herdtrace replay trace.htr                      summary of a recording
  herdtrace replay trace.htr --per-conn           one line per connection, then the summary
  herdtrace replay trace.htr --json | jq 'select(.type==\"summary\")'
  herdtrace replay trace.htr --interval 1         a line per second of recorded time
  herdtrace replay trace.htr --events | grep 'chain=0x1000000000005'
                                                  the kernel events behind one connection";

/// The summary's `wall_clock` for a recording with its clock reference.
pub const WALL_CLOCK_RECORDED: &str =
    "recorded: CLOCK_REALTIME read with CLOCK_MONOTONIC when the recording started";
/// The summary's `wall_clock` for a recording without one.
pub const WALL_CLOCK_NONE: &str = "none: the recording has no clock reference (made by an \
     older herdtrace), so times are monotonic only";

/// A run of empty intervals longer than this is printed as one line.
const MAX_EMPTY_INTERVALS: u64 = 1000;

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct ReplayArgs {
    /// Recording written by `herdtrace --record FILE`.
    pub file: PathBuf,
    /// Newline-delimited JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print one line per connection.
    #[arg(long)]
    pub per_conn: bool,
    /// Print an interval line every SECS of recorded time.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub interval: Option<f64>,
    /// Print every recorded kernel event, one line each in recorded order
    /// (as `perf script` does), instead of the reconstruction.
    #[arg(long, conflicts_with_all = ["json", "per_conn", "interval"])]
    pub events: bool,
    /// Benchmark (`cargo xtask bench`): decode and reconstruct the recording's
    /// events in a loop, timestamps and sequence numbers shifted each pass,
    /// until N events were processed; prints the timing line on stderr.
    #[arg(long, value_name = "N", hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub bench_events: Option<u64>,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.001..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{s}' is not a number of seconds between 0.001 and 86400"
        )),
    }
}

pub fn run(args: ReplayArgs) -> Result<i32> {
    if let Some(n) = args.bench_events {
        let t = bench::run_file(&args.file, n)?;
        eprintln!("{}", t.line());
        return Ok(0);
    }
    if args.events {
        let reader =
            Reader::open(&args.file).with_context(|| format!("replay {}", args.file.display()))?;
        return match events::dump(reader, BufWriter::new(io::stdout().lock())) {
            Ok(_) => Ok(0),
            Err(e) if is_broken_pipe(&e) => Ok(0),
            Err(e) => Err(e).with_context(|| format!("replay {}", args.file.display())),
        };
    }
    let opts = OutputOptions {
        json: args.json,
        // As live tracing: NDJSON always carries one "conn" object per connection.
        per_conn: args.per_conn || args.json,
        intervals: args.interval.is_some(),
    };
    let interval_ns = args.interval.map(|s| (s * 1e9) as u64);
    let out = BufWriter::new(io::stdout().lock());
    match replay_file(&args.file, opts, interval_ns, out) {
        Ok(_) => Ok(0),
        // `herdtrace replay f | head`: the reader is gone, nothing left to do.
        Err(e) if is_broken_pipe(&e) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Replays the recording at `path` into `out`.
pub fn replay_file<W: Write>(
    path: &Path,
    opts: OutputOptions,
    interval_ns: Option<u64>,
    out: W,
) -> Result<Summary> {
    let reader = Reader::open(path).with_context(|| format!("replay {}", path.display()))?;
    replay(reader, opts, interval_ns, out).with_context(|| format!("replay {}", path.display()))
}

/// Replays an opened recording into `out`.
pub fn replay<R: Read, W: Write>(
    mut reader: Reader<R>,
    opts: OutputOptions,
    interval_ns: Option<u64>,
    out: W,
) -> Result<Summary> {
    let header = reader.header().clone();
    let info = RunInfo {
        backend: header.backend.clone(),
        kernel: header.kernel.clone(),
        attach: Vec::new(),
        scope: String::new(),
        listeners: Vec::new(),
    };
    let mut p = Pipeline::new(EngineConfig::default(), opts, info, out);
    match header.clock {
        Some(c) => {
            p.set_clock(WallClock {
                mono_ns: c.mono_ns,
                unix_ns: c.unix_ns,
            });
            p.set_wall_clock_note(WALL_CLOCK_RECORDED);
        }
        // Older recordings carry only the creation second, which does not
        // map event time to wall time: no stamps rather than invented ones.
        None => p.set_wall_clock_note(WALL_CLOCK_NONE),
    }
    p.set_setup(KnownSetup {
        workers: header.workers.unwrap_or(0),
        listeners_per_addr: header.listeners_per_addr.unwrap_or(0),
        tasks: header.worker_tasks.clone(),
        hint: header.setup_hint.unwrap_or_default(),
        untraced: header.untraced.clone(),
        accept_loops: header.accept_loops.clone(),
    });
    if header.skip_samples {
        // As the live run did: closed connections wait for the next sample,
        // which flags them if it shows skips.
        p.hold_for_skip_samples();
    }
    let mut interval_ns = interval_ns.filter(|&n| n > 0);
    let mut next_tick: Option<u64> = None;
    while let Some(record) = reader.next_record()? {
        match record {
            Record::Event(ev) => {
                if let Some(step) = interval_ns {
                    let stream = p.engine().stream_ns().max(ev.ts_ns);
                    let tick = next_tick.get_or_insert(ev.ts_ns.saturating_add(step));
                    if stream >= *tick {
                        let behind = (stream - *tick) / step;
                        if behind > MAX_EMPTY_INTERVALS {
                            // A long silence (or a wild timestamp): one line, not millions.
                            *tick += behind * step;
                        }
                    }
                    while stream >= *tick {
                        p.on_tick(*tick)?;
                        match tick.checked_add(step) {
                            Some(next) => *tick = next,
                            // The end of time (a wild u64::MAX timestamp): no
                            // later interval can start; stop cutting them.
                            None => {
                                interval_ns = None;
                                break;
                            }
                        }
                    }
                }
                p.on_event(&ev)?;
            }
            Record::Lost(n) => p.on_lost(n)?,
            Record::Skips { at_ns, programs } => {
                p.on_skip_sample(at_ns, &programs)?;
            }
            Record::InsertFailed { map, n } => p.on_insert_failed(&map, n)?,
        }
    }
    p.finish(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::synth::{StreamBuilder, SynthTask};
    use crate::record::tests::header;
    use crate::record::Recorder;
    use serde_json::Value;

    fn json_lines(buf: &[u8]) -> Vec<Value> {
        std::str::from_utf8(buf)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    }

    /// One connection per 100 ms for 1 s, each waking both workers.
    pub(super) fn spaced_recording(lost: bool) -> Vec<u8> {
        let w = [SynthTask::process(1, "w1"), SynthTask::process(2, "w2")];
        let mut b = StreamBuilder::new();
        for i in 0..10u64 {
            b.at(1_000_000_000 + i * 100_000_000);
            b.arrival(0, i, 7, 100 + i);
            for t in w {
                b.wake(0, i, t);
            }
            b.poll_ret(1, w[0], 1).accept(1, w[0], 7, 100 + i);
            b.poll_ret(1, w[1], 1).eagain(1, w[1], 7);
        }
        let mut rec = Recorder::new(Vec::new(), &header()).expect("header");
        for (i, ev) in b.take().iter().enumerate() {
            rec.write_event(ev).expect("event");
            if lost && i == 3 {
                rec.write_lost(5).expect("lost");
            }
        }
        rec.finish().expect("finish")
    }

    fn replay_json(h: &crate::record::RecordHeader) -> Vec<Value> {
        let bytes = spaced_recording(false);
        // The same events under another header.
        let mut rec = Recorder::new(Vec::new(), h).expect("header");
        let mut reader = Reader::new(&bytes[..]).expect("reader");
        while let Some(Record::Event(ev)) = reader.next_record().expect("record") {
            rec.write_event(&ev).expect("event");
        }
        replayed_json(&rec.finish().expect("finish"))
    }

    /// The NDJSON (records and summary) of replaying `recording`.
    fn replayed_json(recording: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        replay(
            Reader::new(recording).expect("reader"),
            NDJSON,
            None,
            &mut out,
        )
        .expect("replay");
        json_lines(&out)
    }

    const NDJSON: OutputOptions = OutputOptions {
        json: true,
        per_conn: true,
        intervals: false,
    };

    /// The spaced stream live, with a skip sample 50 ms after each
    /// connection: the fifth shows skips of a program that flags, the
    /// eighth of one that does not; two failed inserts after the third.
    /// Returns the recording and the live NDJSON.
    fn live_run_with_skips(h: &crate::record::RecordHeader) -> (Vec<u8>, Vec<Value>) {
        use crate::pipeline::sink::tests::Shared;
        use crate::pipeline::SkippedRuns;
        let file = Shared::default();
        let mut live = Vec::new();
        let mut p = Pipeline::new(
            EngineConfig::default(),
            NDJSON,
            RunInfo::default(),
            &mut live,
        );
        p.hold_for_skip_samples();
        p.add_event_sink(Box::new(Recorder::new(file.clone(), h).expect("header")));
        let bytes = spaced_recording(false);
        let mut reader = Reader::new(&bytes[..]).expect("reader");
        let mut conn = 0u64;
        let mut last_ts = 0;
        while let Some(record) = reader.next_record().expect("record") {
            let Record::Event(ev) = record else {
                continue;
            };
            if last_ts != 0 && ev.ts_ns > last_ts + 50_000_000 {
                // The previous connection's events are all in: sample.
                let runs = |program: &str, n: u64| SkippedRuns::of(program.into(), n);
                let programs = match conn {
                    4 => vec![runs("btf_softirq_exit", 2)],
                    7 => vec![runs("fx_ep_send_events", 1)],
                    _ => vec![runs("tp_poll_exit", 0)],
                };
                p.on_skip_sample(last_ts + 50_000_000, &programs)
                    .expect("sample");
                if conn == 2 {
                    p.on_insert_failed("ACTIVE", 2).expect("inserts");
                }
                conn += 1;
            }
            last_ts = ev.ts_ns;
            p.on_event(&ev).expect("event");
        }
        p.finish(0).expect("finish");
        let recording = file.0.lock().expect("lock").clone();
        (recording, json_lines(&live))
    }

    /// What the flags and counters of a run are: per connection, then the summary's.
    fn flags_of(lines: &[Value]) -> (Vec<(String, bool)>, Value) {
        let conns = lines
            .iter()
            .filter(|v| v["type"] == "conn")
            .map(|v| {
                let peer = v["peer"].as_str().expect("peer").to_string();
                (peer, v["possibly_incomplete"] == true)
            })
            .collect();
        let s = lines.last().expect("summary");
        assert_eq!(s["type"], "summary");
        let counters = serde_json::json!({
            "connections": s["connections"],
            "possibly_incomplete": s["possibly_incomplete"],
            "skipped_runs": s["skipped_runs"],
            "skipped_by_program": s["skipped_by_program"],
            "insert_failed": s["insert_failed"],
        });
        (conns, counters)
    }

    #[test]
    fn replay_flags_what_the_live_run_flagged() {
        let mut h = header();
        h.skip_samples = true;
        let (recording, live) = live_run_with_skips(&h);
        let (live_conns, live_counters) = flags_of(&live);
        let flagged = live_conns.iter().filter(|(_, f)| *f).count();
        // The sample after the fifth connection flags the connections open
        // then and in the window after (see `Engine::skip_sample`), not all.
        assert_eq!(live_conns.len(), 10);
        assert!((1..10).contains(&flagged), "{live_conns:?}");
        assert!(
            live_conns[4].1 && !live_conns[0].1 && !live_conns[9].1,
            "{live_conns:?}"
        );
        assert_eq!(live_counters["skipped_runs"], 3);
        assert_eq!(
            live_counters["skipped_by_program"],
            serde_json::json!({"btf_softirq_exit": 2, "fx_ep_send_events": 1})
        );
        assert_eq!(
            live_counters["insert_failed"],
            serde_json::json!({"ACTIVE": 2})
        );
        assert_eq!(
            flags_of(&replayed_json(&recording)),
            (live_conns, live_counters)
        );
    }

    #[test]
    fn a_recording_without_skip_samples_flags_nothing() {
        // An older recording: the same events, no samples, no header field.
        let v = replay_json(&header());
        let (conns, counters) = flags_of(&v);
        assert_eq!(conns.len(), 10);
        assert!(conns.iter().all(|(_, f)| !f), "{conns:?}");
        assert_eq!(counters["skipped_runs"], 0);
    }

    #[test]
    fn a_recorded_clock_stamps_wall_time_and_none_says_so() {
        let mut h = header();
        h.clock = Some(crate::record::HeaderClock {
            mono_ns: 1_000_000_000,
            unix_ns: 1_796_019_352_000_000_000,
        });
        h.workers = Some(4);
        let v = replay_json(&h);
        // The first arrival is at monotonic 1 s: the clock reference itself.
        assert_eq!(v[0]["time"], "2026-11-30T06:15:52.000000Z");
        let s = v.last().expect("summary");
        assert_eq!(s["wall_clock"], WALL_CLOCK_RECORDED);
        assert!(s["time"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-11-30T06:15:52.")));
        assert_eq!(s["balance"]["workers"], 4, "workers from the header");
        // The workers the header names are in the task table, idle or not.
        h.worker_tasks = vec![crate::engine::KnownTask {
            pid: 4242,
            tid: 4243,
            comm: "idle".into(),
            ports: vec![8080],
        }];
        let v = replay_json(&h);
        let tasks = &v.last().expect("summary")["tasks"];
        let idle = tasks
            .as_array()
            .expect("tasks")
            .iter()
            .find(|t| t["tid"] == 4243);
        assert_eq!(
            idle.map(|t| (&t["comm"], &t["accepts"], &t["woken"])),
            Some((&"idle".into(), &0.into(), &0.into())),
            "{tasks}"
        );
        // And the setup it names, which the balance finding uses.
        assert_eq!(v.last().expect("summary")["balance"]["setup"], "unknown");
        h.setup_hint = Some(crate::engine::SetupHint::TakingTurns);
        let v = replay_json(&h);
        assert_eq!(
            v.last().expect("summary")["balance"]["setup"],
            "taking_turns"
        );
        // And the tasks the trace left out, which withhold the verdicts.
        h.untraced = crate::engine::Untraced {
            tasks: vec![crate::engine::KnownTask {
                pid: 4250,
                tid: 4250,
                comm: "sibling".into(),
                ports: vec![80],
            }],
            trace_pid: Some(4240),
        };
        let v = replay_json(&h);
        let s = v.last().expect("summary");
        assert_eq!(s["untraced"]["trace_pid"], 4240, "{s}");
        assert_eq!(s["untraced"]["tasks"][0]["pid"], 4250, "{s}");
        assert_eq!(s["balance"]["verdict"], "no_data", "{s}");
        let v = replay_json(&header());
        assert!(v.iter().all(|l| l["time"].is_null()), "no invented time");
        let s = v.last().expect("summary");
        assert_eq!(s["wall_clock"], WALL_CLOCK_NONE);
        assert_eq!(s["balance"]["workers"], 1, "only the tasks seen accepting");
    }

    #[test]
    fn intervals_follow_recorded_time() {
        let bytes = spaced_recording(false);
        let reader = Reader::new(&bytes[..]).expect("reader");
        let opts = OutputOptions {
            json: true,
            per_conn: false,
            intervals: true,
        };
        let mut out = Vec::new();
        let s = replay(reader, opts, Some(250_000_000), &mut out).expect("replay");
        assert_eq!(s.totals.connections, 10);
        let v = json_lines(&out);
        let ticks: Vec<u64> = v
            .iter()
            .filter(|l| l["type"] == "interval")
            .map(|l| l["ts_ns"].as_u64().expect("ts"))
            .collect();
        // Events span 1.0 s .. 1.9 s: ticks at 1.25, 1.5, 1.75, then the final one.
        assert_eq!(&ticks[..3], &[1_250_000_000, 1_500_000_000, 1_750_000_000]);
        assert_eq!(ticks.len(), 4);
        let conns: u64 = v
            .iter()
            .filter(|l| l["type"] == "interval")
            .map(|l| l["connections"].as_u64().expect("n"))
            .sum();
        assert_eq!(conns, 10);
        assert_eq!(v.last().expect("summary")["type"], "summary");
    }

    #[test]
    fn lost_markers_reach_the_engine() {
        let bytes = spaced_recording(true);
        let reader = Reader::new(&bytes[..]).expect("reader");
        let mut out = Vec::new();
        let s = replay(reader, OutputOptions::default(), None, &mut out).expect("replay");
        assert_eq!(s.lost_events, 5);
        assert_eq!(s.totals.incomplete, 1, "the first connection was open");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("WARNING: 5 events LOST, 1 episodes INCOMPLETE"),
            "{text}"
        );
        assert!(
            text.contains("(backend: tracepoint, kernel: 6.18.0)"),
            "{text}"
        );
    }

    #[test]
    fn a_huge_time_jump_prints_a_bounded_number_of_intervals() {
        let mut b = StreamBuilder::new();
        b.arrival(0, 1, 7, 100);
        b.at(u64::MAX / 2).arrival(0, 2, 7, 101);
        let mut rec = Recorder::new(Vec::new(), &header()).expect("header");
        for ev in b.take() {
            rec.write_event(&ev).expect("event");
        }
        let bytes = rec.finish().expect("finish");
        let opts = OutputOptions {
            json: true,
            per_conn: false,
            intervals: true,
        };
        let mut out = Vec::new();
        replay(
            Reader::new(&bytes[..]).expect("reader"),
            opts,
            Some(1),
            &mut out,
        )
        .expect("replay");
        let n = json_lines(&out)
            .iter()
            .filter(|l| l["type"] == "interval")
            .count();
        assert!(n <= MAX_EMPTY_INTERVALS as usize + 3, "{n} interval lines");
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("herdtrace-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("bad.htr");
        let mut bytes = spaced_recording(false);
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).expect("write");
        let e =
            replay_file(&path, OutputOptions::default(), None, Vec::new()).expect_err("truncated");
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with(&format!(
                "replay {}: truncated event at offset ",
                path.display()
            )),
            "{msg}"
        );
        let missing = replay_file(
            &dir.join("nope"),
            OutputOptions::default(),
            None,
            Vec::new(),
        )
        .expect_err("missing");
        assert!(
            format!("{missing:#}").contains("No such file"),
            "{missing:#}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn interval_argument_is_validated() {
        assert_eq!(parse_secs("0.5"), Ok(0.5));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("nan").is_err());
        assert!(parse_secs("x").is_err());
    }
}
