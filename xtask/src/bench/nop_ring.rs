//! One io_uring NOP at a time, on raw syscalls, for the syscalls section:
//! herdtrace's io_uring programs run on every request of the machine, so an
//! untraced process's io_uring operations pay for them. The smallest ring
//! that works: one SQE submitted and its CQE reaped per `io_uring_enter`.
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

const ENTRIES: u32 = 4;
const SQE_BYTES: usize = 64;
const CQE_BYTES: usize = 16;
const OFF_SQ_RING: libc::off_t = 0;
const OFF_CQ_RING: libc::off_t = 0x800_0000;
const OFF_SQES: libc::off_t = 0x1000_0000;
const ENTER_GETEVENTS: libc::c_uint = 1;

/// `struct io_uring_params` as 30 u32 words (120 bytes): the words read
/// here, by their index (include/uapi/linux/io_uring.h).
mod word {
    pub const SQ_ENTRIES: usize = 0;
    pub const CQ_ENTRIES: usize = 1;
    pub const SQ_TAIL: usize = 11;
    pub const SQ_MASK: usize = 12;
    pub const SQ_ARRAY: usize = 16;
    pub const CQ_HEAD: usize = 20;
    pub const CQ_TAIL: usize = 21;
    pub const CQ_CQES: usize = 25;
}

/// A shared mapping of the ring fd, unmapped on drop.
struct Map {
    at: *mut u8,
    len: usize,
}

impl Map {
    fn new(fd: libc::c_int, len: usize, offset: libc::off_t) -> io::Result<Map> {
        // SAFETY: a fresh shared mapping of the ring; checked below.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map { at: at.cast(), len })
    }

    /// The u32 the kernel shares at byte `off` (a ring head or tail).
    fn word(&self, off: u32) -> &AtomicU32 {
        assert!(off as usize + 4 <= self.len);
        // SAFETY: inside the mapping (asserted), 4-aligned by the kernel's
        // layout; the mapping outlives the reference.
        unsafe { &*self.at.add(off as usize).cast::<AtomicU32>() }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length.
        unsafe { libc::munmap(self.at.cast(), self.len) };
    }
}

pub struct NopRing {
    fd: libc::c_int,
    sq: Map,
    cq: Map,
    sqes: Map,
    p: [u32; 30],
}

impl NopRing {
    pub fn new() -> io::Result<NopRing> {
        let mut p = [0u32; 30];
        // SAFETY: io_uring_setup writes the 120-byte params it is given.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, ENTRIES, p.as_mut_ptr()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = fd as libc::c_int;
        let maps = (|| {
            let sq_len = p[word::SQ_ARRAY] as usize + p[word::SQ_ENTRIES] as usize * 4;
            let cq_len = p[word::CQ_CQES] as usize + p[word::CQ_ENTRIES] as usize * CQE_BYTES;
            Ok::<_, io::Error>((
                Map::new(fd, sq_len, OFF_SQ_RING)?,
                Map::new(fd, cq_len, OFF_CQ_RING)?,
                Map::new(fd, p[word::SQ_ENTRIES] as usize * SQE_BYTES, OFF_SQES)?,
            ))
        })();
        match maps {
            Ok((sq, cq, sqes)) => Ok(NopRing {
                fd,
                sq,
                cq,
                sqes,
                p,
            }),
            Err(e) => {
                // SAFETY: our fd, closed once.
                unsafe { libc::close(fd) };
                Err(e)
            }
        }
    }

    /// Submits one NOP and waits for its completion.
    fn nop(&mut self) -> io::Result<()> {
        let tail = self.sq.word(self.p[word::SQ_TAIL]).load(Ordering::Relaxed);
        // The params hold where the ring's mask is, not the mask.
        let mask = self.sq.word(self.p[word::SQ_MASK]).load(Ordering::Relaxed);
        let idx = tail & mask;
        assert!((idx as usize + 1) * SQE_BYTES <= self.sqes.len);
        // SAFETY: slot `idx` of the SQE array (asserted inside the mapping);
        // the kernel reads it only after the tail moves. An all-zero SQE is
        // IORING_OP_NOP.
        unsafe { std::ptr::write_bytes(self.sqes.at.add(idx as usize * SQE_BYTES), 0, SQE_BYTES) };
        self.sq
            .word(self.p[word::SQ_ARRAY] + idx * 4)
            .store(idx, Ordering::Relaxed);
        self.sq
            .word(self.p[word::SQ_TAIL])
            .store(tail.wrapping_add(1), Ordering::Release);
        // SAFETY: io_uring_enter on our ring; no argument pointer.
        let n = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                self.fd,
                1u32,
                1u32,
                ENTER_GETEVENTS,
                std::ptr::null::<libc::c_void>(),
                0usize,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let head = self.cq.word(self.p[word::CQ_HEAD]).load(Ordering::Relaxed);
        let tail = self.cq.word(self.p[word::CQ_TAIL]).load(Ordering::Acquire);
        if head == tail {
            return Err(io::Error::other(
                "io_uring NOP: no completion after waiting for one",
            ));
        }
        self.cq
            .word(self.p[word::CQ_HEAD])
            .store(tail, Ordering::Release);
        Ok(())
    }

    /// ns per NOP over `n` of them.
    pub fn time(&mut self, n: u64) -> io::Result<f64> {
        let t = Instant::now();
        for _ in 0..n {
            self.nop()?;
        }
        Ok(t.elapsed().as_nanos() as f64 / n.max(1) as f64)
    }
}

impl Drop for NopRing {
    fn drop(&mut self) {
        // SAFETY: our fd, closed once (the maps are unmapped after).
        unsafe { libc::close(self.fd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs where io_uring is allowed (not in every container).
    #[test]
    fn nops_complete() {
        match NopRing::new() {
            Ok(mut ring) => {
                let ns = ring.time(1000).expect("NOPs complete");
                assert!(ns > 0.0);
            }
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipped: io_uring_setup: {e}")
            }
            Err(e) => panic!("io_uring_setup under CI: {e}"),
        }
    }
}
