//! Shutdown signalling: a process-wide stop flag set by a handler installed
//! without SA_RESTART, so a blocked `epoll_wait`/`accept`/`read` returns EINTR
//! and the worker sees the flag.
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::sys::cvt;

/// Signals that stop the server.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
/// Sent by the supervisor to worker threads to interrupt their syscalls.
pub const NUDGE_SIGNAL: libc::c_int = libc::SIGUSR1;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_sig: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// True once a stop signal arrived (or `request_stop` was called).
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Sets the stop flag (for worker threads, which share it with the supervisor).
pub fn request_stop() {
    STOP.store(true, Ordering::Relaxed);
}

/// Installs the stop handler for the stop signals and the nudge signal.
pub fn install_handlers() -> io::Result<()> {
    for sig in STOP_SIGNALS.iter().copied().chain([NUDGE_SIGNAL]) {
        // SAFETY: sigaction is plain data; the handler only stores to an atomic,
        // which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = 0; // no SA_RESTART: blocking calls must return EINTR
            libc::sigemptyset(&mut sa.sa_mask);
            cvt(libc::sigaction(sig, &sa, std::ptr::null_mut()))?;
        }
    }
    Ok(())
}

fn sigset(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Signals the supervisor waits for with `wait_signal` (blocked in every thread
/// it spawns, so they are never delivered to a worker thread's handler).
pub fn supervisor_set() -> Vec<libc::c_int> {
    let mut v = STOP_SIGNALS.to_vec();
    v.push(libc::SIGCHLD);
    v
}

/// Blocks `sigs` in the calling thread (inherited by threads and forks).
pub fn block(sigs: &[libc::c_int]) -> io::Result<()> {
    let set = sigset(sigs);
    // SAFETY: set is initialised; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Unblocks every signal in the calling thread (forked workers).
pub fn unblock_all() -> io::Result<()> {
    let set = sigset(&[]);
    // SAFETY: set is initialised; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits up to `timeout` for one of `sigs` (which must be blocked): the signal
/// number, or None on timeout.
pub fn wait_signal(sigs: &[libc::c_int], timeout: Duration) -> io::Result<Option<libc::c_int>> {
    let set = sigset(sigs);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: set and ts are initialised; no siginfo is requested.
    let rc = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    if rc >= 0 {
        return Ok(Some(rc));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_set_has_stop_signals_and_sigchld() {
        let set = supervisor_set();
        for s in STOP_SIGNALS {
            assert!(set.contains(&s));
        }
        assert!(set.contains(&libc::SIGCHLD));
        assert!(!set.contains(&NUDGE_SIGNAL));
    }
}
