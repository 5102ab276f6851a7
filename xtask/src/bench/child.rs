//! Running a benchmarked tool with its output captured and a deadline, so a
//! hung tool fails the section instead of hanging the benchmark.
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::proc;

/// Starts `cmd` (shown as `shown` in the error) with stdin closed and
/// stdout/stderr piped for the caller to drain.
/// Gives the child the default SIGINT action. A command started in the
/// background by a non-interactive shell (`cargo xtask bench &`, a CI
/// runner) inherits SIGINT ignored, and a shell cannot trap a signal that
/// was ignored on entry: a tool stopped with SIGINT would never stop.
pub fn sigint_default(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: only `signal`, which is async-signal-safe, runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
}

pub fn spawn_piped(cmd: &mut Command, shown: &str) -> anyhow::Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn()
        .with_context(|| format!("cannot start `{shown}`"))
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (echoed first) with stdout and stderr captured; kills it and
/// fails if it is still running after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Finished> {
    let shown = proc::display(cmd);
    println!("==> {shown}");
    let mut child = spawn_piped(cmd, &shown)?;
    // Drained on threads so a chatty tool cannot block on a full pipe.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().context("waitpid")? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{shown}` did not finish within {} s", timeout.as_secs());
        }
        // The tools time themselves, so this poll does not bias the figures.
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Finished {
        status,
        stdout: joined(out),
        stderr: joined(err),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            // A read error leaves what was read; the caller judges the output.
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

fn joined(h: JoinHandle<Vec<u8>>) -> String {
    String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_both_streams_and_status() {
        let f = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .expect("run sh");
        assert_eq!(f.stdout, "out\n");
        assert_eq!(f.stderr, "err\n");
        assert_eq!(f.status.code(), Some(3));
    }

    #[test]
    fn kills_at_the_deadline() {
        let start = Instant::now();
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(200))
            .err()
            .expect("must time out");
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn missing_program_is_an_error() {
        let err = run(
            &mut Command::new("/nonexistent/xtask-bench-tool"),
            Duration::from_secs(1),
        )
        .err()
        .expect("must fail");
        assert!(err.to_string().contains("cannot start"), "{err}");
    }
}
