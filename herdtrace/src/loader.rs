//! The only module that talks to aya: loads the eBPF object with its
//! configuration, attaches exactly what a plan of the probe table lists (in
//! one loop) and hands the ring buffer and counters to the caller.
//! Everything it attaches is owned by the returned [`Tracer`] (fd-based
//! links), so dropping it (normal exit, Ctrl-C handled by the caller, a panic
//! unwinding) or the process dying detaches all.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use herdtrace_common::{
    traced_slot, Config, ListenKey, TaskState, CNT_DROPS, CNT_INSERT_FAILED, EVENT_SHARDS_MAX,
    MAP_NAMES, TRACED_SLOT_PINNED,
};

use crate::backend::Plan;
use crate::kprobe_misses;
use crate::probes::{Attach, Feature, Kind, ProgramType};

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

/// Loads and attaches a do-nothing program of type `t` (like libbpf-tools'
/// `fentry_can_attach`), then detaches it. The error text is the reason,
/// e.g. `load returned EPERM`.
pub fn trial(t: ProgramType) -> Result<()> {
    let mut ebpf = EbpfLoader::new()
        .load(object()?)
        .map_err(|e| anyhow!("loading the eBPF object failed: {}", describe(&e)))?;
    match t {
        ProgramType::Tracepoint => {
            let p: &mut TracePoint = program(&mut ebpf, "trial_tracepoint")?;
            p.load().map_err(|e| step("load", &e))?;
            p.attach("sched", "sched_process_fork")
                .map_err(|e| step("attach", &e))?;
        }
        ProgramType::TpBtf => {
            let btf = Btf::from_sys_fs().map_err(|e| anyhow!("no kernel BTF: {}", describe(&e)))?;
            let p: &mut BtfTracePoint = program(&mut ebpf, "trial_tp_btf")?;
            p.load("sched_process_fork", &btf)
                .map_err(|e| step("load", &e))?;
            p.attach().map_err(|e| step("attach", &e))?;
        }
        ProgramType::Kprobe => {
            let p: &mut KProbe = program(&mut ebpf, "trial_kprobe")?;
            p.load().map_err(|e| step("load", &e))?;
            p.attach("inet_csk_accept", 0)
                .map_err(|e| step("attach", &e))?;
        }
        ProgramType::Fentry => {
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

/// Loads a tracepoint program that calls feature `f`'s helper (like
/// libbpf's `libbpf_probe_bpf_helper`), attaches it, then detaches it.
pub fn trial_feature(f: Feature) -> Result<()> {
    let mut ebpf = EbpfLoader::new()
        .load(object()?)
        .map_err(|e| anyhow!("loading the eBPF object failed: {}", describe(&e)))?;
    let name = match f {
        Feature::TaskBtf => "trial_task_btf",
        // The programs read the x86_64 register that holds a syscall's
        // first argument (`kread::SYSCALL_ARG0`).
        Feature::TaskPtRegs if !cfg!(target_arch = "x86_64") => {
            bail!("its programs read syscall arguments on x86_64 only")
        }
        Feature::TaskPtRegs => "trial_task_pt_regs",
    };
    let p: &mut TracePoint = program(&mut ebpf, name)?;
    p.load().map_err(|e| step("load", &e))?;
    p.attach("sched", "sched_process_fork")
        .map_err(|e| step("attach", &e))?;
    Ok(())
}

/// A trial step's failure, by its last cause (`load returned EPERM`).
fn step(what: &str, e: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    anyhow!(
        "{what} returned {}",
        describe(e).rsplit(": ").next().unwrap_or_default()
    )
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

/// A program that needs a helper ([`Feature`]) was refused by the kernel
/// although the helper's trial load passed (a verifier this build was not
/// tested on): the plan can fall back to the variant without it.
#[derive(Debug)]
pub struct FeatureRefused {
    pub feature: Feature,
    /// The load or attach error, verifier log included.
    pub reason: String,
}

impl std::fmt::Display for FeatureRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for FeatureRefused {}

#[derive(Clone, Debug)]
pub struct TracerConfig {
    /// What to attach (a plan of the probe table).
    pub plan: Plan,
    /// The programs' configuration (offsets, flags, filters).
    pub config: Config,
    /// Ring buffer size in bytes (a power of two, multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Attach do-nothing programs to the same probe points instead
    /// (benchmarks: the cost of the probe points alone).
    #[cfg(feature = "test-hooks")]
    pub empty_programs: bool,
}

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Events dropped because the ring buffer was full.
    pub drops: u64,
    /// Failed inserts per map (`MAP_NAMES` order): what the programs could
    /// not remember because the map was full.
    pub insert_failed: Vec<(&'static str, u64)>,
}

/// Attached programs plus the maps user space reads and writes.
pub struct Tracer {
    ebpf: Ebpf,
    /// Held, never read: do-nothing BTF-bound programs (one object each:
    /// such a program is bound to its target at load), `--empty-programs` only.
    #[cfg(feature = "test-hooks")]
    _empty_objects: Vec<Ebpf>,
    /// The event ring buffers in use, by shard (see [`event_shards`]).
    rings: Vec<RingBuf<MapData>>,
    traced: HashMap<MapData, u32, TaskState>,
    /// `TRACED`'s filter: a slot user space leaves 0 hides its tasks.
    traced_filter: Array<MapData, u64>,
    listen_addrs: HashMap<MapData, ListenKey, u32>,
    inflight: HashMap<MapData, u32, u32>,
    counters: PerCpuArray<MapData, u64>,
    /// `kind target <- program` of every attachment made, in order.
    pub attached: Vec<String>,
    /// The eBPF programs' log records (aya-log), kept for the whole run:
    /// dropping it closes the map the programs write them to.
    log: EbpfLogger<&'static dyn log::Log>,
    /// Our kprobe attachments, whose misses the kprobe layer counts apart
    /// from the programs' recursion misses: (link, program name).
    kprobe_links: Vec<(kprobe_misses::KprobeLink, String)>,
}

/// Event ring buffers to use with `cpus` possible CPUs: one per CPU, up to
/// [`EVENT_SHARDS_MAX`], a power of two (CPU `c` sends to shard `c & (n - 1)`).
pub fn event_shards(cpus: u32) -> u32 {
    let cpus = cpus.clamp(1, EVENT_SHARDS_MAX);
    1 << (31 - cpus.leading_zeros())
}

/// Each shard's share of the ring-buffer bytes (`--ringbuf-size`, a power of
/// two): the total stays what the user chose, and never under one page
/// (`page`, a power of two), the kernel's smallest ring buffer.
pub fn shard_bytes(total: u32, shards: u32, page: u32) -> u32 {
    (total / shards.max(1)).max(page)
}

/// The kernel's page size (ring buffers are sized in whole pages: 64K on
/// some arm64 kernels), 4096 if unknown.
fn page_size() -> u32 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n)
        .ok()
        .filter(|n| n.is_power_of_two())
        .unwrap_or(4096)
}

/// The ring-buffer maps' names, by shard.
const SHARD_NAMES: [&str; EVENT_SHARDS_MAX as usize] = [
    "EVENTS", "EVENTS1", "EVENTS2", "EVENTS3", "EVENTS4", "EVENTS5", "EVENTS6", "EVENTS7",
];

/// Possible CPUs (the ids a program can run on), 1 if unreadable.
fn nr_cpus() -> u32 {
    aya::util::nr_cpus().map_or(1, |n| n as u32)
}

impl Tracer {
    pub fn start(cfg: &TracerConfig) -> Result<Tracer> {
        let mut loader = EbpfLoader::new();
        let shards = event_shards(nr_cpus());
        let page = page_size();
        let shard_bytes = shard_bytes(cfg.ringbuf_bytes, shards, page);
        // The shards not in use get the smallest ring buffer this kernel makes.
        for (i, name) in SHARD_NAMES.iter().enumerate() {
            let used = i < shards as usize;
            loader.map_max_entries(name, if used { shard_bytes } else { page });
        }
        let mut config = cfg.config;
        config.event_shard_mask = u64::from(shards - 1);
        // A quarter full: the reader polls on a short timer anyway, so at any
        // rate it can keep up with, the kernel never has to wake it.
        config.ringbuf_wake_bytes = u64::from(shard_bytes / 4);
        loader.override_global("CONFIG", &config, true);
        // Kernel-side log statements above the level user space shows are
        // skipped in the kernel (with logging off, all of them).
        let log_level = crate::logging::kernel_level(log::max_level());
        loader.override_global(aya_log::LEVEL, &log_level, true);
        let mut ebpf = loader
            .load(object()?)
            .map_err(|e| anyhow!("loading the eBPF object failed: {}", describe(&e)))?;
        let log = EbpfLogger::init(&mut ebpf)
            .map_err(|e| anyhow!("reading the eBPF programs' log: {}", describe(&e)))?;
        let btf =
            Btf::from_sys_fs().map_err(|e| anyhow!("reading kernel BTF: {}", describe(&e)))?;
        #[cfg(feature = "test-hooks")]
        let mut empty_objects = Vec::new();
        let mut attached = Vec::new();
        for at in cfg.plan.attachments() {
            #[cfg(feature = "test-hooks")]
            if cfg.empty_programs {
                attach_empty(&mut ebpf, &mut empty_objects, at, &cfg.plan, &btf)?;
                attached.push(format!("{} <- {}", at.label(), empty_program(at.kind)));
                continue;
            }
            attach(&mut ebpf, at, at.program, &cfg.plan, &btf).map_err(|e| match at.needs {
                Some(feature) => anyhow::Error::new(FeatureRefused {
                    feature,
                    reason: format!("{e:#}"),
                }),
                None => e,
            })?;
            attached.push(format!("{} <- {}", at.label(), at.program));
        }
        let mut rings = Vec::with_capacity(shards as usize);
        for name in &SHARD_NAMES[..shards as usize] {
            let map = ebpf
                .take_map(name)
                .with_context(|| format!("map {name} missing"))?;
            rings.push(
                RingBuf::try_from(map)
                    .with_context(|| format!("map {name} is not a ring buffer"))?,
            );
        }
        let traced = hash_map(&mut ebpf, "TRACED")?;
        let traced_filter = Array::try_from(
            ebpf.take_map("TRACED_FILTER")
                .context("map TRACED_FILTER missing")?,
        )
        .context("map TRACED_FILTER")?;
        let listen_addrs = hash_map(&mut ebpf, "LISTEN_ADDRS")?;
        let inflight = hash_map(&mut ebpf, "ACCEPT_INFLIGHT")?;
        let counters =
            PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)
                .context("map COUNTERS")?;
        let kprobe_links = find_kprobe_links(&ebpf);
        release_startup_memory();
        Ok(Tracer {
            ebpf,
            #[cfg(feature = "test-hooks")]
            _empty_objects: empty_objects,
            rings,
            traced,
            traced_filter,
            listen_addrs,
            inflight,
            counters,
            attached,
            log,
            kprobe_links,
        })
    }

    /// Starts following task `tid` of process `tgid`. A task already
    /// followed keeps its entry: the programs' state in it (the chain that
    /// woke it, its accept call) stays valid across a rescan.
    pub fn trace_task(&mut self, tid: u32, tgid: u32) -> Result<()> {
        // A task in the map already holds its filter slot: the fork program
        // counted it in, or an earlier pass pinned it. Pinning it again
        // would keep its slot after it exits, and a `--cgroup` rescan finds
        // every forked task: over hours of short-lived ones every slot would
        // be pinned and the filter would hide no task of the machine.
        match self.traced.get(&tid, 0) {
            Ok(_) => return Ok(()),
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).with_context(|| format!("looking task {tid} up")),
        }
        // Its filter slot first, so the programs never find it 0 while the
        // task is in the map.
        self.traced_filter
            .set(traced_slot(tid), TRACED_SLOT_PINNED, 0)
            .with_context(|| format!("marking task {tid} in the traced-task filter"))?;
        match self.traced.insert(tid, TaskState::new(tgid), BPF_NOEXIST) {
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            r => r.with_context(|| format!("adding task {tid} to the traced set")),
        }
    }

    /// Reports connections to this listener (one of the targets').
    pub fn watch_listener(&mut self, key: ListenKey) -> Result<()> {
        self.listen_addrs
            .insert(key, 1, 0)
            .with_context(|| format!("adding listener port {} to the watched set", key.port))
    }

    /// Task `tid` is blocked in accept() since before the probes were
    /// attached: its accept is reported when it installs the new fd.
    pub fn accept_in_progress(&mut self, tid: u32) -> Result<()> {
        self.inflight
            .insert(tid, 1, 0)
            .with_context(|| format!("marking task {tid}'s accept in progress"))
    }

    /// The event ring buffers' fds, for `poll(2)`.
    pub fn ring_fds(&self) -> Vec<i32> {
        self.rings.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Event ring buffers in use.
    pub fn shards(&self) -> usize {
        self.rings.len()
    }

    /// Hands ring buffer `shard`'s next record to `f` and frees its place;
    /// `None` when it has none.
    pub fn next_record<R>(&mut self, shard: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let item = self.rings.get_mut(shard)?.next()?;
        Some(f(&item))
    }

    /// Passes the eBPF programs' pending log records to the logger.
    pub fn drain_log(&mut self) {
        self.log.flush();
    }

    /// Every kernel-side counter, summed over CPUs.
    pub fn kernel_counters(&self) -> Result<KernelCounters> {
        let sum = |idx: u32| -> Result<u64> {
            Ok(self
                .counters
                .get(&idx, 0)
                .context("reading the event counters")?
                .iter()
                .sum())
        };
        let mut insert_failed = Vec::with_capacity(MAP_NAMES.len());
        for (i, name) in MAP_NAMES.iter().enumerate() {
            insert_failed.push((*name, sum(CNT_INSERT_FAILED + i as u32)?));
        }
        Ok(KernelCounters {
            drops: sum(CNT_DROPS)?,
            insert_failed,
        })
    }

    /// Runs of each of our programs the kernel skipped because another BPF
    /// program was already running on that CPU (its recursion guard): events
    /// never emitted, so neither a sequence gap nor a ring-buffer drop shows
    /// them. 0 on kernels before 5.12.
    ///
    /// Runs a kprobe attachment missed (kretprobe instances exhausted, 6.7+
    /// reports them) are added to its program's count: events lost the same
    /// way.
    pub fn recursion_misses(&self) -> Vec<(String, u64)> {
        let mut totals: Vec<(String, u64)> = self
            .ebpf
            .programs()
            .filter_map(|(name, p)| {
                let fd = p.fd().ok()?;
                let misses = prog_recursion_misses(fd.as_fd()).ok()?;
                Some((name.to_string(), misses))
            })
            .collect();
        for (link, name) in &self.kprobe_links {
            // SAFETY: the link belongs to `self.ebpf`'s programs, attached
            // (and its fd open) for as long as `self` lives.
            let fd = unsafe { BorrowedFd::borrow_raw(link.fd) };
            let Some(missed) = kprobe_misses::missed(fd) else {
                continue;
            };
            if let Some(t) = totals.iter_mut().find(|(n, _)| n == name) {
                t.1 = t.1.saturating_add(missed);
            }
        }
        totals
    }

    /// Names of the loaded programs (for diagnostics).
    pub fn programs(&self) -> Vec<String> {
        self.ebpf.programs().map(|(n, _)| n.to_string()).collect()
    }
}

/// The kprobe attachments of the loaded programs, with their program's name.
fn find_kprobe_links(ebpf: &Ebpf) -> Vec<(kprobe_misses::KprobeLink, String)> {
    let ours: Vec<(u32, String)> = ebpf
        .programs()
        .filter(|(_, p)| matches!(p, aya::programs::Program::KProbe(_)))
        .filter_map(|(name, p)| Some((p.info().ok()?.id(), name.to_string())))
        .collect();
    if ours.is_empty() {
        // Not the kprobe backend: no need to read every fd's fdinfo.
        return Vec::new();
    }
    let ids: Vec<u32> = ours.iter().map(|(id, _)| *id).collect();
    kprobe_misses::find_links(&ids)
        .into_iter()
        .filter_map(|link| {
            let name = ours.iter().find(|(id, _)| *id == link.prog_id)?.1.clone();
            Some((link, name))
        })
        .collect()
}

/// `bpf_map_update_elem` flag: fail if the key exists.
const BPF_NOEXIST: u64 = 1;

fn hash_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<HashMap<MapData, K, V>> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("map {name} missing"))?;
    HashMap::try_from(map).with_context(|| format!("map {name}"))
}

// ---- recursion misses: struct bpf_prog_info, read raw (see bpf_info) ---------
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

fn prog_recursion_misses(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    let (info, len) = crate::bpf_info::get::<PROG_INFO_LEN>(fd)?;
    Ok(recursion_misses_from_info(&info, len))
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
macro_rules! attach_btf_bound {
    ($ebpf:expr, $kind:ty, $prog:expr, $target:expr, $btf:expr) => {{
        let p: &mut $kind = program($ebpf, $prog)?;
        p.load($target, $btf)
            .map_err(|e| anyhow!("loading {} for {}: {}", $prog, $target, describe(&e)))?;
        p.attach()
            .map_err(|e| anyhow!("attaching {} to {}: {}", $prog, $target, describe(&e)))?;
    }};
}

/// Attaches program `prog` as `at` says (a kprobe to the symbol `plan` names).
fn attach(ebpf: &mut Ebpf, at: &Attach, prog: &str, plan: &Plan, btf: &Btf) -> Result<()> {
    let target = at.target;
    match at.kind {
        Kind::Tracepoint => {
            let (category, name) = target
                .split_once(':')
                .with_context(|| format!("tracepoint {target} has no category"))?;
            let p: &mut TracePoint = program(ebpf, prog)?;
            // One program may serve several tracepoints (each accept syscall).
            if p.fd().is_err() {
                p.load()
                    .map_err(|e| anyhow!("loading {prog}: {}", describe(&e)))?;
            }
            p.attach(category, name)
                .map_err(|e| anyhow!("attaching {prog} to {target}: {}", describe(&e)))?;
        }
        Kind::Kprobe | Kind::Kretprobe => {
            let p: &mut KProbe = program(ebpf, prog)?;
            if p.fd().is_err() {
                p.load()
                    .map_err(|e| anyhow!("loading {prog}: {}", describe(&e)))?;
            }
            let symbol = plan.kernel_symbol(target);
            p.attach(symbol, 0)
                .map_err(|e| anyhow!("attaching {prog} to {symbol}: {}", describe(&e)))?;
        }
        Kind::BtfTracepoint => attach_btf_bound!(ebpf, BtfTracePoint, prog, target, btf),
        Kind::Fentry => attach_btf_bound!(ebpf, FEntry, prog, target, btf),
        Kind::Fexit => attach_btf_bound!(ebpf, FExit, prog, target, btf),
    }
    Ok(())
}

/// The do-nothing program of each attach kind.
#[cfg(feature = "test-hooks")]
fn empty_program(kind: Kind) -> &'static str {
    match kind {
        Kind::Tracepoint => "trial_tracepoint",
        Kind::BtfTracepoint => "trial_tp_btf",
        Kind::Kprobe => "trial_kprobe",
        Kind::Kretprobe => "trial_kretprobe",
        Kind::Fentry => "trial_fentry",
        Kind::Fexit => "trial_fexit",
    }
}

/// Attaches a do-nothing program where `at` would attach. A BTF-bound
/// program is tied to its target when loaded, so each gets its own object.
#[cfg(feature = "test-hooks")]
fn attach_empty(
    ebpf: &mut Ebpf,
    objects: &mut Vec<Ebpf>,
    at: &Attach,
    plan: &Plan,
    btf: &Btf,
) -> Result<()> {
    let prog = empty_program(at.kind);
    match at.kind {
        Kind::Tracepoint | Kind::Kprobe | Kind::Kretprobe => attach(ebpf, at, prog, plan, btf),
        Kind::BtfTracepoint | Kind::Fentry | Kind::Fexit => {
            let mut own = EbpfLoader::new()
                .load(object()?)
                .map_err(|e| anyhow!("loading the eBPF object failed: {}", describe(&e)))?;
            attach(&mut own, at, prog, plan, btf)?;
            objects.push(own);
            Ok(())
        }
    }
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

    #[test]
    fn one_ring_buffer_per_cpu_up_to_the_most_a_power_of_two() {
        let shards: Vec<u32> = [0, 1, 2, 3, 4, 5, 7, 8, 9, 64, 4096]
            .into_iter()
            .map(event_shards)
            .collect();
        assert_eq!(shards, vec![1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 8]);
        assert_eq!(SHARD_NAMES.len() as u32, EVENT_SHARDS_MAX);
        assert_eq!(SHARD_NAMES[0], "EVENTS");
        assert_eq!(SHARD_NAMES[7], "EVENTS7");
    }

    #[test]
    fn the_shards_split_the_ring_buffer_size() {
        assert_eq!(shard_bytes(4 << 20, 2, 4096), 2 << 20);
        assert_eq!(shard_bytes(4 << 20, 8, 4096), 512 << 10);
        assert_eq!(shard_bytes(1 << 16, 1, 4096), 1 << 16);
        // Never under a page, the kernel's smallest ring buffer.
        assert_eq!(shard_bytes(8192, 8, 4096), 4096);
        assert_eq!(shard_bytes(4096, 0, 4096), 4096);
        assert_eq!(shard_bytes(4 << 20, 8, 64 << 10), 512 << 10);
        assert_eq!(shard_bytes(64 << 10, 2, 64 << 10), 64 << 10);
        assert!(page_size().is_power_of_two() && page_size() >= 4096);
    }
}
