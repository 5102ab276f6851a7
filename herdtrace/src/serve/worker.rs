//! The worker loops. Each loop iteration makes exactly one `epoll_wait` (a
//! traced "wake"), then one `accept` per readiness event, or up to the batch
//! limit / until EAGAIN. Nothing here allocates per connection.
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::conn::{self, Scratch};
use super::slots::{bump, Slot};
use super::uring::{self, Ring};
use super::{signals, sys};

/// Submission slots of a worker's io_uring (one accept is in flight at a time).
const RING_ENTRIES: u32 = 4;

/// How a worker takes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Wait in `epoll_wait` on `epfd`, then accept up to `batch` connections
    /// (None: until EAGAIN).
    Epoll {
        epfd: RawFd,
        batch: Option<usize>,
        timeout_ms: i32,
    },
    /// Block in `accept`.
    Blocking,
    /// IORING_OP_ACCEPT on a ring of the worker's own: one at a time, or
    /// one multishot accept armed for good.
    Uring { multishot: bool },
}

/// What a worker needs; the fds are borrowed from the supervisor (or, in a
/// forked worker, from its copy of them).
#[derive(Debug, Clone, Copy)]
pub struct Worker {
    pub listen: RawFd,
    pub wait: Wait,
    pub work: Duration,
}

/// What an `accept` error means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// Nothing to accept (non-blocking socket).
    Empty,
    /// A signal interrupted the call.
    Interrupted,
    /// The connection died in the queue or a network hiccup: try the next.
    Transient,
    /// Out of fds or memory: back off briefly.
    Resource,
    /// Anything else: the worker stops with this error.
    Fatal,
}

/// Classifies an accept errno (accept(2) lists the transient ones).
pub fn classify_accept(errno: i32) -> AcceptError {
    match errno {
        libc::EAGAIN => AcceptError::Empty,
        libc::EINTR => AcceptError::Interrupted,
        libc::ECONNABORTED
        | libc::EPROTO
        | libc::EPERM
        | libc::ENETDOWN
        | libc::ENOPROTOOPT
        | libc::EHOSTDOWN
        | libc::ENONET
        | libc::EHOSTUNREACH
        | libc::EOPNOTSUPP
        | libc::ENETUNREACH
        | libc::ETIMEDOUT => AcceptError::Transient,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => AcceptError::Resource,
        _ => AcceptError::Fatal,
    }
}

const RESOURCE_BACKOFF: Duration = Duration::from_millis(10);

impl Worker {
    /// Runs until a stop signal; `slot` is marked ready just before the first wait.
    pub fn run(&self, slot: &Slot) -> io::Result<()> {
        let mut scratch = Scratch::default();
        match self.wait {
            Wait::Epoll {
                epfd,
                batch,
                timeout_ms,
            } => {
                ready(slot);
                self.epoll_loop(slot, &mut scratch, epfd, batch, timeout_ms)
            }
            Wait::Blocking => {
                ready(slot);
                self.blocking_loop(slot, &mut scratch)
            }
            Wait::Uring { multishot } => {
                // Made in the worker (after fork): a failed setup is a failed start.
                let mut ring = Ring::new(RING_ENTRIES)?;
                ready(slot);
                self.uring_loop(slot, &mut scratch, &mut ring, multishot)
            }
        }
    }

    fn epoll_loop(
        &self,
        slot: &Slot,
        scratch: &mut Scratch,
        epfd: RawFd,
        batch: Option<usize>,
        timeout_ms: i32,
    ) -> io::Result<()> {
        while !signals::stopping() {
            match sys::epoll_wait_one(epfd, timeout_ms) {
                Ok(0) => bump(&slot.empty_waits),
                Ok(_) => self.accept_burst(slot, scratch, batch)?,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Accepts up to `batch` connections (None: until EAGAIN). A failed
    /// attempt counts toward the batch, so batch 1 is one accept call.
    fn accept_burst(
        &self,
        slot: &Slot,
        scratch: &mut Scratch,
        batch: Option<usize>,
    ) -> io::Result<()> {
        let mut attempts = 0usize;
        loop {
            match sys::accept(self.listen) {
                Ok(fd) => {
                    bump(&slot.accepts);
                    conn::serve(fd, self.work, scratch);
                }
                Err(e) => match classify_accept(e.raw_os_error().unwrap_or(0)) {
                    AcceptError::Empty => {
                        bump(&slot.eagain);
                        return Ok(());
                    }
                    AcceptError::Interrupted => {
                        if signals::stopping() {
                            return Ok(());
                        }
                        continue; // retried, not an attempt
                    }
                    AcceptError::Transient => {}
                    AcceptError::Resource => {
                        std::thread::sleep(RESOURCE_BACKOFF);
                        return Ok(());
                    }
                    AcceptError::Fatal => return Err(e),
                },
            }
            attempts += 1;
            if batch.is_some_and(|b| attempts >= b) {
                return Ok(());
            }
        }
    }

    fn blocking_loop(&self, slot: &Slot, scratch: &mut Scratch) -> io::Result<()> {
        while !signals::stopping() {
            match sys::accept(self.listen) {
                Ok(fd) => {
                    bump(&slot.accepts);
                    conn::serve(fd, self.work, scratch);
                }
                Err(e) => match classify_accept(e.raw_os_error().unwrap_or(0)) {
                    AcceptError::Empty => bump(&slot.eagain),
                    AcceptError::Interrupted | AcceptError::Transient => {}
                    AcceptError::Resource => std::thread::sleep(RESOURCE_BACKOFF),
                    AcceptError::Fatal => return Err(e),
                },
            }
        }
        Ok(())
    }

    /// Keeps one accept in flight and waits for its completions (a
    /// multishot one stays in flight while they say more follow). A signal
    /// interrupts the wait (EINTR, or a count with no CQE when the enter also
    /// submitted); the SQE then stays queued or in flight for the next round.
    fn uring_loop(
        &self,
        slot: &Slot,
        scratch: &mut Scratch,
        ring: &mut Ring,
        multishot: bool,
    ) -> io::Result<()> {
        let sqe = uring::accept_sqe(self.listen, uring::ACCEPT_USER_DATA, multishot);
        let mut in_flight = false;
        while !signals::stopping() {
            if !in_flight {
                ring.push(&sqe)?;
                in_flight = true;
            }
            match ring.enter(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(uring::context(e, "io_uring_enter")),
            }
            while let Some(cqe) = ring.pop() {
                if cqe.user_data == uring::ACCEPT_USER_DATA {
                    in_flight = cqe.flags & uring::IORING_CQE_F_MORE != 0;
                    if multishot && cqe.res == -libc::EINVAL {
                        return Err(io::Error::new(
                            io::ErrorKind::Unsupported,
                            "io_uring accept: this kernel refuses a multishot accept \
                             (IORING_ACCEPT_MULTISHOT needs Linux 5.19+)",
                        ));
                    }
                    self.uring_accepted(slot, scratch, cqe.res)?;
                }
            }
        }
        if in_flight {
            cancel_accept(ring)?;
        }
        Ok(())
    }

    /// One accept completion: `res` is the new fd or -errno.
    fn uring_accepted(&self, slot: &Slot, scratch: &mut Scratch, res: i32) -> io::Result<()> {
        if res >= 0 {
            bump(&slot.accepts);
            // SAFETY: the kernel installed this fd for us; nobody else owns it.
            conn::serve(unsafe { OwnedFd::from_raw_fd(res) }, self.work, scratch);
            return Ok(());
        }
        let errno = -res;
        if errno == libc::ECANCELED {
            return Ok(());
        }
        match classify_accept(errno) {
            AcceptError::Empty => bump(&slot.eagain),
            AcceptError::Interrupted | AcceptError::Transient => {}
            AcceptError::Resource => std::thread::sleep(RESOURCE_BACKOFF),
            AcceptError::Fatal => {
                let e = io::Error::from_raw_os_error(errno);
                return Err(uring::context(e, "io_uring accept"));
            }
        }
        Ok(())
    }
}

fn ready(slot: &Slot) {
    slot.mark_ready(sys::getpid(), sys::gettid());
}

/// Cancels the accept in flight and waits until it is over (its last
/// completion). A ring is torn down asynchronously after close, and until
/// then its pending accept holds the listener open: a server restarted on
/// the same port got EADDRINUSE.
fn cancel_accept(ring: &mut Ring) -> io::Result<()> {
    ring.push(&uring::cancel_sqe(
        uring::ACCEPT_USER_DATA,
        uring::CANCEL_USER_DATA,
    ))?;
    loop {
        match ring.enter(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(uring::context(e, "io_uring_enter (cancel)")),
        }
        while let Some(cqe) = ring.pop() {
            match cqe.user_data {
                uring::ACCEPT_USER_DATA => {
                    if cqe.res >= 0 {
                        // SAFETY: the kernel installed this fd for us; closed at once.
                        drop(unsafe { OwnedFd::from_raw_fd(cqe.res) });
                    }
                    if cqe.flags & uring::IORING_CQE_F_MORE == 0 {
                        return Ok(());
                    }
                }
                // 0 or -ENOENT: the accept's CQE comes (or came); otherwise
                // (-EALREADY: running) it may never come: stop waiting.
                uring::CANCEL_USER_DATA if cqe.res != 0 && cqe.res != -libc::ENOENT => {
                    return Ok(())
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        assert_eq!(classify_accept(libc::EAGAIN), AcceptError::Empty);
        assert_eq!(classify_accept(libc::EWOULDBLOCK), AcceptError::Empty);
        assert_eq!(classify_accept(libc::EINTR), AcceptError::Interrupted);
        assert_eq!(classify_accept(libc::ECONNABORTED), AcceptError::Transient);
        assert_eq!(classify_accept(libc::EPROTO), AcceptError::Transient);
        assert_eq!(classify_accept(libc::EMFILE), AcceptError::Resource);
        assert_eq!(classify_accept(libc::ENFILE), AcceptError::Resource);
        assert_eq!(classify_accept(libc::EBADF), AcceptError::Fatal);
        assert_eq!(classify_accept(libc::EINVAL), AcceptError::Fatal);
        assert_eq!(classify_accept(0), AcceptError::Fatal);
    }
}
