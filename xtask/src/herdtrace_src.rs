//! herdtrace's own process plumbing, compiled into xtask from its sources:
//! the `/proc/PID/stat` parser, the server's output lines, and the spawner
//! of `herdtrace serve`. One copy of the code for herdtrace, its tests and
//! xtask, without a dependency on the herdtrace crate (its build script needs
//! the eBPF toolchain that `cargo xtask setup` installs). Each of these files
//! uses only std, anyhow and libc, and `child` finds `lines` as its sibling.
//!
//! xtask uses part of each, so the rest is not dead code to warn about.

#[allow(dead_code)]
#[path = "../../herdtrace/src/serve/child.rs"]
pub mod child;
#[allow(dead_code)]
#[path = "../../herdtrace/src/serve/lines.rs"]
pub mod lines;
#[allow(dead_code)]
#[path = "../../herdtrace/src/procstat.rs"]
pub mod procstat;
