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
    let max_fds: u32 = match read(fdt, get::OFF_FDT_MAX_FDS()) {
        Some(v) => v,
        None => return 0,
    };
    if fd >= max_fds as u64 {
        return 0;
    }
    let fd_array: u64 = read(fdt, get::OFF_FDT_FD()).unwrap_or(0);
    if fd_array == 0 {
        return 0;
    }
    let file: u64 = read(fd_array, (fd * 8) as u32).unwrap_or(0);
    file_to_sk(file)
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

/// The child socket most recently queued on a listener's accept queue.
#[inline(always)]
pub fn accept_queue_tail(listener: u64) -> u64 {
    let req: u64 = read(listener, get::OFF_ACCEPT_TAIL()).unwrap_or(0);
    read(req, get::OFF_RSK_SK()).unwrap_or(0)
}

/// Peer address of a connected socket: (family, addr bytes, port in host order).
#[inline(always)]
pub fn sk_peer(sk: u64) -> (u16, [u8; 16], u16) {
    let mut addr = [0u8; 16];
    let family: u16 = read(sk, get::OFF_SKC_FAMILY()).unwrap_or(0);
    if family == AF_INET6 {
        addr = read(sk, get::OFF_SKC_V6_DADDR()).unwrap_or(addr);
    } else {
        let v4: [u8; 4] = read(sk, get::OFF_SKC_DADDR()).unwrap_or([0; 4]);
        addr[0] = v4[0];
        addr[1] = v4[1];
        addr[2] = v4[2];
        addr[3] = v4[3];
    }
    let port_be: u16 = read(sk, get::OFF_SKC_DPORT()).unwrap_or(0);
    (family, addr, u16::from_be(port_be))
}
