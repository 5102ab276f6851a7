//! Test helpers: `TestServer` runs `herdtrace serve` (the built binary) and
//! stops it; `run_load` runs `herdtrace load --json`. Shared by the
//! integration tests (include with `mod common;` and `common::server::...`).
#![allow(dead_code)] // each test crate uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herdtrace::serve::{ListeningLine, StatsLine, TotalStats, WorkerStats};

/// Time allowed for the listening line (a debug build on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Time allowed for the server to exit after a stop signal.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_herdtrace")
}

/// A running `herdtrace serve --stats ...`; SIGTERMed (then SIGKILLed) on drop.
pub struct TestServer {
    child: Option<Child>,
    /// The first stdout line, verbatim.
    pub first_line: String,
    pub listening: ListeningLine,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

/// What a stopped server printed.
#[derive(Debug)]
pub struct ServerExit {
    pub status: ExitStatus,
    /// `stats worker` lines in the order printed.
    pub workers: Vec<WorkerStats>,
    pub total: Option<TotalStats>,
    /// Any other stdout lines after the first.
    pub other_lines: Vec<String>,
    pub stderr: String,
}

impl TestServer {
    /// Starts `herdtrace serve <args> --stats` and waits for its listening line.
    pub fn start(args: &[&str]) -> TestServer {
        TestServer::start_via(&[], args)
    }

    /// Like [`TestServer::start`], run through a command that execs its
    /// arguments (`ip netns exec NS`, `sh -c '... exec "$@"' sh`): the server
    /// keeps the child's pid.
    pub fn start_via(prefix: &[&str], args: &[&str]) -> TestServer {
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = cmd
            .arg("serve")
            .args(args)
            .arg("--stats")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so `signal_group` can play Ctrl-C.
            .process_group(0)
            .spawn()
            .expect("spawn herdtrace serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut server = TestServer {
            child: Some(child),
            first_line: String::new(),
            listening: ListeningLine {
                ipv6: false,
                port: 0,
                pid: 0,
                model: herdtrace::serve::Model::EpollPerWorker,
                workers: 0,
            },
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        match server.lines.recv_timeout(START_TIMEOUT) {
            Ok(line) => {
                server.listening = ListeningLine::parse(&line).unwrap_or_else(|| {
                    panic!(
                        "unexpected first line {line:?}; stderr: {}",
                        server.stderr_text()
                    )
                });
                server.first_line = line;
            }
            Err(e) => panic!("no listening line ({e}); stderr: {}", server.stderr_text()),
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.listening.port
    }

    pub fn addr(&self) -> String {
        self.listening.addr()
    }

    /// The server (parent) process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Processes whose parent is the server (its forked workers).
    pub fn children(&self) -> Vec<i32> {
        children_of(self.pid())
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signals our own child process.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Sends `sig` to the server and all its workers, like Ctrl-C in a terminal.
    pub fn signal_group(&self, sig: i32) {
        // SAFETY: the server leads its own process group (see start).
        unsafe { libc::killpg(self.pid(), sig) };
    }

    /// SIGTERM and collect the exit status and --stats lines.
    pub fn stop(self) -> ServerExit {
        self.stop_with(libc::SIGTERM)
    }

    /// Sends `sig`, waits for the exit and collects the --stats lines.
    pub fn stop_with(self, sig: i32) -> ServerExit {
        self.signal(sig);
        self.wait()
    }

    /// Waits for the server to exit (after a signal sent some other way) and
    /// collects the --stats lines.
    pub fn wait(mut self) -> ServerExit {
        let mut child = self.child.take().expect("running");
        let status = wait_timeout(&mut child, STOP_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not exit within {STOP_TIMEOUT:?}; stderr: {}",
                self.stderr_text()
            );
        });
        let mut exit = ServerExit {
            status,
            workers: Vec::new(),
            total: None,
            other_lines: Vec::new(),
            stderr: String::new(),
        };
        // stdout reaches EOF once every holder (parent and workers) is gone.
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => match StatsLine::parse(&line) {
                    Some(StatsLine::Worker(w)) => exit.workers.push(w),
                    Some(StatsLine::Total(t)) => exit.total = Some(t),
                    None => exit.other_lines.push(line),
                },
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("server stdout still open {STOP_TIMEOUT:?} after exit")
                }
            }
        }
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
        exit.stderr = self.stderr_text();
        exit
    }

    /// SIGKILLs the server process only (workers are left to PR_SET_PDEATHSIG).
    pub fn kill_parent(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        child.wait().expect("wait for killed server")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The field after the command name in /proc/<pid>/stat: (state, ppid).
fn stat_of(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Pids of the processes whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat_of(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect();
    v.sort_unstable();
    v
}

/// True while `pid` exists in any state (a zombie too).
pub fn pid_exists(pid: i32) -> bool {
    stat_of(pid).is_some()
}

/// Runs `herdtrace load --addr <addr> --json <args>`: exit status and the JSON object.
pub fn run_load(addr: &str, args: &[&str]) -> (ExitStatus, serde_json::Value) {
    run_load_via(&[], addr, args)
}

/// [`run_load`] through a command that execs its arguments (`ip netns exec NS`).
pub fn run_load_via(prefix: &[&str], addr: &str, args: &[&str]) -> (ExitStatus, serde_json::Value) {
    let mut cmd = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    let out = cmd
        .args(["load", "--addr", addr, "--json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run herdtrace load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let first = lines.next().unwrap_or_else(|| {
        panic!(
            "load printed nothing; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        lines.next(),
        None,
        "load --json must print exactly one line: {stdout}"
    );
    let json = serde_json::from_str(first)
        .unwrap_or_else(|e| panic!("load output is not JSON ({e}): {first}"));
    (out.status, json)
}
