//! `herdtrace verify`: every server model on the running kernel under
//! tracing, compared with the behaviour herd-mechanics.md predicts.
use anyhow::{bail, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// NDJSON: one object per row.
    #[arg(long)]
    pub json: bool,
    /// Workers per server.
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Connections per model.
    #[arg(long, default_value_t = 250)]
    pub connections: u32,
}

pub fn run(_args: VerifyArgs) -> Result<i32> {
    bail!("verify: being written (issue #5)")
}
