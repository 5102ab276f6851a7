//! TODO(skeleton): replaced by the real implementation.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

pub fn run(_args: ServeArgs) -> anyhow::Result<i32> {
    anyhow::bail!("serve: not implemented yet")
}
