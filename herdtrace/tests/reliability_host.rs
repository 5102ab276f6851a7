//! Reliability and safety of live tracing on the host kernel (issue #7):
//! privileges, bad and vanishing targets, simulated kernel gaps, detach on
//! every way a run ends, ring-buffer overflow, and what the tool never does.
//!
//! Needs root and BPF: outside CI these tests skip (printing why) when not
//! root; under CI=true they must run. The BPF objects of OUR tracer are
//! identified by the ids in its /proc/PID/fdinfo, so other tracers running on
//! the machine at the same time do not disturb the before/after comparison.
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::bpf::BpfIds;
use common::server::{bin, run_load, TestServer};
use common::tracer::{json_lines, summary_of, Ended, Tracer};
use serde_json::Value;

/// One tracer at a time: they share the CPU with the server and the load.
static SERIAL: Mutex<()> = Mutex::new(());

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: the reliability tests need root and must not be skipped");
    }
    eprintln!("skipping: the reliability tests need root (BPF)");
    false
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- BPF objects of one process ------------------------------------------------

impl BpfIds {
    /// What `bpftool -j {prog,map,link} list` shows system-wide.
    fn in_kernel() -> BpfIds {
        let list = |what: &str| -> BTreeSet<u64> {
            let out = Command::new("bpftool")
                .args(["-j", what, "list"])
                .output()
                .expect("bpftool (installed by cargo xtask setup)");
            assert!(out.status.success(), "bpftool {what} list failed");
            let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
            v.as_array()
                .expect("array")
                .iter()
                .filter_map(|o| o["id"].as_u64())
                .collect()
        };
        BpfIds {
            progs: list("prog"),
            maps: list("map"),
            links: list("link"),
        }
    }

    fn intersect(&self, other: &BpfIds) -> BpfIds {
        let both = |a: &BTreeSet<u64>, b: &BTreeSet<u64>| a.intersection(b).copied().collect();
        BpfIds {
            progs: both(&self.progs, &other.progs),
            maps: both(&self.maps, &other.maps),
            links: both(&self.links, &other.links),
        }
    }

    fn is_empty(&self) -> bool {
        self.progs.is_empty() && self.maps.is_empty() && self.links.is_empty()
    }

    fn counts(&self) -> String {
        format!(
            "{} progs/{} links/{} maps",
            self.progs.len(),
            self.links.len(),
            self.maps.len()
        )
    }
}

/// The tracer's objects, checked to be in the kernel's lists while it runs.
fn attached_objects(t: &Tracer) -> BpfIds {
    let ours = BpfIds::of_process(t.pid());
    assert!(
        ours.progs.len() >= 5 && !ours.links.is_empty() && !ours.maps.is_empty(),
        "the tracer holds programs, links and maps: {ours:?}"
    );
    let listed = ours.intersect(&BpfIds::in_kernel());
    assert_eq!(listed, ours, "bpftool lists every object the tracer holds");
    ours
}

/// Waits until none of `ours` is in the kernel any more (programs and maps
/// are freed after an RCU grace period, so not always at the exit itself).
fn assert_all_gone(ours: &BpfIds, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = ours.intersect(&BpfIds::in_kernel());
        if left.is_empty() {
            let line = format!("{what}: {} before stop, 0 after", ours.counts());
            eprintln!("{line}");
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still in the kernel 10 s after the exit: {left:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn server() -> TestServer {
    TestServer::start(&["--model", "epoll-per-worker", "--workers", "2"])
}

fn trace_args(pid: i32, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--pid".to_string(),
        pid.to_string(),
        "--backend".into(),
        "tracepoint".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Drives `load_args` at `addr` (which must succeed), lets the tracer drain
/// for `settle`, then ends it with SIGINT.
fn load_then_interrupt(t: Tracer, addr: &str, load_args: &[&str], settle: Duration) -> Ended {
    let (st, load) = run_load(addr, load_args);
    assert!(st.success(), "{load}");
    thread::sleep(settle);
    t.signal(libc::SIGINT);
    t.wait()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ---- privileges ----------------------------------------------------------------

const TEST_USER: &str = "herdtrace-unpriv";

/// (uid, gid) of the unprivileged test user, created if needed.
fn test_user() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, TEST_USER]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(TEST_USER)
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {TEST_USER}");
    }
    (id("-u").expect("uid"), id("-g").expect("gid"))
}

#[test]
fn non_root_is_refused_with_one_line_before_anything_loads() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let (uid, gid) = test_user();
    // A copy the user can execute wherever the build tree is.
    let dir = std::env::temp_dir().join(format!("herdtrace-unpriv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let exe = dir.join("herdtrace");
    std::fs::copy(bin(), &exe).expect("copy binary");
    for p in [&dir, &exe] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let srv = server();
    let rec = dir.join("never.htr");
    let rec = rec.to_str().expect("utf8");
    for extra in [&[][..], &["--json"], &["--record", rec]] {
        let out = Command::new(&exe)
            .args(["--pid", &srv.pid().to_string()])
            .args(extra)
            .uid(uid)
            .gid(gid)
            .env_clear()
            .output()
            .expect("run as the test user");
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("as uid {uid}: exit {:?}: {err}", out.status.code());
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "herdtrace: error: need root or \
                 CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE (current uid {uid})"
            ),
        );
        assert!(out.stdout.is_empty(), "nothing on stdout");
        assert!(!Path::new(rec).exists(), "no recording is created");
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// `setpriv` (util-linux) running `exe` as the test user with exactly `caps`
/// (setpriv's names, e.g. `+bpf,+perfmon`) as ambient capabilities.
fn as_user_with_caps(exe: &Path, uid: u32, gid: u32, caps: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg("--")
        .arg(exe)
        .env_clear();
    cmd
}

/// The four capabilities docs/install.md lists are what a user other than
/// root needs to trace a server of another user (here root's built-in
/// server): with CAP_BPF+CAP_PERFMON alone tracefs and the server's
/// /proc/PID/fd are closed to it, and it is refused naming the other two;
/// with all four it traces and finds the server's listening socket.
#[test]
fn non_root_traces_with_the_four_capabilities() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let (uid, gid) = test_user();
    let dir = std::env::temp_dir().join(format!("herdtrace-caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let exe = dir.join("herdtrace");
    std::fs::copy(bin(), &exe).expect("copy binary");
    for p in [&dir, &exe] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let srv = server();
    let args = trace_args(srv.pid(), &["--json"]);

    let out = as_user_with_caps(&exe, uid, gid, "+bpf,+perfmon")
        .args(&args)
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "CAP_BPF+CAP_PERFMON only: exit {:?}: {err}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "herdtrace: error: need root or \
             CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE \
             (current uid {uid}, missing CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE)"
        ),
    );

    let mut cmd = as_user_with_caps(&exe, uid, gid, "+bpf,+perfmon,+dac_read_search,+sys_ptrace");
    cmd.args(&args);
    let mut t = Tracer::spawn_command(cmd, false);
    t.wait_attached();
    let listener = format!("herdtrace: listeners: {}", srv.addr());
    assert!(
        t.stderr_text().lines().any(|l| l.starts_with(&listener)),
        "the server's listener found through its /proc/PID/fd: {}",
        t.stderr_text()
    );
    let (st, load) = run_load(&srv.addr(), &["--connections", "20", "--rate", "50"]);
    assert!(st.success(), "load: {load}");
    t.signal(libc::SIGINT);
    let ended = t.wait();
    assert!(ended.status.success(), "{}", ended.stderr);
    let summary = summary_of(&ended.stdout);
    assert_eq!(summary["connections"], 20, "{summary}");
    assert_eq!(summary["lost_events"], 0, "{summary}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

// ---- bad targets ---------------------------------------------------------------

#[test]
fn bad_targets_get_one_clear_line() {
    // Targets are resolved before any privilege is needed.
    let cases: [(&[&str], &str); 5] = [
        (&["--pid", "2147483000"], "no such process: 2147483000"),
        (
            &["--pid", "0"],
            "invalid pid 0: a process id is a positive number",
        ),
        (
            &["--pid", "-5"],
            "invalid pid -5: a process id is a positive number",
        ),
        (
            &["--comm", "no-such-comm-7f3a"],
            "no process named \"no-such-comm-7f3a\"",
        ),
        (&["--pid", "12abc"], "invalid value '12abc'"),
    ];
    for (args, want) in cases {
        let out = Command::new(bin()).args(args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
        if !want.starts_with("invalid value") {
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        }
    }
    // A thread's id (from `top -H`) names its process, for trace and diagnose.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let thread = thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        let _ = tid_tx.send(unsafe { libc::gettid() });
        let _ = done_rx.recv();
    });
    let tid = tid_rx.recv().expect("tid").to_string();
    let want = format!(
        "{tid} is a thread of process {}, not a process: give --pid {}",
        std::process::id(),
        std::process::id()
    );
    for args in [vec!["--pid", &tid], vec!["diagnose", "--pid", &tid]] {
        let out = Command::new(bin()).args(&args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: want {want:?} in {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    let _ = done_tx.send(());
    thread.join().expect("thread");
}

/// Run in a container's own PID namespace and /proc (`docker run` without
/// `--pid=host`), the host pids the programs report would match no traced
/// task: a one-line error rather than a trace of connections that woke
/// nobody. (`unshare --mount-proc` gives the process that namespace.)
#[test]
fn a_private_pid_namespace_is_refused() {
    if !can_run() {
        return;
    }
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(bin())
        .args(["--pid", "1", "-d", "1"])
        .output()
        .expect("run unshare (util-linux)");
    assert_refused_for_its_pid_namespace(&out);
    // A namespace nested in that one, seeing its /proc: NSpid lists two
    // levels, yet /proc is not the host's (taken for the host's before).
    let out = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "unshare",
            "--pid",
            "--fork",
        ])
        .arg(bin())
        .args(["--pid", "1", "-d", "1"])
        .output()
        .expect("run unshare (util-linux)");
    assert_refused_for_its_pid_namespace(&out);
}

fn assert_refused_for_its_pid_namespace(out: &std::process::Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("not the host's, but the kernel reports host pids")
            && err.contains("--pid=host"),
        "{err}"
    );
}

/// Two servers traced by pid: one exits and tracing goes on (with a
/// message); the last exits and the run ends cleanly with its summary.
#[test]
fn exiting_targets_end_the_run_cleanly() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let (one, two) = (server(), server());
    let (a, b) = (one.pid().to_string(), two.pid().to_string());
    let mut t = Tracer::spawn(
        &["--pid", &a, "--pid", &b, "--backend", "tracepoint"],
        &[],
        false,
    );
    t.wait_attached();
    let (st, _) = run_load(&two.addr(), &["--connections", "10", "--rate", "100"]);
    assert!(st.success());
    let first_exit = one.stop();
    assert!(first_exit.status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.stderr_text().contains(&format!("process {a} exited")) {
        assert!(Instant::now() < deadline, "no message: {}", t.stderr_text());
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(1200));
    assert!(
        t.child.try_wait().expect("try_wait").is_none(),
        "tracing goes on with one server left: {}",
        t.stderr_text()
    );
    let started = Instant::now();
    let second_exit = two.stop();
    assert!(second_exit.status.success());
    let end = t.wait();
    eprintln!(
        "{}the run ended {:?} after the last target",
        end.stderr,
        started.elapsed()
    );
    assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
    common::assert_contains(
        &end.stderr,
        &format!("herdtrace: process {a} exited; still tracing the others"),
    );
    common::assert_contains(&end.stderr, "herdtrace: the traced processes exited");
    common::assert_contains(&end.stdout, "herdtrace summary");
    common::assert_contains(&end.stdout, "connections: 10");
}

/// A traced pid that exits and is then reused by an unrelated process: the
/// newcomer's connections are not counted.
#[test]
fn a_reused_pid_is_not_followed() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    // Keeps the run alive after the first server is gone.
    let mut keeper = Command::new("sleep").arg("300").spawn().expect("sleep");
    let first = server();
    let old_pid = first.pid();
    let first_port = first.port();
    let args = trace_args(old_pid, &["--pid", &keeper.id().to_string(), "--json"]);
    let mut t = Tracer::spawn(&strs(&args), &[], false);
    t.wait_attached();
    let (st, _) = run_load(&first.addr(), &["--connections", "20", "--rate", "200"]);
    assert!(st.success());
    thread::sleep(Duration::from_millis(300));
    drop(first); // SIGTERM, waited for: the pid is free again

    // Make the next fork take the old pid (root may write ns_last_pid).
    let mut reused = None;
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (old_pid - 1).to_string())
            .expect("ns_last_pid");
        let s = TestServer::start(&["--model", "epoll-per-worker", "--workers", "2"]);
        if s.pid() == old_pid {
            reused = Some(s);
            break;
        }
    }
    let second = reused.expect("another process took the pid 50 times in a row");
    let (st, _) = run_load(&second.addr(), &["--connections", "20", "--rate", "200"]);
    assert!(st.success());
    thread::sleep(Duration::from_millis(1500));
    t.signal(libc::SIGINT);
    let end = t.wait();
    let _ = keeper.kill();
    let _ = keeper.wait();
    let conns: Vec<Value> = json_lines(&end.stdout)
        .into_iter()
        .filter(|v| v["type"] == "conn")
        .collect();
    let on = |port: u16| conns.iter().filter(|c| c["port"] == port).count();
    eprintln!(
        "pid {old_pid} reused: {} conns on the first server, {} on the newcomer",
        on(first_port),
        on(second.port())
    );
    assert_eq!(on(first_port), 20, "{}", end.stderr);
    // What a failure looks like says how the newcomer was picked up: by a
    // traced task (accepted_by set) or by its listener alone (a stale entry).
    let newcomer: Vec<&Value> = conns
        .iter()
        .filter(|c| c["port"] == second.port())
        .take(2)
        .collect();
    assert_eq!(
        on(second.port()),
        0,
        "the newcomer was followed: {newcomer:?}\n{}",
        end.stderr
    );
    assert_eq!(summary_of(&end.stdout)["connections"], 20, "{}", end.stderr);
}

// ---- kernel gaps ---------------------------------------------------------------

/// Tracepoints the tracepoint backend can do without: the run goes on with
/// fallbacks, and each loss is named.
#[test]
fn missing_optional_tracepoints_fall_back_with_named_losses() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let srv = server();
    let args = trace_args(srv.pid(), &["--json"]);
    let missing = "sock:sk_data_ready,irq:softirq_exit,syscalls:sys_exit_listen,\
                   syscalls:sys_enter_listen,syscalls:sys_exit_epoll_pwait2,ep_send_events";
    let mut t = Tracer::spawn(&strs(&args), &[("HERDTRACE_MISSING", missing)], false);
    t.wait_attached();
    let (st, _) = run_load(&srv.addr(), &["--connections", "30", "--rate", "100"]);
    assert!(st.success());
    thread::sleep(Duration::from_millis(1500));
    t.signal(libc::SIGINT);
    let end = t.wait();
    eprintln!("{}", end.stderr);
    assert_eq!(end.status.code(), Some(0));
    for want in [
        "herdtrace: HERDTRACE_MISSING: acting as if the kernel lacked sock:sk_data_ready, \
         irq:softirq_exit, syscalls:sys_exit_listen, syscalls:sys_enter_listen, \
         syscalls:sys_exit_epoll_pwait2, ep_send_events",
        "herdtrace: warning: sock:sk_data_ready missing (added in 6.6): arrivals come from \
         sock:inet_sock_set_state",
        "herdtrace: warning: tp_btf softirq_exit missing: treated as missing \
         (HERDTRACE_MISSING=irq:softirq_exit); tracepoint irq:softirq_exit missing: treated as \
         missing (HERDTRACE_MISSING=irq:softirq_exit): wake chains end only by time",
        "herdtrace: warning: tracepoint syscalls:sys_exit_listen missing: treated as missing \
         (HERDTRACE_MISSING=syscalls:sys_exit_listen); tracepoint syscalls:sys_enter_listen \
         missing: treated as missing (HERDTRACE_MISSING=syscalls:sys_enter_listen): listeners \
         the targets open after the start are learned at their first accept",
        "herdtrace: warning: tracepoint syscalls:sys_exit_epoll_pwait2 missing: treated as \
         missing (HERDTRACE_MISSING=syscalls:sys_exit_epoll_pwait2): tasks returning from \
         that call are not seen",
    ] {
        assert!(
            end.stderr.contains(want),
            "want {want:?} in\n{}",
            end.stderr
        );
    }
    let s = summary_of(&end.stdout);
    eprintln!(
        "fallback run: {} connections, woken mean {}",
        s["connections"], s["woken_per_conn"]["mean"]
    );
    assert_eq!(s["connections"], 30, "arrivals still counted: {s}");
}

/// Without a required tracepoint, or without BTF, there is no fallback: one
/// line naming what is missing, and nothing attached.
#[test]
fn missing_required_pieces_are_named_in_one_line() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let srv = server();
    let args = trace_args(srv.pid(), &[]);
    for (missing, want) in [
        (
            "btf",
            "tracepoint backend unavailable: kernel BTF missing: no /sys/kernel/btf/vmlinux \
             (treated as missing: HERDTRACE_MISSING=btf)",
        ),
        (
            "syscalls:sys_exit_accept4",
            "tracepoint backend unavailable: tracepoint syscalls:sys_exit_accept4 missing: \
             treated as missing (HERDTRACE_MISSING=syscalls:sys_exit_accept4)",
        ),
    ] {
        let t = Tracer::spawn(&strs(&args), &[("HERDTRACE_MISSING", missing)], false);
        let end = t.wait();
        eprintln!("HERDTRACE_MISSING={missing}: {}", end.stderr.trim());
        assert_eq!(end.status.code(), Some(1), "{}", end.stderr);
        assert_eq!(end.stderr.lines().count(), 1, "{}", end.stderr);
        assert!(end.stderr.contains(want), "want {want:?} in {}", end.stderr);
    }
}

/// What the eBPF programs report reaches `-v` (aya-log), and nothing when
/// logging is off: the traced-task map is filled by the test hook, so the
/// fork program cannot add the child a traced shell forks, and says so.
#[test]
fn kernel_side_warnings_show_with_v_only() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    for verbose in [true, false] {
        // Forks one child once told to, prints its pid, then exits.
        let mut shell = Command::new("sh")
            .args(["-c", "read go; sleep 0.2 & echo $!; wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let pid = shell.id().to_string();
        let mut args = vec!["--pid", pid.as_str(), "--backend", "tracepoint"];
        if verbose {
            args.push("-v");
        }
        let mut t = Tracer::spawn(&args, &[("HERDTRACE_TEST_FILL_TRACED", "1")], false);
        t.wait_attached();
        let mut stdin = shell.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut stdin, b"go\n").expect("write");
        let mut child = String::new();
        BufReader::new(shell.stdout.take().expect("stdout"))
            .read_line(&mut child)
            .expect("child pid");
        assert!(shell.wait().expect("sh").success());
        // The shell is gone: the run ends by itself.
        let end = t.wait();
        assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
        common::assert_contains(&end.stderr, "placeholder tasks fill the traced set");
        let line = format!(
            "herdtrace: WARN herdtrace::handlers: task {} of process {}, \
             forked by a traced task, is not followed",
            child.trim(),
            child.trim()
        );
        let map_line = "herdtrace: WARN herdtrace::emit: insert into map TRACED failed (-7): \
                        the map is full";
        if verbose {
            common::assert_contains(&end.stderr, &line);
            common::assert_contains(&end.stderr, map_line);
        } else {
            assert!(!end.stderr.contains("is not followed"), "{}", end.stderr);
            assert!(!end.stderr.contains("the map is full"), "{}", end.stderr);
        }
    }
}

/// A probe read that fails (a wrong offset, as a kernel with misleading BTF
/// would give) is named by the kernel-side log with `-v`.
#[test]
fn a_failing_probe_read_names_its_field_with_v() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let srv = server();
    let args = trace_args(srv.pid(), &["-v"]);
    let env = [("HERDTRACE_TEST_OFFSET", "task_struct.files=task_struct.pid")];
    let mut t = Tracer::spawn(&strs(&args), &env, false);
    t.wait_attached();
    let (st, _) = run_load(&srv.addr(), &["--connections", "5", "--rate", "50"]);
    assert!(st.success());
    thread::sleep(Duration::from_millis(500));
    t.signal(libc::SIGINT);
    let end = t.wait();
    assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
    common::assert_contains(
        &end.stderr,
        "herdtrace: HERDTRACE_TEST_OFFSET: task_struct.files is read at task_struct.pid's offset",
    );
    // The verifier checks direct BTF loads against the kernel's types: it
    // refuses the programs that read task_struct.files that way (first those
    // that read the fd from the registers, then the accept exit that keeps
    // it from the entry), and the tracer falls back to the variant that
    // reads it with helper calls.
    common::assert_contains(
        &end.stderr,
        "using the programs without bpf_task_pt_regs instead (the same facts, with a syscall \
         entry tracepoint as well",
    );
    common::assert_contains(
        &end.stderr,
        "herdtrace: warning: loading tp_accept_exit_tb: ",
    );
    common::assert_contains(
        &end.stderr,
        "using the programs without bpf_get_current_task_btf instead",
    );
    // task_struct.files now holds pid | tgid << 32, a user-space address.
    common::assert_contains(
        &end.stderr,
        "herdtrace: WARN herdtrace::kread: reading files_struct.fdt at offset ",
    );
}

/// `check` shows a simulated inlined function like a real one.
#[test]
fn check_reports_simulated_gaps() {
    if !can_run() {
        return;
    }
    let out = Command::new(bin())
        .arg("check")
        .env(
            "HERDTRACE_MISSING",
            "ep_send_events,__wake_up_common,sock:sk_data_ready,btf",
        )
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "function ep_send_events: missing: not in /proc/kallsyms (inlined or not built)\n",
        "function __wake_up_common: missing: not in /proc/kallsyms (inlined or not built)\n",
        "tracepoint sock:sk_data_ready: missing: treated as missing \
         (HERDTRACE_MISSING=sock:sk_data_ready)\n",
        "btf tracepoint sk_data_ready: missing: treated as missing \
         (HERDTRACE_MISSING=sock:sk_data_ready)\n",
        "btf: missing: no /sys/kernel/btf/vmlinux (treated as missing: HERDTRACE_MISSING=btf)\n",
        "backend tracepoint: unavailable (kernel BTF missing: no /sys/kernel/btf/vmlinux \
         (treated as missing: HERDTRACE_MISSING=btf))\n",
    ] {
        assert!(text.contains(want), "want {want:?} in\n{text}");
    }
    // Without BTF simulated, the same gaps give the substitute's warning.
    let out = Command::new(bin())
        .arg("check")
        .env(
            "HERDTRACE_MISSING",
            "ep_send_events,__wake_up_common,sock:sk_data_ready",
        )
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("  arrival: via handshake\n")
            && text.contains("  warning: sock:sk_data_ready missing (added in 6.6)"),
        "{text}"
    );
}

// ---- detach --------------------------------------------------------------------

/// Runs a tracer against a server with load, ends it with `stop`, and checks
/// that every program, link and map it held is gone from the kernel.
fn detach_case(what: &str, extra: &[&str], env: &[(&str, &str)], stop: Option<i32>) -> Ended {
    let srv = server();
    let args = trace_args(srv.pid(), extra);
    let mut t = Tracer::spawn(&strs(&args), env, false);
    t.wait_attached();
    let ours = attached_objects(&t);
    let (st, _) = run_load(&srv.addr(), &["--connections", "20", "--rate", "100"]);
    assert!(st.success());
    if let Some(sig) = stop {
        t.signal(sig);
    }
    let end = t.wait();
    assert_all_gone(&ours, what);
    end
}

#[test]
fn sigint_detaches_everything_and_prints_the_summary() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let end = detach_case("SIGINT", &[], &[], Some(libc::SIGINT));
    assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
    common::assert_contains(&end.stdout, "herdtrace summary");
    common::assert_contains(&end.stdout, "connections: 20");
}

#[test]
fn sigterm_detaches_everything_and_prints_the_summary() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let end = detach_case("SIGTERM", &["--json"], &[], Some(libc::SIGTERM));
    assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
    assert_eq!(summary_of(&end.stdout)["connections"], 20);
}

#[test]
fn sighup_detaches_everything_and_prints_the_summary() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let end = detach_case("SIGHUP", &[], &[], Some(libc::SIGHUP));
    assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
    common::assert_contains(&end.stdout, "herdtrace summary");
}

/// A panic with probes attached (test hook): one line, non-zero exit, and
/// unwinding drops the tracer, which detaches everything.
#[test]
fn a_panic_detaches_everything() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let end = detach_case(
        "panic",
        &[],
        &[("HERDTRACE_TEST_PANIC_AFTER_ATTACH", "4")],
        None,
    );
    eprintln!("{}", end.stderr);
    assert_eq!(end.status.code(), Some(101), "{}", end.stderr);
    let lines: Vec<&str> = end
        .stderr
        .lines()
        .filter(|l| l.contains("internal error") || l.contains("panicked"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", end.stderr);
    assert!(
        lines[0].starts_with(
            "herdtrace: internal error: HERDTRACE_TEST_PANIC_AFTER_ATTACH is set: panicking \
             with every probe attached at herdtrace/src/trace.rs:"
        ),
        "{}",
        lines[0]
    );
}

/// `herdtrace --json | head -1`: the reader goes away after one line; the
/// tracer ends with exit 0, detaches, and prints the summary on stderr.
#[test]
fn a_closed_stdout_pipe_detaches_and_summarises_on_stderr() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let srv = server();
    let args = trace_args(srv.pid(), &["--json", "--interval", "0.2"]);
    let mut t = Tracer::spawn(&strs(&args), &[], true);
    t.wait_attached();
    let ours = attached_objects(&t);
    let (st, _) = run_load(&srv.addr(), &["--connections", "20", "--rate", "100"]);
    assert!(st.success());
    // `head -1`: read one line, then close the pipe.
    let mut out = BufReader::new(t.child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("one line");
    drop(out);
    let v: Value = serde_json::from_str(&first).expect("an NDJSON line");
    assert!(v["type"].is_string(), "{first}");
    let end = t.wait();
    let line = assert_all_gone(&ours, "closed stdout");
    eprintln!("{line}\n{}", end.stderr);
    assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
    assert!(
        end.stderr
            .contains("herdtrace summary  (backend: tracepoint"),
        "summary on stderr: {}",
        end.stderr
    );
    common::assert_contains(&end.stderr, "connections: 20");
}

// ---- lost data -----------------------------------------------------------------

/// A 4 KiB ring buffer under a burst of connections: drops are counted,
/// episodes that saw them are marked incomplete, the summary says so.
#[test]
fn ring_buffer_overflow_is_counted_never_silent() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let srv = TestServer::start(&["--model", "epoll-per-worker", "--workers", "4"]);
    let args = trace_args(srv.pid(), &["--json", "--ringbuf-size", "4K"]);
    let mut t = Tracer::spawn(&strs(&args), &[], false);
    t.wait_attached();
    let end = load_then_interrupt(
        t,
        &srv.addr(),
        &[
            "--connections",
            "3000",
            "--concurrency",
            "32",
            "--rate",
            "0",
        ],
        Duration::from_millis(1500),
    );
    let lines = json_lines(&end.stdout);
    let s = summary_of(&end.stdout);
    let lost = s["lost_events"].as_u64().expect("lost_events");
    let incomplete = s["incomplete"].as_u64().expect("incomplete");
    let marked = lines
        .iter()
        .filter(|v| v["type"] == "conn" && v["incomplete"] == true)
        .count() as u64;
    let interval_lost: u64 = lines
        .iter()
        .filter(|v| v["type"] == "interval")
        .filter_map(|v| v["lost_events"].as_u64())
        .sum();
    eprintln!(
        "4K ring buffer, 3000 connections: {lost} events lost, {incomplete} of {} episodes \
         incomplete ({marked} conn lines marked), intervals reported {interval_lost} lost",
        s["connections"]
    );
    assert!(lost > 0, "a 4K ring buffer must overflow here: {s}");
    assert!(incomplete > 0, "{s}");
    assert_eq!(marked, incomplete, "every incomplete episode is marked");
    // The verdict itself says what it rests on (a 4K buffer loses most).
    let verdict = s["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict.starts_with(&format!(
            "no verdict: {incomplete} of {} connections are incomplete ({lost} events lost)",
            s["connections"]
        )) || verdict.contains(&format!(
            "; from an incomplete trace ({lost} events lost, {incomplete} of "
        )),
        "{s}"
    );
    // So does a balance verdict (seen: "IMBALANCED ... 56% of 78 accepts").
    let balance = &s["balance"];
    if balance["verdict"] == "balanced" || balance["verdict"] == "imbalanced" {
        assert!(
            balance["line"]
                .as_str()
                .unwrap_or_default()
                .ends_with(&format!(
                    "; from an incomplete trace ({lost} events lost): the shares may be skewed"
                )),
            "{balance}"
        );
    }
    // The text summary says so in words.
    let srv2 = server();
    let args = trace_args(srv2.pid(), &["--ringbuf-size", "4K"]);
    let mut t = Tracer::spawn(&strs(&args), &[], false);
    t.wait_attached();
    let _ = run_load(
        &srv2.addr(),
        &[
            "--connections",
            "3000",
            "--concurrency",
            "32",
            "--rate",
            "0",
        ],
    );
    thread::sleep(Duration::from_millis(1000));
    t.signal(libc::SIGINT);
    let end = t.wait();
    assert!(
        end.stdout.contains("events LOST") && end.stdout.contains("episodes INCOMPLETE"),
        "{}",
        end.stdout
    );
}

// ---- safety --------------------------------------------------------------------

/// No loaded program calls a helper that writes memory or changes a return
/// value: checked on the kernel's own translation of every program.
#[test]
fn programs_never_write_kernel_or_user_memory() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let srv = server();
    let args = trace_args(srv.pid(), &[]);
    let mut t = Tracer::spawn(&strs(&args), &[], false);
    t.wait_attached();
    let ours = attached_objects(&t);
    let mut helpers = BTreeSet::new();
    for id in &ours.progs {
        let out = Command::new("bpftool")
            .args(["prog", "dump", "xlated", "id", &id.to_string()])
            .output()
            .expect("bpftool prog dump");
        assert!(out.status.success(), "dump prog {id}");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            // `call bpf_probe_read_kernel#113` and the like.
            // (`call pc+41` is a call to another function of the same program.)
            if let Some(rest) = line.split("call ").nth(1).filter(|r| !r.starts_with("pc")) {
                helpers.insert(rest.split('#').next().unwrap_or(rest).trim().to_string());
            }
        }
    }
    t.signal(libc::SIGINT);
    let _ = t.wait();
    eprintln!("{} programs call: {helpers:?}", ours.progs.len());
    assert!(helpers.iter().any(|h| h.contains("ringbuf")), "{helpers:?}");
    for h in &helpers {
        assert!(
            !h.contains("write_user")
                && !h.contains("override_return")
                && !h.contains("send_signal")
                && !h.contains("probe_write"),
            "a writing helper is called: {h}"
        );
    }
}

/// A recording holds event metadata only: the request the client sent is
/// nowhere in it; the file is 0600; a symlink is refused before attaching.
#[test]
fn recordings_hold_no_payload_and_are_private() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("herdtrace-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("t.htr");
    let srv = server();
    let marker = "/herdtrace-payload-marker-5d1e9b";
    let args = trace_args(srv.pid(), &["--record", path.to_str().expect("utf8")]);
    let mut t = Tracer::spawn(&strs(&args), &[], false);
    t.wait_attached();
    let (st, _) = run_load(
        &srv.addr(),
        &["--connections", "20", "--rate", "100", "--request", marker],
    );
    assert!(st.success());
    thread::sleep(Duration::from_millis(1000));
    t.signal(libc::SIGINT);
    let end = t.wait();
    assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
    let bytes = std::fs::read(&path).expect("recording");
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        !has(marker.as_bytes()),
        "the request path is in the recording"
    );
    assert!(!has(b"HTTP/1.0"), "HTTP bytes are in the recording");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    eprintln!(
        "recording: {} bytes, mode {mode:o}, no payload",
        bytes.len()
    );

    // A symlink at the path: refused in one line, the target untouched, nothing attached.
    let victim = dir.join("victim");
    std::fs::write(&victim, b"keep").expect("victim");
    let link = dir.join("link.htr");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let args = trace_args(srv.pid(), &["--record", link.to_str().expect("utf8")]);
    let end = Tracer::spawn(&strs(&args), &[], false).wait();
    assert_eq!(end.status.code(), Some(1), "{}", end.stderr);
    common::assert_contains(&end.stderr, "is a symlink; refusing to write through it");
    assert!(
        !end.stderr.contains("herdtrace: tracing "),
        "{}",
        end.stderr
    );
    assert_eq!(std::fs::read(&victim).expect("victim"), b"keep");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// Workers that wake every millisecond for their own epoll_wait timeout: a
/// timeout that expires while a connection is being delivered on the same
/// CPU is the timer's wakeup, not the connection's. EPOLLEXCLUSIVE wakes at
/// most one worker per connection, so any count above one is a timer taken
/// for the connection (about 2.5% of them without the timer probes).
#[test]
fn timer_wakeups_are_not_taken_for_a_connection() {
    if !can_run() {
        return;
    }
    let _serial = serial();
    let srv = TestServer::start(&[
        "--model",
        "exclusive",
        "--workers",
        "4",
        "--wait-timeout-ms",
        "1",
    ]);
    let port = srv.port().to_string();
    let args = trace_args(srv.pid(), &["--json", "--port", &port]);
    let mut t = Tracer::spawn(&strs(&args), &[], false);
    t.wait_attached();
    let end = load_then_interrupt(
        t,
        &srv.addr(),
        &[
            "--connections",
            "1000",
            "--rate",
            "500",
            "--concurrency",
            "2",
        ],
        Duration::from_millis(500),
    );
    assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
    let conns: Vec<Value> = json_lines(&end.stdout)
        .into_iter()
        .filter(|v| v["type"] == "conn")
        .collect();
    let over: Vec<&Value> = conns
        .iter()
        .filter(|v| v["woken"].as_u64().is_none_or(|w| w > 1))
        .collect();
    eprintln!(
        "exclusive, 1 ms worker timeouts: {} conn records, {} woke more than one task",
        conns.len(),
        over.len()
    );
    assert_eq!(conns.len(), 1000, "{}", summary_of(&end.stdout));
    assert!(over.is_empty(), "{over:?}");
}
