//! Section "Profile": where tracing's CPU goes, by sampling. `perf record -a`
//! of a traced run at the maximum rate, with the kernel's per-program
//! statistics off, splits what tracing costs the machine per connection
//! into the programs' own instructions, the helpers they call (ring buffer,
//! clock, maps, kernel reads), the dispatch that calls them, the syscall
//! slow path that syscall tracepoints put every task on, and the tracer's
//! own process. The `kernel` section's statistics see only the programs,
//! and add a clock read per run of their own (on a KVM guest that read is
//! a paravirtual clock, about as long as a small program). Sampling by timer
//! cannot see code that runs with interrupts off: a program called inside
//! a spinlock taken with interrupts disabled (`sched_waking`) is charged to
//! where interrupts come back on, so the figures here are lower bounds.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{anyhow, bail, Context as _};

use super::kcost::{usable_backends, Sysctl, STATS_SYSCTL};
use super::loadgen;
use super::report::{SectionReport, Table};
use super::server::Server;
use super::tracer::{self, Tracer, TracerSpec};
use super::Ctx;
use crate::proc;

pub const TITLE: &str = "Profile: where tracing's CPU goes, by sampling (statistics off)";
const CONCURRENCY: u32 = 32;
/// Samples per second per CPU. `cpu-clock` so that a sample's period is in
/// ns on every machine (a hardware `cycles` period would be in cycles).
const FREQ: u32 = 1999;
/// The runs here are this many times `--connections`: a traced run of the
/// default 20,000 lasts half a second, about 2,000 samples, too few to
/// split into ten places.
const SAMPLE_RUN_FACTOR: u64 = 4;
/// Without it perf cannot name the JIT-compiled programs.
const JIT_KALLSYMS: &str = "/proc/sys/net/core/bpf_jit_kallsyms";

/// One sample of `perf script -F pid,period,ip,sym`: the process, the CPU
/// time it stands for, and its call chain, innermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub pid: u32,
    pub period_ns: u64,
    pub frames: Vec<String>,
}

/// Parses `perf script -F pid,period,ip,sym`: a `PID PERIOD` line, then one
/// `ADDR SYMBOL` line per frame, samples separated by blank lines.
pub fn parse_script(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut cur: Option<Sample> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            samples.extend(cur.take());
            continue;
        }
        match &mut cur {
            None => {
                let mut f = line.split_whitespace();
                let (Some(pid), Some(period)) = (f.next(), f.next()) else {
                    return Err(format!(
                        "perf script line {}: no pid and period: {line:?}",
                        i + 1
                    ));
                };
                let parse = |s: &str| {
                    s.parse::<u64>()
                        .map_err(|_| format!("perf script line {}: {s:?} is not a number", i + 1))
                };
                cur = Some(Sample {
                    pid: u32::try_from(parse(pid)?).map_err(|e| e.to_string())?,
                    period_ns: parse(period)?,
                    frames: Vec::new(),
                });
            }
            Some(s) => {
                let sym = line
                    .trim_start()
                    .split_once(char::is_whitespace)
                    .map_or("", |(_, r)| r);
                s.frames.push(sym.trim().to_string());
            }
        }
    }
    samples.extend(cur);
    if samples.is_empty() {
        return Err("perf script printed no sample".into());
    }
    Ok(samples)
}

/// What a helper call inside a program was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Work {
    /// The program's own instructions (its BPF subprograms included).
    Own,
    RingBuffer,
    Clock,
    Maps,
    KernelReads,
    OtherHelpers,
}

impl Work {
    pub const ALL: [Work; 6] = [
        Work::Own,
        Work::RingBuffer,
        Work::Clock,
        Work::Maps,
        Work::KernelReads,
        Work::OtherHelpers,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Work::Own => "own instructions",
            Work::RingBuffer => "ring buffer",
            Work::Clock => "clock",
            Work::Maps => "maps",
            Work::KernelReads => "kernel reads",
            Work::OtherHelpers => "other helpers",
        }
    }

    /// The helper (or what it called) a sample inside a program ended in.
    fn of_leaf(leaf: &str) -> Work {
        const CLOCK: [&str; 6] = [
            "read_tsc",
            "ktime_get",
            "pvclock_",
            "kvm_clock",
            "sched_clock",
            "native_sched_clock",
        ];
        if leaf.starts_with("bpf_prog_") {
            Work::Own
        } else if leaf.contains("ringbuf") {
            Work::RingBuffer
        } else if CLOCK.iter().any(|c| leaf.starts_with(c)) {
            Work::Clock
        } else if leaf.contains("htab")
            || leaf.contains("lookup_nulls_elem")
            || leaf.contains("map_lookup")
            || leaf.contains("map_update")
            || leaf.contains("map_delete")
            || leaf.contains("jhash")
        {
            Work::Maps
        } else if leaf.contains("copy_from_kernel_nofault") || leaf.contains("probe_read") {
            Work::KernelReads
        } else {
            Work::OtherHelpers
        }
    }
}

/// Where one sample's CPU time went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Inside herdtrace program `name`.
    Program(String, Work),
    /// Calling programs (`bpf_trace_run*`, `trace_call_bpf`, trampolines).
    Dispatch,
    /// Building a syscall tracepoint's record for its program.
    SyscallRecord,
    /// The syscall slow path every task takes while a syscall tracepoint
    /// is attached.
    SyscallSlowPath,
    /// The tracer's own process, user space and kernel.
    Tracer,
    /// Everything else: the server, the load, the network, idle.
    Rest,
}

const DISPATCH: [&str; 8] = [
    "bpf_trace_run",
    "trace_call_bpf",
    "__bpf_prog_enter",
    "__bpf_prog_exit",
    "bpf_trampoline",
    "kprobe_perf_func",
    "kprobe_ftrace_handler",
    "perf_trace_run_bpf_submit",
];

/// The program a JIT symbol `bpf_prog_<tag>_<name>` names.
fn program_name(sym: &str) -> Option<&str> {
    let rest = sym.strip_prefix("bpf_prog_")?;
    let (_tag, name) = rest.split_once('_')?;
    Some(name)
}

/// Where `s` belongs. BPF subprograms the linker adds (`memset`, `memcpy`)
/// count as their caller's own work.
pub fn place(s: &Sample, tracer_pid: u32) -> Place {
    if s.pid == tracer_pid {
        return Place::Tracer;
    }
    let leaf = s.frames.first().map_or("", String::as_str);
    // A trampoline's enter/exit can have the program's frame above it on
    // the unwound stack: still the call, not the program's work.
    if DISPATCH.iter().any(|d| leaf.starts_with(d)) {
        return Place::Dispatch;
    }
    let prog = s
        .frames
        .iter()
        .filter_map(|f| program_name(f))
        .find(|n| !matches!(*n, "memset" | "memcpy" | "memmove" | "bcmp" | "memcmp"));
    if let Some(name) = prog {
        return Place::Program(name.to_string(), Work::of_leaf(leaf));
    }
    let has = |names: &[&str]| {
        s.frames
            .iter()
            .any(|f| names.iter().any(|n| f.starts_with(n)))
    };
    if has(&DISPATCH) {
        Place::Dispatch
    } else if has(&["perf_syscall_enter", "perf_syscall_exit"]) {
        Place::SyscallRecord
    } else if has(&["syscall_trace_enter", "syscall_exit_work"]) {
        Place::SyscallSlowPath
    } else {
        Place::Rest
    }
}

/// CPU ns per place, summed over samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub total_ns: u64,
    pub dispatch_ns: u64,
    pub syscall_record_ns: u64,
    pub syscall_slow_ns: u64,
    pub tracer_ns: u64,
    /// Per program, per kind of work.
    pub programs: BTreeMap<String, BTreeMap<Work, u64>>,
}

impl Profile {
    pub fn of(samples: &[Sample], tracer_pid: u32) -> Self {
        let mut p = Profile::default();
        for s in samples {
            p.total_ns += s.period_ns;
            match place(s, tracer_pid) {
                Place::Program(name, work) => {
                    *p.programs.entry(name).or_default().entry(work).or_default() += s.period_ns
                }
                Place::Dispatch => p.dispatch_ns += s.period_ns,
                Place::SyscallRecord => p.syscall_record_ns += s.period_ns,
                Place::SyscallSlowPath => p.syscall_slow_ns += s.period_ns,
                Place::Tracer => p.tracer_ns += s.period_ns,
                Place::Rest => {}
            }
        }
        p
    }

    pub fn programs_ns(&self) -> u64 {
        self.programs.values().flat_map(|w| w.values()).sum()
    }

    pub fn work_ns(&self, work: Work) -> u64 {
        self.programs.values().filter_map(|w| w.get(&work)).sum()
    }
}

/// One model's profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProfile {
    pub model: String,
    pub backend: String,
    pub connections: u64,
    pub untraced_rate: f64,
    pub traced_rate: f64,
    pub samples: usize,
    pub profile: Profile,
}

fn perf_data(model: &str, backend: &str) -> PathBuf {
    PathBuf::from(format!("target/bench/profile-{model}-{backend}.data"))
}

fn measure(ctx: &Ctx, model: &str, workers: u16, backend: &str) -> anyhow::Result<ModelProfile> {
    let mut server = Server::start(&ctx.bin, model, workers)?;
    let n = u64::from(ctx.connections) * SAMPLE_RUN_FACTOR;
    let untraced = loadgen::load(&ctx.bin, server.port, n, None, CONCURRENCY)?;
    let t = Tracer::start(&ctx.bin, server.pid(), &TracerSpec::new(backend))?;
    let data = perf_data(model, backend);
    let wrapper = [
        "perf".to_string(),
        "record".into(),
        "-a".into(),
        "-g".into(),
        "-e".into(),
        "cpu-clock".into(),
        "-F".into(),
        FREQ.to_string(),
        "-o".into(),
        data.display().to_string(),
        "--".into(),
    ];
    let traced = loadgen::load_wrapped(&wrapper, &ctx.bin, server.port, n, None, CONCURRENCY);
    let tracer_pid = t.pid();
    let f = t.stop()?;
    let traced = traced?;
    let st = server.stop()?;
    if !st.success() {
        bail!("the server exited with {st}");
    }
    let s = tracer::parse_text_summary(&f.stdout).map_err(anyhow::Error::msg)?;
    if s.connections == 0 {
        bail!("the tracer counted no connection");
    }
    let script = proc::stdout(
        Command::new("perf")
            .args(["script", "-F", "pid,period,ip,sym", "-i"])
            .arg(&data),
    )?;
    let samples = parse_script(&script).map_err(|e| anyhow!(e))?;
    let profile = Profile::of(&samples, tracer_pid);
    if profile.programs.is_empty() {
        bail!(
            "no sample named a herdtrace program (perf could not name the JIT-compiled programs? {JIT_KALLSYMS})"
        );
    }
    println!(
        "   {model} ({backend}): {} samples, {:.0} ns of programs per connection",
        samples.len(),
        profile.programs_ns() as f64 / s.connections as f64
    );
    Ok(ModelProfile {
        model: model.to_string(),
        backend: backend.to_string(),
        connections: s.connections,
        untraced_rate: untraced.rate_per_s,
        traced_rate: traced.rate_per_s,
        samples: samples.len(),
        profile,
    })
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<SectionReport>> {
    which_perf()?;
    let backends = usable_backends(&ctx.bin)?;
    std::fs::create_dir_all("target/bench").context("creating target/bench")?;
    let _stats = Sysctl::set(STATS_SYSCTL, "0")?;
    let _kallsyms = Sysctl::set(JIT_KALLSYMS, "1")?;
    let mut out = Vec::new();
    for (model, workers) in super::overhead::MODELS {
        for b in &backends {
            out.push(measure(ctx, model, workers, b).with_context(|| format!("{model} ({b})"))?);
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let connections = u64::from(ctx.connections) * SAMPLE_RUN_FACTOR;
    Ok(vec![summarize(&out, cpus, connections)])
}

fn which_perf() -> anyhow::Result<()> {
    let ok = Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        bail!("`perf --version` failed: install Debian's linux-perf (`cargo xtask setup` does)");
    }
    Ok(())
}

/// Builds the report (pure, so it is tested).
pub fn summarize(runs: &[ModelProfile], cpus: usize, connections: u64) -> SectionReport {
    let mut r = SectionReport::new(TITLE);
    r.setup = vec![
        format!("server: `herdtrace serve --model M --workers 4`; load: `herdtrace load --connections {connections} --concurrency {CONCURRENCY}` at its maximum rate, once untraced, once traced under `perf record -a -g -e cpu-clock -F {FREQ}`"),
        "per-program statistics off (`kernel.bpf_stats_enabled=0`): nothing but herdtrace is added to the probe hits; `net.core.bpf_jit_kallsyms=1` so perf names the programs".into(),
        "each sample stands for its period of one CPU's time; a place's ns per connection is the sum of its samples' periods over the connections the tracer counted".into(),
        "budget = the untraced machine's CPU time per connection (CPUs / untraced conn/s), as in the kernel section".into(),
        "not seen: code that runs with interrupts off (`sched_waking`'s program, inside try_to_wake_up's lock); a cpu-clock sample is a timer interrupt, and its time lands where interrupts come back on; the kernel section's statistics count those programs".into(),
    ];
    let mut t = Table {
        header: ["model (backend)", "place", "ns/conn", "of budget"]
            .map(String::from)
            .to_vec(),
        rows: Vec::new(),
    };
    for m in runs {
        let label = format!("{} ({})", m.model, m.backend);
        let n = m.connections.max(1) as f64;
        let budget = cpus as f64 * 1e9 / m.untraced_rate.max(1.0);
        let p = &m.profile;
        let mut row = |place: String, ns: u64| {
            let per = ns as f64 / n;
            t.rows.push(vec![
                label.clone(),
                place,
                format!("{per:.0}"),
                format!("{:.2}%", 100.0 * per / budget),
            ]);
        };
        for w in Work::ALL {
            row(format!("programs: {}", w.label()), p.work_ns(w));
        }
        row("dispatch (calling the programs)".into(), p.dispatch_ns);
        row("syscall tracepoint records".into(), p.syscall_record_ns);
        row("syscall slow path of every task".into(), p.syscall_slow_ns);
        row("the tracer's process".into(), p.tracer_ns);
        let in_kernel = p.programs_ns() + p.dispatch_ns + p.syscall_record_ns + p.syscall_slow_ns;
        let all = in_kernel + p.tracer_ns;
        r.lines.push(format!(
            "{label}: programs {:.0} ns per connection ({:.1}% of the {budget:.0} ns budget); with dispatch and the syscall path {:.0} ns ({:.1}%); with the tracer's process {:.0} ns ({:.1}%); {} samples; {:.0} conn/s traced (under perf) against {:.0} untraced",
            p.programs_ns() as f64 / n,
            100.0 * p.programs_ns() as f64 / n / budget,
            in_kernel as f64 / n,
            100.0 * in_kernel as f64 / n / budget,
            all as f64 / n,
            100.0 * all as f64 / n / budget,
            m.samples,
            m.traced_rate,
            m.untraced_rate,
        ));
        let mut progs: Vec<(&String, u64)> = p
            .programs
            .iter()
            .map(|(name, w)| (name, w.values().sum()))
            .collect();
        progs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let per_prog: Vec<String> = progs
            .iter()
            .map(|(name, ns)| {
                let ring = p.programs[*name]
                    .get(&Work::RingBuffer)
                    .copied()
                    .unwrap_or(0);
                format!(
                    "{name} {:.0} ns (ring buffer {:.0}%)",
                    *ns as f64 / n,
                    100.0 * ring as f64 / (*ns).max(1) as f64
                )
            })
            .collect();
        r.lines
            .push(format!("{label}: per program: {}", per_prog.join(", ")));
    }
    r.table = Some(t);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "\
 8456     500000 
\tffffffffc002b2e5 bpf_prog_4f9302ba65b90ccd_memset
\tffffffffc002ae0d bpf_prog_c86f86bc5343758d_tp_accept_exit_regs
\tffffffff814cf300 trace_call_bpf
\tffffffff814c335e perf_syscall_exit
\tffffffff8142443c syscall_exit_work

 8456     500000 
\tffffffff81000001 __bpf_ringbuf_reserve
\tffffffffc0020000 bpf_prog_ae8b1f710e6bec67_btf_sk_data_ready
\tffffffff81000002 bpf_trace_run1

 8457     500000 
\tffffffff81000009 __bpf_prog_enter_recur
\tffffffffc0020000 bpf_prog_ae8b1f710e6bec67_btf_sk_data_ready

 8457     500000 
\tffffffff81000003 bpf_trace_run1
\tffffffff81000004 __traceiter_softirq_exit

 8457     500000 
\tffffffff81000005 perf_syscall_exit
\tffffffff81000006 syscall_exit_work

 8457     500000 
\tffffffff81000006 syscall_exit_work
\tffffffff81000007 do_syscall_64

 42     250000 
\t          12345 herdtrace::engine::Engine::close

 8457     500000 
\tffffffff81000008 tcp_v4_rcv
";

    #[test]
    fn parses_perf_script() {
        let s = parse_script(SCRIPT).expect("parse");
        assert_eq!(s.len(), 8);
        assert_eq!(s[0].pid, 8456);
        assert_eq!(s[0].period_ns, 500_000);
        assert_eq!(
            s[0].frames[1],
            "bpf_prog_c86f86bc5343758d_tp_accept_exit_regs"
        );
        assert_eq!(s[6].frames, ["herdtrace::engine::Engine::close"]);
        assert!(parse_script("").is_err());
        assert!(parse_script("x y\n").is_err());
    }

    #[test]
    fn places_samples() {
        let s = parse_script(SCRIPT).expect("parse");
        let places: Vec<Place> = s.iter().map(|x| place(x, 42)).collect();
        assert_eq!(
            places,
            [
                // The linker's memset is its caller's own work.
                Place::Program("tp_accept_exit_regs".into(), Work::Own),
                Place::Program("btf_sk_data_ready".into(), Work::RingBuffer),
                Place::Dispatch,
                // A trampoline's enter below a program's frame: the call.
                Place::Dispatch,
                Place::SyscallRecord,
                Place::SyscallSlowPath,
                Place::Tracer,
                Place::Rest,
            ]
        );
    }

    #[test]
    fn helpers_by_leaf() {
        assert_eq!(Work::of_leaf("bpf_ringbuf_submit"), Work::RingBuffer);
        assert_eq!(Work::of_leaf("read_tsc"), Work::Clock);
        assert_eq!(Work::of_leaf("pvclock_clocksource_read_nowd"), Work::Clock);
        assert_eq!(Work::of_leaf("ktime_get_mono_fast_ns"), Work::Clock);
        assert_eq!(Work::of_leaf("lookup_nulls_elem_raw"), Work::Maps);
        assert_eq!(Work::of_leaf("__htab_map_lookup_elem"), Work::Maps);
        assert_eq!(
            Work::of_leaf("copy_from_kernel_nofault_allowed"),
            Work::KernelReads
        );
        assert_eq!(Work::of_leaf("bpf_get_current_comm"), Work::OtherHelpers);
        assert_eq!(Work::of_leaf("bpf_prog_1234_tp_poll_exit"), Work::Own);
    }

    #[test]
    fn profile_sums_periods_per_place() {
        let s = parse_script(SCRIPT).expect("parse");
        let p = Profile::of(&s, 42);
        assert_eq!(p.total_ns, 3_750_000);
        assert_eq!(p.programs_ns(), 1_000_000);
        assert_eq!(p.work_ns(Work::Own), 500_000);
        assert_eq!(p.work_ns(Work::RingBuffer), 500_000);
        assert_eq!(p.dispatch_ns, 1_000_000);
        assert_eq!(p.syscall_record_ns, 500_000);
        assert_eq!(p.syscall_slow_ns, 500_000);
        assert_eq!(p.tracer_ns, 250_000);
    }

    #[test]
    fn summary_per_connection_and_share_of_the_budget() {
        let s = parse_script(SCRIPT).expect("parse");
        let m = ModelProfile {
            model: "epoll-per-worker".into(),
            backend: "tracepoint".into(),
            connections: 1000,
            // 2 CPUs at 50,000/s: a 40,000 ns budget.
            untraced_rate: 50_000.0,
            traced_rate: 45_000.0,
            samples: s.len(),
            profile: Profile::of(&s, 42),
        };
        let r = summarize(&[m], 2, 1000);
        let t = r.table.as_ref().expect("table");
        let own = t
            .rows
            .iter()
            .find(|row| row[1] == "programs: own instructions")
            .expect("own row");
        // 500,000 ns over 1000 connections: 500 ns, 1.25% of 40,000.
        assert_eq!(own[2], "500");
        assert_eq!(own[3], "1.25%");
        let line = &r.lines[0];
        assert!(
            line.contains("programs 1000 ns per connection (2.5% of the 40000 ns budget)"),
            "{line}"
        );
        // + dispatch, record and slow path: 3,000 ns; + the tracer: 3,250.
        assert!(line.contains("syscall path 3000 ns (7.5%)"), "{line}");
        assert!(line.contains("tracer's process 3250 ns (8.1%)"), "{line}");
        // Equal times: by name.
        assert!(
            r.lines[1].ends_with(
                "per program: btf_sk_data_ready 500 ns (ring buffer 100%), tp_accept_exit_regs 500 ns (ring buffer 0%)"
            ),
            "{}",
            r.lines[1]
        );
    }
}
