//! Live tracing (`herdtrace --pid ...`): picks the backend, starts the
//! tracer, follows the target tasks and feeds the ring buffer to the same
//! [`Pipeline`] that `replay` uses, on a current-thread tokio runtime.
use std::{
    io::{self, BufWriter, Write},
    net::SocketAddr,
    os::fd::{BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::{
    io::{unix::AsyncFd, Interest},
    time::{self, Instant, MissedTickBehavior},
};

use crate::{
    backend::{self, Backend, BackendRequest, ProbeStatus},
    btf::{Btf, KernelOffsets},
    check,
    engine::{EngineConfig, Summary},
    events, exporter, kernel,
    loader::{AttachPlan, Offsets, Tracer, TracerConfig},
    logging::LogArgs,
    pipeline::Pipeline,
    record::{RecordHeader, Recorder},
    report::{is_broken_pipe, OutputOptions, RunInfo, WallClock},
    stop, targets,
};

pub use crate::demo::{demo, DemoArgs};

#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// Trace this process, its threads and its descendants, existing and
    /// forked later (repeatable).
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID",
        allow_negative_numbers = true
    )]
    pub pids: Vec<i64>,
    /// Trace every process with this exact name (/proc/PID/comm), and descendants (repeatable).
    #[arg(short = 'c', long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Only connections to this local port.
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
    /// Probe set: auto takes fentry, else kprobe, else tracepoint.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendRequest,
    /// Also save the raw event stream to FILE (created 0600) for `herdtrace replay`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Ring buffer size, in bytes or with a K/M suffix (a power of two, at least 4K).
    #[arg(long, value_name = "SIZE", default_value = "4M", value_parser = parse_size)]
    pub ringbuf_size: u32,
    /// Tracepoint backend: how long after a connection arrives a wakeup on
    /// the same CPU can still belong to it (microseconds). The chain normally
    /// ends earlier, with the softirq that processed the connection.
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
            port: None,
            duration: None,
            interval: 1.0,
            per_conn: false,
            json: false,
            backend: BackendRequest::Auto,
            record: None,
            ringbuf_size: 4 << 20,
            chain_window_us: 5000,
            prometheus: None,
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
    pub config: TracerConfig,
    pub info: RunInfo,
    pub notes: Vec<String>,
}

/// Privileges, BTF, backend choice, struct offsets and the attach plan.
pub fn prepare(args: &TraceArgs) -> Result<Prepared> {
    if let Some(problem) = kernel::privilege_problem() {
        bail!("{problem}");
    }
    let btf = Btf::load_vmlinux().context(
        "kernel BTF is required (/sys/kernel/btf/vmlinux; kernels built with CONFIG_DEBUG_INFO_BTF)",
    )?;
    let facts = check::gather_facts_with(Some(&btf));
    let choice = backend::choose(args.backend, &facts).map_err(|e| anyhow!(e))?;
    let mut notes = Vec::new();
    notes.push(format!("backend {choice}"));
    let simulated = kernel::simulated_missing();
    if !simulated.is_empty() {
        notes.push(format!(
            "{}: acting as if the kernel lacked {}",
            kernel::MISSING_ENV,
            simulated.items().join(", ")
        ));
    }
    notes.extend(choice.warnings.iter().map(|w| format!("warning: {w}")));

    let k = KernelOffsets::from_btf(&btf)?;
    for m in k.missing() {
        notes.push(format!(
            "warning: {} missing from BTF: lost {}",
            m.member, m.lost
        ));
    }
    let need = |v: Option<u32>, what: &str| {
        v.ok_or_else(|| anyhow!("kernel BTF lacks {what}, which every backend needs"))
    };
    let offsets = Offsets {
        task_pid: need(k.task_pid, "task_struct.pid")?,
        task_tgid: need(k.task_tgid, "task_struct.tgid")?,
        task_files: k.task_files.unwrap_or(0),
        files_fdt: k.files_fdt.unwrap_or(0),
        fdt_max_fds: k.fdtable_max_fds.unwrap_or(0),
        fdt_fd: k.fdtable_fd.unwrap_or(0),
        file_private: need(k.file_private_data, "file.private_data")?,
        socket_sk: need(k.socket_sk, "socket.sk")?,
        skc_state: need(k.sk_state, "sock_common.skc_state")?,
        skc_num: k.sk_num.unwrap_or(0),
        skc_dport: k.sk_dport.unwrap_or(0),
        skc_daddr: k.sk_daddr.unwrap_or(0),
        skc_family: k.sk_family.unwrap_or(0),
        skc_v6_daddr: k.sk_v6_daddr.unwrap_or(0),
        accept_tail: k.accept_queue_tail.unwrap_or(0),
        rsk_sk: k.request_sock_sk.unwrap_or(0),
        eppoll_base: k.eppoll_entry_base.unwrap_or(0),
        eppoll_wait: k.eppoll_entry_wait.unwrap_or(0),
        epi_file: k.epitem_file.unwrap_or(0),
        epi_ep: k.epitem_ep.unwrap_or(0),
        sk_wq: k.sock_wq.unwrap_or(0),
        wq_wait: k.socket_wq_wait.unwrap_or(0),
        skc_head_packed: u32::from(k.sock_head_packed()),
        fdt_packed: u32::from(k.fdtable_packed()),
    };
    let tp = &facts.tracepoints;
    let poll_exits = available(&[
        ("sys_exit_epoll_wait", &tp.sys_exit_epoll_wait),
        ("sys_exit_epoll_pwait", &tp.sys_exit_epoll_pwait),
        ("sys_exit_epoll_pwait2", &tp.sys_exit_epoll_pwait2),
    ]);
    let accept_syscalls = available(&[
        ("accept", &tp.sys_exit_accept),
        ("accept4", &tp.sys_exit_accept4),
    ]);
    let sym = &facts.symbols;
    let ep_send_events = match choice.backend {
        Backend::Fentry => sym.ep_send_events.fentry_status().is_ok(),
        Backend::Kprobe => sym.ep_send_events.kprobe_status().is_ok(),
        Backend::Tracepoint => false,
    };
    let plan = AttachPlan {
        backend: choice.backend,
        sk_data_ready: tp.sk_data_ready.is_ok(),
        inet_sock_set_state: tp.inet_sock_set_state.is_ok(),
        listen_syscall: kernel::tracepoint_exists("syscalls", "sys_enter_listen").unwrap_or(false),
        softirq_exit: kernel::tracepoint_exists("irq", "softirq_exit").unwrap_or(false),
        poll_exits,
        accept_syscalls,
        ep_send_events,
        inet_csk_accept_nargs: sym.inet_csk_accept.btf_params.unwrap_or(4) as u32,
        symbols: [
            sym.wake_up_common
                .attach_name("__wake_up_common")
                .to_string(),
            sym.ep_poll_callback
                .attach_name("ep_poll_callback")
                .to_string(),
            sym.ep_send_events.attach_name("ep_send_events").to_string(),
            sym.inet_csk_accept
                .attach_name("inet_csk_accept")
                .to_string(),
        ],
    };
    let config = TracerConfig {
        plan,
        offsets,
        port_filter: args.port.unwrap_or(0),
        chain_window_ns: args.chain_window_us.saturating_mul(1000),
        ringbuf_bytes: args.ringbuf_size,
        empty_programs: args.empty_programs,
    };
    let info = RunInfo {
        backend: choice.backend.name().to_string(),
        kernel: facts.release.clone(),
    };
    Ok(Prepared {
        config,
        info,
        notes,
    })
}

/// The names whose probe point is usable.
fn available(points: &[(&str, &ProbeStatus)]) -> Vec<String> {
    points
        .iter()
        .filter(|(_, status)| status.is_ok())
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Processes followed from the command line: roots plus descendants, with
/// their start times so a reused pid is not mistaken for them.
pub struct TargetSet {
    roots: Vec<targets::ProcInfo>,
    /// Roots already reported gone (each is reported once).
    exited: std::cell::RefCell<Vec<u32>>,
}

impl TargetSet {
    pub fn resolve(pids: &[i64], comms: &[String]) -> Result<TargetSet> {
        let all = targets::scan(Path::new("/proc"))?;
        let root_pids = targets::resolve_roots(&all, pids, comms, std::process::id())?;
        let roots = all
            .into_iter()
            .filter(|p| root_pids.contains(&p.pid))
            .collect();
        Ok(TargetSet {
            roots,
            exited: Default::default(),
        })
    }

    /// Puts every thread of every root and descendant into the kernel's
    /// traced set; returns (tasks, processes).
    fn load_into(&self, tracer: &mut Tracer) -> Result<(usize, usize)> {
        let proc_root = Path::new("/proc");
        let all = targets::scan(proc_root)?;
        let live: Vec<u32> = self
            .roots
            .iter()
            .filter(|r| targets::alive(proc_root, r.pid, r.start_ticks))
            .map(|r| r.pid)
            .collect();
        let pids = targets::with_descendants(&all, &live);
        for port in targets::listening_ports(proc_root, &pids) {
            tracer.watch_port(port)?;
        }
        let mut tasks = 0;
        for &pid in &pids {
            for tid in targets::threads(proc_root, pid) {
                tracer.trace_task(tid, pid)?;
                tasks += 1;
            }
        }
        Ok((tasks, pids.len()))
    }

    /// True while at least one root process is still the one we started with.
    /// (Descendants are followed in the kernel; the run ends when the roots are gone.)
    fn any_alive(&self) -> bool {
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

/// A duplicate of the ring buffer's fd, registered with the runtime for
/// readiness (epoll watches the ring buffer, whichever fd names it).
fn watch_ring(tracer: &Tracer) -> Result<AsyncFd<OwnedFd>> {
    // SAFETY: the tracer owns the fd and is alive for this call.
    let fd = unsafe { BorrowedFd::borrow_raw(tracer.ring_fd()) }
        .try_clone_to_owned()
        .context("duplicating the ring buffer's fd")?;
    // SAFETY: the AsyncFd owns `fd`, which stays open until the AsyncFd drops.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| anyhow::Error::from(e.into_parts().1))
        .context("watching the ring buffer")
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
    let recorder = match &args.record {
        Some(path) => Some(Recorder::create(
            path,
            &RecordHeader::new(&prepared.info.kernel, &prepared.info.backend),
        )?),
        None => None,
    };
    let mut signals = stop::Signals::new()?;
    let mut tracer = Tracer::start(&prepared.config)?;
    let (tasks, procs) = targets.load_into(&mut tracer)?;
    // A fork between the /proc scan and the map update is caught by a second pass.
    targets.load_into(&mut tracer)?;
    if test_fill_traced() {
        fill_traced_set(&mut tracer);
    }
    let opts = OutputOptions {
        json: args.json,
        per_conn: args.per_conn || args.json,
        intervals: true,
    };
    let mut pipeline = Pipeline::new(EngineConfig::default(), opts, prepared.info.clone(), out);
    pipeline.set_clock(WallClock::now());
    if let Some(r) = recorder {
        pipeline.add_event_sink(Box::new(r));
    }
    if let Some(e) = exporter {
        pipeline.add_observer(e.serve()?);
    }
    for note in &prepared.notes {
        eprintln!("herdtrace: {note}");
    }
    for warning in &tracer.warnings {
        eprintln!("herdtrace: warning: {warning}");
    }
    log::debug!("programs loaded: {}", tracer.programs().join(", "));
    eprintln!(
        "herdtrace: tracing {tasks} tasks in {procs} processes with the {} backend; Ctrl-C to end",
        prepared.info.backend
    );
    on_ready();

    let ring = watch_ring(&tracer)?;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(args.interval);
    let mut ticks = time::interval_at(started + interval, interval);
    // The kernel wakes us only when the ring buffer is a quarter full
    // (RINGBUF_WAKE_BYTES); otherwise this timer is what drains it.
    let mut drain_timer = time::interval(Duration::from_millis(READER_POLL_MS));
    drain_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let liveness_every = Duration::from_millis(500);
    let mut liveness = time::interval_at(started + liveness_every, liveness_every);
    liveness.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = args.duration.map(|d| started + Duration::from_secs_f64(d));
    let panic_at = test_panic_after().map(|d| started + d);
    let mut decode_errors = 0u64;
    let mut losses = LossFeed::default();
    let mut reason = loop {
        let mut tick_due = false;
        let mut check_liveness = false;
        // In this order: the timers are ready only at their times, so a
        // ring buffer that keeps becoming readable cannot starve them.
        tokio::select! {
            biased;
            sig = signals.recv() => break EndReason::Signal(sig),
            _ = ticks.tick() => tick_due = true,
            _ = liveness.tick() => check_liveness = true,
            ready = ring.readable() => {
                ready.context("waiting for the ring buffer")?.clear_ready();
            }
            _ = drain_timer.tick() => {}
        }
        if drain(&mut tracer, &mut pipeline, &mut decode_errors)? {
            break EndReason::OutputClosed;
        }
        // Kernel-side log records are rare: read on this timer, never
        // waited for (a wakeup from inside a program would cost events).
        tracer.drain_log();
        if tick_due {
            // Drops are marked as they happen, so the episodes open then are flagged.
            losses.feed(&tracer, &mut pipeline)?;
            if let Err(e) = pipeline.on_tick(monotonic_ns()) {
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
        if panic_at.is_some_and(|at| now >= at) {
            panic!("{TEST_PANIC_ENV} is set: panicking with every probe attached");
        }
        if check_liveness {
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
    // Whatever is still in the ring buffer belongs to the run.
    if drain(&mut tracer, &mut pipeline, &mut decode_errors)? {
        reason = EndReason::OutputClosed;
    }
    tracer.drain_log();
    // Drops at the very end leave no sequence gap; the kernel counter has them.
    losses.feed(&tracer, &mut pipeline)?;
    if decode_errors > 0 {
        eprintln!(
            "herdtrace: warning: {decode_errors} malformed records from the kernel were skipped"
        );
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

/// Decodes every record waiting in the ring buffer into the pipeline.
/// Returns true when the output turned out to be closed (`herdtrace | head`):
/// the pipeline is then muted and goes on counting. Any other error (a
/// recording that cannot be written) stops the feeding and is returned.
fn drain<W: Write>(
    tracer: &mut Tracer,
    pipeline: &mut Pipeline<W>,
    decode_errors: &mut u64,
) -> Result<bool> {
    let mut closed = false;
    let mut failure: Option<anyhow::Error> = None;
    tracer.drain(|bytes| {
        if failure.is_some() {
            return;
        }
        let Ok(ev) = events::decode(bytes) else {
            *decode_errors += 1;
            return;
        };
        match pipeline.on_event(&ev) {
            Ok(()) => {}
            Err(e) if is_broken_pipe(&e) => {
                closed = true;
                pipeline.mute();
            }
            Err(e) => failure = Some(e),
        }
    });
    failure.map_or(Ok(closed), Err)
}

/// Feeds the kernel's loss counters to the pipeline (and the recording) as
/// increments: ring-buffer drops as lost events; program runs the kernel
/// skipped (recursion misses), which no sequence gap shows, as skipped runs
/// (most of them are `sched_waking` of untraced tasks, so they are reported
/// beside the losses rather than marking episodes incomplete).
#[derive(Debug, Default)]
struct LossFeed {
    drops: Counter,
    skipped: Counter,
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
    fn feed<W: Write>(&mut self, tracer: &Tracer, pipeline: &mut Pipeline<W>) -> Result<()> {
        let (_, drops) = tracer.counters()?;
        let skipped = self.skipped.step(tracer.recursion_misses());
        if skipped > 0 {
            pipeline.on_skipped(skipped);
        }
        let delta = self.drops.step(drops);
        if delta > 0 {
            pipeline.on_lost(delta)?;
        }
        Ok(())
    }
}

/// Test hook: `HERDTRACE_TEST_PANIC_AFTER_ATTACH=SECS` panics that long
/// after attaching, so tests can check that a panic still detaches everything.
pub const TEST_PANIC_ENV: &str = "HERDTRACE_TEST_PANIC_AFTER_ATTACH";

fn test_panic_after() -> Option<Duration> {
    parse_panic_after(std::env::var(TEST_PANIC_ENV).ok().as_deref())
}

fn parse_panic_after(value: Option<&str>) -> Option<Duration> {
    Duration::try_from_secs_f64(value?.parse().ok()?).ok()
}

/// Test hook: `HERDTRACE_TEST_FILL_TRACED=1` fills the kernel's set of
/// traced tasks once the targets are in it, so that the next task a target
/// forks cannot be added: the fork program's kernel-side warning (aya-log)
/// then shows with `-v`. Not an option: it breaks the run it is used in.
pub const TEST_FILL_TRACED_ENV: &str = "HERDTRACE_TEST_FILL_TRACED";

fn test_fill_traced() -> bool {
    std::env::var_os(TEST_FILL_TRACED_ENV).is_some_and(|v| v == "1")
}

/// Adds tasks that cannot exist (tids above the kernel's PID_MAX_LIMIT,
/// 2^22) until the map refuses more.
fn fill_traced_set(tracer: &mut Tracer) {
    const FIRST: u32 = 1 << 30;
    let added = (0..1u32 << 20)
        .take_while(|i| tracer.trace_task(FIRST + i, FIRST).is_ok())
        .count();
    eprintln!("herdtrace: {TEST_FILL_TRACED_ENV}: {added} placeholder tasks fill the traced set");
}

/// How often the reader drains the ring buffer when the kernel does not wake it.
pub const READER_POLL_MS: u64 = 20;

pub fn run(args: TraceArgs) -> Result<i32> {
    // Bound before anything attaches: a port in use is a plain error.
    let exporter = args.prometheus.map(exporter::Exporter::bind).transpose()?;
    let targets = TargetSet::resolve(&args.pids, &args.comms)?;
    let prepared = prepare(&args)?;
    stop::install()?;
    stop::install_panic_hook();
    if let Some(e) = &exporter {
        eprintln!(
            "herdtrace: serving Prometheus metrics on http://{}/metrics",
            e.local_addr()
        );
    }
    let stdout = io::stdout();
    let out = BufWriter::new(stdout.lock());
    let (_, reason) =
        trace_session_exported(&args, &prepared, &targets, out, exporter, || {}, || false)?;
    match reason {
        EndReason::TargetsExited => eprintln!("herdtrace: the traced processes exited"),
        EndReason::Signal(_) | EndReason::Duration | EndReason::Caller => {}
        EndReason::OutputClosed => {}
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Drops and skipped runs are separate totals.
        let mut f = LossFeed::default();
        assert_eq!((f.drops.step(2), f.skipped.step(7)), (2, 7));
        assert_eq!((f.drops.step(2), f.skipped.step(8)), (0, 1));
    }

    #[test]
    fn panic_hook_delay_is_used_only_when_valid() {
        assert_eq!(parse_panic_after(None), None);
        assert_eq!(
            parse_panic_after(Some("1.5")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_panic_after(Some("0")), Some(Duration::ZERO));
        for bad in ["", "soon", "-1", "NaN", "inf"] {
            assert_eq!(parse_panic_after(Some(bad)), None, "{bad:?}");
        }
    }
}
