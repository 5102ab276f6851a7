//! TODO(skeleton): replaced by the real implementation.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

pub fn run(_args: CheckArgs) -> anyhow::Result<i32> {
    anyhow::bail!("check: not implemented yet")
}
