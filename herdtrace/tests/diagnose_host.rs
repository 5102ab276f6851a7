//! `herdtrace diagnose` on the real host kernel: against the built-in server
//! in every model and against Debian's nginx and lighttpd, each started by
//! the test on a free loopback port, with `herdtrace load` running while it
//! traces. The assertions check that the description and the advice fit the
//! setup, and that the measured cost agrees with it.
//!
//! Needs root and BPF: outside CI these tests skip (printing why) when not
//! root or when nginx/lighttpd are missing; under CI=true they must run.
mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use common::server::{bin, children_of, run_load, TestServer};
use serde_json::Value;

/// One diagnosis at a time: parallel servers and load would keep workers
/// busy and change how many are idle when a connection arrives.
static SERIAL: Mutex<()> = Mutex::new(());

/// Seconds each diagnosis traces; the load (LOAD_CONNS at LOAD_RATE/s) ends well inside it.
const DURATION: &str = "3";
const LOAD_CONNS: &str = "300";
const LOAD_RATE: &str = "200";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn skip(reason: &str) {
    if in_ci() {
        panic!("CI=true: {reason}; these tests must not be skipped");
    }
    eprintln!("skipping: {reason}");
}

/// The serialising guard when this test can run here (root); None, after
/// saying why, when it must be skipped.
fn start() -> Option<MutexGuard<'static, ()>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip("diagnose needs root (BPF, other users' /proc fdinfo)");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Runs `diagnose --pid PID --json`, starts the load once the tracer is
/// attached, and returns the parsed report.
fn diagnose(pid: u32, port: u16) -> Value {
    let args = [
        "diagnose",
        "--pid",
        &pid.to_string(),
        "--duration",
        DURATION,
        "--json",
    ];
    let (stdout, stderr) = run_attached(&args, || {
        let (status, load) = run_load(
            &format!("127.0.0.1:{port}"),
            &[
                "--connections",
                LOAD_CONNS,
                "--rate",
                LOAD_RATE,
                "--concurrency",
                "4",
            ],
        );
        assert!(status.success(), "load failed: {load}");
    });
    let text = String::from_utf8_lossy(&stdout);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}\nstderr:\n{stderr}"));
    // When it was made, in wall-clock time (RFC 3339, UTC, microseconds).
    let t = v["time"].as_str().expect("time");
    assert!(
        t.len() == 27 && t.ends_with('Z') && &t[10..11] == "T",
        "{t}"
    );
    eprintln!(
        "{}: {} | cost: {} conns, woken/conn {}, wasted/s {} | advice: {}",
        v["comm"],
        v["endpoints"][0]["description"],
        v["cost"]["connections"],
        v["cost"]["woken_per_conn"],
        v["cost"]["wasted_per_s"],
        v["endpoints"][0]["advice"]
    );
    v
}

/// Runs `herdtrace ARGS`, calls `during` once it has attached (its stderr
/// says `herdtrace: tracing`), and waits (bounded) for it to exit
/// successfully; returns its stdout and stderr.
fn run_attached(args: &[&str], during: impl FnOnce()) -> (Vec<u8>, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herdtrace");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("herdtrace: tracing") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let attached = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    if attached {
        during();
    }
    let out = wait_output(child, Duration::from_secs(60));
    let stderr = reader.join().expect("stderr reader");
    assert!(attached, "the tracer never attached; stderr:\n{stderr}");
    assert!(out.0, "herdtrace {args:?} failed; stderr:\n{stderr}");
    (out.1, stderr)
}

/// Waits (bounded) for the child; (success, stdout).
fn wait_output(mut child: Child, limit: Duration) -> (bool, Vec<u8>) {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    let out = child.wait_with_output().expect("diagnose output");
    (out.status.success(), out.stdout)
}

fn endpoint(v: &Value) -> &Value {
    let eps = v["endpoints"].as_array().expect("endpoints");
    assert_eq!(eps.len(), 1, "one listening address: {v}");
    &eps[0]
}

fn advice_text(ep: &Value) -> String {
    format!("{} {}", ep["advice"]["headline"], ep["advice"]["items"])
}

fn woken(v: &Value) -> f64 {
    v["cost"]["woken_per_conn"]
        .as_f64()
        .expect("woken_per_conn")
}

/// Enough connections traced for the cost figures to mean something.
fn assert_traced(v: &Value) {
    let n = v["cost"]["connections"].as_u64().expect("connections");
    assert!(n >= 100, "only {n} connections traced: {v}");
}

fn builtin(model: &str) -> Value {
    let server = TestServer::start(&["--model", model, "--workers", "4"]);
    let v = diagnose(server.pid() as u32, server.port());
    drop(server);
    assert_eq!(v["server"], "built_in");
    assert_traced(&v);
    v
}

#[test]
fn builtin_epoll_per_worker_is_a_herd_and_advises_exclusive_or_reuseport() {
    let Some(_serial) = start() else {
        return;
    };
    let v = builtin("epoll-per-worker");
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "epoll_per_worker");
    assert_eq!(ep["pattern"]["instances"], 4);
    assert_eq!(ep["pattern"]["exclusive"], 0);
    let d = ep["description"].as_str().expect("description");
    assert!(
        d.starts_with("4 processes, each with its own epoll on 127.0.0.1:"),
        "{d}"
    );
    assert!(d.ends_with("no EPOLLEXCLUSIVE"), "{d}");
    assert_eq!(v["fine"], false);
    let a = advice_text(ep);
    assert!(
        a.contains("--model exclusive") && a.contains("--model reuseport"),
        "{a}"
    );
    assert!(woken(&v) > 2.0, "{v}");
    assert!(v["cost"]["wasted_per_s"].as_f64().expect("wasted") > 0.0);
    assert!(
        v["cost"]["extra_context_switches_per_s"]
            .as_f64()
            .expect("ctx")
            > 0.0
    );
}

#[test]
fn builtin_exclusive_has_no_herd_but_names_the_lifo_imbalance() {
    let Some(_serial) = start() else {
        return;
    };
    let v = builtin("exclusive");
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "epoll_per_worker");
    assert_eq!(ep["pattern"]["exclusive"], 4);
    assert!(ep["description"]
        .as_str()
        .expect("d")
        .ends_with("all with EPOLLEXCLUSIVE"));
    assert_eq!(ep["advice"]["fine"], true, "no herd: {v}");
    assert!(woken(&v) <= 1.2, "{v}");
    // But one worker takes the connections, and diagnose says so with the
    // share it measured.
    assert_imbalance_named(&v, Some("lifo"));
    assert_eq!(v["fine"], false, "{v}");
}

/// The report names an imbalance (the given pattern), with the measured share.
fn assert_imbalance_named(v: &Value, pattern: Option<&str>) {
    let b = &v["balance"];
    assert_eq!(b["verdict"], "imbalanced", "{b}");
    assert_eq!(b["workers"], 4, "{b}");
    assert_eq!(b["pattern"].as_str(), pattern, "{b}");
    let share = b["top"]["share"].as_f64().expect("top share");
    assert!(share >= 0.5, "{b}");
    let shown = format!("took {:.0}% of the accepts", 100.0 * share);
    let a = &v["balance_advice"];
    let headline = a["headline"].as_str().expect("balance advice");
    assert!(headline.contains(&shown), "{shown:?} not in {headline}");
    assert!(b["line"]
        .as_str()
        .expect("line")
        .starts_with("IMBALANCED: "));
}

/// The report judges the balance and finds none.
fn assert_no_imbalance(v: &Value) {
    let b = &v["balance"];
    assert_ne!(b["verdict"], "imbalanced", "{b}");
    assert_eq!(v["balance_advice"], Value::Null, "{v}");
}

#[test]
fn builtin_reuseport_is_fine() {
    let Some(_serial) = start() else {
        return;
    };
    let v = builtin("reuseport");
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "reuseport");
    assert_eq!(ep["pattern"]["sockets"], 4);
    assert_eq!(ep["sockets"].as_array().expect("sockets").len(), 4);
    assert!(ep["description"]
        .as_str()
        .expect("d")
        .starts_with("SO_REUSEPORT group of 4 listening sockets"));
    assert_eq!(v["fine"], true, "{v}");
    assert!(woken(&v) <= 1.2, "{v}");
    assert_eq!(v["balance"]["verdict"], "balanced", "{v}");
    assert_no_imbalance(&v);
}

#[test]
fn builtin_shared_epoll_is_herd_prone_and_advises_epollet() {
    let Some(_serial) = start() else {
        return;
    };
    let v = builtin("shared-epoll");
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "shared_epoll");
    assert_eq!(ep["pattern"]["threads"], 4);
    assert_eq!(ep["pattern"]["edge_triggered"], false);
    assert!(ep["description"]
        .as_str()
        .expect("d")
        .contains("threads waiting on one shared epoll"));
    assert_eq!(v["fine"], false);
    assert!(
        advice_text(ep).contains("--edge-triggered"),
        "{}",
        advice_text(ep)
    );
    assert!(woken(&v) > 1.0, "{v}");
}

#[test]
fn builtin_blocking_accept_is_fine() {
    let Some(_serial) = start() else {
        return;
    };
    let v = builtin("blocking-accept");
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "blocking_accept");
    assert_eq!(ep["pattern"]["threads"], 4);
    assert_eq!(v["fine"], true, "{v}");
    assert!(woken(&v) <= 1.2, "{v}");
}

/// Workers that accept through io_uring wait in io_uring_enter with an
/// IORING_OP_ACCEPT armed: no epoll, no accept(), which /proc read as
/// "no task was waiting" before their rings' fdinfo was read.
#[test]
fn builtin_io_uring_is_one_ring_woken_per_connection() {
    let Some(_serial) = start() else {
        return;
    };
    let v = builtin("io-uring");
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "uring_accept", "{v}");
    assert_eq!(ep["pattern"]["accepts"], 4, "{v}");
    // This machine's kernel is newer than 5.18.
    assert_eq!(ep["pattern"]["exclusive"], true, "{v}");
    assert_eq!(ep["acceptors"], 4, "{v}");
    assert_eq!(v["fine"], true, "{v}");
    assert!(advice_text(ep).contains("io_uring waits"), "{v}");
    assert!(woken(&v) <= 1.2, "{v}");
    // Each accept is queued again at the back once it completes: the rings
    // take turns.
    assert_no_imbalance(&v);
}

/// One multishot accept per ring never leaves the listener's wait queue, so
/// the ring first in it takes every connection: diagnose names that, not
/// EPOLLEXCLUSIVE's LIFO (no epoll here).
#[test]
fn builtin_io_uring_multishot_names_the_first_ring_imbalance() {
    let Some(_serial) = start() else {
        return;
    };
    let server = TestServer::start(&["--model", "io-uring", "--multishot", "--workers", "4"]);
    let v = diagnose(server.pid() as u32, server.port());
    drop(server);
    assert_traced(&v);
    assert_eq!(endpoint(&v)["pattern"]["kind"], "uring_accept", "{v}");
    assert_imbalance_named(&v, Some("first_ring"));
    let advice = v["balance_advice"]["items"].to_string();
    assert!(advice.contains("single-shot io_uring accepts"), "{advice}");
}

/// A tokio server: mio dups its epoll fd, so the process has two fds of its
/// one epoll instance, which must not read as two epolls, two waiting
/// workers and an imbalance between them. Its one accept task runs on
/// whichever worker thread is free (work stealing moves it now and then):
/// one worker, however many threads accepted (a CI run once saw 296 accepts
/// on one thread and 4 on another judged "IMBALANCED ... LIFO pattern").
#[test]
fn builtin_tokio_is_one_epoll_with_one_waiter() {
    let Some(_serial) = start() else {
        return;
    };
    let v = builtin("tokio");
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "single_waiter", "{v}");
    assert_eq!(ep["acceptors"], 1, "{v}");
    assert_eq!(v["fine"], true, "{v}");
    assert!(woken(&v) <= 1.2, "{v}");
    assert_eq!(v["balance"]["workers_from_proc"], 1, "{v}");
    assert_eq!(v["balance"]["workers"], 1, "{v}");
    assert_eq!(v["balance"]["verdict"], "one_worker", "{v}");
    // Its threads are counted when more than one ran it.
    let threads = v["balance"]["loop_threads"].as_u64().unwrap_or(0);
    assert!(threads <= 4, "{v}");
    let line = v["balance"]["line"].as_str().expect("line");
    assert_eq!(
        threads > 1,
        line.contains("the accept loop of worker["),
        "{line}"
    );
}

// Debian's servers.

/// A real server started by the test in its own process group (lighttpd
/// signals its whole group on SIGTERM); stopped and its temp dir removed on drop.
struct RealServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for RealServer {
    fn drop(&mut self) {
        // The server leads its own process group (see start_real): stop all
        // of it, workers included.
        let group = self.child.id() as i32;
        // SAFETY: signals our own child's process group.
        unsafe { libc::killpg(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; whatever is left of the group.
        unsafe { libc::killpg(group, libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Fills a docs/real-servers template (the configs the real-server runs use).
fn config(template: &str, dir: &Path, port: u16, listen_opts: &str, mutex: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/real-servers")
        .join(template);
    let text = std::fs::read_to_string(&path).expect("config template");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            l.replace("@DIR@", &dir.to_string_lossy())
                .replace("@PORT@", &port.to_string())
                .replace("@LISTEN_OPTS@", listen_opts)
                .replace("@ACCEPT_MUTEX@", mutex)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// True when `program` can run; else the test is skipped (outside CI) saying why.
fn need(program: &str, package: &str) -> bool {
    if have(program) {
        return true;
    }
    skip(&format!(
        "{program} is not installed (cargo xtask setup installs Debian's {package})"
    ));
    false
}

/// Starts `program args` and waits until it listens on `port` with 4 workers.
fn start_real(name: &str, program: &str, args: &[&str], port: u16, dir: PathBuf) -> RealServer {
    start_real_with(name, program, args, &[], port, dir, Workers::Processes(4))
}

/// How a server's 4 workers show: child processes, or threads of the server.
#[derive(Clone, Copy)]
enum Workers {
    Processes(usize),
    Threads(usize),
}

fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Starts `program args` with `env` in its own process group, its output in
/// `dir/server.log`, and waits until it listens on `port` with its workers.
fn start_real_with(
    name: &str,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    port: u16,
    dir: PathBuf,
    workers: Workers,
) -> RealServer {
    let log = std::fs::File::create(dir.join("server.log")).expect("server log");
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let server = RealServer { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        let pid = server.child.id();
        let ready = match workers {
            Workers::Processes(n) => children_of(pid as i32).len() >= n,
            Workers::Threads(n) => thread_count(pid) >= n,
        };
        if listening && ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {port} with its workers; logs: {} {}",
            std::fs::read_to_string(server.dir.join("error.log")).unwrap_or_default(),
            std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(50));
    }
    // The connection above may have woken workers: let them settle.
    thread::sleep(Duration::from_millis(300));
    server
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("herdtrace-diag-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("www")).expect("temp dir");
    std::fs::write(dir.join("www/index.html"), "ok\n").expect("index.html");
    dir
}

fn nginx(name: &str, listen_opts: &str, mutex: &str) -> Option<RealServer> {
    if !have("nginx") {
        skip("nginx is not installed (cargo xtask setup installs it)");
        return None;
    }
    let dir = temp_dir(name);
    let port = free_port();
    let conf = dir.join("server.conf");
    std::fs::write(
        &conf,
        config("nginx.conf.in", &dir, port, listen_opts, mutex),
    )
    .expect("conf");
    let (c, p, e) = (
        conf.to_string_lossy().into_owned(),
        dir.to_string_lossy().into_owned(),
        dir.join("error.log").to_string_lossy().into_owned(),
    );
    // -e: nginx would otherwise open /var/log/nginx/error.log before reading the config.
    let args = ["-c", &c, "-p", &p, "-e", &e, "-g", "daemon off;"];
    Some(start_real(name, "nginx", &args, port, dir))
}

fn real_diagnose(server: &RealServer) -> Value {
    let v = diagnose(server.child.id(), server.port);
    assert_traced(&v);
    v
}

#[test]
fn nginx_default_uses_epollexclusive_and_is_fine() {
    let Some(_serial) = start() else {
        return;
    };
    let Some(server) = nginx("nginx-default", "", "off") else {
        return;
    };
    let v = real_diagnose(&server);
    assert_eq!(v["server"], "nginx");
    assert!(v["recognised_by"]
        .as_str()
        .expect("recognised_by")
        .starts_with("executable "));
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "epoll_per_worker");
    assert_eq!(ep["pattern"]["instances"], 4);
    assert_eq!(ep["pattern"]["exclusive"], 4);
    assert_eq!(ep["advice"]["fine"], true, "{v}");
    assert!(
        advice_text(ep).contains("nginx's default"),
        "{}",
        advice_text(ep)
    );
    assert!(woken(&v) <= 1.2, "{v}");
    // The balance is judged against 4 workers; whether nginx's LIFO shows
    // depends on its timers, so the verdict and its advice must agree.
    let b = &v["balance"];
    assert_eq!(b["workers"], 4, "{b}");
    eprintln!("nginx default balance: {}", b["line"]);
    if b["verdict"] == "imbalanced" {
        let a = advice_text_of(&v["balance_advice"]);
        assert!(a.contains("reuseport") && a.contains("accept_mutex"), "{a}");
        assert_eq!(v["fine"], false);
    } else {
        assert_eq!(v["fine"], true, "{v}");
    }
}

/// Traces `pid` for `secs` seconds with `--json --quiet` while `during`
/// runs (once the tracer has attached); returns the JSON summary.
fn trace_summary(pid: i32, secs: u32, during: impl FnOnce()) -> Value {
    // --quiet: no connection lines; the JSON summary goes to stderr.
    let (pid, secs) = (pid.to_string(), secs.to_string());
    let args = ["--pid", &pid, "--json", "--quiet", "--duration", &secs];
    let (_, stderr) = run_attached(&args, during);
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary; stderr:\n{stderr}"))
}

/// A reload (SIGHUP to the master) while tracing: nginx starts 4 new
/// workers and the old 4 exit (each worker has its own SO_REUSEPORT
/// socket). Every accept of both generations is counted, each generation's
/// even split is not an imbalance, and N says both that 8 workers shared
/// the run and that at most 4 were there at once.
#[test]
fn nginx_reload_is_traced_across_both_generations_of_workers() {
    let Some(_serial) = start() else {
        return;
    };
    // SO_REUSEPORT: the kernel hashes the connections over 4 sockets, so
    // every worker of each generation takes some (with EPOLLEXCLUSIVE's LIFO
    // one worker may take them all).
    let Some(server) = nginx("nginx-reload", " reuseport", "off") else {
        return;
    };
    let master = server.child.id() as i32;
    let old = children_of(master);
    assert_eq!(old.len(), 4, "{old:?}");
    let addr = format!("127.0.0.1:{}", server.port);
    let load = || {
        let (status, out) = run_load(
            &addr,
            &[
                "--connections",
                "300",
                "--rate",
                "300",
                "--concurrency",
                "4",
            ],
        );
        assert!(status.success(), "load failed: {out}");
    };
    let summary = trace_summary(master, 8, || {
        load();
        // SAFETY: a signal to the nginx master this test started.
        unsafe { libc::kill(master, libc::SIGHUP) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = children_of(master);
            if now.len() == 4 && now.iter().all(|p| !old.contains(p)) {
                break;
            }
            assert!(Instant::now() < deadline, "no new generation: {now:?}");
            thread::sleep(Duration::from_millis(50));
        }
        load();
    });
    let b = &summary["balance"];
    eprintln!("nginx reload balance: {}", b["line"]);
    assert_eq!(summary["connections"], 600, "{summary}");
    assert_eq!(summary["unaccepted"], 0, "{summary}");
    assert_eq!(b["accepts"], 600, "{b}");
    let tasks: Vec<i64> = summary["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| t["accepts"].as_u64() > Some(0))
        .map(|t| t["pid"].as_i64().expect("pid"))
        .collect();
    let new = children_of(master);
    assert!(
        tasks.iter().any(|p| old.contains(&(*p as i32)))
            && tasks.iter().any(|p| new.contains(&(*p as i32))),
        "both generations accepted: {tasks:?}, old {old:?}, new {new:?}"
    );
    assert_eq!(b["workers"], tasks.len(), "{b}");
    assert_eq!(b["workers_at_once"], 4, "{b}");
    assert!(
        b["line"]
            .as_str()
            .expect("line")
            .contains("at most 4 at once"),
        "{b}"
    );
}

/// Traced (not diagnosed), nginx with `accept_mutex on`: the trace reads
/// the setup from /proc when it starts, so one worker taking every
/// connection is named as the workers taking turns, not as EPOLLEXCLUSIVE's
/// LIFO wakeup (which this nginx does not use).
#[test]
fn nginx_accept_mutex_trace_names_the_turns() {
    let Some(_serial) = start() else {
        return;
    };
    let Some(server) = nginx("nginx-mutex-trace", "", "on") else {
        return;
    };
    let addr = format!("127.0.0.1:{}", server.port);
    let summary = trace_summary(server.child.id() as i32, 4, || {
        let (status, out) = run_load(
            &addr,
            &[
                "--connections",
                LOAD_CONNS,
                "--rate",
                LOAD_RATE,
                "--concurrency",
                "4",
            ],
        );
        assert!(status.success(), "load failed: {out}");
    });
    let b = &summary["balance"];
    eprintln!("nginx accept_mutex trace balance: {}", b["line"]);
    assert_eq!(summary["connections"], 300, "{summary}");
    assert_eq!(b["setup"], "taking_turns", "{b}");
    let line = b["line"].as_str().expect("line");
    assert!(!line.contains("EPOLLEXCLUSIVE"), "{line}");
    if b["verdict"] == "imbalanced" {
        assert_eq!(b["pattern"], "taking_turns", "{b}");
    }
}

#[test]
fn nginx_reuseport_is_fine() {
    let Some(_serial) = start() else {
        return;
    };
    let Some(server) = nginx("nginx-reuseport", " reuseport", "off") else {
        return;
    };
    let v = real_diagnose(&server);
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "reuseport");
    assert_eq!(ep["pattern"]["sockets"], 4);
    assert_eq!(v["fine"], true, "{v}");
    assert!(advice_text(ep).contains("listen ... reuseport;"));
    assert!(woken(&v) <= 1.2, "{v}");
    assert_no_imbalance(&v);
}

#[test]
fn nginx_accept_mutex_takes_turns() {
    let Some(_serial) = start() else {
        return;
    };
    let Some(server) = nginx("nginx-mutex", "", "on") else {
        return;
    };
    let v = real_diagnose(&server);
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "taking_turns", "{v}");
    assert_eq!(ep["pattern"]["workers"], 4);
    assert_eq!(ep["advice"]["fine"], true, "{v}");
    assert!(advice_text(ep).contains("accept_mutex on;"));
    assert!(woken(&v) <= 1.2, "{v}");
    // At this rate the mutex holder keeps taking the connections (measured:
    // 100%); if it does, the pattern is the mutex, not EPOLLEXCLUSIVE's LIFO.
    let b = &v["balance"];
    eprintln!("nginx accept_mutex balance: {}", b["line"]);
    if b["verdict"] == "imbalanced" {
        assert_eq!(b["pattern"], "taking_turns", "{b}");
        let a = advice_text_of(&v["balance_advice"]);
        assert!(a.contains("`accept_mutex off;`"), "{a}");
    }
}

#[test]
fn lighttpd_four_workers_is_a_herd_and_names_max_worker() {
    let Some(_serial) = start() else {
        return;
    };
    if !have("lighttpd") {
        skip("lighttpd is not installed (cargo xtask setup installs it)");
        return;
    }
    let dir = temp_dir("lighttpd");
    let port = free_port();
    let conf = dir.join("server.conf");
    std::fs::write(&conf, config("lighttpd.conf.in", &dir, port, "", "")).expect("conf");
    let c = conf.to_string_lossy().into_owned();
    let server = start_real("lighttpd", "lighttpd", &["-D", "-f", &c], port, dir);
    let v = real_diagnose(&server);
    assert_eq!(v["server"], "lighttpd");
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "epoll_per_worker");
    assert_eq!(ep["pattern"]["instances"], 4);
    assert_eq!(ep["pattern"]["exclusive"], 0);
    assert!(ep["description"]
        .as_str()
        .expect("d")
        .ends_with("no EPOLLEXCLUSIVE"));
    assert_eq!(v["fine"], false);
    let a = advice_text(ep);
    assert!(a.contains("server.max-worker"), "{a}");
    assert!(woken(&v) > 2.0, "{v}");
}

// The other servers diagnose recognises, each from Debian's package, with a
// config written to a temp dir and a free loopback port.

/// The knob (setting) the advice names first, and its source.
fn first_knob(advice: &Value) -> (String, String) {
    let k = &advice["knobs"][0];
    (
        k["setting"].as_str().unwrap_or_default().to_string(),
        k["source"].as_str().unwrap_or_default().to_string(),
    )
}

/// Asserts the recognised server, the pattern and the named knob; returns
/// the endpoint's advice.
fn assert_server(v: &Value, server: &str, pattern: &str, knob: &str) -> Value {
    assert_eq!(v["server"], server, "{v}");
    let ep = endpoint(v);
    assert_eq!(ep["pattern"]["kind"], pattern, "{v}");
    let (setting, source) = first_knob(&ep["advice"]);
    assert!(
        setting.contains(knob),
        "knob {setting:?}, want {knob:?}: {v}"
    );
    assert!(!source.is_empty(), "{v}");
    assert!(advice_text(ep).contains("source: "), "{}", advice_text(ep));
    ep["advice"].clone()
}

/// A measured herd of about 4 tasks per connection, and its cost.
fn assert_herd_of_four(v: &Value) {
    let w = woken(v);
    assert!((3.0..=4.5).contains(&w), "woken/conn {w}: {v}");
    assert!(v["cost"]["wasted_per_s"].as_f64().expect("wasted") > 0.0);
    assert_eq!(v["fine"], false);
}

const WSGI_APP: &str = "def application(environ, start_response):\n    \
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '3')])\n    \
    return [b'ok\\n']\napp = application\n";

fn apache(name: &str, extra: &str) -> Option<(RealServer, Value)> {
    apache_with(
        name,
        "event",
        "StartServers 4\nServerLimit 4\nThreadLimit 4\nThreadsPerChild 4\n\
         MaxRequestWorkers 16\nMinSpareThreads 4\nMaxSpareThreads 16\n",
        extra,
    )
}

/// httpd with MPM `mpm` and its process settings, on a free loopback port;
/// `extra` is appended to the config.
fn apache_with(name: &str, mpm: &str, processes: &str, extra: &str) -> Option<(RealServer, Value)> {
    if !need("apache2", "apache2") {
        return None;
    }
    let dir = temp_dir(name);
    let port = free_port();
    let d = dir.to_string_lossy().into_owned();
    let conf = format!(
        "ServerRoot {d}\nServerName localhost\nListen 127.0.0.1:{port}\n\
         LoadModule mpm_{mpm}_module /usr/lib/apache2/modules/mod_mpm_{mpm}.so\n\
         LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
         PidFile {d}/httpd.pid\nErrorLog {d}/error.log\nDocumentRoot {d}/www\n\
         Mutex file:{d} default\n{processes}{extra}"
    );
    let path = dir.join("httpd.conf");
    std::fs::write(&path, conf).expect("httpd.conf");
    let p = path.to_string_lossy().into_owned();
    let server = start_real("apache2", "apache2", &["-f", &p, "-DFOREGROUND"], port, dir);
    let v = real_diagnose(&server);
    Some((server, v))
}

#[test]
fn apache_httpd_event_herd_names_listen_cores_buckets_ratio() {
    let Some(_serial) = start() else {
        return;
    };
    let Some((_server, v)) = apache("apache", "") else {
        return;
    };
    let a = assert_server(
        &v,
        "apache_httpd",
        "epoll_per_worker",
        "ListenCoresBucketsRatio",
    );
    assert!(
        v["server_facts"][0]
            .as_str()
            .is_some_and(|f| f.starts_with("MPM event")),
        "{v}"
    );
    assert!(advice_text_of(&a).contains("mpm_event"), "{a}");
    assert_herd_of_four(&v);
}

const PREFORK_4: &str =
    "StartServers 4\nMinSpareServers 4\nMaxSpareServers 8\nServerLimit 4\nMaxRequestWorkers 4\n";

/// httpd prefork with one `Listen`: the children sleep in accept(), though
/// each keeps the socket in an epoll it never waits in. Read as a herd of 4
/// "not measured because the workers were busy" before.
#[test]
fn apache_httpd_prefork_with_one_listen_blocks_in_accept() {
    let Some(_serial) = start() else {
        return;
    };
    let Some((_server, v)) = apache_with("apache-prefork-1", "prefork", PREFORK_4, "") else {
        return;
    };
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "blocking_accept", "{v}");
    assert_eq!(ep["pattern"]["threads"], 4, "{v}");
    assert_eq!(ep["acceptors"], 4, "{v}");
    assert_eq!(ep["advice"]["fine"], true, "{v}");
    assert_eq!(v["fine"], true, "{v}");
    assert!(woken(&v) <= 1.2, "{v}");
}

/// httpd prefork with two `Listen`s: the children take turns at the accept
/// mutex (fcntl locks here), so /proc shows every child's epoll watching the
/// socket but one child waiting in it. Read as a herd-prone setup before.
#[test]
fn apache_httpd_prefork_with_two_listens_takes_turns_at_the_accept_mutex() {
    let Some(_serial) = start() else {
        return;
    };
    let other = free_port();
    let Some((_server, v)) = apache_with(
        "apache-prefork",
        "prefork",
        PREFORK_4,
        &format!("Listen 127.0.0.1:{other}\n"),
    ) else {
        return;
    };
    assert_eq!(v["server"], "apache_httpd", "{v}");
    let eps = v["endpoints"].as_array().expect("endpoints");
    assert_eq!(eps.len(), 2, "both addresses: {v}");
    for ep in eps {
        assert_eq!(ep["pattern"]["kind"], "taking_turns", "{v}");
        assert_eq!(ep["pattern"]["workers"], 4, "{v}");
        assert!(
            ep["pattern"]["locked"].as_u64().is_some_and(|n| n >= 2),
            "{v}"
        );
        assert_eq!(ep["advice"]["fine"], true, "{v}");
        assert_eq!(
            first_knob(&ep["advice"]).0,
            "Mutex MECHANISM mpm-accept",
            "{v}"
        );
    }
    assert_eq!(v["fine"], true, "{v}");
    assert!(woken(&v) <= 1.2, "{v}");
}

fn advice_text_of(a: &Value) -> String {
    format!("{} {}", a["headline"], a["items"])
}

#[test]
fn apache_httpd_buckets_split_the_herd() {
    let Some(_serial) = start() else {
        return;
    };
    // Two CPUs here: ratio 1 makes 2 buckets, so 2 of the 4 children wake.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Some((_server, v)) = apache("apache-buckets", "ListenCoresBucketsRatio 1\n") else {
        return;
    };
    assert_eq!(v["server"], "apache_httpd");
    let ep = endpoint(&v);
    if cpus >= 2 {
        assert_eq!(ep["pattern"]["kind"], "reuseport", "{v}");
        assert_eq!(ep["pattern"]["sockets"], cpus.min(4), "{v}");
        let w = woken(&v);
        assert!(w <= 4.0 / cpus.min(4) as f64 + 0.5, "woken/conn {w}: {v}");
    }
}

fn uwsgi(name: &str, extra: &[&str]) -> Option<(RealServer, Value)> {
    if !need("uwsgi", "uwsgi and uwsgi-plugin-python3") {
        return None;
    }
    let dir = temp_dir(name);
    let port = free_port();
    std::fs::write(dir.join("app.py"), WSGI_APP).expect("app.py");
    let app = dir.join("app.py").to_string_lossy().into_owned();
    let sock = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--plugin",
        "python3",
        "--http-socket",
        &sock,
        "--wsgi-file",
        &app,
        "--processes",
        "4",
        "--master",
        "--disable-logging",
        // SIGTERM reloads uWSGI unless told otherwise.
        "--die-on-term",
    ];
    args.extend_from_slice(extra);
    let server = start_real("uwsgi", "uwsgi", &args, port, dir);
    let v = real_diagnose(&server);
    Some((server, v))
}

#[test]
fn uwsgi_herd_names_thunder_lock_and_the_lock_ends_it() {
    let Some(_serial) = start() else {
        return;
    };
    let Some((server, v)) = uwsgi("uwsgi", &[]) else {
        return;
    };
    assert_server(&v, "uwsgi", "epoll_per_worker", "--thunder-lock");
    assert_herd_of_four(&v);
    drop(server);
    let Some((_server, v)) = uwsgi("uwsgi-lock", &["--thunder-lock"]) else {
        return;
    };
    // /proc shows every worker's epoll watching the socket, or (caught while
    // only the lock holder had it registered) the workers taking turns.
    let ep = endpoint(&v);
    assert!(
        ep["pattern"]["kind"] == "epoll_per_worker" || ep["pattern"]["kind"] == "taking_turns",
        "{v}"
    );
    assert_eq!(ep["advice"]["fine"], true, "{v}");
    assert!(advice_text(ep).contains("--thunder-lock"), "{v}");
    assert_eq!(
        first_knob(&ep["advice"]).0,
        "--thunder-lock (ini: thunder-lock = true)"
    );
    assert!(woken(&v) <= 1.2, "{v}");
}

#[test]
fn gunicorn_sync_workers_in_select_are_a_herd_and_name_reuse_port() {
    let Some(_serial) = start() else {
        return;
    };
    if !need("gunicorn", "gunicorn") {
        return;
    }
    let dir = temp_dir("gunicorn");
    let port = free_port();
    std::fs::write(dir.join("app.py"), WSGI_APP).expect("app.py");
    let bind = format!("127.0.0.1:{port}");
    let d = dir.to_string_lossy().into_owned();
    let args = ["--bind", &bind, "--workers", "4", "--chdir", &d, "app:app"];
    let server = start_real("gunicorn", "gunicorn", &args, port, dir);
    let v = real_diagnose(&server);
    assert_server(&v, "gunicorn", "select_per_worker", "--reuse-port");
    assert!(v["recognised_by"]
        .as_str()
        .expect("recognised_by")
        .contains("gunicorn"));
    assert!(
        v["server_facts"]
            .as_array()
            .expect("facts")
            .iter()
            .any(|f| f == "worker class sync"),
        "{v}"
    );
    assert_herd_of_four(&v);
}

const NODE_CLUSTER: &str = "const cluster = require('cluster');\n\
const http = require('http');\n\
const port = parseInt(process.argv[2], 10);\n\
if (cluster.isPrimary) {\n  for (let i = 0; i < 4; i++) cluster.fork();\n} else {\n  \
http.createServer((req, res) => { res.end('ok\\n'); }).listen(port, '127.0.0.1');\n}\n";

fn node_cluster(name: &str, policy: Option<&str>) -> Option<(RealServer, Value)> {
    if !need("node", "nodejs") {
        return None;
    }
    let dir = temp_dir(name);
    let port = free_port();
    std::fs::write(dir.join("cluster.js"), NODE_CLUSTER).expect("cluster.js");
    let js = dir.join("cluster.js").to_string_lossy().into_owned();
    let p = port.to_string();
    let env: Vec<(&str, &str)> = policy
        .map(|p| vec![("NODE_CLUSTER_SCHED_POLICY", p)])
        .unwrap_or_default();
    let server = start_real_with(
        "node",
        "node",
        &[&js, &p],
        &env,
        port,
        dir,
        Workers::Processes(4),
    );
    // The workers listen once they are up: wait for them to hold the socket.
    thread::sleep(Duration::from_millis(500));
    let v = real_diagnose(&server);
    Some((server, v))
}

#[test]
fn nodejs_cluster_round_robin_is_fine_and_sched_none_is_a_herd() {
    let Some(_serial) = start() else {
        return;
    };
    let Some((server, v)) = node_cluster("node-rr", None) else {
        return;
    };
    let a = assert_server(&v, "nodejs", "single_waiter", "SCHED_RR");
    assert_eq!(a["fine"], true, "{v}");
    assert!(advice_text_of(&a).contains("round-robin"), "{a}");
    // Only the primary accepts: one acceptor, no balance to judge.
    assert_eq!(v["balance"]["verdict"], "one_worker", "{v}");
    assert!(woken(&v) <= 1.2, "{v}");
    drop(server);
    let Some((_server, v)) = node_cluster("node-none", Some("none")) else {
        return;
    };
    assert_server(&v, "nodejs", "epoll_per_worker", "SCHED_RR");
    assert!(
        v["server_facts"]
            .as_array()
            .expect("facts")
            .iter()
            .any(|f| f == "NODE_CLUSTER_SCHED_POLICY=none"),
        "{v}"
    );
    assert_herd_of_four(&v);
}

fn haproxy(name: &str, bind_opts: &str) -> Option<(RealServer, Value)> {
    if !need("haproxy", "haproxy") {
        return None;
    }
    let dir = temp_dir(name);
    let port = free_port();
    let conf = format!(
        "global\n    nbthread 4\ndefaults\n    mode http\n    timeout connect 5s\n    \
         timeout client 5s\n    timeout server 5s\nfrontend fe\n    \
         bind 127.0.0.1:{port}{bind_opts}\n    \
         http-request return status 200 content-type text/plain string ok\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).expect("haproxy.cfg");
    let p = path.to_string_lossy().into_owned();
    let server = start_real_with(
        "haproxy",
        "haproxy",
        &["-f", &p, "-db"],
        &[],
        port,
        dir,
        Workers::Threads(4),
    );
    let v = real_diagnose(&server);
    Some((server, v))
}

#[test]
fn haproxy_threads_herd_names_shards_and_shards_end_it() {
    let Some(_serial) = start() else {
        return;
    };
    let Some((server, v)) = haproxy("haproxy", "") else {
        return;
    };
    assert_server(&v, "haproxy", "epoll_per_worker", "shards by-thread");
    assert_eq!(endpoint(&v)["pattern"]["threads"], true, "{v}");
    assert_herd_of_four(&v);
    drop(server);
    let Some((_server, v)) = haproxy("haproxy-shards", " shards by-thread") else {
        return;
    };
    let a = assert_server(&v, "haproxy", "reuseport", "shards by-thread");
    assert_eq!(a["fine"], true, "{v}");
    assert!(woken(&v) <= 1.2, "{v}");
}

/// `--pid` of one nginx worker instead of the master, as an operator who
/// picked a pid from `ps` would: the other three workers wait on the same
/// listener untraced. The trace names them and the master, and concludes
/// neither "no herd" (it saw one task of four) nor a balance; `diagnose`
/// of that worker diagnoses the master and its four workers.
#[test]
fn nginx_worker_pid_is_a_partial_trace_and_diagnose_takes_the_master() {
    let Some(_serial) = start() else {
        return;
    };
    let Some(server) = nginx("nginx-one-worker", "", "off") else {
        return;
    };
    let master = server.child.id() as i32;
    let workers = children_of(master);
    assert_eq!(workers.len(), 4, "{workers:?}");
    let addr = format!("127.0.0.1:{}", server.port);
    let summary = trace_summary(workers[0], 3, || {
        let (status, out) = run_load(&addr, &["--connections", "200", "--rate", "200"]);
        assert!(status.success(), "load failed: {out}");
    });
    let u = &summary["untraced"];
    let mut pids: Vec<i64> = u["tasks"]
        .as_array()
        .expect("untraced tasks")
        .iter()
        .map(|t| t["pid"].as_i64().expect("pid"))
        .collect();
    pids.sort_unstable();
    let others: Vec<i64> = workers[1..].iter().map(|&p| i64::from(p)).collect();
    assert_eq!(pids, others, "{u}");
    assert_eq!(u["trace_pid"], master, "{u}");
    assert_eq!(summary["connections"], 200, "{summary}");
    let verdict = summary["verdict"].as_str().expect("verdict");
    assert!(
        verdict.starts_with(&format!(
            "no verdict: 3 untraced tasks also wait on these listeners (trace --pid {master} for all)"
        )),
        "{verdict}"
    );
    assert_eq!(summary["balance"]["verdict"], "no_data", "{summary}");

    let v = diagnose(workers[0] as u32, server.port);
    assert_eq!(v["pid"], master, "{v}");
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["instances"], 4, "{ep}");
    assert_eq!(v["balance"]["workers"], 4, "{v}");
}
