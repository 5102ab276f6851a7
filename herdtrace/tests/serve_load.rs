//! `herdtrace serve` and `herdtrace load` against each other: every model
//! serves every connection, counts it once, and stops cleanly. No root, no BPF.
mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{children_of, pid_exists, run_load, ServerExit, TestServer};

const CONNECTIONS: u64 = 1000;
const WORKERS: usize = 4;

/// Serves CONNECTIONS through `serve <args>` and checks the load report, the
/// stats, the worker processes and the shutdown.
fn check_model(args: &[&str], threads: bool) {
    let mut full = vec!["--workers", "4"];
    full.extend_from_slice(args);
    let server = TestServer::start(&full);
    assert_eq!(server.listening.workers, WORKERS);
    assert_eq!(server.listening.pid, server.pid());
    let children = server.children();
    if threads {
        assert!(children.is_empty(), "thread model forked {children:?}");
    } else {
        assert_eq!(children.len(), WORKERS, "forked workers: {children:?}");
    }

    let (status, report) = run_load(&server.addr(), &["--connections", "1000"]);
    assert_eq!(report["connections"], CONNECTIONS, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(status.success(), "load failed: {report}");
    // Closed loop: no schedule, latency from the actual start.
    assert_eq!(report["latency_from"], "started", "{report}");
    assert_eq!(
        report["total_us"], report["total_from_start_us"],
        "{report}"
    );
    assert!(report["start_lag_us"]["max"].is_null(), "{report}");

    let pid = server.pid();
    let exit = server.stop();
    assert!(
        exit.status.success(),
        "server exit {:?}; stderr: {}",
        exit.status,
        exit.stderr
    );
    check_stats(&exit, CONNECTIONS);
    if threads {
        assert!(
            exit.workers.iter().all(|w| w.pid == pid),
            "{:?}",
            exit.workers
        );
        let tids: BTreeSet<i32> = exit.workers.iter().map(|w| w.tid).collect();
        assert_eq!(
            tids.len(),
            WORKERS,
            "distinct thread ids: {:?}",
            exit.workers
        );
        assert!(!tids.contains(&pid), "workers are not the main thread");
    } else {
        let mut pids: Vec<i32> = exit.workers.iter().map(|w| w.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, children, "stats pids are the forked children");
        assert!(exit.workers.iter().all(|w| w.tid == w.pid));
    }
    // The server reaped its workers before exiting: not even zombies remain.
    for w in &exit.workers {
        if w.pid != pid {
            assert!(!pid_exists(w.pid), "worker {} survived", w.pid);
        }
    }
    assert!(children_of(pid).is_empty());
}

/// One line per worker in index order, and a total that is their sum.
fn check_stats(exit: &ServerExit, accepts: u64) {
    let idx: Vec<usize> = exit.workers.iter().map(|w| w.idx).collect();
    assert_eq!(
        idx,
        (0..WORKERS).collect::<Vec<_>>(),
        "worker lines: {:?}",
        exit.workers
    );
    let total = exit.total.expect("stats total line");
    assert_eq!(total.accepts, accepts, "{:?}", exit.workers);
    assert_eq!(
        total.accepts,
        exit.workers.iter().map(|w| w.accepts).sum::<u64>()
    );
    assert_eq!(
        total.eagain,
        exit.workers.iter().map(|w| w.eagain).sum::<u64>()
    );
    assert_eq!(
        total.empty_waits,
        exit.workers.iter().map(|w| w.empty_waits).sum::<u64>()
    );
    assert!(
        exit.other_lines.is_empty(),
        "unexpected output {:?}",
        exit.other_lines
    );
}

#[test]
fn epoll_per_worker_processes() {
    check_model(&["--model", "epoll-per-worker"], false);
}

#[test]
fn epoll_per_worker_threads() {
    check_model(&["--model", "epoll-per-worker", "--threads"], true);
}

#[test]
fn epoll_per_worker_edge_triggered() {
    check_model(&["--model", "epoll-per-worker", "--edge-triggered"], false);
}

#[test]
fn epoll_per_worker_accept_batch() {
    check_model(
        &["--model", "epoll-per-worker", "--accept-batch", "8"],
        false,
    );
}

#[test]
fn shared_epoll() {
    check_model(&["--model", "shared-epoll"], true);
}

#[test]
fn shared_epoll_edge_triggered() {
    check_model(&["--model", "shared-epoll", "--edge-triggered"], true);
}

#[test]
fn shared_epoll_accept_batch() {
    check_model(&["--model", "shared-epoll", "--accept-batch", "8"], true);
}

#[test]
fn exclusive_processes() {
    check_model(&["--model", "exclusive"], false);
}

#[test]
fn exclusive_threads_edge_triggered() {
    check_model(
        &["--model", "exclusive", "--threads", "--edge-triggered"],
        true,
    );
}

#[test]
fn exclusive_accept_batch() {
    check_model(&["--model", "exclusive", "--accept-batch", "8"], false);
}

#[test]
fn reuseport_processes() {
    check_model(&["--model", "reuseport"], false);
}

#[test]
fn reuseport_threads_edge_triggered() {
    check_model(
        &["--model", "reuseport", "--threads", "--edge-triggered"],
        true,
    );
}

#[test]
fn blocking_accept_processes() {
    check_model(&["--model", "blocking-accept"], false);
}

#[test]
fn blocking_accept_threads() {
    check_model(&["--model", "blocking-accept", "--threads"], true);
}

/// Whether this kernel lets us make an io_uring. Where it refuses (ENOSYS,
/// or EPERM: kernel.io_uring_disabled, a container's seccomp filter) the
/// io-uring tests are skipped, unless CI=true.
fn io_uring_available() -> bool {
    // struct io_uring_params: 120 bytes, filled in by the kernel.
    let mut params = [0u64; 15];
    // SAFETY: params is a writable buffer of the kernel's struct size.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: closes the ring fd just made.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    let e = std::io::Error::last_os_error();
    let refused = matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM));
    if !refused || std::env::var("CI").as_deref() == Ok("true") {
        panic!("io_uring_setup: {e}");
    }
    eprintln!("skipped: io_uring_setup: {e}");
    false
}

#[test]
fn io_uring_processes() {
    if io_uring_available() {
        check_model(&["--model", "io-uring"], false);
    }
}

#[test]
fn io_uring_threads() {
    if io_uring_available() {
        check_model(&["--model", "io-uring", "--threads"], true);
    }
}

#[test]
fn tokio_runtime() {
    check_model(&["--model", "tokio"], true);
}

#[test]
fn tokio_reuseport() {
    check_model(&["--model", "tokio-reuseport"], true);
}

/// The tokio models honour --work-us: each request keeps a worker busy.
#[test]
fn tokio_work_is_done_per_request() {
    let server = TestServer::start(&["--model", "tokio", "--workers", "2", "--work-us", "20000"]);
    let started = Instant::now();
    let (status, report) = run_load(
        &server.addr(),
        &["--connections", "10", "--concurrency", "1"],
    );
    assert!(status.success(), "{report}");
    assert_eq!(report["connections"], 10, "{report}");
    // One at a time, 20 ms of work each.
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    let exit = server.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert_eq!(exit.total.expect("total").accepts, 10);
}

#[test]
fn first_line_is_exact_and_flushed_to_a_pipe() {
    let server = TestServer::start(&["--model", "exclusive", "--workers", "3"]);
    let want = format!(
        "listening on 127.0.0.1:{} pid {} model exclusive workers 3",
        server.port(),
        server.pid()
    );
    assert_eq!(server.first_line, want);
    let exit = server.stop();
    assert!(exit.status.success());
    assert_eq!(exit.workers.len(), 3);
    assert_eq!(exit.total.expect("total").accepts, 0);
}

#[test]
fn sigint_and_sighup_stop_processes_and_threads() {
    for (sig, threads) in [
        (libc::SIGINT, false),
        (libc::SIGINT, true),
        (libc::SIGHUP, false),
        (libc::SIGHUP, true),
    ] {
        let mut args = vec!["--model", "epoll-per-worker", "--workers", "2"];
        if threads {
            args.push("--threads");
        }
        let server = TestServer::start(&args);
        let children = server.children();
        let (_, report) = run_load(&server.addr(), &["--connections", "20"]);
        assert_eq!(report["connections"], 20, "{report}");
        let exit = server.stop_with(sig);
        assert!(
            exit.status.success(),
            "signal {sig}: {:?} {}",
            exit.status,
            exit.stderr
        );
        assert_eq!(exit.total.expect("total").accepts, 20);
        assert!(
            children.iter().all(|&p| !pid_exists(p)),
            "signal {sig}: workers survived"
        );
    }
}

#[test]
fn ctrl_c_to_the_process_group_is_a_clean_stop() {
    for model in ["exclusive", "shared-epoll", "tokio", "tokio-reuseport"] {
        let server = TestServer::start(&["--model", model, "--workers", "3"]);
        let children = server.children();
        let (_, report) = run_load(&server.addr(), &["--connections", "30"]);
        assert_eq!(report["connections"], 30, "{report}");
        server.signal_group(libc::SIGINT);
        let exit = server.wait();
        assert!(
            exit.status.success(),
            "{model}: {:?} {}",
            exit.status,
            exit.stderr
        );
        assert!(exit.stderr.is_empty(), "{model}: {}", exit.stderr);
        assert_eq!(exit.workers.len(), 3);
        assert_eq!(exit.total.expect("total").accepts, 30);
        assert!(children.iter().all(|&p| !pid_exists(p)));
    }
}

#[test]
fn a_worker_stopped_by_a_signal_stops_the_whole_server() {
    let server = TestServer::start(&["--model", "epoll-per-worker", "--workers", "3"]);
    let children = server.children();
    assert_eq!(children.len(), 3);
    // SAFETY: signals one of the server's workers.
    unsafe { libc::kill(children[1], libc::SIGTERM) };
    let exit = server.wait();
    assert!(exit.status.success(), "{:?} {}", exit.status, exit.stderr);
    assert_eq!(exit.workers.len(), 3);
    assert!(children.iter().all(|&p| !pid_exists(p)));
}

#[test]
fn a_crashed_worker_fails_the_server() {
    let server = TestServer::start(&["--model", "reuseport", "--workers", "2"]);
    let children = server.children();
    assert_eq!(children.len(), 2);
    // SAFETY: kills one of the server's workers.
    unsafe { libc::kill(children[0], libc::SIGKILL) };
    let exit = server.wait();
    assert_eq!(exit.status.code(), Some(1), "{}", exit.stderr);
    common::assert_contains(&exit.stderr, "killed by signal 9");
    assert_eq!(exit.workers.len(), 2, "stats are printed anyway");
    assert!(children.iter().all(|&p| !pid_exists(p)));
}

#[test]
fn fixed_port() {
    // A port that was free a moment ago; SO_REUSEADDR lets the server take it.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let p = port.to_string();
    let server = TestServer::start(&["--model", "reuseport", "--workers", "2", "--port", &p]);
    assert_eq!(server.port(), port);
    let (status, report) = run_load(&format!("127.0.0.1:{port}"), &["--connections", "50"]);
    assert!(status.success(), "{report}");
    let exit = server.stop();
    assert_eq!(exit.total.expect("total").accepts, 50);
}

#[test]
fn port_in_use_is_one_clear_error() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port().to_string();
    let out = Command::new(common::server::bin())
        .args(["serve", "--port", &port])
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("listen on 127.0.0.1:{port}")) && err.contains("in use"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_arguments_are_usage_errors() {
    for args in [
        &["serve", "--workers", "0"][..],
        &["serve", "--model", "bogus"],
        &["load", "--addr", "nonsense"],
        &["load", "--addr", "127.0.0.1:80", "--concurrency", "0"],
    ] {
        let out = Command::new(common::server::bin())
            .args(args)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    let out = Command::new(common::server::bin())
        .args(["serve", "--model", "blocking-accept", "--edge-triggered"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("epoll model"));
}

#[test]
fn workers_die_with_a_sigkilled_parent() {
    let server = TestServer::start(&["--model", "blocking-accept", "--workers", "3"]);
    let children = server.children();
    assert_eq!(children.len(), 3);
    server.kill_parent();
    // PR_SET_PDEATHSIG kills them; init reaps them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while children.iter().any(|&p| pid_exists(p)) {
        assert!(
            Instant::now() < deadline,
            "orphaned workers survive: {children:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn empty_waits_are_counted_with_a_wait_timeout() {
    let server = TestServer::start(&[
        "--model",
        "exclusive",
        "--workers",
        "2",
        "--wait-timeout-ms",
        "5",
    ]);
    std::thread::sleep(Duration::from_millis(200));
    let exit = server.stop();
    assert!(exit.status.success());
    let total = exit.total.expect("total");
    assert!(total.empty_waits > 0, "{total:?}");
    assert!(
        exit.workers.iter().all(|w| w.empty_waits > 0),
        "{:?}",
        exit.workers
    );
    assert_eq!(total.accepts, 0);
}

#[test]
fn load_counts_refused_connections_and_fails() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let (status, report) = run_load(&format!("127.0.0.1:{port}"), &["--connections", "40"]);
    assert!(!status.success());
    assert_eq!(report["connections"], 0, "{report}");
    assert_eq!(report["errors"], 40, "{report}");
    assert_eq!(report["errors_by_kind"]["connect_refused"], 40, "{report}");
    assert!(report["total_us"]["p50"].is_null());
}

#[test]
fn load_times_out_on_a_server_that_never_answers() {
    // Connections complete in the backlog but are never accepted.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let (status, report) = run_load(&addr, &["--connections", "5", "--timeout-ms", "200"]);
    assert!(!status.success());
    assert_eq!(report["errors_by_kind"]["timeout"], 5, "{report}");
    assert_eq!(
        report["connect_us"]["max"].as_u64().map(|v| v < 200_000),
        Some(true),
        "{report}"
    );
    drop(l);
}

#[test]
fn load_counts_connect_timeouts_when_the_accept_queue_is_full() {
    // listen(fd, 0) queues one connection; SYNs beyond it are dropped, so
    // those connects never complete.
    let l = herdtrace::serve::sys::listener(0, 0, false, false, false).expect("listen");
    let port =
        herdtrace::serve::sys::local_port(std::os::fd::AsRawFd::as_raw_fd(&l)).expect("port");
    let (status, report) = run_load(
        &format!("127.0.0.1:{port}"),
        &[
            "--connections",
            "8",
            "--concurrency",
            "8",
            "--timeout-ms",
            "300",
        ],
    );
    assert!(!status.success());
    let by_kind = &report["errors_by_kind"];
    assert!(by_kind["connect_timeout"].as_u64() >= Some(1), "{report}");
    assert_eq!(report["errors"], 8, "{report}");
    assert_eq!(
        by_kind["connect_timeout"]
            .as_u64()
            .zip(by_kind["timeout"].as_u64())
            .map(|(a, b)| a + b),
        Some(8),
        "{report}"
    );
    drop(l);
}

#[test]
fn load_reports_short_responses() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    // Reads the request and closes without answering, or answers half a header.
    let t = std::thread::spawn(move || {
        for i in 0..6 {
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            if i % 2 == 1 {
                let _ = std::io::Write::write_all(&mut s, b"HTTP/1.0 200 OK\r\nConte");
            }
        }
    });
    let (status, report) = run_load(&addr, &["--connections", "6", "--concurrency", "1"]);
    t.join().expect("fake server");
    assert!(!status.success());
    assert_eq!(report["errors_by_kind"]["short_response"], 6, "{report}");
    assert_eq!(report["errors"], 6);
}

#[test]
fn load_rate_spreads_connections_over_time() {
    let server = TestServer::start(&["--model", "reuseport", "--workers", "2"]);
    let (status, report) = run_load(&server.addr(), &["--connections", "100", "--rate", "200"]);
    assert!(status.success(), "{report}");
    // Connection 99 cannot start before 99/200 s: a lower bound, immune to a slow machine.
    let elapsed = report["elapsed_s"].as_f64().expect("elapsed_s");
    assert!(elapsed >= 0.495, "{report}");
    assert_eq!(report["latency_from"], "scheduled", "{report}");
    assert_eq!(report["requested_rate_per_s"], 200.0, "{report}");
    assert!(report["start_lag_us"]["max"].is_u64(), "{report}");
    assert_eq!(server.stop().total.expect("total").accepts, 100);
}

#[test]
fn load_human_output() {
    let server = TestServer::start(&["--model", "shared-epoll", "--workers", "2"]);
    let out = Command::new(common::server::bin())
        .args([
            "load",
            "--addr",
            &server.addr(),
            "--connections",
            "30",
            "--request",
            "/hello",
        ])
        .output()
        .expect("run load");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("connections  30 ok, 0 failed of 30"),
        "{text}"
    );
    assert!(
        text.contains("\nconnect µs   p50 ") && text.contains("\ntotal µs     p50 "),
        "{text}"
    );
    assert!(
        text.ends_with("\nlatency      from each connection's actual start (no --rate: closed loop, no schedule)\n"),
        "{text}"
    );
    // stderr is not a terminal here: no progress line.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.stop().total.expect("total").accepts, 30);
}

/// A one-thread HTTP server on a free port that answers `total` connections
/// in order and, after the first `stall_after`, stops accepting for `stall`.
fn stalling_server(
    total: usize,
    stall_after: usize,
    stall: Duration,
) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let t = std::thread::spawn(move || {
        for i in 0..total {
            if i == stall_after {
                std::thread::sleep(stall);
            }
            let (mut s, _) = l.accept().expect("accept");
            // Read the whole request: closing with unread bytes would reset.
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ =
                std::io::Write::write_all(&mut s, b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (addr, t)
}

/// Coordinated omission: a server that stalls 300 ms while one connection is
/// in flight. With one slot, the connections due during the stall start late;
/// measured from their actual start they look fast, and only the one in
/// flight shows the stall. `--rate` measures from the scheduled start, so the
/// stall shows in p99.
#[test]
fn load_rate_latency_includes_a_server_stall() {
    const N: usize = 200;
    const STALL_AFTER: usize = 20;
    let stall = Duration::from_millis(300);
    let (addr, server) = stalling_server(N, STALL_AFTER, stall);
    let (status, report) = run_load(
        &addr,
        &[
            "--connections",
            &N.to_string(),
            "--rate",
            "200",
            "--concurrency",
            "1",
        ],
    );
    assert!(status.success(), "{report}");
    assert_eq!(report["connections"], N as u64, "{report}");
    server.join().expect("stalling server");
    assert_eq!(report["latency_from"], "scheduled", "{report}");
    let us = |field: &str, q: &str| {
        report[field][q]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}.{q}: {report}"))
    };
    // Lower bounds, immune to a slow machine. Connection k is due at k*5 ms;
    // the server finished connection 19 no earlier than its due time, 95 ms,
    // so every k >= 20 ends at >= 395 ms: latency_k >= 395 - 5k ms, i.e.
    // 295, 290 and 285 ms for k = 20..22. p99 of 200 is the 3rd largest.
    assert!(us("total_us", "max") >= 295_000, "{report}");
    assert!(us("total_us", "p99") >= 285_000, "{report}");
    // Connection 21 (due at 105 ms) could not start before 20 ended.
    assert!(us("start_lag_us", "max") >= 290_000, "{report}");
    // From the actual start, only the one connection in flight waited: p99
    // (the 3rd largest) is an ordinary connection, far below the stall.
    assert!(us("total_from_start_us", "p99") < 150_000, "{report}");
}
