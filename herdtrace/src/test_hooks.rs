//! Environment hooks the reliability tests use to break a live run on
//! purpose (built with the `test-hooks` feature only, never in a release
//! binary): a panic with every probe attached, a full traced-task map, a
//! kernel offset that lies. Each is read once, where the tracer would meet
//! the fault it simulates.
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::btf::KernelOffsets;
use crate::loader::Tracer;

/// `HERDTRACE_TEST_PANIC_AFTER_ATTACH=SECS` panics that long after
/// attaching, so tests can check that a panic still detaches everything.
pub const PANIC_ENV: &str = "HERDTRACE_TEST_PANIC_AFTER_ATTACH";

/// How long after attaching [`PANIC_ENV`] asks the tracer to panic.
pub fn panic_after() -> Option<Duration> {
    parse_panic_after(std::env::var(PANIC_ENV).ok().as_deref())
}

fn parse_panic_after(value: Option<&str>) -> Option<Duration> {
    Duration::try_from_secs_f64(value?.parse().ok()?).ok()
}

/// Panics once `now` reaches `at` (the deadline [`panic_after`] set), at
/// the caller's location: the panic message names the live loop, as a real
/// bug there would.
#[track_caller]
pub fn panic_when_due(at: Option<tokio::time::Instant>, now: tokio::time::Instant) {
    if at.is_some_and(|at| now >= at) {
        panic!("{PANIC_ENV} is set: panicking with every probe attached");
    }
}

/// `HERDTRACE_TEST_FILL_TRACED=1` fills the kernel's set of traced tasks
/// once the targets are in it, so that the next task a target forks cannot
/// be added: the fork program's kernel-side warning (aya-log) then shows
/// with `-v`. Not an option: it breaks the run it is used in.
pub const FILL_TRACED_ENV: &str = "HERDTRACE_TEST_FILL_TRACED";

/// With [`FILL_TRACED_ENV`] set, adds tasks that cannot exist (tids above
/// the kernel's PID_MAX_LIMIT, 2^22) until the map refuses more.
pub fn fill_traced_set(tracer: &mut Tracer) {
    if std::env::var_os(FILL_TRACED_ENV).is_none_or(|v| v != "1") {
        return;
    }
    const FIRST: u32 = 1 << 30;
    let added = (0..1u32 << 20)
        .take_while(|i| tracer.trace_task(FIRST + i, FIRST).is_ok())
        .count();
    eprintln!("herdtrace: {FILL_TRACED_ENV}: {added} placeholder tasks fill the traced set");
}

/// `HERDTRACE_TEST_OFFSET=struct.member=other.member` makes the programs
/// read `struct.member` at `other.member`'s offset, a wrong offset as a
/// kernel whose BTF lied would give. With `task_struct.files` read at
/// `task_struct.pid` the next read lands in user space and fails: the
/// kernel-side warning that names the field then shows with `-v`.
pub const OFFSET_ENV: &str = "HERDTRACE_TEST_OFFSET";

/// Applies [`OFFSET_ENV`], if set, to `offsets`.
pub fn apply_offset(offsets: &mut KernelOffsets) -> Result<()> {
    let Ok(spec) = std::env::var(OFFSET_ENV) else {
        return Ok(());
    };
    let (member, from) = spec
        .split_once('=')
        .with_context(|| format!("{OFFSET_ENV}={spec}: expected struct.member=other.member"))?;
    let value = *offsets
        .slot_mut(from)
        .with_context(|| format!("{OFFSET_ENV}: unknown member {from}"))?;
    *offsets
        .slot_mut(member)
        .with_context(|| format!("{OFFSET_ENV}: unknown member {member}"))? = value;
    eprintln!("herdtrace: {OFFSET_ENV}: {member} is read at {from}'s offset");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_hook_delay_is_used_only_when_valid() {
        assert_eq!(parse_panic_after(None), None);
        assert_eq!(
            parse_panic_after(Some("1.5")),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_panic_after(Some("0")), Some(Duration::ZERO));
        for bad in ["", "soon", "-1", "NaN", "inf"] {
            assert_eq!(parse_panic_after(Some(bad)), None, "{bad:?}");
        }
    }
}
