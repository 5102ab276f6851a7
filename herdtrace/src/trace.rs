//! TODO(skeleton): live tracing.
#[derive(Debug, clap::Args)]
pub struct TraceArgs {}
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}
pub fn run(_args: TraceArgs) -> anyhow::Result<i32> {
    anyhow::bail!("trace: not implemented yet")
}
pub fn demo(_args: DemoArgs) -> anyhow::Result<i32> {
    anyhow::bail!("demo: not implemented yet")
}
