//! Maps and load-time constants shared by every program.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use herdtrace_common::{ChainState, CNT_MAX};

/// Every record to user space. User space may resize it (`--ringbuf-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Traced tasks: tid -> tgid. Keyed by tid because `sched_waking` only names
/// the woken thread; filled by user space at start and by the fork tracer.
#[map]
pub static TRACED: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Listening sockets a traced task has called accept on (sk -> local port):
/// lets an arrival be reported even when it woke nobody.
#[map]
pub static LISTENERS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// The listener of a task's accept call and its local port.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct AcceptCall {
    pub listener: u64,
    pub port: u64,
}

/// tid -> its accept call (set at entry, read at exit, kept until the task
/// exits: see `handlers::remember_accept_listener`).
#[map]
pub static ACCEPT_ARGS: HashMap<u32, AcceptCall> = HashMap::with_max_entries(65536, 0);

/// The wake chain open on each CPU.
#[map]
pub static CHAIN: PerCpuArray<ChainState> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU event sequence (index 0), chain counter (index 1), and how many
/// `send`s are in progress on the CPU (index 2: a program interrupted in
/// `send` by another one).
#[map]
pub static SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(3, 0);

/// Per-CPU counters, indexed by `CNT_*`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CNT_MAX, 0);

/// Declares load-time constants that user space sets with `EbpfLoader::set_global`
/// (aya-ebpf has no CO-RE, so struct offsets come from the running kernel's BTF).
macro_rules! globals {
    ($($(#[$m:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$m])*
            #[unsafe(no_mangle)]
            pub static $name: $ty = 0;
        )*
        pub mod get {
            $(
                #[inline(always)]
                #[allow(non_snake_case)]
                pub fn $name() -> $ty {
                    // Volatile so LLVM does not fold the compile-time 0.
                    unsafe { core::ptr::read_volatile(&super::$name) }
                }
            )*
        }
    };
}

globals! {
    OFF_TASK_PID: u32,
    OFF_TASK_TGID: u32,
    OFF_TASK_FILES: u32,
    OFF_FILES_FDT: u32,
    OFF_FDT_MAX_FDS: u32,
    OFF_FDT_FD: u32,
    OFF_FILE_PRIVATE: u32,
    OFF_SOCKET_SK: u32,
    OFF_SKC_STATE: u32,
    OFF_SKC_NUM: u32,
    OFF_SKC_DPORT: u32,
    OFF_SKC_DADDR: u32,
    OFF_SKC_FAMILY: u32,
    OFF_SKC_V6_DADDR: u32,
    OFF_ACCEPT_TAIL: u32,
    OFF_RSK_SK: u32,
    OFF_EPPOLL_BASE: u32,
    OFF_EPPOLL_WAIT: u32,
    OFF_EPI_FILE: u32,
    OFF_EPI_EP: u32,
    OFF_SK_WQ: u32,
    OFF_WQ_WAIT: u32,
    /// Non-zero: `sock_common` has its usual head layout (see `kread::sk_head`).
    SKC_HEAD_PACKED: u32,
    /// Non-zero: `fdtable.fd` sits 8 bytes after `max_fds`.
    FDT_PACKED: u32,
    /// Non-zero: the accept syscall exits report only failures (kprobe/fentry
    /// backends report successes from `inet_csk_accept`'s return).
    ACCEPT_EXIT_ERRORS_ONLY: u32,
    /// Non-zero: `inet_sock_set_state` opens chains (tracepoint backend on
    /// kernels without `sock:sk_data_ready`).
    ISS_OPENS_CHAIN: u32,
    /// Only connections to this local port (0 = all).
    PORT_FILTER: u32,
    /// A wake chain closes this long after it opened, at the latest.
    CHAIN_WINDOW_NS: u64,
    /// Bytes waiting in the ring buffer from which a submit wakes the reader.
    /// Below it the reader is not woken (it polls on a short timer): a
    /// wakeup issued from inside our program runs `sched_waking` while the
    /// program is still running, and the kernel's recursion guard then skips
    /// every tracing program on that CPU, so it costs events, not only time.
    RINGBUF_WAKE_BYTES: u64,
}

/// Listening ports a traced task accepts on (for arrivals whose listener
/// socket is unknown: the pre-6.6 tracepoint substitute).
#[map]
pub static LISTEN_PORTS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

/// Epoll instances used by traced tasks (learned from `ep_send_events`).
#[map]
pub static TRACED_EPS: HashMap<u64, u32> = HashMap::with_max_entries(16384, 0);

/// Listener wait-queue head -> listener sk (learned at `inet_csk_accept`),
/// so a blocking accept's direct wakeup opens a chain.
#[map]
pub static LISTENER_WQS: HashMap<u64, u64> = HashMap::with_max_entries(4096, 0);

/// tids whose current accept was reported by `inet_csk_accept`'s return
/// probe (value 1; 0 once the syscall exit has seen it, the entry is kept
/// so the steady state writes in place): the syscall exit then stays silent. A return probe can miss (a call
/// already in progress when probes were attached; kretprobe instances run out
/// when more tasks sleep inside `inet_csk_accept` than there are CPUs on
/// non-preemptible kernels); the syscall exit reports those accepts instead.
#[map]
pub static ACCEPT_SEEN: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// tid -> eventpoll of the running `ep_send_events` (kprobe backend).
#[map]
pub static SEND_EP: HashMap<u32, u64> = HashMap::with_max_entries(65536, 0);

/// tid -> chain that woke it, until it returns to user space (then 0: the
/// entry stays until the task exits, because rewriting a value in place is
/// lock-free while an insert or a delete takes the bucket lock): a wakeup it
/// makes meanwhile is part of that chain (cascade).
#[map]
pub static ACTIVE: HashMap<u32, u64> = HashMap::with_max_entries(65536, 0);
