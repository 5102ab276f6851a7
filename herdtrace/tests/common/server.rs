//! Test helpers: `TestServer` runs `herdtrace serve` (the built binary) and
//! stops it; `run_load` runs `herdtrace load --json`. Shared by the
//! integration tests (include with `mod common;` and `common::server::...`).
#![allow(dead_code)] // each test crate uses its own subset

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use herdtrace::procstat::ProcStat;
use herdtrace::serve::child::{ServeChild, Stderr};
use herdtrace::serve::lines::StatsOutput;
use herdtrace::serve::{ListeningLine, Model, TotalStats, WorkerStats};

/// Time allowed for the listening line (a debug build on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Time allowed for the server to exit after a stop signal.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_herdtrace")
}

/// A running `herdtrace serve --stats ...` (the shared spawner, with stderr
/// collected); SIGTERMed (then SIGKILLed) on drop.
pub struct TestServer {
    child: ServeChild<Model>,
    /// The first stdout line, verbatim.
    pub first_line: String,
    pub listening: ListeningLine,
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
        cmd.arg("serve")
            .args(args)
            .arg("--stats")
            // Its own process group, so `signal_group` can play Ctrl-C.
            .process_group(0);
        let child = ServeChild::start(cmd, Stderr::Capture, START_TIMEOUT)
            .unwrap_or_else(|e| panic!("herdtrace serve {args:?}: {e:#}"));
        TestServer {
            first_line: child.first_line.clone(),
            listening: child.listening,
            child,
        }
    }

    pub fn port(&self) -> u16 {
        self.listening.port
    }

    pub fn addr(&self) -> String {
        self.listening.addr()
    }

    /// The server (parent) process id.
    pub fn pid(&self) -> i32 {
        self.child.pid() as i32
    }

    pub fn stderr_text(&self) -> String {
        self.child.stderr_text()
    }

    /// Processes whose parent is the server (its forked workers).
    pub fn children(&self) -> Vec<i32> {
        children_of(self.pid())
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signals our own child process (reaped only by `wait`,
        // which consumes the server).
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
        let status = match self.child.wait_timeout(STOP_TIMEOUT) {
            Ok(Some(status)) => status,
            Ok(None) => {
                let _ = self.child.kill();
                panic!(
                    "server did not exit within {STOP_TIMEOUT:?}; stderr: {}",
                    self.stderr_text()
                );
            }
            Err(e) => panic!("{e:#}"),
        };
        // stdout reaches EOF once every holder (parent and workers) is gone.
        let lines = self
            .child
            .output_lines(STOP_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e:#} after the exit"));
        let out = StatsOutput::of(lines);
        ServerExit {
            status,
            workers: out.workers,
            total: out.total,
            other_lines: out.other,
            stderr: self.stderr_text(),
        }
    }

    /// SIGKILLs the server process only (workers are left to PR_SET_PDEATHSIG).
    pub fn kill_parent(mut self) -> ExitStatus {
        self.child.kill().expect("kill the server")
    }
}

/// Pids of the processes whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let (Ok(parent), Ok(dir)) = (u32::try_from(parent), std::fs::read_dir("/proc")) else {
        return Vec::new();
    };
    let mut v: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| ProcStat::read(Path::new("/proc"), pid).ok())
        .filter(|s| s.ppid == parent)
        .filter_map(|s| i32::try_from(s.pid).ok())
        .collect();
    v.sort_unstable();
    v
}

/// True while `pid` exists in any state (a zombie too).
pub fn pid_exists(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(|pid| ProcStat::read(Path::new("/proc"), pid).is_ok())
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
