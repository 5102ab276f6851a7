//! The built-in server (`herdtrace serve`) as a child process: started, its
//! listening line awaited (with a deadline), the lines it prints later kept
//! (so it never blocks on a full pipe), and stopped. Whatever happens to the
//! caller (an error path, a failed test), the child is terminated and reaped
//! when dropped.
//!
//! The one spawner of the server for herdtrace, its integration tests and
//! xtask: xtask compiles this file in with `#[path]` next to `lines.rs` (it
//! cannot depend on the herdtrace crate, whose build script needs the eBPF
//! toolchain), so it uses only std, anyhow, libc and its sibling `lines`.
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use super::lines::ListeningLine;

/// How long a dropped child gets between SIGTERM and SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(5);

/// A child process that is sent SIGTERM, then SIGKILL after a grace
/// period, and reaped, when dropped while still running.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Sends `sig`; false when the child has already exited (and been
    /// reaped: its pid may name another process by now, so it is not signalled).
    pub fn signal(&mut self, sig: i32) -> bool {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return false;
        }
        let Ok(pid) = i32::try_from(self.0.id()) else {
            return false;
        };
        // SAFETY: kill(2) has no memory preconditions; `pid` is our own child,
        // not yet reaped, so it cannot have been recycled.
        unsafe { libc::kill(pid, sig) == 0 }
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` and waits up to `timeout`; a child still running then is
    /// SIGKILLed and reaped, and that is an error.
    pub fn stop(&mut self, sig: i32, timeout: Duration) -> Result<ExitStatus> {
        self.signal(sig);
        if let Some(status) = self
            .wait_timeout(timeout)
            .context("waiting for the child")?
        {
            return Ok(status);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        bail!(
            "pid {} did not exit within {} s of signal {sig} (killed)",
            self.0.id(),
            timeout.as_secs_f64()
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.stop(libc::SIGTERM, DROP_GRACE);
        }
    }
}

/// What becomes of the server's stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Shared with the caller's.
    Inherit,
    /// Discarded.
    Null,
    /// Collected ([`ServeChild::stderr_text`], and in start errors).
    Capture,
}

/// A server spawned whose listening line is not read yet: its pid is known,
/// so a tracer can attach before it listens (or forks its workers).
pub struct Spawned {
    child: ChildGuard,
    /// The command line, for messages.
    shown: String,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Spawned {
    /// Starts `cmd`, a `herdtrace serve ...` command line (perhaps behind a
    /// command that execs it, like `ip netns exec NS`), with stdin closed
    /// and stdout piped.
    pub fn new(mut cmd: Command, stderr: Stderr) -> Result<Spawned> {
        let shown = display(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match stderr {
                Stderr::Inherit => Stdio::inherit(),
                Stderr::Null => Stdio::null(),
                Stderr::Capture => Stdio::piped(),
            });
        let mut child = ChildGuard(cmd.spawn().with_context(|| format!("starting `{shown}`"))?);
        let stdout = child.0.stdout.take().context("the server's stdout")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(io::Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let text = Arc::new(Mutex::new(String::new()));
        let stderr_reader = child
            .0
            .stderr
            .take()
            .map(|pipe| collect(pipe, text.clone()));
        Ok(Spawned {
            child,
            shown,
            lines,
            stderr: text,
            stderr_reader,
        })
    }

    /// The spawned process's pid (the server's, once a wrapper exec'd it).
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Waits up to `timeout` for the listening line; without one (silence,
    /// an exit, another line) the child is stopped and the error carries
    /// its captured stderr.
    pub fn listening<M: FromStr>(mut self, timeout: Duration) -> Result<ServeChild<M>> {
        let shown = &self.shown;
        let first = match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                return Err(self.fail(format!(
                    "`{shown}` printed no listening line within {} s",
                    timeout.as_secs_f64()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(self.fail(format!("`{shown}` exited without a listening line")))
            }
        };
        let Some(listening) = ListeningLine::parse(&first) else {
            return Err(self.fail(format!("`{shown}`: not a listening line: {first:?}")));
        };
        Ok(ServeChild {
            proc: self,
            listening,
            first_line: first,
        })
    }

    /// Stops the child and returns `what`, with its stderr when captured.
    fn fail(&mut self, what: String) -> anyhow::Error {
        let _ = self.child.stop(libc::SIGTERM, DROP_GRACE);
        settle(&mut self.stderr_reader);
        let stderr = lock(&self.stderr);
        if stderr.trim().is_empty() {
            anyhow!(what)
        } else {
            anyhow!("{what}; stderr: {}", stderr.trim())
        }
    }
}

/// A running `herdtrace serve`; `M` is how its model is read (see
/// [`ListeningLine`]).
pub struct ServeChild<M = String> {
    proc: Spawned,
    /// The listening line, parsed.
    pub listening: ListeningLine<M>,
    /// The listening line as printed.
    pub first_line: String,
}

impl<M: FromStr> ServeChild<M> {
    /// Starts `cmd` (see [`Spawned::new`]) and waits up to `timeout` for
    /// its listening line.
    pub fn start(cmd: Command, stderr: Stderr, timeout: Duration) -> Result<Self> {
        Spawned::new(cmd, stderr)?.listening(timeout)
    }
}

impl<M> ServeChild<M> {
    /// The server's (supervisor's) pid: its workers are its descendants.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sends `sig` to the server process; false when it has exited.
    pub fn signal(&mut self, sig: i32) -> bool {
        self.proc.child.signal(sig)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.proc.child.0.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the server to exit (after a signal sent
    /// some other way).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let status = self
            .proc
            .child
            .wait_timeout(timeout)
            .context("waiting for the server")?;
        if status.is_some() {
            settle(&mut self.proc.stderr_reader);
        }
        Ok(status)
    }

    /// Sends `sig` and waits up to `timeout` for the exit; a server still
    /// running then is SIGKILLed, and that is an error.
    pub fn stop(&mut self, sig: i32, timeout: Duration) -> Result<ExitStatus> {
        let status = self
            .proc
            .child
            .stop(sig, timeout)
            .context("stopping the server");
        settle(&mut self.proc.stderr_reader);
        status
    }

    /// SIGKILLs the server process alone (its workers are left to notice).
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let child = &mut self.proc.child.0;
        child.kill().context("killing the server")?;
        child.wait().context("waiting for the killed server")
    }

    /// The stdout lines printed after the listening line, until stdout
    /// closes (every process holding it, workers too, has exited). Still
    /// open after `timeout`: an error.
    pub fn output_lines(&mut self, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            match self
                .proc
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => out.push(line),
                Err(RecvTimeoutError::Disconnected) => return Ok(out),
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "the server's stdout is still open after {} s",
                        timeout.as_secs_f64()
                    )
                }
            }
        }
    }

    /// What the server wrote to stderr so far ([`Stderr::Capture`]); all
    /// of it once [`ServeChild::stop`] or [`ServeChild::wait_timeout`] saw
    /// it exit.
    pub fn stderr_text(&self) -> String {
        lock(&self.proc.stderr)
    }
}

/// Appends everything read from `pipe` to `text`, on a thread.
fn collect(mut pipe: impl Read + Send + 'static, text: Arc<Mutex<String>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut t) = text.lock() {
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    })
}

/// Lets a stderr reader finish once its child is gone: a second at most
/// (a surviving worker may hold the pipe open).
fn settle(reader: &mut Option<JoinHandle<()>>) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while reader.as_ref().is_some_and(|r| !r.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    if reader.as_ref().is_some_and(JoinHandle::is_finished) {
        let _ = reader.take().map(JoinHandle::join);
    }
}

fn lock(text: &Mutex<String>) -> String {
    text.lock().map(|t| t.clone()).unwrap_or_default()
}

/// `program arg...`, for messages.
fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;

    /// A stand-in for `herdtrace serve`: `sh -c SCRIPT`.
    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    fn alive(pid: u32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as i32, 0) == 0 }
    }

    const LISTENING: &str = "echo 'listening on 127.0.0.1:4321 pid 77 model reuseport workers 4'";
    const SHORT: Duration = Duration::from_secs(10);

    #[test]
    fn reads_the_listening_line_then_the_later_lines() {
        // The trap is set before the listening line: SIGTERM may follow it at once.
        let script = format!(
            "trap 'echo stats total accepts 5 eagain 1 empty_waits 0; exit 0' TERM; \
             echo ready >&2; {LISTENING}; while :; do sleep 0.05; done"
        );
        let mut s: ServeChild =
            ServeChild::start(sh(&script), Stderr::Capture, SHORT).expect("start");
        assert_eq!(s.listening.port, 4321);
        assert_eq!(s.listening.model, "reuseport");
        assert_eq!(s.first_line, LISTENING[6..LISTENING.len() - 1]);
        assert!(s.is_running());
        let status = s.stop(libc::SIGTERM, SHORT).expect("stops");
        assert!(status.success(), "{status}");
        assert_eq!(
            s.output_lines(SHORT).expect("stdout closes"),
            ["stats total accepts 5 eagain 1 empty_waits 0"]
        );
        assert_eq!(s.stderr_text(), "ready\n");
        assert!(!s.signal(libc::SIGTERM), "an exited child is not signalled");
    }

    #[test]
    fn drop_terminates_and_reaps() {
        let script = format!("{LISTENING}; exec sleep 30");
        let s: ServeChild = ServeChild::start(sh(&script), Stderr::Null, SHORT).expect("start");
        let pid = s.pid();
        assert!(alive(pid));
        drop(s);
        assert!(!alive(pid), "the guard must stop and reap the server");
    }

    #[test]
    fn a_server_ignoring_sigterm_is_killed_and_that_is_an_error() {
        let script = format!("trap '' TERM; {LISTENING}; while :; do sleep 0.05; done");
        let mut s: ServeChild = ServeChild::start(sh(&script), Stderr::Null, SHORT).expect("start");
        let err = s
            .stop(libc::SIGTERM, Duration::from_millis(300))
            .expect_err("ignores SIGTERM");
        assert!(format!("{err:#}").contains("did not exit"), "{err:#}");
        assert!(!s.is_running());
    }

    #[test]
    fn kill_stops_the_server_process_alone() {
        let script = format!("{LISTENING}; exec sleep 30");
        let mut s: ServeChild = ServeChild::start(sh(&script), Stderr::Null, SHORT).expect("start");
        assert_eq!(s.kill().expect("killed").signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn no_or_bad_listening_line_is_an_error_with_stderr() {
        let err =
            ServeChild::<String>::start(sh("echo bad port >&2; exit 2"), Stderr::Capture, SHORT)
                .err()
                .expect("exits");
        let text = format!("{err:#}");
        assert!(
            text.contains("exited without a listening line") && text.contains("bad port"),
            "{text}"
        );
        let err = ServeChild::<String>::start(sh("echo hello; exec sleep 30"), Stderr::Null, SHORT)
            .err()
            .expect("not a listening line");
        assert!(
            format!("{err:#}").contains("not a listening line: \"hello\""),
            "{err:#}"
        );
        let err = ServeChild::<String>::start(
            sh("exec sleep 30"),
            Stderr::Null,
            Duration::from_millis(200),
        )
        .err()
        .expect("silent");
        assert!(
            format!("{err:#}").contains("no listening line within 0.2 s"),
            "{err:#}"
        );
        let err = ServeChild::<String>::start(
            Command::new("/nonexistent/herdtrace"),
            Stderr::Null,
            SHORT,
        )
        .err()
        .expect("no such program");
        assert!(
            format!("{err:#}").contains("starting `/nonexistent/herdtrace`"),
            "{err:#}"
        );
    }

    #[test]
    fn the_pid_is_known_before_the_listening_line() {
        let gate =
            std::env::temp_dir().join(format!("herdtrace-child-gate-{}", std::process::id()));
        let _ = std::fs::remove_file(&gate);
        let script = format!(
            "while [ ! -e '{}' ]; do sleep 0.01; done; {LISTENING}; exec sleep 30",
            gate.display()
        );
        let spawned = Spawned::new(sh(&script), Stderr::Null).expect("spawn");
        let pid = spawned.pid();
        assert!(alive(pid));
        std::fs::write(&gate, "").expect("open the gate");
        let s: ServeChild = spawned.listening(SHORT).expect("listening");
        std::fs::remove_file(&gate).expect("cleanup");
        assert_eq!((s.pid(), s.listening.port), (pid, 4321));
    }

    #[test]
    fn output_that_stays_open_is_an_error() {
        let script = format!("{LISTENING}; exec sleep 30");
        let mut s: ServeChild = ServeChild::start(sh(&script), Stderr::Null, SHORT).expect("start");
        let err = s
            .output_lines(Duration::from_millis(200))
            .expect_err("still running");
        assert!(format!("{err:#}").contains("still open"), "{err:#}");
    }
}
