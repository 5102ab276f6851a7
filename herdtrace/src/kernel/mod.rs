//! Facts about the running kernel: release, config, symbols, tracepoints,
//! privileges, lockdown, and the gaps `HERDTRACE_MISSING` simulates. Each
//! question has a pure parser (unit-tested on fixture strings) and a thin
//! function that does the I/O, in a module of its own.
//!
//! Only what the integration tests call is public; the rest is the crate's.
mod config;
mod kallsyms;
mod lockdown;
mod missing;
mod pidns;
mod privilege;
mod release;
mod tracefs;

pub use config::{ConfigValue, KernelConfig};
pub use lockdown::lockdown_problem;
pub use pidns::pid_namespace_problem;
pub use privilege::privilege_problem;
pub use release::{major_minor, release};

pub(crate) use kallsyms::{
    filter_function_names, find_symbols, kallsyms_names, read_filter_functions, read_kallsyms,
    SymbolPresence,
};
pub(crate) use missing::{simulated_missing, MISSING_ENV};
pub(crate) use privilege::{privilege, Privilege, NEEDED_CAPS};
pub(crate) use release::parse_version;
pub(crate) use tracefs::{tracefs, tracepoint_exists, tracepoint_format, TracefsError};
