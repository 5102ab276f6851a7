//! `cargo xtask demo`: set up, build, and run `herdtrace demo`.
use std::process::Command;

use crate::{proc, setup};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  cargo xtask demo
  cargo xtask demo -- --help        show the demo's own options")]
pub struct DemoArgs {
    /// Arguments passed to `herdtrace demo`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<i32> {
    setup::run(&setup::SetupArgs { no_vm: true })?;
    proc::run(&mut proc::cargo(["build", "--release"]))?;
    let bin = proc::target_dir().join("release").join("herdtrace");
    let status = proc::status(Command::new(&bin).arg("demo").args(&args.args))?;
    // A signal (Ctrl-C) has no code: report it as failure like a shell would.
    Ok(status.code().unwrap_or(130))
}
