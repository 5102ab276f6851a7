//! Live tracing (`herdtrace --pid ...`): picks the backend, starts the
//! tracer, follows the target tasks and feeds the ring buffer to the same
//! [`Pipeline`] that `replay` uses.
use std::{
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::{
    backend::{self, Backend, BackendRequest, ProbeStatus},
    btf::{Btf, KernelOffsets},
    check,
    engine::{EngineConfig, Summary},
    events, kernel,
    loader::{AttachPlan, Offsets, Tracer, TracerConfig},
    record::{RecordHeader, Recorder},
    report::{is_broken_pipe, OutputOptions, Pipeline, RunInfo, WallClock},
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
        }
    }
}

fn parse_secs(s: &str) -> Result<f64, String> {
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
}

impl TargetSet {
    pub fn resolve(pids: &[i64], comms: &[String]) -> Result<TargetSet> {
        let all = targets::scan(Path::new("/proc"))?;
        let root_pids = targets::resolve_roots(&all, pids, comms, std::process::id())?;
        let roots = all
            .into_iter()
            .filter(|p| root_pids.contains(&p.pid))
            .collect();
        Ok(TargetSet { roots })
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
    mut on_ready: impl FnMut(),
    mut until: impl FnMut() -> bool,
) -> Result<(Option<Summary>, EndReason)> {
    let mut tracer = Tracer::start(&prepared.config)?;
    let (tasks, procs) = targets.load_into(&mut tracer)?;
    // A fork between the /proc scan and the map update is caught by a second pass.
    targets.load_into(&mut tracer)?;

    let mut recorder = match &args.record {
        Some(path) => Some(Recorder::create(
            path,
            &RecordHeader::new(&prepared.info.kernel, &prepared.info.backend),
        )?),
        None => None,
    };
    let opts = OutputOptions {
        json: args.json,
        per_conn: args.per_conn || args.json,
        intervals: true,
    };
    let mut pipeline = Pipeline::new(EngineConfig::default(), opts, prepared.info.clone(), out);
    pipeline.set_clock(WallClock::now());
    for note in prepared.notes.iter().chain(tracer.warnings.iter()) {
        eprintln!("herdtrace: {note}");
    }
    eprintln!(
        "herdtrace: tracing {tasks} tasks in {procs} processes with the {} backend; Ctrl-C to end",
        prepared.info.backend
    );
    on_ready();

    let started = Instant::now();
    let interval = Duration::from_secs_f64(args.interval);
    let mut next_tick = started + interval;
    let mut next_liveness = started + Duration::from_millis(500);
    let mut decode_errors = 0u64;
    let reason = loop {
        let now = Instant::now();
        let wait = next_tick
            .saturating_duration_since(now)
            .min(Duration::from_millis(100));
        poll_readable(tracer.ring_fd(), wait);
        let mut failure: Option<anyhow::Error> = None;
        tracer.drain(|bytes| {
            if failure.is_some() {
                return;
            }
            match events::decode(bytes) {
                Ok(ev) => {
                    if let Some(r) = recorder.as_mut() {
                        if let Err(e) = r.write_event(&ev) {
                            failure = Some(e);
                            return;
                        }
                    }
                    if let Err(e) = pipeline.on_event(&ev) {
                        failure = Some(e);
                    }
                }
                Err(_) => decode_errors += 1,
            }
        });
        if let Some(e) = failure {
            if is_broken_pipe(&e) {
                break EndReason::OutputClosed;
            }
            return Err(e);
        }
        let now = Instant::now();
        if now >= next_tick {
            next_tick += interval;
            if let Err(e) = pipeline.on_tick(monotonic_ns()) {
                if is_broken_pipe(&e) {
                    break EndReason::OutputClosed;
                }
                return Err(e);
            }
        }
        if let Some(sig) = stop::requested() {
            break EndReason::Signal(sig);
        }
        if args
            .duration
            .is_some_and(|d| started.elapsed().as_secs_f64() >= d)
        {
            break EndReason::Duration;
        }
        if until() {
            break EndReason::Caller;
        }
        if now >= next_liveness {
            next_liveness = now + Duration::from_millis(500);
            if !targets.any_alive() {
                break EndReason::TargetsExited;
            }
        }
    };
    // Whatever is still in the ring buffer belongs to the run.
    if reason != EndReason::OutputClosed {
        let mut tail = Vec::new();
        tracer.drain(|bytes| {
            if let Ok(ev) = events::decode(bytes) {
                tail.push(ev);
            }
        });
        for ev in &tail {
            if let Some(r) = recorder.as_mut() {
                r.write_event(ev)?;
            }
            pipeline.on_event(ev)?;
        }
    }
    let (_, kernel_drops) = tracer.counters()?;
    // Drops at the very end leave no sequence gap; the kernel counter has them.
    let extra_lost = kernel_drops.saturating_sub(pipeline.engine().lost_events());
    if let Some(r) = recorder.as_mut() {
        if extra_lost > 0 {
            r.write_lost(extra_lost)?;
        }
    }
    if let Some(r) = recorder {
        r.finish()?;
    }
    if decode_errors > 0 {
        eprintln!(
            "herdtrace: warning: {decode_errors} malformed records from the kernel were skipped"
        );
    }
    drop(tracer); // detach every probe before printing the summary
    if reason == EndReason::OutputClosed {
        return Ok((None, reason));
    }
    match pipeline.finish(extra_lost) {
        Ok(summary) => Ok((Some(summary), reason)),
        Err(e) if is_broken_pipe(&e) => Ok((None, EndReason::OutputClosed)),
        Err(e) => Err(e),
    }
}

fn poll_readable(fd: i32, wait: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd; EINTR (a signal) just returns early.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

pub fn run(args: TraceArgs) -> Result<i32> {
    let targets = TargetSet::resolve(&args.pids, &args.comms)?;
    let prepared = prepare(&args)?;
    stop::install()?;
    let stdout = io::stdout();
    let out = BufWriter::new(stdout.lock());
    let (_, reason) = trace_session(&args, &prepared, &targets, out, || {}, || false)?;
    match reason {
        EndReason::TargetsExited => eprintln!("herdtrace: the traced processes exited"),
        EndReason::Signal(_) | EndReason::Duration | EndReason::Caller => {}
        EndReason::OutputClosed => {}
    }
    Ok(0)
}
