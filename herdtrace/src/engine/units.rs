//! Who the balance verdict counts as one worker: a task, or in a process
//! that runs one accept loop on whichever of its threads is free
//! ([`super::KnownSetup::accept_loops`]: tokio, Go), its accept loop.
//! Which thread runs such a loop is the runtime's choice, not the kernel's:
//! counting threads would judge tokio's work stealing as an imbalance.
//! A process with one listener per SO_REUSEPORT socket of a port (tokio
//! with a loop per socket) has as many loops, which the kernel's hash
//! feeds: its k-th socket of each port is its k-th loop, as /proc counts
//! N (the most waiters on one address), so loops on several ports (80 and
//! 443) are one worker, not one per port.
use rustc_hash::{FxHashMap, FxHashSet};

/// One worker of the balance verdict.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Unit {
    /// The stats row of the task that accepted first: it names the unit.
    pub row: u32,
    pub accepts: u64,
    /// `accepts` at the last interval cut.
    pub accepts_mark: u64,
    /// Tasks that accepted in it (1 unless it is a loop).
    pub threads: u64,
    pub is_loop: bool,
}

#[derive(Debug, Default)]
pub(super) struct Units {
    units: Vec<Unit>,
    /// The unit of each task row that accepted outside a loop.
    by_row: FxHashMap<u32, u32>,
    /// The unit of each (process, rank) loop whose naming task is alive.
    by_loop: FxHashMap<(u32, usize), u32>,
    /// Each process's listening sockets per port, in order of first accept:
    /// a socket's rank is its place there.
    sockets: FxHashMap<(u32, u16), Vec<u64>>,
    /// (unit, row) pairs seen, to count a loop's threads.
    loop_threads: FxHashSet<(u32, u32)>,
}

impl Units {
    /// Counts a successful accept by task row `row` of process `pid` on
    /// `listener` (local `port`); `in_loop`: the process runs an accept
    /// loop. Returns the unit and whether it is new (a worker more).
    pub fn on_accept(
        &mut self,
        row: u32,
        pid: u32,
        (listener, port): (u64, u16),
        in_loop: bool,
    ) -> (u32, bool) {
        let next = self.units.len() as u32;
        let (unit, new) = if in_loop {
            let on_port = self.sockets.entry((pid, port)).or_default();
            let rank = match on_port.iter().position(|&sk| sk == listener) {
                Some(rank) => rank,
                None => {
                    on_port.push(listener);
                    on_port.len() - 1
                }
            };
            let unit = *self.by_loop.entry((pid, rank)).or_insert(next);
            if self.loop_threads.insert((unit, row)) && unit != next {
                self.units[unit as usize].threads += 1;
            }
            (unit, unit == next)
        } else {
            let unit = *self.by_row.entry(row).or_insert(next);
            (unit, unit == next)
        };
        if new {
            self.units.push(Unit {
                row,
                accepts: 0,
                accepts_mark: 0,
                threads: 1,
                is_loop: in_loop,
            });
        }
        self.units[unit as usize].accepts += 1;
        (unit, new)
    }

    /// Task row `row` is gone: how many units stop being alive (its own,
    /// and the loops it named; a loop's next accept by another thread
    /// starts a unit of its own, as a replaced worker's would).
    pub fn retire(&mut self, row: u32) -> u64 {
        let own = u64::from(self.by_row.remove(&row).is_some());
        let units = &self.units;
        let before = self.by_loop.len();
        self.by_loop.retain(|_, u| units[*u as usize].row != row);
        own + (before - self.by_loop.len()) as u64
    }

    pub fn get(&self, unit: u32) -> Option<&Unit> {
        self.units.get(unit as usize)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Unit> {
        self.units.iter()
    }

    /// Each unit's accepts since the previous call, in unit order.
    pub fn take_deltas(&mut self) -> Vec<(u32, u64)> {
        self.units
            .iter_mut()
            .map(|u| {
                let delta = u.accepts - u.accepts_mark;
                u.accepts_mark = u.accepts;
                (u.row, delta)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L1: (u64, u16) = (0x1000, 80);
    const L2: (u64, u16) = (0x2000, 80);
    const HTTPS: (u64, u16) = (0x3000, 443);

    #[test]
    fn a_task_outside_a_loop_is_its_own_unit() {
        let mut u = Units::default();
        assert_eq!(u.on_accept(0, 10, L1, false), (0, true));
        assert_eq!(u.on_accept(0, 10, L2, false), (0, false));
        assert_eq!(u.on_accept(1, 10, L1, false), (1, true));
        assert_eq!(u.get(0).map(|x| (x.accepts, x.threads)), Some((2, 1)));
        assert_eq!(u.retire(0), 1);
        assert_eq!(u.retire(0), 0);
    }

    #[test]
    fn a_loop_is_one_unit_per_listener_whichever_thread_accepts() {
        let mut u = Units::default();
        assert_eq!(u.on_accept(0, 10, L1, true), (0, true));
        assert_eq!(u.on_accept(1, 10, L1, true), (0, false));
        assert_eq!(u.on_accept(0, 10, L1, true), (0, false));
        // Its own SO_REUSEPORT socket: another loop.
        assert_eq!(u.on_accept(1, 10, L2, true), (1, true));
        // Another port's first socket: the first loop's.
        assert_eq!(u.on_accept(1, 10, HTTPS, true), (0, false));
        let first = u.get(0).expect("unit");
        assert_eq!((first.row, first.accepts, first.threads), (0, 4, 2));
        assert!(first.is_loop);
        assert_eq!(u.take_deltas(), vec![(0, 4), (1, 1)]);
        assert_eq!(u.take_deltas(), vec![(0, 0), (1, 0)]);
        // Another thread's exit ends nothing; the naming thread's ends its loop.
        assert_eq!(u.retire(0), 1);
        assert_eq!(u.on_accept(1, 10, L1, true), (2, true));
        assert_eq!(u.retire(1), 2);
    }
}
