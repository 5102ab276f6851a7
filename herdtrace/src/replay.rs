//! TODO(skeleton): replaced by the real implementation.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {}

pub fn run(_args: ReplayArgs) -> anyhow::Result<i32> {
    anyhow::bail!("replay: not implemented yet")
}
