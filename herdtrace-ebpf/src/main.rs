//! herdtrace eBPF programs. Each program is a thin wrapper that reads its
//! arguments and calls the shared logic in `handlers`, so the fentry, kprobe
//! and tracepoint backends differ only in how they get their arguments.
#![no_std]
#![no_main]

mod chain;
mod emit;
mod handlers;
mod kread;
mod maps;

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext,
        TracePointContext,
    },
};

use aya_ebpf::EbpfContext;

use crate::maps::get;

// Classic tracepoint field offsets (stable since 4.x for these events).
const TP_SYSCALL_ARG0: usize = 16;
const TP_SYSCALL_RET: usize = 16;
const TP_WAKING_COMM: usize = 8;
const TP_WAKING_PID: usize = 24;
const TP_SKADDR: usize = 8;
const TP_ISS_OLDSTATE: usize = 16;
const TP_ISS_NEWSTATE: usize = 20;

/// A field of a classic tracepoint's record. Tracepoint programs may load
/// their record directly (the verifier checks the offset), which costs less
/// than a `bpf_probe_read_kernel` call; every offset here is aligned.
#[inline(always)]
fn tp_read<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(off) as *const T) }
}

// ---- tracepoint backend (also shared by the others) --------------------------
//
// Classic tracepoints only. BTF (raw) tracepoints for the events that fire for
// every wakeup, socket and softirq would cost less (no trace record is built
// first), but with them Debian's 5.10 and 6.1 guests hung (RCU stalls) when
// the tracepoint and kprobe tracers ran together: see docs/kernel-matrix.md.

#[tracepoint]
pub fn tp_sk_data_ready(ctx: TracePointContext) -> u32 {
    handlers::sk_data_ready(tp_read::<u64>(&ctx, TP_SKADDR));
    0
}

#[tracepoint]
pub fn tp_inet_sock_set_state(ctx: TracePointContext) -> u32 {
    handlers::inet_sock_set_state(
        tp_read::<u64>(&ctx, TP_SKADDR),
        tp_read::<i32>(&ctx, TP_ISS_OLDSTATE),
        tp_read::<i32>(&ctx, TP_ISS_NEWSTATE),
    );
    0
}

/// With the tracepoint backend the chain has no return probe to close it,
/// so a time window bounds it; kprobe/fentry close it exactly.
#[tracepoint]
pub fn tp_sched_waking(ctx: TracePointContext) -> u32 {
    handlers::sched_waking(
        tp_read::<i32>(&ctx, TP_WAKING_PID) as u32,
        || tp_read::<[u8; 16]>(&ctx, TP_WAKING_COMM),
        get::CHAIN_WINDOW_NS() != u64::MAX,
    );
    0
}

/// The listener's wakeups run inside the NET_RX softirq that processed the
/// handshake: its end closes the chain exactly (the window then only bounds
/// arrivals processed in process context, from a locked socket's backlog).
#[tracepoint]
pub fn tp_softirq_exit(_ctx: TracePointContext) -> u32 {
    handlers::softirq_exit();
    0
}

#[tracepoint]
pub fn tp_poll_exit(ctx: TracePointContext) -> u32 {
    handlers::poll_exit(tp_read::<i64>(&ctx, TP_SYSCALL_RET));
    0
}

#[tracepoint]
pub fn tp_accept_enter(ctx: TracePointContext) -> u32 {
    handlers::accept_enter(tp_read::<u64>(&ctx, TP_SYSCALL_ARG0) & 0xffff_ffff);
    0
}

/// A traced task starts listening: its port's arrivals are reported from the
/// first connection on (ports listening before the trace began come from /proc).
#[tracepoint]
pub fn tp_listen_enter(ctx: TracePointContext) -> u32 {
    handlers::listen_enter(tp_read::<u64>(&ctx, TP_SYSCALL_ARG0) & 0xffff_ffff);
    0
}

#[tracepoint]
pub fn tp_accept_exit(ctx: TracePointContext) -> u32 {
    handlers::accept_exit(tp_read::<i64>(&ctx, TP_SYSCALL_RET));
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn btf_process_fork(ctx: BtfTracePointContext) -> i32 {
    handlers::process_fork(ctx.arg::<u64>(1));
    0
}

#[tracepoint]
pub fn tp_process_exit(_ctx: TracePointContext) -> u32 {
    handlers::process_exit();
    0
}

// ---- kprobe backend ------------------------------------------------------------

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

#[kprobe]
pub fn kp_ep_send_events(ctx: ProbeContext) -> u32 {
    handlers::ep_send_events_entry(kp_arg(&ctx, 0));
    0
}

#[kretprobe]
pub fn krp_ep_send_events(ctx: RetProbeContext) -> u32 {
    handlers::ep_send_events_exit(ctx.ret::<i32>() as i64);
    0
}

/// `inet_csk_accept(sk, ...)`: only the listener is read (the other
/// parameters changed in 6.10).
#[kprobe]
pub fn kp_inet_csk_accept(ctx: ProbeContext) -> u32 {
    handlers::csk_accept_entry(kp_arg(&ctx, 0));
    0
}

#[kretprobe]
pub fn krp_inet_csk_accept(ctx: RetProbeContext) -> u32 {
    handlers::csk_accept_exit(ctx.ret::<u64>());
    0
}

// ---- fentry backend ---------------------------------------------------------------

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

/// `ep_send_events(ep, events, maxevents)`: the return value follows the
/// three arguments in the fexit context (read directly: `bpf_get_func_ret`
/// needs 5.17).
#[fexit(function = "ep_send_events")]
pub fn fx_ep_send_events(ctx: FExitContext) -> u32 {
    handlers::ep_send_events_entry(ctx.arg::<u64>(0));
    handlers::ep_send_events_exit(ctx.arg::<i32>(3) as i64);
    0
}

#[fentry(function = "inet_csk_accept")]
pub fn fe_inet_csk_accept(ctx: FEntryContext) -> u32 {
    handlers::csk_accept_entry(ctx.arg::<u64>(0));
    0
}

/// The return value follows the parameters: 4 of them up to 6.9, 2 from 6.10.
#[fexit(function = "inet_csk_accept")]
pub fn fx_inet_csk_accept4(ctx: FExitContext) -> u32 {
    handlers::csk_accept_exit(ctx.arg::<u64>(4));
    0
}

#[fexit(function = "inet_csk_accept")]
pub fn fx_inet_csk_accept2(ctx: FExitContext) -> u32 {
    handlers::csk_accept_exit(ctx.arg::<u64>(2));
    0
}

// ---- trial programs for `herdtrace check` (do nothing) ------------------------------

#[tracepoint]
pub fn trial_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn trial_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[kprobe]
pub fn trial_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[fentry(function = "inet_csk_accept")]
pub fn trial_fentry(_ctx: FEntryContext) -> u32 {
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
