//! The `tokio` and `tokio-reuseport` models: what a typical Rust async
//! server does. A multi-threaded tokio runtime with one worker thread per
//! `--workers`; one task accepts from a `tokio::net::TcpListener` (with
//! `tokio-reuseport`, one task per SO_REUSEPORT listener, one listener per
//! worker) and spawns a task per connection. Which worker thread runs an
//! accept is tokio's choice; each worker thread counts the accepts it made.
//!
//! tokio hides EAGAIN: `TcpListener::accept` retries inside the runtime
//! (it clears the readiness and waits for the next edge), so the server
//! never sees one and its `eagain` counts stay 0; the tracer counts them.
use std::cell::Cell;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::conn::{spin, RECV_TIMEOUT};
use super::http::{HeaderEnd, RESPONSE};
use super::slots::{bump, Slots};
use super::supervise::{supervise, Crew};
use super::worker::{classify_accept, AcceptError};
use super::ListeningLine;
use super::{sys, Config};

/// Time left to connections in flight when the server stops.
const DRAIN: Duration = Duration::from_secs(1);
/// Pause after EMFILE and the like, as the epoll workers do.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(10);

thread_local! {
    /// This worker thread's slot, set when tokio starts the thread.
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Runs the runtime and its accept tasks until a stop signal; returns the exit code.
pub fn run(
    cfg: &Config,
    listeners: Vec<OwnedFd>,
    slots: &Arc<Slots>,
    line: ListeningLine,
) -> anyhow::Result<i32> {
    let runtime = runtime(cfg.workers, slots).context("starting the tokio runtime")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_tasks = Vec::with_capacity(listeners.len());
    for fd in listeners {
        let std_listener = std::net::TcpListener::from(fd);
        // Registered once with the runtime's single I/O driver (edge-triggered).
        let listener = {
            let _inside = runtime.enter();
            TcpListener::from_std(std_listener).context("registering the listener")?
        };
        let task = accept_loop(listener, Arc::clone(slots), cfg.work, stop_rx.clone());
        accept_tasks.push(Some(runtime.spawn(task)));
    }
    let mut crew = TokioCrew {
        runtime: &runtime,
        accept_tasks,
        stop: stop_tx,
        failed: false,
        ended: false,
    };
    let code = supervise(&mut crew, slots, line);
    runtime.shutdown_timeout(DRAIN);
    code
}

/// A runtime with `workers` worker threads; each takes the next slot as it starts.
fn runtime(workers: usize, slots: &Arc<Slots>) -> io::Result<Runtime> {
    let next = Arc::new(AtomicUsize::new(0));
    let slots = Arc::clone(slots);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("worker")
        .enable_io()
        .enable_time()
        .on_thread_start(move || {
            // Worker threads start when the runtime is built; any later
            // thread (tokio's blocking pool, unused here) takes no slot.
            let i = next.fetch_add(1, Ordering::Relaxed);
            if let Some(slot) = slots.all().get(i) {
                slot.mark_ready(sys::getpid(), sys::gettid());
                SLOT.with(|s| s.set(Some(i)));
            }
        })
        .build()
}

/// The usual tokio accept loop: accept, spawn the connection, repeat.
async fn accept_loop(
    listener: TcpListener,
    slots: Arc<Slots>,
    work: Duration,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return Ok(()),
        };
        match accepted {
            Ok((stream, _)) => {
                // Counted for the thread that made the accept call.
                if let Some(i) = SLOT.with(Cell::get) {
                    bump(&slots.all()[i].accepts);
                }
                tokio::spawn(serve(stream, work));
            }
            Err(e) => match classify_accept(e.raw_os_error().unwrap_or(0)) {
                AcceptError::Empty | AcceptError::Interrupted | AcceptError::Transient => {}
                AcceptError::Resource => tokio::time::sleep(RESOURCE_BACKOFF).await,
                AcceptError::Fatal => return Err(e),
            },
        }
    }
}

/// Reads the request head, burns `work` of CPU, answers, closes: what
/// `conn::serve` does for the epoll models, as a task.
async fn serve(mut stream: TcpStream, work: Duration) {
    let mut buf = [0u8; 4096];
    let mut head = HeaderEnd::default();
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return true,
                Ok(n) if head.feed(&buf[..n]).is_some() => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    };
    if !matches!(tokio::time::timeout(RECV_TIMEOUT, read).await, Ok(true)) {
        return;
    }
    if !work.is_zero() {
        // CPU work blocks the worker thread, as a real handler's would.
        spin(work);
    }
    let _ = stream.write_all(RESPONSE).await;
}

/// The accept tasks, supervised like worker threads.
struct TokioCrew<'a> {
    runtime: &'a Runtime,
    accept_tasks: Vec<Option<JoinHandle<io::Result<()>>>>,
    stop: watch::Sender<bool>,
    failed: bool,
    ended: bool,
}

impl Crew for TokioCrew<'_> {
    fn reap(&mut self) -> usize {
        for (i, entry) in self.accept_tasks.iter_mut().enumerate() {
            if !entry.as_ref().is_some_and(JoinHandle::is_finished) {
                continue;
            }
            let Some(task) = entry.take() else { continue };
            self.ended = true;
            match self.runtime.block_on(task) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.failed = true;
                    eprintln!("herdtrace: serve: accept task {i}: {e}");
                }
                Err(e) => {
                    self.failed = true;
                    eprintln!("herdtrace: serve: accept task {i} failed: {e}");
                }
            }
        }
        self.accept_tasks.iter().flatten().count()
    }

    fn failed(&self) -> bool {
        self.failed
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn nudge(&mut self) {
        self.stop.send_replace(true);
    }

    fn kill(&mut self) -> bool {
        false
    }
}
