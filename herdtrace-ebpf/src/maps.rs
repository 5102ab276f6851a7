//! Maps shared by every program.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use herdtrace_common::{ChainState, ListenKey, CNT_MAX};

/// Every record to user space. User space may resize it (`--ringbuf-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Traced tasks: tid -> tgid (0 until known: a task followed through the
/// classic fork tracepoint, which does not name the new task's process).
/// Keyed by tid because `sched_waking` only names the woken thread; filled by
/// user space at start and by the fork probe.
#[map]
pub static TRACED: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Listening sockets of traced tasks (sk -> local port): learned at
/// `listen()` and `accept()`, or from [`LISTEN_ADDRS`] at their first
/// arrival; forgotten when the listener closes.
#[map]
pub static LISTENERS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// Listeners of traced tasks by namespace, address and port: seeded by user
/// space from the traced processes' own `/proc/PID/net/tcp{,6}`, so a
/// connection to a listener on the same port in another namespace (another
/// container) is never taken for theirs.
#[map]
pub static LISTEN_ADDRS: HashMap<ListenKey, u32> = HashMap::with_max_entries(4096, 0);

/// A task's accept call: its listener, the listener's local port and, for
/// the kprobe backend, the new socket and whether its result is still to be
/// reported.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct AcceptCall {
    pub listener: u64,
    pub newsock: u64,
    pub port: u32,
    /// The listener's network namespace (inode number).
    pub netns: u32,
    /// `PENDING_*` (handlers.rs): where the call's result stands.
    pub pending: u32,
    pub _pad: u32,
}

/// tid -> its accept call (kept until the task exits: a worker accepts on
/// the same listener call after call, so the steady state rewrites in place
/// instead of an insert and a delete, which take the bucket lock).
#[map]
pub static ACCEPT_ARGS: HashMap<u32, AcceptCall> = HashMap::with_max_entries(65536, 0);

/// Tasks that were blocked in accept() when the probes were attached (filled
/// by user space from /proc): the return probe of that call never runs, so
/// the fd it installs reports the accept (fentry backend).
#[map]
pub static ACCEPT_INFLIGHT: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// The wake chain open on each CPU.
#[map]
pub static CHAIN: PerCpuArray<ChainState> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU event sequence (index 0), chain counter (index 1), and how many
/// `send`s are in progress on the CPU (index 2: a program interrupted in
/// `send` by another one).
#[map]
pub static SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(3, 0);

/// Per-CPU timer callbacks in progress: index 0 how many are nested, index 1
/// when the outermost began.
#[map]
pub static TIMER_CB: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Per-CPU counters, indexed by `CNT_*`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CNT_MAX, 0);

/// Epoll instances used by traced tasks (learned from `ep_send_events`,
/// forgotten when the epoll file is released).
#[map]
pub static TRACED_EPS: HashMap<u64, u32> = HashMap::with_max_entries(16384, 0);

/// tid -> chain that woke it, until it returns to user space (then 0: the
/// entry stays until the task exits, because rewriting a value in place is
/// lock-free while an insert or a delete takes the bucket lock): a wakeup it
/// makes meanwhile is part of that chain (cascade).
#[map]
pub static ACTIVE: HashMap<u32, u64> = HashMap::with_max_entries(65536, 0);
