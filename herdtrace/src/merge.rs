//! One stream out of the event ring buffers, in time order.
//!
//! Each group of CPUs sends its records to its own ring buffer
//! (`loader::event_shards`): one shared by all cost every record its lock's
//! cache line moving between CPUs. Within one ring buffer, records keep the
//! order they were reserved in, so a CPU's sequence numbers stay in order
//! for loss detection. Across ring buffers, the record with the earliest
//! time goes first: a record is stamped before what it reports can have an
//! effect on another CPU (a wakeup before the woken task runs), so time
//! order is causal order, as the one buffer's reservation order was.
//!
//! A record is released only once its time is at or before the watermark:
//! the time up to which every ring buffer has been read, less a margin for
//! records stamped but not yet committed when it was read. The rest stays
//! in its ring buffer, except each one's next record, read to see its time.
//! A record that shows up only after an earlier merge released past its
//! time (committed that much later than stamped: its CPU interrupted, or
//! its vCPU descheduled, in between) goes out of time order, and is counted.
use anyhow::Result;
use herdtrace_common::RawEvent;

/// The next record of each ring buffer, read but not yet released.
#[derive(Debug, Default)]
pub struct Merger {
    heads: Vec<Option<RawEvent>>,
    /// The watermark of the merges so far: every record stamped up to it
    /// should have been released.
    released_upto: u64,
    late: LateRecords,
}

/// Records released after the merge that should have released them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LateRecords {
    pub count: u64,
    /// The most any of them was stamped before the watermark that missed it.
    pub max_behind_ns: u64,
}

impl Merger {
    /// Releases to `emit`, in time order, every record at or before
    /// `watermark_ns` (`u64::MAX`: every record) of `shards` ring buffers;
    /// `pull(s)` reads ring buffer `s`'s next record (`None`: empty for
    /// now). Ties go to the lower shard; within a shard, the order read is
    /// kept. An error from `emit` stops the merge and is returned.
    pub fn merge(
        &mut self,
        shards: usize,
        watermark_ns: u64,
        mut pull: impl FnMut(usize) -> Option<RawEvent>,
        mut emit: impl FnMut(&RawEvent) -> Result<()>,
    ) -> Result<()> {
        if self.heads.len() < shards {
            self.heads.resize(shards, None);
        }
        for (shard, head) in self.heads.iter_mut().enumerate() {
            if head.is_none() {
                *head = pull(shard);
            }
        }
        let upto = self.released_upto;
        loop {
            let mut first: Option<(u64, usize)> = None;
            for (shard, head) in self.heads.iter().enumerate() {
                let Some(ts) = head.as_ref().map(|e| e.ts_ns) else {
                    continue;
                };
                if ts <= watermark_ns && first.is_none_or(|(t, _)| ts < t) {
                    first = Some((ts, shard));
                }
            }
            let Some((ts, shard)) = first else {
                self.released_upto = upto.max(watermark_ns);
                return Ok(());
            };
            if ts <= upto && upto != 0 {
                self.late.count += 1;
                self.late.max_behind_ns = self.late.max_behind_ns.max(upto - ts);
            }
            if let Some(ev) = &self.heads[shard] {
                emit(ev)?;
            }
            self.heads[shard] = pull(shard);
        }
    }

    /// The records released out of time order so far.
    pub fn late(&self) -> LateRecords {
        self.late
    }

    /// Records read but not released.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.heads.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn ev(cpu: u32, seq: u64, ts_ns: u64) -> RawEvent {
        RawEvent {
            cpu,
            seq,
            ts_ns,
            ..RawEvent::default()
        }
    }

    /// Ring buffers as queues of records.
    #[derive(Default)]
    struct Rings(Vec<VecDeque<RawEvent>>);

    impl Rings {
        fn push(&mut self, shard: usize, e: RawEvent) {
            if self.0.len() <= shard {
                self.0.resize_with(shard + 1, VecDeque::new);
            }
            self.0[shard].push_back(e);
        }
    }

    /// (cpu, seq) of what `watermark_ns` releases.
    fn merged(m: &mut Merger, rings: &mut Rings, watermark_ns: u64) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        let shards = rings.0.len();
        m.merge(
            shards,
            watermark_ns,
            |s| rings.0[s].pop_front(),
            |e| {
                out.push((e.cpu, e.seq));
                Ok(())
            },
        )
        .expect("merge");
        out
    }

    #[test]
    fn shards_interleave_by_time() {
        let mut r = Rings::default();
        for (seq, ts) in [(1, 10), (2, 30), (3, 50)] {
            r.push(0, ev(0, seq, ts));
        }
        for (seq, ts) in [(1, 20), (2, 40), (3, 60)] {
            r.push(1, ev(1, seq, ts));
        }
        let mut m = Merger::default();
        assert_eq!(
            merged(&mut m, &mut r, u64::MAX),
            vec![(0, 1), (1, 1), (0, 2), (1, 2), (0, 3), (1, 3)]
        );
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn only_records_up_to_the_watermark_go_and_the_rest_wait() {
        let mut r = Rings::default();
        r.push(0, ev(0, 1, 10));
        r.push(0, ev(0, 2, 100));
        r.push(0, ev(0, 3, 110));
        r.push(1, ev(1, 1, 20));
        r.push(3, ev(3, 1, 50));
        let mut m = Merger::default();
        assert_eq!(merged(&mut m, &mut r, 60), vec![(0, 1), (1, 1), (3, 1)]);
        // Shard 0's next record was read to see its time; the one after it
        // stays in its ring buffer.
        assert_eq!(m.held(), 1);
        assert_eq!(r.0[0].len(), 1);
        // Read later from another shard, but earlier than what waits.
        r.push(1, ev(1, 2, 70));
        assert_eq!(merged(&mut m, &mut r, 99), vec![(1, 2)]);
        assert_eq!(merged(&mut m, &mut r, 100), vec![(0, 2)]);
        assert_eq!(merged(&mut m, &mut r, u64::MAX), vec![(0, 3)]);
        assert_eq!(m.held(), 0);
        assert!(merged(&mut m, &mut r, u64::MAX).is_empty());
    }

    #[test]
    fn a_shard_keeps_its_own_order_even_against_time() {
        // A nested send on CPU 0 reserved before the record it interrupted,
        // which was stamped first: the sequence numbers stay in order.
        let mut r = Rings::default();
        r.push(0, ev(0, 1, 20));
        r.push(0, ev(0, 2, 10));
        r.push(1, ev(1, 1, 15));
        let mut m = Merger::default();
        assert_eq!(
            merged(&mut m, &mut r, u64::MAX),
            vec![(1, 1), (0, 1), (0, 2)]
        );
    }

    #[test]
    fn a_record_committed_after_a_merge_passed_its_time_is_counted_late() {
        let mut r = Rings::default();
        r.push(0, ev(0, 1, 10));
        r.push(1, ev(1, 1, 40));
        let mut m = Merger::default();
        assert_eq!(merged(&mut m, &mut r, 50), vec![(0, 1), (1, 1)]);
        assert_eq!(m.late(), LateRecords::default());
        // CPU 2 stamped at 30 and 45 but committed only now: out of order.
        r.push(2, ev(2, 1, 30));
        r.push(2, ev(2, 2, 45));
        r.push(0, ev(0, 2, 60));
        assert_eq!(merged(&mut m, &mut r, 70), vec![(2, 1), (2, 2), (0, 2)]);
        let late = m.late();
        assert_eq!(late.count, 2);
        assert_eq!(late.max_behind_ns, 20);
        // In time from here on; the count stays.
        r.push(1, ev(1, 2, 71));
        assert_eq!(merged(&mut m, &mut r, u64::MAX), vec![(1, 2)]);
        assert_eq!(m.late().count, 2);
    }

    #[test]
    fn reordering_inside_one_merge_is_not_lateness() {
        // A nested send (see above), a record held past the watermark and
        // the records of the first merge are all on time.
        let mut r = Rings::default();
        r.push(0, ev(0, 1, 20));
        r.push(0, ev(0, 2, 10));
        r.push(1, ev(1, 1, 15));
        r.push(1, ev(1, 2, 90));
        let mut m = Merger::default();
        assert_eq!(merged(&mut m, &mut r, 50), vec![(1, 1), (0, 1), (0, 2)]);
        assert_eq!(merged(&mut m, &mut r, 100), vec![(1, 2)]);
        assert_eq!(m.late(), LateRecords::default());
    }

    #[test]
    fn equal_times_go_to_the_lower_shard_first() {
        let mut r = Rings::default();
        r.push(2, ev(2, 1, 5));
        r.push(1, ev(1, 1, 5));
        r.push(1, ev(1, 2, 5));
        let mut m = Merger::default();
        assert_eq!(merged(&mut m, &mut r, 5), vec![(1, 1), (1, 2), (2, 1)]);
    }

    #[test]
    fn the_merge_is_a_time_sorted_interleaving_of_sorted_shards() {
        // Any split of a time-sorted stream into shards merges back to it,
        // read all at once or a little at a time.
        for step in [1u64, 7, 1000] {
            let mut r = Rings::default();
            for i in 0..200u64 {
                r.push((i * 7 % 5) as usize, ev((i * 7 % 5) as u32, i, i * 3));
            }
            let mut m = Merger::default();
            let mut seqs = Vec::new();
            let mut w = 0;
            while seqs.len() < 200 {
                w += step;
                seqs.extend(merged(&mut m, &mut r, w).into_iter().map(|(_, s)| s));
            }
            assert_eq!(seqs, (0..200).collect::<Vec<u64>>(), "step {step}");
        }
    }

    #[test]
    fn an_emit_error_stops_the_merge_and_keeps_the_rest() {
        let mut r = Rings::default();
        for i in 0..4 {
            r.push(0, ev(0, i, i));
        }
        let mut m = Merger::default();
        let mut n = 0;
        let e = m.merge(
            1,
            u64::MAX,
            |s| r.0[s].pop_front(),
            |_| {
                n += 1;
                if n == 2 {
                    anyhow::bail!("write failed")
                }
                Ok(())
            },
        );
        assert!(e.is_err());
        assert_eq!(n, 2);
    }
}
