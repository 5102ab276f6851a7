//! One load thread: an epoll loop over non-blocking client sockets
//! (connect → EPOLLOUT → send the request → read to EOF → close), with slots
//! and buffers allocated once and latencies recorded into histograms.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::histogram::Histogram;
use super::rate::{micros, Schedule, Start, StartLags};
use super::report::{ErrorCounts, ErrorKind};
use super::response::{ResponseProbe, Verdict};
use super::target::RawAddr;

/// Timeouts are checked this often (and idle waits last at most this long).
const SWEEP: Duration = Duration::from_millis(50);
/// Read buffer per thread; a response that fits in one read is read in one call.
const SCRATCH: usize = 64 * 1024;

/// What every thread shares: the run's parameters.
pub struct Plan {
    pub target: RawAddr,
    pub connections: u64,
    pub timeout: Duration,
    pub request: Vec<u8>,
    pub schedule: Option<Schedule>,
    /// Wake for each due start on time, not on the next millisecond
    /// ([`Schedule::wakes_on_time`]).
    pub wake_on_time: bool,
    pub start: Instant,
}

/// Progress counters of one thread, on their own cache line.
#[repr(align(64))]
#[derive(Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub errors: AtomicU64,
}

/// Shared between threads: the next connection index to start, and progress.
pub struct Shared {
    next: AtomicU64,
    pub progress: Vec<Progress>,
}

impl Shared {
    pub fn new(threads: usize) -> Self {
        Self {
            next: AtomicU64::new(0),
            progress: (0..threads).map(|_| Progress::default()).collect(),
        }
    }
}

/// What one thread measured.
pub struct ThreadReport {
    pub ok: u64,
    pub errors: ErrorCounts,
    pub non_2xx: u64,
    pub connect_us: Histogram,
    /// From the latency origin (the scheduled start with `--rate`) to EOF.
    pub total_us: Histogram,
    /// From the actual start to EOF.
    pub from_start_us: Histogram,
    /// How late each connection started (empty without a schedule).
    pub start_lag: StartLags,
    pub first_other: Option<io::Error>,
    /// When this thread's last connection ended.
    pub finished: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Free,
    Connecting,
    Writing,
    Reading,
}

#[derive(Clone, Copy)]
struct Conn {
    fd: RawFd,
    phase: Phase,
    start: Start,
    sent: usize,
    probe: ResponseProbe,
}

struct Runner<'a> {
    plan: &'a Plan,
    progress: &'a Progress,
    epoll: OwnedFd,
    conns: Vec<Conn>,
    free: Vec<usize>,
    scratch: Vec<u8>,
    report: ThreadReport,
    /// epoll_pwait2 is available (cleared on ENOSYS).
    pwait2: bool,
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs one thread's share: `slots` concurrent connections, taking connection
/// indexes from `shared` until `plan.connections` are started.
pub fn run_thread(
    plan: &Plan,
    shared: &Shared,
    idx: usize,
    slots: usize,
) -> io::Result<ThreadReport> {
    // SAFETY: plain syscall; the fd is owned right after the check.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    let now = Instant::now();
    let mut r = Runner {
        plan,
        progress: &shared.progress[idx],
        // SAFETY: ep was just created and is owned by nobody else.
        epoll: unsafe { OwnedFd::from_raw_fd(ep) },
        conns: vec![
            Conn {
                fd: -1,
                phase: Phase::Free,
                start: Start::new(None, now),
                sent: 0,
                probe: ResponseProbe::default()
            };
            slots
        ],
        free: (0..slots).rev().collect(),
        scratch: vec![0; SCRATCH],
        report: ThreadReport {
            ok: 0,
            errors: ErrorCounts::default(),
            non_2xx: 0,
            connect_us: Histogram::new(),
            total_us: Histogram::new(),
            from_start_us: Histogram::new(),
            start_lag: StartLags::default(),
            first_other: None,
            finished: now,
        },
        pwait2: true,
    };
    r.run(&shared.next)?;
    Ok(r.report)
}

impl Runner<'_> {
    fn run(&mut self, next: &AtomicU64) -> io::Result<()> {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; self.conns.len()];
        let mut pending: Option<u64> = None; // claimed, not yet due
        let mut exhausted = false;
        let mut last_sweep = Instant::now();
        loop {
            let now = Instant::now();
            let mut wake_at = None;
            while !self.free.is_empty() && !exhausted {
                let k = match pending.take() {
                    Some(k) => k,
                    None => {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= self.plan.connections {
                            exhausted = true;
                            break;
                        }
                        k
                    }
                };
                let mut due = None;
                if let Some(s) = self.plan.schedule {
                    match s.due(self.plan.start, k) {
                        Some(at) if at <= now => due = Some(at),
                        // Not due yet (None: beyond the clock, never).
                        later => {
                            pending = Some(k);
                            wake_at = later;
                            break;
                        }
                    }
                }
                self.start(now, due);
            }
            let in_flight = self.conns.len() - self.free.len();
            if exhausted && in_flight == 0 {
                return Ok(());
            }
            let n = match wake_at {
                Some(at) => {
                    let until = at.saturating_duration_since(Instant::now()).min(SWEEP);
                    if self.plan.wake_on_time {
                        self.wait_precisely(&mut events, until)
                    } else {
                        self.wait(&mut events, until)
                    }
                }
                None => self.wait(&mut events, SWEEP),
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            for ev in &events[..n as usize] {
                self.on_event(ev.u64 as usize, ev.events);
            }
            if last_sweep.elapsed() >= SWEEP {
                last_sweep = Instant::now();
                self.sweep(last_sweep);
            }
        }
    }

    /// epoll_wait with `timeout` rounded up to whole milliseconds, so a due
    /// start is never woken for early.
    fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> i32 {
        let timeout_ms = timeout.as_micros().div_ceil(1000) as i32;
        // SAFETY: events is writable for its whole length.
        unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        }
    }

    /// Waits for a due start to the nanosecond with epoll_pwait2 (5.11+):
    /// under --rate the start lag counts as latency, and epoll_wait's
    /// millisecond rounding alone would add ~0.5 ms to each connection.
    /// Called through syscall() so the binary needs no glibc 2.35; on ENOSYS
    /// it falls back to [`Self::wait`] for the rest of the run.
    fn wait_precisely(&mut self, events: &mut [libc::epoll_event], timeout: Duration) -> i32 {
        if !self.pwait2 {
            return self.wait(events, timeout);
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: events is writable for its whole length, ts is a valid
        // timespec, and a null sigmask means "leave the mask alone".
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                &ts as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n < 0 && errno() == libc::ENOSYS {
            self.pwait2 = false;
            return self.wait(events, timeout);
        }
        n as i32
    }

    /// Starts one connection, due at `due` (None: no schedule), in a free
    /// slot (the caller checked there is one).
    fn start(&mut self, now: Instant, due: Option<Instant>) {
        let Some(slot) = self.free.pop() else { return };
        let start = Start::new(due, now);
        if let Some(lag) = start.lag {
            self.report.start_lag.record(lag);
        }
        let t = &self.plan.target;
        // SAFETY: plain syscall.
        let fd = unsafe {
            libc::socket(
                t.family(),
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            self.free.push(slot);
            self.count_error(ErrorKind::Other, errno(), Instant::now());
            return;
        }
        self.conns[slot] = Conn {
            fd,
            phase: Phase::Connecting,
            start,
            sent: 0,
            probe: ResponseProbe::default(),
        };
        // SAFETY: the address is valid for its length.
        let rc = unsafe { libc::connect(fd, t.as_ptr(), t.socklen()) };
        if rc == 0 {
            self.connected(slot);
        } else {
            let e = errno();
            if e != libc::EINPROGRESS {
                self.fail(slot, ErrorKind::from_errno(e, true), e);
                return;
            }
        }
        // Edge-triggered with both directions: one registration serves the
        // whole connection, no EPOLL_CTL_MOD.
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: slot as u64,
        };
        // SAFETY: ev is valid for the call.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0
        {
            self.fail(slot, ErrorKind::Other, errno());
            return;
        }
        if self.conns[slot].phase == Phase::Writing {
            self.write(slot);
        }
    }

    fn connected(&mut self, slot: usize) {
        let c = &mut self.conns[slot];
        c.phase = Phase::Writing;
        self.report
            .connect_us
            .record(c.start.at.elapsed().as_micros() as u64);
    }

    fn on_event(&mut self, slot: usize, ev: u32) {
        let err_bits = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        match self.conns[slot].phase {
            Phase::Free => return,
            Phase::Connecting => {
                if ev & err_bits != 0 {
                    let e = self.so_error(slot);
                    if e != 0 {
                        self.fail(slot, ErrorKind::from_errno(e, true), e);
                        return;
                    }
                }
                if ev & (libc::EPOLLOUT as u32 | err_bits) == 0 {
                    return;
                }
                self.connected(slot);
                self.write(slot);
            }
            Phase::Writing => self.write(slot),
            Phase::Reading => {}
        }
        // Only readable-type events can carry the response; a lone EPOLLOUT
        // (write space) would just cost a read that returns EAGAIN.
        let readable = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 | err_bits;
        if self.conns[slot].phase == Phase::Reading && ev & readable != 0 {
            self.read(slot, ev & (libc::EPOLLRDHUP as u32 | err_bits) != 0);
        }
    }

    fn so_error(&self, slot: usize) -> i32 {
        let mut e: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: e/len describe a writable int.
        let rc = unsafe {
            libc::getsockopt(
                self.conns[slot].fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut e as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            errno()
        } else {
            e
        }
    }

    fn write(&mut self, slot: usize) {
        let req = &self.plan.request;
        loop {
            let c = &mut self.conns[slot];
            let rest = &req[c.sent..];
            // SAFETY: rest is readable for its length.
            let n =
                unsafe { libc::send(c.fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                c.sent += n as usize;
                if c.sent == req.len() {
                    c.phase = Phase::Reading;
                    return;
                }
                continue;
            }
            match errno() {
                libc::EAGAIN => return, // EPOLLOUT will come
                libc::EINTR => {}
                e => return self.fail(slot, ErrorKind::from_errno(e, false), e),
            }
        }
    }

    /// Reads until EAGAIN or EOF. `peer_closed`: the event reported the peer's
    /// FIN, so all data precedes it in the queue and a short read means EOF
    /// (saves the read that would return 0).
    fn read(&mut self, slot: usize, peer_closed: bool) {
        loop {
            let fd = self.conns[slot].fd;
            // SAFETY: scratch is writable for its whole length.
            let n = unsafe { libc::read(fd, self.scratch.as_mut_ptr().cast(), self.scratch.len()) };
            if n > 0 {
                let n = n as usize;
                self.conns[slot].probe.feed(&self.scratch[..n]);
                if peer_closed && n < self.scratch.len() {
                    return self.finish(slot);
                }
                continue;
            }
            if n == 0 {
                return self.finish(slot);
            }
            match errno() {
                libc::EAGAIN => return,
                libc::EINTR => {}
                e => return self.fail(slot, ErrorKind::from_errno(e, false), e),
            }
        }
    }

    /// EOF: judge the response, record, close.
    fn finish(&mut self, slot: usize) {
        let now = Instant::now();
        match self.conns[slot].probe.verdict() {
            Verdict::Complete(code) => {
                let start = self.conns[slot].start;
                self.report.total_us.record(micros(start.latency(now)));
                self.report
                    .from_start_us
                    .record(micros(start.since_start(now)));
                self.report.ok += 1;
                if !(200..300).contains(&code) {
                    self.report.non_2xx += 1;
                }
                self.release(slot, now);
                self.progress.done.store(
                    self.report.ok + self.report.errors.total(),
                    Ordering::Relaxed,
                );
            }
            Verdict::Short => {
                self.release(slot, now);
                self.count_error(ErrorKind::ShortResponse, 0, now);
            }
        }
    }

    /// Ends a connection as failed; `errno` explains an Other.
    fn fail(&mut self, slot: usize, kind: ErrorKind, errno: i32) {
        let now = Instant::now();
        self.release(slot, now);
        self.count_error(kind, errno, now);
    }

    fn count_error(&mut self, kind: ErrorKind, errno: i32, now: Instant) {
        self.report.errors.add(kind);
        if kind == ErrorKind::Other && self.report.first_other.is_none() {
            self.report.first_other = Some(io::Error::from_raw_os_error(errno));
        }
        self.report.finished = now;
        self.progress
            .errors
            .store(self.report.errors.total(), Ordering::Relaxed);
        self.progress.done.store(
            self.report.ok + self.report.errors.total(),
            Ordering::Relaxed,
        );
    }

    /// Closes the slot's socket (which also removes it from epoll) and frees the slot.
    fn release(&mut self, slot: usize, now: Instant) {
        let c = &mut self.conns[slot];
        // SAFETY: the fd belongs to this slot and is closed exactly once.
        unsafe { libc::close(c.fd) };
        c.fd = -1;
        c.phase = Phase::Free;
        self.free.push(slot);
        self.report.finished = now;
    }

    /// Fails connections older than the timeout.
    fn sweep(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let c = &self.conns[slot];
            if c.phase == Phase::Free || now.duration_since(c.start.at) < self.plan.timeout {
                continue;
            }
            let kind = if c.phase == Phase::Connecting {
                ErrorKind::ConnectTimeout
            } else {
                ErrorKind::Timeout
            };
            self.fail(slot, kind, libc::ETIMEDOUT);
        }
    }
}
