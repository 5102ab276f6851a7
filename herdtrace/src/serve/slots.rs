//! Per-worker counters in a MAP_SHARED anonymous mapping, created before fork
//! so forked workers and the parent see the same memory (threads use it too).
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use super::WorkerStats;

/// One worker's counters, on its own cache line (each is written by one worker only).
#[repr(C, align(64))]
#[derive(Default)]
pub struct Slot {
    pub pid: AtomicI32,
    pub tid: AtomicI32,
    /// Set to 1 once the worker waits for connections.
    pub ready: AtomicU32,
    pub accepts: AtomicU64,
    pub eagain: AtomicU64,
    pub empty_waits: AtomicU64,
}

/// Adds one to a counter only its own worker writes (a plain load and store,
/// cheaper than a locked add on the hot path).
pub fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl Slot {
    pub fn snapshot(&self, idx: usize) -> WorkerStats {
        WorkerStats {
            idx,
            pid: self.pid.load(Ordering::Relaxed),
            tid: self.tid.load(Ordering::Relaxed),
            accepts: self.accepts.load(Ordering::Relaxed),
            eagain: self.eagain.load(Ordering::Relaxed),
            empty_waits: self.empty_waits.load(Ordering::Relaxed),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) != 0
    }

    /// Records who this worker is and that it is about to wait for connections.
    pub fn mark_ready(&self, pid: i32, tid: i32) {
        self.pid.store(pid, Ordering::Relaxed);
        self.tid.store(tid, Ordering::Relaxed);
        self.ready.store(1, Ordering::Release);
    }
}

/// `n` zeroed slots in shared memory.
pub struct Slots {
    ptr: NonNull<Slot>,
    len: usize,
}

// SAFETY: the mapping holds only atomics; it lives until Drop.
unsafe impl Send for Slots {}
// SAFETY: as above, every access goes through atomics.
unsafe impl Sync for Slots {}

impl Slots {
    pub fn new(len: usize) -> io::Result<Self> {
        let bytes = len.max(1) * std::mem::size_of::<Slot>();
        // SAFETY: anonymous shared mapping; the kernel zero-fills it, and an
        // all-zero Slot is valid (atomics of 0).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<Slot>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    pub fn all(&self) -> &[Slot] {
        // SAFETY: the mapping holds `len` page-aligned zero-initialised slots for self's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn snapshot(&self) -> Vec<WorkerStats> {
        self.all()
            .iter()
            .enumerate()
            .map(|(i, s)| s.snapshot(i))
            .collect()
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        let bytes = self.len.max(1) * std::mem::size_of::<Slot>();
        // SAFETY: unmaps exactly the mapping created in new(); no references outlive self.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_start_zeroed_and_count() {
        let slots = Slots::new(3).expect("mmap");
        assert_eq!(slots.all().len(), 3);
        assert!(slots
            .snapshot()
            .iter()
            .all(|w| w.accepts == 0 && w.pid == 0));
        let s = &slots.all()[1];
        assert!(!s.is_ready());
        s.mark_ready(10, 11);
        bump(&s.accepts);
        bump(&s.accepts);
        bump(&s.eagain);
        assert!(s.is_ready());
        let snap = slots.snapshot();
        assert_eq!(
            snap[1],
            WorkerStats {
                idx: 1,
                pid: 10,
                tid: 11,
                accepts: 2,
                eagain: 1,
                empty_waits: 0
            }
        );
        assert_eq!(snap[0].accepts, 0);
    }

    #[test]
    fn slots_are_shared_with_a_forked_child() {
        let slots = Slots::new(1).expect("mmap");
        // SAFETY: the child only touches atomics and calls _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            slots.all()[0].accepts.store(7, Ordering::Relaxed);
            // SAFETY: leave without running the test harness's destructors.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        assert_eq!(slots.all()[0].accepts.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }
}
