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
    let mut child = Command::new(bin())
        .args([
            "diagnose",
            "--pid",
            &pid.to_string(),
            "--duration",
            DURATION,
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herdtrace diagnose");
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
    }
    let out = wait_output(child, Duration::from_secs(60));
    let stderr = reader.join().expect("stderr reader");
    assert!(attached, "the tracer never attached; stderr:\n{stderr}");
    assert!(out.0, "diagnose failed; stderr:\n{stderr}");
    let text = String::from_utf8_lossy(&out.1);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}\nstderr:\n{stderr}"));
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
fn builtin_exclusive_is_fine() {
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
    assert_eq!(v["fine"], true, "{v}");
    assert!(woken(&v) <= 1.2, "{v}");
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
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
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

/// Starts `program args` and waits until it listens on `port` with 4 workers.
fn start_real(name: &str, program: &str, args: &[&str], port: u16, dir: PathBuf) -> RealServer {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let server = RealServer { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if listening && children_of(server.child.id() as i32).len() >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {port} with 4 workers; error log: {}",
            std::fs::read_to_string(server.dir.join("error.log")).unwrap_or_default()
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
    let ep = endpoint(&v);
    assert_eq!(ep["pattern"]["kind"], "epoll_per_worker");
    assert_eq!(ep["pattern"]["instances"], 4);
    assert_eq!(ep["pattern"]["exclusive"], 4);
    assert_eq!(v["fine"], true, "{v}");
    assert!(
        advice_text(ep).contains("nginx's default"),
        "{}",
        advice_text(ep)
    );
    assert!(woken(&v) <= 1.2, "{v}");
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
    assert_eq!(v["fine"], true, "{v}");
    assert!(advice_text(ep).contains("accept_mutex on;"));
    assert!(woken(&v) <= 1.2, "{v}");
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
