//! Live tracing (`herdtrace --pid ...`): picks the backend, starts the
//! tracer, follows the target tasks and feeds the ring buffers, merged in
//! time order, to the same
//! [`Pipeline`] that `replay` uses, on a current-thread tokio runtime.
use std::{
    io::{self, BufWriter, Write},
    net::SocketAddr,
    os::fd::{FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::{
    io::{unix::AsyncFd, Interest},
    time::{self, Instant, MissedTickBehavior},
};

use crate::{
    backend::{self, BackendRequest, KernelFacts},
    btf::KernelOffsets,
    cgroup, check,
    diagnose::layout::plural,
    engine::{EngineConfig, Summary},
    events, exporter, kernel,
    loader::Tracer,
    logging::LogArgs,
    merge::{LateRecords, Merger},
    pipeline::{Pipeline, SkippedRuns},
    record::{RecordHeader, Recorder},
    report::{is_broken_pipe, OutputOptions, RunInfo, WallClock},
    start, stop, targets,
};

pub use crate::demo::{demo, DemoArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Trace this process, its threads and its descendants, existing and
    /// forked later (repeatable, or comma-separated as perf's: `-p 1,2`).
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    pub pids: Vec<i64>,
    /// Trace every process with this exact name (/proc/PID/comm) when tracing
    /// starts, and descendants (repeatable); one started later is not traced.
    #[arg(short = 'c', long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Trace every process in this cgroup v2 directory and the cgroups below
    /// it, including processes that enter it later (a container: e.g.
    /// /sys/fs/cgroup/system.slice/docker-ID.scope).
    #[arg(short = 'G', long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Only connections to this local port (arrivals, accepts and EAGAIN).
    #[arg(short = 'P', long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Stop after this many seconds (default: until Ctrl-C or the targets exit).
    #[arg(short = 'd', long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// Seconds between live lines.
    #[arg(short = 'i', long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    pub interval: f64,
    /// Print one line per connection.
    #[arg(long)]
    pub per_conn: bool,
    /// NDJSON on stdout: one "conn" object per connection, "interval" objects, a final "summary".
    #[arg(long)]
    pub json: bool,
    /// Nothing on stdout (no live lines, no interval or connection output):
    /// for exporter-only runs; the summary and errors still go to stderr.
    #[arg(short = 'q', long, conflicts_with = "per_conn")]
    pub quiet: bool,
    /// Probe set: auto takes fentry, else kprobe, else tracepoint.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendRequest,
    /// Also save the raw event stream to FILE (created 0600) for `herdtrace replay`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Ring buffer size, in bytes or with a K/M suffix (a power of two, at
    /// least 4K), split between the per-CPU ring buffers (up to 8).
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_size)]
    pub ringbuf_size: u32,
    /// Tracepoint backend on kernels without irq:softirq_exit: how long
    /// after a connection arrives a wakeup on the same CPU can still belong
    /// to it (microseconds). Elsewhere a chain ends with the softirq that
    /// processed the connection, however long that takes.
    #[arg(long, value_name = "US", default_value_t = 5000)]
    pub chain_window_us: u64,
    /// Serve Prometheus metrics on http://ADDR/metrics while tracing
    /// (e.g. 127.0.0.1:9435); the trace ends as usual (Ctrl-C/SIGTERM,
    /// --duration, or the traced processes exiting).
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<SocketAddr>,
    /// Benchmarks only: attach programs that do nothing to the same
    /// tracepoints, so `cargo xtask bench` can measure what the probe points
    /// themselves cost (tracepoint backend; no connection is reported).
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    pub empty_programs: bool,
    #[command(flatten)]
    pub log: LogArgs,
}

impl Default for TraceArgs {
    fn default() -> Self {
        TraceArgs {
            pids: Vec::new(),
            comms: Vec::new(),
            cgroup: None,
            port: None,
            duration: None,
            interval: 1.0,
            per_conn: false,
            json: false,
            quiet: false,
            backend: BackendRequest::Auto,
            record: None,
            ringbuf_size: 4 << 20,
            chain_window_us: 5000,
            prometheus: None,
            #[cfg(feature = "test-hooks")]
            empty_programs: false,
            log: LogArgs::default(),
        }
    }
}

pub fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("{s} must be a positive number of seconds"));
    }
    Ok(v)
}

/// `4096`, `256K`, `4M` → bytes; a power of two, at least one page.
pub fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1u64 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1u64 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4096, 256K, 4M)"))?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s} is too large"))?;
    if bytes < 4096 || !bytes.is_power_of_two() || bytes > (1 << 30) {
        return Err(format!(
            "{s}: the ring buffer size must be a power of two between 4K and 1G"
        ));
    }
    Ok(bytes as u32)
}

/// Everything needed to start the tracer on this kernel.
pub struct Prepared {
    pub request: BackendRequest,
    pub facts: KernelFacts,
    pub offsets: KernelOffsets,
    pub options: start::Options,
    pub info: RunInfo,
    /// Said before tracing starts (simulated gaps, struct members missing).
    pub notes: Vec<String>,
}

/// Privileges, kernel facts and struct offsets; the backend is chosen when
/// the tracer attaches (`start::attach_first`), the same way `check` does.
pub fn prepare(args: &TraceArgs) -> Result<Prepared> {
    if let Some(problem) = kernel::privilege_problem() {
        bail!("{problem}");
    }
    if let Some(problem) = kernel::lockdown_problem() {
        bail!("{problem}");
    }
    if let Some(problem) = kernel::pid_namespace_problem() {
        bail!("{problem}");
    }
    let btf = check::load_btf();
    let facts = check::gather_facts_with(btf.as_ref().ok());
    // Fail early, with the same reason `check` gives, when nothing can run.
    let choice = backend::choose(args.backend, &facts).map_err(|e| anyhow!(e))?;
    let btf = btf.map_err(|e| anyhow!(e))?;
    #[cfg_attr(not(feature = "test-hooks"), allow(unused_mut))]
    let mut offsets = KernelOffsets::from_btf(&btf)?;
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::apply_offset(&mut offsets)?;
    let mut notes = Vec::new();
    let simulated = kernel::simulated_missing();
    if !simulated.is_empty() {
        notes.push(format!(
            "{}: acting as if the kernel lacked {}",
            kernel::MISSING_ENV,
            simulated.items().join(", ")
        ));
    }
    for m in offsets.missing() {
        notes.push(format!(
            "warning: {} missing from BTF: lost {}",
            m.member, m.lost
        ));
    }
    let options = start::Options {
        port_filter: args.port.unwrap_or(0),
        chain_window_ns: args.chain_window_us.saturating_mul(1000),
        ringbuf_bytes: args.ringbuf_size,
        #[cfg(feature = "test-hooks")]
        empty_programs: args.empty_programs,
    };
    let info = RunInfo {
        backend: choice.backend.name().to_string(),
        kernel: facts.release.clone(),
        attach: Vec::new(),
        scope: String::new(),
        listeners: Vec::new(),
    };
    Ok(Prepared {
        request: args.backend,
        facts,
        offsets,
        options,
        info,
        notes,
    })
}

/// Processes followed from the command line: roots plus descendants (with
/// their start times so a reused pid is not mistaken for them), and every
/// process of a `--cgroup`.
pub struct TargetSet {
    roots: Vec<crate::procstat::ProcStat>,
    cgroup: Option<cgroup::Cgroup>,
    /// Roots already reported gone (each is reported once).
    exited: std::cell::RefCell<Vec<u32>>,
    /// Listeners already named (each is named once).
    named: std::cell::RefCell<Vec<targets::TargetListener>>,
}

/// What one pass over the targets put into the tracer.
#[derive(Debug, Default)]
pub struct Loaded {
    pub tasks: usize,
    pub procs: usize,
    /// Listeners not named before.
    pub new_listeners: Vec<targets::TargetListener>,
}

impl TargetSet {
    pub fn resolve(pids: &[i64], comms: &[String]) -> Result<TargetSet> {
        TargetSet::resolve_with(pids, comms, None)
    }

    /// `--pid`/`--comm` roots and an optional `--cgroup`.
    pub fn resolve_with(
        pids: &[i64],
        comms: &[String],
        cgroup_path: Option<&Path>,
    ) -> Result<TargetSet> {
        let cgroup = cgroup_path.map(cgroup::resolve).transpose()?;
        let all = targets::scan(Path::new("/proc"))?;
        let root_pids = if cgroup.is_some() && pids.is_empty() && comms.is_empty() {
            Vec::new()
        } else {
            let tgid_of = |tid| targets::tgid_of(Path::new("/proc"), tid);
            targets::resolve_roots(&all, pids, comms, std::process::id(), &tgid_of)?
        };
        let roots = all
            .into_iter()
            .filter(|p| root_pids.contains(&p.pid))
            .collect();
        Ok(TargetSet {
            roots,
            cgroup,
            exited: Default::default(),
            named: Default::default(),
        })
    }

    /// The cgroup traced, if any.
    pub fn cgroup(&self) -> Option<&cgroup::Cgroup> {
        self.cgroup.as_ref()
    }

    /// Live processes to trace now.
    fn pids(&self) -> Result<Vec<u32>> {
        Ok(self.pids_in(&targets::scan(Path::new("/proc"))?))
    }

    /// [`Self::pids`] from the process list `all`.
    fn pids_in(&self, all: &[crate::procstat::ProcStat]) -> Vec<u32> {
        let proc_root = Path::new("/proc");
        let mut live: Vec<u32> = self
            .roots
            .iter()
            .filter(|r| targets::alive(proc_root, r.pid, r.start_ticks))
            .map(|r| r.pid)
            .collect();
        if let Some(c) = &self.cgroup {
            live.extend(cgroup::procs(&c.dir));
        }
        targets::with_descendants(all, &live)
    }

    /// Puts every thread of every target into the kernel's traced set and
    /// their listeners into the watched set; marks threads already blocked
    /// in accept() (their return probe will not run).
    pub fn load_into(&self, tracer: &mut Tracer) -> Result<Loaded> {
        let proc_root = Path::new("/proc");
        let pids = self.pids()?;
        let new_listeners = self.watch_listeners(tracer, &pids)?;
        let mut tasks = 0;
        for &pid in &pids {
            for tid in targets::threads(proc_root, pid) {
                tracer.trace_task(tid, pid)?;
                tasks += 1;
            }
            for tid in targets::threads_in_accept(proc_root, pid) {
                tracer.accept_in_progress(tid)?;
            }
        }
        Ok(Loaded {
            tasks,
            procs: pids.len(),
            new_listeners,
        })
    }

    /// Puts the listeners of `pids` into the watched set; returns those not
    /// named before.
    fn watch_listeners(
        &self,
        tracer: &mut Tracer,
        pids: &[u32],
    ) -> Result<Vec<targets::TargetListener>> {
        let listeners = targets::target_listeners(Path::new("/proc"), pids);
        for l in &listeners {
            tracer.watch_listener(l.key())?;
        }
        let mut named = self.named.borrow_mut();
        let new: Vec<_> = listeners
            .iter()
            .filter(|l| !named.contains(l))
            .copied()
            .collect();
        named.extend(&new);
        Ok(new)
    }

    /// Listeners the targets opened since the last pass (a server that
    /// calls listen() after the tracer attached; the kernel side already
    /// learnt them at listen()), so the summary can name them. Tasks are
    /// left alone: the probes follow forks.
    pub fn new_listeners(&self, tracer: &mut Tracer) -> Result<Vec<targets::TargetListener>> {
        let pids = self.pids()?;
        self.watch_listeners(tracer, &pids)
    }

    /// What /proc shows of the setup for the balance verdict (workers able
    /// to accept, SO_REUSEPORT groups); zeros if it cannot be read.
    pub fn known_setup(&self) -> crate::engine::KnownSetup {
        let proc_root = Path::new("/proc");
        let roots = self.tree_roots();
        let mut known = crate::diagnose::known_setup(proc_root, &roots);
        if let Ok(all) = targets::scan(proc_root) {
            known.untraced = crate::diagnose::untraced::untraced_waiters(
                proc_root,
                &all,
                &roots,
                &self.pids_in(&all),
                &crate::diagnose::procfs::kcmp_same_file,
            );
        }
        known
    }

    /// The roots of the traced process trees: the named processes, and the
    /// cgroup's processes whose parent is outside it.
    fn tree_roots(&self) -> Vec<u32> {
        let mut roots: Vec<u32> = self.roots.iter().map(|r| r.pid).collect();
        if let Some(c) = &self.cgroup {
            let members = cgroup::procs(&c.dir);
            let all = targets::scan(Path::new("/proc")).unwrap_or_default();
            roots.extend(members.iter().copied().filter(|pid| {
                all.iter()
                    .find(|p| p.pid == *pid)
                    .is_some_and(|p| !members.contains(&p.ppid))
            }));
        }
        roots
    }

    /// True while the trace has something to follow: a root process still
    /// the one we started with, or the cgroup (which may fill up later).
    /// (Descendants are followed in the kernel; the run ends when the roots are gone.)
    fn any_alive(&self) -> bool {
        if let Some(c) = &self.cgroup {
            return c.dir.is_dir();
        }
        self.roots
            .iter()
            .any(|r| targets::alive(Path::new("/proc"), r.pid, r.start_ticks))
    }

    /// Roots that exited (or whose pid now names another process) since the
    /// last call.
    fn newly_exited(&self) -> Vec<u32> {
        let mut exited = self.exited.borrow_mut();
        let gone: Vec<u32> = self
            .roots
            .iter()
            .filter(|r| !exited.contains(&r.pid))
            .filter(|r| !targets::alive(Path::new("/proc"), r.pid, r.start_ticks))
            .map(|r| r.pid)
            .collect();
        exited.extend(&gone);
        gone
    }
}

fn monotonic_ns() -> u64 {
    WallClock::now().mono_ns
}

/// Why a trace ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    Duration,
    Signal(i32),
    TargetsExited,
    Caller,
    OutputClosed,
}

/// Runs one trace until `until()` says stop (or a signal, the duration, the
/// targets exiting), writing to `out`. `on_ready` runs once probes are attached.
pub fn trace_session<W: Write>(
    args: &TraceArgs,
    prepared: &Prepared,
    targets: &TargetSet,
    out: W,
    on_ready: impl FnMut(),
    until: impl FnMut() -> bool,
) -> Result<(Option<Summary>, EndReason)> {
    trace_session_exported(args, prepared, targets, out, None, on_ready, until)
}

/// [`trace_session`], also serving `exporter`'s `/metrics` while it runs.
///
/// The session runs on a current-thread tokio runtime: the ring buffer's
/// readiness, a short drain timer, the interval and liveness timers, the
/// stop signals and the exporter's HTTP connections all wait in one epoll.
pub fn trace_session_exported<W: Write>(
    args: &TraceArgs,
    prepared: &Prepared,
    targets: &TargetSet,
    out: W,
    exporter: Option<exporter::Exporter>,
    on_ready: impl FnMut(),
    until: impl FnMut() -> bool,
) -> Result<(Option<Summary>, EndReason)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("starting the tracer's event loop")?;
    runtime.block_on(session(
        args, prepared, targets, out, exporter, on_ready, until,
    ))
}

/// One epoll instance watching every event ring buffer, registered with the
/// runtime for readiness: readable when any of them is.
fn watch_rings(tracer: &Tracer) -> Result<AsyncFd<OwnedFd>> {
    // SAFETY: plain syscall; the fd is owned below.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(io::Error::last_os_error()).context("creating an epoll for the ring buffers");
    }
    // SAFETY: a fresh fd that nothing else owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
    for fd in tracer.ring_fds() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: both fds are open (the tracer owns the ring buffers' for
        // the whole session); `ev` is valid for the call.
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error()).context("watching a ring buffer");
        }
    }
    // SAFETY: the AsyncFd owns `epoll`, which stays open until the AsyncFd drops.
    unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }
        .map_err(|e| anyhow::Error::from(e.into_parts().1))
        .context("watching the ring buffers")
}

async fn session<W: Write>(
    args: &TraceArgs,
    prepared: &Prepared,
    targets: &TargetSet,
    out: W,
    exporter: Option<exporter::Exporter>,
    mut on_ready: impl FnMut(),
    mut until: impl FnMut() -> bool,
) -> Result<(Option<Summary>, EndReason)> {
    // Before attaching: a recording path that cannot be created leaves nothing behind.
    let known = targets.known_setup();
    let recorder = match &args.record {
        Some(path) => {
            let mut header = RecordHeader::new(&prepared.info.kernel, &prepared.info.backend);
            header.workers = Some(known.workers);
            header.listeners_per_addr = Some(known.listeners_per_addr);
            header.worker_tasks = known.tasks.clone();
            header.setup_hint =
                Some(known.hint).filter(|h| *h != crate::engine::SetupHint::Unknown);
            header.untraced = known.untraced.clone();
            header.accept_loops = known.accept_loops.clone();
            // The session holds closed connections for skip samples and
            // records every sample (see `hold_for_skip_samples` below).
            header.skip_samples = true;
            Some(Recorder::create(path, &header)?)
        }
        None => None,
    };
    let mut signals = stop::Signals::new()?;
    let mut facts = prepared.facts.clone();
    let (choice, mut tracer) = start::attach_first(
        prepared.request,
        &mut facts,
        &prepared.offsets,
        &prepared.options,
    )
    .map_err(|e| anyhow!(e))?;
    let mut info = prepared.info.clone();
    info.backend = choice.backend.name().to_string();
    info.attach = tracer.attached.clone();
    let first = targets.load_into(&mut tracer)?;
    // A fork between the /proc scan and the map update is caught by a second pass.
    let second = targets.load_into(&mut tracer)?;
    let (tasks, procs) = (first.tasks.max(second.tasks), first.procs.max(second.procs));
    #[cfg(feature = "test-hooks")]
    crate::test_hooks::fill_traced_set(&mut tracer);
    let listeners: Vec<String> = first
        .new_listeners
        .iter()
        .chain(&second.new_listeners)
        .map(ToString::to_string)
        .collect();
    info.listeners = listeners.clone();
    info.scope = targets
        .cgroup()
        .map(ToString::to_string)
        .unwrap_or_default();
    let opts = OutputOptions {
        json: args.json,
        per_conn: (args.per_conn || args.json) && !args.quiet,
        intervals: !args.quiet,
    };
    let mut pipeline = Pipeline::new(EngineConfig::default(), opts, info.clone(), out);
    pipeline.set_clock(WallClock::now());
    let exporter = exporter.map(|mut e| {
        e.set_known_tasks(&known.tasks);
        e.set_untraced(known.untraced.tasks.len());
        e
    });
    let known_untraced = known.untraced.clone();
    pipeline.set_setup(known);
    if let Some(r) = recorder {
        pipeline.add_event_sink(Box::new(r));
    }
    if let Some(mut e) = exporter {
        e.set_run_info(&info);
        pipeline.add_observer(e.serve()?);
    }
    eprintln!("herdtrace: backend {choice}");
    for note in &prepared.notes {
        eprintln!("herdtrace: {note}");
    }
    for warning in choice.warnings() {
        eprintln!("herdtrace: warning: {warning}");
    }
    log::debug!("programs loaded: {}", tracer.programs().join(", "));
    if listeners.is_empty() {
        let pids = targets.pids().unwrap_or_default();
        eprintln!(
            "herdtrace: the traced tasks hold no TCP listening socket yet{}; watching for listen()",
            targets::unix_only_note(Path::new("/proc"), &pids)
        );
    } else {
        eprintln!("herdtrace: listeners: {}", listeners.join(", "));
    }
    if let Some(line) = crate::report::text::untraced_line(&known_untraced) {
        eprintln!("herdtrace: warning: {line}");
    }
    let scope = match targets.cgroup() {
        Some(c) => format!(" ({c})"),
        None => String::new(),
    };
    eprintln!("{}", tracing_line(tasks, procs, &scope, &info.backend));
    on_ready();

    let ring = watch_rings(&tracer)?;
    let mut merger = Merger::default();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(args.interval);
    let mut ticks = time::interval_at(started + interval, interval);
    // The kernel wakes us only when a ring buffer is a quarter full
    // (Config::ringbuf_wake_bytes); otherwise this timer drains them.
    let mut drain_timer = time::interval(Duration::from_millis(READER_POLL_MS));
    drain_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let liveness_every = Duration::from_millis(500);
    let mut liveness = time::interval_at(started + liveness_every, liveness_every);
    liveness.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The per-program skip counters: the connections open in a sample
    // window that shows skips are flagged possibly incomplete, so closed
    // connections wait for the next sample and samples come often.
    let mut skip_sampler = SkipSampler::default();
    let mut next_skip_sample = started;
    pipeline.hold_for_skip_samples();
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    #[cfg(feature = "test-hooks")]
    let panic_at = crate::test_hooks::panic_after().map(|d| started + d);
    let mut decode_errors = 0u64;
    let mut losses = LossFeed::default();
    let mut counters_read = started;
    // Whether the targets were seen listening (else each liveness pass looks).
    let mut listening = !listeners.is_empty();
    // Liveness passes spent looking: each pass for the first 10 s, then one
    // in 10 (a look scans /proc; a server may never listen on TCP).
    let mut looks = 0u32;
    let mut reason = loop {
        let mut tick_due = false;
        let mut check_liveness = false;
        let mut skip_reading = None;
        // In this order: the timers are ready only at their times, so a
        // ring buffer that keeps becoming readable cannot starve them.
        tokio::select! {
            biased;
            sig = signals.recv() => break EndReason::Signal(sig),
            _ = ticks.tick() => tick_due = true,
            _ = liveness.tick() => check_liveness = true,
            // Read now, applied once the events before it are fed (below).
            _ = time::sleep_until(next_skip_sample) => skip_reading = Some(LossFeed::read_skips(&tracer)),
            ready = ring.readable() => {
                ready.context("waiting for the ring buffers")?.clear_ready();
            }
            _ = drain_timer.tick() => {}
        }
        // Everything stamped before now less the margin is in the ring
        // buffers; a skip sample covers the events before it, which go in first.
        let watermark = monotonic_ns().saturating_sub(MERGE_MARGIN_NS);
        let upto = skip_reading
            .as_ref()
            .map_or(watermark, |r| watermark.max(r.at_ns));
        if feed(
            &mut tracer,
            &mut merger,
            upto,
            &mut pipeline,
            &mut decode_errors,
        )? {
            break EndReason::OutputClosed;
        }
        // Kernel-side log records are rare: read on this timer, never
        // waited for (a wakeup from inside a program would cost events).
        tracer.drain_log();
        if let Some(reading) = skip_reading {
            let skipped = match losses.apply_skips(reading, &mut pipeline) {
                Ok(skipped) => skipped,
                Err(e) if is_broken_pipe(&e) => break EndReason::OutputClosed,
                Err(e) => return Err(e),
            };
            next_skip_sample = skip_sampler.next(Instant::now(), skipped);
        }
        if tick_due {
            // Drops show at once as sequence gaps; the kernel's own counters
            // are a cross-check read seldom: a BPF map read raises the CPU's
            // `bpf_prog_active`, and a preemptible kernel that preempts the
            // reader there skips every tracepoint program run on that CPU
            // meanwhile (docs/kernel-matrix.md, "Skipped runs on 7.x").
            if counters_read.elapsed() >= COUNTERS_EVERY {
                counters_read = Instant::now();
                losses.feed(&tracer, &mut pipeline)?;
            }
            pipeline.on_late(merger.late());
            // Not past the records still waiting to be merged.
            if let Err(e) = pipeline.on_tick(upto) {
                if is_broken_pipe(&e) {
                    break EndReason::OutputClosed;
                }
                return Err(e);
            }
        }
        // A stop signal that came before the session (between two demo models).
        if let Some(sig) = stop::requested() {
            break EndReason::Signal(sig);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break EndReason::Duration;
        }
        if until() {
            break EndReason::Caller;
        }
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::panic_when_due(panic_at, now);
        if check_liveness {
            let found = if targets.cgroup().is_some() {
                // Processes that entered the cgroup since the last pass.
                targets.load_into(&mut tracer)?.new_listeners
            } else if !listening {
                // Until the targets listen: a server started just before.
                looks = looks.saturating_add(1);
                if looks <= 20 || looks.is_multiple_of(10) {
                    targets.new_listeners(&mut tracer)?
                } else {
                    Vec::new()
                }
            } else {
                Vec::new()
            };
            for l in found {
                eprintln!("herdtrace: new listener: {l}");
                pipeline.add_listener(l.to_string());
                listening = true;
            }
            let gone = targets.newly_exited();
            if !gone.is_empty() && targets.any_alive() {
                let list: Vec<String> = gone.iter().map(u32::to_string).collect();
                eprintln!(
                    "herdtrace: process {} exited; still tracing the others",
                    list.join(", ")
                );
            }
            if !targets.any_alive() {
                break EndReason::TargetsExited;
            }
        }
    };
    if reason == EndReason::OutputClosed {
        // The reader is gone: count the rest, print nothing more to it.
        pipeline.mute();
    }
    // Whatever is still in the ring buffer belongs to the run; the last skip
    // sample covers it.
    let skip_reading = LossFeed::read_skips(&tracer);
    if feed(
        &mut tracer,
        &mut merger,
        u64::MAX,
        &mut pipeline,
        &mut decode_errors,
    )? {
        reason = EndReason::OutputClosed;
    }
    tracer.drain_log();
    if let Err(e) = losses.apply_skips(skip_reading, &mut pipeline) {
        if !is_broken_pipe(&e) {
            return Err(e);
        }
        reason = EndReason::OutputClosed;
        pipeline.mute();
    }
    // Drops at the very end leave no sequence gap; the kernel counter has them.
    losses.feed(&tracer, &mut pipeline)?;
    if decode_errors > 0 {
        eprintln!(
            "herdtrace: warning: {decode_errors} malformed records from the kernel were skipped"
        );
    }
    pipeline.on_late(merger.late());
    if let Some(line) = late_line(merger.late()) {
        eprintln!("herdtrace: warning: {line}");
    }
    drop(ring);
    drop(tracer); // detach every probe before printing the summary
    if reason == EndReason::OutputClosed {
        // stdout is closed; stderr may still reach the user.
        let summary = pipeline.finish_elsewhere(0, &mut io::stderr().lock()).ok();
        return Ok((summary, reason));
    }
    match pipeline.finish(0) {
        Ok(summary) => Ok((Some(summary), reason)),
        Err(e) if is_broken_pipe(&e) => Ok((None, EndReason::OutputClosed)),
        Err(e) => Err(e),
    }
}

/// What the summary says of records merged out of time order, if any.
fn late_line(late: LateRecords) -> Option<String> {
    (late.count > 0).then(|| {
        format!(
            "{} reached the ring buffers too late to be merged in time order \
             (up to {} behind the others: a CPU interrupted or a vCPU \
             descheduled while sending); {} connections may be miscounted",
            plural(late.count as usize, "record", "records"),
            if late.max_behind_ns < 1_000_000 {
                format!("{} us", late.max_behind_ns / 1000)
            } else {
                format!("{:.1} ms", late.max_behind_ns as f64 / 1e6)
            },
            if late.count == 1 { "its" } else { "their" },
        )
    })
}

/// Feeds the ring buffers' records stamped up to `watermark_ns` to the
/// pipeline, merged in time order. Returns true when the output turned out
/// to be closed (`herdtrace | head`): the pipeline is then muted and goes on
/// counting. Any other error (a recording that cannot be written) stops the
/// feeding and is returned.
fn feed<W: Write>(
    tracer: &mut Tracer,
    merger: &mut Merger,
    watermark_ns: u64,
    pipeline: &mut Pipeline<W>,
    decode_errors: &mut u64,
) -> Result<bool> {
    let mut closed = false;
    let shards = tracer.shards();
    let pull = |shard| loop {
        match tracer.next_record(shard, events::decode)? {
            Ok(ev) => return Some(ev),
            Err(_) => *decode_errors += 1,
        }
    };
    merger.merge(shards, watermark_ns, pull, |ev| {
        match pipeline.on_event(ev) {
            Err(e) if is_broken_pipe(&e) => {
                closed = true;
                pipeline.mute();
                Ok(())
            }
            other => other,
        }
    })?;
    Ok(closed)
}

/// Feeds the kernel's counters to the pipeline (and the recording) as
/// increments: ring-buffer drops as lost events; program runs the kernel
/// skipped (recursion misses), which no sequence gap shows, per program, as
/// skipped runs (episodes open then are flagged possibly incomplete); map
/// inserts that failed, per map.
#[derive(Debug, Default)]
pub struct LossFeed {
    drops: Counter,
    skipped: std::collections::BTreeMap<String, Counter>,
    inserts: std::collections::BTreeMap<&'static str, Counter>,
}

/// Turns a running total into increments.
#[derive(Debug, Default)]
struct Counter {
    reported: u64,
}

impl Counter {
    /// The increment since the last call, given the current total.
    fn step(&mut self, total: u64) -> u64 {
        let delta = total.saturating_sub(self.reported);
        self.reported = self.reported.max(total);
        delta
    }
}

impl LossFeed {
    /// Reads the per-program skip counters (one syscall per program), to be
    /// applied by [`LossFeed::apply_skips`] once the events already in the
    /// ring buffer are fed: a skip can only touch a connection whose arrival
    /// came before it.
    pub fn read_skips(tracer: &Tracer) -> SkipReading {
        SkipReading {
            at_ns: monotonic_ns(),
            totals: tracer.recursion_misses(),
        }
    }

    /// Feeds a reading's increments; returns whether runs of a program that
    /// flags connections were skipped (see [`Pipeline::on_skip_sample`]).
    pub fn apply_skips<W: Write>(
        &mut self,
        reading: SkipReading,
        pipeline: &mut Pipeline<W>,
    ) -> Result<bool> {
        let skipped: Vec<SkippedRuns> = reading
            .totals
            .into_iter()
            .map(|(program, total)| {
                let runs = self.skipped.entry(program.clone()).or_default().step(total);
                SkippedRuns::of(program, runs)
            })
            .collect();
        pipeline.on_skip_sample(reading.at_ns, &skipped)
    }

    pub fn feed<W: Write>(&mut self, tracer: &Tracer, pipeline: &mut Pipeline<W>) -> Result<()> {
        let counters = tracer.kernel_counters()?;
        for (map, total) in counters.insert_failed {
            let delta = self.inserts.entry(map).or_default().step(total);
            pipeline.on_insert_failed(map, delta)?;
        }
        let delta = self.drops.step(counters.drops);
        if delta > 0 {
            pipeline.on_lost(delta)?;
        }
        Ok(())
    }
}

/// How often the kernel-side counters (drops, failed inserts) are read while
/// tracing; they are always read at the end.
pub const COUNTERS_EVERY: Duration = Duration::from_secs(10);
/// How often the reader drains the ring buffer when the kernel does not wake it.
pub const READER_POLL_MS: u64 = 20;

/// How long before a ring-buffer read a record must be stamped to be merged
/// from that read: a program stamps its record, then reserves and commits
/// it, microseconds later unless it is preempted or interrupted that long.
/// A record later still is merged late, out of time order, as records of
/// different CPUs were in one shared ring buffer.
const MERGE_MARGIN_NS: u64 = 2_000_000;
/// How often the per-program skip counters are read (one syscall per
/// program) while the kernel skips none: every connection open in a sample
/// window that shows skips is flagged possibly incomplete, and closed ones
/// wait for the next sample, so this is also the output's added delay.
pub const SKIP_SAMPLE: Duration = Duration::from_millis(100);
/// The period after a sample that showed skips, for [`SKIP_FAST_FOR`]:
/// skips come in bursts (a busy CPU that preempts programs), and a shorter
/// window flags fewer connections that were not touched. Not shorter: the
/// reads cost a syscall per program, and at 10 ms two tracers in a QEMU
/// guest slowed its workers enough to change the figures they measured.
pub const SKIP_SAMPLE_FAST: Duration = Duration::from_millis(25);
pub const SKIP_FAST_FOR: Duration = Duration::from_secs(1);

/// The per-program skip counters read at one moment.
pub struct SkipReading {
    /// CLOCK_MONOTONIC just before the read.
    at_ns: u64,
    totals: Vec<(String, u64)>,
}

/// When the next skip sample is due: often for a while after skips.
#[derive(Debug, Default)]
pub struct SkipSampler {
    fast_until: Option<Instant>,
}

impl SkipSampler {
    /// The time of the next sample, given the one just applied at `now`
    /// and whether it showed skips that flag connections.
    pub fn next(&mut self, now: Instant, skipped: bool) -> Instant {
        if skipped {
            self.fast_until = Some(now + SKIP_FAST_FOR);
        }
        let fast = self.fast_until.is_some_and(|until| now < until);
        now + if fast { SKIP_SAMPLE_FAST } else { SKIP_SAMPLE }
    }
}

pub fn run(args: TraceArgs) -> Result<i32> {
    // Bound before anything attaches: a port in use is a plain error.
    let exporter = args.prometheus.map(exporter::Exporter::bind).transpose()?;
    let targets = TargetSet::resolve_with(&args.pids, &args.comms, args.cgroup.as_deref())?;
    let prepared = prepare(&args)?;
    stop::install()?;
    stop::install_panic_hook();
    if let Some(e) = &exporter {
        eprintln!(
            "herdtrace: serving Prometheus metrics on http://{}/metrics",
            e.local_addr()
        );
    }
    // --quiet: stdout stays empty; the summary goes where errors go.
    let out: Box<dyn Write> = if args.quiet {
        Box::new(BufWriter::new(io::stderr()))
    } else {
        Box::new(BufWriter::new(io::stdout().lock()))
    };
    let (_, reason) =
        trace_session_exported(&args, &prepared, &targets, out, exporter, || {}, || false)?;
    match reason {
        EndReason::TargetsExited => eprintln!("herdtrace: the traced processes exited"),
        EndReason::Signal(_) | EndReason::Duration | EndReason::Caller => {}
        EndReason::OutputClosed => {}
    }
    Ok(0)
}

/// The line that says tracing has begun: what is traced, and how (`scope`
/// is empty or names the cgroup).
fn tracing_line(tasks: usize, procs: usize, scope: &str, backend: &str) -> String {
    format!(
        "herdtrace: tracing {} in {}{scope} with the {backend} backend; Ctrl-C to end",
        plural(tasks, "task", "tasks"),
        plural(procs, "process", "processes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn late_records_are_said_with_how_far_behind() {
        assert_eq!(late_line(LateRecords::default()), None);
        let one = late_line(LateRecords {
            count: 1,
            max_behind_ns: 3_450_000,
        })
        .expect("a line");
        assert!(
            one.starts_with("1 record reached the ring buffers too late"),
            "{one}"
        );
        assert!(
            one.contains("up to 3.5 ms behind")
                && one.ends_with("its connections may be miscounted"),
            "{one}"
        );
        let many = late_line(LateRecords {
            count: 12,
            max_behind_ns: 40_000,
        })
        .expect("a line");
        assert!(
            many.starts_with("12 records reached") && many.contains("up to 40 us behind"),
            "{many}"
        );
    }

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        trace: TraceArgs,
    }

    fn pids(args: &[&str]) -> Result<Vec<i64>, clap::Error> {
        Cli::try_parse_from(std::iter::once("herdtrace").chain(args.iter().copied()))
            .map(|c| c.trace.pids)
    }

    #[test]
    fn the_start_line_counts_in_the_singular_and_plural() {
        assert_eq!(
            tracing_line(1, 1, "", "tracepoint"),
            "herdtrace: tracing 1 task in 1 process with the tracepoint backend; Ctrl-C to end"
        );
        assert_eq!(
            tracing_line(5, 1, "", "fentry"),
            "herdtrace: tracing 5 tasks in 1 process with the fentry backend; Ctrl-C to end"
        );
        // An empty cgroup: the containers host test reads this line.
        assert_eq!(
            tracing_line(0, 0, " (cgroup /x)", "kprobe"),
            "herdtrace: tracing 0 tasks in 0 processes (cgroup /x) with the kprobe backend; \
             Ctrl-C to end"
        );
    }

    #[test]
    fn pids_are_repeated_or_comma_separated() {
        assert_eq!(pids(&["-p", "7"]).expect("one"), vec![7]);
        assert_eq!(pids(&["-p", "7", "--pid", "8"]).expect("two"), vec![7, 8]);
        // `--pid $(pgrep -d, nginx)`, as perf -p takes them.
        assert_eq!(pids(&["-p", "7,8,9"]).expect("list"), vec![7, 8, 9]);
        assert_eq!(
            pids(&["-p", "7,8", "-p", "9"]).expect("both"),
            vec![7, 8, 9]
        );
        // Negative ones reach the check that names them.
        assert_eq!(pids(&["-p", "-5"]).expect("negative"), vec![-5]);
        assert!(pids(&["-p", "7,x"]).is_err());
        assert!(pids(&["-p", "7 8"]).is_err());
    }

    #[test]
    fn skip_samples_come_often_for_a_while_after_skips() {
        let mut s = SkipSampler::default();
        let t0 = Instant::now();
        assert_eq!(
            s.next(t0, false),
            t0 + SKIP_SAMPLE,
            "quiet: the slow period"
        );
        assert_eq!(s.next(t0, true), t0 + SKIP_SAMPLE_FAST);
        // Still fast without new skips until SKIP_FAST_FOR has passed.
        let later = t0 + SKIP_FAST_FOR / 2;
        assert_eq!(s.next(later, false), later + SKIP_SAMPLE_FAST);
        let after = t0 + SKIP_FAST_FOR;
        assert_eq!(s.next(after, false), after + SKIP_SAMPLE);
        // A new skip starts a new fast stretch.
        assert_eq!(s.next(after, true), after + SKIP_SAMPLE_FAST);
    }

    #[test]
    fn kernel_totals_are_fed_as_increments() {
        let mut c = Counter::default();
        assert_eq!(c.step(0), 0);
        assert_eq!(c.step(5), 5);
        assert_eq!(c.step(5), 0, "nothing new");
        assert_eq!(c.step(9), 4);
        assert_eq!(c.reported, 9);
        // A counter read that went backwards (never expected) reports nothing
        // and does not make later increments count twice.
        assert_eq!(c.step(3), 0);
        assert_eq!(c.step(10), 1);
        assert_eq!(c.step(u64::MAX), u64::MAX - 10);
        // Drops and each program's skipped runs are separate totals.
        let mut f = LossFeed::default();
        let mut skipped = |p: &str, total| f.skipped.entry(p.to_owned()).or_default().step(total);
        assert_eq!((skipped("a", 7), skipped("b", 3)), (7, 3));
        assert_eq!((skipped("a", 8), skipped("b", 3)), (1, 0));
        assert_eq!(f.drops.step(2), 2);
    }
}
