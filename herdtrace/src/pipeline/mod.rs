//! The path every event takes, live or replayed: decoded events go to the
//! event sinks (the recording) and to the [`Engine`]; the connection records
//! it reconstructs go to the output (per-connection lines, interval lines,
//! the summary, as text or NDJSON) and to the record observers (the
//! Prometheus exporter).
use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context as _, Result};
use herdtrace_common::RawEvent;

use crate::engine::{
    AfterSkip, ConnRecord, Engine, EngineConfig, IntervalStats, KnownSetup, Summary,
};
use crate::merge::LateRecords;
use crate::report::{
    clock, json, text, time_label, OutputOptions, RunInfo, WallClock, WALL_CLOCK_LIVE,
};

pub mod sink;

pub use sink::{EventSink, Observer};

/// Runs of one program the kernel skipped since the previous sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRuns {
    pub program: String,
    pub runs: u64,
    /// The program's events can change a connection's figures.
    pub flags: bool,
    /// What a skipped run can leave stale after the sample (see `probes::Point::after_skip`).
    pub after: AfterSkip,
}

impl SkippedRuns {
    /// `runs` skipped runs of `program`, classified by the probe table
    /// (unknown programs, such as do-nothing ones, flag nothing).
    pub fn of(program: String, runs: u64) -> SkippedRuns {
        let point = crate::probes::point_of_program(&program);
        SkippedRuns {
            program,
            runs,
            flags: point.is_some_and(|p| p.counts),
            after: point.map_or(AfterSkip::Anything, |p| p.after_skip),
        }
    }
}

/// What the skips of one sample flag: nothing, or the connections of its
/// window and what of the next window (the widest of the programs').
pub fn skip_scope(skipped: &[SkippedRuns]) -> Option<AfterSkip> {
    let flagging = skipped.iter().filter(|s| s.runs > 0 && s.flags);
    flagging.map(|s| s.after).reduce(|a, b| {
        if a == AfterSkip::Anything || b == AfterSkip::Anything {
            AfterSkip::Anything
        } else {
            AfterSkip::TaskCascades
        }
    })
}

/// Engine + output. Write errors (a closed stdout) come back as errors that
/// [`crate::report::is_broken_pipe`] recognises; nothing panics.
pub struct Pipeline<W: Write> {
    engine: Engine,
    out: W,
    opts: OutputOptions,
    info: RunInfo,
    clock: Option<WallClock>,
    /// Where `clock` comes from, or why there is none (the summary says it).
    wall_clock: String,
    records: Vec<ConnRecord>,
    observers: Vec<Box<dyn Observer + Send>>,
    event_sinks: Vec<Box<dyn EventSink + Send>>,
    /// Kernel-side counters the summary reports beside the engine's.
    skipped_by_program: BTreeMap<String, u64>,
    insert_failed: BTreeMap<String, u64>,
    /// Records the live merge released out of time order (see [`Pipeline::on_late`]).
    late: LateRecords,
}

impl<W: Write> Pipeline<W> {
    pub fn new(cfg: EngineConfig, opts: OutputOptions, info: RunInfo, out: W) -> Pipeline<W> {
        let mut p = Pipeline {
            engine: Engine::new(cfg),
            out,
            opts,
            info,
            clock: None,
            wall_clock: "none".into(),
            records: Vec::new(),
            observers: Vec::new(),
            event_sinks: Vec::new(),
            skipped_by_program: BTreeMap::new(),
            insert_failed: BTreeMap::new(),
            late: LateRecords::default(),
        };
        p.sync_records();
        p
    }

    /// Tells the engine whether records are read; called wherever what
    /// [`Pipeline::collects`] depends on changes (without a reader the
    /// engine only counts closed episodes).
    fn sync_records(&mut self) {
        let wanted = self.collects();
        self.engine.set_records(wanted);
    }

    /// Also passes every connection record, interval and the lost-event total to `observer`.
    pub fn add_observer(&mut self, observer: Box<dyn Observer + Send>) {
        self.observers.push(observer);
        self.sync_records();
    }

    /// Also passes every event and drop increment, as they come, to `sink`.
    pub fn add_event_sink(&mut self, sink: Box<dyn EventSink + Send>) {
        self.event_sinks.push(sink);
    }

    /// Records are collected when printed or observed.
    fn collects(&self) -> bool {
        self.opts.per_conn || !self.observers.is_empty()
    }

    /// Sets the mapping of event time to wall-clock time used in labels and
    /// stamps, read live (see [`Pipeline::set_wall_clock_note`] otherwise).
    pub fn set_clock(&mut self, clock: WallClock) {
        self.clock = Some(clock);
        self.wall_clock = WALL_CLOCK_LIVE.into();
    }

    /// Says where the wall clock came from, or why there is none.
    pub fn set_wall_clock_note(&mut self, note: &str) {
        self.wall_clock = note.to_string();
    }

    /// What /proc showed of the setup (see [`Engine::set_setup`]).
    pub fn set_setup(&mut self, known: KnownSetup) {
        self.engine.set_setup(known);
    }

    fn time_of(&self, mono_ns: u64) -> Option<String> {
        self.clock.map(|c| c.rfc3339_of(mono_ns))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A listener of the traced tasks found during the run.
    pub fn add_listener(&mut self, listener: String) {
        self.info.listeners.push(listener);
    }

    /// Feeds one decoded event.
    pub fn on_event(&mut self, ev: &RawEvent) -> Result<()> {
        for sink in &mut self.event_sinks {
            sink.on_event(ev)?;
        }
        self.step(|engine, mut sink| engine.push(ev, &mut sink))
    }

    /// Runs an engine step that can close connections: their records are
    /// collected and emitted when anyone reads them (see `sync_records`).
    #[inline]
    fn step(&mut self, run: impl FnOnce(&mut Engine, &mut dyn FnMut(ConnRecord))) -> Result<()> {
        if self.collects() {
            let records = &mut self.records;
            run(&mut self.engine, &mut |r| records.push(r));
            self.emit_records()
        } else {
            run(&mut self.engine, &mut |_| {});
            Ok(())
        }
    }

    /// Program runs the kernel skipped (an increment): reported, not lost;
    /// the episodes open now are flagged possibly incomplete.
    #[cfg(test)]
    pub fn on_skipped(&mut self, n: u64) {
        self.engine.note_skipped(n);
    }

    /// Closed connections wait for the next skip sample before they are
    /// counted and printed (live tracing; see [`Engine::hold_for_skip_samples`]).
    pub fn hold_for_skip_samples(&mut self) {
        self.engine.hold_for_skip_samples();
    }

    /// A skip sample read at clock time `at_ns`, applied after every event
    /// before it was fed: per program, the runs the kernel skipped since
    /// the previous sample and whether that program's events can change a
    /// connection's figures (see `probes::Point::counts`). The connections
    /// open in the window are flagged when any such program was skipped.
    /// Returns whether any were.
    pub fn on_skip_sample(&mut self, at_ns: u64, skipped: &[SkippedRuns]) -> Result<bool> {
        for sink in &mut self.event_sinks {
            sink.on_skips(at_ns, skipped)?;
        }
        for s in skipped.iter().filter(|s| s.runs > 0) {
            // Saturating: a replayed recording's counts are whatever the file says.
            let runs = self
                .skipped_by_program
                .entry(s.program.clone())
                .or_default();
            *runs = runs.saturating_add(s.runs);
            self.engine.note_skipped_runs(s.runs, s.flags);
            for o in &mut self.observers {
                o.on_skipped(&s.program, s.runs);
            }
        }
        let scope = skip_scope(skipped);
        self.step(|engine, mut sink| engine.skip_sample(at_ns, scope, &mut sink))?;
        Ok(scope.is_some())
    }

    /// Inserts into `map` that failed in the kernel (an increment).
    pub fn on_insert_failed(&mut self, map: &str, n: u64) -> Result<()> {
        if n > 0 {
            for sink in &mut self.event_sinks {
                sink.on_insert_failed(map, n)?;
            }
            for o in &mut self.observers {
                o.on_insert_failed(map, n);
            }
            let failed = self.insert_failed.entry(map.to_owned()).or_default();
            *failed = failed.saturating_add(n);
        }
        Ok(())
    }

    /// What the live merge of the ring buffers released out of time order
    /// so far (running totals): the summary and the observers report it.
    pub fn on_late(&mut self, late: LateRecords) {
        if late.count > self.late.count {
            for o in &mut self.observers {
                o.on_late_total(late.count);
            }
        }
        self.late = late;
    }

    /// Drops reported by the kernel counter (an increment).
    pub fn on_lost(&mut self, n: u64) -> Result<()> {
        for sink in &mut self.event_sinks {
            sink.on_lost(n)?;
        }
        self.engine.note_lost(n);
        self.report_lost();
        Ok(())
    }

    /// Advances the clock to `now_ns` (CLOCK_MONOTONIC), closing timed-out
    /// episodes, prints the interval line if enabled, and flushes.
    pub fn on_tick(&mut self, now_ns: u64) -> Result<()> {
        self.step(|engine, mut sink| engine.advance_to(now_ns, &mut sink))?;
        self.report_lost();
        self.end_interval()?;
        self.flush()
    }

    /// Cuts the interval for the observers and the interval line, if either wants it.
    fn end_interval(&mut self) -> Result<()> {
        if !self.opts.intervals && self.observers.is_empty() {
            return Ok(());
        }
        let i = self.engine.take_interval();
        for o in &mut self.observers {
            o.on_interval(&i);
        }
        if self.opts.intervals {
            self.write_interval(&i)?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().context("flush output")
    }

    /// Ends the run: `extra_lost` drops not yet reported, every open episode
    /// closed, the last partial interval (if any) and the summary printed.
    pub fn finish(mut self, extra_lost: u64) -> Result<Summary> {
        let summary = self.close(extra_lost)?;
        let end = self.summary_end();
        if self.opts.json {
            json::write_summary(&mut self.out, &self.info, &summary, &end)
        } else {
            text::write_summary(&mut self.out, &self.info, &summary)
        }
        .context("write summary")?;
        self.flush()?;
        Ok(summary)
    }

    /// When the run ended, for the summary's stamps.
    fn summary_end(&self) -> json::RunEnd {
        let ts_ns = self.engine.stream_ns();
        json::RunEnd {
            ts_ns,
            time: self.time_of(ts_ns),
            wall_clock: self.wall_clock.clone(),
        }
    }

    /// Stops writing to the output (its reader is gone); events are still counted.
    pub fn mute(&mut self) {
        self.opts = OutputOptions::default();
        self.sync_records();
    }

    /// Ends the run when the output is gone (`herdtrace --json | head -1`):
    /// episodes are closed as by [`finish`](Self::finish), nothing more is
    /// written to the output, and the text summary goes to `elsewhere` (stderr).
    pub fn finish_elsewhere(
        mut self,
        extra_lost: u64,
        elsewhere: &mut impl Write,
    ) -> Result<Summary> {
        self.mute();
        let summary = self.close(extra_lost)?;
        text::write_summary(elsewhere, &self.info, &summary).context("write summary")?;
        elsewhere.flush().context("flush summary")?;
        Ok(summary)
    }

    /// Closes every open episode and prints what remains before the summary.
    fn close(&mut self, extra_lost: u64) -> Result<Summary> {
        for sink in &mut self.event_sinks {
            sink.finish()?;
        }
        self.engine.note_lost(extra_lost);
        self.step(|engine, mut sink| engine.finish(&mut sink))?;
        self.report_lost();
        if self.engine.has_interval_data() {
            self.end_interval()?;
        }
        let mut summary = self.engine.summary();
        summary.skipped_by_program = self.skipped_by_program.clone();
        summary.insert_failed = self.insert_failed.clone();
        summary.late_records = self.late.count;
        summary.late_max_behind_ns = self.late.max_behind_ns;
        Ok(summary)
    }

    /// Shows the collected records to the observers, then prints them (per_conn) or drops them.
    fn emit_records(&mut self) -> Result<()> {
        for o in &mut self.observers {
            for r in &self.records {
                o.on_conn(r);
            }
        }
        if self.opts.per_conn {
            self.write_records()
        } else {
            self.records.clear();
            Ok(())
        }
    }

    fn report_lost(&mut self) {
        let total = self.engine.lost_events();
        for o in &mut self.observers {
            o.on_lost_total(total);
        }
    }

    fn write_records(&mut self) -> Result<()> {
        // Only kprobe/fentry see ep_poll_callback; elsewhere the count is unknown, not 0.
        let epolls_seen = self.info.backend != "tracepoint";
        let records = std::mem::take(&mut self.records);
        for r in &records {
            let time = self.time_of(r.ts_ns);
            if self.opts.json {
                json::write_conn(&mut self.out, r, epolls_seen, time.as_deref())
            } else {
                // Wall clock (or "-" when unknown), then the monotonic time.
                let label = format!(
                    "{} {}",
                    time.as_deref().unwrap_or("-"),
                    clock::mono_seconds(r.ts_ns)
                );
                text::write_conn(&mut self.out, &label, r, epolls_seen)
            }
            .context("write connection record")?;
        }
        self.records = records;
        self.records.clear();
        Ok(())
    }

    fn write_interval(&mut self, i: &IntervalStats) -> Result<()> {
        let time = self.time_of(i.ts_ns);
        if self.opts.json {
            json::write_interval(&mut self.out, i, time.as_deref())
        } else {
            let label = time_label(self.clock, i.ts_ns, false);
            text::write_interval(&mut self.out, &label, i)
        }
        .context("write interval")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::synth::herd_stream;
    use crate::report::is_broken_pipe;
    use serde_json::Value;
    use std::io;

    fn info() -> RunInfo {
        RunInfo {
            backend: "test".into(),
            kernel: "0.0".into(),
            ..RunInfo::default()
        }
    }

    fn lines(buf: &[u8]) -> Vec<Value> {
        std::str::from_utf8(buf)
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    #[test]
    fn json_pipeline_emits_conns_intervals_and_a_summary() {
        let events = herd_stream(6, 3);
        let opts = OutputOptions {
            json: true,
            per_conn: true,
            intervals: true,
        };
        let mut out = Vec::new();
        let mut p = Pipeline::new(EngineConfig::default(), opts, info(), &mut out);
        for ev in &events[..events.len() / 2] {
            p.on_event(ev).expect("event");
        }
        let mid = p.engine().stream_ns();
        p.on_tick(mid).expect("tick");
        for ev in &events[events.len() / 2..] {
            p.on_event(ev).expect("event");
        }
        p.on_lost(2).expect("lost");
        let s = p.finish(1).expect("finish");
        assert_eq!(s.totals.connections, 6);
        assert_eq!(s.lost_events, 3);
        let v = lines(&out);
        let kinds: Vec<&str> = v
            .iter()
            .map(|l| l["type"].as_str().expect("type"))
            .collect();
        assert_eq!(kinds.iter().filter(|k| **k == "conn").count(), 6);
        assert_eq!(kinds.iter().filter(|k| **k == "interval").count(), 2);
        assert_eq!(kinds.last(), Some(&"summary"));
        let intervals: Vec<&Value> = v.iter().filter(|l| l["type"] == "interval").collect();
        let conns_in_intervals: u64 = intervals
            .iter()
            .map(|l| l["connections"].as_u64().expect("n"))
            .sum();
        assert_eq!(conns_in_intervals, 6);
        assert_eq!(intervals[1]["lost_events"], 3);
        let summary = v.last().expect("summary");
        assert_eq!(summary["connections"], 6);
        assert_eq!(summary["eagain_losers"], 12);
        assert_eq!(summary["backend"], "test");
        // A herd seen through 3 lost events: said to be from an incomplete trace.
        let verdict = summary["verdict"].as_str().expect("v");
        assert!(
            verdict.starts_with("herd: ")
                && verdict.contains("; from an incomplete trace (3 events lost"),
            "{verdict}"
        );
    }

    #[test]
    fn text_pipeline_without_per_conn_prints_only_intervals_and_summary() {
        let events = herd_stream(4, 2);
        let opts = OutputOptions {
            json: false,
            per_conn: false,
            intervals: true,
        };
        let mut out = Vec::new();
        let mut p = Pipeline::new(EngineConfig::default(), opts, info(), &mut out);
        p.set_clock(WallClock {
            mono_ns: 0,
            unix_ns: 0,
        });
        for ev in &events {
            p.on_event(ev).expect("event");
        }
        p.on_tick(10_000_000_000).expect("tick");
        p.finish(0).expect("finish");
        let text = String::from_utf8(out).expect("utf8");
        let first = text.lines().next().expect("line");
        // HH:MM:SS of the local zone, then the counters.
        let (hms, rest) = first.split_at(8);
        assert!(
            hms.bytes().enumerate().all(|(i, c)| if i == 2 || i == 5 {
                c == b':'
            } else {
                c.is_ascii_digit()
            }),
            "{first}"
        );
        assert_eq!(
            rest,
            " conns 4  woken/conn 2.00 (max 2)  eagain/conn 1.00  spurious/conn 0.00  drops 0  \
             top 50% worker[1000/1000] (fair 50%)"
        );
        assert!(
            !text.contains("woken 2 returned"),
            "no per-conn lines: {text}"
        );
        assert!(text.contains("verdict: mild herd: "), "{text}");
    }

    #[test]
    fn text_per_conn_lines_use_the_wall_clock() {
        let mut out = Vec::new();
        let opts = OutputOptions {
            per_conn: true,
            ..OutputOptions::default()
        };
        let mut p = Pipeline::new(EngineConfig::default(), opts, info(), &mut out);
        p.set_clock(WallClock {
            mono_ns: 1_000_000_000,
            unix_ns: 86_400 * 1_000_000_000 + 123_456_000,
        });
        for ev in &herd_stream(1, 1) {
            p.on_event(ev).expect("event");
        }
        p.finish(0).expect("finish");
        let text = String::from_utf8(out).expect("utf8");
        let first = text.lines().next().expect("line");
        // RFC 3339 in UTC, then the monotonic time of the same event.
        assert!(
            first.starts_with("1970-01-02T00:00:00.123456Z 1.000000 :8080 <- "),
            "{first}"
        );
        assert!(
            first.ends_with("accepted by worker[1000/1000] after 4us"),
            "{first}"
        );
    }

    #[test]
    fn skipped_runs_are_reported_but_not_lost() {
        let mut out = Vec::new();
        let mut p = Pipeline::new(
            EngineConfig::default(),
            OutputOptions::default(),
            info(),
            &mut out,
        );
        for ev in &herd_stream(2, 2) {
            p.on_event(ev).expect("event");
        }
        p.on_skipped(5);
        p.on_skipped(2);
        let s = p.finish(0).expect("finish");
        assert_eq!(
            (s.skipped_runs, s.lost_events, s.totals.incomplete),
            (7, 0, 0)
        );
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("note: the kernel skipped 7 runs of herdtrace's programs"),
            "{text}"
        );
        assert!(!text.contains("LOST"), "{text}");
        let mut json = Vec::new();
        let opts = OutputOptions {
            json: true,
            ..OutputOptions::default()
        };
        let mut p = Pipeline::new(EngineConfig::default(), opts, info(), &mut json);
        p.on_skipped(3);
        p.finish(0).expect("finish");
        let v = lines(&json);
        assert_eq!(v.last().expect("summary")["skipped_runs"], 3);
    }

    /// Keeps what it is shown, readable from the test through the Arc.
    #[derive(Default)]
    struct Seen {
        conns: Vec<ConnRecord>,
        lost: Vec<u64>,
        skipped: Vec<(String, u64)>,
        insert_failed: Vec<(String, u64)>,
        late: Vec<u64>,
    }
    struct Spy(std::sync::Arc<std::sync::Mutex<Seen>>);
    impl Observer for Spy {
        fn on_conn(&mut self, record: &ConnRecord) {
            self.0.lock().expect("lock").conns.push(record.clone());
        }
        fn on_lost_total(&mut self, total: u64) {
            self.0.lock().expect("lock").lost.push(total);
        }
        fn on_skipped(&mut self, program: &str, runs: u64) {
            let mut seen = self.0.lock().expect("lock");
            seen.skipped.push((program.into(), runs));
        }
        fn on_insert_failed(&mut self, map: &str, n: u64) {
            let mut seen = self.0.lock().expect("lock");
            seen.insert_failed.push((map.into(), n));
        }
        fn on_late_total(&mut self, total: u64) {
            self.0.lock().expect("lock").late.push(total);
        }
    }

    #[test]
    fn what_the_trace_may_miss_reaches_the_observers_and_the_summary() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
        let opts = OutputOptions {
            json: true,
            ..OutputOptions::default()
        };
        let mut out = Vec::new();
        let mut p = Pipeline::new(EngineConfig::default(), opts, info(), &mut out);
        p.add_observer(Box::new(Spy(seen.clone())));
        let skips = [
            SkippedRuns::of("sched_waking".into(), 4),
            SkippedRuns::of("tp_accept_exit".into(), 0),
        ];
        p.on_skip_sample(10, &skips).expect("skips");
        p.on_insert_failed("TRACED", 2).expect("inserts");
        p.on_insert_failed("TRACED", 0).expect("no inserts");
        let late = |count, max_behind_ns| LateRecords {
            count,
            max_behind_ns,
        };
        p.on_late(late(0, 0));
        p.on_late(late(3, 4_000_000));
        // The same total again: nothing new to say.
        p.on_late(late(3, 4_000_000));
        p.on_late(late(5, 9_000_000));
        let s = p.finish(0).expect("finish");
        {
            let seen = seen.lock().expect("lock");
            assert_eq!(seen.skipped, vec![("sched_waking".to_string(), 4)]);
            assert_eq!(seen.insert_failed, vec![("TRACED".to_string(), 2)]);
            assert_eq!(seen.late, vec![3, 5]);
        }
        assert_eq!((s.late_records, s.late_max_behind_ns), (5, 9_000_000));
        let v = lines(&out);
        let summary = v.last().expect("summary");
        assert_eq!(summary["late_records"], 5);
        assert_eq!(summary["late_max_behind_ns"], 9_000_000);
        assert_eq!(summary["skipped_runs"], 4);
        assert_eq!(summary["insert_failed"]["TRACED"], 2);
    }

    #[test]
    fn an_observer_sees_every_record_whatever_the_output_options() {
        for per_conn in [false, true] {
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
            let opts = OutputOptions {
                json: true,
                per_conn,
                intervals: false,
            };
            let mut out = Vec::new();
            let mut p = Pipeline::new(EngineConfig::default(), opts, info(), &mut out);
            p.add_observer(Box::new(Spy(seen.clone())));
            let events = herd_stream(5, 3);
            for ev in &events[..events.len() / 2] {
                p.on_event(ev).expect("event");
            }
            p.on_lost(2).expect("lost");
            let mid = p.engine().stream_ns();
            p.on_tick(mid).expect("tick");
            for ev in &events[events.len() / 2..] {
                p.on_event(ev).expect("event");
            }
            let summary = p.finish(1).expect("finish");
            let seen = seen.lock().expect("lock");
            assert_eq!(seen.conns.len(), 5, "per_conn {per_conn}");
            assert!(seen.conns.iter().all(|r| r.woken == 3), "{:?}", seen.conns);
            assert_eq!(seen.lost.first(), Some(&2), "on_lost reports at once");
            assert_eq!(seen.lost.last(), Some(&summary.lost_events));
            assert_eq!(summary.lost_events, 3);
            assert!(
                seen.lost.windows(2).all(|w| w[0] <= w[1]),
                "{:?}",
                seen.lost
            );
            let v = lines(&out);
            let conns = v.iter().filter(|l| l["type"] == "conn").count();
            assert_eq!(conns, if per_conn { 5 } else { 0 });
            assert_eq!(v.last().expect("summary")["type"], "summary");
        }
    }

    /// A writer whose reader went away.
    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn a_closed_pipe_is_an_error_the_caller_recognises() {
        let opts = OutputOptions {
            json: true,
            per_conn: true,
            intervals: false,
        };
        let cfg = EngineConfig {
            settle_grace_ns: 0,
            ..EngineConfig::default()
        };
        let mut p = Pipeline::new(cfg, opts, info(), ClosedPipe);
        let mut err = None;
        for ev in &herd_stream(3, 2) {
            if let Err(e) = p.on_event(ev) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("writing a record must fail");
        assert!(is_broken_pipe(&err), "{err:#}");
        let at_finish = p.finish(0).expect_err("the summary cannot be written");
        assert!(is_broken_pipe(&at_finish), "{at_finish:#}");
        let other = anyhow::Error::from(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!is_broken_pipe(&other));
        assert!(!is_broken_pipe(&anyhow::anyhow!("plain")));
    }

    #[test]
    fn after_a_closed_pipe_the_summary_goes_elsewhere() {
        let opts = OutputOptions {
            json: true,
            per_conn: true,
            intervals: true,
        };
        let cfg = EngineConfig {
            settle_grace_ns: 0,
            ..EngineConfig::default()
        };
        let mut p = Pipeline::new(cfg, opts, info(), ClosedPipe);
        let events = herd_stream(4, 3);
        let failed_at = events
            .iter()
            .position(|ev| p.on_event(ev).is_err_and(|e| is_broken_pipe(&e)))
            .expect("the closed pipe shows");
        // The rest of the stream is still counted, without writing.
        p.mute();
        for ev in &events[failed_at + 1..] {
            p.on_event(ev).expect("muted: nothing is written");
        }
        let mut stderr = Vec::new();
        let s = p
            .finish_elsewhere(5, &mut stderr)
            .expect("summary to stderr");
        // Every connection is still counted, and the drops reported at the end.
        assert_eq!(s.totals.connections, 4);
        assert_eq!(s.lost_events, 5);
        let text = String::from_utf8(stderr).expect("utf8");
        assert!(text.contains("herdtrace summary  (backend: test"), "{text}");
        assert!(text.contains("connections: 4\n"), "{text}");
        assert!(text.contains("WARNING: 5 events LOST"), "{text}");
        assert!(!text.contains("\"type\""), "text, not JSON: {text}");
    }
}
