//! Servers in containers: network namespaces and cgroups (issue #14). A
//! traced server listens in its own network namespace while another server
//! listens on the same address and port in the host's; both are loaded at
//! once. The tracer must count the traced server's connections exactly and
//! nothing of the other, whether it is named by `--pid`, by `--cgroup`
//! (started after tracing began), for IPv6, and for Debian's lighttpd.
//!
//! Needs root (network namespaces, cgroups, BPF): skipped with a printed
//! reason otherwise, except under CI=true, where it must run.
mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::bpf::BpfIds;
use common::server::{run_load_via, ServerExit, TestServer};
use common::tracer::{json_lines, summary_of, Tracer};
use serde_json::Value;

/// One scenario at a time: each loads the 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn skip(reason: &str) -> bool {
    assert!(!in_ci(), "CI=true, so this must run, but: {reason}");
    eprintln!("skipped: {reason}");
    false
}

fn can_run() -> bool {
    if let Some(p) = herdtrace::kernel::privilege_problem() {
        return skip(&p);
    }
    let ip = Command::new("ip").arg("-V").stdout(Stdio::null()).status();
    if !ip.is_ok_and(|s| s.success()) {
        return skip("no `ip` command (iproute2)");
    }
    true
}

/// A network namespace with its loopback up, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("herdtrace-{tag}-{}", std::process::id());
        // A namespace left by an interrupted run of this test (same pid).
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("ip");
            assert!(st.success(), "ip {args:?}");
        };
        ok(&["netns", "add", &name]);
        ok(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// The command prefix that runs a program inside the namespace.
    fn prefix(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", self.name.as_str()]
    }

    /// Inode of the namespace (what the tracer reports as `netns`).
    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .expect("netns file")
            .ino()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A cgroup v2 directory under the machine's cgroup2 mount, removed on drop.
struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    fn new(tag: &str) -> Option<Cgroup> {
        let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
        let mount = herdtrace::cgroup::cgroup2_mounts(&mounts)
            .into_iter()
            .next()?;
        let dir = mount.join(format!("herdtrace-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).expect("mkdir cgroup");
        Some(Cgroup { dir })
    }

    fn path(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The servers are stopped first; a cgroup with processes cannot go.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Loads both servers at once: `traced` connections into the namespace,
/// `other` into the host's server, each at a rate that leaves workers idle.
fn load_both(ns: &Netns, addr: &str, traced: u32, other: u32) -> (Value, Value) {
    let prefix = ns.prefix();
    let (a, b) = thread::scope(|s| {
        let inside = s.spawn(|| {
            run_load_via(
                &prefix,
                addr,
                &["--connections", &traced.to_string(), "--rate", "100"],
            )
        });
        let outside = s.spawn(|| {
            run_load_via(
                &[],
                addr,
                &["--connections", &other.to_string(), "--rate", "100"],
            )
        });
        (
            inside.join().expect("load thread"),
            outside.join().expect("load thread"),
        )
    });
    assert!(a.0.success() && b.0.success(), "{a:?} {b:?}");
    (a.1, b.1)
}

/// Ends the tracer (Ctrl-C) and returns its NDJSON summary and conn lines.
fn end_trace(t: Tracer) -> (Value, Vec<Value>, String) {
    thread::sleep(Duration::from_millis(1500)); // let the last episodes close
    t.signal(libc::SIGINT);
    let end = t.wait();
    assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
    let conns = json_lines(&end.stdout)
        .into_iter()
        .filter(|v| v["type"] == "conn")
        .collect();
    (summary_of(&end.stdout), conns, end.stderr)
}

/// The traced server's figures and nothing of the other one.
fn assert_only_the_traced_server(
    summary: &Value,
    conns: &[Value],
    load: &Value,
    server: &ServerExit,
    netns: u64,
    stderr: &str,
) {
    let want = load["connections"].as_u64().expect("load connections");
    let accepted: u64 = server.workers.iter().map(|w| w.accepts).sum();
    assert_eq!(accepted, want, "the server's own count");
    assert_eq!(summary["connections"], want, "{summary}\n{stderr}");
    assert_eq!(summary["unaccepted"], 0, "{summary}");
    assert_eq!(summary["lost_events"], 0, "{summary}");
    assert_eq!(conns.len() as u64, want);
    for c in conns {
        assert_eq!(c["netns"], netns, "a connection of another namespace: {c}");
    }
    let mean = summary["woken_per_conn"]["mean"].as_f64().expect("mean");
    assert!(mean >= 3.5, "4 idle workers, one epoll each: woken {mean}");
    // Per task: the server's own counts, and no other task.
    let tasks = summary["tasks"].as_array().expect("tasks");
    for t in tasks.iter().filter(|t| t["accepts"].as_u64() > Some(0)) {
        let tid = t["tid"].as_i64().expect("tid");
        let w = server
            .workers
            .iter()
            .find(|w| i64::from(w.tid) == tid)
            .unwrap_or_else(|| panic!("accepts by a task not of the traced server: {t}"));
        assert_eq!(t["accepts"], w.accepts, "task {tid}");
    }
}

#[test]
fn a_server_in_a_namespace_traced_by_pid_beside_one_on_the_same_port() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Netns::new("pid");
    let port = free_port().to_string();
    let args = [
        "--model",
        "epoll-per-worker",
        "--workers",
        "4",
        "--port",
        &port,
    ];
    let traced = TestServer::start_via(&ns.prefix(), &args);
    let other = TestServer::start(&args);
    let mut t = Tracer::spawn(&["--pid", &traced.pid().to_string(), "--json"], &[], false);
    t.wait_attached();
    let listener = format!(
        "herdtrace: listeners: 127.0.0.1:{port} (netns {})",
        ns.inode()
    );
    assert!(t.stderr_text().contains(&listener), "{}", t.stderr_text());
    let (load, _) = load_both(&ns, &traced.addr(), 300, 200);
    let (summary, conns, stderr) = end_trace(t);
    let exit = traced.stop();
    drop(other);
    assert_only_the_traced_server(&summary, &conns, &load, &exit, ns.inode(), &stderr);
    assert_eq!(
        summary["listeners"],
        serde_json::json!([format!("127.0.0.1:{port} (netns {})", ns.inode())])
    );
}

#[test]
fn a_container_traced_by_cgroup_with_the_server_started_after_tracing_began() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cg) = Cgroup::new("cg") else {
        skip("no cgroup2 file system mounted");
        return;
    };
    let ns = Netns::new("cg");
    let mut t = Tracer::spawn(&["--cgroup", cg.path(), "--json"], &[], false);
    t.wait_attached();
    let stderr = t.stderr_text();
    assert!(
        stderr.contains("the traced tasks hold no TCP listening socket yet; watching for listen()"),
        "{stderr}"
    );
    assert!(
        stderr.contains("tracing 0 tasks in 0 processes (cgroup /"),
        "{stderr}"
    );
    // Into the cgroup first, then into the namespace, then the server.
    let port = free_port().to_string();
    let enter = format!("echo $$ > {}/cgroup.procs && exec \"$@\"", cg.path());
    let mut prefix = vec!["sh", "-c", enter.as_str(), "sh"];
    prefix.extend(ns.prefix());
    let args = [
        "--model",
        "epoll-per-worker",
        "--workers",
        "4",
        "--port",
        &port,
    ];
    let traced = TestServer::start_via(&prefix, &args);
    let other = TestServer::start(&args);
    t.wait_for("herdtrace: new listener: ", Duration::from_secs(10));
    // Its workers are followed too (forked before the rescan found them).
    thread::sleep(Duration::from_millis(700));
    let (load, _) = load_both(&ns, &traced.addr(), 300, 200);
    let (summary, conns, stderr) = end_trace(t);
    let exit = traced.stop();
    drop(other);
    assert_only_the_traced_server(&summary, &conns, &load, &exit, ns.inode(), &stderr);
    let scope = summary["scope"].as_str().expect("scope");
    assert!(scope.starts_with("cgroup /herdtrace-cg-"), "{scope}");
}

#[test]
fn ipv6_listeners_are_told_apart_the_same_way() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        skip("no IPv6 loopback on this machine");
        return;
    }
    let ns = Netns::new("v6");
    let port = {
        let l = std::net::TcpListener::bind("[::1]:0").expect("bind");
        l.local_addr().expect("addr").port().to_string()
    };
    let args = [
        "--model",
        "epoll-per-worker",
        "--workers",
        "4",
        "--ipv6",
        "--port",
        &port,
    ];
    let traced = TestServer::start_via(&ns.prefix(), &args);
    let other = TestServer::start(&args);
    assert_eq!(traced.addr(), format!("[::1]:{port}"));
    let mut t = Tracer::spawn(&["--pid", &traced.pid().to_string(), "--json"], &[], false);
    t.wait_attached();
    assert!(
        t.stderr_text()
            .contains(&format!("listeners: [::1]:{port} (netns {})", ns.inode())),
        "{}",
        t.stderr_text()
    );
    let (load, _) = load_both(&ns, &traced.addr(), 200, 100);
    let (summary, conns, stderr) = end_trace(t);
    let exit = traced.stop();
    drop(other);
    assert_only_the_traced_server(&summary, &conns, &load, &exit, ns.inode(), &stderr);
    for c in &conns {
        let peer = c["peer"].as_str().expect("peer");
        assert!(peer.starts_with("[::1]:"), "{peer}");
    }
}

/// Debian's lighttpd, 4 workers, in a namespace; the built-in server on the
/// same address and port in the host's.
#[test]
fn lighttpd_in_a_namespace_beside_a_server_on_the_same_port() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if Command::new("lighttpd")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        skip("lighttpd is not installed (cargo xtask setup installs it)");
        return;
    }
    let ns = Netns::new("lh");
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("herdtrace-lh-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("www")).expect("mkdir");
    std::fs::write(dir.join("www/index.html"), "ok\n").expect("index");
    let conf = dir.join("lighttpd.conf");
    std::fs::write(&conf, lighttpd_config(&dir, port)).expect("conf");
    let mut lighttpd = Command::new("ip")
        .args(["netns", "exec", ns.name.as_str(), "lighttpd", "-D", "-f"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // lighttpd stops by signalling its whole process group: not ours.
        .process_group(0)
        .spawn()
        .expect("start lighttpd");
    let guard = KillOnDrop(&mut lighttpd);
    let master = guard.0.id() as i32;
    let other = TestServer::start(&["--workers", "4", "--port", &port.to_string()]);
    wait_for_workers(master, 4);
    let mut t = Tracer::spawn(&["--pid", &master.to_string(), "--json"], &[], false);
    t.wait_attached();
    let (load, _) = load_both(&ns, &format!("127.0.0.1:{port}"), 300, 200);
    let (summary, conns, stderr) = end_trace(t);
    drop(guard);
    drop(other);
    let _ = std::fs::remove_dir_all(&dir);
    let want = load["connections"].as_u64().expect("connections");
    assert_eq!(want, 300);
    assert_eq!(summary["connections"], want, "{summary}\n{stderr}");
    assert_eq!(summary["unaccepted"], 0, "{summary}");
    let accepts: u64 = summary["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| t["comm"] == "lighttpd")
        .map(|t| t["accepts"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        accepts, want,
        "every accept by a lighttpd worker: {summary}"
    );
    for c in &conns {
        assert_eq!(c["netns"], ns.inode(), "{c}");
    }
    let mean = summary["woken_per_conn"]["mean"].as_f64().expect("mean");
    assert!(mean >= 3.5, "lighttpd's 4 workers are a herd: {mean}");
}

struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        // lighttpd stops its workers on SIGTERM.
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// docs/real-servers/lighttpd.conf.in, filled in.
fn lighttpd_config(dir: &Path, port: u16) -> String {
    let template =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/real-servers/lighttpd.conf.in");
    std::fs::read_to_string(template)
        .expect("lighttpd template")
        .replace("@DIR@", &dir.to_string_lossy())
        .replace("@PORT@", &port.to_string())
}

/// Waits until `master` has `n` child processes (lighttpd's workers).
fn wait_for_workers(master: i32, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let kids = common::server::children_of(master);
        if kids.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lighttpd started {} workers",
            kids.len()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `diagnose --pid` on a server in another namespace reads its listeners and
/// its SO_REUSEPORT group from that namespace, not from ours (where another
/// server holds the same address and port without reuseport).
#[test]
fn diagnose_reads_a_namespaced_servers_own_listeners() {
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ns = Netns::new("dg");
    let port = free_port().to_string();
    let traced = TestServer::start_via(
        &ns.prefix(),
        &["--model", "reuseport", "--workers", "4", "--port", &port],
    );
    let other = TestServer::start(&[
        "--model",
        "epoll-per-worker",
        "--workers",
        "4",
        "--port",
        &port,
    ]);
    let mut t = Tracer::spawn(
        &[
            "diagnose",
            "--pid",
            &traced.pid().to_string(),
            "--duration",
            "4",
            "--json",
        ],
        &[],
        false,
    );
    t.wait_attached();
    let (load, _) = load_both(&ns, &traced.addr(), 150, 100);
    let end = t.wait();
    drop(traced);
    drop(other);
    assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
    let v: Value = serde_json::from_str(end.stdout.trim()).expect("diagnose --json");
    let eps = v["endpoints"].as_array().expect("endpoints");
    assert_eq!(eps.len(), 1, "one listening address: {v}");
    assert_eq!(eps[0]["pattern"]["kind"], "reuseport", "{v}");
    assert_eq!(eps[0]["pattern"]["sockets"], 4, "{v}");
    let conns = v["cost"]["connections"].as_u64().expect("connections");
    assert_eq!(conns, load["connections"].as_u64().expect("load"), "{v}");
    let woken = v["cost"]["woken_per_conn"].as_f64().expect("woken");
    assert!(woken <= 1.2, "reuseport wakes one: {woken}");
}

/// The tracer's `TRACED_FILTER` slots, read with bpftool: the map is found
/// among the maps the tracer holds (its /proc fdinfo).
fn traced_filter_slots(tracer_pid: i32) -> Vec<u64> {
    let ids = BpfIds::of_process(tracer_pid).maps;
    let bpftool = |args: &[&str]| -> Value {
        let out = Command::new("bpftool")
            .arg("-j")
            .args(args)
            .output()
            .expect("bpftool (installed by cargo xtask setup)");
        assert!(out.status.success(), "bpftool {args:?} failed");
        serde_json::from_slice(&out.stdout).expect("bpftool json")
    };
    let id = ids
        .iter()
        .map(u64::to_string)
        .find(|id| bpftool(&["map", "show", "id", id])["name"] == "TRACED_FILTER")
        .expect("the tracer holds TRACED_FILTER");
    bpftool(&["map", "dump", "id", &id])
        .as_array()
        .expect("dump array")
        .iter()
        .map(|e| {
            let bytes: Vec<u8> = e["value"]
                .as_array()
                .expect("value bytes")
                .iter()
                .map(|b| {
                    let hex = b.as_str().expect("hex byte");
                    u8::from_str_radix(hex.trim_start_matches("0x"), 16).expect("hex")
                })
                .collect();
            u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
        })
        .collect()
}

#[test]
fn a_cgroup_rescan_pins_no_filter_slot_for_tasks_already_followed() {
    // Each rescan finds every task of the cgroup; those the fork program
    // already follows must not be pinned again, or their slots stay pinned
    // after they exit and, over hours of short-lived tasks, every slot of
    // the traced-task filter would be, costing every wakeup of the machine.
    if !can_run() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cg) = Cgroup::new("pins") else {
        skip("no cgroup2 file system mounted");
        return;
    };
    // A shell in the cgroup forks a task every 0.2 s that lives 0.8 s: each
    // is alive at one or two of the tracer's passes (every 0.5 s).
    let script = format!(
        "echo $$ > {}/cgroup.procs && for i in $(seq 1 40); do sleep 0.8 & sleep 0.2; done; wait",
        cg.path()
    );
    let mut shell = Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .expect("sh");
    let _kill = KillOnDrop(&mut shell);
    thread::sleep(Duration::from_millis(300));
    let mut t = Tracer::spawn(&["--cgroup", cg.path(), "--quiet"], &[], false);
    t.wait_attached();
    let stderr = t.stderr_text();
    let added: usize = stderr
        .lines()
        .find_map(|l| l.strip_prefix("herdtrace: tracing "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tracing line: {stderr}"));
    // Ten passes, some 25 tasks forked meanwhile.
    thread::sleep(Duration::from_secs(5));
    let slots = traced_filter_slots(t.pid());
    t.signal(libc::SIGINT);
    let end = t.wait();
    assert_eq!(end.status.code(), Some(0), "{}", end.stderr);
    assert_eq!(slots.len(), herdtrace_common::TRACED_SLOTS as usize);
    // A pinned slot is 2^40 less the exits of its tasks.
    let pinned = slots
        .iter()
        .filter(|&&v| v >= herdtrace_common::TRACED_SLOT_PINNED / 2)
        .count();
    let counted = slots
        .iter()
        .filter(|&&v| v > 0 && v < herdtrace_common::TRACED_SLOT_PINNED / 2)
        .count();
    assert!(
        (1..=added).contains(&pinned),
        "{pinned} slots pinned; only the {added} tasks found at start may be"
    );
    assert!(
        counted >= 1,
        "the forked tasks alive now are counted in: {counted}"
    );
}
