//! Reading kernel structures at the offsets user space found in BTF.
use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel, generated,
};
use aya_log_ebpf::warn;
use herdtrace_common::{ListenKey, AF_INET6};

use crate::config::conf;

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_RECV: u8 = 3;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LISTEN: u8 = 10;

#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T).ok() }
}

/// A field of a BTF program's pointer argument (`struct sock *`, `struct
/// task_struct *`), loaded directly: the verifier checks the offset against
/// the kernel's BTF and the JIT makes the load fault-safe, so it costs one
/// instruction where `bpf_probe_read_kernel` costs a helper call.
/// `off` must come from `CONFIG` (a constant the verifier can see).
#[inline(always)]
pub fn btf_load<T: Copy>(ptr: u64, off: u32) -> T {
    // SAFETY: see above; a faulting address reads as zero.
    unsafe { core::ptr::read_volatile((ptr + off as u64) as *const T) }
}

/// Offset of a syscall's first argument in the task's saved user registers:
/// `pt_regs.di` on x86_64. Other architectures have no such programs: user
/// space refuses their trial (`loader::trial_feature`).
#[cfg(bpf_target_arch = "x86_64")]
const SYSCALL_ARG0: u32 = core::mem::offset_of!(aya_ebpf::bindings::pt_regs, rdi) as u32;
#[cfg(not(bpf_target_arch = "x86_64"))]
const SYSCALL_ARG0: u32 = 0;

/// The current task as a BTF pointer (`bpf_get_current_task_btf`, 5.11+):
/// its fields load directly. Taken once by a program that needs it twice.
#[inline(always)]
pub fn current_task_btf() -> u64 {
    unsafe { bpf_get_current_task_btf() as u64 }
}

/// The current syscall's first argument, read at its exit from the saved
/// user registers of `task` (from [`current_task_btf`]) with
/// `bpf_task_pt_regs` (5.15+; the probe table picks the programs that call
/// it). A syscall's exit then needs nothing from its entry, and no entry
/// tracepoint is attached: every syscall of every task on the machine pays
/// for each syscall tracepoint direction attached.
#[inline(always)]
pub fn syscall_arg0(task: u64) -> u64 {
    // SAFETY: `task` is the current task's BTF pointer, as the helper requires.
    let regs = unsafe { generated::bpf_task_pt_regs(task as *mut _) } as u64;
    if regs == 0 {
        return u64::MAX;
    }
    btf_load(regs, SYSCALL_ARG0)
}

/// [`read`], saying which field could not be read (shown with `herdtrace
/// -v`): a failing read means an offset that does not fit this kernel, and
/// the figure that needs it is silently missing otherwise.
#[inline(always)]
pub fn read_field<T>(base: u64, off: u32, field: &str) -> Option<T> {
    if base == 0 {
        return None;
    }
    match unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) } {
        Ok(v) => Some(v),
        Err(e) => {
            // Not `base` itself: in BTF programs it may be a trusted pointer,
            // which the verifier does not let us print as a number.
            warn!(&(), "reading {} at offset {} failed ({})", field, off, e);
            None
        }
    }
}

/// The current task's open files: found once, then any number of fds looked
/// up in them (an accept's exit reads its listener and its new socket).
#[derive(Clone, Copy)]
pub struct Fds {
    max_fds: u32,
    fd_array: u64,
}

impl Fds {
    #[inline(always)]
    pub fn current() -> Fds {
        let task = unsafe { bpf_get_current_task() };
        let files: u64 =
            read_field(task, conf!(task_struct_files), "task_struct.files").unwrap_or(0);
        let fdt: u64 = read_field(files, conf!(files_struct_fdt), "files_struct.fdt").unwrap_or(0);
        let (max_fds, fd_array) = fdtable(fdt);
        Fds { max_fds, fd_array }
    }

    /// [`Fds::current`] through `bpf_get_current_task_btf` (5.11+; the probe
    /// table picks the programs that call it): the task, its files and its fd
    /// table are BTF pointers whose fields load directly, so three helper
    /// calls become four loads. The fd array holds pointers the verifier
    /// does not type: what follows is read as before.
    #[inline(always)]
    pub fn current_btf() -> Fds {
        Fds::of_task_btf(current_task_btf())
    }

    /// [`Fds::current_btf`] of a task pointer the program already holds.
    #[inline(always)]
    pub fn of_task_btf(task: u64) -> Fds {
        let files: u64 = btf_load(task, conf!(task_struct_files));
        if files == 0 {
            return Fds::NONE;
        }
        // An RCU pointer, which may be null: checked before it is followed
        // (the verifier requires it).
        let fdt: u64 = btf_load(files, conf!(files_struct_fdt));
        if fdt == 0 {
            return Fds::NONE;
        }
        Fds {
            max_fds: btf_load(fdt, conf!(fdtable_max_fds)),
            fd_array: btf_load(fdt, conf!(fdtable_fd)),
        }
    }

    const NONE: Fds = Fds {
        max_fds: 0,
        fd_array: 0,
    };

    /// The `struct file` behind `fd`.
    #[inline(always)]
    pub fn file(&self, fd: u64) -> u64 {
        if fd >= self.max_fds as u64 || self.fd_array == 0 {
            return 0;
        }
        read(self.fd_array, (fd * 8) as u32).unwrap_or(0)
    }

    /// The kernel `struct sock` behind `fd`.
    #[inline(always)]
    pub fn sk(&self, fd: u64) -> u64 {
        file_to_sk(self.file(fd))
    }
}

/// The `struct file` behind file descriptor `fd` of the current task.
#[inline(always)]
pub fn fd_to_file(fd: u64) -> u64 {
    Fds::current().file(fd)
}

/// The kernel `struct sock` behind file descriptor `fd` of the current task.
#[inline(always)]
pub fn fd_to_sk(fd: u64) -> u64 {
    Fds::current().sk(fd)
}

/// `(max_fds, fd)` of an fdtable: one read when they sit side by side.
#[inline(always)]
fn fdtable(fdt: u64) -> (u32, u64) {
    if conf!(fdtable_packed) != 0 {
        let both: [u64; 2] = read(fdt, conf!(fdtable_max_fds)).unwrap_or([0; 2]);
        return (both[0] as u32, both[1]);
    }
    let Some(max_fds) = read::<u32>(fdt, conf!(fdtable_max_fds)) else {
        return (0, 0);
    };
    (max_fds, read(fdt, conf!(fdtable_fd)).unwrap_or(0))
}

/// `file->private_data` is the `struct socket` of a socket file.
#[inline(always)]
pub fn file_to_sk(file: u64) -> u64 {
    let sock: u64 = read_field(file, conf!(file_private_data), "file.private_data").unwrap_or(0);
    socket_sk(sock)
}

/// `socket->sk`.
#[inline(always)]
pub fn socket_sk(sock: u64) -> u64 {
    read_field(sock, conf!(socket_sk), "socket.sk").unwrap_or(0)
}

#[inline(always)]
pub fn sk_local_port(sk: u64) -> u16 {
    read(sk, conf!(sock_common_skc_num)).unwrap_or(0)
}

/// The fields of `struct sock_common` a connection is reported with.
#[derive(Clone, Copy, Default)]
pub struct SkHead {
    pub daddr: [u8; 4],
    pub rcv_saddr: [u8; 4],
    /// Peer port, host order.
    pub dport: u16,
    /// Local port.
    pub num: u16,
    pub family: u16,
    pub state: u8,
}

/// Reads `sk`'s head: one helper call for the 20 bytes from `skc_daddr` to
/// `skc_state` when user space found the usual layout, otherwise one call
/// per field. A helper call costs about as much whether it copies 1 byte or 20.
#[inline(always)]
pub fn sk_head(sk: u64) -> SkHead {
    if conf!(sock_common_head_packed) != 0 {
        let b: [u8; 20] = read(sk, conf!(sock_common_skc_daddr)).unwrap_or([0; 20]);
        return SkHead {
            daddr: [b[0], b[1], b[2], b[3]],
            rcv_saddr: [b[4], b[5], b[6], b[7]],
            dport: u16::from_be_bytes([b[12], b[13]]),
            num: u16::from_ne_bytes([b[14], b[15]]),
            family: u16::from_ne_bytes([b[16], b[17]]),
            state: b[18],
        };
    }
    SkHead {
        daddr: read(sk, conf!(sock_common_skc_daddr)).unwrap_or([0; 4]),
        rcv_saddr: read(sk, conf!(sock_common_skc_rcv_saddr)).unwrap_or([0; 4]),
        dport: u16::from_be(read(sk, conf!(sock_common_skc_dport)).unwrap_or(0)),
        num: sk_local_port(sk),
        family: read(sk, conf!(sock_common_skc_family)).unwrap_or(0),
        state: read(sk, conf!(sock_common_skc_state)).unwrap_or(0),
    }
}

/// Inode number of `sk`'s network namespace (as `/proc/PID/ns/net` shows it).
#[inline(always)]
pub fn sk_netns(sk: u64) -> u32 {
    let net: u64 = read_field(sk, conf!(sock_common_skc_net), "sock_common.skc_net").unwrap_or(0);
    read_field(net, conf!(net_ns_inum), "net.ns.inum").unwrap_or(0)
}

/// The listener identity of `sk`: its namespace, local address and port
/// (a child socket gives the address its listener accepted it on).
#[inline(always)]
pub fn listen_key(sk: u64, head: &SkHead) -> ListenKey {
    let mut key = ListenKey {
        netns: sk_netns(sk),
        port: head.num,
        family: head.family,
        addr: [0; 16],
    };
    if head.family == AF_INET6 {
        key.addr = read(sk, conf!(sock_common_skc_v6_rcv_saddr)).unwrap_or([0; 16]);
    } else {
        key.addr = ipv4_bytes(head.rcv_saddr);
    }
    key
}

/// An IPv4 address in the first 4 of 16 bytes, the rest zero. Built as one
/// integer: a zeroed byte array becomes a `memset` call, a byte loop on BPF.
#[inline(always)]
fn ipv4_bytes(a: [u8; 4]) -> [u8; 16] {
    u128::from(u32::from_ne_bytes(a)).to_ne_bytes()
}

/// The child socket most recently queued on a listener's accept queue.
#[inline(always)]
pub fn accept_queue_tail(listener: u64) -> u64 {
    let req: u64 = read(listener, conf!(inet_connection_sock_rskq_accept_tail)).unwrap_or(0);
    read(req, conf!(request_sock_sk)).unwrap_or(0)
}

/// The wait-queue head a socket's wakeups go through (`&sk->sk_wq->wait`).
#[inline(always)]
pub fn sk_wait_head(sk: u64) -> u64 {
    match read::<u64>(sk, conf!(sock_sk_wq)) {
        Some(wq) if wq != 0 => wq + conf!(socket_wq_wait) as u64,
        _ => 0,
    }
}

/// Peer address of a connected socket: (family, addr bytes, port in host order).
#[inline(always)]
pub fn sk_peer(sk: u64) -> (u16, [u8; 16], u16) {
    let head = sk_head(sk);
    let addr = if head.family == AF_INET6 {
        read(sk, conf!(sock_common_skc_v6_daddr)).unwrap_or([0; 16])
    } else {
        ipv4_bytes(head.daddr)
    };
    (head.family, addr, head.dport)
}

/// `(pid, tgid)` of a task.
#[inline(always)]
pub fn task_ids(task: u64) -> Option<(u32, u32)> {
    let pid = read_field::<i32>(task, conf!(task_struct_pid), "task_struct.pid")?;
    let tgid = read_field::<i32>(task, conf!(task_struct_tgid), "task_struct.tgid")?;
    Some((pid as u32, tgid as u32))
}

#[inline(always)]
pub fn task_comm(task: u64) -> [u8; 16] {
    read(task, conf!(task_struct_comm)).unwrap_or([0; 16])
}
