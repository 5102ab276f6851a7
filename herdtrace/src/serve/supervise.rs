//! Starting workers (forked processes or threads), waiting for a stop signal,
//! and stopping every worker: no zombies, no orphans.
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::slots::{Slot, Slots};
use super::worker::{Wait, Worker};
use super::{signals, sys, Config};
use super::{ListeningLine, Model};

/// How long workers get to become ready before startup is declared failed.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a stop is re-sent to workers that have not exited yet (a signal
/// that lands just before a worker enters a blocking call is otherwise lost).
const NUDGE_EVERY: Duration = Duration::from_millis(20);
/// After this, forked workers that still run are SIGKILLed.
const KILL_AFTER: Duration = Duration::from_secs(5);

/// The workers, whatever they are.
pub(super) trait Crew {
    /// Collects workers that ended; returns how many still run.
    fn reap(&mut self) -> usize;
    /// True once a worker failed (error, crash, non-zero exit).
    fn failed(&self) -> bool;
    /// True once any worker ended. A worker ends cleanly only after a stop
    /// signal of its own (Ctrl-C reaches the whole process group, maybe before
    /// the supervisor sees it); the server then stops as a whole.
    fn ended(&self) -> bool;
    /// Asks running workers to stop (interrupting blocking calls).
    fn nudge(&mut self);
    /// Kills what still runs; false if that is not possible (threads).
    fn kill(&mut self) -> bool;
}

/// What one worker listens on: its listener and, for shared-epoll, the shared epoll.
#[derive(Clone, Copy)]
struct Seat {
    listen: RawFd,
    shared_epoll: Option<RawFd>,
}

/// Worker `i`'s seat: its own socket with reuseport (one per worker), else the shared one.
fn seat(listeners: &[OwnedFd], shared_epoll: Option<RawFd>, i: usize) -> Seat {
    let listen = listeners[if listeners.len() > 1 { i } else { 0 }].as_raw_fd();
    Seat {
        listen,
        shared_epoll,
    }
}

/// The body of one worker, in its own thread or process.
fn worker_main(cfg: &Config, seat: Seat, slot: &Slot) -> io::Result<()> {
    let mut own_epoll = None;
    let wait = if cfg.model == Model::IoUring {
        Wait::Uring {
            multishot: cfg.multishot,
        }
    } else if !cfg.model.uses_epoll() {
        Wait::Blocking
    } else {
        let epfd = match seat.shared_epoll {
            Some(fd) => fd,
            None => {
                // Created here, after fork, so each worker has its own eventpoll.
                let ep = sys::epoll_create()?;
                sys::epoll_add(ep.as_raw_fd(), seat.listen, cfg.epoll_events())?;
                own_epoll.insert(ep).as_raw_fd()
            }
        };
        Wait::Epoll {
            epfd,
            batch: cfg.batch(),
            timeout_ms: cfg.wait_timeout_ms(),
        }
    };
    Worker {
        listen: seat.listen,
        wait,
        work: cfg.work,
    }
    .run(slot)
}

/// Runs the workers as forked processes and supervises them; returns the exit code.
pub fn processes(
    cfg: &Config,
    listeners: Vec<OwnedFd>,
    slots: &Slots,
    line: ListeningLine,
) -> anyhow::Result<i32> {
    let parent = sys::getpid();
    // Anything buffered would be written again by every child otherwise.
    io::stdout().flush().context("flush stdout")?;
    let mut crew = ProcessCrew {
        pids: Vec::with_capacity(cfg.workers),
        failed: false,
        ended: false,
    };
    for i in 0..cfg.workers {
        let seat = seat(&listeners, None, i);
        // SAFETY: the supervisor is single-threaded here, so the child may run
        // ordinary code; it never returns from this block (it _exits).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let err = io::Error::last_os_error();
            crew.stop_now();
            return Err(err).context(format!("fork worker {i}"));
        }
        if pid == 0 {
            child(cfg, parent, &listeners, seat, &slots.all()[i], i);
        }
        slots.all()[i]
            .pid
            .store(pid, std::sync::atomic::Ordering::Relaxed);
        slots.all()[i]
            .tid
            .store(pid, std::sync::atomic::Ordering::Relaxed);
        crew.pids.push(Some(pid));
    }
    // Workers hold their own copies; the parent never accepts.
    drop(listeners);
    supervise(&mut crew, slots, line)
}

fn child(cfg: &Config, parent: i32, listeners: &[OwnedFd], seat: Seat, slot: &Slot, i: usize) -> ! {
    // SAFETY: prctl/getppid/close/_exit are plain syscalls.
    unsafe {
        // A SIGKILLed parent must not leave orphans: the kernel kills us.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
            || libc::getppid() != parent
        {
            libc::_exit(1);
        }
        // With reuseport each worker keeps only its own socket.
        for l in listeners {
            if l.as_raw_fd() != seat.listen {
                libc::close(l.as_raw_fd());
            }
        }
    }
    let code = match signals::unblock_all().and_then(|()| worker_main(cfg, seat, slot)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("herdtrace: serve: worker {i}: {e}");
            1
        }
    };
    // SAFETY: leave without running the parent's destructors (shared fds, mmap).
    unsafe { libc::_exit(code) }
}

struct ProcessCrew {
    pids: Vec<Option<libc::pid_t>>,
    failed: bool,
    ended: bool,
}

impl ProcessCrew {
    fn stop_now(&mut self) {
        self.kill();
        while self.reap() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Crew for ProcessCrew {
    fn reap(&mut self) -> usize {
        for (i, entry) in self.pids.iter_mut().enumerate() {
            let Some(pid) = *entry else { continue };
            let mut status = 0;
            // SAFETY: waits only for our own child.
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if rc == 0 {
                continue;
            }
            *entry = None;
            self.ended = true;
            if rc < 0 {
                self.failed = true;
                let e = io::Error::last_os_error();
                eprintln!("herdtrace: serve: waitpid for worker {i} (pid {pid}): {e}");
            } else if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                self.failed = true;
                eprintln!(
                    "herdtrace: serve: worker {i} (pid {pid}) ended: {}",
                    describe(status)
                );
            }
        }
        self.pids.iter().flatten().count()
    }

    fn failed(&self) -> bool {
        self.failed
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn nudge(&mut self) {
        for pid in self.pids.iter().flatten() {
            // SAFETY: signals our own unreaped child.
            unsafe { libc::kill(*pid, libc::SIGTERM) };
        }
    }

    fn kill(&mut self) -> bool {
        for pid in self.pids.iter().flatten() {
            // SAFETY: signals our own unreaped child.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        true
    }
}

fn describe(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// Runs the workers as threads of this process; returns the exit code.
pub fn threads(
    cfg: &Config,
    listeners: Vec<OwnedFd>,
    shared_epoll: Option<OwnedFd>,
    slots: &Arc<Slots>,
    line: ListeningLine,
) -> anyhow::Result<i32> {
    let shared = shared_epoll.as_ref().map(AsRawFd::as_raw_fd);
    let mut crew = ThreadCrew {
        handles: Vec::with_capacity(cfg.workers),
        failed: false,
        ended: false,
    };
    for i in 0..cfg.workers {
        let seat = seat(&listeners, shared, i);
        let (cfg, slots) = (cfg.clone(), Arc::clone(slots));
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || worker_main(&cfg, seat, &slots.all()[i]));
        match spawned {
            Ok(h) => crew.handles.push(Some(h)),
            Err(e) => {
                signals::request_stop();
                while crew.reap() > 0 {
                    crew.nudge();
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Err(e).context(format!("spawn worker thread {i}"));
            }
        }
    }
    // Sockets and the shared epoll stay open until every thread is joined.
    let code = supervise(&mut crew, slots, line);
    drop(shared_epoll);
    drop(listeners);
    code
}

struct ThreadCrew {
    handles: Vec<Option<JoinHandle<io::Result<()>>>>,
    failed: bool,
    ended: bool,
}

impl Crew for ThreadCrew {
    fn reap(&mut self) -> usize {
        for (i, entry) in self.handles.iter_mut().enumerate() {
            if !entry.as_ref().is_some_and(JoinHandle::is_finished) {
                continue;
            }
            let Some(h) = entry.take() else { continue };
            self.ended = true;
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.failed = true;
                    eprintln!("herdtrace: serve: worker {i}: {e}");
                }
                Err(_) => {
                    self.failed = true;
                    eprintln!("herdtrace: serve: worker {i} panicked");
                }
            }
        }
        self.handles.iter().flatten().count()
    }

    fn failed(&self) -> bool {
        self.failed
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn nudge(&mut self) {
        for h in self.handles.iter().flatten() {
            // SAFETY: the thread is not joined yet, so its pthread_t is valid.
            unsafe { libc::pthread_kill(h.as_pthread_t(), signals::NUDGE_SIGNAL) };
        }
    }

    fn kill(&mut self) -> bool {
        false
    }
}

/// Waits for readiness, prints the listening line, waits for a stop signal
/// (or a failed worker), then stops every worker. Returns the exit code.
pub(super) fn supervise(
    crew: &mut dyn Crew,
    slots: &Slots,
    line: ListeningLine,
) -> anyhow::Result<i32> {
    let set = signals::supervisor_set();
    let mut startup_error = None;
    let mut stopped = false;
    let started = Instant::now();
    while !slots.all().iter().all(Slot::is_ready) {
        crew.reap();
        if crew.failed() {
            startup_error = Some(anyhow::anyhow!("a worker failed to start"));
            break;
        }
        if crew.ended() {
            stopped = true;
            break;
        }
        if started.elapsed() > READY_TIMEOUT {
            startup_error = Some(anyhow::anyhow!("workers not ready after {READY_TIMEOUT:?}"));
            break;
        }
        // Early stop signals are honoured as soon as they arrive.
        match signals::wait_signal(&set, Duration::from_millis(1)) {
            Ok(Some(sig)) if sig != libc::SIGCHLD => {
                stopped = true;
                break;
            }
            Ok(_) => {}
            Err(e) => {
                startup_error = Some(anyhow::Error::new(e).context("sigtimedwait"));
                break;
            }
        }
    }
    if startup_error.is_none() && !stopped {
        let mut out = io::stdout().lock();
        // Flushed at once: the reader may be a pipe.
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            startup_error = Some(anyhow::Error::new(e).context("write the listening line"));
        }
    }
    if startup_error.is_none() && !stopped {
        loop {
            match signals::wait_signal(&set, Duration::from_millis(100)) {
                Ok(Some(sig)) if sig != libc::SIGCHLD => break,
                Ok(_) => {}
                Err(e) => {
                    startup_error = Some(anyhow::Error::new(e).context("sigtimedwait"));
                    break;
                }
            }
            crew.reap();
            if crew.ended() {
                break;
            }
        }
    }
    shutdown(crew);
    match startup_error {
        Some(e) => Err(e),
        None if crew.failed() => Ok(1),
        None => Ok(0),
    }
}

/// Stops every worker and reaps it; SIGKILLs forked workers that linger.
fn shutdown(crew: &mut dyn Crew) {
    signals::request_stop();
    let set = signals::supervisor_set();
    let started = Instant::now();
    let mut killed = false;
    while crew.reap() > 0 {
        if !killed && started.elapsed() > KILL_AFTER {
            killed = crew.kill();
            if killed {
                eprintln!(
                    "herdtrace: serve: workers still running after {KILL_AFTER:?}, sent SIGKILL"
                );
            }
        } else {
            crew.nudge();
        }
        // Sleeps, but wakes at once on SIGCHLD.
        let _ = signals::wait_signal(&set, NUDGE_EVERY);
    }
}
