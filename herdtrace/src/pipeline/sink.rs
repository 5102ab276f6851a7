//! What the pipeline feeds besides its own output: event sinks see the raw
//! stream (the recording), observers see the reconstructed connections (the
//! Prometheus exporter).
use std::io::Write;

use anyhow::Result;
use herdtrace_common::RawEvent;

use crate::engine::{ConnRecord, IntervalStats};
use crate::pipeline::SkippedRuns;
use crate::record::Recorder;

/// Sees every connection record, the lost-event total and the other
/// counts of what the trace may miss, whatever the output options (the
/// Prometheus exporter).
pub trait Observer {
    fn on_conn(&mut self, record: &ConnRecord);
    /// Events lost so far in the run (a running total, never smaller than before).
    fn on_lost_total(&mut self, total: u64);
    /// One interval ended (whether or not interval lines are printed).
    fn on_interval(&mut self, _interval: &IntervalStats) {}
    /// Runs of `program` the kernel skipped (an increment).
    fn on_skipped(&mut self, _program: &str, _runs: u64) {}
    /// Failed inserts into `map` (an increment).
    fn on_insert_failed(&mut self, _map: &str, _n: u64) {}
    /// Records merged out of time order so far (a running total).
    fn on_late_total(&mut self, _total: u64) {}
}

/// Sees every decoded event and every drop increment in stream order,
/// before reconstruction (the recording for `herdtrace replay`).
pub trait EventSink {
    fn on_event(&mut self, ev: &RawEvent) -> Result<()>;
    /// Drops reported by the kernel counter (an increment), where they were seen.
    fn on_lost(&mut self, n: u64) -> Result<()>;
    /// A skip sample (see [`crate::pipeline::Pipeline::on_skip_sample`]), where it was applied.
    fn on_skips(&mut self, at_ns: u64, programs: &[SkippedRuns]) -> Result<()>;
    /// Failed map inserts (an increment), where they were seen.
    fn on_insert_failed(&mut self, map: &str, n: u64) -> Result<()>;
    /// The run ends: write out whatever is buffered.
    fn finish(&mut self) -> Result<()>;
}

impl<W: Write> EventSink for Recorder<W> {
    fn on_event(&mut self, ev: &RawEvent) -> Result<()> {
        self.write_event(ev)
    }

    fn on_lost(&mut self, n: u64) -> Result<()> {
        self.write_lost(n)
    }

    fn on_skips(&mut self, at_ns: u64, programs: &[SkippedRuns]) -> Result<()> {
        self.write_skips(at_ns, programs)
    }

    fn on_insert_failed(&mut self, map: &str, n: u64) -> Result<()> {
        self.write_insert_failed(map, n)
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::synth::herd_stream;
    use crate::engine::EngineConfig;
    use crate::pipeline::Pipeline;
    use crate::record::{tests::header, Reader, Record};
    use crate::report::{OutputOptions, RunInfo};
    use std::sync::{Arc, Mutex};

    /// A writer the test can read after the pipeline took ownership of it.
    #[derive(Clone, Default)]
    pub(crate) struct Shared(pub(crate) Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A pipeline that prints nothing: only its sinks matter here.
    fn quiet_pipeline() -> Pipeline<std::io::Sink> {
        Pipeline::new(
            EngineConfig::default(),
            OutputOptions::default(),
            RunInfo::default(),
            std::io::sink(),
        )
    }

    #[test]
    fn the_recording_sink_gets_every_event_and_drop_in_stream_order() {
        let file = Shared::default();
        let recorder = Recorder::new(file.clone(), &header()).expect("header");
        let mut p = quiet_pipeline();
        p.add_event_sink(Box::new(recorder));
        let events = herd_stream(3, 2);
        let (first, rest) = events.split_at(4);
        for ev in first {
            p.on_event(ev).expect("event");
        }
        p.on_lost(7).expect("lost");
        for ev in rest {
            p.on_event(ev).expect("event");
        }
        let summary = p.finish(0).expect("finish");
        assert_eq!(summary.totals.connections, 3);
        let bytes = file.0.lock().expect("lock").clone();
        let mut reader = Reader::new(&bytes[..]).expect("a valid recording");
        let mut got = Vec::new();
        while let Some(r) = reader.next_record().expect("record") {
            got.push(r);
        }
        let mut want: Vec<Record> = first.iter().copied().map(Record::Event).collect();
        want.push(Record::Lost(7));
        want.extend(rest.iter().copied().map(Record::Event));
        assert_eq!(got, want);
    }

    /// A recording that cannot be written (a full disk) stops the run with the error.
    #[test]
    fn a_recording_that_cannot_be_written_is_an_error() {
        /// Takes `room` bytes, then fails like a full disk.
        struct Disk {
            room: usize,
        }
        impl Write for Disk {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if b.len() > self.room {
                    return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
                }
                self.room -= b.len();
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let header_len = Recorder::new(Vec::new(), &header())
            .and_then(Recorder::finish)
            .expect("header")
            .len();
        let recorder = Recorder::new(Disk { room: header_len }, &header()).expect("header fits");
        let mut p = quiet_pipeline();
        p.add_event_sink(Box::new(recorder));
        let ev = herd_stream(1, 1)[0];
        let err = p.on_event(&ev).expect_err("the sink's error comes back");
        assert!(format!("{err:#}").contains("write recording"), "{err:#}");
        assert!(
            p.on_lost(1).is_err(),
            "a drop marker cannot be written either"
        );
    }
}
