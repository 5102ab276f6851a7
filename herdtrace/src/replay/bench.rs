//! The engine benchmark behind the hidden `replay --bench-events N`: a
//! recording is decoded and reconstructed in passes until N events were
//! processed, single-threaded. Each pass shifts timestamps, per-CPU sequence
//! numbers and wake-chain counters past the previous pass, so the engine sees
//! one long, gap-free stream rather than the same seconds again.
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use herdtrace_common::{RawEvent, RAW_EVENT_SIZE};

use crate::engine::EngineConfig;
use crate::events;
use crate::pipeline::Pipeline;
use crate::record::{Reader, Record};
use crate::report::{OutputOptions, RunInfo};

/// Gap between the end of one pass and the start of the next (stream time).
const PASS_GAP_NS: u64 = 1_000_000;
/// Wake-chain ids are `(cpu << 48) | counter`.
const CHAIN_COUNTER_BITS: u32 = 48;
/// CPUs above this are garbage (Linux's NR_CPUS ceiling); their events keep
/// their numbers unshifted.
const MAX_CPUS: usize = 8192;

/// What one benchmark run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub events: u64,
    pub passes: u64,
    pub connections: u64,
    pub seconds: f64,
}

impl Timing {
    /// The line `cargo xtask bench` parses.
    pub fn line(&self) -> String {
        let rate = if self.seconds > 0.0 {
            self.events as f64 / self.seconds
        } else {
            0.0
        };
        format!(
            "replay-bench events {} passes {} connections {} seconds {:.6} events_per_s {:.0}",
            self.events, self.passes, self.connections, self.seconds, rate
        )
    }
}

/// Lowest and highest value seen per CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ranges(Vec<Option<(u64, u64)>>);

impl Ranges {
    fn see(&mut self, cpu: usize, v: u64) {
        if cpu >= MAX_CPUS {
            return;
        }
        if self.0.len() <= cpu {
            self.0.resize(cpu + 1, None);
        }
        let r = &mut self.0[cpu];
        *r = Some(match *r {
            None => (v, v),
            Some((lo, hi)) => (lo.min(v), hi.max(v)),
        });
    }

    /// How far pass `k` moves a value of `cpu`: k × the CPU's span.
    fn offset(&self, cpu: usize, k: u64) -> u64 {
        match self.0.get(cpu).copied().flatten() {
            Some((lo, hi)) => k.saturating_mul(hi - lo + 1),
            None => 0,
        }
    }
}

/// How a pass moves an event's numbers (pure, so it is tested).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shift {
    ts_span: u64,
    seqs: Ranges,
    chains: Ranges,
}

impl Shift {
    pub fn of(evs: &[RawEvent]) -> Shift {
        let mut s = Shift::default();
        let (mut lo, mut hi) = (u64::MAX, 0);
        for ev in evs {
            lo = lo.min(ev.ts_ns);
            hi = hi.max(ev.ts_ns);
            s.seqs.see(ev.cpu as usize, ev.seq);
            if ev.chain != 0 {
                let (cpu, counter) = split_chain(ev.chain);
                s.chains.see(cpu, counter);
            }
        }
        s.ts_span = if evs.is_empty() { 0 } else { hi - lo } + PASS_GAP_NS;
        s
    }

    /// `ev` as it appears in pass `k` (pass 0 is the recording itself).
    pub fn apply(&self, ev: &mut RawEvent, k: u64) {
        if k == 0 {
            return;
        }
        ev.ts_ns = ev.ts_ns.wrapping_add(k.wrapping_mul(self.ts_span));
        ev.seq = ev.seq.wrapping_add(self.seqs.offset(ev.cpu as usize, k));
        if ev.chain != 0 {
            let (cpu, counter) = split_chain(ev.chain);
            let moved = counter.wrapping_add(self.chains.offset(cpu, k));
            ev.chain = (ev.chain & !chain_mask()) | (moved & chain_mask());
        }
    }
}

fn chain_mask() -> u64 {
    (1u64 << CHAIN_COUNTER_BITS) - 1
}

fn split_chain(chain: u64) -> (usize, u64) {
    ((chain >> CHAIN_COUNTER_BITS) as usize, chain & chain_mask())
}

/// Reads the recording's events as wire bytes (drop markers are left out:
/// they say nothing about the engine's speed).
fn load<R: Read>(mut reader: Reader<R>) -> Result<(Vec<u8>, Shift, RunInfo)> {
    let header = reader.header().clone();
    let mut evs = Vec::new();
    while let Some(rec) = reader.next_record()? {
        if let Record::Event(ev) = rec {
            evs.push(ev);
        }
    }
    if evs.is_empty() {
        bail!("the recording holds no events");
    }
    let shift = Shift::of(&evs);
    let mut bytes = Vec::with_capacity(evs.len() * RAW_EVENT_SIZE);
    for ev in &evs {
        bytes.extend_from_slice(&events::encode(ev));
    }
    let info = RunInfo {
        backend: header.backend,
        kernel: header.kernel,
        attach: Vec::new(),
        scope: String::new(),
        listeners: Vec::new(),
    };
    Ok((bytes, shift, info))
}

/// Decodes and reconstructs passes over the recording until `target` events
/// were processed; output (the summary) goes to a sink.
pub fn run<R: Read>(reader: Reader<R>, target: u64) -> Result<Timing> {
    let (bytes, shift, info) = load(reader)?;
    let mut p = Pipeline::new(
        EngineConfig::default(),
        OutputOptions::default(),
        info,
        std::io::sink(),
    );
    let started = Instant::now();
    let mut events = 0u64;
    let mut passes = 0u64;
    'passes: loop {
        for chunk in bytes.chunks_exact(RAW_EVENT_SIZE) {
            let mut ev = events::decode(chunk).context("decoding a recorded event")?;
            shift.apply(&mut ev, passes);
            p.on_event(&ev)?;
            events += 1;
            if events >= target {
                passes += 1;
                break 'passes;
            }
        }
        passes += 1;
    }
    let summary = p.finish(0)?;
    Ok(Timing {
        events,
        passes,
        connections: summary.totals.connections,
        seconds: started.elapsed().as_secs_f64(),
    })
}

pub fn run_file(path: &Path, target: u64) -> Result<Timing> {
    let reader = Reader::open(path).with_context(|| format!("replay {}", path.display()))?;
    run(reader, target).with_context(|| format!("replay {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::spaced_recording;
    use super::*;
    use crate::record::tests::header;
    use crate::record::Recorder;

    fn ev(cpu: u32, ts_ns: u64, seq: u64, chain: u64) -> RawEvent {
        RawEvent {
            kind: 1,
            cpu,
            ts_ns,
            seq,
            chain,
            ..RawEvent::default()
        }
    }

    #[test]
    fn pass_zero_is_the_recording() {
        let evs = [ev(0, 100, 5, (1 << 48) | 7)];
        let s = Shift::of(&evs);
        let mut e = evs[0];
        s.apply(&mut e, 0);
        assert_eq!(e, evs[0]);
    }

    #[test]
    fn later_passes_continue_each_cpu_without_gaps() {
        let evs = [
            ev(0, 1_000, 10, 0),
            ev(1, 1_500, 3, (1 << 48) | 20),
            ev(0, 2_000, 12, 5),
            ev(1, 3_000, 4, (1 << 48) | 22),
        ];
        let s = Shift::of(&evs);
        // Pass 1 starts one span (2000 ns + the gap) later; cpu 0's seqs 10..=12
        // move by 3, cpu 1's 3..=4 by 2; chain counters by their own spans.
        let mut a = evs[0];
        s.apply(&mut a, 1);
        assert_eq!(
            (a.ts_ns, a.seq, a.chain),
            (1_000 + 2_000 + PASS_GAP_NS, 13, 0)
        );
        let mut b = evs[3];
        s.apply(&mut b, 1);
        assert_eq!(b.seq, 6, "cpu 1's last seq 4 follows as 6 in pass 1");
        assert_eq!(
            b.chain,
            (1 << 48) | 25,
            "counter 22 + span 3, cpu bits kept"
        );
        let mut c = evs[2];
        s.apply(&mut c, 2);
        assert_eq!(c.seq, 12 + 2 * 3);
        assert_eq!(
            c.chain,
            5 + 2,
            "chain counter 5 is cpu 0's only one: span 1"
        );
        assert_eq!(c.ts_ns, 2_000 + 2 * (2_000 + PASS_GAP_NS));
    }

    #[test]
    fn first_event_of_a_pass_follows_the_last_of_the_previous() {
        let evs = [ev(0, 10, 100, 0), ev(0, 20, 101, 0), ev(0, 30, 102, 0)];
        let s = Shift::of(&evs);
        let mut first = evs[0];
        s.apply(&mut first, 1);
        assert_eq!(first.seq, 103);
        assert!(first.ts_ns > evs[2].ts_ns);
    }

    #[test]
    fn garbage_cpu_is_left_unshifted() {
        let evs = [ev(u32::MAX, 10, 100, 0)];
        let s = Shift::of(&evs);
        let mut e = evs[0];
        s.apply(&mut e, 3);
        assert_eq!(e.seq, 100);
    }

    #[test]
    fn passes_reconstruct_every_connection_again() {
        let bytes = spaced_recording(false);
        let one = run(Reader::new(&bytes[..]).expect("reader"), 1).expect("run");
        assert_eq!((one.events, one.passes), (1, 1));
        // Count the events of one pass, then ask for exactly three passes.
        let mut reader = Reader::new(&bytes[..]).expect("reader");
        let mut n = 0u64;
        while let Some(r) = reader.next_record().expect("record") {
            if matches!(r, Record::Event(_)) {
                n += 1;
            }
        }
        let t = run(Reader::new(&bytes[..]).expect("reader"), 3 * n).expect("run");
        assert_eq!(t.events, 3 * n);
        assert_eq!(t.passes, 3);
        assert_eq!(t.connections, 30, "10 connections per pass, none lost");
        assert!(t.line().starts_with(&format!(
            "replay-bench events {} passes 3 connections 30 seconds ",
            3 * n
        )));
    }

    #[test]
    fn empty_recording_is_an_error() {
        let rec = Recorder::new(Vec::new(), &header()).expect("header");
        let bytes = rec.finish().expect("finish");
        let err = run(Reader::new(&bytes[..]).expect("reader"), 10).expect_err("empty");
        assert!(err.to_string().contains("no events"), "{err}");
    }
}
