//! Types shared by the eBPF programs and user space.
//!
//! Every record that crosses the ring buffer is one fixed-size [`RawEvent`]:
//! a flat `#[repr(C)]` struct of integers (no enums, no `Option`) so that both
//! sides agree on the layout byte for byte. User space decodes it field by
//! field from the byte slice (see `herdtrace::events`), never by transmuting.
#![no_std]

/// A connection became ready on a listening socket (the start of a wake chain).
/// `chain`, `sk` = listener, `child` = new socket, `local_port`, `peer_*`, `family`.
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
/// A traced task returned from `accept`/`accept4` (or `inet_csk_accept`).
/// `ret`, `sk` = listener (0 if unknown), `child` (0 on failure), `local_port`, `comm` (the peer is on the arrival).
pub const EV_ACCEPT_RET: u32 = 6;
/// A traced task forked or cloned a thread: `tid`/`tgid` = child, `aux` = parent tgid, `comm`.
pub const EV_TASK_NEW: u32 = 7;
/// A traced task exited: `tid`/`tgid`, `flags` & [`FLAG_GROUP_DEAD`].
pub const EV_TASK_EXIT: u32 = 8;

/// Highest event kind this version emits; decoders reject anything above.
pub const EV_MAX: u32 = EV_TASK_EXIT;

/// EV_TASK_EXIT: the whole thread group is gone.
pub const FLAG_GROUP_DEAD: u16 = 1 << 0;
/// EV_ARRIVAL: the arrival was inferred from `sock:inet_sock_set_state`
/// (kernels before 6.6 have no `sock:sk_data_ready`), which is less precise.
pub const FLAG_ARRIVAL_SUBSTITUTE: u16 = 1 << 1;
/// EV_ACCEPT_RET: the accept came from `inet_csk_accept` (kprobe/fentry) rather
/// than the syscall exit.
pub const FLAG_ACCEPT_KERNEL: u16 = 1 << 2;
/// EV_WAKE: not nested in the listener's wakeup but done by a task that this
/// chain woke, before it returned to user space (shared epoll in LT mode: the
/// woken thread wakes the next one).
pub const FLAG_WAKE_CASCADE: u16 = 1 << 3;
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

/// Per-CPU state of the wake chain currently open on that CPU (eBPF side only,
/// shared here so the layout is documented in one place).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ChainState {
    pub id: u64,
    pub listener: u64,
    pub child: u64,
    pub opened_ns: u64,
    /// Non-zero while the chain is open.
    pub open: u32,
    /// Non-zero once EV_ARRIVAL was emitted for this chain.
    pub emitted: u32,
    pub peer_addr: [u8; 16],
    pub peer_port: u16,
    pub local_port: u16,
    pub family: u16,
    /// EV_ARRIVAL flags to report.
    pub _pad: u16,
    /// `__wake_up_common` nesting depth (kprobe/fentry backends).
    pub depth: u32,
    pub _pad2: u32,
    /// The eventpoll whose `ep_poll_callback` is running (kprobe/fentry backends).
    pub cur_ep: u64,
    /// The child socket that last went SYN_RECV -> ESTABLISHED on this CPU,
    /// when, and its local port: the listener's `sk_data_ready` follows on the
    /// same CPU, so this names the new connection exactly (the accept queue's
    /// tail may already hold another CPU's child).
    pub est_child: u64,
    pub est_ns: u64,
    pub est_port: u16,
    pub _pad3: [u16; 3],
}

/// Indexes into the `COUNTERS` per-CPU array map.
pub const CNT_DROPS: u32 = 0;
pub const CNT_EVENTS: u32 = 1;
pub const CNT_MAX: u32 = 4;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain old data, every bit pattern is valid.
    unsafe impl aya::Pod for super::ChainState {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn raw_event_size_is_the_wire_size() {
        assert_eq!(core::mem::size_of::<RawEvent>(), RAW_EVENT_SIZE);
        assert_eq!(core::mem::align_of::<RawEvent>(), 8);
    }
}
