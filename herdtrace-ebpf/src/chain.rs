//! The per-CPU wake chain: opened when a connection becomes ready on a
//! listening socket of a traced task, it tags the wakeups nested in that
//! call with its id.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns};
use aya_log_ebpf::warn;
use herdtrace_common::{
    traced_slot, ChainState, ListenKey, TaskState, EV_ARRIVAL, EV_EPOLL_CB, EV_WAKE,
    FLAG_AFTER_POLL, FLAG_AFTER_POLL_WORK, FLAG_WAKE_CASCADE, MAP_LISTENERS, POLL_HELD,
    POLL_HELD_WORK, POLL_WAKE_REPORTED,
};

use crate::{
    config::conf,
    emit::{atomic_add, emit, emit_at, next_chain, put},
    kread::{accept_queue_tail, listen_key, sk_head, sk_peer, SkHead},
    maps::{CHAIN, LISTENERS, LISTEN_ADDRS, TIMER_CB, TRACED, TRACED_EPS, TRACED_FILTER},
};

/// `open` values: a chain known to be a listener's, or a `__wake_up_common`
/// not yet known to concern a listener (kprobe/fentry).
pub const OPEN_LISTENER: u32 = 1;
pub const OPEN_PROVISIONAL: u32 = 2;

#[inline(always)]
pub fn state() -> Option<&'static mut ChainState> {
    CHAIN.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn port_allowed(port: u16) -> bool {
    let filter = conf!(port_filter);
    filter == 0 || filter == port as u32
}

/// Ends the chain: wakeups that follow on this CPU belong to no connection.
#[inline(always)]
pub fn close(c: &mut ChainState) {
    c.open = 0;
    c.cur_ep = 0;
}

/// Is a listener with this identity (or the wildcard address on the same
/// port) one of the traced tasks'?
#[inline(always)]
pub fn addr_known(key: &ListenKey) -> bool {
    if unsafe { LISTEN_ADDRS.get(key) }.is_some() {
        return true;
    }
    let wildcard = ListenKey {
        addr: [0; 16],
        ..*key
    };
    unsafe { LISTEN_ADDRS.get(&wildcard) }.is_some()
}

/// A `LISTENERS` value: the listener's local port and network namespace,
/// read once, so a connection's arrival reads neither.
#[inline(always)]
pub fn listener_value(port: u16, netns: u32) -> u64 {
    ((netns as u64) << 32) | port as u64
}

/// `(port, netns)` of a `LISTENERS` value.
#[inline(always)]
pub fn listener_facts(value: u64) -> (u16, u32) {
    (value as u16, (value >> 32) as u32)
}

/// Is listening socket `sk` one of the traced tasks'? Returns its port and
/// namespace. Known sockets are a lock-free lookup; one seen for the first
/// time (`head` reads it) is checked by namespace, address and port (never by
/// port alone: another container may listen on the same port) and then
/// remembered.
#[inline(always)]
pub fn known_listener(sk: u64, head: impl FnOnce() -> SkHead) -> Option<(u16, u32)> {
    if let Some(known) = unsafe { LISTENERS.get(sk) } {
        return Some(listener_facts(*known));
    }
    let head = head();
    let key = listen_key(sk, &head);
    if !addr_known(&key) {
        return None;
    }
    Some(remember_listener(sk, &head, &key))
}

/// Stores listener `sk`'s port and namespace in `LISTENERS` (`key` is its
/// identity, read from `head`) and returns them.
#[inline(always)]
pub fn remember_listener(sk: u64, head: &SkHead, key: &ListenKey) -> (u16, u32) {
    put(
        &LISTENERS,
        &sk,
        listener_value(head.num, key.netns),
        MAP_LISTENERS,
    );
    (head.num, key.netns)
}

/// A new chain id: the CPU in the top 16 bits, a per-CPU counter below.
#[inline(always)]
pub fn new_chain_id() -> u64 {
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    (cpu << 48) | (next_chain() & 0xffff_ffff_ffff)
}

/// Opens a listener chain for `listener` (0 when only the child is known)
/// whose new connection is `child`, and reports the arrival.
#[inline(always)]
pub fn open(
    c: &mut ChainState,
    listener: u64,
    child: u64,
    local_port: u16,
    flags: u16,
    netns: u32,
) {
    c.id = new_chain_id();
    c.opener = bpf_get_current_pid_tgid();
    c.listener = listener;
    c.child = child;
    c.opened_ns = now();
    c.open = OPEN_LISTENER;
    c.emitted = 0;
    c.local_port = local_port;
    c.arrival_flags = flags;
    c.netns = netns;
    let (family, addr, port) = sk_peer(child);
    c.family = family;
    c.peer_addr = addr;
    c.peer_port = port;
    emit_arrival(c);
}

/// Opens a chain for a wakeup of listening socket `sk` if it is a traced
/// task's (`head` reads the socket, needed only the first time); the new
/// connection is the child whose handshake just completed on this CPU for
/// that listener, else the accept queue's tail. When the kprobe/fentry
/// backends already reported that arrival at the accept queue, the chain
/// takes its id and nothing is reported again.
#[inline(always)]
pub fn open_from_listener(c: &mut ChainState, sk: u64, head: impl FnOnce() -> SkHead) -> bool {
    // Not bounded by time: the listener's wakeup follows its queue-add in the
    // same softirq on this CPU, however long that takes (a guest's clock
    // jumps when its vCPU is descheduled), and the next queue-add here
    // replaces these fields.
    if c.est_chain != 0 && c.est_listener == sk {
        c.id = c.est_chain;
        c.opener = bpf_get_current_pid_tgid();
        c.listener = sk;
        c.child = c.est_child;
        c.opened_ns = c.est_ns;
        c.open = OPEN_LISTENER;
        c.emitted = 1;
        c.est_chain = 0;
        c.est_child = 0;
        c.est_listener = 0;
        return true;
    }
    let Some((port, netns)) = known_listener(sk, head) else {
        return false;
    };
    if !port_allowed(port) {
        return false;
    }
    // The child that completed its handshake last on this CPU is this
    // wakeup's: the listener's wakeup follows it in the same softirq, with
    // nothing else in between, however long that takes.
    let same = if c.est_listener != 0 {
        c.est_listener == sk
    } else {
        c.est_port == port
    };
    let child = if c.est_child != 0 && same {
        c.est_child
    } else {
        accept_queue_tail(sk)
    };
    c.est_child = 0;
    c.est_listener = 0;
    c.est_chain = 0;
    open(c, sk, child, port, 0, netns);
    true
}

/// A connection `child` joined traced listener `sk`'s accept queue (kprobe/
/// fentry backends): its arrival is reported now, under a chain id that the
/// listener's wakeup on this CPU, if any, then continues. (`est_port` is
/// not needed: `est_listener` names the listener.)
#[inline(always)]
pub fn arrival_at_queue(c: &mut ChainState, sk: u64, child: u64, wait: u64) {
    c.est_child = child;
    c.est_listener = sk;
    c.est_ns = now();
    c.est_port = 0;
    c.est_wait = wait;
    c.est_chain = 0;
    let Some((port, netns)) = known_listener(sk, || sk_head(sk)) else {
        return;
    };
    if !port_allowed(port) {
        return;
    }
    let id = new_chain_id();
    c.est_chain = id;
    let (family, addr, peer_port) = sk_peer(child);
    emit_at(EV_ARRIVAL, c.est_ns, |ev| {
        ev.chain = id;
        ev.sk = sk;
        ev.child = child;
        ev.local_port = port;
        ev.peer_addr = addr;
        ev.peer_port = peer_port;
        ev.family = family;
        ev.aux = netns as u64;
    });
}

#[inline(always)]
pub fn emit_arrival(c: &mut ChainState) {
    if c.emitted != 0 {
        return;
    }
    c.emitted = 1;
    emit_at(EV_ARRIVAL, c.opened_ns, |ev| {
        ev.chain = c.id;
        ev.sk = c.listener;
        ev.child = c.child;
        ev.local_port = c.local_port;
        ev.peer_addr = c.peer_addr;
        ev.peer_port = c.peer_port;
        ev.family = c.family;
        ev.flags = c.arrival_flags;
        ev.aux = c.netns as u64;
    });
}

/// The listener chain open on this CPU. A kprobe/fentry chain ends exactly
/// when its call returns. A tracepoint-backend chain (no
/// `__wake_up_common` depth) ends with its softirq (`softirq_exit`), and
/// is only ever continued by the task it opened in (a softirq runs in the
/// context it interrupted: another task here means it ended). It is not
/// bounded by time unless `softirq_exit` is missing: a guest's clock jumps
/// while its vCPU waits, and a busy host's softirq can take milliseconds.
#[inline(always)]
pub fn current() -> Option<&'static mut ChainState> {
    let c = state()?;
    stale_depth_of_another_task(c);
    if c.open != OPEN_LISTENER {
        return None;
    }
    if c.depth == 0 {
        let window = conf!(chain_window_ns);
        if bpf_get_current_pid_tgid() != c.opener
            || (window != 0 && now().wrapping_sub(c.opened_ns) > window)
        {
            close(c);
            return None;
        }
    }
    Some(c)
}

/// A `__wake_up_common` depth older than this was left by a return probe
/// that did not run (kretprobe instances can run out): reset. Long, so a
/// real chain is never cut (a guest's clock jumps while its vCPU waits).
pub const STALE_DEPTH_NS: u64 = 1_000_000_000;

/// Called where no `__wake_up_common` can be running on this CPU: a
/// connection joining an accept queue, a traced task entering `accept` or
/// installing a file (process context). Wait-queue locks are taken with
/// interrupts off, so nothing else runs on a CPU inside a wakeup call; a
/// depth or open chain seen here was left by a return probe that did not
/// run (a kretprobe or fexit the kernel skipped). Without this reset every
/// later wakeup on this CPU would join that stale chain until
/// [`STALE_DEPTH_NS`] passed (seen on 5.10 under load: a second of
/// connections with their wakeups given to an earlier one).
#[inline(always)]
pub fn outside_wakeups(c: &mut ChainState) {
    if c.depth != 0 {
        warn!(
            &(),
            "__wake_up_common depth {} outside any wakeup (a return probe did not run): reset",
            c.depth
        );
        c.depth = 0;
        c.open_depth = 0;
    }
    if c.open != 0 {
        close(c);
    }
}

/// At a `__wake_up_common` entry at time `t`: a depth already on this CPU
/// that no running call can have made was left by a return probe that did
/// not run, and is reset with its chain, so later wakeups do not join a
/// connection's chain that ended long before: one older than
/// [`STALE_DEPTH_NS`], or one begun in another task's context (see
/// [`stale_depth_of_another_task`]).
#[inline(always)]
pub fn reset_stale_depth(c: &mut ChainState, t: u64) {
    if c.depth != 0 && t.wrapping_sub(c.opened_ns) > STALE_DEPTH_NS {
        warn!(
            &(),
            "__wake_up_common depth {} left by a return probe that did not run: reset", c.depth
        );
        drop_depth(c);
    }
    stale_depth_of_another_task(c);
}

/// A `__wake_up_common` depth on this CPU whose outermost call began in
/// another task's context was left by a return probe that did not run: a
/// wakeup call holds its wait-queue lock, so nothing switches tasks inside
/// it, and a call nested in it (or an interrupt's, on top) runs with the
/// same current task. Reset, so a later wakeup from process context (a
/// worker's epoll re-poll) does not join a connection's chain that ended
/// long before (seen on 5.10, where kretprobe instances are one per CPU
/// and a nested wakeup takes two: 40 ms after its chain opened).
#[inline(always)]
pub fn stale_depth_of_another_task(c: &mut ChainState) {
    if c.depth != 0 && bpf_get_current_pid_tgid() != c.opener {
        drop_depth(c);
    }
}

/// No wakeup call is in progress on this CPU after all: no depth, no chain.
#[inline(always)]
fn drop_depth(c: &mut ChainState) {
    c.depth = 0;
    c.open_depth = 0;
    close(c);
}

/// Longest a timer callback is taken to run: an exit the kernel skipped
/// (recursion guard) must not hide this CPU's wakes for longer.
const TIMER_CB_MAX_NS: u64 = 2_000_000;

/// A timer callback starts on this CPU (`hrtimer_expire_entry`,
/// `timer_expire_entry`).
#[inline(always)]
pub fn timer_callback_entry() {
    let (Some(depth), Some(start)) = (TIMER_CB.get_ptr_mut(0), TIMER_CB.get_ptr_mut(1)) else {
        return;
    };
    unsafe {
        let t = now();
        if *depth == 0 || t.wrapping_sub(*start) > TIMER_CB_MAX_NS {
            *depth = 0;
            *start = t;
        }
        *depth += 1;
    }
}

/// A timer callback ended on this CPU.
#[inline(always)]
pub fn timer_callback_exit() {
    if let Some(depth) = TIMER_CB.get_ptr_mut(0) {
        unsafe { *depth = (*depth).saturating_sub(1) };
    }
}

/// Is a timer callback running on this CPU? Its wakeups are timeouts, never
/// a connection's (a timer interrupt can arrive inside a chain's softirq, or
/// while a woken worker is still in the kernel).
#[inline(always)]
fn in_timer_callback() -> bool {
    let (Some(depth), Some(start)) = (TIMER_CB.get(0), TIMER_CB.get(1)) else {
        return false;
    };
    *depth != 0 && now().wrapping_sub(*start) <= TIMER_CB_MAX_NS
}

/// Task `tid`'s entry, if it is traced. Its filter slot first: most tasks
/// that wake or make a probed syscall on a machine are not traced.
#[inline(always)]
pub fn traced_task(tid: u32) -> Option<&'static mut TaskState> {
    if TRACED_FILTER
        .get(traced_slot(tid))
        .is_some_and(|count| *count == 0)
    {
        return None;
    }
    TRACED.get_ptr_mut(tid).map(|p| unsafe { &mut *p })
}

/// Counts task `tid` into its `TRACED_FILTER` slot (`delta` 1) before it
/// enters `TRACED`, or out of it (`u64::MAX`, i.e. minus one) after it left,
/// so the slot is never 0 while one of its tasks is traced.
#[inline(always)]
pub fn count_traced(tid: u32, delta: u64) {
    if let Some(p) = TRACED_FILTER.get_ptr_mut(traced_slot(tid)) {
        atomic_add(p, delta);
    }
}

/// `sched_waking` of task `tid`: report it if it is traced and inside a chain.
#[inline(always)]
pub fn on_waking(tid: u32, comm: impl FnOnce() -> [u8; 16]) {
    let Some(c) = current() else {
        on_cascade_waking(tid, comm);
        return;
    };
    let Some(task) = traced_task(tid) else {
        return;
    };
    if in_timer_callback() {
        clear_woken_by(task);
        return;
    }
    task.woken_by = c.id;
    let tgid = task.tgid;
    let held = wake_reported(task);
    emit(EV_WAKE, |ev| {
        ev.chain = c.id;
        ev.sk = c.listener;
        ev.tid = tid;
        ev.tgid = tgid;
        ev.flags = held;
        ev.aux = c.cur_ep;
        ev.comm = comm();
    });
}

/// The flags that report the task's held epoll return on the event being
/// sent about it (none if there is none), now reported; see `POLL_HELD`.
#[inline(always)]
pub fn take_held_poll(task: &mut TaskState) -> u16 {
    let poll = task.poll;
    if poll & POLL_HELD == 0 {
        return 0;
    }
    task.poll = poll & !(POLL_HELD | POLL_HELD_WORK);
    if poll & POLL_HELD_WORK != 0 {
        FLAG_AFTER_POLL | FLAG_AFTER_POLL_WORK
    } else {
        FLAG_AFTER_POLL
    }
}

/// A wake of the task is reported: its held epoll return goes with it, and
/// its next one is reported at once.
#[inline(always)]
fn wake_reported(task: &mut TaskState) -> u16 {
    let held = take_held_poll(task);
    task.poll |= POLL_WAKE_REPORTED;
    held
}

/// An event that ends the task's reported wake in user space (an epoll
/// return, `ep_send_events`, an accept) is being sent: with its held epoll
/// return, if any.
#[inline(always)]
pub fn wake_ended(task: &mut TaskState) -> u16 {
    let held = take_held_poll(task);
    task.poll &= !POLL_WAKE_REPORTED;
    held
}

/// The task is back in user space, or was woken by something that is no
/// connection's: wakeups it makes no longer belong to a chain.
#[inline(always)]
pub fn clear_woken_by(task: &mut TaskState) {
    if task.woken_by != 0 {
        task.woken_by = 0;
    }
}

/// A wakeup outside any chain, made by a task that a chain woke and that has
/// not returned to user space yet.
///
/// A wakeup that belongs to no chain clears the woken task's mark: a task
/// that a chain woke for nothing sleeps again inside epoll_wait still marked
/// (no syscall exit), and when something else wakes it later and it finds
/// work, the wakeup it passes on is that later cause's, not its old
/// connection's (seen on 7.x: such a cascade came 20 ms after its old
/// connection had closed, counted there by one tracer and an orphan for the
/// other).
#[inline(always)]
fn on_cascade_waking(tid: u32, comm: impl FnOnce() -> [u8; 16]) {
    // The woken task first: most wakeups of a machine are of untraced tasks,
    // and they then cost one lookup, not two.
    let Some(task) = traced_task(tid) else {
        return;
    };
    let waker = bpf_get_current_pid_tgid() as u32;
    let chain = traced_task(waker).map_or(0, |w| w.woken_by);
    if chain == 0 || in_timer_callback() {
        clear_woken_by(task);
        return;
    }
    task.woken_by = chain;
    let tgid = task.tgid;
    let held = wake_reported(task);
    emit(EV_WAKE, |ev| {
        ev.chain = chain;
        ev.tid = tid;
        ev.tgid = tgid;
        ev.flags = FLAG_WAKE_CASCADE | held;
        ev.aux = waker as u64;
        ev.comm = comm();
    });
}

/// `ep_poll_callback` for epoll instance `ep` inside a listener chain.
#[inline(always)]
pub fn on_epoll_callback(c: &mut ChainState, ep: u64) {
    c.cur_ep = ep;
    if unsafe { TRACED_EPS.get(ep).is_none() } {
        return;
    }
    let (chain, listener) = (c.id, c.listener);
    emit(EV_EPOLL_CB, |ev| {
        ev.chain = chain;
        ev.sk = listener;
        ev.aux = ep;
    });
}
