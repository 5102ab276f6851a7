//! A measuring tool run in the background (herdtrace's tracer, bpftrace):
//! started, awaited until it prints that it is attached, stopped with SIGINT
//! (both print their results then), with its output captured. A drop guard
//! kills it if the benchmark fails in between.
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::proc;

/// How long a stopped tool may take to print its results and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Captured output: the number of lines and the last `keep` of them (all
/// when `keep` is 0), so NDJSON at high rates does not fill memory.
#[derive(Debug, Default)]
struct Captured {
    lines: u64,
    kept: VecDeque<String>,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stdout_lines: u64,
    pub stderr: String,
}

pub struct Background {
    child: Child,
    shown: String,
    out: Option<JoinHandle<Captured>>,
    err: Option<JoinHandle<Captured>>,
}

impl Background {
    /// Starts `cmd` and waits until a line of stdout or stderr satisfies
    /// `ready`; fails if the tool exits or stays silent past `timeout`.
    pub fn start(
        cmd: &mut Command,
        ready: fn(&str) -> bool,
        timeout: Duration,
        keep_stdout: usize,
    ) -> anyhow::Result<Self> {
        let shown = proc::display(cmd);
        println!("==> {} &", first_line(&shown));
        // Stopped with SIGINT, which it must not have inherited ignored.
        super::child::sigint_default(cmd);
        let mut child = super::child::spawn_piped(cmd, &shown)?;
        let (tx, rx) = mpsc::channel();
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let out = reader(child.stdout.take(), ready, tx.clone(), keep_stdout, None);
        let err = reader(
            child.stderr.take(),
            ready,
            tx,
            0,
            Some(Arc::clone(&stderr_text)),
        );
        let mut bg = Self {
            child,
            shown,
            out: Some(out),
            err: Some(err),
        };
        let deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => return Ok(bg),
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Ok(Some(st)) = bg.child.try_wait() {
                // Let the readers finish so the error shows what the tool said.
                std::thread::sleep(Duration::from_millis(100));
                let said = stderr_text.lock().map(|s| s.clone()).unwrap_or_default();
                bail!(
                    "`{}` exited ({st}) before it was ready: {}",
                    bg.shown,
                    said.trim()
                );
            }
            if Instant::now() >= deadline {
                let said = stderr_text.lock().map(|s| s.clone()).unwrap_or_default();
                bg.kill();
                bail!(
                    "`{}` was not ready within {} s: {}",
                    bg.shown,
                    timeout.as_secs(),
                    said.trim()
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGINT, then waits for the exit and the output.
    pub fn stop(mut self) -> anyhow::Result<Finished> {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = i32::try_from(self.child.id()).context("pid")?;
            // SAFETY: kill has no memory preconditions; pid is our unreaped child.
            if unsafe { libc::kill(pid, libc::SIGINT) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("SIGINT to `{}`", self.shown));
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(st) = self.child.try_wait().context("waitpid")? {
                break st;
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "`{}` did not exit within {} s of SIGINT (killed)",
                    self.shown,
                    STOP_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let join = |h: Option<JoinHandle<Captured>>| {
            h.map_or_else(|| Ok(Captured::default()), |h| h.join())
                .map_err(|_| anyhow!("an output reader panicked"))
        };
        let out = join(self.out.take())?;
        let err = join(self.err.take())?;
        Ok(Finished {
            status,
            stdout: joined(&out.kept),
            stdout_lines: out.lines,
            stderr: joined(&err.kept),
        })
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// A multi-line command (a bpftrace script) echoed as its first line.
fn first_line(shown: &str) -> String {
    match shown.split_once('\n') {
        Some((first, rest)) => format!("{first} ... ({} more lines)", rest.lines().count()),
        None => shown.to_string(),
    }
}

fn joined(lines: &VecDeque<String>) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Reads `pipe` line by line on a thread; signals `tx` once for the first
/// ready line; mirrors stderr into `mirror` for error messages.
fn reader<R: Read + Send + 'static>(
    pipe: Option<R>,
    ready: fn(&str) -> bool,
    tx: mpsc::Sender<()>,
    keep: usize,
    mirror: Option<Arc<Mutex<String>>>,
) -> JoinHandle<Captured> {
    std::thread::spawn(move || {
        let mut c = Captured::default();
        let Some(p) = pipe else { return c };
        let mut signalled = false;
        for line in BufReader::new(p).lines() {
            // A read error ends the capture; the caller judges what was read.
            let Ok(line) = line else { break };
            if !signalled && ready(&line) {
                signalled = true;
                let _ = tx.send(());
            }
            if let Some(m) = &mirror {
                if let Ok(mut s) = m.lock() {
                    if s.len() < 64 * 1024 {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            }
            c.lines += 1;
            c.kept.push_back(line);
            if keep > 0 && c.kept.len() > keep {
                c.kept.pop_front();
            }
        }
        c
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_word(l: &str) -> bool {
        l.contains("READY")
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn waits_for_ready_then_collects_on_sigint() {
        let mut cmd = sh("trap 'echo result 42; exit 0' INT; echo READY >&2; \
                          i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done");
        let bg =
            Background::start(&mut cmd, ready_word, Duration::from_secs(10), 0).expect("start");
        std::thread::sleep(Duration::from_millis(100));
        let f = bg.stop().expect("stop");
        assert!(f.status.success(), "{:?}", f.status);
        assert_eq!(f.stdout, "result 42\n");
        assert_eq!(f.stdout_lines, 1);
        assert_eq!(f.stderr, "READY\n");
    }

    #[test]
    fn multi_line_commands_are_echoed_short() {
        assert_eq!(
            first_line("bpftrace -e a\nb\nc\n"),
            "bpftrace -e a ... (2 more lines)"
        );
        assert_eq!(first_line("herdtrace --pid 1"), "herdtrace --pid 1");
    }

    #[test]
    fn keeps_only_the_last_lines_but_counts_all() {
        let mut cmd = sh("echo READY; for i in 1 2 3 4 5; do echo line$i; done; \
                          trap 'exit 0' INT; sleep 30 >/dev/null 2>&1 & wait");
        let bg =
            Background::start(&mut cmd, ready_word, Duration::from_secs(10), 2).expect("start");
        std::thread::sleep(Duration::from_millis(200));
        let f = bg.stop().expect("stop");
        assert_eq!(f.stdout, "line4\nline5\n");
        assert_eq!(f.stdout_lines, 6);
    }

    #[test]
    fn exit_before_ready_and_silence_are_errors() {
        let err = Background::start(
            &mut sh("echo cannot attach >&2; exit 3"),
            ready_word,
            Duration::from_secs(10),
            0,
        )
        .err()
        .expect("exits");
        let msg = format!("{err:#}");
        assert!(msg.contains("before it was ready: cannot attach"), "{msg}");

        let start = Instant::now();
        let err = Background::start(
            &mut sh("sleep 30"),
            ready_word,
            Duration::from_millis(300),
            0,
        )
        .err()
        .expect("silent");
        assert!(err.to_string().contains("not ready within"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
