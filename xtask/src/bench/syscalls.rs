//! Section "Syscalls": what tracing costs the machine's other syscalls.
//! While any syscall tracepoint is attached, every syscall of every task
//! takes the kernel's slow path, traced process or not, and each direction
//! attached (entry, exit) adds its dispatch. Timed here on `getppid` in
//! this process (not traced): untraced, with herdtrace attached to a
//! server, and with herdtrace as on kernels without `bpf_task_pt_regs`
//! (5.11-5.14), whose plan attaches the accept and listen entries too.
//! herdtrace's io_uring programs also run on every io_uring request of the
//! machine: an io_uring NOP of this process is timed too, and with the
//! classic tracepoints (as on kernels without BTF tracepoints), which build
//! a record for each request. So do its `sched_waking` program on every
//! wakeup and its epoll-return program on every `epoll_wait` return: a pipe
//! round trip between two threads of this process (two wakeups) and an
//! `epoll_wait` that returns at once are timed too.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail};

use super::nop_ring::NopRing;
use super::parse::{json_string, json_top_level_raw, median};
use super::report::{SectionReport, Table};
use super::server::Server;
use super::tracer::{self, Availability, Tracer, TracerSpec};
use super::wakeups;
use super::Ctx;
use crate::proc;

pub const TITLE: &str = "Syscalls: the cost of one untraced syscall while herdtrace runs";
const MODEL: (&str, u16) = ("epoll-per-worker", 4);
/// Batches per measurement; their median is the measurement.
const BATCHES: u32 = 5;

/// One configuration of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setup {
    Untraced,
    Herdtrace(String),
    /// The tracepoint backend with `HERDTRACE_MISSING=bpf_task_pt_regs`.
    WithEntries,
    /// The tracepoint backend with `HERDTRACE_MISSING=tp_btf`.
    ClassicOnly,
}

impl Setup {
    /// The `HERDTRACE_MISSING` list its tracer runs with, if any.
    fn simulated_missing(&self) -> Option<&'static str> {
        match self {
            Setup::WithEntries => Some("bpf_task_pt_regs"),
            Setup::ClassicOnly => Some("tp_btf"),
            Setup::Untraced | Setup::Herdtrace(_) => None,
        }
    }
}

/// io_uring NOPs timed for `calls` getppid calls: a NOP costs a few
/// getppid calls, so a tenth as many keep the two times alike.
fn nops_for(calls: u64) -> u64 {
    calls / 10
}

/// `epoll_wait` calls timed for `calls` getppid calls (a little dearer).
fn epoll_waits_for(calls: u64) -> u64 {
    calls / 2
}

/// Pipe round trips timed for `calls` getppid calls: one costs two context
/// switches, some twenty getppid calls.
fn round_trips_for(calls: u64) -> u64 {
    calls / 100
}

/// One setup's measurements: ns per `getppid`, per io_uring NOP, per
/// `epoll_wait` and per pipe round trip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    pub syscall: Vec<f64>,
    pub nop: Vec<f64>,
    pub epoll: Vec<f64>,
    pub wake: Vec<f64>,
}

/// One measurement of every operation (`nop` only with a ring).
struct Measured {
    syscall: f64,
    nop: Option<f64>,
    epoll: f64,
    wake: f64,
}

impl Setup {
    pub fn label(&self) -> String {
        match self {
            Setup::Untraced => "untraced".into(),
            Setup::Herdtrace(b) => format!("herdtrace ({b})"),
            Setup::WithEntries => {
                "herdtrace (tracepoint, entry tracepoints as on 5.11-5.14)".into()
            }
            Setup::ClassicOnly => "herdtrace (tracepoint, classic tracepoints only)".into(),
        }
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<SectionReport>> {
    let check = proc::stdout(Command::new(&ctx.bin).args(["check", "--json"]))?;
    let backends = tracer::parse_backends(&check).map_err(|e| anyhow!(e))?;
    let mut setups = vec![Setup::Untraced];
    let mut notes = Vec::new();
    for (b, avail) in &backends {
        match avail {
            Availability::Ok => setups.push(Setup::Herdtrace(b.clone())),
            Availability::Unavailable(why) => notes.push(format!("{b}: not available ({why})")),
        }
    }
    let tracepoint = setups.contains(&Setup::Herdtrace("tracepoint".into()));
    match helper_status(&check, "bpf_task_pt_regs") {
        Some(s) if s == "ok" && tracepoint => setups.push(Setup::WithEntries),
        s => notes.push(format!(
            "bpf_task_pt_regs {}: the tracepoint backend attaches the entry tracepoints anyway",
            s.unwrap_or_else(|| "not reported".into())
        )),
    }
    if tracepoint {
        setups.push(Setup::ClassicOnly);
    }
    let calls: u64 = if ctx.quick { 200_000 } else { 2_000_000 };
    let mut ring = match NopRing::new() {
        Ok(r) => Some(r),
        Err(e) => {
            notes.push(format!("io_uring NOPs not timed: io_uring_setup: {e}"));
            None
        }
    };
    let mut server = Server::start(&ctx.bin, MODEL.0, MODEL.1)?;
    let mut runs: Vec<(Setup, Samples)> = setups
        .iter()
        .map(|s| (s.clone(), Samples::default()))
        .collect();
    for round in 0..ctx.rounds as usize {
        for k in 0..runs.len() {
            let i = (k + round) % runs.len();
            let m = measure(&ctx.bin, server.pid(), &runs[i].0, calls, ring.as_mut())?;
            let nop_text = m
                .nop
                .map_or(String::new(), |n| format!(", {n:>7.1} ns/io_uring NOP"));
            println!(
                "   {:<60} {:>7.1} ns/syscall{nop_text}, {:>7.1} ns/epoll_wait, {:>8.1} ns/round trip",
                runs[i].0.label(),
                m.syscall,
                m.epoll,
                m.wake
            );
            let s = &mut runs[i].1;
            s.syscall.push(m.syscall);
            s.nop.extend(m.nop);
            s.epoll.push(m.epoll);
            s.wake.push(m.wake);
        }
    }
    let st = server.stop()?;
    if !st.success() {
        bail!("the server exited with {st}");
    }
    Ok(vec![summarize(&runs, &notes, calls, ctx.rounds)])
}

/// `helpers.<name>.status` of `herdtrace check --json`.
fn helper_status(check_json: &str, name: &str) -> Option<String> {
    let helpers = json_top_level_raw(check_json, "helpers")?;
    let h = json_top_level_raw(helpers, name)?;
    json_top_level_raw(h, "status").and_then(json_string)
}

/// ns per `getppid`, per io_uring NOP (with a ring), per `epoll_wait` and
/// per pipe round trip, with `setup` in place.
fn measure(
    bin: &Path,
    pid: u32,
    setup: &Setup,
    calls: u64,
    ring: Option<&mut NopRing>,
) -> anyhow::Result<Measured> {
    let spec = TracerSpec::new(match setup {
        Setup::Herdtrace(b) => b,
        _ => "tracepoint",
    });
    let mut cmd = spec.command(bin, pid);
    if let Some(missing) = setup.simulated_missing() {
        cmd.env("HERDTRACE_MISSING", missing);
    }
    let tracer = match setup {
        Setup::Untraced => None,
        _ => Some(Tracer::start_command(&mut cmd)?),
    };
    let ns = median_batch(calls, |per| {
        let t = Instant::now();
        for _ in 0..per {
            // SAFETY: getppid takes no arguments and cannot fail.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        Ok(t.elapsed().as_nanos() as f64 / per as f64)
    })?;
    let nop = match ring {
        Some(r) => Some(median_batch(nops_for(calls), |per| {
            r.time(per).map_err(|e| anyhow!("io_uring NOP: {e}"))
        })?),
        None => None,
    };
    let epoll = median_batch(epoll_waits_for(calls), |per| {
        wakeups::time_epoll_waits(per).map_err(|e| anyhow!("epoll_wait: {e}"))
    })?;
    let wake = median_batch(round_trips_for(calls), |per| {
        wakeups::time_round_trips(per).map_err(|e| anyhow!("pipe round trips: {e}"))
    })?;
    if let Some(t) = tracer {
        t.stop()?;
    }
    Ok(Measured {
        syscall: ns,
        nop,
        epoll,
        wake,
    })
}

/// The median of [`BATCHES`] batches of `n` calls in all, `batch(per)`
/// timing one batch of `per` calls in ns per call.
fn median_batch(n: u64, mut batch: impl FnMut(u64) -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    let per = (n / u64::from(BATCHES)).max(1);
    let batches = (0..BATCHES)
        .map(|_| batch(per))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    Ok(median(&batches).unwrap_or(0.0))
}

/// The report from the measurements (pure, so it is tested).
pub fn summarize(
    runs: &[(Setup, Samples)],
    notes: &[String],
    calls: u64,
    rounds: u32,
) -> SectionReport {
    let mut r = SectionReport::new(TITLE);
    r.setup = vec![
        format!(
            "{calls} `getppid` calls, {} io_uring NOPs (one submitted and reaped per \
             `io_uring_enter`), {} `epoll_wait` calls (an empty epoll, timeout 0) and {} pipe \
             round trips (two threads on one CPU: two wakeups, four syscalls) by the bench \
             process itself (not traced), each in {BATCHES} batches, the median batch; server: \
             `herdtrace serve --model {} --workers {}`, idle, traced",
            nops_for(calls),
            epoll_waits_for(calls),
            round_trips_for(calls),
            MODEL.0,
            MODEL.1
        ),
        format!("{rounds} round(s), setups in rotating order; medians"),
    ];
    r.setup.extend(notes.iter().cloned());
    let base_of = |pick: fn(&Samples) -> &Vec<f64>| {
        runs.iter()
            .find(|(s, _)| *s == Setup::Untraced)
            .and_then(|(_, v)| median(pick(v)))
    };
    let (base, nop_base) = (base_of(|s| &s.syscall), base_of(|s| &s.nop));
    let (epoll_base, wake_base) = (base_of(|s| &s.epoll), base_of(|s| &s.wake));
    let fig = |v: Option<f64>| v.map_or("-".into(), |n| format!("{n:.1}"));
    let plus = |v: Option<f64>| v.map_or("-".into(), |e| format!("{e:+.1}"));
    let mut rows = Vec::new();
    let mut added = Vec::new();
    for (setup, v) in runs {
        let ns = median(&v.syscall);
        let extra = ns.zip(base).map(|(n, b)| n - b);
        let nop = median(&v.nop);
        let nop_extra = nop.zip(nop_base).map(|(n, b)| n - b);
        let epoll = median(&v.epoll);
        let wake = median(&v.wake);
        let wake_extra = wake.zip(wake_base).map(|(n, b)| n - b);
        rows.push(vec![
            setup.label(),
            fig(ns),
            plus(extra),
            ns.zip(base)
                .map_or("-".into(), |(n, b)| format!("{:.3}", n / b)),
            fig(nop),
            plus(nop_extra),
            fig(epoll),
            plus(epoll.zip(epoll_base).map(|(n, b)| n - b)),
            fig(wake),
            plus(wake_extra),
        ]);
        added.push((setup, extra, nop_extra, wake_extra));
    }
    let of = |s: &Setup| {
        added
            .iter()
            .find(|(x, _, _, _)| *x == s)
            .map(|(_, e, n, w)| (*e, *n, *w))
    };
    let saving = |now: f64, before: f64| {
        if before > 0.0 {
            100.0 * (before - now) / before
        } else {
            0.0
        }
    };
    let tracepoint = of(&Setup::Herdtrace("tracepoint".into()));
    if let (Some((Some(now), _, _)), Some((Some(before), _, _))) =
        (tracepoint, of(&Setup::WithEntries))
    {
        r.lines.push(format!(
            "tracepoint backend: {now:.1} ns added to every syscall of the machine; \
             {before:.1} ns with the entry tracepoints as well ({:.0} % less without them)",
            saving(now, before)
        ));
    }
    if let (Some((_, Some(now), _)), Some((_, Some(before), _))) =
        (tracepoint, of(&Setup::ClassicOnly))
    {
        r.lines.push(format!(
            "tracepoint backend: {now:.1} ns added to every io_uring NOP of the machine; \
             {before:.1} ns with classic tracepoints only ({:.0} % less with BTF ones)",
            saving(now, before)
        ));
    }
    if let Some((Some(syscall), _, Some(wake))) = tracepoint {
        // The round trip's four syscalls pay the syscall figure each; the
        // rest is its two wakeups'.
        r.lines.push(format!(
            "tracepoint backend: {wake:.1} ns added to a pipe round trip of the machine; \
             less its four syscalls' {:.1}, {:.1} ns a wakeup",
            4.0 * syscall,
            (wake - 4.0 * syscall) / 2.0
        ));
    }
    r.table = Some(Table {
        header: [
            "setup",
            "ns/syscall",
            "added",
            "ratio",
            "ns/io_uring NOP",
            "added",
            "ns/epoll_wait",
            "added",
            "ns/round trip",
            "added",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(syscall: &[f64], nop: &[f64]) -> Samples {
        Samples {
            syscall: syscall.to_vec(),
            nop: nop.to_vec(),
            ..Samples::default()
        }
    }

    fn no_figures(cells: &[String]) -> bool {
        cells.iter().all(|c| c == "-")
    }

    fn with_waits(mut s: Samples, epoll: &[f64], wake: &[f64]) -> Samples {
        s.epoll = epoll.to_vec();
        s.wake = wake.to_vec();
        s
    }

    #[test]
    fn added_cost_per_setup_and_the_entry_and_btf_savings() {
        let runs = vec![
            (
                Setup::Untraced,
                with_waits(
                    samples(&[260.0, 250.0, 270.0], &[550.0, 560.0]),
                    &[300.0],
                    &[5000.0, 5200.0],
                ),
            ),
            (
                Setup::Herdtrace("tracepoint".into()),
                with_waits(
                    samples(&[334.0, 330.0, 338.0], &[750.0, 760.0]),
                    &[420.0],
                    &[5496.0, 5496.0],
                ),
            ),
            (Setup::WithEntries, samples(&[359.0, 360.0, 358.0], &[])),
            (Setup::ClassicOnly, samples(&[335.0], &[955.0])),
            (Setup::Herdtrace("fentry".into()), samples(&[262.0], &[])),
        ];
        let r = summarize(&runs, &["kprobe: not available (x)".into()], 1000, 3);
        let t = r.table.as_ref().expect("table");
        assert_eq!(
            t.rows[0],
            [
                "untraced", "260.0", "+0.0", "1.000", "555.0", "+0.0", "300.0", "+0.0", "5100.0",
                "+0.0"
            ]
        );
        assert_eq!(
            t.rows[1],
            [
                "herdtrace (tracepoint)",
                "334.0",
                "+74.0",
                "1.285",
                "755.0",
                "+200.0",
                "420.0",
                "+120.0",
                "5496.0",
                "+396.0"
            ]
        );
        assert_eq!(t.rows[2][2], "+99.0");
        assert_eq!(t.rows[2][4], "-");
        assert_eq!(t.rows[3][5], "+400.0");
        assert_eq!(
            t.rows[4][..4],
            ["herdtrace (fentry)", "262.0", "+2.0", "1.008"]
        );
        assert!(no_figures(&t.rows[4][4..]));
        assert_eq!(
            r.lines,
            [
                "tracepoint backend: 74.0 ns added to every syscall of the machine; 99.0 ns with \
              the entry tracepoints as well (25 % less without them)",
                "tracepoint backend: 200.0 ns added to every io_uring NOP of the machine; 400.0 ns \
              with classic tracepoints only (50 % less with BTF ones)",
                "tracepoint backend: 396.0 ns added to a pipe round trip of the machine; less its \
              four syscalls' 296.0, 50.0 ns a wakeup"
            ]
        );
        assert!(r.setup.iter().any(|l| l == "kprobe: not available (x)"));
        assert!(r.setup[0].starts_with(
            "1000 `getppid` calls, 100 io_uring NOPs (one submitted and reaped per \
             `io_uring_enter`), 500 `epoll_wait` calls (an empty epoll, timeout 0) and 10 pipe \
             round trips"
        ));
        assert!(!r.failed);
    }

    #[test]
    fn no_untraced_figure_leaves_the_comparisons_empty() {
        let runs = vec![(Setup::Herdtrace("tracepoint".into()), Samples::default())];
        let r = summarize(&runs, &[], 10, 1);
        let row = &r.table.expect("table").rows[0];
        assert_eq!(row.len(), 10);
        assert_eq!(row[0], "herdtrace (tracepoint)");
        assert!(no_figures(&row[1..]));
        assert!(r.lines.is_empty());
    }

    #[test]
    fn helper_status_from_check_json() {
        let j = r#"{"helpers": {"bpf_get_current_task_btf": {"status": "ok"},
                    "bpf_task_pt_regs": {"status": "missing", "reason": "needs x"}}}"#;
        assert_eq!(
            helper_status(j, "bpf_task_pt_regs").as_deref(),
            Some("missing")
        );
        assert_eq!(
            helper_status(j, "bpf_get_current_task_btf").as_deref(),
            Some("ok")
        );
        assert_eq!(helper_status(j, "other"), None);
    }
}
