//! Maps shared by every program.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use herdtrace_common::{ChainState, ListenKey, TaskState, UringKey, CNT_MAX, TRACED_SLOTS};

/// Every record to user space, one ring buffer per group of CPUs (shard
/// `cpu & Config::event_shard_mask`, see `emit::shard`). User space sizes
/// them (`--ringbuf-size` split between the shards in use; the others get
/// one page, the sizes below are placeholders) and merges their records by
/// time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);
#[map]
pub static EVENTS1: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS2: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS3: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS4: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS5: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS6: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
pub static EVENTS7: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Traced tasks: tid -> [`TaskState`] (its process, the chain that woke
/// it, its accept call), one entry so each program needs one lookup. Keyed
/// by tid because `sched_waking` only names the woken thread; filled by user
/// space at start and by the fork probe, removed at the task's exit.
#[map]
pub static TRACED: HashMap<u32, TaskState> = HashMap::with_max_entries(65536, 0);

/// Traced tasks per slot of their tid (`traced_slot`): a task whose slot is
/// 0 is not in [`TRACED`], told by one array load instead of a hash lookup
/// (`chain::traced_task`). The programs count their own inserts and
/// removals atomically; user space pins the slots of the tasks it adds.
#[map]
pub static TRACED_FILTER: Array<u64> = Array::with_max_entries(TRACED_SLOTS, 0);

/// Listening sockets of traced tasks (sk -> local port and network
/// namespace, `chain::listener_value`): learned at `listen()` and
/// `accept()`, or from [`LISTEN_ADDRS`] at their first arrival; forgotten
/// when the listener closes.
#[map]
pub static LISTENERS: HashMap<u64, u64> = HashMap::with_max_entries(4096, 0);

/// Listeners of traced tasks by namespace, address and port: seeded by user
/// space from the traced processes' own `/proc/PID/net/tcp{,6}`, so a
/// connection to a listener on the same port in another namespace (another
/// container) is never taken for theirs.
#[map]
pub static LISTEN_ADDRS: HashMap<ListenKey, u32> = HashMap::with_max_entries(4096, 0);

/// Tasks that were blocked in accept() when the probes were attached (filled
/// by user space from /proc): the return probe of that call never runs, so
/// the fd it installs reports the accept (fentry backend).
#[map]
pub static ACCEPT_INFLIGHT: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// The wake chain open on each CPU.
#[map]
pub static CHAIN: PerCpuArray<ChainState> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU counters of the sending path, in one value so that a send
/// looks them up once.
#[repr(C)]
pub struct Sequences {
    /// The last event sequence number taken on this CPU.
    pub event: u64,
    /// The last wake-chain number.
    pub chain: u64,
    /// Sends in progress on this CPU (more than one: a program interrupted
    /// in a send by another one).
    pub sending: u64,
}

#[map]
pub static SEQ: PerCpuArray<Sequences> = PerCpuArray::with_max_entries(1, 0);

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

/// io_uring accept requests submitted by traced tasks or woken by a traced
/// listener (tracepoint backend), until their last completion: a
/// completion's result is a new fd only for these.
#[map]
pub static URING_ACCEPTS: HashMap<UringKey, u32> = HashMap::with_max_entries(16384, 0);
