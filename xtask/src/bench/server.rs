//! The `herdtrace serve` process under load: started, its port read from its
//! first line, and stopped with SIGTERM even when the benchmark fails (drop guard).
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use super::parse;
use crate::proc;

/// How long the server may take to print its listening line, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// Starts `bin serve --model MODEL --workers N` and waits for its listening line.
    pub fn start(bin: &Path, model: &str, workers: u16) -> anyhow::Result<Self> {
        Self::start_with(bin, model, workers, &[])
    }

    /// As [`Server::start`], with more `serve` arguments.
    pub fn start_with(
        bin: &Path,
        model: &str,
        workers: u16,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--model", model, "--workers"])
            .arg(workers.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let shown = proc::display(&cmd);
        println!("==> {shown} &");
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{shown}`"))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep reading so a later line never blocks the server on a full pipe.
            for _ in lines {}
        });
        // From here on the guard stops the server on every error path.
        let mut server = Self { child, port: 0 };
        let line = rx.recv_timeout(START_TIMEOUT).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => anyhow!(
                "`{shown}` printed no listening line within {} s",
                START_TIMEOUT.as_secs()
            ),
            mpsc::RecvTimeoutError::Disconnected => {
                anyhow!("`{shown}` exited without a listening line")
            }
        })?;
        server.port =
            parse::parse_listening_port(&line, model).map_err(|e| anyhow!("`{shown}`: {e}"))?;
        Ok(server)
    }

    /// The server's (supervisor's) pid: its workers are its descendants.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then wait; SIGKILL if it does not exit in time (an error).
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(st) = self.child.try_wait().context("waitpid server")? {
            return Ok(st);
        }
        let pid = i32::try_from(self.child.id()).context("server pid")?;
        // SAFETY: kill has no memory preconditions; pid is our unreaped child,
        // so it cannot have been recycled for another process.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error()).context("SIGTERM to the server");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().context("waitpid server")? {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!(
            "the server did not exit within {} s of SIGTERM (killed)",
            STOP_TIMEOUT.as_secs()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.is_running() {
            if let Err(e) = self.stop() {
                eprintln!("xtask: warning: {e:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::ExitStatusExt as _;

    /// A stand-in for `herdtrace serve`: a shell script ignoring its arguments.
    fn fake_server(name: &str, body: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn remove(script: &Path) {
        std::fs::remove_dir_all(script.parent().expect("dir")).expect("cleanup");
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    const LISTENING: &str =
        "echo \"listening on 127.0.0.1:4321 pid $$ model reuseport workers 4\"; exec sleep 30";

    #[test]
    fn reads_port_and_stops_with_sigterm() {
        let bin = fake_server("ok", LISTENING);
        let mut s = Server::start(&bin, "reuseport", 4).expect("start");
        assert_eq!(s.port, 4321);
        assert!(s.is_running());
        let st = s.stop().expect("stop");
        assert_eq!(st.signal(), Some(libc::SIGTERM));
        assert!(!s.is_running());
        remove(&bin);
    }

    #[test]
    fn drop_stops_the_server() {
        let bin = fake_server("drop", LISTENING);
        let s = Server::start(&bin, "reuseport", 4).expect("start");
        let pid = i32::try_from(s.child.id()).expect("pid");
        assert!(alive(pid));
        drop(s);
        assert!(!alive(pid), "the guard must stop and reap the server");
        remove(&bin);
    }

    #[test]
    fn bad_or_missing_listening_line_is_an_error() {
        let bin = fake_server("exits", "exit 2");
        let err = Server::start(&bin, "reuseport", 4).err().expect("exits");
        assert!(
            err.to_string().contains("without a listening line"),
            "{err}"
        );
        remove(&bin);

        let bin = fake_server(
            "wrong",
            "echo 'listening on 127.0.0.1:1 pid 1 model exclusive workers 4'; exec sleep 30",
        );
        let err = Server::start(&bin, "reuseport", 4)
            .err()
            .expect("wrong model");
        assert!(err.to_string().contains("model exclusive"), "{err}");
        remove(&bin);
    }
}
