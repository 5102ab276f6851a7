//! The built-in server run as a child process (by `demo` and the selftest
//! scenarios): start it, read its listening line, stop it and collect its
//! `--stats`; it is terminated and reaped if the caller fails half-way.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _, Result};

use super::{
    lines::{ListeningLine, StatsLine, WorkerStats},
    model::Model,
};

/// A child that gets SIGTERM (then SIGKILL after 5 s) and is reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, sig) };
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.signal(libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
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
}

/// `herdtrace serve ... --stats` running as a child.
pub struct ServerProcess {
    child: ChildGuard,
    stdout: BufReader<ChildStdout>,
    pub listening: ListeningLine,
}

impl ServerProcess {
    /// Starts `exe serve --model M --workers N --stats EXTRA...` and waits for
    /// its listening line. `show_stderr`: let the server's errors reach ours.
    pub fn start(
        exe: &Path,
        model: Model,
        workers: u32,
        extra: &[&str],
        show_stderr: bool,
    ) -> Result<ServerProcess> {
        let child = Command::new(exe)
            .args(["serve", "--model", model.name(), "--workers"])
            .arg(workers.to_string())
            .arg("--stats")
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(if show_stderr {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .context("starting the built-in server")?;
        let mut child = ChildGuard(child);
        let mut stdout = BufReader::new(child.0.stdout.take().context("server stdout")?);
        let mut first = String::new();
        stdout
            .read_line(&mut first)
            .context("reading the server's first line")?;
        let listening = ListeningLine::parse(first.trim_end())
            .ok_or_else(|| anyhow!("unexpected first line from the server: {first:?}"))?;
        Ok(ServerProcess {
            child,
            stdout,
            listening,
        })
    }

    /// SIGTERM, then the per-worker `--stats` lines it prints before exiting.
    pub fn stop(mut self) -> Vec<WorkerStats> {
        self.child.signal(libc::SIGTERM);
        let workers = (&mut self.stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| match StatsLine::parse(&line) {
                Some(StatsLine::Worker(w)) => Some(w),
                _ => None,
            })
            .collect();
        let _ = self.child.0.wait();
        workers
    }
}
