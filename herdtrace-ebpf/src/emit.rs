//! Writing one event into the ring buffer (with sequence numbers for loss
//! detection), the per-CPU counters, and map writes that count their failures.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    maps::HashMap,
};
use aya_log_ebpf::warn;
use herdtrace_common::{
    RawEvent, CNT_DROPS, CNT_EVENTS, CNT_INSERT_FAILED, FLAG_NESTED_SEND, MAP_NAMES,
};

use crate::config::conf;
use crate::maps::{COUNTERS, EVENTS, SEQ};

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// SEQ index of the per-CPU count of `send`s in progress.
const SENDING: u32 = 2;

/// Adds `delta` to a per-CPU slot atomically: fentry/fexit programs run in
/// preemptible process context, so another task's program can update the
/// same CPU's slot in between a plain load and store. (The result is not
/// used, which keeps this a plain atomic add that 5.10's verifier accepts.)
#[inline(always)]
fn atomic_add(p: *mut u64, delta: u64) {
    // SAFETY: `p` points into a per-CPU array value, valid and 8-byte
    // aligned. (The BPF target has no `AtomicU64::fetch_add`; the intrinsic
    // with an unused result is the BPF atomic add instruction.)
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, delta) };
}

/// Next value of the per-CPU sequence `index`. Not atomic (an atomic
/// fetch-and-add needs 5.12): a preempted program can share a number with
/// another task's, which reads as a reordering, never as a loss; real drops
/// are counted by `CNT_DROPS` as well.
#[inline(always)]
pub fn bump(index: u32) -> u64 {
    match SEQ.get_ptr_mut(index) {
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    }
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        atomic_add(p, 1);
    }
}

/// Inserts `k -> v` into `map`; a failure (map full) is counted under
/// `CNT_INSERT_FAILED + map_id` so user space can say what was not
/// remembered, and logged (shown with `herdtrace -v`). Returns whether the
/// entry was stored, for callers that can say more about what was lost.
#[inline(always)]
pub fn insert<K, V>(map: &HashMap<K, V>, k: &K, v: &V, map_id: u32) -> bool {
    match map.insert(k, v, 0) {
        Ok(()) => true,
        Err(e) => {
            count(CNT_INSERT_FAILED + map_id);
            // Otherwise invisible: what this entry stood for goes unreported.
            // (aya-log-ebpf 0.2 takes a context argument but does not use it.)
            let name = MAP_NAMES.get(map_id as usize).copied().unwrap_or("?");
            warn!(
                &(),
                "insert into map {} failed ({}): the map is full", name, e
            );
            false
        }
    }
}

/// Sets `k -> v`: rewrites an existing value in place (lock-free, and only
/// when it changed) and inserts only when the key is new (an insert takes
/// the bucket lock).
#[inline(always)]
pub fn put<K, V: Copy + PartialEq>(map: &HashMap<K, V>, k: &K, v: V, map_id: u32) {
    match map.get_ptr_mut(k) {
        Some(p) => unsafe {
            if *p != v {
                *p = v;
            }
        },
        None => {
            insert(map, k, &v, map_id);
        }
    }
}

/// Removes `k` if present (a lookup is lock-free; a delete of a missing key
/// would still take the bucket lock).
#[inline(always)]
pub fn forget<K, V>(map: &HashMap<K, V>, k: &K) {
    if map.get_ptr(k).is_some() {
        let _ = map.remove(k);
    }
}

/// A zeroed event with the common header filled in.
#[inline(always)]
pub fn new_event(kind: u32) -> RawEvent {
    RawEvent {
        kind,
        cpu: unsafe { bpf_get_smp_processor_id() },
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ..RawEvent::default()
    }
}

/// Sends `ev`; when the ring buffer is full the event is counted as dropped.
/// The sequence number is taken either way so user space sees the gap.
#[inline(always)]
pub fn send(ev: &mut RawEvent) {
    let Some(depth) = SEQ.get_ptr_mut(SENDING) else {
        return;
    };
    // An interrupted send on this CPU holds the previous seq and reserves
    // after us: say so, or user space takes the reordering for a loss.
    if unsafe { *depth } != 0 {
        ev.flags |= FLAG_NESTED_SEND;
    }
    atomic_add(depth, 1);
    ev.seq = bump(0);
    reserve_and_submit(ev);
    atomic_add(depth, u64::MAX); // minus one
}

#[inline(always)]
fn reserve_and_submit(ev: &RawEvent) {
    match EVENTS.reserve::<RawEvent>(0) {
        Some(mut slot) => {
            slot.write(*ev);
            // Wake the reader only when the buffer is filling up (see
            // Config::ringbuf_wake_bytes).
            let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= conf!(ringbuf_wake_bytes) {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            slot.submit(flags);
            count(CNT_EVENTS);
        }
        None => count(CNT_DROPS),
    }
}
