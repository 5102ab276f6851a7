//! Lost-event accounting: per-CPU sequence gaps and drops reported by the
//! kernel's counter. Both count the same drops, so the total is the larger of
//! the two, not their sum.
//!
//! Every detected loss bumps an *epoch*; an episode whose epoch at opening
//! differs from the epoch at closing saw a loss while open.

/// Linux's NR_CPUS ceiling; a larger `cpu` is garbage and not tracked.
const MAX_CPUS: usize = 8192;
/// A per-CPU seq at most this far behind the last one is a late (reordered)
/// or duplicate event; farther behind, the counter was reset.
const REORDER_WINDOW: u64 = 1024;

#[derive(Debug, Clone, Copy, Default)]
struct CpuSeq {
    seen: bool,
    last: u64,
    /// Bit `k` set: seq `last - k` arrived. A late event can fill only a
    /// clear bit, so duplicates never cancel a real gap.
    arrived: u64,
}

#[derive(Debug, Default)]
pub(super) struct LossTracker {
    cpus: Vec<CpuSeq>,
    seq_lost: u64,
    /// Of `seq_lost`, gap events that a nested emission announced as late
    /// (`FLAG_NESTED_SEND`): not counted as losses for the epoch until the
    /// kernel's drop counter says they were.
    awaited: u64,
    reported: u64,
    epoch: u64,
}

impl LossTracker {
    /// Checks one event's per-CPU sequence number; `nested`: the event says
    /// the seq just before it is still to come (`FLAG_NESTED_SEND`).
    pub(super) fn observe(&mut self, cpu: u32, seq: u64, nested: bool) {
        let cpu = cpu as usize;
        if cpu >= MAX_CPUS {
            return;
        }
        if self.cpus.len() <= cpu {
            self.cpus.resize(cpu + 1, CpuSeq::default());
        }
        let c = &mut self.cpus[cpu];
        if !c.seen || (seq < c.last && c.last - seq > REORDER_WINDOW) {
            // First event, or a counter reset: a new baseline, no gap.
            // Nothing before the baseline counts as missing.
            *c = CpuSeq {
                seen: true,
                last: seq,
                arrived: u64::MAX,
            };
        } else if seq > c.last {
            let step = seq - c.last;
            c.arrived = if step >= 64 {
                1
            } else {
                (c.arrived << step) | 1
            };
            c.last = seq;
            if step > 1 {
                // A gap is precise: flag open episodes even when the kernel
                // counter already announced these drops; but not for the one
                // event a nested emission says is only late.
                self.seq_lost = self.seq_lost.saturating_add(step - 1);
                let late = u64::from(nested);
                self.awaited = self.awaited.saturating_add(late);
                if step - 1 > late {
                    self.epoch += 1;
                }
            }
        } else {
            let k = c.last - seq;
            if k < 64 && c.arrived & (1 << k) == 0 {
                // Reserved late (a nested program on the same CPU): it fills
                // a gap counted as lost.
                c.arrived |= 1 << k;
                self.seq_lost = self.seq_lost.saturating_sub(1);
                self.awaited = self.awaited.saturating_sub(1);
            }
            // Otherwise a duplicate, or too late to tell: ignored.
        }
    }

    /// Drops reported by the kernel counter (an increment). Returns whether
    /// this revealed drops no seq gap showed (then the epoch moved).
    pub(super) fn report(&mut self, n: u64) -> bool {
        let before = self.confirmed();
        self.reported = self.reported.saturating_add(n);
        let more = self.confirmed() > before;
        if more {
            self.epoch += 1;
        }
        more
    }

    pub(super) fn total(&self) -> u64 {
        self.seq_lost.max(self.reported)
    }

    /// The total without the events announced as late: what has moved the
    /// epoch so far.
    fn confirmed(&self) -> u64 {
        self.seq_lost
            .saturating_sub(self.awaited)
            .max(self.reported)
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut LossTracker, cpu: u32, seqs: &[u64]) {
        for &s in seqs {
            t.observe(cpu, s, false);
        }
    }

    #[test]
    fn a_nested_emission_gap_is_late_not_lost() {
        let mut t = LossTracker::default();
        feed(&mut t, 0, &[1, 2]);
        // 4 interrupted the emission of 3, which arrives after it.
        t.observe(0, 4, true);
        assert_eq!((t.total(), t.epoch()), (1, 0), "counted, but no epoch yet");
        t.observe(0, 3, false);
        assert_eq!((t.total(), t.epoch()), (0, 0), "3 came: nothing was lost");
        // Announced late but dropped: the kernel's counter moves the epoch.
        t.observe(0, 6, true);
        assert_eq!((t.total(), t.epoch()), (1, 0));
        assert!(t.report(1), "the drop the nested event hid");
        assert_eq!((t.total(), t.epoch()), (1, 1));
        // A wider gap than the one announced event is a loss at once.
        t.observe(0, 10, true);
        assert_eq!((t.total(), t.epoch()), (4, 2));
        t.observe(0, 9, false);
        assert_eq!((t.total(), t.epoch()), (3, 2));
    }

    #[test]
    fn gaps_count_and_move_the_epoch() {
        let mut t = LossTracker::default();
        feed(&mut t, 0, &[7, 8, 9]);
        assert_eq!((t.total(), t.epoch()), (0, 0), "first seq is the baseline");
        feed(&mut t, 0, &[12]);
        assert_eq!((t.total(), t.epoch()), (2, 1));
        feed(&mut t, 1, &[100, 105]);
        assert_eq!((t.total(), t.epoch()), (6, 2));
    }

    #[test]
    fn backwards_is_a_reset_or_a_late_event() {
        let mut t = LossTracker::default();
        feed(&mut t, 0, &[5000, 1, 2]);
        assert_eq!(t.total(), 0, "reset: no gap");
        feed(&mut t, 0, &[3, 5, 4, 6]);
        assert_eq!(t.total(), 0, "4 arrived late and filled the gap");
        feed(&mut t, 0, &[9, 9, 3]);
        assert_eq!(t.total(), 2, "duplicates fill nothing beyond the gap");
        feed(&mut t, 0, &[7, 8, 7]);
        assert_eq!(t.total(), 0, "7 and 8 were late; a third is a duplicate");
        feed(&mut t, 2, &[50, 49, 48]);
        assert_eq!(t.total(), 0, "before the baseline nothing was counted lost");
        feed(&mut t, 2, &[200, 150]);
        assert_eq!(
            t.total(),
            148,
            "a gap wider than 64 is counted, not refilled"
        );
    }

    #[test]
    fn kernel_reports_count_once_with_gaps() {
        let mut t = LossTracker::default();
        feed(&mut t, 0, &[1, 5]);
        assert_eq!(t.total(), 3);
        assert!(!t.report(3), "the same drops");
        assert_eq!((t.total(), t.epoch()), (3, 1));
        assert!(t.report(2));
        assert_eq!((t.total(), t.epoch()), (5, 2));
        assert!(!t.report(0));
    }

    #[test]
    fn garbage_cpu_numbers_are_not_tracked() {
        let mut t = LossTracker::default();
        feed(&mut t, u32::MAX, &[1, 1000]);
        assert_eq!(t.total(), 0);
        assert!(t.cpus.is_empty());
    }
}
