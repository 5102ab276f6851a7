//! `BPF_OBJ_GET_INFO_BY_FD`, raw: aya 0.14 does not expose the fields
//! herdtrace reads (a program's `recursion_misses`, a kprobe link's
//! `missed`), so the info is fetched here and each field read at its UAPI
//! offset by its caller.
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The first `LEN` bytes of the object's info (`LEN` a multiple of 8), and
/// the length the kernel reported back (shorter on kernels whose struct is
/// shorter: fields past it are not there).
pub fn get<const LEN: usize>(fd: BorrowedFd<'_>) -> std::io::Result<(Vec<u8>, u32)> {
    /// The `info` member of `union bpf_attr`.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // u64 elements: the kernel writes 8-byte fields, the buffer is aligned for them.
    let mut info = vec![0u64; LEN / 8];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: (info.len() * 8) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` and `info` are valid for the call; the kernel writes at
    // most `info_len` bytes into `info` and updates `attr.info_len`. Pointer
    // fields inside the info (names, instructions) are left null: none is asked for.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bytes = info.iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok((bytes, attr.info_len))
}
