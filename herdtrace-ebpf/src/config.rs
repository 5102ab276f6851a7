//! The one load-time global user space sets before loading: kernel struct
//! and tracepoint record offsets, layout flags and behaviour (see
//! `herdtrace_common::Config`).
use herdtrace_common::Config;

// SAFETY: an all-zero `Config` is valid (integers only).
#[unsafe(no_mangle)]
pub static CONFIG: Config = unsafe { core::mem::zeroed() };

/// Reads one `CONFIG` field. Volatile, so LLVM does not fold the
/// compile-time zero; the verifier still sees the frozen value.
macro_rules! conf {
    ($field:ident) => {
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::config::CONFIG.$field)) }
    };
}
pub(crate) use conf;
