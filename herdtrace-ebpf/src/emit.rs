//! Writing one event into the ring buffer, with sequence numbers for loss detection.
use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};
use herdtrace_common::{RawEvent, CNT_DROPS, CNT_EVENTS, FLAG_NESTED_SEND};

use crate::maps::{get, COUNTERS, EVENTS, SEQ};

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

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
fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        unsafe { *p += 1 };
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
    unsafe { *depth += 1 };
    ev.seq = bump(0);
    reserve_and_submit(ev);
    unsafe { *depth = (*depth).saturating_sub(1) };
}

/// SEQ index of the per-CPU count of `send`s in progress.
const SENDING: u32 = 2;

#[inline(always)]
fn reserve_and_submit(ev: &RawEvent) {
    match EVENTS.reserve::<RawEvent>(0) {
        Some(mut slot) => {
            slot.write(*ev);
            // Wake the reader only when the buffer is filling up (see RINGBUF_WAKE_BYTES).
            let flags = if EVENTS.query(BPF_RB_AVAIL_DATA) >= get::RINGBUF_WAKE_BYTES() {
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
