//! The built-in server run as a child process (by `demo`, `verify` and the
//! scenarios): `herdtrace serve --stats` started with the shared spawner
//! ([`super::child`]), stopped, and its `--stats` read.
use std::{path::Path, process::Command, time::Duration};

use anyhow::Result;

use super::child::{ServeChild, Stderr};
use super::lines::StatsOutput;
use super::{model::Model, WorkerStats};

/// Time for the listening line, and for the exit after SIGTERM: generous,
/// since the scenarios also run under QEMU's software emulation.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `herdtrace serve ... --stats` running as a child.
pub struct ServerProcess {
    child: ServeChild<Model>,
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
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--model", model.name(), "--workers"])
            .arg(workers.to_string())
            .arg("--stats")
            .args(extra);
        let stderr = if show_stderr {
            Stderr::Inherit
        } else {
            Stderr::Null
        };
        Ok(ServerProcess {
            child: ServeChild::start(cmd, stderr, TIMEOUT)?,
        })
    }

    /// The server's listening line.
    pub fn listening(&self) -> &super::ListeningLine {
        &self.child.listening
    }

    /// SIGTERM, then the per-worker `--stats` lines it prints before exiting.
    pub fn stop(mut self) -> Result<Vec<WorkerStats>> {
        self.child.stop(libc::SIGTERM, TIMEOUT)?;
        Ok(StatsOutput::of(self.child.output_lines(TIMEOUT)?).workers)
    }
}
