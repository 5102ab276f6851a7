//! The tracer on the real host kernel (tracepoint backend) against the
//! built-in server: the scenarios of `herdtrace::scenario`, which the QEMU
//! runner also uses for the kprobe and fentry backends.
//!
//! Needs root and BPF: outside CI these tests skip (printing why) when not
//! root; under CI=true they must run.
use std::{path::Path, sync::Mutex};

use herdtrace::{
    scenario,
    serve::lines::{ListeningLine, StatsLine},
};

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
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sc = scenario::find(name).expect("known scenario");
    let exe = Path::new(env!("CARGO_BIN_EXE_herdtrace"));
    let outcome = scenario::run(exe, "tracepoint", &sc).expect("scenario ran");
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

/// The tracer is attached to a process before it forks its workers (an
/// nginx master starting or reloading): the workers are followed through
/// `sched_process_fork`, and their herd is measured like any other.
#[test]
fn follows_workers_forked_after_attach() {
    use std::{
        collections::BTreeMap,
        io::{BufRead, BufReader, Read, Write},
        process::{Command, Stdio},
        sync::mpsc,
        thread,
        time::Duration,
    };
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let exe = env!("CARGO_BIN_EXE_herdtrace");
    // A shell that waits for a line, then becomes the server (same pid).
    let mut server = Command::new("sh")
        .args([
            "-c",
            &format!("read go; exec {exe} serve --model epoll-per-worker --workers 4 --stats"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let pid = server.id();
    let mut tracer = Command::new(exe)
        .args([
            "--pid",
            &pid.to_string(),
            "--json",
            "--backend",
            "tracepoint",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tracer");
    let mut tracer_out = tracer.stdout.take().expect("stdout");
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = tracer_out.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    let err = tracer.stderr.take().expect("stderr");
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("herdtrace: tracing ") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("tracer attached");

    // Now the server starts and forks its workers.
    writeln!(server.stdin.as_mut().expect("stdin"), "go").expect("write");
    let mut server_out = BufReader::new(server.stdout.take().expect("stdout"));
    let mut first = String::new();
    server_out.read_line(&mut first).expect("first line");
    let port = ListeningLine::parse(first.trim_end())
        .unwrap_or_else(|| panic!("listening line: {first:?}"))
        .port;
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
    // SAFETY: signals to our own children.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    assert!(tracer.wait().expect("tracer exit").success());
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let mut stats = BTreeMap::new();
    for line in server_out.lines().map_while(Result::ok) {
        if let Some(StatsLine::Worker(w)) = StatsLine::parse(&line) {
            stats.insert(w.tid as u32, w.accepts);
        }
    }
    let _ = server.wait();
    let ndjson = out_reader.join().expect("tracer output");

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
