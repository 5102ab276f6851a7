//! The tracer on the real host kernel (tracepoint backend) against the
//! built-in server: the scenarios of `herdtrace::scenario`, which the QEMU
//! runner also uses for the kprobe and fentry backends.
//!
//! Needs root and BPF: outside CI these tests skip (printing why) when not
//! root; under CI=true they must run.
use std::{path::Path, sync::Mutex};

use herdtrace::scenario;

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
