//! `herdtrace diagnose`: a running server's accept setup read from /proc,
//! its cost measured by tracing, and what to change.
use anyhow::{bail, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct DiagnoseArgs {
    /// The server's (master) process id.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: i64,
    /// Seconds to trace.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: DiagnoseArgs) -> Result<i32> {
    bail!("diagnose: being written (issue #5)")
}
