//! The only module that talks to aya: loads the eBPF object, sets the
//! load-time constants, attaches one backend's programs and hands the ring
//! buffer and counters to the caller. Everything it attaches is owned by the
//! returned [`Tracer`] (fd-based links), so dropping it (normal exit, Ctrl-C
//! handled by the caller, a panic unwinding) or the process dying detaches all.
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use herdtrace_common::{CNT_DROPS, CNT_EVENTS};

use crate::backend::Backend;

/// The compiled eBPF object (empty when built with AYA_BUILD_SKIP).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/herdtrace"));

fn object() -> Result<&'static [u8]> {
    if OBJECT.is_empty() {
        bail!("this herdtrace was built without its eBPF object (AYA_BUILD_SKIP); rebuild with bpf-linker installed (cargo xtask setup)");
    }
    Ok(OBJECT)
}

/// Describes an aya error in one line, naming the errno when there is one
/// (`load returned EPERM`), which is what `check` and users need to see.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut text = err.to_string();
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return format!("{text}: {}", errno_name(code));
            }
        }
        cur = e.source();
        if let Some(next) = cur {
            let s = next.to_string();
            if !text.contains(&s) {
                text = format!("{text}: {s}");
            }
        }
    }
    text
}

/// Symbolic errno names for the errors BPF calls actually return.
pub fn errno_name(code: i32) -> String {
    let name = match code {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINVAL => "EINVAL",
        libc::EACCES => "EACCES",
        libc::E2BIG => "E2BIG",
        libc::ENOTSUP => "EOPNOTSUPP",
        libc::EBUSY => "EBUSY",
        libc::ESRCH => "ESRCH",
        libc::ENOSPC => "ENOSPC",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        _ => return format!("errno {code}"),
    };
    name.to_string()
}

// ---- trial loads for `herdtrace check` ---------------------------------------

/// A program type whose support `check` tests by loading and attaching a
/// program that does nothing (like libbpf-tools' `fentry_can_attach`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    TracePoint,
    TpBtf,
    Kprobe,
    Fentry,
}

/// Loads and attaches a do-nothing program of `kind`, then detaches it.
/// The error text is the reason, e.g. `load returned EPERM`.
pub fn trial(kind: ProgramKind) -> Result<()> {
    let mut ebpf = EbpfLoader::new()
        .load(object()?)
        .map_err(|e| anyhow!("loading the eBPF object failed: {}", describe(&e)))?;
    let step = |what: &str, e: &(dyn std::error::Error + 'static)| {
        anyhow!(
            "{what} returned {}",
            describe(e).rsplit(": ").next().unwrap_or_default()
        )
    };
    match kind {
        ProgramKind::TracePoint => {
            let p: &mut TracePoint = program(&mut ebpf, "trial_tracepoint")?;
            p.load().map_err(|e| step("load", &e))?;
            p.attach("sched", "sched_process_fork")
                .map_err(|e| step("attach", &e))?;
        }
        ProgramKind::TpBtf => {
            let btf = Btf::from_sys_fs().map_err(|e| anyhow!("no kernel BTF: {}", describe(&e)))?;
            let p: &mut BtfTracePoint = program(&mut ebpf, "trial_tp_btf")?;
            p.load("sched_process_fork", &btf)
                .map_err(|e| step("load", &e))?;
            p.attach().map_err(|e| step("attach", &e))?;
        }
        ProgramKind::Kprobe => {
            let p: &mut KProbe = program(&mut ebpf, "trial_kprobe")?;
            p.load().map_err(|e| step("load", &e))?;
            p.attach("inet_csk_accept", 0)
                .map_err(|e| step("attach", &e))?;
        }
        ProgramKind::Fentry => {
            let btf = Btf::from_sys_fs().map_err(|e| anyhow!("no kernel BTF: {}", describe(&e)))?;
            let p: &mut FEntry = program(&mut ebpf, "trial_fentry")?;
            p.load("inet_csk_accept", &btf)
                .map_err(|e| step("load", &e))?;
            p.attach().map_err(|e| step("attach", &e))?;
        }
    }
    // Dropping `ebpf` detaches and unloads the trial program.
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
    prog.try_into()
        .map_err(|e: aya::programs::ProgramError| anyhow!("program {name}: {e}"))
}

// ---- the tracer ----------------------------------------------------------------

/// Byte offsets into kernel structures, from the running kernel's BTF.
/// Names match the eBPF globals (`OFF_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_private: u32,
    pub socket_sk: u32,
    pub skc_state: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_daddr: u32,
    pub skc_family: u32,
    pub skc_v6_daddr: u32,
    pub accept_tail: u32,
    pub rsk_sk: u32,
    pub eppoll_base: u32,
    pub eppoll_wait: u32,
    pub epi_file: u32,
    pub epi_ep: u32,
    pub sk_wq: u32,
    pub wq_wait: u32,
    /// Non-zero: `sock_common`'s first 20 bytes hold daddr, dport, num,
    /// family and state at their usual places (one read for all five).
    pub skc_head_packed: u32,
    /// Non-zero: `fdtable.fd` follows `max_fds` 8 bytes on (one read for both).
    pub fdt_packed: u32,
}

/// Which optional probe points the chosen backend can use on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachPlan {
    pub backend: Backend,
    /// `sock:sk_data_ready` exists (6.6+); otherwise the `inet_sock_set_state` substitute.
    pub sk_data_ready: bool,
    /// `syscalls:sys_enter_listen` exists (listeners opened during the trace).
    pub listen_syscall: bool,
    /// `sock:inet_sock_set_state` exists.
    pub inet_sock_set_state: bool,
    /// `irq:softirq_exit` exists (closes tracepoint-backend chains exactly).
    pub softirq_exit: bool,
    /// `syscalls:sys_exit_epoll_*` that exist.
    pub poll_exits: Vec<String>,
    /// `accept`/`accept4` syscall tracepoints that exist (names without prefix).
    pub accept_syscalls: Vec<String>,
    /// `ep_send_events` can be probed (kprobe/fentry): the in-kernel spurious metric.
    pub ep_send_events: bool,
    /// Parameters of `inet_csk_accept` (4 up to 6.9, 2 from 6.10).
    pub inet_csk_accept_nargs: u32,
    /// Names to attach kprobes to for `__wake_up_common`, `ep_poll_callback`,
    /// `ep_send_events`, `inet_csk_accept` (a `.isra`/`.constprop` clone when
    /// only the clone exists).
    pub symbols: [String; 4],
}

#[derive(Clone, Debug)]
pub struct TracerConfig {
    pub plan: AttachPlan,
    pub offsets: Offsets,
    pub port_filter: u16,
    /// Bound of a tracepoint-backend wake chain.
    pub chain_window_ns: u64,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Attach the do-nothing trial programs instead (benchmarks: the cost of
    /// the probe points alone).
    pub empty_programs: bool,
}

/// Attached programs plus the maps user space reads and writes.
pub struct Tracer {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    traced: HashMap<MapData, u32, u32>,
    listen_ports: HashMap<MapData, u32, u32>,
    counters: PerCpuArray<MapData, u64>,
    /// The eBPF programs' log records (aya-log), kept for the whole run:
    /// dropping it closes the map the programs write them to.
    log: EbpfLogger<&'static dyn log::Log>,
    pub warnings: Vec<String>,
}

impl Tracer {
    pub fn start(cfg: &TracerConfig) -> Result<Tracer> {
        let o = &cfg.offsets;
        // kprobe/fentry close chains at __wake_up_common's return; the window
        // then only bounds the damage of a missed return probe (kretprobe
        // instances run out on non-preemptible kernels), so it stays short.
        let window = cfg.chain_window_ns;
        let port = cfg.port_filter as u32;
        let mut loader = EbpfLoader::new();
        loader.map_max_entries("EVENTS", cfg.ringbuf_bytes);
        let globals: [(&str, u32); 25] = [
            ("OFF_TASK_PID", o.task_pid),
            ("OFF_TASK_TGID", o.task_tgid),
            ("OFF_TASK_FILES", o.task_files),
            ("OFF_FILES_FDT", o.files_fdt),
            ("OFF_FDT_MAX_FDS", o.fdt_max_fds),
            ("OFF_FDT_FD", o.fdt_fd),
            ("OFF_FILE_PRIVATE", o.file_private),
            ("OFF_SOCKET_SK", o.socket_sk),
            ("OFF_SKC_STATE", o.skc_state),
            ("OFF_SKC_NUM", o.skc_num),
            ("OFF_SKC_DPORT", o.skc_dport),
            ("OFF_SKC_DADDR", o.skc_daddr),
            ("OFF_SKC_FAMILY", o.skc_family),
            ("OFF_SKC_V6_DADDR", o.skc_v6_daddr),
            ("OFF_ACCEPT_TAIL", o.accept_tail),
            ("OFF_RSK_SK", o.rsk_sk),
            ("OFF_EPPOLL_BASE", o.eppoll_base),
            ("OFF_EPPOLL_WAIT", o.eppoll_wait),
            ("OFF_EPI_FILE", o.epi_file),
            ("OFF_EPI_EP", o.epi_ep),
            ("OFF_SK_WQ", o.sk_wq),
            ("OFF_WQ_WAIT", o.wq_wait),
            ("SKC_HEAD_PACKED", o.skc_head_packed),
            ("FDT_PACKED", o.fdt_packed),
            ("PORT_FILTER", port),
        ];
        for (name, value) in &globals {
            loader.override_global(name, value, true);
        }
        loader.override_global("CHAIN_WINDOW_NS", &window, true);
        // A quarter full: the reader polls every trace::READER_POLL_MS anyway, so at
        // any rate it can keep up with, the kernel never has to wake it.
        let wake_bytes = u64::from(cfg.ringbuf_bytes / 4);
        loader.override_global("RINGBUF_WAKE_BYTES", &wake_bytes, true);
        let iss_opens =
            u32::from(cfg.plan.backend == Backend::Tracepoint && !cfg.plan.sk_data_ready);
        loader.override_global("ISS_OPENS_CHAIN", &iss_opens, true);
        let errors_only = u32::from(cfg.plan.backend != Backend::Tracepoint);
        loader.override_global("ACCEPT_EXIT_ERRORS_ONLY", &errors_only, true);
        // Kernel-side log statements above the level user space shows are
        // skipped in the kernel (with logging off, all of them).
        let log_level = crate::logging::kernel_level(log::max_level());
        loader.override_global(aya_log::LEVEL, &log_level, true);
        let mut ebpf = loader
            .load(object()?)
            .map_err(|e| anyhow!("loading the eBPF object failed: {}", describe(&e)))?;
        // Taken before the programs load: they refer to its map.
        let log = EbpfLogger::init(&mut ebpf)
            .map_err(|e| anyhow!("reading the eBPF programs' log: {}", describe(&e)))?;

        let mut warnings = Vec::new();
        attach_backend(&mut ebpf, &cfg.plan, cfg.empty_programs, &mut warnings)?;

        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS missing")?)
            .context("map EVENTS is not a ring buffer")?;
        let traced = HashMap::try_from(ebpf.take_map("TRACED").context("map TRACED missing")?)
            .context("map TRACED")?;
        let listen_ports = HashMap::try_from(
            ebpf.take_map("LISTEN_PORTS")
                .context("map LISTEN_PORTS missing")?,
        )
        .context("map LISTEN_PORTS")?;
        let counters =
            PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)
                .context("map COUNTERS")?;
        release_startup_memory();
        Ok(Tracer {
            ebpf,
            ring,
            traced,
            listen_ports,
            counters,
            log,
            warnings,
        })
    }

    /// Starts following task `tid` of process `tgid`.
    pub fn trace_task(&mut self, tid: u32, tgid: u32) -> Result<()> {
        self.traced
            .insert(tid, tgid, 0)
            .with_context(|| format!("adding task {tid} to the traced set"))
    }

    /// Reports connections arriving on local `port` (a listener of the targets).
    pub fn watch_port(&mut self, port: u16) -> Result<()> {
        self.listen_ports
            .insert(u32::from(port), 1, 0)
            .with_context(|| format!("adding port {port} to the watched listeners"))
    }

    /// The ring buffer's fd, for `poll(2)`.
    pub fn ring_fd(&self) -> i32 {
        self.ring.as_raw_fd()
    }

    /// Hands every pending record to `f`; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            f(&item);
            n += 1;
        }
        n
    }

    /// Passes the eBPF programs' pending log records to the logger.
    pub fn drain_log(&mut self) {
        self.log.flush();
    }

    /// (events written, events dropped because the ring buffer was full), all CPUs.
    pub fn counters(&self) -> Result<(u64, u64)> {
        let sum = |idx: u32| -> Result<u64> {
            Ok(self
                .counters
                .get(&idx, 0)
                .context("reading the event counters")?
                .iter()
                .sum())
        };
        Ok((sum(CNT_EVENTS)?, sum(CNT_DROPS)?))
    }

    /// Runs of our programs the kernel skipped because another BPF program
    /// was already running on that CPU (its recursion guard): events never
    /// emitted, so neither a sequence gap nor a ring-buffer drop shows them.
    /// Summed over every loaded program; 0 on kernels before 5.12.
    pub fn recursion_misses(&self) -> u64 {
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .filter_map(|fd| prog_recursion_misses(fd.as_fd()).ok())
            .sum()
    }

    /// Names of the loaded programs (for diagnostics).
    pub fn programs(&self) -> Vec<String> {
        self.ebpf.programs().map(|(n, _)| n.to_string()).collect()
    }
}

// ---- recursion misses: struct bpf_prog_info, read raw ---------------------------
// aya 0.14's ProgramInfo does not expose `recursion_misses`, so the info is
// fetched with BPF_OBJ_GET_INFO_BY_FD and the field read at its UAPI offset.

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `struct bpf_prog_info` up to and including `attach_btf_id` (kernel 5.12+).
pub const PROG_INFO_LEN: usize = 232;
/// Offset of `__u64 recursion_misses` in `struct bpf_prog_info`.
pub const RECURSION_MISSES_OFFSET: usize = 208;

/// `recursion_misses` from the bytes the kernel filled in; `info_len` is the
/// length it reported back (shorter on kernels that predate the field: 0).
pub fn recursion_misses_from_info(info: &[u8], info_len: u32) -> u64 {
    let end = RECURSION_MISSES_OFFSET + 8;
    if (info_len as usize) < end {
        return 0;
    }
    info.get(RECURSION_MISSES_OFFSET..end)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

fn prog_recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<u64> {
    /// The `info` member of `union bpf_attr`.
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // u64 elements: the kernel writes 8-byte fields, the buffer is aligned for them.
    let mut info = [0u64; PROG_INFO_LEN / 8];
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: PROG_INFO_LEN as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` and `info` are valid for the call; the kernel writes at
    // most `info_len` bytes into `info` and updates `attr.info_len`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let bytes: Vec<u8> = info.iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok(recursion_misses_from_info(&bytes, attr.info_len))
}

fn attach_tp(ebpf: &mut Ebpf, prog: &str, category: &str, name: &str) -> Result<()> {
    let p: &mut TracePoint = program(ebpf, prog)?;
    if p.fd().is_err() {
        p.load()
            .map_err(|e| anyhow!("loading {prog}: {}", describe(&e)))?;
    }
    p.attach(category, name)
        .map_err(|e| anyhow!("attaching {prog} to {category}:{name}: {}", describe(&e)))?;
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf, prog: &str, symbol: &str) -> Result<()> {
    let p: &mut KProbe = program(ebpf, prog)?;
    p.load()
        .map_err(|e| anyhow!("loading {prog}: {}", describe(&e)))?;
    p.attach(symbol, 0)
        .map_err(|e| anyhow!("attaching {prog} to {symbol}: {}", describe(&e)))?;
    Ok(())
}

/// Loading parsed the kernel's BTF (several MB, twice: aya's relocations and
/// the attach targets) and freed it again; without a trim the allocator keeps
/// those pages, and they would stay in the tracer's RSS for the whole run.
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// fentry, fexit and BTF tracepoint programs load against a BTF name and
/// attach alike, but share no aya trait.
macro_rules! attach_btf_tracing {
    ($name:ident, $kind:ty) => {
        fn $name(ebpf: &mut Ebpf, prog: &str, symbol: &str, btf: &Btf) -> Result<()> {
            let p: &mut $kind = program(ebpf, prog)?;
            p.load(symbol, btf)
                .map_err(|e| anyhow!("loading {prog} for {symbol}: {}", describe(&e)))?;
            p.attach()
                .map_err(|e| anyhow!("attaching {prog} to {symbol}: {}", describe(&e)))?;
            Ok(())
        }
    };
}
attach_btf_tracing!(attach_fentry, FEntry);
attach_btf_tracing!(attach_fexit, FExit);
// For a BTF tracepoint the symbol is the event name without its category.
attach_btf_tracing!(attach_btf_tp, BtfTracePoint);

fn attach_backend(
    ebpf: &mut Ebpf,
    plan: &AttachPlan,
    empty: bool,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let btf = Btf::from_sys_fs().map_err(|e| anyhow!("reading kernel BTF: {}", describe(&e)))?;
    // The probe points' own cost is measured on the host's backend only.
    ensure!(
        !empty || plan.backend == Backend::Tracepoint,
        "--empty-programs needs the tracepoint backend"
    );
    let attach = |ebpf: &mut Ebpf, prog: &str, category: &str, name: &str| {
        attach_tp(
            ebpf,
            if empty { "trial_tracepoint" } else { prog },
            category,
            name,
        )
    };
    let fork_prog = if empty {
        "trial_tp_btf"
    } else {
        "btf_process_fork"
    };

    // Process tree and task side: the same for every backend.
    attach_btf_tp(ebpf, fork_prog, "sched_process_fork", &btf)?;
    attach(ebpf, "tp_process_exit", "sched", "sched_process_exit")?;
    attach(ebpf, "tp_sched_waking", "sched", "sched_waking")?;
    if plan.poll_exits.is_empty() {
        warnings.push("no epoll_wait exit tracepoint: returns with 0 events are not seen".into());
    }
    for tp in &plan.poll_exits {
        attach(ebpf, "tp_poll_exit", "syscalls", tp)?;
    }

    if plan.listen_syscall {
        attach(ebpf, "tp_listen_enter", "syscalls", "sys_enter_listen")?;
    } else {
        warnings.push(
            "syscalls:sys_enter_listen missing: listeners the targets open after the start \
             are not learned (connections to them are not reported)"
                .into(),
        );
    }
    // Names each arrival's child socket exactly (and opens chains before 6.6).
    if plan.inet_sock_set_state {
        attach(
            ebpf,
            "tp_inet_sock_set_state",
            "sock",
            "inet_sock_set_state",
        )?;
    } else {
        warnings.push(
            "sock:inet_sock_set_state missing: an arrival's child socket is read from the \
             accept queue, which can mismatch under concurrent arrivals"
                .into(),
        );
    }
    match plan.backend {
        Backend::Tracepoint => {
            if plan.sk_data_ready {
                attach(ebpf, "tp_sk_data_ready", "sock", "sk_data_ready")?;
            } else {
                warnings.push(
                    "sock:sk_data_ready missing (kernel < 6.6): arrivals inferred from \
                     sock:inet_sock_set_state; EAGAIN is matched by port, not by socket"
                        .into(),
                );
            }
            if plan.softirq_exit {
                attach(ebpf, "tp_softirq_exit", "irq", "softirq_exit")?;
            } else {
                warnings.push(
                    "irq:softirq_exit missing: wake chains end only by time (--chain-window-us)"
                        .into(),
                );
            }
            for name in &plan.accept_syscalls {
                attach(
                    ebpf,
                    "tp_accept_enter",
                    "syscalls",
                    &format!("sys_enter_{name}"),
                )?;
                attach(
                    ebpf,
                    "tp_accept_exit",
                    "syscalls",
                    &format!("sys_exit_{name}"),
                )?;
            }
        }
        Backend::Kprobe | Backend::Fentry => {
            // Accept failures (EAGAIN) come from the syscall exits; successes
            // from inet_csk_accept's return, with the child socket.
            for name in &plan.accept_syscalls {
                attach(
                    ebpf,
                    "tp_accept_exit",
                    "syscalls",
                    &format!("sys_exit_{name}"),
                )?;
            }
        }
    }
    match plan.backend {
        Backend::Tracepoint => {}
        Backend::Kprobe => {
            let [wake, callback, send_events, accept] = &plan.symbols;
            attach_kprobe(ebpf, "kp_wake_up_common", wake)?;
            attach_kprobe(ebpf, "krp_wake_up_common", wake)?;
            attach_kprobe(ebpf, "kp_ep_poll_callback", callback)?;
            attach_kprobe(ebpf, "kp_inet_csk_accept", accept)?;
            attach_kprobe(ebpf, "krp_inet_csk_accept", accept)?;
            if plan.ep_send_events {
                attach_kprobe(ebpf, "kp_ep_send_events", send_events)?;
                attach_kprobe(ebpf, "krp_ep_send_events", send_events)?;
            } else {
                warnings.push(ep_send_events_lost());
            }
        }
        Backend::Fentry => {
            attach_fentry(ebpf, "fe_wake_up_common", "__wake_up_common", &btf)?;
            attach_fexit(ebpf, "fx_wake_up_common", "__wake_up_common", &btf)?;
            attach_fentry(ebpf, "fe_ep_poll_callback", "ep_poll_callback", &btf)?;
            let exit = if plan.inet_csk_accept_nargs == 2 {
                "fx_inet_csk_accept2"
            } else {
                "fx_inet_csk_accept4"
            };
            attach_fentry(ebpf, "fe_inet_csk_accept", "inet_csk_accept", &btf)?;
            attach_fexit(ebpf, exit, "inet_csk_accept", &btf)?;
            if plan.ep_send_events {
                attach_fexit(ebpf, "fx_ep_send_events", "ep_send_events", &btf)?;
            } else {
                warnings.push(ep_send_events_lost());
            }
        }
    }
    Ok(())
}

fn ep_send_events_lost() -> String {
    "ep_send_events cannot be probed (inlined or missing): wakeups that went back to sleep \
     inside the kernel are counted only when the task is woken again or the episode times out"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `bpf_prog_info` as the kernel fills it: id, name, run counters.
    fn info_bytes(misses: u64) -> Vec<u8> {
        let mut b = vec![0u8; PROG_INFO_LEN];
        b[4..8].copy_from_slice(&77u32.to_ne_bytes()); // id
        b[64..76].copy_from_slice(b"tp_sched_wak"); // name
        b[192..200].copy_from_slice(&5_000u64.to_ne_bytes()); // run_time_ns
        b[200..208].copy_from_slice(&40u64.to_ne_bytes()); // run_cnt
        b[208..216].copy_from_slice(&misses.to_ne_bytes());
        b[216..220].copy_from_slice(&123u32.to_ne_bytes()); // verified_insns
        b
    }

    #[test]
    fn recursion_misses_read_at_the_uapi_offset() {
        let b = info_bytes(3);
        assert_eq!(recursion_misses_from_info(&b, PROG_INFO_LEN as u32), 3);
        assert_eq!(
            recursion_misses_from_info(&info_bytes(u64::MAX), 216),
            u64::MAX
        );
        assert_eq!(recursion_misses_from_info(&info_bytes(0), 232), 0);
    }

    #[test]
    fn recursion_misses_are_zero_when_the_kernel_lacks_the_field() {
        // 5.11's struct ends after run_cnt (208 bytes).
        assert_eq!(recursion_misses_from_info(&info_bytes(9), 208), 0);
        assert_eq!(recursion_misses_from_info(&info_bytes(9), 215), 0);
        assert_eq!(recursion_misses_from_info(&info_bytes(9), 0), 0);
        // A short buffer never panics.
        assert_eq!(recursion_misses_from_info(&[0u8; 100], 232), 0);
    }

    /// The offset is the one in the kernel UAPI header, as bindgen laid it out for aya.
    #[test]
    fn offset_matches_the_uapi_struct() {
        use aya_obj::generated::bpf_prog_info;
        assert_eq!(
            std::mem::offset_of!(bpf_prog_info, recursion_misses),
            RECURSION_MISSES_OFFSET
        );
        assert!(std::mem::size_of::<bpf_prog_info>() >= PROG_INFO_LEN);
    }
}
