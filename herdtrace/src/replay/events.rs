//! `herdtrace replay FILE --events`: every recorded kernel event, one line
//! each and in recorded order (as `perf script` prints a perf.data), to see
//! why a connection was reconstructed as it was.
use std::fmt::Write as _;
use std::io::{Read, Write};

use anyhow::{Context as _, Result};
use herdtrace_common::RawEvent;

use crate::engine::held_poll_return;
use crate::events::{comm, kind_name, peer};
use crate::pipeline::SkippedRuns;
use crate::probes::AfterSkip;
use crate::record::{Reader, Record};

/// Writes one line per record of `reader` to `out`; returns the count.
pub fn dump<R: Read, W: Write>(mut reader: Reader<R>, mut out: W) -> Result<u64> {
    let mut n = 0;
    while let Some(record) = reader.next_record()? {
        let line = match record {
            Record::Event(ev) => event_line(&ev),
            Record::Lost(k) => format!("LOST {k} events"),
            Record::Skips { at_ns, programs } => skips_line(at_ns, &programs),
            Record::InsertFailed { map, n } => format!("INSERT_FAILED {map} {n}"),
        };
        writeln!(out, "{line}").context("write")?;
        n += 1;
    }
    out.flush().context("write")?;
    Ok(n)
}

/// A skip sample: its time, then `program=runs`, with `(flags)` for a
/// program whose skipped runs flag connections, `(flags,task)` when they
/// leave only the skipped task's state stale (`AfterSkip::TaskCascades`).
fn skips_line(at_ns: u64, programs: &[SkippedRuns]) -> String {
    let mut s = format!(
        "{}.{:09} SKIPS",
        at_ns / 1_000_000_000,
        at_ns % 1_000_000_000
    );
    if programs.is_empty() {
        s.push_str(" none");
    }
    for p in programs {
        let class = match (p.flags, p.after) {
            (false, _) => "",
            (true, AfterSkip::Anything) => "(flags)",
            (true, AfterSkip::TaskCascades) => "(flags,task)",
        };
        let _ = write!(s, " {}={}{class}", p.program, p.runs);
    }
    s
}

/// `ts cpu kind` then the fields that are set, `name=value`.
pub fn event_line(ev: &RawEvent) -> String {
    let mut s = format!(
        "{}.{:09} cpu{} {:<11} seq={}",
        ev.ts_ns / 1_000_000_000,
        ev.ts_ns % 1_000_000_000,
        ev.cpu,
        kind_name(ev.kind),
        ev.seq
    );
    let hex = [("chain", ev.chain), ("sk", ev.sk), ("child", ev.child)];
    for (name, v) in hex {
        if v != 0 {
            let _ = write!(s, " {name}={v:#x}");
        }
    }
    if ev.tid != 0 || ev.tgid != 0 {
        let _ = write!(s, " tid={} tgid={} comm={}", ev.tid, ev.tgid, comm(ev));
    }
    if ev.ret != 0 {
        let _ = write!(s, " ret={}", ev.ret);
    }
    if ev.aux != 0 {
        let _ = write!(s, " aux={:#x}", ev.aux);
    }
    if let Some(p) = peer(ev) {
        let _ = write!(s, " peer={p}");
    }
    if ev.local_port != 0 {
        let _ = write!(s, " port={}", ev.local_port);
    }
    if ev.flags != 0 {
        let _ = write!(s, " flags={:#x}", ev.flags);
    }
    // An epoll return the programs did not send on its own, but on this
    // event of the same task: it came just before.
    if let Some(ret) = held_poll_return(ev) {
        let what = if ret > 0 { "events" } else { "none" };
        let _ = write!(s, " after_poll_ret={what}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::comm_bytes;
    use crate::record::{RecordHeader, Recorder};
    use herdtrace_common::{AF_INET, EV_ARRIVAL, EV_WAKE};

    #[test]
    fn lines_show_set_fields_only_in_record_order() {
        let mut rec = Recorder::new(Vec::new(), &RecordHeader::new("6.1", "kprobe")).unwrap();
        let mut arrival = RawEvent {
            kind: EV_ARRIVAL,
            cpu: 1,
            ts_ns: 2_000_000_123,
            seq: 7,
            chain: 0x1_0000_0000_0005,
            sk: 0xffff_8880_0000_1000,
            child: 0xffff_8880_0000_2000,
            local_port: 8080,
            family: AF_INET,
            peer_port: 40000,
            ..RawEvent::default()
        };
        arrival.peer_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        rec.write_event(&arrival).unwrap();
        rec.write_lost(3).unwrap();
        let wake = RawEvent {
            kind: EV_WAKE,
            cpu: 1,
            ts_ns: 2_000_000_500,
            seq: 11,
            chain: 0x1_0000_0000_0005,
            tid: 42,
            tgid: 40,
            comm: comm_bytes("worker"),
            flags: herdtrace_common::FLAG_AFTER_POLL,
            ..RawEvent::default()
        };
        rec.write_event(&wake).unwrap();
        rec.write_skips(
            2_025_000_000,
            &[
                SkippedRuns::of("tp_poll_exit".into(), 2),
                SkippedRuns::of("btf_softirq_exit".into(), 3),
                SkippedRuns::of("fx_ep_send_events".into(), 1),
            ],
        )
        .unwrap();
        rec.write_skips(2_050_000_000, &[]).unwrap();
        rec.write_insert_failed("ACTIVE", 4).unwrap();
        let bytes = rec.finish().unwrap();
        let reader = Reader::new(&bytes[..]).unwrap();
        let mut out = Vec::new();
        assert_eq!(dump(reader, &mut out).unwrap(), 6);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "2.000000123 cpu1 arrival     seq=7 chain=0x1000000000005 sk=0xffff888000001000 \
                 child=0xffff888000002000 peer=127.0.0.1:40000 port=8080",
                "LOST 3 events",
                "2.000000500 cpu1 wake        seq=11 chain=0x1000000000005 tid=42 tgid=40 comm=worker flags=0x10 after_poll_ret=none",
                "2.025000000 SKIPS tp_poll_exit=2(flags,task) btf_softirq_exit=3(flags) fx_ep_send_events=1",
                "2.050000000 SKIPS none",
                "INSERT_FAILED ACTIVE 4",
            ]
        );
    }

    #[test]
    fn a_corrupt_recording_is_an_error_not_a_short_dump() {
        let mut bytes = Recorder::new(Vec::new(), &RecordHeader::new("6.1", "kprobe"))
            .unwrap()
            .finish()
            .unwrap();
        bytes.push(0x7f);
        let reader = Reader::new(&bytes[..]).unwrap();
        let err = dump(reader, Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains("unknown tag"), "{err:#}");
    }
}
