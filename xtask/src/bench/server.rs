//! The `herdtrace serve` process under load: started with the shared
//! spawner (`herdtrace/src/serve/child.rs`), its port read from its listening line,
//! and stopped with SIGTERM even when the benchmark fails (drop guard).
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::herdtrace_src::child::{ServeChild, Stderr};
use crate::herdtrace_src::lines::ListeningLine;
use crate::proc;
use anyhow::{anyhow, bail};

/// How long the server may take to print its listening line, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    child: ServeChild,
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
            .args(extra);
        let shown = proc::display(&cmd);
        println!("==> {shown} &");
        let child = ServeChild::start(cmd, Stderr::Inherit, START_TIMEOUT)?;
        let port = port_of(&child.listening, model).map_err(|e| anyhow!("`{shown}`: {e}"))?;
        Ok(Self { child, port })
    }

    /// The server's (supervisor's) pid: its workers are its descendants.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// SIGTERM, then wait; SIGKILL if it does not exit in time (an error).
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.child.stop(libc::SIGTERM, STOP_TIMEOUT)
    }
}

/// The port of a benchmark server's listening line: on 127.0.0.1, in `model`.
pub fn port_of(line: &ListeningLine, model: &str) -> anyhow::Result<u16> {
    if line.model != model {
        bail!("the server runs model {}, not {model}", line.model);
    }
    if line.ipv6 || line.port == 0 {
        bail!("bad address in the listening line: {}", line.addr());
    }
    Ok(line.port)
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
    fn a_server_in_another_model_is_an_error() {
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

    #[test]
    fn port_of_a_listening_line() {
        let line = |text: &str| ListeningLine::parse(text).expect(text);
        let ok = line("listening on 127.0.0.1:43451 pid 24722 model reuseport workers 4");
        assert_eq!(port_of(&ok, "reuseport").expect("port"), 43451);
        let e = port_of(&ok, "shared-epoll").expect_err("model");
        assert!(e.to_string().contains("model reuseport"), "{e}");
        for bad in [
            "listening on 127.0.0.1:0 pid 1 model reuseport workers 4",
            "listening on [::1]:80 pid 1 model reuseport workers 4",
        ] {
            assert!(port_of(&line(bad), "reuseport").is_err(), "{bad:?}");
        }
    }
}
