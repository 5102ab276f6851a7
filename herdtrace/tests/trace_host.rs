//! The tracer on the real host kernel (tracepoint backend) against the
//! built-in server: the scenarios of `herdtrace::scenario`, which the QEMU
//! runner also uses for the kprobe and fentry backends.
//!
//! Needs root and BPF: outside CI these tests skip (printing why) when not
//! root; under CI=true they must run.
use std::{path::Path, sync::Mutex};

use herdtrace::{
    scenario,
    serve::{
        child::{ServeChild, Spawned, Stderr},
        lines::StatsOutput,
        Model,
    },
};

mod common;

use common::{server::TestServer, tracer::Tracer};

/// One scenario at a time: parallel servers and load would keep workers
/// busy and change how many are idle when a connection arrives.
static SERIAL: Mutex<()> = Mutex::new(());

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: the tracer tests need root and must not be skipped");
    }
    eprintln!("skipping: the tracer tests need root (BPF)");
    false
}

fn check(name: &str) {
    check_lacking(name, None);
}

/// [`check`] with the tracer acting as if the kernel lacked `missing`
/// (`HERDTRACE_MISSING`), to run a fallback variant of the probe table.
fn check_lacking(name: &str, missing: Option<&str>) {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sc = scenario::find(name).expect("known scenario");
    let release = herdtrace::kernel::release().expect("uname");
    if let Some(why) = sc.unsupported_on(&release) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} cannot run here: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let exe = Path::new(env!("CARGO_BIN_EXE_herdtrace"));
    // Under SERIAL: no other scenario of this binary starts a tracer meanwhile.
    if let Some(m) = missing {
        std::env::set_var("HERDTRACE_MISSING", m);
    }
    let outcome = scenario::run(exe, "tracepoint", &sc);
    std::env::remove_var("HERDTRACE_MISSING");
    let outcome = outcome.expect("scenario ran");
    if let Some(m) = missing {
        let said = format!("HERDTRACE_MISSING: acting as if the kernel lacked {m}");
        assert!(
            outcome.tracer_stderr.contains(&said),
            "{said:?} not in\n{}",
            outcome.tracer_stderr
        );
    }
    eprintln!(
        "{name}: woken/conn {:.2}, eagain_losers/conn {:.2}, spurious/conn {:.2}, {} conns, accepts {:?}",
        outcome.woken_mean,
        outcome.eagain_losers_per_conn,
        outcome.spurious_per_conn,
        outcome.conn_records,
        outcome.accepts_by_tid
    );
    assert_eq!(outcome.backend, "tracepoint");
    assert!(
        outcome.passed(),
        "{name}: {:?}\ntracer stderr:\n{}",
        outcome.failures,
        outcome.tracer_stderr
    );
}

#[test]
fn epoll_per_worker_wakes_every_idle_worker() {
    check("epoll-per-worker");
}

/// Kernels before 5.11 lack `bpf_get_current_task_btf`: the accept exit
/// then finds the fd table with helper reads (`tp_accept_exit` instead of
/// `tp_accept_exit_tb`). Every accept and EAGAIN still counts (the
/// scenario compares each task's accepts with the server's own count).
#[test]
fn epoll_per_worker_without_task_btf() {
    check_lacking("epoll-per-worker", Some("bpf_get_current_task_btf"));
}

/// Kernels 5.11-5.14 have `bpf_get_current_task_btf` but not
/// `bpf_task_pt_regs`: the accept entry keeps the listening fd
/// (`tp_accept_enter`) for the exit (`tp_accept_exit_tb`).
#[test]
fn epoll_per_worker_without_task_pt_regs() {
    check_lacking("epoll-per-worker", Some("bpf_task_pt_regs"));
}

#[test]
fn exclusive_wakes_one() {
    check("exclusive");
}

#[test]
fn reuseport_wakes_one() {
    check("reuseport");
}

#[test]
fn blocking_accept_wakes_one() {
    check("blocking-accept");
}

/// Workers with an io_uring each, an IORING_OP_ACCEPT armed on the shared
/// socket: no accept syscall, every accept comes from a completion (each
/// task's accepts are compared with the server's own count).
#[test]
fn io_uring_accepts_are_traced() {
    check("io-uring");
}

/// One multishot accept per ring, armed before the tracer started and never
/// submitted again (5.19+): its completions name no request and its
/// submission was not seen, so they are told by its poll's wakeup.
#[test]
fn io_uring_multishot_accepts_armed_before_tracing_are_traced() {
    check("io-uring-multishot");
}

#[test]
fn shared_epoll_wakes_one_to_n() {
    check("shared-epoll");
}

/// A multi-threaded tokio server: the runtime's one epoll has one waiter.
#[test]
fn tokio_wakes_one() {
    check("tokio");
}

#[test]
fn tokio_reuseport_wakes_one() {
    check("tokio-reuseport");
}

/// `herdtrace --pid PID --json --backend tracepoint <extra>`, attached.
fn json_tracer(pid: impl ToString, extra: &[&str]) -> Tracer {
    let pid = pid.to_string();
    let mut args = vec!["--pid", pid.as_str(), "--json", "--backend", "tracepoint"];
    args.extend_from_slice(extra);
    let mut tracer = Tracer::spawn(&args, &[], false);
    tracer.wait_attached();
    tracer
}

/// The tracer is attached to a process before it forks its workers (an
/// nginx master starting or reloading): the workers are followed through
/// `sched_process_fork`, and their herd is measured like any other.
#[test]
fn follows_workers_forked_after_attach() {
    use std::{
        collections::BTreeMap, ffi::CString, os::unix::ffi::OsStrExt as _, process::Command,
        thread, time::Duration,
    };
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let exe = env!("CARGO_BIN_EXE_herdtrace");
    // A shell that waits on a FIFO (a builtin read: no traced fork), then
    // becomes the server (same pid).
    let gate = std::env::temp_dir().join(format!("herdtrace-fork-gate-{}", std::process::id()));
    let _ = std::fs::remove_file(&gate);
    let path = CString::new(gate.as_os_str().as_bytes()).expect("no NUL in the temp path");
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    let mut shell = Command::new("sh");
    shell.args([
        "-c",
        &format!(
            "read go < '{}'; exec \"$0\" serve --model epoll-per-worker --workers 4 --stats",
            gate.display()
        ),
        exe,
    ]);
    let spawned = Spawned::new(shell, Stderr::Capture).expect("spawn sh");
    let pid = spawned.pid();
    let tracer = json_tracer(pid, &[]);

    // Now the server starts and forks its workers.
    std::fs::write(&gate, "go\n").expect("open the gate");
    let _ = std::fs::remove_file(&gate);
    let mut server: ServeChild<Model> = spawned
        .listening(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let port = server.listening.port;
    let load = Command::new(exe)
        .args(["load", "--addr", &format!("127.0.0.1:{port}")])
        .args([
            "--connections",
            "150",
            "--rate",
            "150",
            "--concurrency",
            "1",
            "--json",
        ])
        .output()
        .expect("load");
    let load: serde_json::Value = serde_json::from_slice(&load.stdout).expect("load json");
    thread::sleep(Duration::from_millis(2000));
    tracer.signal(libc::SIGINT);
    let traced = tracer.wait();
    assert!(traced.status.success(), "{}", traced.stderr);
    let status = server
        .stop(libc::SIGTERM, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e:#}; stderr: {}", server.stderr_text()));
    assert!(status.success(), "{status}: {}", server.stderr_text());
    let lines = server
        .output_lines(Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let stats: BTreeMap<u32, u64> = StatsOutput::of(lines)
        .workers
        .iter()
        .map(|w| (w.tid as u32, w.accepts))
        .collect();
    let ndjson = traced.stdout;
    // It started listening after the tracer attached: named when seen.
    let addr = format!("127.0.0.1:{port}");
    assert!(
        traced
            .stderr
            .contains(&format!("herdtrace: new listener: {addr} ")),
        "{}",
        traced.stderr
    );
    let summary = common::tracer::summary_of(&ndjson);
    assert!(
        summary["listeners"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x
                .as_str()
                .is_some_and(|x| x.starts_with(&format!("{addr} "))))),
        "{}",
        summary["listeners"]
    );

    let mut sc = scenario::find("epoll-per-worker").expect("scenario");
    sc.connections = 150;
    let mut o = scenario::outcome_from(&sc, "tracepoint", &load, &ndjson, &stats).expect("outcome");
    scenario::evaluate(&sc, &mut o);
    assert_eq!(stats.len(), 4, "four workers forked after attach");
    assert!(
        o.passed(),
        "{:?} (accepts {:?})",
        o.failures,
        o.accepts_by_tid
    );
}

/// `herdtrace --pid SERVER` on the built-in server in `model`, 300
/// connections at 200/s: the NDJSON lines, the text summary of the same
/// run (replayed from its recording), and the server's parent pid.
fn balance_run(model: &str) -> (Vec<serde_json::Value>, String, i32) {
    use std::process::{Command, Stdio};
    let exe = env!("CARGO_BIN_EXE_herdtrace");
    let server = TestServer::start(&["--model", model, "--workers", "4"]);
    let listening = server.listening;
    let rec = std::env::temp_dir().join(format!(
        "herdtrace-balance-{model}-{}.htr",
        std::process::id()
    ));
    let rec_arg = rec.to_str().expect("UTF-8 temp path");
    let tracer = json_tracer(listening.pid, &["-d", "4", "--record", rec_arg]);
    let load = Command::new(exe)
        .args(["load", "--addr", &format!("127.0.0.1:{}", listening.port)])
        .args([
            "--connections",
            "300",
            "--rate",
            "200",
            "--concurrency",
            "4",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("load");
    assert!(load.success());
    let traced = tracer.wait();
    server.kill_parent();
    assert!(traced.status.success(), "{}", traced.stderr);
    let lines: Vec<serde_json::Value> = traced
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect();
    let text = Command::new(exe)
        .arg("replay")
        .arg(&rec)
        .output()
        .expect("replay");
    let json = Command::new(exe)
        .args(["replay", "--json"])
        .arg(&rec)
        .output()
        .expect("replay --json");
    let _ = std::fs::remove_file(&rec);
    assert_same_counters(&lines, &String::from_utf8_lossy(&json.stdout));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    (lines, text, listening.pid)
}

/// The replay of a run's recording flags the connections the run flagged
/// and reports the same kernel counters (drops, skipped runs, failed inserts).
fn assert_same_counters(live: &[serde_json::Value], replayed: &str) {
    let replayed: Vec<serde_json::Value> = replayed
        .lines()
        .map(|l| serde_json::from_str(l).expect("replay NDJSON"))
        .collect();
    let conn_flags = |lines: &[serde_json::Value]| -> Vec<(String, bool, bool)> {
        let mut v: Vec<_> = lines
            .iter()
            .filter(|l| l["type"] == "conn")
            .map(|l| {
                (
                    format!("{}@{}", l["peer"], l["ts_ns"]),
                    l["incomplete"] == true,
                    l["possibly_incomplete"] == true,
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(conn_flags(&replayed), conn_flags(live));
    let (a, b) = (
        live.last().expect("live summary"),
        replayed.last().expect("replayed summary"),
    );
    for key in [
        "connections",
        "incomplete",
        "possibly_incomplete",
        "lost_events",
        "skipped_runs",
        "skipped_by_program",
        "insert_failed",
    ] {
        assert_eq!(a[key], b[key], "{key}: live {a}\nreplayed {b}");
    }
}

/// EPOLLEXCLUSIVE: one worker takes the connections (LIFO), and the
/// summary says so with the measured share; every line carries wall-clock time.
#[test]
fn exclusive_summary_names_the_lifo_imbalance() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lines, replayed, parent) = balance_run("exclusive");
    let summary = lines.last().expect("summary");
    assert_eq!(summary["type"], "summary");
    let b = &summary["balance"];
    eprintln!("exclusive: {}", b["line"]);
    assert_eq!(b["verdict"], "imbalanced", "{b}");
    assert_eq!(b["pattern"], "lifo", "{b}");
    assert_eq!(b["workers"], 4, "the 3 idle workers count: {b}");
    let share = b["top"]["share"].as_f64().expect("share");
    assert!(share >= 0.5, "{b}");
    assert!(b["line"]
        .as_str()
        .expect("line")
        .contains(&format!("took {:.0}% of", 100.0 * share)));
    // The intervals carry the per-worker shares, and every object a time.
    let intervals: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["type"] == "interval").collect();
    assert!(intervals
        .iter()
        .any(|i| i["share_max"].as_f64() >= Some(0.5)));
    assert!(intervals.iter().all(|i| i["fair_share"] == 0.25));
    for l in &lines {
        let t = l["time"].as_str().unwrap_or_else(|| panic!("no time: {l}"));
        assert!(
            t.len() == 27 && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }
    assert!(summary["wall_clock"]
        .as_str()
        .expect("wall_clock")
        .starts_with("live"));
    // The recording keeps the clock: its replay names the same imbalance.
    assert!(replayed.contains("balance: IMBALANCED: "), "{replayed}");
    // The task table lists all 4 workers, those that took none included
    // (/proc named them), and not the parent; so does the replay's.
    let tasks = summary["tasks"].as_array().expect("tasks");
    let tids: Vec<u64> = tasks.iter().filter_map(|t| t["tid"].as_u64()).collect();
    assert_eq!(tids.len(), 4, "{summary}");
    assert!(tasks.iter().any(|t| t["accepts"] == 0), "{summary}");
    assert!(
        tasks
            .iter()
            .all(|t| t["pid"] == t["tid"] && t["pid"] != parent),
        "{summary}"
    );
    for tid in tids {
        let row = format!("{tid:>8} herdtrace");
        assert!(replayed.contains(&row), "{row:?} not in {replayed}");
    }
}

/// SO_REUSEPORT spreads the connections: no imbalance is named.
#[test]
fn reuseport_summary_is_balanced() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lines, _, _) = balance_run("reuseport");
    let b = &lines.last().expect("summary")["balance"];
    eprintln!("reuseport: {}", b["line"]);
    assert_eq!(b["verdict"], "balanced", "{b}");
    assert_eq!(b["listeners_per_port"], 4, "{b}");
    assert_eq!(b["workers"], 4, "{b}");
}

/// One connection from 127.0.0.1:`port` to `server`: request, response read
/// to EOF, close. The source port is reused from one connection to the next
/// (SO_REUSEADDR), as few clients with long-lived ports do.
fn connect_from(port: u16, server: u16) -> bool {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let sin = |p: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: p.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on an fd this function owns; on success the
    // fd is handed to a TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let local = sin(port);
        let remote = sin(server);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0
        {
            libc::close(fd);
            return false;
        }
        let mut s = std::net::TcpStream::from_raw_fd(fd);
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let mut buf = Vec::new();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() && s.read_to_end(&mut buf).is_ok()
    }
}

/// SO_REUSEPORT with two clients that keep their ports: the kernel hashes
/// each connection's addresses and ports to a socket, so two address:port
/// pairs reach at most two of the four workers; the summary names the
/// reuseport hash imbalance.
#[test]
fn reuseport_with_two_client_ports_is_a_hash_imbalance() {
    use std::{
        thread,
        time::{Duration, Instant},
    };
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = TestServer::start(&["--model", "reuseport", "--workers", "4"]);
    let listening = server.listening;
    let tracer = json_tracer(listening.pid, &["-d", "6"]);
    // Two free source ports, reused by 100 connections each, 10 ms apart.
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut made = 0;
    for k in 0..200 {
        if Instant::now() >= deadline {
            break;
        }
        made += u32::from(connect_from(ports[k % 2], listening.port));
        thread::sleep(Duration::from_millis(10));
    }
    let traced = tracer.wait();
    server.kill_parent();
    assert!(traced.status.success(), "{}", traced.stderr);
    assert!(made >= 50, "only {made} connections made");
    let text = traced.stdout;
    let summary: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("summary")).expect("json");
    let b = &summary["balance"];
    eprintln!("two client ports, {made} connections: {}", b["line"]);
    // The group is known from /proc, even when both pairs hash to one socket.
    assert_eq!(b["listeners_per_port"], 4, "{b}");
    assert!(b["accepting_tasks"].as_u64() <= Some(2), "{b}");
    assert_eq!(b["clients"]["distinct_peers"], 2, "{b}");
    assert_eq!(b["verdict"], "imbalanced", "{b}");
    assert_eq!(b["pattern"], "reuseport_hash", "{b}");
    assert!(b["line"]
        .as_str()
        .expect("line")
        .contains("reuseport hash imbalance"));
}
