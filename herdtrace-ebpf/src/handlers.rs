//! What each probe does, written once on plain values so that the fentry,
//! kprobe and tracepoint programs in `main.rs` stay thin wrappers.
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid};
use aya_log_ebpf::warn;
use herdtrace_common::{
    RawEvent, EV_ACCEPT_RET, EV_POLL_RET, EV_SEND_EVENTS, EV_TASK_EXIT, EV_TASK_NEW,
    FLAG_ACCEPT_KERNEL, FLAG_ARRIVAL_SUBSTITUTE,
};

use crate::{
    chain::{self, OPEN_LISTENER, OPEN_PROVISIONAL},
    emit::{new_event, send},
    kread::{fd_to_sk, file_to_sk, read, sk_head, sk_local_port, TCP_LISTEN},
    maps::{
        get, AcceptCall, ACCEPT_ARGS, ACCEPT_SEEN, ACTIVE, LISTENERS, LISTENER_WQS, LISTEN_PORTS,
        TRACED, TRACED_EPS,
    },
};

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_RECV: i32 = 3;

/// (tid, tgid) of the current task if it is traced.
#[inline(always)]
fn traced_current() -> Option<(u32, u32)> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let tgid = unsafe { TRACED.get(tid) }.copied()?;
    Some((tid, tgid))
}

#[inline(always)]
fn task_event(kind: u32, tid: u32, tgid: u32) -> RawEvent {
    let mut ev = new_event(kind);
    ev.tid = tid;
    ev.tgid = tgid;
    ev
}

// ---- wake-chain openers ---------------------------------------------------

/// `sock:sk_data_ready` (6.6+): every data-ready ends the previous chain on
/// this CPU; one on a listening socket opens a new one.
#[inline(always)]
pub fn sk_data_ready(sk: u64) {
    let Some(c) = chain::state() else { return };
    c.open = 0;
    c.cur_ep = 0;
    let head = sk_head(sk);
    if head.state != TCP_LISTEN {
        return;
    }
    chain::open_from_listener(c, sk, head.num);
}

/// `sock:inet_sock_set_state`: a child socket going SYN_RECV -> ESTABLISHED
/// is immediately followed by the listener's `sk_data_ready` on the same CPU.
/// Always remembered as the child of that arrival; before 6.6 (no
/// `sock:sk_data_ready`) it also opens the chain.
#[inline(always)]
pub fn inet_sock_set_state(child: u64, old: i32, new: i32) {
    if old != TCP_SYN_RECV || new != TCP_ESTABLISHED {
        return;
    }
    let Some(c) = chain::state() else { return };
    let sport = sk_local_port(child);
    c.est_child = child;
    c.est_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    c.est_port = sport;
    if get::ISS_OPENS_CHAIN() == 0 {
        return;
    }
    c.open = 0;
    c.cur_ep = 0;
    if !chain::port_allowed(sport) {
        return;
    }
    chain::open(c, 0, child, sport, FLAG_ARRIVAL_SUBSTITUTE);
}

/// `irq:softirq_exit`: a tracepoint-backend chain ends with its softirq.
#[inline(always)]
pub fn softirq_exit() {
    let Some(c) = chain::state() else { return };
    if c.open != 0 && c.depth == 0 {
        c.open = 0;
        c.cur_ep = 0;
    }
}

/// `__wake_up_common` entry: the outermost call opens a chain, a listener
/// chain right away when the wait queue is a known listener's (blocking
/// accept), otherwise a provisional one that `ep_poll_callback` may promote.
#[inline(always)]
pub fn wake_up_common_entry(wq_head: u64) {
    let Some(c) = chain::state() else { return };
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    // A missed return probe must not leave the depth stuck forever.
    if c.depth != 0 && now.wrapping_sub(c.opened_ns) > get::CHAIN_WINDOW_NS() {
        c.depth = 0;
    }
    c.depth += 1;
    if c.depth != 1 {
        return;
    }
    c.cur_ep = 0;
    c.opened_ns = now;
    match unsafe { LISTENER_WQS.get(wq_head) }.copied() {
        Some(listener) => {
            chain::open_from_listener(c, listener, sk_local_port(listener));
        }
        None => {
            c.open = OPEN_PROVISIONAL;
            // A task asleep in accept() since before the probes were attached:
            // its listener's wait queue is not learned yet. The first wakeup
            // after a child of a traced port became ESTABLISHED on this CPU is
            // that listener's (the child's own state-change wakeup has no
            // sleepers), so the child names the connection.
            let port = c.est_port;
            if c.est_child != 0
                && now.wrapping_sub(c.est_ns) <= get::CHAIN_WINDOW_NS()
                && unsafe { LISTEN_PORTS.get(port as u32).is_some() }
                && chain::port_allowed(port)
            {
                let child = c.est_child;
                c.est_child = 0;
                chain::open(c, 0, child, port, 0);
            }
        }
    }
}

#[inline(always)]
pub fn wake_up_common_exit() {
    let Some(c) = chain::state() else { return };
    if c.depth > 0 {
        c.depth -= 1;
    }
    if c.depth == 0 {
        c.open = 0;
        c.cur_ep = 0;
    }
}

/// `ep_poll_callback(wait, ...)`: find the watched file; when it is a
/// listening socket this chain is a listener's.
#[inline(always)]
pub fn ep_poll_callback(wait: u64) {
    let Some(c) = chain::state() else { return };
    if c.open == 0 {
        return;
    }
    let entry = wait.wrapping_sub(get::OFF_EPPOLL_WAIT() as u64);
    let epi: u64 = read(entry, get::OFF_EPPOLL_BASE()).unwrap_or(0);
    let file: u64 = read(epi, get::OFF_EPI_FILE()).unwrap_or(0);
    let sk = file_to_sk(file);
    if sk == 0 {
        return;
    }
    let head = sk_head(sk);
    if head.state != TCP_LISTEN {
        return;
    }
    if c.open != OPEN_LISTENER && !chain::open_from_listener(c, sk, head.num) {
        return;
    }
    let ep: u64 = read(epi, get::OFF_EPI_EP()).unwrap_or(0);
    chain::on_epoll_callback(c, ep);
}

/// `sched:sched_waking` of thread `tid`; `comm` reads its name, only when
/// the wakeup is reported.
#[inline(always)]
pub fn sched_waking(tid: u32, comm: impl FnOnce() -> [u8; 16], check_window: bool) {
    chain::on_waking(tid, comm, check_window);
}

// ---- the woken task's side --------------------------------------------------

#[inline(always)]
pub fn poll_exit(ret: i64) {
    let Some((tid, tgid)) = traced_current() else {
        return;
    };
    chain::clear_active(tid);
    let mut ev = task_event(EV_POLL_RET, tid, tgid);
    ev.ret = ret;
    send(&mut ev);
}

#[inline(always)]
pub fn ep_send_events_entry(ep: u64) {
    // Known already after the first call: a lookup does not take the lock.
    if traced_current().is_some() && unsafe { TRACED_EPS.get(ep) }.is_none() {
        let _ = TRACED_EPS.insert(ep, 1, 0);
    }
}

#[inline(always)]
pub fn ep_send_events_exit(ret: i64) {
    let Some((tid, tgid)) = traced_current() else {
        return;
    };
    let mut ev = task_event(EV_SEND_EVENTS, tid, tgid);
    ev.ret = ret;
    send(&mut ev);
}

#[inline(always)]
fn learn_listener(listener: u64) -> u16 {
    let port = sk_local_port(listener);
    // Known already (every accept after the first): a lookup is lock-free,
    // an update takes the bucket lock.
    if listener != 0 && unsafe { LISTENERS.get(listener) } != Some(&(port as u32)) {
        let _ = LISTENERS.insert(listener, port as u32, 0);
        let _ = LISTEN_PORTS.insert(port as u32, 1, 0);
    }
    port
}

/// `sys_enter_listen`.
#[inline(always)]
pub fn listen_enter(fd: u64) {
    if traced_current().is_none() {
        return;
    }
    learn_listener(fd_to_sk(fd));
}

/// Records the listener of the task's accept call in progress. The entry is
/// left in place after the call (only `process_exit` removes it): every
/// later call passes the entry probe first and rewrites it, and a worker
/// accepts on the same listener call after call, so the steady state is one
/// lock-free lookup (and no port read or listener learning) instead of an
/// update and a delete, which take the bucket lock.
#[inline(always)]
fn remember_accept_listener(tid: u32, listener: u64) {
    if let Some(call) = unsafe { ACCEPT_ARGS.get(tid) } {
        if call.listener == listener {
            return;
        }
    }
    let port = learn_listener(listener) as u64;
    let _ = ACCEPT_ARGS.insert(tid, AcceptCall { listener, port }, 0);
}

/// The task's accept call in progress (zero when it began before the probes
/// were attached).
#[inline(always)]
fn accept_call(tid: u32) -> AcceptCall {
    unsafe { ACCEPT_ARGS.get(tid) }.copied().unwrap_or_default()
}

/// `sys_enter_accept`/`accept4`.
#[inline(always)]
pub fn accept_enter(fd: u64) {
    let Some((tid, _)) = traced_current() else {
        return;
    };
    remember_accept_listener(tid, fd_to_sk(fd));
}

#[inline(always)]
fn send_accept(tid: u32, tgid: u32, ret: i64, call: AcceptCall, child: u64, flags: u16) {
    chain::clear_active(tid);
    let mut ev = task_event(EV_ACCEPT_RET, tid, tgid);
    ev.ret = ret;
    ev.sk = call.listener;
    ev.child = child;
    ev.flags = flags;
    ev.local_port = call.port as u16;
    // No peer address: the arrival already carries it (4 reads saved).
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    send(&mut ev);
}

/// Did `inet_csk_accept`'s return report the task's accept already? Clears
/// the mark in place (no delete: see `ACCEPT_SEEN`).
#[inline(always)]
fn take_accept_seen(tid: u32) -> bool {
    match ACCEPT_SEEN.get_ptr_mut(tid) {
        Some(p) if unsafe { *p } != 0 => {
            unsafe { *p = 0 };
            true
        }
        _ => false,
    }
}

/// `sys_exit_accept`/`accept4`: the new fd's socket is the child.
#[inline(always)]
pub fn accept_exit(ret: i64) {
    let Some((tid, tgid)) = traced_current() else {
        return;
    };
    if ret >= 0 && get::ACCEPT_EXIT_ERRORS_ONLY() != 0 && take_accept_seen(tid) {
        return; // already reported by inet_csk_accept's return, with the child
    }
    let child = if ret >= 0 { fd_to_sk(ret as u64) } else { 0 };
    send_accept(tid, tgid, ret, accept_call(tid), child, 0);
}

/// `inet_csk_accept` entry: remember the listener and its wait queue (so a
/// blocking accept's wakeup opens a chain).
#[inline(always)]
pub fn csk_accept_entry(listener: u64) {
    let Some((tid, _)) = traced_current() else {
        return;
    };
    let wq: u64 = read(listener, get::OFF_SK_WQ()).unwrap_or(0);
    if wq != 0 {
        let head = wq + get::OFF_WQ_WAIT() as u64;
        if unsafe { LISTENER_WQS.get(head) } != Some(&listener) {
            let _ = LISTENER_WQS.insert(head, listener, 0);
        }
    }
    remember_accept_listener(tid, listener);
}

/// `inet_csk_accept` return: a new child socket. A failure (NULL) is left to
/// the accept syscall's exit, which has the error code on every kernel (the
/// `err` parameter moved in 6.10, and 5.10's fentry cannot read an `int *`).
#[inline(always)]
pub fn csk_accept_exit(child: u64) {
    if child == 0 {
        return;
    }
    let Some((tid, tgid)) = traced_current() else {
        return;
    };
    match ACCEPT_SEEN.get_ptr_mut(tid) {
        Some(p) => unsafe { *p = 1 },
        None => {
            let _ = ACCEPT_SEEN.insert(tid, 1, 0);
        }
    }
    send_accept(tid, tgid, 0, accept_call(tid), child, FLAG_ACCEPT_KERNEL);
}

// ---- process tree -------------------------------------------------------------

/// `sched_process_fork(parent, child)`: children of traced tasks are traced.
#[inline(always)]
pub fn process_fork(child_task: u64) {
    let Some((_, parent_tgid)) = traced_current() else {
        return;
    };
    let Some(child_tid) = read::<i32>(child_task, get::OFF_TASK_PID()) else {
        return;
    };
    let Some(child_tgid) = read::<i32>(child_task, get::OFF_TASK_TGID()) else {
        return;
    };
    let (child_tid, child_tgid) = (child_tid as u32, child_tgid as u32);
    if TRACED.insert(child_tid, child_tgid, 0).is_err() {
        // Otherwise invisible: this task's wakeups and accepts go unreported.
        // (aya-log-ebpf 0.2 takes a context argument but does not use it.)
        warn!(
            &(),
            "map TRACED is full: task {} of process {}, forked by a traced task, is not followed",
            child_tid,
            child_tgid
        );
    }
    let mut ev = task_event(EV_TASK_NEW, child_tid, child_tgid);
    ev.aux = parent_tgid as u64;
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    send(&mut ev);
}

#[inline(always)]
pub fn process_exit() {
    let Some((tid, tgid)) = traced_current() else {
        return;
    };
    let _ = TRACED.remove(tid);
    let _ = ACCEPT_ARGS.remove(tid);
    let _ = ACCEPT_SEEN.remove(tid);
    let _ = ACTIVE.remove(tid);
    let mut ev = task_event(EV_TASK_EXIT, tid, tgid);
    ev.comm = bpf_get_current_comm().unwrap_or_default();
    send(&mut ev);
}
