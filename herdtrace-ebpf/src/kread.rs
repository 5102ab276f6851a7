//! Reading kernel structures at offsets handed in by user space.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

use crate::maps::get;

pub const TCP_LISTEN: u8 = 10;
const AF_INET6: u16 = 10;

#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// The kernel `struct sock` behind file descriptor `fd` of the current task.
#[inline(always)]
pub fn fd_to_sk(fd: u64) -> u64 {
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, get::OFF_TASK_FILES()).unwrap_or(0);
    let fdt: u64 = read(files, get::OFF_FILES_FDT()).unwrap_or(0);
    let (max_fds, fd_array) = fdtable(fdt);
    if fd >= max_fds as u64 || fd_array == 0 {
        return 0;
    }
    let file: u64 = read(fd_array, (fd * 8) as u32).unwrap_or(0);
    file_to_sk(file)
}

/// `(max_fds, fd)` of an fdtable: one read when they sit side by side.
#[inline(always)]
fn fdtable(fdt: u64) -> (u32, u64) {
    if get::FDT_PACKED() != 0 {
        let both: [u64; 2] = read(fdt, get::OFF_FDT_MAX_FDS()).unwrap_or([0; 2]);
        return (both[0] as u32, both[1]);
    }
    let Some(max_fds) = read::<u32>(fdt, get::OFF_FDT_MAX_FDS()) else {
        return (0, 0);
    };
    (max_fds, read(fdt, get::OFF_FDT_FD()).unwrap_or(0))
}

/// `file->private_data` is the `struct socket` for socket files.
#[inline(always)]
pub fn file_to_sk(file: u64) -> u64 {
    let sock: u64 = read(file, get::OFF_FILE_PRIVATE()).unwrap_or(0);
    read(sock, get::OFF_SOCKET_SK()).unwrap_or(0)
}

#[inline(always)]
pub fn sk_state(sk: u64) -> u8 {
    read(sk, get::OFF_SKC_STATE()).unwrap_or(0)
}

#[inline(always)]
pub fn sk_local_port(sk: u64) -> u16 {
    read(sk, get::OFF_SKC_NUM()).unwrap_or(0)
}

/// The fields of `struct sock_common` a connection is reported with.
#[derive(Clone, Copy, Default)]
pub struct SkHead {
    pub daddr: [u8; 4],
    /// Peer port, host order.
    pub dport: u16,
    /// Local port.
    pub num: u16,
    pub family: u16,
    pub state: u8,
}

/// Reads `sk`'s head: one helper call for the 20 bytes from `skc_daddr` to
/// `skc_state` when user space found the usual layout (`SKC_HEAD_PACKED`),
/// otherwise one call per field. A helper call costs about as much whether
/// it copies 1 byte or 20.
#[inline(always)]
pub fn sk_head(sk: u64) -> SkHead {
    if get::SKC_HEAD_PACKED() != 0 {
        let b: [u8; 20] = read(sk, get::OFF_SKC_DADDR()).unwrap_or([0; 20]);
        return SkHead {
            daddr: [b[0], b[1], b[2], b[3]],
            dport: u16::from_be_bytes([b[12], b[13]]),
            num: u16::from_ne_bytes([b[14], b[15]]),
            family: u16::from_ne_bytes([b[16], b[17]]),
            state: b[18],
        };
    }
    SkHead {
        daddr: read(sk, get::OFF_SKC_DADDR()).unwrap_or([0; 4]),
        dport: u16::from_be(read(sk, get::OFF_SKC_DPORT()).unwrap_or(0)),
        num: sk_local_port(sk),
        family: read(sk, get::OFF_SKC_FAMILY()).unwrap_or(0),
        state: sk_state(sk),
    }
}

/// The child socket most recently queued on a listener's accept queue.
#[inline(always)]
pub fn accept_queue_tail(listener: u64) -> u64 {
    let req: u64 = read(listener, get::OFF_ACCEPT_TAIL()).unwrap_or(0);
    read(req, get::OFF_RSK_SK()).unwrap_or(0)
}

/// Peer address of a connected socket: (family, addr bytes, port in host order).
#[inline(always)]
pub fn sk_peer(sk: u64) -> (u16, [u8; 16], u16) {
    let head = sk_head(sk);
    let mut addr = [0u8; 16];
    if head.family == AF_INET6 {
        addr = read(sk, get::OFF_SKC_V6_DADDR()).unwrap_or(addr);
    } else {
        addr[0] = head.daddr[0];
        addr[1] = head.daddr[1];
        addr[2] = head.daddr[2];
        addr[3] = head.daddr[3];
    }
    (head.family, addr, head.dport)
}
