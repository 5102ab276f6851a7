//! herdtrace eBPF programs. Each program is a thin wrapper that reads its
//! arguments and calls the shared logic in `handlers`, so the backends and
//! the BTF/classic variants of one tracepoint differ only in how they get
//! their arguments. Which programs attach where is decided in user space
//! (`herdtrace::probes`, the probe table).
#![no_std]
#![no_main]
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod chain;
mod config;
mod emit;
mod handlers;
mod kread;
mod maps;

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext,
        TracePointContext,
    },
    EbpfContext,
};

use core::{mem::size_of, ptr::read_volatile};

use crate::config::conf;
use crate::kread::{btf_load, read, sk_local_port, task_comm, Fds};

/// A field of a classic tracepoint's record at the offset user space read
/// from the event's tracefs `format` file. These layouts change between
/// kernels, and a direct load needs its offset in the instruction, so the
/// usual offsets are spelled out (one branch each): the verifier knows the
/// offset (`CONFIG` is read-only) and walks only the branch it selects. A
/// direct load costs one instruction, `bpf_probe_read_kernel` a helper call
/// (the fallback for any other offset).
#[inline(always)]
fn tp_field<T: Default + Copy>(ctx: &TracePointContext, off: u32) -> T {
    let base = ctx.as_ptr() as *const u8;
    macro_rules! direct_at {
        ($($o:literal)*) => {$(
            // A context load must be aligned to its size.
            if size_of::<T>() <= 8 && $o % size_of::<T>() == 0 && off == $o {
                // SAFETY: a tracepoint record is at least this long (the
                // offset came from its format file); the verifier checks it.
                return unsafe { read_volatile(base.add($o).cast::<T>()) };
            }
        )*};
    }
    direct_at!(8 12 16 20 24 28 32);
    let p = (base as usize + off as usize) as *const T;
    unsafe { bpf_probe_read_kernel(p) }.unwrap_or_default()
}

// ---- wakeups and the process tree: every backend ---------------------------------

#[btf_tracepoint(function = "sched_waking")]
pub fn btf_sched_waking(ctx: BtfTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    let tid = btf_load::<i32>(task, conf!(task_struct_pid)) as u32;
    handlers::sched_waking(tid, || task_comm(task));
    0
}

#[tracepoint]
pub fn tp_sched_waking(ctx: TracePointContext) -> u32 {
    let tid = tp_field::<i32>(&ctx, conf!(sched_waking_pid)) as u32;
    handlers::sched_waking(tid, || tp_field(&ctx, conf!(sched_waking_comm)));
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn btf_sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    handlers::process_fork_task(ctx.arg::<u64>(1));
    0
}

#[tracepoint]
pub fn tp_sched_process_fork(ctx: TracePointContext) -> u32 {
    handlers::process_fork_pid(tp_field::<i32>(&ctx, conf!(sched_process_fork_child_pid)) as u32);
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn btf_sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    handlers::process_exit();
    0
}

#[tracepoint]
pub fn tp_sched_process_exit(_ctx: TracePointContext) -> u32 {
    handlers::process_exit();
    0
}

// A timer's callback wakes the task whose timeout expired, from interrupt
// context on whatever CPU it fires: bracketed, so such a wake is never
// taken for one made by the connection being delivered on that CPU.

#[btf_tracepoint(function = "hrtimer_expire_entry")]
pub fn btf_hrtimer_expire_entry(_ctx: BtfTracePointContext) -> i32 {
    chain::timer_callback_entry();
    0
}

#[btf_tracepoint(function = "hrtimer_expire_exit")]
pub fn btf_hrtimer_expire_exit(_ctx: BtfTracePointContext) -> i32 {
    chain::timer_callback_exit();
    0
}

#[btf_tracepoint(function = "timer_expire_entry")]
pub fn btf_timer_expire_entry(_ctx: BtfTracePointContext) -> i32 {
    chain::timer_callback_entry();
    0
}

#[btf_tracepoint(function = "timer_expire_exit")]
pub fn btf_timer_expire_exit(_ctx: BtfTracePointContext) -> i32 {
    chain::timer_callback_exit();
    0
}

#[tracepoint]
pub fn tp_hrtimer_expire_entry(_ctx: TracePointContext) -> u32 {
    chain::timer_callback_entry();
    0
}

#[tracepoint]
pub fn tp_hrtimer_expire_exit(_ctx: TracePointContext) -> u32 {
    chain::timer_callback_exit();
    0
}

#[tracepoint]
pub fn tp_timer_expire_entry(_ctx: TracePointContext) -> u32 {
    chain::timer_callback_entry();
    0
}

#[tracepoint]
pub fn tp_timer_expire_exit(_ctx: TracePointContext) -> u32 {
    chain::timer_callback_exit();
    0
}

// ---- tracepoint backend ------------------------------------------------------------

#[btf_tracepoint(function = "sk_data_ready")]
pub fn btf_sk_data_ready(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    handlers::sk_data_ready(sk, || btf_load::<u8>(sk, conf!(sock_common_skc_state)));
    0
}

#[tracepoint]
pub fn tp_sk_data_ready(ctx: TracePointContext) -> u32 {
    let sk: u64 = tp_field(&ctx, conf!(sk_data_ready_skaddr));
    handlers::sk_data_ready(sk, || read(sk, conf!(sock_common_skc_state)).unwrap_or(0));
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn btf_inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    handlers::inet_sock_set_state(sk, ctx.arg(1), ctx.arg(2), || {
        btf_load::<u16>(sk, conf!(sock_common_skc_num))
    });
    0
}

#[tracepoint]
pub fn tp_inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let sk: u64 = tp_field(&ctx, conf!(inet_sock_set_state_skaddr));
    handlers::inet_sock_set_state(
        sk,
        tp_field(&ctx, conf!(inet_sock_set_state_oldstate)),
        tp_field(&ctx, conf!(inet_sock_set_state_newstate)),
        || sk_local_port(sk),
    );
    0
}

/// The listener's wakeups run inside the NET_RX softirq that processed the
/// handshake: its end closes the chain exactly (the window then only bounds
/// arrivals processed in process context, from a locked socket's backlog).
#[btf_tracepoint(function = "softirq_exit")]
pub fn btf_softirq_exit(_ctx: BtfTracePointContext) -> i32 {
    handlers::softirq_exit();
    0
}

#[tracepoint]
pub fn tp_softirq_exit(_ctx: TracePointContext) -> u32 {
    handlers::softirq_exit();
    0
}

/// `sys_enter_listen`: a traced task starts listening.
#[tracepoint]
pub fn tp_listen_enter(ctx: TracePointContext) -> u32 {
    handlers::listen_fd(tp_field::<u64>(&ctx, conf!(sys_enter_fd)) & 0xffff_ffff);
    0
}

/// `sys_exit_listen` on kernels with `bpf_task_pt_regs` (5.15+; the probe
/// table chooses): the fd comes from the task's saved registers, so no
/// entry tracepoint is attached.
#[tracepoint]
pub fn tp_listen_exit_regs(ctx: TracePointContext) -> u32 {
    handlers::listen_exit(tp_field::<i64>(&ctx, conf!(sys_exit_ret)), || {
        let task = kread::current_task_btf();
        (
            kread::syscall_arg0(task) & 0xffff_ffff,
            Fds::of_task_btf(task),
        )
    });
    0
}

#[tracepoint]
pub fn tp_accept_enter(ctx: TracePointContext) -> u32 {
    handlers::accept_enter(tp_field::<u64>(&ctx, conf!(sys_enter_fd)) & 0xffff_ffff);
    0
}

#[tracepoint]
pub fn tp_accept_exit(ctx: TracePointContext) -> u32 {
    handlers::accept_exit(
        || tp_field::<i64>(&ctx, conf!(sys_exit_ret)),
        |task| (handlers::entry_fd(task), Fds::current()),
    );
    0
}

/// [`tp_accept_exit`] for kernels with `bpf_get_current_task_btf` (5.11+;
/// the probe table chooses): the fd table is found with direct loads.
#[tracepoint]
pub fn tp_accept_exit_tb(ctx: TracePointContext) -> u32 {
    handlers::accept_exit(
        || tp_field::<i64>(&ctx, conf!(sys_exit_ret)),
        |task| (handlers::entry_fd(task), Fds::current_btf()),
    );
    0
}

/// [`tp_accept_exit_tb`] for kernels with `bpf_task_pt_regs` too (5.15+):
/// the listening fd comes from the task's saved registers, so the accept
/// needs no entry program and no entry tracepoint is attached.
#[tracepoint]
pub fn tp_accept_exit_regs(ctx: TracePointContext) -> u32 {
    // One task pointer for both: the registers and the fd table.
    handlers::accept_exit(
        || tp_field::<i64>(&ctx, conf!(sys_exit_ret)),
        |_| {
            let task = kread::current_task_btf();
            (
                kread::syscall_arg0(task) as u32 as i32,
                Fds::of_task_btf(task),
            )
        },
    );
    0
}

#[tracepoint]
pub fn tp_poll_exit(ctx: TracePointContext) -> u32 {
    handlers::poll_exit(|| tp_field::<i64>(&ctx, conf!(sys_exit_ret)));
    0
}

/// `io_uring_submit_req(req)` (`io_uring_submit_sqe(req, force_nonblock)`
/// in 6.0-6.1), BTF: the request's fields load directly, and nothing is
/// built for the machine's other io_uring operations.
#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn btf_uring_submit(ctx: BtfTracePointContext) -> i32 {
    if let Some((ring, user_data, opcode)) = uring_request(ctx.arg(0)) {
        handlers::uring_submit(ring, user_data, opcode);
    }
    0
}

/// `io_uring_task_add(req, mask)` (6.0+), BTF.
#[btf_tracepoint(function = "io_uring_task_add")]
pub fn btf_uring_task_add(ctx: BtfTracePointContext) -> i32 {
    if let Some((ring, user_data, opcode)) = uring_request(ctx.arg(0)) {
        handlers::uring_woken(ring, user_data, opcode);
    }
    0
}

/// `io_uring_complete(ctx, req, user_data, res, cflags, extra1, extra2)`
/// (5.19-6.12), BTF: `req` is a `void *`, read as the classic record's.
#[btf_tracepoint(function = "io_uring_complete")]
pub fn btf_uring_complete(ctx: BtfTracePointContext) -> i32 {
    handlers::uring_complete_req(ctx.arg(1), ctx.arg(0), ctx.arg(2), ctx.arg(3), ctx.arg(4));
    0
}

/// `io_uring_complete(ctx, req, cqe)` (after 6.12), BTF: the CQE's fields
/// (`struct io_uring_cqe`, a fixed user-space layout) load directly.
#[btf_tracepoint(function = "io_uring_complete")]
pub fn btf_uring_complete_cqe(ctx: BtfTracePointContext) -> i32 {
    let cqe: u64 = ctx.arg(2);
    handlers::uring_complete_req(
        ctx.arg(1),
        ctx.arg(0),
        btf_load::<u64>(cqe, 0),
        btf_load::<i32>(cqe, 8),
        btf_load::<u32>(cqe, 12),
    );
    0
}

/// An io_uring request's (ring, user_data, opcode), loaded directly from
/// the BTF tracepoint's `struct io_kiocb *`; `None` where BTF lacks a
/// member (`check` lists it as missing).
#[inline(always)]
fn uring_request(req: u64) -> Option<(u64, u64, u8)> {
    let (ring_at, user_data_at, opcode_at) = (
        conf!(io_kiocb_ctx),
        conf!(io_kiocb_user_data),
        conf!(io_kiocb_opcode),
    );
    if ring_at == 0 || user_data_at == 0 || opcode_at == 0 {
        return None;
    }
    Some((
        btf_load::<u64>(req, ring_at),
        btf_load::<u64>(req, user_data_at),
        btf_load::<u8>(req, opcode_at),
    ))
}

/// `io_uring:io_uring_submit_req` (`io_uring_submit_sqe` before 6.0).
#[tracepoint]
pub fn tp_uring_submit(ctx: TracePointContext) -> u32 {
    handlers::uring_submit(
        tp_field::<u64>(&ctx, conf!(uring_submit_ctx)),
        tp_field::<u64>(&ctx, conf!(uring_submit_user_data)),
        tp_field::<u8>(&ctx, conf!(uring_submit_opcode)),
    );
    0
}

/// `io_uring:io_uring_task_add`: a request's poll woke.
#[tracepoint]
pub fn tp_uring_task_add(ctx: TracePointContext) -> u32 {
    handlers::uring_woken(
        tp_field::<u64>(&ctx, conf!(uring_task_add_ctx)),
        tp_field::<u64>(&ctx, conf!(uring_task_add_user_data)),
        tp_field::<u8>(&ctx, conf!(uring_task_add_opcode)),
    );
    0
}

/// `io_uring:io_uring_complete` with the request's address (5.19+).
#[tracepoint]
pub fn tp_uring_complete_req(ctx: TracePointContext) -> u32 {
    handlers::uring_complete_req(
        tp_field::<u64>(&ctx, conf!(uring_complete_req)),
        tp_field::<u64>(&ctx, conf!(uring_complete_ctx)),
        tp_field::<u64>(&ctx, conf!(uring_complete_user_data)),
        tp_field::<i32>(&ctx, conf!(uring_complete_res)),
        tp_field::<u32>(&ctx, conf!(uring_complete_cflags)),
    );
    0
}

/// `io_uring:io_uring_complete` before 5.19 (with [`tp_uring_submit`]).
#[tracepoint]
pub fn tp_uring_complete(ctx: TracePointContext) -> u32 {
    let cflags_at = conf!(uring_complete_cflags);
    handlers::uring_complete(
        tp_field::<u64>(&ctx, conf!(uring_complete_ctx)),
        tp_field::<u64>(&ctx, conf!(uring_complete_user_data)),
        tp_field::<i32>(&ctx, conf!(uring_complete_res)),
        if cflags_at == 0 {
            0
        } else {
            tp_field::<u32>(&ctx, cflags_at)
        },
    );
    0
}

// ---- kprobe backend ---------------------------------------------------------------

#[inline(always)]
fn kp_arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

#[kprobe]
pub fn kp_wake_up_common(ctx: ProbeContext) -> u32 {
    handlers::wake_up_common_entry(kp_arg(&ctx, 0));
    0
}

#[kretprobe]
pub fn krp_wake_up_common(_ctx: RetProbeContext) -> u32 {
    handlers::wake_up_common_exit();
    0
}

#[kprobe]
pub fn kp_ep_poll_callback(ctx: ProbeContext) -> u32 {
    handlers::ep_poll_callback(kp_arg(&ctx, 0));
    0
}

/// `inet_csk_complete_hashdance(sk, child, req, own_req)`: the child is
/// queued when `own_req` (a race lost otherwise: no wakeup follows).
#[kprobe]
pub fn kp_complete_hashdance(ctx: ProbeContext) -> u32 {
    handlers::hashdance(true);
    if kp_arg(&ctx, 3) & 0xff != 0 {
        handlers::new_connection(kp_arg(&ctx, 0), kp_arg(&ctx, 1));
    }
    0
}

#[kretprobe]
pub fn krp_complete_hashdance(_ctx: RetProbeContext) -> u32 {
    handlers::hashdance(false);
    0
}

/// `inet_csk_reqsk_queue_add(sk, req, child)`.
#[kprobe]
pub fn kp_reqsk_queue_add(ctx: ProbeContext) -> u32 {
    handlers::reqsk_queue_add(kp_arg(&ctx, 0), kp_arg(&ctx, 2));
    0
}

#[kprobe]
pub fn kp_ep_send_events(ctx: ProbeContext) -> u32 {
    handlers::ep_send_events_entry(kp_arg(&ctx, 0));
    0
}

#[kretprobe]
pub fn krp_ep_send_events(ctx: RetProbeContext) -> u32 {
    handlers::ep_send_events_exit(0, ctx.ret::<i32>() as i64);
    0
}

/// `inet_accept(sock, newsock, ...)`: only the two sockets are read (the
/// other parameters changed in 6.10).
#[kprobe]
pub fn kp_inet_accept(ctx: ProbeContext) -> u32 {
    handlers::inet_accept_entry(kp_arg(&ctx, 0), kp_arg(&ctx, 1));
    0
}

#[kretprobe]
pub fn krp_inet_accept(ctx: RetProbeContext) -> u32 {
    handlers::inet_accept_ret(ctx.ret::<i32>() as i64);
    0
}

/// `fd_install(fd, file)`.
#[kprobe]
pub fn kp_fd_install(ctx: ProbeContext) -> u32 {
    handlers::fd_install(kp_arg(&ctx, 0) as u32, kp_arg(&ctx, 1));
    0
}

#[kprobe]
pub fn kp_do_epoll_wait(_ctx: ProbeContext) -> u32 {
    handlers::epoll_wait_entry();
    0
}

#[kretprobe]
pub fn krp_do_epoll_wait(ctx: RetProbeContext) -> u32 {
    let ret = ctx.ret::<i32>() as i64;
    handlers::poll_exit(|| ret);
    0
}

/// `inet_listen(sock, backlog)`.
#[kprobe]
pub fn kp_inet_listen(ctx: ProbeContext) -> u32 {
    handlers::listen_socket(kp_arg(&ctx, 0));
    0
}

/// `inet_csk_listen_stop(sk)`.
#[kprobe]
pub fn kp_inet_csk_listen_stop(ctx: ProbeContext) -> u32 {
    handlers::listen_stop(kp_arg(&ctx, 0));
    0
}

/// `ep_eventpoll_release(inode, file)`.
#[kprobe]
pub fn kp_ep_eventpoll_release(ctx: ProbeContext) -> u32 {
    handlers::ep_release(kp_arg(&ctx, 1));
    0
}

// ---- fentry backend -------------------------------------------------------------
// fexit programs read the return value after the arguments (`bpf_get_func_ret`
// needs 5.17), so each has the parameter count of its kernel function; the
// probe table picks the variant that matches the running kernel's BTF.

#[fentry(function = "__wake_up_common")]
pub fn fe_wake_up_common(ctx: FEntryContext) -> u32 {
    handlers::wake_up_common_entry(ctx.arg::<u64>(0));
    0
}

#[fexit(function = "__wake_up_common")]
pub fn fx_wake_up_common(_ctx: FExitContext) -> u32 {
    handlers::wake_up_common_exit();
    0
}

#[fentry(function = "ep_poll_callback")]
pub fn fe_ep_poll_callback(ctx: FEntryContext) -> u32 {
    handlers::ep_poll_callback(ctx.arg::<u64>(0));
    0
}

/// `inet_csk_complete_hashdance(sk, child, req, own_req)` returns the child
/// it queued (NULL when another CPU won the request).
#[fexit(function = "inet_csk_complete_hashdance")]
pub fn fx_complete_hashdance(ctx: FExitContext) -> u32 {
    handlers::hashdance(false);
    let queued: u64 = ctx.arg(4);
    if queued != 0 {
        handlers::new_connection(ctx.arg(0), queued);
    }
    0
}

#[fentry(function = "inet_csk_complete_hashdance")]
pub fn fe_complete_hashdance(_ctx: FEntryContext) -> u32 {
    handlers::hashdance(true);
    0
}

#[fentry(function = "inet_csk_reqsk_queue_add")]
pub fn fe_reqsk_queue_add(ctx: FEntryContext) -> u32 {
    handlers::reqsk_queue_add(ctx.arg::<u64>(0), ctx.arg::<u64>(2));
    0
}

/// `ep_send_events(ep, events, maxevents)`.
#[fexit(function = "ep_send_events")]
pub fn fx_ep_send_events(ctx: FExitContext) -> u32 {
    handlers::ep_send_events_exit(ctx.arg::<u64>(0), ctx.arg::<i32>(3) as i64);
    0
}

/// `inet_accept(sock, newsock, flags, kern)` up to 6.9.
#[fexit(function = "inet_accept")]
pub fn fx_inet_accept4(ctx: FExitContext) -> u32 {
    handlers::inet_accept_exit(ctx.arg(0), ctx.arg(1), ctx.arg::<i32>(4) as i64);
    0
}

/// `inet_accept(sock, newsock, arg)` from 6.10.
#[fexit(function = "inet_accept")]
pub fn fx_inet_accept3(ctx: FExitContext) -> u32 {
    handlers::inet_accept_exit(ctx.arg(0), ctx.arg(1), ctx.arg::<i32>(3) as i64);
    0
}

#[fentry(function = "fd_install")]
pub fn fe_fd_install(ctx: FEntryContext) -> u32 {
    handlers::fd_install(ctx.arg::<u32>(0), ctx.arg::<u64>(1));
    0
}

/// `do_epoll_wait(epfd, events, maxevents, timeout)`.
#[fexit(function = "do_epoll_wait")]
pub fn fx_do_epoll_wait(ctx: FExitContext) -> u32 {
    handlers::epoll_wait_exit(ctx.arg::<i32>(0), ctx.arg::<i32>(4) as i64);
    0
}

/// `inet_listen(sock, backlog)`: learned once it succeeded.
#[fexit(function = "inet_listen")]
pub fn fx_inet_listen(ctx: FExitContext) -> u32 {
    if ctx.arg::<i32>(2) == 0 {
        handlers::listen_socket(ctx.arg::<u64>(0));
    }
    0
}

#[fentry(function = "inet_csk_listen_stop")]
pub fn fe_inet_csk_listen_stop(ctx: FEntryContext) -> u32 {
    handlers::listen_stop(ctx.arg::<u64>(0));
    0
}

#[fentry(function = "ep_eventpoll_release")]
pub fn fe_ep_eventpoll_release(ctx: FEntryContext) -> u32 {
    handlers::ep_release(ctx.arg::<u64>(1));
    0
}

// ---- do-nothing programs: `check`'s trial loads, and the cost of the probe
// points alone (`--empty-programs`, benchmarks) ------------------------------------

#[tracepoint]
pub fn trial_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn trial_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// Loads where a tracepoint program may call `bpf_get_current_task_btf`.
#[tracepoint]
pub fn trial_task_btf(_ctx: TracePointContext) -> u32 {
    u32::from(kread::current_task_btf() != 0)
}

/// Loads where a tracepoint program may call `bpf_task_pt_regs` (and
/// read a register from its result).
#[tracepoint]
pub fn trial_task_pt_regs(_ctx: TracePointContext) -> u32 {
    u32::from(kread::syscall_arg0(kread::current_task_btf()) != 0)
}

#[kprobe]
pub fn trial_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[kretprobe]
pub fn trial_kretprobe(_ctx: RetProbeContext) -> u32 {
    0
}

#[fentry(function = "inet_csk_accept")]
pub fn trial_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[fexit(function = "inet_csk_accept")]
pub fn trial_fexit(_ctx: FExitContext) -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
