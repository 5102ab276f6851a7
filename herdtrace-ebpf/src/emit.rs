//! Writing one event into the ring buffer (with sequence numbers for loss
//! detection), the per-CPU counters, and map writes that count their failures.
use core::{
    intrinsics::{atomic_xadd, AtomicOrdering},
    mem::size_of,
    ptr::write_volatile,
};

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, generated},
    maps::{HashMap, RingBuf},
};
use aya_log_ebpf::warn;
use herdtrace_common::{RawEvent, CNT_DROPS, CNT_INSERT_FAILED, FLAG_NESTED_SEND, MAP_NAMES};

use crate::config::conf;
use crate::maps::{
    COUNTERS, EVENTS, EVENTS1, EVENTS2, EVENTS3, EVENTS4, EVENTS5, EVENTS6, EVENTS7, SEQ,
};

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// The ring buffer's fill level is checked on one send in this many per CPU.
const QUERY_EVERY: u64 = 8;

/// Adds `delta` to a map value atomically: fentry/fexit programs run in
/// preemptible process context, so even a per-CPU slot can be updated by
/// another task's program between a plain load and store. (The result is
/// not used, which keeps this a plain atomic add that 5.10's verifier
/// accepts.)
#[inline(always)]
pub fn atomic_add(p: *mut u64, delta: u64) {
    // SAFETY: `p` points into an array map's value, valid and 8-byte
    // aligned. (The BPF target has no `AtomicU64::fetch_add`; the intrinsic
    // with an unused result is the BPF atomic add instruction.)
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, delta) };
}

/// Next value of a per-CPU counter. Not atomic (an atomic fetch-and-add
/// needs 5.12): a preempted program can share a number with another task's,
/// which reads as a reordering, never as a loss; real drops are counted by
/// `CNT_DROPS` as well.
#[inline(always)]
fn bump(counter: &mut u64) -> u64 {
    *counter += 1;
    *counter
}

/// A new wake-chain number on this CPU (0 if the map cannot be read).
#[inline(always)]
pub fn next_chain() -> u64 {
    match SEQ.get_ptr_mut(0) {
        // SAFETY: a per-CPU value, valid while the program runs.
        Some(s) => bump(unsafe { &mut (*s).chain }),
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

/// The ring buffer of `cpu`'s shard. Per-CPU buffers: one shared by every
/// CPU cost each record its lock's and its positions' cache lines coming
/// from the CPU that sent the last one (alternated on 2 CPUs, 8 rounds of
/// 20,000 connections: one shared 1,718 ns of eBPF per connection, one per
/// CPU 1,451). User space merges the shards by time (`merge.rs`).
#[inline(always)]
fn shard(cpu: u32) -> &'static RingBuf {
    match cpu as u64 & conf!(event_shard_mask) {
        0 => &EVENTS,
        1 => &EVENTS1,
        2 => &EVENTS2,
        3 => &EVENTS3,
        4 => &EVENTS4,
        5 => &EVENTS5,
        6 => &EVENTS6,
        _ => &EVENTS7,
    }
}

/// 8-byte words in one [`RawEvent`].
const EVENT_WORDS: usize = size_of::<RawEvent>() / 8;

/// The current task's name, written into `comm` by the helper itself (a
/// local buffer would be zeroed first, by a byte loop: see `emit_at`).
/// On failure the kernel zeroes it.
#[inline(always)]
pub fn current_comm(comm: &mut [u8; 16]) {
    // SAFETY: the helper writes at most 16 bytes into the buffer.
    unsafe { generated::bpf_get_current_comm(comm.as_mut_ptr().cast(), 16) };
}

/// Sends an event of `kind` stamped now: see [`emit_at`].
#[inline(always)]
pub fn emit(kind: u32, fill: impl FnOnce(&mut RawEvent)) {
    emit_at(kind, unsafe { bpf_ktime_get_ns() }, fill)
}

/// Sends an event of `kind` with time `ts_ns`. The event is built in place,
/// in its ring-buffer slot: reserved, zeroed, its header written, the rest
/// by `fill`, then submitted. (Built on the stack and copied, as before,
/// LLVM turned the zero fields into `memset` calls, which the BPF target
/// links as a loop storing one byte per five instructions, and the copy
/// cost 15 loads and stores more.) When the ring buffer is full the event
/// is counted as dropped and `fill` does not run; its sequence number is
/// taken either way, so user space sees the gap.
#[inline(always)]
pub fn emit_at(kind: u32, ts_ns: u64, fill: impl FnOnce(&mut RawEvent)) {
    let Some(s) = SEQ.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a per-CPU value, valid and 8-byte aligned while the program runs.
    let depth = unsafe { core::ptr::addr_of_mut!((*s).sending) };
    // An interrupted send on this CPU holds the previous seq and reserves
    // after us: say so, or user space takes the reordering for a loss.
    let nested = unsafe { *depth } != 0;
    atomic_add(depth, 1);
    let seq = bump(unsafe { &mut (*s).event });
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let ring = shard(cpu);
    // Wake the reader only when the buffer is filling up (see
    // Config::ringbuf_wake_bytes), checked on one send in QUERY_EVERY per
    // CPU: the check is a helper call, and the threshold is a quarter of the
    // buffer, far above that many events. Decided before the reservation, so
    // that the verifier's paths through the shards join there.
    let flags =
        if seq % QUERY_EVERY == 0 && ring.query(BPF_RB_AVAIL_DATA) >= conf!(ringbuf_wake_bytes) {
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        };
    match ring.reserve::<RawEvent>(0) {
        Some(mut slot) => {
            let p = slot.as_mut_ptr();
            let words = p.cast::<u64>();
            for i in 0..EVENT_WORDS {
                // SAFETY: `i` words into the reserved `RawEvent`, which is
                // 8-byte aligned and made of integers only, so all zero is a
                // valid value. Volatile, so that LLVM keeps word stores.
                unsafe { write_volatile(words.add(i), 0) };
            }
            // SAFETY: reserved for this event, and every byte written above.
            let ev = unsafe { &mut *p };
            ev.kind = kind;
            ev.cpu = cpu;
            ev.ts_ns = ts_ns;
            ev.seq = seq;
            fill(ev);
            if nested {
                ev.flags |= FLAG_NESTED_SEND;
            }
            slot.submit(flags);
        }
        None => count(CNT_DROPS),
    }
    atomic_add(depth, u64::MAX); // minus one
}
