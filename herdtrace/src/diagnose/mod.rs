//! `herdtrace diagnose`: a running server's accept setup read from /proc,
//! its cost measured by tracing, and what to change.
//!
//! `procfs` reads the setup (listening sockets, epoll fdinfo, what each
//! thread is blocked in), `layout` classifies it per listening address,
//! `cost` turns the tracer's summary into rates, `advice` names the setting
//! to change and `render` prints text or JSON.
pub mod advice;
pub mod cost;
pub mod fdinfo;
pub mod layout;
pub mod procfs;
pub mod render;
pub mod server;
pub mod untraced;

use std::{
    io::{self, Write},
    path::Path,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    engine::{KnownSetup, KnownTask, Summary},
    kernel,
    report::{balance, verdict::Verdict},
    stop, targets,
    trace::{parse_secs, prepare, trace_session, EndReason, TargetSet, TraceArgs},
};
use procfs::Snapshot;
use render::{EndpointReport, Report};
use server::ServerId;

const EXAMPLES: &str = "\
Examples:
  sudo herdtrace diagnose --pid $(pgrep -o nginx)
  sudo herdtrace diagnose --pid $(pgrep -o lighttpd) --duration 30 --json
Run it while the server gets its usual traffic: the setup is read from /proc
at once, the cost needs connections during the trace.";

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct DiagnoseArgs {
    /// The server's (master) process id; its descendants are included.
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID",
        allow_negative_numbers = true
    )]
    pub pid: i64,
    /// Seconds to trace.
    #[arg(
        short = 'd',
        long,
        default_value = "10",
        value_name = "SECS",
        value_parser = parse_secs,
        allow_negative_numbers = true
    )]
    pub duration: f64,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub log: crate::logging::LogArgs,
}

/// The server's setup, classified, before any tracing.
pub struct Setup {
    pub snapshot: Snapshot,
    pub endpoints: Vec<layout::Endpoint>,
    pub server: ServerId,
}

/// What /proc shows of the process trees of `roots` for the balance
/// verdict: the workers able to accept (the largest count over one tree's
/// listening addresses, summed over the trees), the most listening
/// sockets on one address, and which tasks those workers are; zeros when it
/// cannot be read.
pub fn known_setup(proc_root: &Path, roots: &[u32]) -> KnownSetup {
    let mut known = KnownSetup::default();
    for &pid in roots {
        let Ok(snap) = procfs::read_snapshot(proc_root, pid, &procfs::kcmp_same_file) else {
            continue;
        };
        let endpoints = layout::endpoints(&snap);
        known.workers += endpoints
            .iter()
            .map(|e| e.acceptors as u64)
            .max()
            .unwrap_or(0);
        for e in &endpoints {
            let port = e.addr.port();
            for (pid, tid) in layout::acceptor_tasks(&snap, e) {
                add_task(&mut known.tasks, proc_root, &snap, (pid, tid), port);
            }
        }
        if known.hint == balance::SetupHint::Unknown {
            let patterns: Vec<layout::Pattern> = endpoints.iter().map(|e| e.pattern).collect();
            known.hint = setup_hint(&patterns);
        }
        known
            .accept_loops
            .extend(layout::accept_loop_pids(&snap, &endpoints));
        let sockets = endpoints.iter().map(|e| e.sockets.len() as u64).max();
        known.listeners_per_addr = known.listeners_per_addr.max(sockets.unwrap_or(0));
    }
    known
}

/// Adds task `(pid, tid)` waiting on `port` to `tasks`, or the port to it.
pub(crate) fn add_task(
    tasks: &mut Vec<KnownTask>,
    proc_root: &Path,
    snap: &Snapshot,
    (pid, tid): (u32, u32),
    port: u16,
) {
    if let Some(t) = tasks.iter_mut().find(|t| t.tid == tid) {
        if !t.ports.contains(&port) {
            t.ports.push(port);
        }
        return;
    }
    tasks.push(KnownTask {
        pid,
        tid,
        comm: task_comm(proc_root, snap, pid, tid),
        ports: vec![port],
    });
}

/// The thread's own name (a worker thread's often differs from its
/// process's), else the process's.
fn task_comm(proc_root: &Path, snap: &Snapshot, pid: u32, tid: u32) -> String {
    let thread_comm = std::fs::read_to_string(proc_root.join(format!("{pid}/task/{tid}/comm")));
    match thread_comm {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => snap
            .processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.comm.clone())
            .unwrap_or_default(),
    }
}

/// Reads and classifies the setup of `pid` and its descendants below `proc_root`.
pub fn read_setup(proc_root: &Path, pid: u32, same_file: procfs::SameFile) -> Result<Setup> {
    let snapshot = procfs::read_snapshot(proc_root, pid, same_file)?;
    let root = &snapshot.processes[0];
    if snapshot.listeners.is_empty() {
        let pids: Vec<u32> = snapshot.processes.iter().map(|p| p.pid).collect();
        bail!(
            "process {pid} ({}) and its descendants hold no TCP listening socket{}: nothing to \
             diagnose",
            root.comm,
            targets::unix_only_note(proc_root, &pids)
        );
    }
    let server = server::identify(&snapshot);
    let endpoints = layout::endpoints(&snapshot);
    Ok(Setup {
        snapshot,
        endpoints,
        server,
    })
}

/// What the trace measured.
pub struct Measured {
    pub summary: Summary,
    pub seconds: f64,
    pub context_switches: Option<u64>,
    pub backend: String,
    /// Kernel release (what it changes is part of the balance advice).
    pub kernel: String,
    pub end: EndReason,
}

/// Builds the report from the setup and (optionally) a measurement.
pub fn report(setup: &Setup, measured: Option<&Measured>) -> Report {
    let cost = measured.map(|m| cost::cost(&m.summary, m.seconds, m.context_switches));
    let verdict: Option<Verdict> = cost.as_ref().map(|c| c.verdict_kind);
    let endpoints: Vec<EndpointReport> = setup
        .endpoints
        .iter()
        .map(|e| EndpointReport {
            advice: advice::advise(&setup.server, e.pattern, verdict),
            endpoint: e.clone(),
        })
        .collect();
    let patterns: Vec<layout::Pattern> = setup.endpoints.iter().map(|e| e.pattern).collect();
    let hint = setup_hint(&patterns);
    let balance = measured.map(|m| balance::finding_in(&m.summary.balance, hint));
    let balance_advice = measured
        .zip(balance.as_ref())
        .and_then(|(m, f)| advice::balance_advice(&setup.server, &patterns, f, &m.kernel));
    let snap = &setup.snapshot;
    let mut notes = Vec::new();
    if snap.identity_unknown {
        notes.push(
            "kcmp(2) unavailable: epoll fds of different processes were taken as separate \
             instances"
                .to_string(),
        );
    }
    if snap.unparsed_watch_lines > 0 {
        notes.push(format!(
            "{} epoll fdinfo lines in an unknown format were skipped",
            snap.unparsed_watch_lines
        ));
    }
    if let Some(m) = measured {
        match m.end {
            EndReason::TargetsExited => notes.push("the server exited during the trace".into()),
            EndReason::Signal(_) => {
                notes.push("interrupted: the cost covers the time traced".into())
            }
            _ => {}
        }
        if m.summary.totals.connections == 0 {
            notes.push(
                "no connection arrived during the trace: run it under the usual load (or longer) \
                 to measure the cost"
                    .into(),
            );
        }
    }
    let root = &snap.processes[0];
    Report {
        time: None,
        pid: root.pid,
        comm: root.comm.clone(),
        server: setup.server.kind,
        recognised_by: setup.server.evidence.clone(),
        server_facts: setup.server.facts(),
        processes: snap.processes.len(),
        threads: snap.processes.iter().map(|p| p.threads.len()).sum(),
        fine: endpoints.iter().all(|e| e.advice.fine) && balance_advice.is_none(),
        endpoints,
        cost,
        balance,
        balance_advice,
        backend: measured.map(|m| m.backend.clone()),
        notes,
    }
}

/// What the layout tells the balance verdict (the first address decides
/// when a server has several; most have one).
fn setup_hint(patterns: &[layout::Pattern]) -> balance::SetupHint {
    use layout::Pattern as P;
    match patterns.first() {
        Some(P::EpollPerWorker { exclusive, .. }) if *exclusive > 0 => {
            balance::SetupHint::Exclusive
        }
        Some(P::EpollPerWorker { .. } | P::SelectPerWorker { .. } | P::SharedEpoll { .. }) => {
            balance::SetupHint::Shared
        }
        Some(P::TakingTurns { .. }) => balance::SetupHint::TakingTurns,
        // Before 5.18 every ring is woken: the first to run wins.
        Some(P::UringAccept {
            exclusive: true, ..
        }) => balance::SetupHint::Uring,
        Some(P::UringAccept { .. }) => balance::SetupHint::Shared,
        Some(P::Reuseport { .. }) => balance::SetupHint::Reuseport,
        _ => balance::SetupHint::Unknown,
    }
}

/// The server's process ids now (root and descendants).
fn server_pids(root: u32) -> Vec<u32> {
    targets::scan(Path::new("/proc"))
        .map(|all| targets::with_descendants(&all, &[root]))
        .unwrap_or_default()
}

/// Traces `pid` for `seconds`, summary only.
pub fn measure(pid: u32, seconds: f64) -> Result<Measured> {
    let args = TraceArgs {
        pids: vec![i64::from(pid)],
        duration: Some(seconds),
        // No live lines are shown (the output is a sink).
        interval: seconds.min(1.0),
        ..TraceArgs::default()
    };
    let targets = TargetSet::resolve(&args.pids, &[])?;
    let prepared = prepare(&args)?;
    stop::install()?;
    let proc_root = Path::new("/proc");
    let before_pids = server_pids(pid);
    let mut switches_before = 0;
    let mut started = Instant::now();
    // The session's last poll: detaching the probes afterwards is not traced time.
    let mut last_poll = started;
    let (summary, end) = trace_session(
        &args,
        &prepared,
        &targets,
        io::sink(),
        || {
            switches_before = procfs::context_switches(proc_root, &before_pids);
            started = Instant::now();
        },
        || {
            last_poll = Instant::now();
            false
        },
    )?;
    let seconds = last_poll.saturating_duration_since(started).as_secs_f64();
    let after_pids = server_pids(pid);
    // Threads that exited take their counts with them: no figure then.
    let context_switches = (before_pids == after_pids)
        .then(|| procfs::context_switches(proc_root, &after_pids))
        .and_then(|after| after.checked_sub(switches_before));
    let summary = summary.context("the trace produced no summary")?;
    Ok(Measured {
        summary,
        seconds,
        context_switches,
        backend: prepared.info.backend.clone(),
        kernel: prepared.info.kernel.clone(),
        end,
    })
}

pub fn run(args: DiagnoseArgs) -> Result<i32> {
    if args.pid <= 0 || args.pid > i64::from(i32::MAX) {
        bail!(
            "invalid pid {}: a process id is a positive number",
            args.pid
        );
    }
    let pid = args.pid as u32;
    // A thread's id is refused before privileges are looked at, as a
    // trace's targets are.
    if let Some(tgid) = targets::tgid_of(Path::new("/proc"), pid).filter(|&t| t != pid) {
        bail!("{}", targets::missing_process(pid, Some(tgid)));
    }
    // Tracing needs it, and so does reading another user's fds.
    if let Some(problem) = kernel::privilege_problem() {
        bail!("{problem}");
    }
    let pid = whole_server_of(Path::new("/proc"), pid);
    let setup = read_setup(Path::new("/proc"), pid, &procfs::kcmp_same_file)
        .with_context(|| format!("reading the setup of process {pid} from /proc"))?;
    eprintln!(
        "herdtrace: {} (pid {pid}): {}; tracing for {} s",
        setup.snapshot.processes[0].comm,
        setup
            .endpoints
            .iter()
            .map(|e| e.description.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        args.duration
    );
    let measured = measure(pid, args.duration).context("tracing the server")?;
    let mut report = report(&setup, Some(&measured));
    let now = crate::report::WallClock::now();
    report.time = Some(crate::report::clock::rfc3339_utc(now.unix_ns));
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if args.json {
        render::write_json(&mut out, &report)?;
    } else {
        render::write_text(&mut out, &report)?;
    }
    out.flush()?;
    Ok(0)
}

/// The server to diagnose for `pid`: its master when `pid` is one worker of
/// a pre-fork server (a setup is the server's, not one worker's; said on
/// stderr), else `pid`.
fn whole_server_of(proc_root: &Path, pid: u32) -> u32 {
    let all = targets::scan(proc_root).unwrap_or_default();
    let tree = targets::with_descendants(&all, &[pid]);
    let u = untraced::untraced_waiters(proc_root, &all, &[pid], &tree, &procfs::kcmp_same_file);
    match u.trace_pid {
        Some(master) => {
            eprintln!(
                "herdtrace: process {pid} is one of the workers of process {master} ({} more \
                 wait on its listeners): diagnosing {master}",
                u.tasks.len()
            );
            master
        }
        None => pid,
    }
}

/// A /proc tree saved from a real server (tests/fixtures/proc/NAME).
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/proc")
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::FdRef;

    fn setup(name: &str, root: u32) -> Setup {
        read_setup(&fixture(name), root, &|_: FdRef, _: FdRef| Some(false)).expect("fixture setup")
    }

    fn measured(connections: u64, woken_each: usize, losers: u64, spurious: u64) -> Measured {
        Measured {
            summary: cost::tests::summary(
                connections,
                connections * woken_each as u64,
                losers,
                spurious,
                losers,
            ),
            seconds: 2.0,
            context_switches: Some(connections * 8),
            backend: "tracepoint".into(),
            kernel: "6.18.44".into(),
            end: EndReason::Duration,
        }
    }

    fn text(r: &Report) -> String {
        let mut buf = Vec::new();
        render::write_text(&mut buf, r).expect("render");
        String::from_utf8(buf).expect("utf8")
    }

    #[test]
    fn lighttpd_report_names_max_worker() {
        let s = setup("lighttpd-4-workers", 5790);
        assert_eq!(s.server.kind, server::ServerKind::Lighttpd);
        let r = report(&s, Some(&measured(400, 4, 60, 1140)));
        assert!(!r.fine);
        let t = text(&r);
        for want in [
            "lighttpd (pid 5790): 5 processes, 5 threads",
            "4 processes, each with its own epoll on 127.0.0.1:28483, no EPOLLEXCLUSIVE",
            "held by 5 processes; in epoll of pid 5792 fd 3 (no flags, 1 waiting)",
            "400 connections (200.0/s), 4.00 tasks woken per connection (max 4)",
            "wasted wakeups: 3.00 per connection, 600.0/s (EAGAIN losers 30.0/s + spurious 570.0/s)",
            "extra context switches: ~1200.0/s",
            "8.0 times per connection",
            "thundering herd: every connection wakes 4 tasks",
            "server.max-worker",
        ] {
            assert!(t.contains(want), "missing {want:?} in:\n{t}");
        }
    }

    #[test]
    fn nginx_default_report_is_fine_and_json() {
        let r = report(&setup("nginx-default", 2162), Some(&measured(100, 1, 0, 0)));
        assert!(r.fine);
        let t = text(&r);
        assert!(t.contains("all with EPOLLEXCLUSIVE"), "{t}");
        assert!(t.contains("fine: EPOLLEXCLUSIVE in every epoll"), "{t}");
        assert!(t.contains("nginx's default"), "{t}");
        let mut buf = Vec::new();
        render::write_json(&mut buf, &r).expect("json");
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("parse");
        assert_eq!(v["server"], "nginx");
        assert_eq!(v["fine"], true);
        assert_eq!(v["endpoints"][0]["addr"], "127.0.0.1:28480");
        assert_eq!(v["endpoints"][0]["pattern"]["kind"], "epoll_per_worker");
        assert_eq!(v["endpoints"][0]["pattern"]["exclusive"], 4);
        assert_eq!(v["endpoints"][0]["advice"]["fine"], true);
        assert_eq!(v["cost"]["woken_per_conn"], 1.0);
        assert_eq!(
            v["endpoints"][0]["sockets"][0]["watchers"][0]["flags"][0],
            "EPOLLEXCLUSIVE"
        );
    }

    #[test]
    fn reports_without_connections_or_trace() {
        let s = setup("nginx-reuseport", 4519);
        let r = report(&s, Some(&measured(0, 0, 0, 0)));
        assert!(r.fine);
        assert!(r.notes.iter().any(|n| n.contains("no connection arrived")));
        let r = report(&s, None);
        assert!(text(&r).contains("what it costs: not traced"));
        assert!(text(&r).contains("listen ... reuseport;"));
    }

    #[test]
    fn io_uring_accepts_have_a_setup_hint_of_their_own_from_5_18() {
        let uring = |exclusive| layout::Pattern::UringAccept {
            accepts: 4,
            exclusive,
        };
        assert_eq!(setup_hint(&[uring(true)]), balance::SetupHint::Uring);
        // Every ring woken (before 5.18): the first to run wins, no pattern.
        assert_eq!(setup_hint(&[uring(false)]), balance::SetupHint::Shared);
    }

    #[test]
    fn known_setup_reads_workers_and_reuseport_groups() {
        let k = known_setup(&fixture("nginx-reuseport"), &[4519]);
        assert_eq!(
            k,
            KnownSetup {
                workers: 4,
                listeners_per_addr: 4,
                tasks: [4524, 4525, 4526, 4527]
                    .map(|pid| KnownTask {
                        pid,
                        tid: pid,
                        comm: "nginx".into(),
                        ports: vec![28481],
                    })
                    .to_vec(),
                hint: balance::SetupHint::Reuseport,
                untraced: Default::default(),
                accept_loops: Vec::new(),
            }
        );
        let k = known_setup(&fixture("nginx-default"), &[2162]);
        assert_eq!((k.workers, k.listeners_per_addr), (4, 1));
        assert_eq!(k.hint, balance::SetupHint::Exclusive);
        let k = known_setup(&fixture("nginx-accept-mutex"), &[5275]);
        assert_eq!(k.hint, balance::SetupHint::TakingTurns);
        assert_eq!(k.tasks.len(), 4);
        // Two trees add their workers; an unreadable one adds nothing.
        let both = known_setup(&fixture("lighttpd-4-workers"), &[5790, 1]);
        assert_eq!(both.workers, 4);
        assert_eq!(
            known_setup(&fixture("nginx-default"), &[1]),
            KnownSetup::default()
        );
    }

    /// Copies a saved /proc tree (symlinks as symlinks) to a scratch directory.
    pub(super) fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            let (src, dst) = (entry.path(), to.join(entry.file_name()));
            let kind = entry.file_type().expect("type");
            if kind.is_symlink() {
                let target = std::fs::read_link(&src).expect("link");
                std::os::unix::fs::symlink(target, &dst).expect("symlink");
            } else if kind.is_dir() {
                copy_tree(&src, &dst);
            } else {
                std::fs::copy(&src, &dst).expect("copy");
            }
        }
    }

    #[test]
    fn known_workers_take_their_thread_names() {
        let dir = std::env::temp_dir().join(format!("herdtrace-comm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        copy_tree(&fixture("nginx-reuseport"), &dir);
        std::fs::write(dir.join("4525/task/4525/comm"), "nginx-w1\n").expect("comm");
        let k = known_setup(&dir, &[4519]);
        let _ = std::fs::remove_dir_all(&dir);
        let names: Vec<(u32, &str)> = k.tasks.iter().map(|t| (t.tid, t.comm.as_str())).collect();
        assert_eq!(
            names,
            vec![
                (4524, "nginx"),
                (4525, "nginx-w1"),
                (4526, "nginx"),
                (4527, "nginx")
            ]
        );
    }

    #[test]
    fn process_without_listener_is_an_error() {
        // The fixture's master listing without its sockets: copy nothing, use a
        // temp tree holding one process and no listener.
        let dir = std::env::temp_dir().join(format!("herdtrace-diag-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("7/fd")).expect("mkdir");
        std::fs::create_dir_all(dir.join("net")).expect("mkdir");
        std::fs::write(
            dir.join("7/stat"),
            "7 (srv) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 1000 100",
        )
        .expect("stat");
        std::fs::write(dir.join("net/tcp"), "header\n").expect("tcp");
        let err = read_setup(&dir, 7, &|_: FdRef, _: FdRef| Some(false))
            .err()
            .expect("error");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            err.to_string().contains("hold no TCP listening socket"),
            "{err}"
        );
    }
}
