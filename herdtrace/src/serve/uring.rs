//! A minimal io_uring on raw syscalls, just enough for the io-uring model:
//! one IORING_OP_ACCEPT in flight at a time (no SQPOLL, no registered files).
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// `user_data` of the model's accept SQE ("pcca" in a little-endian dump).
pub const ACCEPT_USER_DATA: u64 = 0x6163_6370;
/// `user_data` of the SQE that cancels it at stop.
pub const CANCEL_USER_DATA: u64 = 0x6e61_6363;

const IORING_OP_ACCEPT: u8 = 13;
/// `sqe.ioprio` of an accept: keep accepting after each completion (5.19+).
const IORING_ACCEPT_MULTISHOT: u16 = 1;
/// `cqe.flags`: more completions of this request follow.
pub const IORING_CQE_F_MORE: u32 = 2;
const IORING_OP_ASYNC_CANCEL: u8 = 14;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_FEAT_SINGLE_MMAP: u32 = 1;
const IORING_OFF_SQ_RING: libc::off_t = 0;
const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;

pub const SQE_SIZE: usize = 64;
pub const CQE_SIZE: usize = 16;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct CqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params` (include/uapi/linux/io_uring.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqringOffsets,
    cq_off: CqringOffsets,
}

const _: () = assert!(size_of::<Params>() == 120);
const _: () = assert!(size_of::<SqringOffsets>() == 40 && size_of::<CqringOffsets>() == 40);

/// An accept SQE: `listen`, accept4 flags SOCK_CLOEXEC, no address buffers,
/// a normal (not direct) descriptor; `multishot`: one completion per
/// connection until cancelled (`IORING_ACCEPT_MULTISHOT`).
pub fn accept_sqe(listen: RawFd, user_data: u64, multishot: bool) -> [u8; SQE_SIZE] {
    let mut sqe = [0u8; SQE_SIZE];
    sqe[0] = IORING_OP_ACCEPT;
    if multishot {
        sqe[2..4].copy_from_slice(&IORING_ACCEPT_MULTISHOT.to_ne_bytes());
    }
    sqe[4..8].copy_from_slice(&listen.to_ne_bytes());
    sqe[28..32].copy_from_slice(&(libc::SOCK_CLOEXEC as u32).to_ne_bytes());
    sqe[32..40].copy_from_slice(&user_data.to_ne_bytes());
    sqe
}

/// An SQE cancelling the request whose `user_data` is `target`.
pub fn cancel_sqe(target: u64, user_data: u64) -> [u8; SQE_SIZE] {
    let mut sqe = [0u8; SQE_SIZE];
    sqe[0] = IORING_OP_ASYNC_CANCEL;
    sqe[4..8].copy_from_slice(&(-1i32).to_ne_bytes());
    sqe[16..24].copy_from_slice(&target.to_ne_bytes());
    sqe[32..40].copy_from_slice(&user_data.to_ne_bytes());
    sqe
}

/// One completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    pub user_data: u64,
    /// The operation's result: >= 0 success (an fd for accept), else -errno.
    pub res: i32,
    pub flags: u32,
}

impl Cqe {
    pub fn decode(b: &[u8; CQE_SIZE]) -> Self {
        let [u0, u1, u2, u3, u4, u5, u6, u7, r0, r1, r2, r3, f0, f1, f2, f3] = *b;
        Cqe {
            user_data: u64::from_ne_bytes([u0, u1, u2, u3, u4, u5, u6, u7]),
            res: i32::from_ne_bytes([r0, r1, r2, r3]),
            flags: u32::from_ne_bytes([f0, f1, f2, f3]),
        }
    }
}

/// `e` with `what` in front of its message, kind kept.
pub fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Why io_uring_setup failed, in words an operator can act on.
fn setup_error(e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => " (kernel.io_uring_disabled? or a seccomp filter)",
        Some(libc::ENOSYS) => " (kernel built without io_uring)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("io_uring_setup: {e}{hint}"))
}

/// A shared mapping of part of the ring fd; unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, offset: libc::off_t, what: &str) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of the ring fd; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(context(io::Error::last_os_error(), what));
        }
        let ptr =
            NonNull::new(p.cast()).ok_or_else(|| io::Error::other(format!("{what}: null")))?;
        Ok(Self { ptr, len })
    }

    /// A pointer `off` bytes in; Ring::new checked every offset it uses.
    fn at<T>(&self, off: usize) -> *mut T {
        debug_assert!(off + size_of::<T>() <= self.len);
        // SAFETY: in bounds (checked when the ring was built).
        unsafe { self.ptr.as_ptr().add(off).cast() }
    }

    /// The u32 at `off`, shared with the kernel.
    fn atomic(&self, off: u32) -> &AtomicU32 {
        // SAFETY: in bounds, 4-aligned (kernel offsets into a page-aligned
        // mapping), and only ever accessed atomically while mapped.
        unsafe { &*self.at::<AtomicU32>(off as usize) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what mmap returned; nothing borrows it past drop.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn fits(off: u32, size: usize, len: usize) -> bool {
    off as usize + size <= len
}

/// One io_uring instance of the calling process.
pub struct Ring {
    // Dropped in this order: the mappings, then the fd.
    sq: Mapping,
    /// None: the CQ ring shares `sq` (IORING_FEAT_SINGLE_MMAP).
    cq: Option<Mapping>,
    sqes: Mapping,
    sq_off: SqringOffsets,
    cq_off: CqringOffsets,
    sq_entries: u32,
    sq_mask: u32,
    cq_mask: u32,
    fd: OwnedFd,
}

impl Ring {
    /// A ring of `entries` submission slots.
    pub fn new(entries: u32) -> io::Result<Self> {
        let mut p = Params::default();
        // SAFETY: p is a writable io_uring_params for the kernel to fill.
        let ret =
            unsafe { libc::syscall(libc::SYS_io_uring_setup, entries, &mut p as *mut Params) };
        if ret < 0 {
            return Err(setup_error(io::Error::last_os_error()));
        }
        let raw = RawFd::try_from(ret).map_err(|_| io::Error::other("io_uring_setup: bad fd"))?;
        // SAFETY: the kernel just returned this fd; nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Self::map(fd, &p)
    }

    fn map(fd: OwnedFd, p: &Params) -> io::Result<Self> {
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * CQE_SIZE;
        let single = p.features & IORING_FEAT_SINGLE_MMAP != 0;
        let sq_map_len = if single { sq_len.max(cq_len) } else { sq_len };
        let raw = fd.as_raw_fd();
        let sq = Mapping::new(raw, sq_map_len, IORING_OFF_SQ_RING, "mmap io_uring SQ ring")?;
        let cq = if single {
            None
        } else {
            Some(Mapping::new(
                raw,
                cq_len,
                IORING_OFF_CQ_RING,
                "mmap io_uring CQ ring",
            )?)
        };
        let sqes_len = p.sq_entries as usize * SQE_SIZE;
        let sqes = Mapping::new(raw, sqes_len, IORING_OFF_SQES, "mmap io_uring SQEs")?;
        check_offsets(p, sq.len, cq.as_ref().map_or(sq.len, |m| m.len))?;
        let sq_mask = sq.atomic(p.sq_off.ring_mask).load(Ordering::Relaxed);
        let cq_mask = cq
            .as_ref()
            .unwrap_or(&sq)
            .atomic(p.cq_off.ring_mask)
            .load(Ordering::Relaxed);
        if sq_mask >= p.sq_entries || cq_mask >= p.cq_entries {
            return Err(io::Error::other("io_uring: ring mask larger than the ring"));
        }
        Ok(Self {
            sq,
            cq,
            sqes,
            sq_off: p.sq_off,
            cq_off: p.cq_off,
            sq_entries: p.sq_entries,
            sq_mask,
            cq_mask,
            fd,
        })
    }

    fn cq(&self) -> &Mapping {
        self.cq.as_ref().unwrap_or(&self.sq)
    }

    /// Queues one SQE (submitted by the next `enter`).
    pub fn push(&mut self, sqe: &[u8; SQE_SIZE]) -> io::Result<()> {
        let head = self.sq.atomic(self.sq_off.head).load(Ordering::Acquire);
        // Only this thread writes the tail.
        let tail = self.sq.atomic(self.sq_off.tail).load(Ordering::Relaxed);
        if tail.wrapping_sub(head) >= self.sq_entries {
            return Err(io::Error::other("io_uring: submission queue full"));
        }
        let idx = tail & self.sq_mask;
        // SAFETY: idx <= sq_mask < sq_entries: inside the SQE array and the
        // index array; the kernel reads neither before the tail moves.
        unsafe {
            self.sqes
                .at::<[u8; SQE_SIZE]>(idx as usize * SQE_SIZE)
                .write(*sqe);
            self.sq
                .at::<u32>(self.sq_off.array as usize + idx as usize * 4)
                .write(idx);
        }
        self.sq
            .atomic(self.sq_off.tail)
            .store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }

    /// SQEs queued but not yet taken by the kernel.
    fn unsubmitted(&self) -> u32 {
        let head = self.sq.atomic(self.sq_off.head).load(Ordering::Acquire);
        let tail = self.sq.atomic(self.sq_off.tail).load(Ordering::Relaxed);
        tail.wrapping_sub(head)
    }

    /// Submits what is queued and waits for `min_complete` completions. The
    /// error is io_uring_enter's own (EINTR on a signal), without context.
    pub fn enter(&self, min_complete: u32) -> io::Result<u32> {
        // SAFETY: plain syscall on our ring fd; no argument pointer.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.fd.as_raw_fd(),
                self.unsubmitted(),
                min_complete,
                IORING_ENTER_GETEVENTS,
                std::ptr::null::<libc::c_void>(),
                0usize,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u32::try_from(ret).unwrap_or(u32::MAX))
    }

    /// The ring's fd (its `/proc/self/fdinfo` entry lists the armed requests).
    #[cfg(test)]
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next completion, if any (never waits).
    pub fn pop(&mut self) -> Option<Cqe> {
        let cq = self.cq();
        // Only this thread writes the head.
        let head = cq.atomic(self.cq_off.head).load(Ordering::Relaxed);
        let tail = cq.atomic(self.cq_off.tail).load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let idx = (head & self.cq_mask) as usize;
        // SAFETY: idx <= cq_mask < cq_entries: inside the CQE array, which the
        // kernel filled before publishing the tail.
        let bytes = unsafe {
            cq.at::<[u8; CQE_SIZE]>(self.cq_off.cqes as usize + idx * CQE_SIZE)
                .read()
        };
        cq.atomic(self.cq_off.head)
            .store(head.wrapping_add(1), Ordering::Release);
        Some(Cqe::decode(&bytes))
    }
}

/// Every offset the ring reads lies inside its mapping.
fn check_offsets(p: &Params, sq_len: usize, cq_len: usize) -> io::Result<()> {
    let s = &p.sq_off;
    let c = &p.cq_off;
    let sq_ok = [s.head, s.tail, s.ring_mask]
        .iter()
        .all(|&o| fits(o, 4, sq_len))
        && fits(s.array, p.sq_entries as usize * 4, sq_len);
    let cq_ok = [c.head, c.tail, c.ring_mask]
        .iter()
        .all(|&o| fits(o, 4, cq_len))
        && fits(c.cqes, p.cq_entries as usize * CQE_SIZE, cq_len);
    if sq_ok && cq_ok && p.sq_entries > 0 && p.cq_entries > 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "io_uring: ring offsets out of range: {p:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;

    #[test]
    fn accept_sqe_layout() {
        let sqe = accept_sqe(7, ACCEPT_USER_DATA, false);
        assert_eq!(sqe[0], 13, "opcode");
        assert_eq!(sqe[1], 0, "flags");
        assert_eq!(&sqe[2..4], &[0, 0], "ioprio: no multishot");
        let multi = accept_sqe(7, ACCEPT_USER_DATA, true);
        assert_eq!(multi[2..4], 1u16.to_ne_bytes(), "IORING_ACCEPT_MULTISHOT");
        assert_eq!((&multi[..2], &multi[4..]), (&sqe[..2], &sqe[4..]));
        assert_eq!(sqe[4..8], 7i32.to_ne_bytes(), "fd");
        assert!(
            sqe[8..28].iter().all(|&b| b == 0),
            "off, addr, len: no address buffers"
        );
        assert_eq!(sqe[28..32], (libc::SOCK_CLOEXEC as u32).to_ne_bytes());
        assert_eq!(sqe[32..40], 0x6163_6370u64.to_ne_bytes());
        assert!(
            sqe[40..].iter().all(|&b| b == 0),
            "buf_index, file_index: plain fd"
        );
    }

    #[test]
    fn cancel_sqe_layout() {
        let sqe = cancel_sqe(ACCEPT_USER_DATA, CANCEL_USER_DATA);
        assert_eq!(sqe[0], 14, "opcode");
        assert_eq!(sqe[4..8], (-1i32).to_ne_bytes(), "no fd");
        assert!(sqe[8..16].iter().all(|&b| b == 0), "off must be 0");
        assert_eq!(
            sqe[16..24],
            ACCEPT_USER_DATA.to_ne_bytes(),
            "addr: the target"
        );
        assert!(sqe[24..32].iter().all(|&b| b == 0), "len, cancel_flags");
        assert_eq!(sqe[32..40], CANCEL_USER_DATA.to_ne_bytes());
        assert!(sqe[40..].iter().all(|&b| b == 0));
    }

    #[test]
    fn cqe_decodes() {
        let mut b = [0u8; CQE_SIZE];
        b[..8].copy_from_slice(&ACCEPT_USER_DATA.to_ne_bytes());
        b[8..12].copy_from_slice(&(-libc::ECANCELED).to_ne_bytes());
        b[12..].copy_from_slice(&2u32.to_ne_bytes());
        let c = Cqe::decode(&b);
        assert_eq!(
            (c.user_data, c.res, c.flags),
            (ACCEPT_USER_DATA, -libc::ECANCELED, 2)
        );
    }

    #[test]
    fn setup_errors_name_io_uring_and_keep_the_kind() {
        let e = setup_error(io::Error::from_raw_os_error(libc::EPERM));
        assert!(e.to_string().starts_with("io_uring_setup: "), "{e}");
        assert!(e.to_string().contains("kernel.io_uring_disabled"), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        let e = setup_error(io::Error::from_raw_os_error(libc::ENOSYS));
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("without io_uring"), "{e}");
    }

    #[test]
    fn offsets_outside_the_mapping_are_refused() {
        let mut p = Params {
            sq_entries: 4,
            cq_entries: 8,
            ..Params::default()
        };
        p.sq_off.array = 64;
        p.cq_off.cqes = 64;
        assert!(check_offsets(&p, 64 + 16, 64 + 128).is_ok());
        p.sq_off.tail = 80;
        assert!(check_offsets(&p, 64 + 16, 64 + 128).is_err());
    }

    /// A ring where the kernel allows one; None (skipped, said why) where it
    /// refuses io_uring and CI is not set.
    fn ring_or_skip() -> Option<Ring> {
        match Ring::new(4) {
            Ok(r) => Some(r),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
                ) && std::env::var("CI").as_deref() != Ok("true") =>
            {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_ring_accepts_one_connection_on_a_blocking_listener() {
        let Some(mut ring) = ring_or_skip() else {
            return;
        };
        let l = crate::serve::sys::listener(0, 16, false, false, false).expect("listen");
        let port = crate::serve::sys::local_port(l.as_raw_fd()).expect("port");
        ring.push(&accept_sqe(l.as_raw_fd(), ACCEPT_USER_DATA, false))
            .expect("push");
        let client = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let mut buf = Vec::new();
            // EOF once the server side is closed.
            c.read_to_end(&mut buf).expect("read");
        });
        let cqe = loop {
            match ring.enter(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("io_uring_enter: {e}"),
            }
            if let Some(c) = ring.pop() {
                break c;
            }
        };
        assert_eq!(cqe.user_data, ACCEPT_USER_DATA);
        assert!(
            cqe.res >= 0,
            "accept failed: {}",
            io::Error::from_raw_os_error(-cqe.res)
        );
        // SAFETY: the accepted fd is ours alone.
        let conn = unsafe { OwnedFd::from_raw_fd(cqe.res) };
        assert_eq!(
            crate::serve::sys::local_port(conn.as_raw_fd()).expect("port"),
            port
        );
        drop(conn);
        client.join().expect("client");
        assert_eq!(ring.pop(), None);
    }
}
