//! TODO(skeleton): replaced by the real implementation.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {}

pub fn run(_args: LoadArgs) -> anyhow::Result<i32> {
    anyhow::bail!("load: not implemented yet")
}
