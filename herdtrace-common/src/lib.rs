//! Types shared by the eBPF programs and user space.
//!
//! Every record that crosses the ring buffer is one fixed-size [`RawEvent`]:
//! a flat `#[repr(C)]` struct of integers (no enums, no `Option`) so that both
//! sides agree on the layout byte for byte. User space decodes it field by
//! field from the byte slice (see `herdtrace::events`), never by transmuting.
#![no_std]

/// A connection became ready on a listening socket (the start of a wake chain).
/// `chain`, `sk` = listener, `child` = new socket, `local_port`, `peer_*`, `family`,
/// `aux` = the listener's network namespace (inode number).
pub const EV_ARRIVAL: u32 = 1;
/// A traced task was woken inside a listener's wake chain.
/// `chain`, `sk` = listener, `tid`/`tgid`/`comm` = the woken task, `aux` = eventpoll (0 if unknown).
pub const EV_WAKE: u32 = 2;
/// `ep_poll_callback` ran for one epoll instance inside a wake chain (kprobe/fentry only).
/// `chain`, `sk` = listener, `aux` = eventpoll address.
pub const EV_EPOLL_CB: u32 = 3;
/// A traced task returned from `epoll_wait`/`epoll_pwait`/`epoll_pwait2`. `ret`.
pub const EV_POLL_RET: u32 = 4;
/// `ep_send_events` returned inside `ep_poll` (kprobe/fentry only); `ret` == 0 means
/// the task found nothing and goes back to sleep without returning to user space.
pub const EV_SEND_EVENTS: u32 = 5;
/// A traced task returned from `accept`/`accept4` (or the kernel's `inet_accept`).
/// `ret`, `sk` = listener (0 if unknown), `child` (0 on failure), `local_port`, `comm` (the peer is on the arrival).
pub const EV_ACCEPT_RET: u32 = 6;
/// A traced task forked or cloned a thread: `tid`/`tgid` = child, `aux` = parent tgid, `comm`.
pub const EV_TASK_NEW: u32 = 7;
/// A traced task exited: `tid`/`tgid`.
pub const EV_TASK_EXIT: u32 = 8;

/// Highest event kind this version emits; decoders reject anything above.
pub const EV_MAX: u32 = EV_TASK_EXIT;

/// EV_ARRIVAL: the arrival was inferred from `sock:inet_sock_set_state`
/// (kernels before 6.6 have no `sock:sk_data_ready`), which is less precise.
pub const FLAG_ARRIVAL_SUBSTITUTE: u16 = 1 << 1;
/// EV_ACCEPT_RET: the accept came from the kernel's `inet_accept` (kprobe/fentry
/// backends) rather than the syscall exit.
pub const FLAG_ACCEPT_KERNEL: u16 = 1 << 2;
/// EV_WAKE: not nested in the listener's wakeup but done by a task that this
/// chain woke, before it returned to user space (shared epoll in LT mode: the
/// woken thread wakes the next one).
pub const FLAG_WAKE_CASCADE: u16 = 1 << 3;
/// EV_WAKE, EV_POLL_RET, EV_SEND_EVENTS, EV_ACCEPT_RET, EV_TASK_EXIT: the
/// task returned from `epoll_wait` before this event, and that return was not
/// reported on its own (no wake of the task was waiting on it: see
/// [`POLL_HELD`]). User space handles that return first, then this event.
pub const FLAG_AFTER_POLL: u16 = 1 << 4;
/// With [`FLAG_AFTER_POLL`]: that return gave events (> 0).
pub const FLAG_AFTER_POLL_WORK: u16 = 1 << 5;
/// Any kind: emitted by a program that interrupted another one's emission on
/// the same CPU, which took the previous sequence number and has not
/// reserved its record yet. That record arrives after this one: a gap of one
/// just before this event is a reordering, not (yet) a loss.
pub const FLAG_NESTED_SEND: u16 = 1 << 15;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Size in bytes of one [`RawEvent`] on the wire and in recordings.
pub const RAW_EVENT_SIZE: usize = 112;

/// One event, as written by the eBPF programs into the ring buffer.
///
/// Field meaning depends on `kind` (see the `EV_*` constants); unused fields
/// are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    pub kind: u32,
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Per-CPU sequence number, incremented for every event the CPU tried to
    /// emit; a gap means the ring buffer was full and events were lost.
    pub seq: u64,
    pub tgid: u32,
    pub tid: u32,
    /// Wake-chain id: `(cpu << 48) | per-CPU counter`.
    pub chain: u64,
    /// Listening socket (kernel address, used only as an identity).
    pub sk: u64,
    /// Accepted child socket (kernel address, identity only).
    pub child: u64,
    pub ret: i64,
    pub aux: u64,
    /// IPv4 in the first 4 bytes, or IPv6; network byte order.
    pub peer_addr: [u8; 16],
    /// Host byte order.
    pub peer_port: u16,
    /// Host byte order.
    pub local_port: u16,
    pub family: u16,
    pub flags: u16,
    pub comm: [u8; 16],
}

/// A task's accept call: its listener, the listener's local port and
/// namespace, for the kprobe backend the new socket and whether its result
/// is still to be reported, and for the tracepoint backend the listener's
/// file descriptor (eBPF side only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptCall {
    pub listener: u64,
    pub newsock: u64,
    pub port: u32,
    /// The listener's network namespace (inode number).
    pub netns: u32,
    /// `PENDING_*` (eBPF handlers): where the call's result stands.
    pub pending: u32,
    /// Tracepoint backend: the fd the call was made on, from its entry to
    /// its exit ([`NO_FD`] otherwise). The exit finds both sockets in one
    /// walk of the fd table.
    pub fd: i32,
}

/// [`TaskState::poll`]: a wake of the task was reported and user space has
/// not seen it end (no epoll return, `ep_send_events` or accept reported
/// since), so its next epoll return is reported at once: it says whether
/// that wake found work.
pub const POLL_WAKE_REPORTED: u32 = 1;
/// [`TaskState::poll`]: the task returned from `epoll_wait` and no reported
/// wake waited on that return. It is not sent on its own but marked on the
/// task's next event ([`FLAG_AFTER_POLL`]): user space then handles it just
/// before that event, as if it had come on its own, since nothing but the
/// task's own later events depends on it. A busy worker, which finds
/// events without sleeping, makes one record less per connection. Two such
/// returns in a row are one: the second changes nothing the first did not.
pub const POLL_HELD: u32 = 2;
/// [`TaskState::poll`], with [`POLL_HELD`]: that return gave events.
pub const POLL_HELD_WORK: u32 = 4;

/// [`AcceptCall::fd`] when no accept entry was seen.
pub const NO_FD: i32 = -1;

/// A traced task (the `TRACED` map's value, keyed by thread id): everything
/// the programs keep per task in one entry, so a program finds it with one
/// hash lookup. User space adds a task with only `tgid` set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskState {
    /// 0 until known: a task followed through the classic fork tracepoint,
    /// which does not name the new task's process.
    pub tgid: u32,
    /// `POLL_*` bits: whether user space waits on the task's next epoll
    /// return, and a return not reported yet.
    pub poll: u32,
    /// The wake chain that woke the task, until it returns to user space
    /// (0: none): a wakeup it makes meanwhile is part of that chain.
    pub woken_by: u64,
    /// Its last accept call (zero: none seen since the probes were attached).
    pub accept: AcceptCall,
}

impl TaskState {
    /// A task user space starts following.
    pub const fn new(tgid: u32) -> Self {
        TaskState {
            tgid,
            poll: 0,
            woken_by: 0,
            accept: AcceptCall {
                listener: 0,
                newsock: 0,
                port: 0,
                netns: 0,
                pending: 0,
                fd: NO_FD,
            },
        }
    }
}

/// Per-CPU state of the wake chain currently open on that CPU (eBPF side only,
/// shared here so the layout is documented in one place).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ChainState {
    pub id: u64,
    pub listener: u64,
    pub child: u64,
    pub opened_ns: u64,
    /// Non-zero while the chain is open (`OPEN_*` on the eBPF side).
    pub open: u32,
    /// Non-zero once EV_ARRIVAL was emitted for this chain.
    pub emitted: u32,
    pub peer_addr: [u8; 16],
    pub peer_port: u16,
    pub local_port: u16,
    pub family: u16,
    /// EV_ARRIVAL flags to report.
    pub arrival_flags: u16,
    /// `__wake_up_common` nesting depth (kprobe/fentry backends).
    pub depth: u32,
    /// Depth at which the listener chain opened: it ends when the call at
    /// that depth returns (a softirq can open one inside an unrelated,
    /// interrupted wakeup, so it is not always the outermost call).
    pub open_depth: u32,
    /// The eventpoll whose `ep_poll_callback` is running (kprobe/fentry backends).
    pub cur_ep: u64,
    /// The child socket that most recently completed its handshake on this
    /// CPU, its listener (0 when the probe cannot name it), when, and its
    /// local port: the listener's wakeup follows on the same CPU, so this
    /// names the new connection exactly (the accept queue's tail may
    /// already hold another CPU's child).
    pub est_child: u64,
    pub est_listener: u64,
    pub est_ns: u64,
    /// `est_listener`'s wait-queue head, read once per connection so its
    /// wakeup is recognised without a read (kprobe/fentry backends).
    pub est_wait: u64,
    /// The chain id under which the kprobe/fentry backends already reported
    /// this connection's arrival (at the accept queue, before any wakeup:
    /// with no task asleep on the listener there is none); 0 if not.
    pub est_chain: u64,
    pub est_port: u16,
    /// Non-zero inside `inet_csk_complete_hashdance` (kprobe/fentry): the
    /// `inet_csk_reqsk_queue_add` it calls is that same connection.
    pub in_hashdance: u16,
    /// Network namespace (inode number) of the chain's listener.
    pub netns: u32,
    /// `bpf_get_current_pid_tgid()` where the chain opened: a softirq runs
    /// in the context it interrupted, so a wakeup from any other task is
    /// not this connection's, however little time passed.
    pub opener: u64,
}

/// Identity of a listening socket without its kernel address: network
/// namespace (inode number of `/proc/PID/ns/net`), address and port. User
/// space seeds these from the traced processes' own `/proc/PID/net/tcp{,6}`;
/// the kernel side learns more at `listen()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenKey {
    pub netns: u32,
    /// Local port, host order.
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local address as stored in the socket (IPv4 in the first 4 bytes);
    /// all zero for a wildcard listener.
    pub addr: [u8; 16],
}

/// Everything user space tells the programs, set once before loading as the
/// single global `CONFIG`. Kernel struct offsets come from the running
/// kernel's BTF (aya-ebpf has no CO-RE), classic tracepoint field offsets
/// from tracefs `format` files; names are the kernel's own (`struct_member`).
/// A zero offset means "not available on this kernel" only where the
/// member's own doc says so.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    // ---- struct member offsets (bytes), from BTF
    pub task_struct_pid: u32,
    pub task_struct_tgid: u32,
    pub task_struct_comm: u32,
    pub task_struct_files: u32,
    pub files_struct_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
    pub sock_common_skc_daddr: u32,
    pub sock_common_skc_rcv_saddr: u32,
    pub sock_common_skc_dport: u32,
    pub sock_common_skc_num: u32,
    pub sock_common_skc_family: u32,
    pub sock_common_skc_state: u32,
    pub sock_common_skc_v6_daddr: u32,
    pub sock_common_skc_v6_rcv_saddr: u32,
    /// `sock_common.skc_net` (a `possible_net_t`: the `struct net *`).
    pub sock_common_skc_net: u32,
    /// `net.ns.inum`: the namespace's inode number, as `/proc/PID/ns/net` shows it.
    pub net_ns_inum: u32,
    pub inet_connection_sock_rskq_accept_tail: u32,
    pub request_sock_sk: u32,
    pub eppoll_entry_base: u32,
    pub eppoll_entry_wait: u32,
    pub epitem_ffd_file: u32,
    pub epitem_ep: u32,
    pub sock_sk_wq: u32,
    pub socket_wq_wait: u32,
    /// `io_kiocb.opcode` (an io_uring request's operation).
    pub io_kiocb_opcode: u32,
    /// `io_kiocb.ctx` (the request's ring) and `io_kiocb.cqe.user_data`:
    /// the BTF io_uring tracepoints get the request, not these fields.
    pub io_kiocb_ctx: u32,
    pub io_kiocb_user_data: u32,
    // ---- layouts checked in BTF (non-zero: one read covers several members)
    /// `sock_common` holds daddr, rcv_saddr, dport, num, family and state in
    /// its first 20 bytes at their usual places.
    pub sock_common_head_packed: u32,
    /// `fdtable.fd` sits 8 bytes after `fdtable.max_fds`.
    pub fdtable_packed: u32,
    // ---- classic tracepoint record offsets, from tracefs format files
    pub sched_waking_pid: u32,
    pub sched_waking_comm: u32,
    pub sched_process_fork_child_pid: u32,
    pub sk_data_ready_skaddr: u32,
    pub inet_sock_set_state_skaddr: u32,
    pub inet_sock_set_state_oldstate: u32,
    pub inet_sock_set_state_newstate: u32,
    /// `syscalls:sys_enter_{accept,accept4,listen}`: the `fd` argument.
    pub sys_enter_fd: u32,
    /// `syscalls:sys_exit_*`: `ret`.
    pub sys_exit_ret: u32,
    /// `io_uring:io_uring_submit_sqe` (kernels before 5.19): the ring, the
    /// request's user data and its opcode.
    pub uring_submit_ctx: u32,
    pub uring_submit_user_data: u32,
    pub uring_submit_opcode: u32,
    /// `io_uring:io_uring_complete`: the ring, the user data, the result
    /// (read as 32 bits: a `long` before 5.13, an `int` since) and the CQE
    /// flags (0: the record has none, before 5.13).
    pub uring_complete_ctx: u32,
    /// The request (5.19+), whose opcode tells an accept's completion.
    pub uring_complete_req: u32,
    pub uring_complete_user_data: u32,
    pub uring_complete_res: u32,
    pub uring_complete_cflags: u32,
    /// `io_uring:io_uring_task_add` (a request's poll woke): the ring, the
    /// user data and the opcode. (Keep the count of u32s even: the u64s
    /// below must need no hole, which the layout test checks.)
    pub uring_task_add_ctx: u32,
    pub uring_task_add_user_data: u32,
    pub uring_task_add_opcode: u32,
    // ---- behaviour
    /// Non-zero: `inet_sock_set_state` opens chains (tracepoint backend on
    /// kernels without `sock:sk_data_ready`).
    pub iss_opens_chain: u32,
    /// Only connections to this local port (0 = all).
    pub port_filter: u32,
    /// A tracepoint-backend wake chain closes this long after it opened, at
    /// the latest; 0: no time bound (its softirq's end closes it).
    pub chain_window_ns: u64,
    /// Bytes waiting in the ring buffer from which a submit wakes the reader.
    /// Below it the reader is not woken (it polls on a short timer): a
    /// wakeup issued from inside our program runs `sched_waking` while the
    /// program is still running, and the kernel's recursion guard then skips
    /// every tracing program on that CPU, so it costs events, not only time.
    pub ringbuf_wake_bytes: u64,
    /// Records go to one of `EVENT_SHARDS_MAX` ring buffers, the one of
    /// `cpu & event_shard_mask` (the shards in use minus one, a power of two
    /// minus one): CPUs that share a ring buffer contend for its lock and
    /// move its cache lines between them on every record.
    pub event_shard_mask: u64,
}

/// Ring buffers the programs can send records to (`EVENTS`, `EVENTS1`, ...);
/// user space uses as many as there are CPUs, up to this, a power of two.
pub const EVENT_SHARDS_MAX: u32 = 8;

/// Indexes into the `COUNTERS` per-CPU array map.
pub const CNT_DROPS: u32 = 0;
// Index 1 counted the events sent; nothing read it, and the sequence
// numbers count them: no longer kept (a lookup and an atomic add a record).
/// `COUNTERS[CNT_INSERT_FAILED + MAP_*]`: inserts into that map that failed
/// (map full): what the programs could not remember.
pub const CNT_INSERT_FAILED: u32 = 2;
pub const MAP_TRACED: u32 = 0;
pub const MAP_LISTENERS: u32 = 1;
pub const MAP_LISTEN_ADDRS: u32 = 2;
pub const MAP_TRACED_EPS: u32 = 3;
pub const MAP_ACCEPT_INFLIGHT: u32 = 4;
pub const MAP_URING_ACCEPTS: u32 = 5;
/// Map names by `MAP_*` index, as user space reports them.
pub const MAP_NAMES: [&str; 6] = [
    "TRACED",
    "LISTENERS",
    "LISTEN_ADDRS",
    "TRACED_EPS",
    "ACCEPT_INFLIGHT",
    "URING_ACCEPTS",
];

/// Slots of `TRACED_FILTER`, the filter in front of the traced-task map.
/// `sched_waking` runs for every wakeup of the machine and most are of
/// untraced tasks; a hash-map lookup that finds nothing cost them 45 ns. A
/// slot counts the traced tasks whose tid falls on it ([`traced_slot`]), so
/// a task whose slot is 0 is untraced after one array load.
pub const TRACED_SLOTS: u32 = 4096;
/// A slot user space set: user space cannot add atomically beside the
/// programs, so it marks a slot of a task it traces as this, which no
/// number of exits brings back to 0. (Only a slot's 0 is trusted; more
/// than its tasks just costs the lookup.)
pub const TRACED_SLOT_PINNED: u64 = 1 << 40;

/// The `TRACED_FILTER` slot of task `tid`.
pub const fn traced_slot(tid: u32) -> u32 {
    tid & (TRACED_SLOTS - 1)
}

/// `IORING_OP_ACCEPT`: io_uring's opcodes are ABI, numbered alike on every kernel.
pub const IORING_OP_ACCEPT: u8 = 13;
/// `IORING_CQE_F_MORE`: a multishot request stays armed after this completion.
pub const IORING_CQE_F_MORE: u32 = 1 << 1;

/// An io_uring accept request in flight, as both of its tracepoints name
/// it: the ring and the request's user data. (Only 5.19+ records carry the
/// request's address in both; a server must tell its accept completions
/// from its others by the user data anyway.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UringKey {
    pub ring: u64,
    pub user_data: u64,
}
pub const CNT_MAX: u32 = CNT_INSERT_FAILED + MAP_NAMES.len() as u32;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data, every bit pattern is valid.
    unsafe impl aya::Pod for super::ChainState {}
    // SAFETY: plain old data (integers and byte arrays), no padding holes
    // that the kernel would read as anything but bytes.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ListenKey {}
    // SAFETY: as above (two u64s).
    unsafe impl aya::Pod for super::UringKey {}
    // SAFETY: as above (integers only; the layout test checks no padding).
    unsafe impl aya::Pod for super::TaskState {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn traced_slots_cover_every_tid_and_spread_neighbours() {
        assert!(TRACED_SLOTS.is_power_of_two());
        assert_eq!(traced_slot(0), 0);
        assert_eq!(traced_slot(TRACED_SLOTS - 1), TRACED_SLOTS - 1);
        assert_eq!(traced_slot(TRACED_SLOTS), 0);
        assert_eq!(traced_slot(u32::MAX), TRACED_SLOTS - 1);
        // A server's workers have neighbouring tids: each its own slot.
        let slots: std::collections::BTreeSet<u32> = (4000..4064).map(traced_slot).collect();
        assert_eq!(slots.len(), 64);
    }

    #[test]
    fn raw_event_size_is_the_wire_size() {
        assert_eq!(core::mem::size_of::<RawEvent>(), RAW_EVENT_SIZE);
        assert_eq!(core::mem::align_of::<RawEvent>(), 8);
    }

    /// No implicit padding: the kernel side reads these byte for byte.
    #[test]
    fn shared_structs_have_no_hidden_padding() {
        use core::mem::{offset_of, size_of};
        assert_eq!(size_of::<ListenKey>(), 4 + 2 + 2 + 16);
        assert_eq!(size_of::<ChainState>(), 136);
        assert_eq!(size_of::<AcceptCall>(), 8 + 8 + 4 * 4);
        assert_eq!(size_of::<TaskState>(), 4 + 4 + 8 + size_of::<AcceptCall>());
        assert_eq!(
            offset_of!(ChainState, opener),
            offset_of!(ChainState, netns) + 4
        );
        // The u64s follow the last u32 directly (an odd number of u32s would
        // leave a hole before them).
        assert_eq!(
            offset_of!(Config, chain_window_ns),
            offset_of!(Config, port_filter) + 4
        );
        assert_eq!(
            size_of::<Config>(),
            offset_of!(Config, event_shard_mask) + 8
        );
    }

    #[test]
    fn counter_indexes_fit() {
        assert_eq!(CNT_MAX as usize, 2 + MAP_NAMES.len());
        assert_eq!(MAP_NAMES[MAP_ACCEPT_INFLIGHT as usize], "ACCEPT_INFLIGHT");
    }
}
