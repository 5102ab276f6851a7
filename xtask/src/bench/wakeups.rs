//! Two more of the machine's operations for the syscalls section, made by
//! the bench process (never traced): herdtrace's `sched_waking` program runs
//! on every wakeup of the machine, and its epoll-return program on every
//! `epoll_wait` return, traced task or not.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread;
use std::time::Instant;

/// `n` round trips of one byte through two pipes between this thread and a
/// partner thread, both on the CPU this thread is on: each round trip is
/// two wakeups (each side blocks in `read` until the other writes) and
/// four syscalls. Returns ns per round trip. This thread's CPU affinity is
/// restored before returning.
pub fn time_round_trips(n: u64) -> io::Result<f64> {
    let (to_partner_r, to_partner_w) = pipe()?;
    let (to_us_r, to_us_w) = pipe()?;
    // SAFETY: sched_getcpu takes no arguments.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        return Err(io::Error::last_os_error());
    }
    let old = affinity()?;
    set_affinity(&one_cpu(cpu as usize))?;
    let partner = thread::spawn(move || -> io::Result<()> {
        set_affinity(&one_cpu(cpu as usize))?;
        // Echo until the other end closes.
        while read_byte(&to_partner_r)? {
            write_byte(&to_us_w)?;
        }
        Ok(())
    });
    let timed = (|| {
        // One round trip first: the partner thread is running and blocked.
        write_byte(&to_partner_w)?;
        read_byte(&to_us_r)?;
        let t = Instant::now();
        for _ in 0..n {
            write_byte(&to_partner_w)?;
            if !read_byte(&to_us_r)? {
                return Err(io::Error::other("the partner thread stopped"));
            }
        }
        Ok(t.elapsed().as_nanos() as f64 / n.max(1) as f64)
    })();
    drop(to_partner_w);
    let joined = partner
        .join()
        .map_err(|_| io::Error::other("the partner thread panicked"))?;
    set_affinity(&old)?;
    joined?;
    timed
}

/// ns per `epoll_wait` of an empty epoll instance with timeout 0 (returns
/// at once, through the exit tracepoint herdtrace attaches).
pub fn time_epoll_waits(n: u64) -> io::Result<f64> {
    // SAFETY: plain syscall; the fd is owned below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: one writable event slot; epoll_wait itself, not glibc's
        // epoll_pwait, so the tracepoint timed is sys_exit_epoll_wait.
        let r = unsafe { libc::syscall(libc::SYS_epoll_wait, ep.as_raw_fd(), &mut ev, 1, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(t.elapsed().as_nanos() as f64 / n.max(1) as f64)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: two-int array for the pipe's ends.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads one byte; false at end of file.
fn read_byte(fd: &OwnedFd) -> io::Result<bool> {
    let mut b = 0u8;
    // SAFETY: one writable byte.
    match unsafe { libc::read(fd.as_raw_fd(), (&mut b as *mut u8).cast(), 1) } {
        1 => Ok(true),
        0 => Ok(false),
        _ => Err(io::Error::last_os_error()),
    }
}

fn write_byte(fd: &OwnedFd) -> io::Result<()> {
    let b = 1u8;
    // SAFETY: one readable byte.
    match unsafe { libc::write(fd.as_raw_fd(), (&b as *const u8).cast(), 1) } {
        1 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

fn one_cpu(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from sched_getcpu, inside the set's range.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

/// The calling thread's CPU affinity.
fn affinity() -> io::Result<libc::cpu_set_t> {
    // SAFETY: as in one_cpu; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the size is the set's.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(set)
}

fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: pid 0 is the calling thread; the size is the set's.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_are_timed_and_affinity_restored() {
        let before = affinity().expect("affinity");
        let ns = time_round_trips(200).expect("round trips");
        // Two context switches at least: never free, never a second.
        assert!(ns > 100.0 && ns < 1e9, "{ns} ns per round trip");
        // SAFETY: two valid sets.
        assert!(unsafe { libc::CPU_EQUAL(&before, &affinity().expect("affinity")) });
    }

    #[test]
    fn epoll_waits_are_timed() {
        let ns = time_epoll_waits(1000).expect("epoll_wait");
        assert!(ns > 1.0 && ns < 1e8, "{ns} ns per epoll_wait");
    }
}
