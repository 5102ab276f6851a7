//! herdtrace: per-connection accept thundering-herd tracer.
//!
//! Pure logic (decoding, reconstruction, statistics, output) lives in modules
//! that need neither root nor a kernel; `loader` is the only module that talks
//! to aya.
//!
//! Modules are crate-private unless the binary or the integration tests
//! (`tests/`) use them, so the dead-code lint sees what nothing calls.
pub(crate) mod backend;
pub(crate) mod bpf_info;
pub(crate) mod btf;
pub mod cgroup;
pub mod check;
pub mod cli;
pub(crate) mod demo;
pub(crate) mod diagnose;
pub mod engine;
pub mod events;
pub(crate) mod exporter;
pub(crate) mod generate;
pub mod kernel;
pub(crate) mod kprobe_misses;
pub(crate) mod load;
pub(crate) mod loader;
pub(crate) mod logging;
pub(crate) mod merge;
pub(crate) mod pipeline;
pub mod probes;
pub mod procstat;
pub mod record;
pub mod replay;
pub mod report;
pub mod scenario;
#[cfg(feature = "test-hooks")]
mod selftest;
pub mod serve;
pub(crate) mod start;
pub(crate) mod stop;
pub(crate) mod targets;
#[cfg(feature = "test-hooks")]
mod test_hooks;
pub(crate) mod trace;
pub(crate) mod verify;
