//! herdtrace: per-connection accept thundering-herd tracer.
//!
//! Pure logic (decoding, reconstruction, statistics, output) lives in modules
//! that need neither root nor a kernel; `loader` is the only module that talks
//! to aya.
pub mod backend;
pub mod btf;
pub mod cgroup;
pub mod check;
pub mod cli;
pub mod demo;
pub mod diagnose;
pub mod engine;
pub mod events;
pub mod exporter;
pub mod generate;
pub mod kernel;
pub mod load;
pub mod loader;
pub mod logging;
pub mod pipeline;
pub mod probes;
pub mod record;
pub mod replay;
pub mod report;
pub mod scenario;
pub mod serve;
pub mod start;
pub mod stop;
pub mod targets;
pub mod trace;
pub mod verify;
