//! `Tracer`: a `herdtrace` tracing child process with stdout and stderr
//! collected by threads, and helpers to read its NDJSON. Shared by the
//! integration tests that run the tracer (include with `mod common;`).
#![allow(dead_code)] // each test crate uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::server::bin;

/// Loading and attaching in a debug build on a busy 2-core machine.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(90);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `herdtrace` with stdout and stderr collected by threads.
pub struct Tracer {
    pub child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

pub struct Ended {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Tracer {
    /// Starts `herdtrace <args>`; stdout is collected unless `keep_stdout`.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], keep_stdout: bool) -> Tracer {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Tracer::spawn_command(cmd, keep_stdout)
    }

    /// Starts a prepared command that runs herdtrace (through `setpriv`, say).
    pub fn spawn_command(mut cmd: Command, keep_stdout: bool) -> Tracer {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn herdtrace");
        let stdout = if keep_stdout {
            None
        } else {
            let mut out = child.stdout.take().expect("stdout");
            Some(thread::spawn(move || {
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                s
            }))
        };
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let err = child.stderr.take().expect("stderr");
        let stderr_thread = thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("stderr lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Tracer {
            child,
            stdout,
            stderr,
            stderr_thread: Some(stderr_thread),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Waits until a stderr line starts with `prefix`; panics with the
    /// stderr so far after `timeout`.
    pub fn wait_for(&mut self, prefix: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_text().lines().any(|l| l.starts_with(prefix)) {
                return;
            }
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                let _ = self.child.kill();
                panic!(
                    "no stderr line {prefix:?} from the tracer; stderr:\n{}",
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the "tracing N tasks" line (probes attached).
    pub fn wait_attached(&mut self) {
        self.wait_for("herdtrace: tracing ", ATTACH_TIMEOUT);
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    pub fn wait(mut self) -> Ended {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "tracer did not exit within {EXIT_TIMEOUT:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        if let Some(h) = self.stderr_thread.take() {
            let _ = h.join();
        }
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().expect("stdout thread"))
            .unwrap_or_default();
        Ended {
            status,
            stdout,
            stderr: self.stderr_text(),
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every JSON line of an NDJSON text.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The (last) summary object of an NDJSON text.
pub fn summary_of(stdout: &str) -> Value {
    json_lines(stdout)
        .into_iter()
        .rev()
        .find(|v| v["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary line in {stdout}"))
}
