//! What each probe does, written once on plain values so that the fentry,
//! kprobe and tracepoint programs in `main.rs` stay thin wrappers.
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_log_ebpf::{debug, warn};
use herdtrace_common::{
    AcceptCall, RawEvent, TaskState, UringKey, AF_INET, AF_INET6, EV_ACCEPT_RET, EV_POLL_RET,
    EV_SEND_EVENTS, EV_TASK_EXIT, EV_TASK_NEW, FLAG_ACCEPT_KERNEL, FLAG_ARRIVAL_SUBSTITUTE,
    IORING_CQE_F_MORE, IORING_OP_ACCEPT, MAP_LISTEN_ADDRS, MAP_TRACED, MAP_TRACED_EPS,
    MAP_URING_ACCEPTS, NO_FD, POLL_HELD, POLL_HELD_WORK, POLL_WAKE_REPORTED,
};

use crate::{
    chain::{self, close, now, OPEN_LISTENER, OPEN_PROVISIONAL},
    config::conf,
    emit::{current_comm, emit, forget, insert},
    kread::{
        fd_to_file, fd_to_sk, file_to_sk, listen_key, read, sk_head, sk_wait_head, socket_sk,
        task_ids, Fds, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_LISTEN, TCP_SYN_RECV,
    },
    maps::{ACCEPT_INFLIGHT, LISTENERS, LISTEN_ADDRS, TRACED, TRACED_EPS, URING_ACCEPTS},
};

/// The current task's tid and entry, if it is traced. A task followed
/// through the classic fork tracepoint has tgid 0 until now: it is filled in.
#[inline(always)]
fn traced_current() -> Option<(u32, &'static mut TaskState)> {
    let id = bpf_get_current_pid_tgid();
    let tid = id as u32;
    let task = chain::traced_task(tid)?;
    if task.tgid == 0 {
        task.tgid = (id >> 32) as u32;
    }
    Some((tid, task))
}

/// Sends an event of `kind` about task `tid` of process `tgid`; `fill`
/// writes the rest.
#[inline(always)]
fn task_event(kind: u32, tid: u32, tgid: u32, fill: impl FnOnce(&mut RawEvent)) {
    emit(kind, |ev| {
        ev.tid = tid;
        ev.tgid = tgid;
        fill(ev);
    });
}

// ---- wakeups (every backend) -------------------------------------------------

/// `sched_waking` of thread `tid`; `comm` reads its name, only when the
/// wakeup is reported.
#[inline(always)]
pub fn sched_waking(tid: u32, comm: impl FnOnce() -> [u8; 16]) {
    chain::on_waking(tid, comm);
}

// ---- tracepoint backend: chains ----------------------------------------------

/// `sock:sk_data_ready` (6.6+): every data-ready ends the previous chain on
/// this CPU; one on a traced task's listening socket opens a new one.
/// `state` reads `sk`'s TCP state: three runs in four are on connected
/// sockets and end there, so it is read alone first.
#[inline(always)]
pub fn sk_data_ready(sk: u64, state: impl FnOnce() -> u8) {
    let Some(c) = chain::state() else { return };
    close(c);
    if state() != TCP_LISTEN {
        return;
    }
    chain::open_from_listener(c, sk, || sk_head(sk));
}

/// `sock:inet_sock_set_state`: a child socket going SYN_RECV -> ESTABLISHED
/// is immediately followed by its listener's `sk_data_ready` on the same
/// CPU: remembered as that arrival's child (and, before 6.6, where there is
/// no `sock:sk_data_ready`, it opens the chain). A listener going LISTEN ->
/// CLOSE is forgotten (its address may be reused by anyone's socket).
/// `port` reads the child's local port, all a child needs from 6.6 on.
#[inline(always)]
pub fn inet_sock_set_state(sk: u64, old: i32, new: i32, port: impl FnOnce() -> u16) {
    if old == TCP_LISTEN as i32 && new == TCP_CLOSE as i32 {
        forget(&LISTENERS, &sk);
        return;
    }
    if old != TCP_SYN_RECV as i32 || new != TCP_ESTABLISHED as i32 {
        return;
    }
    let Some(c) = chain::state() else { return };
    // (No time: `est_ns` is the kprobe/fentry backends' queue-add time.)
    c.est_child = sk;
    c.est_listener = 0;
    c.est_port = port();
    if conf!(iss_opens_chain) == 0 {
        return;
    }
    close(c);
    let head = sk_head(sk);
    if !chain::port_allowed(head.num) {
        return;
    }
    // No listener socket here: the child's namespace, local address and port
    // name it.
    let key = listen_key(sk, &head);
    if !chain::addr_known(&key) {
        return;
    }
    c.est_child = 0;
    chain::open(c, 0, sk, head.num, FLAG_ARRIVAL_SUBSTITUTE, key.netns);
}

/// `irq:softirq_exit`: a tracepoint-backend chain ends with its softirq.
#[inline(always)]
pub fn softirq_exit() {
    let Some(c) = chain::state() else { return };
    if c.open != 0 && c.depth == 0 {
        close(c);
    }
}

// ---- kprobe/fentry backends: chains --------------------------------------------

/// A handshake completed and `child` joined `listener`'s accept queue
/// (`inet_csk_complete_hashdance` / `inet_csk_reqsk_queue_add`): the
/// arrival is reported here, since the listener's wakeup that follows on
/// this CPU happens only when a task sleeps on it. The listener's wait
/// queue is read now, once per connection, so that wakeup is recognised
/// without a read.
#[inline(always)]
pub fn new_connection(listener: u64, child: u64) {
    let Some(c) = chain::state() else { return };
    chain::outside_wakeups(c);
    chain::arrival_at_queue(c, listener, child, sk_wait_head(listener));
}

/// `inet_csk_complete_hashdance` entry/exit: the queue-add it calls is the
/// same connection (reported by the hashdance probe instead).
#[inline(always)]
pub fn hashdance(inside: bool) {
    if let Some(c) = chain::state() {
        if inside {
            chain::outside_wakeups(c);
        }
        c.in_hashdance = u16::from(inside);
    }
}

/// `inet_csk_reqsk_queue_add` outside a hashdance (syncookies, TCP Fast Open).
#[inline(always)]
pub fn reqsk_queue_add(listener: u64, child: u64) {
    let Some(c) = chain::state() else { return };
    if c.in_hashdance != 0 {
        return;
    }
    chain::outside_wakeups(c);
    chain::arrival_at_queue(c, listener, child, sk_wait_head(listener));
}

/// `__wake_up_common` entry. Outside a listener chain, a call on the wait
/// queue of the listener whose child just completed its handshake opens
/// one (a blocking accept's wakeup); any other call is provisional until
/// `ep_poll_callback` shows it wakes an epoll watching a listener. The
/// chain is tied to the depth it opened at: a softirq can process a
/// connection inside an unrelated wakeup it interrupted.
#[inline(always)]
pub fn wake_up_common_entry(wq_head: u64) {
    let Some(c) = chain::state() else { return };
    let t = now();
    chain::reset_stale_depth(c, t);
    c.depth += 1;
    if c.open == OPEN_LISTENER {
        return; // nested in a listener's wakeup: part of its chain
    }
    if c.depth == 1 {
        c.open = OPEN_PROVISIONAL;
        c.cur_ep = 0;
        c.opened_ns = t;
        c.opener = bpf_get_current_pid_tgid();
    }
    if c.est_listener != 0 && c.est_wait == wq_head {
        let sk = c.est_listener;
        if chain::open_from_listener(c, sk, || sk_head(sk)) {
            c.open_depth = c.depth;
        }
    }
}

#[inline(always)]
pub fn wake_up_common_exit() {
    let Some(c) = chain::state() else { return };
    if c.depth > 0 {
        c.depth -= 1;
    } else {
        // Its entry was skipped (the kernel's recursion guard) or began
        // before the probes were attached.
        debug!(&(), "__wake_up_common returned at depth 0");
    }
    if c.depth == 0 {
        close(c);
    } else if c.open == OPEN_LISTENER && c.depth < c.open_depth {
        // The call that opened the listener chain returned; the interrupted
        // outer wakeup is not that connection's.
        c.open = OPEN_PROVISIONAL;
        c.cur_ep = 0;
    }
}

/// `ep_poll_callback(wait, ...)`: find the watched file; when it is a traced
/// task's listening socket this call belongs to that listener's chain.
#[inline(always)]
pub fn ep_poll_callback(wait: u64) {
    let Some(c) = chain::state() else { return };
    // Outside any wakeup call there is no chain (a depth left by a missed
    // return probe still counts as inside one).
    if c.open == 0 && c.depth == 0 {
        return;
    }
    let entry = wait.wrapping_sub(conf!(eppoll_entry_wait) as u64);
    let epi: u64 = read(entry, conf!(eppoll_entry_base)).unwrap_or(0);
    let file: u64 = read(epi, conf!(epitem_ffd_file)).unwrap_or(0);
    let sk = file_to_sk(file);
    if sk == 0 {
        return;
    }
    if c.open != OPEN_LISTENER {
        let head = sk_head(sk);
        if head.state != TCP_LISTEN || !chain::open_from_listener(c, sk, || head) {
            return;
        }
        c.open_depth = c.depth;
    } else if c.listener != sk {
        return; // another listener's callback nested in this chain
    }
    let ep: u64 = read(epi, conf!(epitem_ep)).unwrap_or(0);
    chain::on_epoll_callback(c, ep);
}

// ---- the woken task's side --------------------------------------------------

/// A traced task returns from epoll_wait (syscall exit, or `do_epoll_wait`'s).
/// `ret` is read only for traced tasks (every task's calls come here).
#[inline(always)]
pub fn poll_exit(ret: impl FnOnce() -> i64) {
    let Some((tid, task)) = traced_current() else {
        return;
    };
    chain::clear_woken_by(task);
    poll_return(tid, task, ret());
}

/// A traced task returned `ret` from epoll_wait: reported now if user space
/// waits on it (a reported wake), else held for the task's next event (see
/// `POLL_HELD`: most returns of a busy worker, which did not sleep).
#[inline(always)]
fn poll_return(tid: u32, task: &mut TaskState, ret: i64) {
    if task.poll & POLL_WAKE_REPORTED == 0 {
        task.poll = if ret > 0 {
            POLL_HELD | POLL_HELD_WORK
        } else {
            POLL_HELD
        };
        return;
    }
    let held = chain::wake_ended(task);
    task_event(EV_POLL_RET, tid, task.tgid, |ev| {
        ev.ret = ret;
        ev.flags = held;
    });
}

/// `do_epoll_wait` entry (kprobe backend). A task entering a wait is back
/// from its previous one, whose return probe may have been missed
/// (kretprobe instances run out: one per CPU on a non-preemptible kernel,
/// taken by every task sleeping in epoll_wait, and kernels before 6.7 do
/// not count the misses): its "woken by" mark is cleared here, where no
/// instance limit applies, and so is a stale wakeup depth on this CPU
/// (process context: no wakeup call can be in progress on it).
#[inline(always)]
pub fn epoll_wait_entry() {
    let Some((_, task)) = traced_current() else {
        return;
    };
    chain::clear_woken_by(task);
    if let Some(c) = chain::state() {
        chain::outside_wakeups(c);
    }
}

/// `do_epoll_wait(epfd, ...)` returned `ret` (fentry backend): also learns
/// the task's epoll instance, which `ep_send_events` cannot do on kernels
/// that inline it (5.10, 6.1).
#[inline(always)]
pub fn epoll_wait_exit(epfd: i32, ret: i64) {
    let Some((tid, task)) = traced_current() else {
        return;
    };
    if epfd >= 0 {
        let ep: u64 = read(fd_to_file(epfd as u64), conf!(file_private_data)).unwrap_or(0);
        if ep != 0 && unsafe { TRACED_EPS.get(ep) }.is_none() {
            insert(&TRACED_EPS, &ep, &1, MAP_TRACED_EPS);
        }
    }
    chain::clear_woken_by(task);
    poll_return(tid, task, ret);
}

/// `ep_send_events(ep, ...)` returned `ret` events (0: the task found
/// nothing and goes back to sleep inside the kernel).
#[inline(always)]
pub fn ep_send_events_exit(ep: u64, ret: i64) {
    let Some((tid, task)) = traced_current() else {
        return;
    };
    let tgid = task.tgid;
    // Known already after the first call: a lookup does not take the lock.
    if ep != 0 && unsafe { TRACED_EPS.get(ep) }.is_none() {
        insert(&TRACED_EPS, &ep, &1, MAP_TRACED_EPS);
    }
    let held = chain::wake_ended(task);
    task_event(EV_SEND_EVENTS, tid, tgid, |ev| {
        ev.ret = ret;
        ev.flags = held;
    });
}

/// `ep_send_events(ep, ...)` entry (kprobe backend: its return probe has
/// no arguments): learn the traced task's epoll instance.
#[inline(always)]
pub fn ep_send_events_entry(ep: u64) {
    if traced_current().is_some() && ep != 0 && unsafe { TRACED_EPS.get(ep) }.is_none() {
        insert(&TRACED_EPS, &ep, &1, MAP_TRACED_EPS);
    }
}

/// The epoll file `file` is being released: forget its instance (its
/// address will be reused).
#[inline(always)]
pub fn ep_release(file: u64) {
    let ep: u64 = read(file, conf!(file_private_data)).unwrap_or(0);
    if ep != 0 {
        forget(&TRACED_EPS, &ep);
    }
}

// ---- listeners -----------------------------------------------------------------

/// A traced task listens on `sk`: its arrivals are reported from the first
/// one on (listeners that existed before the trace come from /proc).
/// Returns its local port and network namespace.
#[inline(always)]
pub fn learn_listener(sk: u64) -> (u16, u32) {
    if sk == 0 {
        return (0, 0);
    }
    let head = sk_head(sk);
    // Known already (every accept after the first): a lookup is lock-free.
    // The port tells a reused socket address from the listener it was.
    if let Some(known) = unsafe { LISTENERS.get(sk) } {
        let (port, netns) = chain::listener_facts(*known);
        if port == head.num {
            return (port, netns);
        }
    }
    let key = listen_key(sk, &head);
    insert(&LISTEN_ADDRS, &key, &1, MAP_LISTEN_ADDRS);
    chain::remember_listener(sk, &head, &key)
}

/// `listen(fd)` by a traced task (tracepoint backend: syscall entry).
#[inline(always)]
pub fn listen_fd(fd: u64) {
    if traced_current().is_some() {
        learn_listener(fd_to_sk(fd));
    }
}

/// `listen(fd)` returned `ret` in a traced task (tracepoint backend, where
/// the fd can be read at the exit: see `kread::syscall_arg0`). `lookup`
/// gives the fd and the task's open files.
#[inline(always)]
pub fn listen_exit(ret: i64, lookup: impl FnOnce() -> (u64, Fds)) {
    if ret == 0 && traced_current().is_some() {
        let (fd, fds) = lookup();
        learn_listener(fds.sk(fd));
    }
}

/// `inet_listen(sock)` by a traced task (kprobe/fentry backends).
#[inline(always)]
pub fn listen_socket(sock: u64) {
    if traced_current().is_some() {
        learn_listener(socket_sk(sock));
    }
}

/// `inet_csk_listen_stop(sk)`: a listening socket closes.
#[inline(always)]
pub fn listen_stop(sk: u64) {
    forget(&LISTENERS, &sk);
}

// ---- accept ----------------------------------------------------------------------

/// `AcceptCall::pending`: no call known in progress.
const PENDING_NONE: u32 = 0;
/// Entered (kprobe entry seen), result not reported yet.
const PENDING_ENTERED: u32 = 1;
/// Reported by the return probe: the `fd_install` that follows stays silent.
const PENDING_REPORTED: u32 = 2;

/// Where an accept call stands once `inet_accept` returned `ret`: a success
/// is reported now, so the `fd_install` that follows stays silent.
#[inline(always)]
fn pending_after(ret: i64) -> u32 {
    if ret == 0 {
        PENDING_REPORTED
    } else {
        PENDING_NONE
    }
}

/// Records `listener` as the task's accept call and returns it. A worker
/// accepts on the same listener call after call, so the steady state is
/// two in-place writes; the listener's port and namespace are read only
/// when it changes.
#[inline(always)]
fn begin_accept(task: &mut TaskState, listener: u64, newsock: u64) -> AcceptCall {
    let call = &mut task.accept;
    if call.listener != listener {
        let (port, netns) = learn_listener(listener);
        *call = AcceptCall {
            listener,
            newsock,
            port: port as u32,
            netns,
            pending: PENDING_ENTERED,
            fd: NO_FD,
        };
    } else {
        call.newsock = newsock;
        call.pending = PENDING_ENTERED;
    }
    *call
}

/// Reports an accept result. `--port` filters accepts too, not only arrivals.
#[inline(always)]
fn send_accept(
    tid: u32,
    task: &mut TaskState,
    ret: i64,
    call: &AcceptCall,
    child: u64,
    flags: u16,
) {
    let port = if call.listener != 0 || child == 0 {
        call.port as u16
    } else {
        sk_head(child).num
    };
    if !chain::port_allowed(port) {
        return;
    }
    chain::clear_woken_by(task);
    let held = chain::wake_ended(task);
    task_event(EV_ACCEPT_RET, tid, task.tgid, |ev| {
        ev.ret = ret;
        ev.sk = call.listener;
        ev.child = child;
        ev.flags = flags | held;
        ev.local_port = port;
        ev.aux = call.netns as u64;
        // No peer address: the arrival already carries it.
        current_comm(&mut ev.comm);
    });
}

/// `sys_enter_accept`/`accept4` (tracepoint backend): only the fd is kept;
/// the exit reads its socket together with the new one.
#[inline(always)]
pub fn accept_enter(fd: u64) {
    let Some((_, task)) = traced_current() else {
        return;
    };
    chain::clear_woken_by(task);
    task.accept.fd = fd as i32;
}

/// The listening fd the task's accept entry kept, taken (`NO_FD` if no entry
/// was seen: the task was inside accept when tracing began).
#[inline(always)]
pub fn entry_fd(task: &mut TaskState) -> i32 {
    let fd = task.accept.fd;
    task.accept.fd = NO_FD;
    fd
}

/// `sys_exit_accept`/`accept4` (tracepoint backend): the listener is the
/// socket of the listening fd, the child the new fd's. `lookup` gives that
/// fd (kept by the entry, or read from the task's registers) and the task's
/// open files, in which both are looked up in one walk. A negative fd (no
/// entry seen) leaves the listener unknown.
#[inline(always)]
pub fn accept_exit(ret: impl FnOnce() -> i64, lookup: impl FnOnce(&mut TaskState) -> (i32, Fds)) {
    let Some((tid, task)) = traced_current() else {
        return;
    };
    let ret = ret();
    let (fd, fds) = lookup(task);
    let listener = if fd >= 0 { fds.sk(fd as u64) } else { 0 };
    let child = if ret >= 0 { fds.sk(ret as u64) } else { 0 };
    let call = begin_accept(task, listener, 0);
    send_accept(tid, task, ret, &call, child, 0);
}

/// `io_uring_submit_req` (tracepoint backend): a traced task's io_uring
/// accept request is remembered until its last completion. Such an accept
/// runs inside the kernel (at submission, or in the task's task work after
/// the listener's wakeup), so no accept syscall reports it.
#[inline(always)]
pub fn uring_submit(ring: u64, user_data: u64, opcode: u8) {
    if opcode == IORING_OP_ACCEPT && traced_current().is_some() {
        remember_uring_accept(ring, user_data);
    }
}

/// `io_uring_task_add` (tracepoint backend): a request's poll woke, and
/// its task will run it. An accept's, inside a traced listener's wakeup, is
/// remembered like a submission, so that its completions are told as an
/// accept's even when it was submitted before tracing began: a server that
/// arms a multishot accept at start-up never submits it again, and before
/// 5.19 no completion names its request.
#[inline(always)]
pub fn uring_woken(ring: u64, user_data: u64, opcode: u8) {
    if opcode == IORING_OP_ACCEPT && chain::current().is_some() {
        remember_uring_accept(ring, user_data);
    }
}

/// Until its last completion (see [`uring_complete`]).
#[inline(always)]
fn remember_uring_accept(ring: u64, user_data: u64) {
    insert(
        &URING_ACCEPTS,
        &UringKey { ring, user_data },
        &1,
        MAP_URING_ACCEPTS,
    );
}

/// `io_uring_complete` on kernels whose record names the request (5.19+):
/// an accept's completion is told by the request's opcode, so an accept
/// submitted before tracing began is seen too. A multishot accept's
/// completions but the last are posted without their request (`req` 0):
/// those are told by the submission seen ([`uring_submit`]).
#[inline(always)]
pub fn uring_complete_req(req: u64, ring: u64, user_data: u64, res: i32, cflags: u32) {
    if req == 0 {
        uring_complete(ring, user_data, res, cflags);
        return;
    }
    let at = conf!(io_kiocb_opcode);
    if at == 0 {
        return;
    }
    let Some((tid, task)) = traced_current() else {
        return;
    };
    if read::<u8>(req, at) != Some(IORING_OP_ACCEPT) {
        return;
    }
    if cflags & IORING_CQE_F_MORE == 0 {
        forget(&URING_ACCEPTS, &UringKey { ring, user_data });
    }
    uring_accept_result(tid, task, res);
}

/// `io_uring_complete` of a request without its address: an accept's if
/// its submission was seen (see [`uring_submit`]).
#[inline(always)]
pub fn uring_complete(ring: u64, user_data: u64, res: i32, cflags: u32) {
    let key = UringKey { ring, user_data };
    if unsafe { URING_ACCEPTS.get(&key) }.is_none() {
        return;
    }
    if cflags & IORING_CQE_F_MORE == 0 {
        let _ = URING_ACCEPTS.remove(&key);
    }
    let Some((tid, task)) = traced_current() else {
        return;
    };
    uring_accept_result(tid, task, res);
}

/// Reports an io_uring accept's result, its child the socket of the new fd
/// (in the task's fd table, which io_uring's worker threads share). The
/// listener is not in the record: the child's port stands for it.
#[inline(always)]
fn uring_accept_result(tid: u32, task: &mut TaskState, res: i32) {
    let mut child = if res >= 0 {
        Fds::current().sk(res as u64)
    } else {
        0
    };
    // A direct descriptor (IORING_FILE_INDEX_ALLOC) is an index into the
    // ring's own table, not an fd: whatever the task's fd of that number
    // holds is not this accept's socket unless it is a connected one.
    if child != 0 && !accepted_socket(child) {
        child = 0;
    }
    let call = begin_accept(task, 0, 0);
    send_accept(tid, task, res as i64, &call, child, 0);
}

/// `inet_accept(sock, newsock, ...)` returned `ret` (fentry backend: fexit
/// has the arguments too). A return probe runs only for calls that began
/// after it was attached, so this call is not one of the in-flight ones.
#[inline(always)]
pub fn inet_accept_exit(sock: u64, newsock: u64, ret: i64) {
    let Some((tid, task)) = traced_current() else {
        return;
    };
    forget(&ACCEPT_INFLIGHT, &tid);
    let call = begin_accept(task, socket_sk(sock), newsock);
    let child = if ret == 0 { socket_sk(newsock) } else { 0 };
    task.accept.pending = pending_after(ret);
    send_accept(tid, task, ret, &call, child, FLAG_ACCEPT_KERNEL);
}

/// `inet_accept(sock, newsock, ...)` entry (kprobe backend): remembered for
/// the return probe and for `fd_install`. An entry seen means the call began
/// after the probes were attached.
#[inline(always)]
pub fn inet_accept_entry(sock: u64, newsock: u64) {
    let Some((tid, task)) = traced_current() else {
        return;
    };
    // A task calling accept came back to user space from any wait that
    // woke it: should that wait's return probe have been missed, its later
    // wakeups must not go on counting for the chain that woke it.
    chain::clear_woken_by(task);
    // Process context: no wakeup call can be in progress on this CPU (they
    // run with interrupts off), so a depth seen here is a missed return.
    if let Some(c) = chain::state() {
        chain::outside_wakeups(c);
    }
    forget(&ACCEPT_INFLIGHT, &tid);
    begin_accept(task, socket_sk(sock), newsock);
}

/// `inet_accept` returned `ret` (kprobe backend). A return probe can miss:
/// kretprobe instances run out when more tasks sleep inside accept than the
/// kernel allows (on non-preemptible kernels, one per CPU); a success is
/// then reported by `fd_install`, which the accept calls next.
#[inline(always)]
pub fn inet_accept_ret(ret: i64) {
    let Some((tid, task)) = traced_current() else {
        return;
    };
    let call = task.accept;
    if call.pending != PENDING_ENTERED {
        return;
    }
    let child = if ret == 0 { socket_sk(call.newsock) } else { 0 };
    task.accept.pending = pending_after(ret);
    send_accept(tid, task, ret, &call, child, FLAG_ACCEPT_KERNEL);
}

/// Is `sk` a connected TCP socket (what an accept returns)? Guards the
/// in-flight report against a task's unrelated fd.
#[inline(always)]
fn accepted_socket(sk: u64) -> bool {
    let head = sk_head(sk);
    (head.family == AF_INET || head.family == AF_INET6)
        && matches!(head.state, TCP_ESTABLISHED | TCP_CLOSE_WAIT | TCP_CLOSE)
}

/// `fd_install(fd, file)`: the last step of a successful accept. Reports an
/// accept whose return probe did not run: a call already in progress when
/// the probes were attached, or a missed kretprobe.
#[inline(always)]
pub fn fd_install(fd: u32, file: u64) {
    let Some((tid, task)) = traced_current() else {
        return;
    };
    // Some syscall is installing a file: the task is past any epoll wait
    // (see `inet_accept_entry`; the fentry backend has no accept entry).
    chain::clear_woken_by(task);
    if let Some(c) = chain::state() {
        chain::outside_wakeups(c);
    }
    let call = task.accept;
    match call.pending {
        PENDING_REPORTED => {
            task.accept.pending = PENDING_NONE;
            forget(&ACCEPT_INFLIGHT, &tid);
        }
        PENDING_ENTERED => {
            // The return probe missed; the file must be this call's new socket.
            let sock: u64 = read(file, conf!(file_private_data)).unwrap_or(0);
            if sock != call.newsock {
                return;
            }
            task.accept.pending = PENDING_NONE;
            send_accept(
                tid,
                task,
                fd as i64,
                &call,
                socket_sk(sock),
                FLAG_ACCEPT_KERNEL,
            );
        }
        _ => {
            if unsafe { ACCEPT_INFLIGHT.get(tid) }.is_none() {
                return;
            }
            let child = file_to_sk(file);
            if !accepted_socket(child) {
                return;
            }
            forget(&ACCEPT_INFLIGHT, &tid);
            // The listener is unknown: the child's local port is its port.
            let unknown = AcceptCall::default();
            send_accept(tid, task, fd as i64, &unknown, child, FLAG_ACCEPT_KERNEL);
        }
    }
}

// ---- process tree -------------------------------------------------------------

/// A traced task forked `child_tid` of process `child_tgid` (0 when the probe
/// cannot tell: filled in when the child first runs a probed call).
#[inline(always)]
fn follow_child(child_tid: u32, child_tgid: u32) {
    let Some((_, parent)) = traced_current() else {
        return;
    };
    let parent_tgid = parent.tgid;
    chain::count_traced(child_tid, 1);
    if !insert(&TRACED, &child_tid, &TaskState::new(child_tgid), MAP_TRACED) {
        chain::count_traced(child_tid, u64::MAX);
        // This task's wakeups and accepts go unreported: say whose.
        warn!(
            &(),
            "task {} of process {}, forked by a traced task, is not followed",
            child_tid,
            child_tgid
        );
    }
    task_event(EV_TASK_NEW, child_tid, child_tgid, |ev| {
        ev.aux = parent_tgid as u64;
        current_comm(&mut ev.comm);
    });
}

/// `sched_process_fork(parent, child)` as a BTF tracepoint (task pointers).
#[inline(always)]
pub fn process_fork_task(child_task: u64) {
    if let Some((tid, tgid)) = task_ids(child_task) {
        follow_child(tid, tgid);
    }
}

/// `sched:sched_process_fork` (classic): only the child's thread id.
#[inline(always)]
pub fn process_fork_pid(child_tid: u32) {
    follow_child(child_tid, 0);
}

#[inline(always)]
pub fn process_exit() {
    let Some((tid, task)) = traced_current() else {
        return;
    };
    let tgid = task.tgid;
    let held = chain::take_held_poll(task);
    if TRACED.remove(tid).is_ok() {
        chain::count_traced(tid, u64::MAX);
    }
    forget(&ACCEPT_INFLIGHT, &tid);
    task_event(EV_TASK_EXIT, tid, tgid, |ev| {
        ev.flags = held;
        current_comm(&mut ev.comm);
    });
}
