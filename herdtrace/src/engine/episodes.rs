//! Storage of open episodes: a slab whose slots (and their vectors' capacity)
//! are reused, so the steady state allocates nothing, plus two intrusive
//! doubly-linked lists: all open episodes in arrival order (oldest first, for
//! timeouts and eviction) and, per listener, the same order (newest for EAGAIN
//! attribution, oldest unaccepted for FIFO accept matching).
use std::net::SocketAddr;
use std::ops::{Index, IndexMut};

use rustc_hash::FxHashMap;

pub(super) const NIL: u32 = u32::MAX;

/// A handle that goes stale when its slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EpRef {
    pub slot: u32,
    pub gen: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WakeState {
    /// Woken, not yet back in user space.
    Pending,
    /// Back in user space with work; its accept attempt may still come.
    Returned,
    /// Outcome final.
    Settled,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Woken {
    pub tid: u32,
    /// Stats row of the woken task identity.
    pub row: u32,
    pub state: WakeState,
}

#[derive(Debug, Default)]
pub(super) struct Episode {
    pub gen: u32,
    pub open: bool,
    /// Complete and waiting in the settle-grace queue.
    pub queued: bool,
    pub chain: u64,
    pub listener: u64,
    pub child: u64,
    pub ts_ns: u64,
    pub port: u16,
    pub peer: Option<SocketAddr>,
    pub loss_epoch: u64,
    /// The engine's skip epoch when the episode opened (see
    /// `Engine::note_skipped`).
    pub skip_epoch: u64,
    /// Woken in cascade in the window after a skip of a task's syscall
    /// return (see `AfterSkip::TaskCascades`): possibly by a stale mark.
    pub cascade_after_skip: bool,
    /// Network namespace of the listener (0: unknown).
    pub netns: u32,
    pub accepted_row: Option<u32>,
    pub accept_ts: u64,
    pub woken: Vec<Woken>,
    pub epolls: Vec<u64>,
    pub returned: u32,
    pub spurious: u32,
    pub eagain: u32,
    pub eagain_losers: u32,
    prev: u32,
    next: u32,
    lprev: u32,
    lnext: u32,
}

impl Episode {
    /// Every woken task has its outcome and the connection was accepted.
    pub fn is_complete(&self) -> bool {
        self.accepted_row.is_some() && self.woken.iter().all(|w| w.state == WakeState::Settled)
    }
}

#[derive(Debug)]
pub(super) struct Episodes {
    slots: Vec<Episode>,
    free: Vec<u32>,
    open: usize,
    head: u32,
    tail: u32,
    /// Listener -> (oldest, newest) open episode.
    listeners: FxHashMap<u64, (u32, u32)>,
}

impl Default for Episodes {
    fn default() -> Self {
        Episodes {
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            head: NIL,
            tail: NIL,
            listeners: FxHashMap::default(),
        }
    }
}

impl Index<u32> for Episodes {
    type Output = Episode;
    fn index(&self, slot: u32) -> &Episode {
        &self.slots[slot as usize]
    }
}

impl IndexMut<u32> for Episodes {
    fn index_mut(&mut self, slot: u32) -> &mut Episode {
        &mut self.slots[slot as usize]
    }
}

impl Episodes {
    pub fn len(&self) -> usize {
        self.open
    }

    pub fn oldest(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    pub fn ep_ref(&self, slot: u32) -> EpRef {
        EpRef {
            slot,
            gen: self[slot].gen,
        }
    }

    /// The handle still names the open episode it was taken from.
    pub fn valid(&self, r: EpRef) -> bool {
        self.slots
            .get(r.slot as usize)
            .is_some_and(|e| e.open && e.gen == r.gen)
    }

    /// Opens an episode on `listener`, newest of all; `init` fills the rest
    /// (every counter starts at zero).
    pub fn open(&mut self, listener: u64, init: impl FnOnce(&mut Episode)) -> u32 {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Episode::default());
            (self.slots.len() - 1) as u32
        });
        let e = &mut self.slots[slot as usize];
        let (gen, woken, epolls) = (
            e.gen,
            std::mem::take(&mut e.woken),
            std::mem::take(&mut e.epolls),
        );
        *e = Episode {
            gen,
            open: true,
            listener,
            woken,
            epolls,
            ..Episode::default()
        };
        init(e);
        self.open += 1;
        self.link(slot);
        slot
    }

    /// Closes an episode; its handles go stale.
    pub fn close(&mut self, slot: u32) {
        self.unlink(slot);
        let e = &mut self[slot];
        e.open = false;
        e.queued = false;
        e.gen = e.gen.wrapping_add(1);
        e.woken.clear();
        e.epolls.clear();
        self.free.push(slot);
        self.open -= 1;
    }

    fn link(&mut self, slot: u32) {
        let (tail, listener) = (self.tail, self[slot].listener);
        self[slot].prev = tail;
        self[slot].next = NIL;
        if tail == NIL {
            self.head = slot;
        } else {
            self[tail].next = slot;
        }
        self.tail = slot;
        let lprev = match self.listeners.get_mut(&listener) {
            Some((_, ltail)) => std::mem::replace(ltail, slot),
            None => {
                self.listeners.insert(listener, (slot, slot));
                NIL
            }
        };
        if lprev != NIL {
            self[lprev].lnext = slot;
        }
        self[slot].lprev = lprev;
        self[slot].lnext = NIL;
    }

    fn unlink(&mut self, slot: u32) {
        let e = &self[slot];
        let (prev, next, lprev, lnext, listener) = (e.prev, e.next, e.lprev, e.lnext, e.listener);
        if prev == NIL {
            self.head = next;
        } else {
            self[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self[next].prev = prev;
        }
        if lprev != NIL {
            self[lprev].lnext = lnext;
        }
        if lnext != NIL {
            self[lnext].lprev = lprev;
        }
        if lprev == NIL && lnext == NIL {
            self.listeners.remove(&listener);
        } else if let Some((lhead, ltail)) = self.listeners.get_mut(&listener) {
            if *lhead == slot {
                *lhead = lnext;
            }
            if *ltail == slot {
                *ltail = lprev;
            }
        }
    }

    /// Newest open episode on a listener.
    pub fn newest_on(&self, listener: u64) -> Option<EpRef> {
        self.listeners
            .get(&listener)
            .map(|&(_, tail)| self.ep_ref(tail))
    }

    /// Oldest open episode on a listener not yet accepted (the accept queue is FIFO).
    pub fn oldest_unaccepted_on(&self, listener: u64) -> Option<EpRef> {
        let mut s = self.listeners.get(&listener)?.0;
        while s != NIL {
            if self[s].accepted_row.is_none() {
                return Some(self.ep_ref(s));
            }
            s = self[s].lnext;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(eps: &Episodes) -> Vec<u64> {
        let mut out = Vec::new();
        let mut s = eps.head;
        while s != NIL {
            out.push(eps[s].chain);
            s = eps[s].next;
        }
        out
    }

    fn on(eps: &Episodes, listener: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut s = eps.listeners.get(&listener).map_or(NIL, |l| l.0);
        while s != NIL {
            out.push(eps[s].chain);
            s = eps[s].lnext;
        }
        out
    }

    #[test]
    fn lists_follow_opens_and_closes_in_any_order() {
        let mut eps = Episodes::default();
        let slots: Vec<u32> = (0..5u64)
            .map(|c| eps.open(c % 2, |e| e.chain = c))
            .collect();
        assert_eq!(order(&eps), vec![0, 1, 2, 3, 4]);
        assert_eq!(on(&eps, 0), vec![0, 2, 4]);
        assert_eq!(on(&eps, 1), vec![1, 3]);
        eps.close(slots[2]); // middle
        eps.close(slots[0]); // head
        eps.close(slots[4]); // tail
        assert_eq!(order(&eps), vec![1, 3]);
        assert_eq!(on(&eps, 0), Vec::<u64>::new());
        assert!(
            !eps.listeners.contains_key(&0),
            "empty listener entries go away"
        );
        assert_eq!(eps.len(), 2);
        assert_eq!(eps.newest_on(1).map(|r| eps[r.slot].chain), Some(3));
        assert_eq!(eps.oldest().map(|s| eps[s].chain), Some(1));
    }

    #[test]
    fn reused_slots_invalidate_old_handles_and_start_clean() {
        let mut eps = Episodes::default();
        let s = eps.open(7, |e| {
            e.chain = 1;
            e.eagain = 3;
            e.epolls.push(9);
        });
        let old = eps.ep_ref(s);
        eps.close(s);
        assert!(!eps.valid(old));
        let s2 = eps.open(7, |e| e.chain = 2);
        assert_eq!(s2, s, "the slot is reused");
        assert!(!eps.valid(old), "the old handle stays stale");
        assert!(eps.valid(eps.ep_ref(s2)));
        assert_eq!((eps[s2].eagain, eps[s2].epolls.len()), (0, 0));
        assert!(eps[s2].epolls.capacity() >= 1, "capacity kept");
    }

    #[test]
    fn fifo_match_skips_accepted_episodes() {
        let mut eps = Episodes::default();
        let a = eps.open(5, |e| e.chain = 1);
        eps.open(5, |e| e.chain = 2);
        eps[a].accepted_row = Some(0);
        assert_eq!(
            eps.oldest_unaccepted_on(5).map(|r| eps[r.slot].chain),
            Some(2)
        );
        assert_eq!(eps.oldest_unaccepted_on(6), None);
    }
}
