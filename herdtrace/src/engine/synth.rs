//! Synthetic event streams, for tests, fixtures and benchmarks.
//!
//! [`StreamBuilder`] stamps each event with a per-CPU sequence number and a
//! clock that moves forward by `step_ns` per event, so tests only spell out
//! what matters to them.
use herdtrace_common::{
    RawEvent, AF_INET, EV_ACCEPT_RET, EV_ARRIVAL, EV_EPOLL_CB, EV_POLL_RET, EV_SEND_EVENTS,
    EV_TASK_EXIT, EV_TASK_NEW, EV_WAKE, FLAG_WAKE_CASCADE,
};

use crate::events::comm_bytes;

/// A task as seen by the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthTask {
    pub pid: u32,
    pub tid: u32,
    pub comm: &'static str,
}

impl SynthTask {
    /// A single-threaded process (tid == pid).
    pub const fn process(pid: u32, comm: &'static str) -> SynthTask {
        SynthTask {
            pid,
            tid: pid,
            comm,
        }
    }

    /// A thread `tid` of process `pid`.
    pub const fn thread(pid: u32, tid: u32, comm: &'static str) -> SynthTask {
        SynthTask { pid, tid, comm }
    }
}

/// Local port of synthetic arrivals.
pub const SYNTH_PORT: u16 = 8080;

/// Builds an event stream in ring-buffer order.
#[derive(Debug, Clone)]
pub struct StreamBuilder {
    events: Vec<RawEvent>,
    seq: Vec<u64>,
    ts_ns: u64,
    step_ns: u64,
}

impl Default for StreamBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamBuilder {
    /// Clock starts at 1 s and advances 1 µs per event.
    pub fn new() -> StreamBuilder {
        StreamBuilder {
            events: Vec::new(),
            seq: Vec::new(),
            ts_ns: 1_000_000_000,
            step_ns: 1_000,
        }
    }

    /// Sets the clock of the next event.
    pub fn at(&mut self, ts_ns: u64) -> &mut Self {
        self.ts_ns = ts_ns;
        self
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, ns: u64) -> &mut Self {
        self.ts_ns += ns;
        self
    }

    /// Per-event clock step.
    pub fn step(&mut self, ns: u64) -> &mut Self {
        self.step_ns = ns;
        self
    }

    /// Current clock.
    pub fn now(&self) -> u64 {
        self.ts_ns
    }

    /// Simulates `n` events lost on `cpu` (a seq gap).
    pub fn lose(&mut self, cpu: u32, n: u64) -> &mut Self {
        let s = self.seq_slot(cpu);
        *s += n;
        self
    }

    /// Appends an event as is (no seq or clock stamping).
    pub fn raw(&mut self, ev: RawEvent) -> &mut Self {
        self.events.push(ev);
        self
    }

    fn seq_slot(&mut self, cpu: u32) -> &mut u64 {
        let i = cpu as usize;
        if self.seq.len() <= i {
            self.seq.resize(i + 1, 0);
        }
        &mut self.seq[i]
    }

    fn emit(&mut self, kind: u32, cpu: u32, fill: impl FnOnce(&mut RawEvent)) -> &mut Self {
        let seq = {
            let s = self.seq_slot(cpu);
            *s += 1;
            *s
        };
        let mut ev = RawEvent {
            kind,
            cpu,
            ts_ns: self.ts_ns,
            seq,
            ..RawEvent::default()
        };
        fill(&mut ev);
        self.ts_ns += self.step_ns;
        self.events.push(ev);
        self
    }

    fn task_fields(ev: &mut RawEvent, t: SynthTask) {
        ev.tgid = t.pid;
        ev.tid = t.tid;
        ev.comm = comm_bytes(t.comm);
    }

    /// A connection from 127.0.0.1:(40000 + chain % 20000) arrives on `listener`.
    pub fn arrival(&mut self, cpu: u32, chain: u64, listener: u64, child: u64) -> &mut Self {
        self.arrival_in(cpu, chain, listener, child, 0)
    }

    /// An arrival on a listener in network namespace `netns` (inode number).
    pub fn arrival_in(
        &mut self,
        cpu: u32,
        chain: u64,
        listener: u64,
        child: u64,
        netns: u32,
    ) -> &mut Self {
        self.emit(EV_ARRIVAL, cpu, |ev| {
            ev.chain = chain;
            ev.sk = listener;
            ev.child = child;
            ev.local_port = SYNTH_PORT;
            ev.family = AF_INET;
            ev.peer_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
            ev.peer_port = 40_000 + (chain % 20_000) as u16;
            ev.aux = u64::from(netns);
        })
    }

    /// `task` is woken inside `chain`.
    pub fn wake(&mut self, cpu: u32, chain: u64, task: SynthTask) -> &mut Self {
        self.emit(EV_WAKE, cpu, |ev| {
            ev.chain = chain;
            Self::task_fields(ev, task);
        })
    }

    /// `task` is woken by a task of `chain` before that one returned to user
    /// space (shared level-triggered epoll).
    pub fn cascade_wake(&mut self, cpu: u32, chain: u64, task: SynthTask) -> &mut Self {
        self.emit(EV_WAKE, cpu, |ev| {
            ev.chain = chain;
            ev.flags = FLAG_WAKE_CASCADE;
            Self::task_fields(ev, task);
        })
    }

    /// `ep_poll_callback` for epoll instance `ep` inside `chain`.
    pub fn epoll_cb(&mut self, cpu: u32, chain: u64, ep: u64) -> &mut Self {
        self.emit(EV_EPOLL_CB, cpu, |ev| {
            ev.chain = chain;
            ev.aux = ep;
        })
    }

    /// `epoll_wait` returned `ret` in `task`.
    pub fn poll_ret(&mut self, cpu: u32, task: SynthTask, ret: i64) -> &mut Self {
        self.emit(EV_POLL_RET, cpu, |ev| {
            Self::task_fields(ev, task);
            ev.ret = ret;
        })
    }

    /// `ep_send_events` returned `ret` in `task`.
    pub fn send_events(&mut self, cpu: u32, task: SynthTask, ret: i64) -> &mut Self {
        self.emit(EV_SEND_EVENTS, cpu, |ev| {
            Self::task_fields(ev, task);
            ev.ret = ret;
        })
    }

    /// `task` accepted `child` from `listener` (ret = fd 7).
    pub fn accept(&mut self, cpu: u32, task: SynthTask, listener: u64, child: u64) -> &mut Self {
        self.emit(EV_ACCEPT_RET, cpu, |ev| {
            Self::task_fields(ev, task);
            ev.ret = 7;
            ev.sk = listener;
            ev.child = child;
            ev.local_port = SYNTH_PORT;
        })
    }

    /// `task`'s accept on `listener` failed with `-errno`.
    pub fn accept_err(
        &mut self,
        cpu: u32,
        task: SynthTask,
        listener: u64,
        errno: i32,
    ) -> &mut Self {
        self.emit(EV_ACCEPT_RET, cpu, |ev| {
            Self::task_fields(ev, task);
            ev.ret = -i64::from(errno);
            ev.sk = listener;
            ev.local_port = SYNTH_PORT;
        })
    }

    /// `task`'s accept on `listener` returned EAGAIN.
    pub fn eagain(&mut self, cpu: u32, task: SynthTask, listener: u64) -> &mut Self {
        self.accept_err(cpu, task, listener, libc::EAGAIN)
    }

    /// EAGAIN on a listener in network namespace `netns`.
    pub fn eagain_in(&mut self, cpu: u32, task: SynthTask, listener: u64, netns: u32) -> &mut Self {
        self.emit(EV_ACCEPT_RET, cpu, |ev| {
            Self::task_fields(ev, task);
            ev.ret = -i64::from(libc::EAGAIN);
            ev.sk = listener;
            ev.local_port = SYNTH_PORT;
            ev.aux = u64::from(netns);
        })
    }

    /// `task` was created by `parent_pid`.
    pub fn task_new(&mut self, cpu: u32, task: SynthTask, parent_pid: u32) -> &mut Self {
        self.emit(EV_TASK_NEW, cpu, |ev| {
            Self::task_fields(ev, task);
            ev.aux = u64::from(parent_pid);
        })
    }

    /// `task` exited.
    pub fn task_exit(&mut self, cpu: u32, task: SynthTask) -> &mut Self {
        self.emit(EV_TASK_EXIT, cpu, |ev| Self::task_fields(ev, task))
    }

    /// The events so far (the builder is left empty, its clock and seqs kept).
    pub fn take(&mut self) -> Vec<RawEvent> {
        std::mem::take(&mut self.events)
    }
}

/// Listener address used by [`herd_stream`].
pub const HERD_LISTENER: u64 = 0xffff_8880_0100_0000;

/// `conns` connections to `workers` single-threaded workers, each with its
/// own epoll (the classic herd): every connection wakes every worker, worker
/// `i % workers` wins, the others get EAGAIN. About `4 * workers + 2`
/// events per connection, spread over 2 CPUs.
pub fn herd_stream(conns: u64, workers: u32) -> Vec<RawEvent> {
    let workers: Vec<SynthTask> = (0..workers.max(1))
        .map(|i| SynthTask::process(1000 + i, "worker"))
        .collect();
    let mut b = StreamBuilder::new();
    for i in 0..conns {
        let chain = (1u64 << 48) | i;
        let child = 0xffff_8881_0000_0000 + (i % 4096) * 0x800;
        let cpu = (i % 2) as u32;
        b.arrival(cpu, chain, HERD_LISTENER, child);
        for (k, w) in workers.iter().enumerate() {
            b.epoll_cb(cpu, chain, 0xffff_8882_0000_0000 + k as u64 * 0x100);
            b.wake(cpu, chain, *w);
        }
        let winner = (i % workers.len() as u64) as usize;
        for (k, w) in workers.iter().enumerate() {
            let wcpu = 1 - cpu;
            b.poll_ret(wcpu, *w, 1);
            if k == winner {
                b.accept(wcpu, *w, HERD_LISTENER, child);
            } else {
                b.eagain(wcpu, *w, HERD_LISTENER);
            }
        }
    }
    b.take()
}
