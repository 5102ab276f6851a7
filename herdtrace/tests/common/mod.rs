//! Helpers shared by the integration tests.
pub mod bpf;
pub mod server;
pub mod tracer;

/// Asserts `text` holds `needle`, showing all of `text` when it does not.
#[track_caller]
#[allow(dead_code)] // not every test binary uses it
pub fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}
