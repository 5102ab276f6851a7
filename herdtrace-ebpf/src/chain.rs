//! The per-CPU wake chain: opened when a connection becomes ready on a
//! listening socket, it tags the wakeups nested in that call with its id.
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};
use herdtrace_common::{ChainState, RawEvent, EV_ARRIVAL, EV_EPOLL_CB, EV_WAKE, FLAG_WAKE_CASCADE};

use crate::{
    emit::{bump, new_event, send},
    kread::{accept_queue_tail, sk_peer},
    maps::{get, ACTIVE, CHAIN, LISTENERS, LISTEN_PORTS, TRACED, TRACED_EPS},
};

/// `open` values: a chain known to be a listener's, or an outermost
/// `__wake_up_common` not yet known to concern a listener (kprobe/fentry).
pub const OPEN_LISTENER: u32 = 1;
pub const OPEN_PROVISIONAL: u32 = 2;

#[inline(always)]
pub fn state() -> Option<&'static mut ChainState> {
    CHAIN.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn port_allowed(port: u16) -> bool {
    let filter = get::PORT_FILTER();
    filter == 0 || filter == port as u32
}

/// Opens a listener chain for `listener` (may be 0 when only the child is
/// known) whose new connection is `child`.
#[inline(always)]
pub fn open(c: &mut ChainState, listener: u64, child: u64, local_port: u16, flags: u16) {
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    c.id = (cpu << 48) | (bump(1) & 0xffff_ffff_ffff);
    c.listener = listener;
    c.child = child;
    c.opened_ns = unsafe { bpf_ktime_get_ns() };
    c.open = OPEN_LISTENER;
    c.emitted = 0;
    c.local_port = local_port;
    c._pad = flags;
    let (family, addr, port) = sk_peer(child);
    c.family = family;
    c.peer_addr = addr;
    c.peer_port = port;
    // Only listeners of traced processes (seeded from /proc, learned at
    // accept): an unrelated listener's arrival must not claim the wakeups
    // that happen to follow it on this CPU.
    let known = unsafe { LISTENERS.get(listener).is_some() }
        || unsafe { LISTEN_PORTS.get(local_port as u32).is_some() };
    if known {
        emit_arrival(c);
    } else {
        c.open = 0;
    }
}

/// Opens a chain from a listening socket on local `port`: finds the child
/// just queued on its accept queue.
#[inline(always)]
pub fn open_from_listener(c: &mut ChainState, listener: u64, port: u16) -> bool {
    if !port_allowed(port) {
        c.open = 0;
        return false;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let child = if c.est_child != 0
        && c.est_port == port
        && now.wrapping_sub(c.est_ns) <= get::CHAIN_WINDOW_NS()
    {
        c.est_child
    } else {
        accept_queue_tail(listener)
    };
    c.est_child = 0;
    open(c, listener, child, port, 0);
    true
}

#[inline(always)]
pub fn emit_arrival(c: &mut ChainState) {
    if c.emitted != 0 {
        return;
    }
    c.emitted = 1;
    let mut ev = new_event(EV_ARRIVAL);
    ev.chain = c.id;
    ev.ts_ns = c.opened_ns;
    ev.sk = c.listener;
    ev.child = c.child;
    ev.local_port = c.local_port;
    ev.peer_addr = c.peer_addr;
    ev.peer_port = c.peer_port;
    ev.family = c.family;
    ev.flags = c._pad;
    send(&mut ev);
}

/// Is a listener chain open on this CPU and still within its window?
#[inline(always)]
pub fn current(check_window: bool) -> Option<&'static mut ChainState> {
    let c = state()?;
    if c.open != OPEN_LISTENER {
        return None;
    }
    if check_window {
        let now = unsafe { bpf_ktime_get_ns() };
        if now.wrapping_sub(c.opened_ns) > get::CHAIN_WINDOW_NS() {
            c.open = 0;
            return None;
        }
    }
    Some(c)
}

/// `sched_waking` of task `tid`: report it if it is traced and inside a chain.
#[inline(always)]
pub fn on_waking(tid: u32, comm: impl FnOnce() -> [u8; 16], check_window: bool) {
    let Some(c) = current(check_window) else {
        on_cascade_waking(tid, comm);
        return;
    };
    let Some(tgid) = (unsafe { TRACED.get(tid) }).copied() else {
        return;
    };
    emit_arrival(c);
    set_active(tid, c.id);
    let mut ev: RawEvent = new_event(EV_WAKE);
    ev.chain = c.id;
    ev.sk = c.listener;
    ev.tid = tid;
    ev.tgid = tgid;
    ev.aux = c.cur_ep;
    ev.comm = comm();
    send(&mut ev);
}

/// Task `tid` was woken by `chain`. Its entry is rewritten in place when it
/// has one (lock-free); only its first wakeup inserts.
#[inline(always)]
fn set_active(tid: u32, chain: u64) {
    match ACTIVE.get_ptr_mut(tid) {
        Some(p) => unsafe { *p = chain },
        None => {
            let _ = ACTIVE.insert(tid, chain, 0);
        }
    }
}

/// Task `tid` is back in user space: wakeups it makes no longer belong to a
/// chain.
#[inline(always)]
pub fn clear_active(tid: u32) {
    if let Some(p) = ACTIVE.get_ptr_mut(tid) {
        unsafe {
            if *p != 0 {
                *p = 0;
            }
        }
    }
}

/// A wakeup outside any chain, made by a task that a chain woke and that has
/// not returned to user space yet.
#[inline(always)]
fn on_cascade_waking(tid: u32, comm: impl FnOnce() -> [u8; 16]) {
    let waker = bpf_get_current_pid_tgid() as u32;
    let chain = (unsafe { ACTIVE.get(waker) }).copied().unwrap_or(0);
    if chain == 0 {
        return;
    }
    let Some(tgid) = (unsafe { TRACED.get(tid) }).copied() else {
        return;
    };
    set_active(tid, chain);
    let mut ev: RawEvent = new_event(EV_WAKE);
    ev.chain = chain;
    ev.tid = tid;
    ev.tgid = tgid;
    ev.flags = FLAG_WAKE_CASCADE;
    ev.aux = waker as u64;
    ev.comm = comm();
    send(&mut ev);
}

/// `ep_poll_callback` for epoll instance `ep` on listener `sk` inside a chain.
#[inline(always)]
pub fn on_epoll_callback(c: &mut ChainState, ep: u64) {
    c.cur_ep = ep;
    if unsafe { TRACED_EPS.get(ep).is_none() } {
        return;
    }
    emit_arrival(c);
    let mut ev = new_event(EV_EPOLL_CB);
    ev.chain = c.id;
    ev.sk = c.listener;
    ev.aux = ep;
    send(&mut ev);
}
