//! The engine's specification, as synthetic event streams.
use super::synth::{herd_stream, StreamBuilder, SynthTask};
use super::*;
use herdtrace_common::{AF_INET, FLAG_ACCEPT_KERNEL};
use proptest::prelude::*;

const L: u64 = 0xffff_8880_0000_1000; // listener
const L2: u64 = 0xffff_8880_0000_2000;
const W1: SynthTask = SynthTask::process(101, "worker1");
const W2: SynthTask = SynthTask::process(102, "worker2");
const W3: SynthTask = SynthTask::process(103, "worker3");
const W4: SynthTask = SynthTask::process(104, "worker4");

fn child(n: u64) -> u64 {
    0xffff_8881_0000_0000 + n * 0x800
}

fn chain(cpu: u64, n: u64) -> u64 {
    (cpu << 48) | n
}

/// Emits at once: most tests check exact emission points.
fn immediate() -> EngineConfig {
    EngineConfig {
        settle_grace_ns: 0,
        ..EngineConfig::default()
    }
}

/// Pushes every event; returns the records emitted while pushing (not at finish).
fn push_all(engine: &mut Engine, events: &[RawEvent]) -> Vec<ConnRecord> {
    let mut out = Vec::new();
    for ev in events {
        engine.push(ev, &mut |r| out.push(r));
    }
    out
}

fn finish(engine: &mut Engine) -> Vec<ConnRecord> {
    let mut out = Vec::new();
    engine.finish(&mut |r| out.push(r));
    out
}

/// Runs a whole stream, then finish: every record.
fn run(cfg: EngineConfig, events: &[RawEvent]) -> (Vec<ConnRecord>, Engine) {
    let mut e = Engine::new(cfg);
    let mut recs = push_all(&mut e, events);
    recs.extend(finish(&mut e));
    (recs, e)
}

/// woken, returned, spurious, eagain, eagain_losers: compared whole so a test states each.
fn counts(r: &ConnRecord) -> [u32; 5] {
    [r.woken, r.returned, r.spurious, r.eagain, r.eagain_losers]
}

fn by(t: SynthTask) -> Option<TaskRef> {
    Some(TaskRef {
        pid: t.pid,
        tid: t.tid,
        comm: t.comm.into(),
    })
}

fn task_row<'a>(s: &'a Summary, tid: u32, comm: &str) -> &'a TaskStats {
    s.tasks
        .iter()
        .find(|t| t.tid == tid && t.comm == comm)
        .unwrap_or_else(|| panic!("no task row {tid}/{comm} in {:?}", s.tasks))
}

/// The classic herd: 4 workers, one epoll each, all woken.
fn epoll_per_worker(b: &mut StreamBuilder, c: u64, n: u64, winner: SynthTask) {
    let ch = chain(0, n);
    b.arrival(0, ch, L, child(n));
    for (i, w) in [W1, W2, W3, W4].into_iter().enumerate() {
        b.epoll_cb(0, ch, 0xe000 + i as u64);
        b.wake(0, ch, w);
    }
    for w in [W1, W2, W3, W4] {
        b.poll_ret(1, w, 1);
        if w == winner {
            b.accept(1, w, L, child(c));
        } else {
            b.eagain(1, w, L);
        }
    }
}

#[test]
fn epoll_per_worker_herd_wakes_everyone_and_three_lose() {
    let mut b = StreamBuilder::new();
    let t0 = b.now();
    epoll_per_worker(&mut b, 1, 1, W2);
    let mut e = Engine::new(immediate());
    let early = push_all(&mut e, &b.take());
    // The winner has not yet had its chance to end a batch with EAGAIN.
    assert!(early.is_empty(), "closed too early: {early:?}");
    assert_eq!(e.open_episodes(), 1);
    // Its next return from epoll_wait ends that activation.
    b.poll_ret(1, W2, 1);
    let recs = push_all(&mut e, &b.take());
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.ts_ns, t0);
    assert_eq!(r.port, 8080);
    assert_eq!(r.peer, Some("127.0.0.1:40001".parse().expect("addr")));
    assert_eq!(r.accepted_by, by(W2));
    assert_eq!(counts(r), [4, 4, 0, 3, 3]);
    assert_eq!(r.epolls, 4);
    // W2's accept is the 13th event, 1 µs apart.
    assert_eq!(r.accept_latency_us, Some(12));
    assert!(!r.incomplete);
    let s = e.summary();
    assert_eq!(s.totals.connections, 1);
    assert_eq!(s.totals.woken_won, 1);
    assert_eq!(s.woken_per_conn.max, 4);
    let w2 = task_row(&s, 102, "worker2");
    assert_eq!((w2.accepts, w2.woken, w2.eagain, w2.spurious), (1, 1, 0, 0));
    let w1 = task_row(&s, 101, "worker1");
    assert_eq!((w1.accepts, w1.woken, w1.eagain, w1.spurious), (0, 1, 1, 0));
    assert_eq!(
        (w1.eagain_losers, w2.eagain_losers),
        (1, 0),
        "W1 lost the race"
    );
    assert_eq!(s.tasks[0].tid, 102, "sorted by accepts");
}

#[test]
fn many_herd_connections_aggregate_exactly() {
    let events = herd_stream(100, 4);
    let (recs, e) = run(immediate(), &events);
    assert_eq!(recs.len(), 100);
    assert!(recs.iter().all(|r| r.woken == 4 && r.eagain_losers == 3));
    let s = e.summary();
    assert_eq!(s.totals.connections, 100);
    assert_eq!(s.totals.eagain, 300);
    assert_eq!(s.totals.eagain_losers, 300);
    assert_eq!(s.totals.returned, 400);
    assert_eq!(s.totals.spurious, 0);
    assert_eq!(s.woken_histogram, vec![0, 0, 0, 0, 100]);
    assert_eq!(
        (
            s.woken_per_conn.mean,
            s.woken_per_conn.p50,
            s.woken_per_conn.p99
        ),
        (4.0, 4, 4)
    );
    assert_eq!(s.tasks.len(), 4);
    assert!(s.tasks.iter().all(|t| t.accepts == 25 && t.woken == 100));
    assert_eq!(s.lost_events, 0);
    assert_eq!(s.diagnostics, Diagnostics::default());
}

#[test]
fn episodes_interleaved_on_two_cpus_stay_apart() {
    let mut b = StreamBuilder::new();
    let (c1, c2) = (chain(0, 1), chain(1, 1));
    b.arrival(0, c1, L, child(1))
        .arrival(1, c2, L, child(2))
        .wake(0, c1, W1)
        .wake(1, c2, W3)
        .wake(0, c1, W2)
        .wake(1, c2, W4)
        .poll_ret(2, W1, 1)
        .poll_ret(3, W3, 1)
        .accept(2, W1, L, child(1))
        .accept(3, W3, L, child(2))
        .poll_ret(2, W2, 1)
        .eagain(2, W2, L)
        .poll_ret(3, W4, 0); // W4 returned with nothing: spurious
    let (recs, _) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 2);
    let r1 = recs.iter().find(|r| r.ts_ns == 1_000_000_000).expect("c1");
    let r2 = recs.iter().find(|r| r.ts_ns == 1_000_001_000).expect("c2");
    assert_eq!(r1.accepted_by, by(W1));
    assert_eq!(counts(r1), [2, 2, 0, 1, 1]);
    assert_eq!(r2.accepted_by, by(W3));
    assert_eq!(counts(r2), [2, 1, 1, 0, 0]);
}

#[test]
fn wake_by_a_second_connection_makes_the_first_spurious() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1)
        .wake(0, chain(0, 1), W2)
        .poll_ret(1, W2, 1)
        .accept(1, W2, L, child(1))
        // W1 never got to user space; a second connection wakes it again.
        .arrival(0, chain(0, 2), L, child(2))
        .wake(0, chain(0, 2), W1)
        .poll_ret(2, W1, 1)
        .accept(2, W1, L, child(2))
        .eagain(2, W1, L)
        .poll_ret(1, W2, 1);
    let (recs, e) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 2);
    let first = &recs
        .iter()
        .find(|r| r.accepted_by == by(W2))
        .expect("first");
    assert_eq!((first.woken, first.returned, first.spurious), (2, 1, 1));
    let second = &recs
        .iter()
        .find(|r| r.accepted_by == by(W1))
        .expect("second");
    assert_eq!(
        (
            second.woken,
            second.returned,
            second.spurious,
            second.eagain
        ),
        (1, 1, 0, 1)
    );
    assert_eq!(second.eagain_losers, 0, "W1 accepted before its EAGAIN");
    let s = e.summary();
    let w1 = task_row(&s, 101, "worker1");
    assert_eq!((w1.woken, w1.spurious, w1.accepts), (2, 1, 1));
}

/// lighttpd: one wake of two tasks, the first accepts in a loop until
/// EAGAIN (three connections), the second gets EAGAIN.
fn batch_accepting(b: &mut StreamBuilder) {
    for n in 1..=3 {
        b.arrival(0, chain(0, n), L, child(n));
    }
    b.wake(0, chain(0, 1), W1)
        .wake(0, chain(0, 1), W2)
        .poll_ret(1, W1, 1)
        .accept(1, W1, L, child(1))
        .accept(1, W1, L, child(2))
        .accept(1, W1, L, child(3))
        .eagain(1, W1, L)
        .poll_ret(2, W2, 1)
        .eagain(2, W2, L);
}

#[test]
fn batch_accepting_winner_is_not_a_loser() {
    let mut b = StreamBuilder::new();
    batch_accepting(&mut b);
    let (recs, e) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 3);
    let r1 = recs
        .iter()
        .find(|r| r.ts_ns == 1_000_000_000)
        .expect("first");
    assert_eq!(r1.accepted_by, by(W1));
    assert_eq!(
        (r1.woken, r1.returned, r1.eagain, r1.eagain_losers),
        (2, 2, 2, 1)
    );
    assert!(recs.iter().all(|r| r.accepted_by == by(W1)));
    let s = e.summary();
    assert_eq!(s.totals.eagain, 2);
    assert_eq!(s.totals.eagain_losers, 1);
    assert_eq!(task_row(&s, 101, "worker1").accepts, 3);
    // Per task: the winner's EAGAIN ends its loop, the other's lost the race.
    let (w1, w2) = (task_row(&s, 101, "worker1"), task_row(&s, 102, "worker2"));
    assert_eq!((w1.eagain, w1.eagain_losers), (1, 0));
    assert_eq!((w2.eagain, w2.eagain_losers), (1, 1));
}

/// io_uring before 5.18 as the kprobe and fentry backends see it: every
/// ring is woken, each tries the accept inside the kernel, the losers get
/// EAGAIN there and re-arm; no return to user space is traced between.
#[test]
fn a_ring_woken_after_earlier_accepts_that_gets_eagain_is_a_loser() {
    let mut b = StreamBuilder::new();
    for (n, w) in [(1, W1), (2, W2)] {
        b.arrival(0, chain(0, n), L, child(n))
            .wake(0, chain(0, n), W1)
            .wake(0, chain(0, n), W2)
            .accept(1, w, L, child(n))
            .eagain(2, if n == 1 { W2 } else { W1 }, L);
    }
    let (recs, e) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!((r.woken, r.eagain, r.eagain_losers), (2, 1, 1), "{r:?}");
    }
    let s = e.summary();
    assert_eq!((s.totals.eagain, s.totals.eagain_losers), (2, 2));
    let (w1, w2) = (task_row(&s, 101, "worker1"), task_row(&s, 102, "worker2"));
    assert_eq!((w1.accepts, w1.eagain_losers), (1, 1));
    assert_eq!((w2.accepts, w2.eagain_losers), (1, 1));
}

#[test]
fn blocking_accept_wake_returns_inside_accept() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1)
        .accept(1, W1, L, child(1));
    let mut e = Engine::new(immediate());
    // Complete at the accept: no poll events in this model.
    let recs = push_all(&mut e, &b.take());
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.accepted_by, by(W1));
    assert_eq!(
        (r.woken, r.returned, r.spurious, r.eagain, r.epolls),
        (1, 1, 0, 0, 0)
    );
}

#[test]
fn edge_triggered_shared_epoll_wakes_one() {
    let t1 = SynthTask::thread(200, 201, "srv");
    let t2 = SynthTask::thread(200, 202, "srv");
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .epoll_cb(0, chain(0, 1), 0xe1)
        .wake(0, chain(0, 1), t1)
        .poll_ret(1, t1, 1)
        .accept(1, t1, L, child(1))
        .eagain(1, t1, L)
        .poll_ret(2, t2, 0); // another thread, not woken by this chain
    let (recs, e) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        (r.woken, r.returned, r.eagain, r.eagain_losers, r.epolls),
        (1, 1, 1, 0, 1)
    );
    assert_eq!(
        r.accepted_by.as_ref().map(|t| (t.pid, t.tid)),
        Some((200, 201))
    );
    assert_eq!(e.summary().tasks.len(), 1, "t2 did nothing");
}

#[test]
fn level_triggered_shared_epoll_cascade_wakes_count() {
    let t1 = SynthTask::thread(200, 201, "srv");
    let t2 = SynthTask::thread(200, 202, "srv");
    let t3 = SynthTask::thread(200, 203, "srv");
    let mut b = StreamBuilder::new();
    // t1 is woken by the listener, and wakes t2 from ep_poll before returning;
    // t2 in turn wakes t3, which finds nothing left.
    b.arrival(0, chain(0, 1), L, child(1))
        .epoll_cb(0, chain(0, 1), 0xe1)
        .wake(0, chain(0, 1), t1)
        .cascade_wake(1, chain(0, 1), t2)
        .poll_ret(1, t1, 1)
        .accept(1, t1, L, child(1))
        .cascade_wake(2, chain(0, 1), t3)
        .poll_ret(2, t2, 1)
        .eagain(2, t2, L)
        .send_events(3, t3, 0)
        .eagain(1, t1, L);
    let (recs, _) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(counts(r), [3, 2, 1, 2, 1]);
    assert_eq!(r.epolls, 1);
}

#[test]
fn lost_events_mark_open_episodes_incomplete() {
    let mut b = StreamBuilder::new();
    // Closed before the loss: stays complete.
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1)
        .accept(1, W1, L, child(1));
    // Open across the loss.
    b.arrival(0, chain(0, 2), L, child(2))
        .wake(0, chain(0, 2), W2)
        .lose(0, 3)
        .wake(0, chain(0, 2), W3)
        .accept(1, W2, L, child(2));
    // Opened after the loss.
    b.arrival(0, chain(0, 3), L, child(3))
        .wake(0, chain(0, 3), W1)
        .accept(1, W1, L, child(3));
    let events = b.take();
    let mut e = Engine::new(immediate());
    let mut recs = push_all(&mut e, &events);
    recs.extend(finish(&mut e));
    assert_eq!(recs.len(), 3);
    let inc: Vec<bool> = recs.iter().map(|r| r.incomplete).collect();
    let order: Vec<u64> = recs.iter().map(|r| r.ts_ns).collect();
    let idx = |ts| order.iter().position(|&t| t == ts).expect("record");
    assert!(!inc[idx(events[0].ts_ns)]);
    assert!(inc[idx(events[3].ts_ns)]);
    assert!(!inc[idx(events[7].ts_ns)]);
    let s = e.summary();
    assert_eq!(s.lost_events, 3);
    assert_eq!(s.totals.incomplete, 1);
    // The counts of the incomplete one are what was seen, not invented.
    let r2 = &recs[idx(events[3].ts_ns)];
    assert_eq!((r2.woken, r2.returned, r2.spurious), (2, 1, 1));
}

#[test]
fn kernel_reported_drops_count_once_with_seq_gaps() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1));
    b.lose(0, 5).wake(0, chain(0, 1), W1);
    let mut e = Engine::new(immediate());
    push_all(&mut e, &b.take());
    assert_eq!(e.lost_events(), 5);
    // The kernel counter reports the same 5 drops: no new loss, no new flag.
    b.arrival(0, chain(0, 2), L, child(2));
    push_all(&mut e, &b.take());
    e.note_lost(5);
    assert_eq!(e.lost_events(), 5);
    // Two more drops that no gap showed (e.g. at the tail of a CPU's stream).
    b.arrival(0, chain(0, 3), L, child(3));
    push_all(&mut e, &b.take());
    e.note_lost(2);
    assert_eq!(e.lost_events(), 7);
    let recs = finish(&mut e);
    let flags: Vec<(u64, bool)> = recs.iter().map(|r| (r.ts_ns, r.incomplete)).collect();
    // Chain 1 saw the gap; chains 2 and 3 were open at the second report.
    assert_eq!(recs.iter().filter(|r| r.incomplete).count(), 3, "{flags:?}");
    assert_eq!(e.summary().totals.incomplete, 3);
}

#[test]
fn note_lost_before_any_gap_flags_open_episodes() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1));
    let mut e = Engine::new(immediate());
    push_all(&mut e, &b.take());
    e.note_lost(1);
    b.arrival(0, chain(0, 2), L, child(2));
    push_all(&mut e, &b.take());
    let recs = finish(&mut e);
    assert_eq!(
        recs.iter().map(|r| r.incomplete).collect::<Vec<_>>(),
        vec![true, false]
    );
    e.note_lost(0);
    assert_eq!(e.lost_events(), 1);
}

#[test]
fn seq_going_backwards_is_a_reset_and_a_late_event_fills_its_gap() {
    let ev = |cpu, seq| RawEvent {
        kind: herdtrace_common::EV_POLL_RET,
        cpu,
        seq,
        tid: 9,
        ts_ns: 5,
        ..RawEvent::default()
    };
    let mut e = Engine::new(immediate());
    // Reset: 5000 -> 1 -> 2, no gap.
    push_all(&mut e, &[ev(0, 5000), ev(0, 1), ev(0, 2)]);
    assert_eq!(e.lost_events(), 0);
    // Reordered on one CPU: 3, 5, 4 — the gap at 5 is filled by 4.
    push_all(&mut e, &[ev(0, 3), ev(0, 5), ev(0, 4), ev(0, 6)]);
    assert_eq!(e.lost_events(), 0);
    // A real gap on another CPU; a duplicate does not cancel it.
    push_all(&mut e, &[ev(1, 10), ev(1, 13), ev(1, 13)]);
    assert_eq!(e.lost_events(), 2);
    // A garbage CPU number is not tracked (and does not allocate per CPU).
    push_all(&mut e, &[ev(u32::MAX, 1), ev(u32::MAX, 100)]);
    assert_eq!(e.lost_events(), 2);
}

#[test]
fn reused_tid_is_a_new_task_row() {
    let old = SynthTask::process(300, "oldsrv");
    let new = SynthTask::process(300, "newsrv");
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), old)
        .task_exit(1, old)
        .task_new(1, new, 1)
        .arrival(0, chain(0, 2), L, child(2))
        .wake(0, chain(0, 2), new)
        .accept(1, new, L, child(2));
    let (recs, e) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 2);
    let r1 = recs
        .iter()
        .find(|r| r.ts_ns == 1_000_000_000)
        .expect("first");
    assert_eq!((r1.woken, r1.spurious), (1, 1), "exit while woken");
    assert_eq!(r1.accepted_by, None);
    let s = e.summary();
    let o = task_row(&s, 300, "oldsrv");
    assert_eq!((o.woken, o.spurious, o.accepts), (1, 1, 0));
    let n = task_row(&s, 300, "newsrv");
    assert_eq!((n.woken, n.spurious, n.accepts), (1, 0, 1));
}

#[test]
fn task_new_over_a_live_tid_replaces_its_identity() {
    let a = SynthTask::process(400, "a");
    let a2 = SynthTask::process(400, "a2");
    let c = SynthTask::thread(401, 400, "c"); // same tid, other process
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), a)
        .task_new(1, a2, 1) // exit of `a` was not seen
        .accept(1, a2, L, child(1))
        .accept(1, c, L, 0xdead); // tgid changed without any task event
    let (recs, e) = run(immediate(), &b.take());
    assert_eq!(recs[0].spurious, 1, "a's pending wake resolved as spurious");
    assert_eq!(recs[0].accepted_by, by(a2));
    let s = e.summary();
    assert_eq!(s.tasks.len(), 3);
    assert_eq!(task_row(&s, 400, "c").pid, 401);
    assert_eq!(task_row(&s, 400, "a").accepts, 0);
    assert_eq!(s.diagnostics.unmatched_accepts, 1);
}

#[test]
fn accept_of_an_untraced_arrival_is_unmatched_but_counted() {
    let mut b = StreamBuilder::new();
    b.poll_ret(1, W1, 1).accept(1, W1, L, child(9));
    let (recs, e) = run(immediate(), &b.take());
    assert!(recs.is_empty());
    let s = e.summary();
    assert_eq!(s.diagnostics.unmatched_accepts, 1);
    assert_eq!(task_row(&s, 101, "worker1").accepts, 1);
    assert_eq!(s.totals.connections, 0);
}

#[test]
fn accept_without_child_takes_the_oldest_unaccepted_on_the_listener() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, 0)
        .arrival(0, chain(0, 2), L, 0)
        .arrival(0, chain(0, 3), L2, 0)
        .accept(1, W1, L, 0)
        .accept(1, W2, L, 0)
        .accept(1, W3, 0, 0); // neither child nor listener: unmatched
    let (recs, e) = run(immediate(), &b.take());
    let who: Vec<(u64, Option<u32>)> = recs
        .iter()
        .map(|r| (r.ts_ns, r.accepted_by.as_ref().map(|t| t.tid)))
        .collect();
    assert!(who.contains(&(1_000_000_000, Some(101))), "{who:?}");
    assert!(who.contains(&(1_000_001_000, Some(102))), "{who:?}");
    assert!(who.contains(&(1_000_002_000, None)), "{who:?}");
    assert_eq!(e.summary().diagnostics.unmatched_accepts, 1);
}

#[test]
fn episode_times_out_by_stream_time() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1)
        .wake(0, chain(0, 1), W2)
        .poll_ret(1, W2, 1);
    let mut e = Engine::new(immediate());
    assert!(push_all(&mut e, &b.take()).is_empty());
    // Any event 1 s after the arrival closes it, before being handled itself.
    b.at(2_000_000_000).poll_ret(3, W3, 0);
    let recs = push_all(&mut e, &b.take());
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.accepted_by, None);
    assert_eq!(r.accept_latency_us, None);
    assert_eq!((r.woken, r.returned, r.spurious), (2, 1, 1));
    assert!(!r.incomplete);
    assert_eq!(task_row(&e.summary(), 101, "worker1").spurious, 1);
    // W1's wake is gone with the episode: its late return counts nowhere.
    b.poll_ret(1, W1, 1);
    push_all(&mut e, &b.take());
    assert!(finish(&mut e).is_empty());
    assert_eq!(e.summary().totals.returned, 1);
    assert_eq!(e.summary().totals.unaccepted, 1);
}

#[test]
fn advance_to_closes_timed_out_episodes_without_events() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1));
    let mut e = Engine::new(immediate());
    push_all(&mut e, &b.take());
    let mut out = Vec::new();
    e.advance_to(1_999_999_999, &mut |r| out.push(r));
    assert!(out.is_empty(), "not yet: 1 s not passed");
    e.advance_to(2_000_000_000, &mut |r| out.push(r));
    assert_eq!(out.len(), 1);
    assert_eq!(e.open_episodes(), 0);
    // A clock behind stream time does not move it back.
    e.advance_to(5, &mut |r| out.push(r));
    assert_eq!(e.stream_ns(), 2_000_000_000);
}

#[test]
fn over_max_open_episodes_the_oldest_is_evicted_incomplete() {
    let cfg = EngineConfig {
        max_open_episodes: 2,
        ..immediate()
    };
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1)
        .arrival(0, chain(0, 2), L, child(2))
        .arrival(0, chain(0, 3), L, child(3));
    let mut e = Engine::new(cfg);
    let recs = push_all(&mut e, &b.take());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].ts_ns, 1_000_000_000);
    assert!(recs[0].incomplete);
    assert_eq!(recs[0].spurious, 1);
    assert_eq!(e.open_episodes(), 2);
    // The evicted chain is gone: its child matches nothing now (it waits for
    // an arrival that never comes, and counts as unmatched at the end).
    b.accept(1, W2, L, child(1)).accept(1, W2, L, child(3));
    let accepted = push_all(&mut e, &b.take());
    assert_eq!(e.summary().diagnostics.unmatched_accepts, 0);
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].accepted_by, by(W2));
    let rest = finish(&mut e);
    assert_eq!(e.summary().diagnostics.unmatched_accepts, 1);
    assert_eq!(rest.len(), 1);
    assert!(accepted.iter().chain(&rest).all(|r| !r.incomplete));
    assert_eq!(e.summary().totals.incomplete, 1);
}

#[test]
fn out_of_order_timestamps_across_cpus() {
    let mut b = StreamBuilder::new();
    // CPU 1's clock is a little behind CPU 0's.
    b.at(1_000_050_000).arrival(0, chain(0, 1), L, child(1));
    b.at(1_000_040_000).wake(0, chain(0, 1), W1);
    b.at(1_000_020_000)
        .poll_ret(1, W1, 1)
        .accept(1, W1, L, child(1))
        .eagain(1, W1, L);
    let (recs, e) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].accept_latency_us, Some(0), "clamped, not negative");
    assert_eq!(recs[0].returned, 1);
    assert_eq!(e.stream_ns(), 1_000_050_000, "stream time never goes back");
}

#[test]
fn eintr_and_zero_event_returns_are_spurious() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1)
        .wake(0, chain(0, 1), W2)
        .wake(0, chain(0, 1), W3)
        .poll_ret(1, W1, -i64::from(libc::EINTR))
        .poll_ret(2, W2, 0)
        .poll_ret(3, W3, 1)
        .accept(3, W3, L, child(1))
        .eagain(3, W3, L)
        // W1 retries after EINTR: a plain new activation, nothing counted twice.
        .poll_ret(1, W1, 0);
    let (recs, _) = run(immediate(), &b.take());
    let r = &recs[0];
    assert_eq!(counts(r), [3, 1, 2, 1, 0]);
}

#[test]
fn send_events_resolves_in_the_kernel_and_poll_ret_does_not_count_again() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1)
        .wake(0, chain(0, 1), W2)
        .send_events(1, W1, 1)
        .poll_ret(1, W1, 1) // same activation as the send_events
        .accept(1, W1, L, child(1))
        .send_events(2, W2, 0); // found nothing, back to sleep
    let mut e = Engine::new(immediate());
    assert!(push_all(&mut e, &b.take()).is_empty(), "W1 not settled yet");
    // W1's next activation settles it.
    b.send_events(1, W1, 1).poll_ret(1, W1, 1);
    let recs = push_all(&mut e, &b.take());
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!((r.woken, r.returned, r.spurious), (2, 1, 1));
    assert_eq!(task_row(&e.summary(), 102, "worker2").spurious, 1);
}

#[test]
fn send_events_error_is_spurious() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1)
        .send_events(1, W1, -14)
        .poll_ret(1, W1, -14)
        .accept(2, W2, L, child(1));
    let (recs, _) = run(immediate(), &b.take());
    assert_eq!((recs[0].returned, recs[0].spurious), (0, 1));
}

#[test]
fn wake_of_an_unknown_chain_is_an_orphan() {
    let mut b = StreamBuilder::new();
    b.wake(0, chain(0, 77), W1).epoll_cb(0, chain(0, 77), 1);
    let (recs, e) = run(immediate(), &b.take());
    assert!(recs.is_empty());
    let s = e.summary();
    assert_eq!(s.diagnostics.orphan_wakes, 1);
    assert!(s.tasks.is_empty(), "an orphan wake is no task activity");
}

#[test]
fn duplicate_wake_and_arrival_count_once() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .arrival(0, chain(0, 1), L, child(1))
        .epoll_cb(0, chain(0, 1), 5)
        .epoll_cb(0, chain(0, 1), 5)
        .wake(0, chain(0, 1), W1)
        .wake(0, chain(0, 1), W1)
        .accept(1, W1, L, child(1));
    let (recs, e) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].woken, recs[0].epolls, recs[0].returned), (1, 1, 1));
    assert_eq!(task_row(&e.summary(), 101, "worker1").woken, 1);
}

#[test]
fn eagain_attribution_falls_back_to_the_listener_then_gives_up() {
    let mut b = StreamBuilder::new();
    // W1 was woken by a connection on L2 but fails accept on L.
    b.arrival(0, chain(0, 1), L2, child(1))
        .wake(0, chain(0, 1), W1)
        .poll_ret(1, W1, 1)
        .arrival(0, chain(0, 2), L, child(2))
        .arrival(0, chain(0, 3), L, child(3))
        .eagain(1, W1, L) // -> newest open on L: chain 3
        .eagain(2, W2, L2) // W2 never woken -> newest on L2: chain 1
        .eagain(2, W2, 0) // no listener, no episode of its own -> unattributed
        .eagain(2, W3, 0xbad); // listener with nothing open -> unattributed
    let (recs, e) = run(immediate(), &b.take());
    let at = |ts: u64| recs.iter().find(|r| r.ts_ns == ts).expect("record");
    assert_eq!(
        (at(1_000_000_000).eagain, at(1_000_000_000).eagain_losers),
        (1, 1)
    );
    assert_eq!(at(1_000_003_000).eagain, 0);
    assert_eq!(
        (at(1_000_004_000).eagain, at(1_000_004_000).eagain_losers),
        (1, 1)
    );
    let s = e.summary();
    assert_eq!(s.diagnostics.eagain_unattributed, 2);
    assert_eq!(task_row(&s, 102, "worker2").eagain, 2);
}

#[test]
fn eagain_with_unknown_listener_uses_the_tasks_episode() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1)
        .wake(0, chain(0, 1), W2)
        .poll_ret(1, W1, 1)
        .poll_ret(2, W2, 1)
        .accept(1, W1, 0, child(1))
        .eagain(2, W2, 0)
        .eagain(1, W1, 0);
    let (recs, _) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].eagain, recs[0].eagain_losers), (2, 1));
}

#[test]
fn other_accept_errors_are_neither_eagain_nor_accepts() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1)
        .wake(0, chain(0, 1), W2)
        .poll_ret(1, W1, 1)
        .accept_err(1, W1, L, libc::EMFILE)
        .accept(2, W2, L, child(1));
    let (recs, e) = run(immediate(), &b.take());
    assert_eq!(recs[0].eagain, 0);
    assert_eq!(recs[0].accepted_by, by(W2));
    let s = e.summary();
    assert_eq!(
        (
            task_row(&s, 101, "worker1").accepts,
            task_row(&s, 101, "worker1").eagain
        ),
        (0, 0)
    );
}

#[test]
fn exit_of_a_woken_task_is_spurious() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1)
        .wake(0, chain(0, 1), W2)
        .task_exit(1, W1)
        .accept(2, W2, L, child(1));
    let mut e = Engine::new(immediate());
    let recs = push_all(&mut e, &b.take());
    assert_eq!(recs.len(), 1, "complete: W1 settled by its exit");
    assert_eq!((recs[0].returned, recs[0].spurious), (1, 1));
}

#[test]
fn settle_grace_catches_wakes_emitted_after_the_accept() {
    let cfg = EngineConfig {
        settle_grace_ns: 1_000_000,
        ..EngineConfig::default()
    };
    let mut b = StreamBuilder::new();
    // W1 was busy and accepted before the softirq finished waking W2.
    b.arrival(0, chain(0, 1), L, child(1))
        .accept(1, W1, L, child(1))
        .wake(0, chain(0, 1), W2)
        .poll_ret(2, W2, 1)
        .eagain(2, W2, L);
    let mut e = Engine::new(cfg);
    assert!(push_all(&mut e, &b.take()).is_empty(), "held for the grace");
    b.advance(990_000).poll_ret(3, W3, 0);
    assert!(
        push_all(&mut e, &b.take()).is_empty(),
        "still within the grace"
    );
    let mut out = Vec::new();
    e.advance_to(b.now() + 1_000_000, &mut |r| out.push(r));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].woken, out[0].eagain_losers), (1, 1));
    assert_eq!(e.summary().diagnostics.orphan_wakes, 0);
}

#[test]
fn an_episode_reopened_by_a_late_wake_waits_for_it() {
    let cfg = EngineConfig {
        settle_grace_ns: 1_000,
        ..EngineConfig::default()
    };
    let mut b = StreamBuilder::new();
    b.step(100)
        .arrival(0, chain(0, 1), L, child(1))
        .accept(1, W1, L, child(1)) // complete, queued
        .wake(0, chain(0, 1), W2); // no longer complete
    let mut e = Engine::new(cfg);
    push_all(&mut e, &b.take());
    b.advance(5_000).poll_ret(2, W3, 0);
    assert!(push_all(&mut e, &b.take()).is_empty(), "W2 still pending");
    b.poll_ret(2, W2, 1).eagain(2, W2, L);
    push_all(&mut e, &b.take());
    let mut out = Vec::new();
    e.advance_to(b.now() + 2_000, &mut |r| out.push(r));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].woken, out[0].returned, out[0].eagain), (1, 1, 1));
}

#[test]
fn intervals_are_deltas() {
    let mut e = Engine::new(immediate());
    push_all(&mut e, &herd_stream(10, 2));
    let i1 = e.take_interval();
    // The 10th winner is not settled until finish.
    assert_eq!(i1.tally.connections, 9);
    assert_eq!(i1.tally.woken, 18);
    assert_eq!(i1.tally.woken_max, 2);
    assert_eq!(i1.ts_ns, e.stream_ns());
    finish(&mut e);
    let i2 = e.take_interval();
    assert_eq!(i2.tally.connections, 1);
    e.note_lost(4);
    let i3 = e.take_interval();
    assert_eq!((i3.tally.connections, i3.lost_events), (0, 4));
    assert_eq!(e.take_interval().lost_events, 0);
    assert_eq!(e.summary().totals.connections, 10);
}

#[test]
fn woken_histogram_and_percentiles_over_mixed_connections() {
    let mut b = StreamBuilder::new();
    for n in 0..10u64 {
        let ch = chain(0, n);
        b.arrival(0, ch, L, child(n));
        let herd: &[SynthTask] = if n == 9 { &[W1, W2, W3, W4] } else { &[W1] };
        for w in herd {
            b.wake(0, ch, *w);
        }
        b.accept(1, W1, L, child(n));
        for w in &herd[1..] {
            b.poll_ret(2, *w, 0);
        }
    }
    let (_, e) = run(immediate(), &b.take());
    let s = e.summary();
    assert_eq!(s.woken_histogram, vec![0, 9, 0, 0, 1]);
    assert_eq!(s.woken_per_conn.p50, 1);
    assert_eq!(s.woken_per_conn.p99, 4);
    assert!((s.woken_per_conn.mean - 1.3).abs() < 1e-9);
    assert_eq!(s.totals.spurious, 3);
}

#[test]
fn peer_is_none_when_the_probe_had_no_address() {
    let ev = RawEvent {
        kind: herdtrace_common::EV_ARRIVAL,
        chain: 1,
        sk: L,
        child: 0,
        family: 0,
        ..RawEvent::default()
    };
    let (recs, _) = run(immediate(), &[ev]);
    assert_eq!(recs[0].peer, None);
    let v6 = RawEvent {
        family: herdtrace_common::AF_INET6,
        peer_addr: std::net::Ipv6Addr::LOCALHOST.octets(),
        peer_port: 9,
        chain: 2,
        ..ev
    };
    let (recs, _) = run(immediate(), &[v6]);
    assert_eq!(recs[0].peer, Some("[::1]:9".parse().expect("addr")));
}

// ---- property tests -------------------------------------------------------

fn arb_event() -> impl Strategy<Value = RawEvent> {
    (
        1u32..=herdtrace_common::EV_MAX + 1, // kind (one past max: ignored)
        0u32..3,                             // cpu
        0u64..4_000_000_000,                 // ts
        0u64..40,                            // seq
        (0u32..3, 1u32..6),                  // tgid, tid
        0u64..6,                             // chain
        prop_oneof![Just(0u64), Just(L), Just(L2)],
        0u64..6, // child
        prop_oneof![Just(-11i64), Just(-4), Just(0), Just(1), Just(3)],
        0u64..3, // aux
    )
        .prop_map(
            |(kind, cpu, ts_ns, seq, (tgid, tid), chain, sk, child, ret, aux)| RawEvent {
                kind,
                cpu,
                ts_ns,
                seq,
                tgid,
                tid,
                chain,
                sk,
                child,
                ret,
                aux,
                family: AF_INET,
                ..RawEvent::default()
            },
        )
}

fn arb_config() -> impl Strategy<Value = EngineConfig> {
    (
        prop_oneof![Just(1_000_000_000u64), Just(1_000u64)],
        1usize..5,
        prop_oneof![Just(0u64), Just(2_000_000)],
    )
        .prop_map(|(t, m, g)| EngineConfig {
            episode_timeout_ns: t,
            max_open_episodes: m,
            settle_grace_ns: g,
        })
}

/// Random streams, ordered by time with some jitter, plus the herd shape.
fn arb_stream() -> impl Strategy<Value = Vec<RawEvent>> {
    prop_oneof![
        proptest::collection::vec(arb_event(), 0..120),
        proptest::collection::vec(arb_event(), 0..120).prop_map(|mut v| {
            v.sort_by_key(|e| e.ts_ns / 1_000_000);
            v
        }),
        (1u64..20, 1u32..6).prop_map(|(c, w)| herd_stream(c, w)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn engine_invariants_hold_on_random_streams(
        cfg in arb_config(),
        stream in arb_stream(),
        lost_at in proptest::option::of(0usize..120),
        tick_at in proptest::option::of(0usize..120),
    ) {
        let mut e = Engine::new(cfg);
        let mut recs = Vec::new();
        for (i, ev) in stream.iter().enumerate() {
            if lost_at == Some(i) {
                e.note_lost(2);
            }
            if tick_at == Some(i) {
                e.advance_to(ev.ts_ns, &mut |r| recs.push(r));
            }
            e.push(ev, &mut |r| recs.push(r));
            prop_assert!(e.open_episodes() <= cfg.max_open_episodes);
        }
        e.finish(&mut |r| recs.push(r));
        prop_assert_eq!(e.open_episodes(), 0);
        let s = e.summary();
        prop_assert_eq!(s.totals.connections, recs.len() as u64);
        prop_assert_eq!(s.woken_histogram.iter().sum::<u64>(), recs.len() as u64);
        for r in &recs {
            prop_assert!(r.returned + r.spurious <= r.woken, "{:?}", r);
            prop_assert!(r.eagain_losers <= r.eagain, "{:?}", r);
            prop_assert_eq!(r.accept_latency_us.is_some(), r.accepted_by.is_some());
            // Closing gives every wake an outcome (stronger than <=).
            prop_assert_eq!(r.returned + r.spurious, r.woken, "{:?}", r);
        }
        let sum = |f: fn(&ConnRecord) -> u32| recs.iter().map(|r| u64::from(f(r))).sum::<u64>();
        prop_assert_eq!(s.totals.woken, sum(|r| r.woken));
        prop_assert_eq!(s.totals.returned, sum(|r| r.returned));
        prop_assert_eq!(s.totals.spurious, sum(|r| r.spurious));
        prop_assert_eq!(s.totals.eagain, sum(|r| r.eagain));
        prop_assert_eq!(s.totals.eagain_losers, sum(|r| r.eagain_losers));
        prop_assert_eq!(s.totals.incomplete, recs.iter().filter(|r| r.incomplete).count() as u64);
        // Per-task counts are the same wakes seen from the other side.
        let task_woken: u64 = s.tasks.iter().map(|t| t.woken).sum();
        prop_assert_eq!(task_woken, s.totals.woken);
        let task_spurious: u64 = s.tasks.iter().map(|t| t.spurious).sum();
        prop_assert_eq!(task_spurious, s.totals.spurious);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The two shortcuts of the hot path change nothing: `expire` skipped
    /// until its next deadline gives the records of an engine that expires
    /// at every event, and an engine asked for no records (nobody reads
    /// them) ends with the same summary and passes none on.
    #[test]
    fn lazy_expiry_and_records_off_change_nothing(
        cfg in arb_config(),
        stream in arb_stream(),
        tick_at in proptest::option::of(0usize..120),
    ) {
        let mut lazy = Engine::new(cfg);
        let mut eager = Engine::new(cfg);
        let mut counted = Engine::new(cfg);
        counted.set_records(false);
        let (mut a, mut b, mut none) = (Vec::new(), Vec::new(), Vec::new());
        for (i, ev) in stream.iter().enumerate() {
            if tick_at == Some(i) {
                lazy.advance_to(ev.ts_ns, &mut |r| a.push(r));
                eager.advance_to(ev.ts_ns, &mut |r| b.push(r));
                counted.advance_to(ev.ts_ns, &mut |r| none.push(r));
            }
            eager.expire_at_next_event();
            lazy.push(ev, &mut |r| a.push(r));
            eager.push(ev, &mut |r| b.push(r));
            counted.push(ev, &mut |r| none.push(r));
            // Emitted at the same events, not only in the end.
            prop_assert_eq!(a.len(), b.len());
        }
        lazy.finish(&mut |r| a.push(r));
        eager.finish(&mut |r| b.push(r));
        counted.finish(&mut |r| none.push(r));
        prop_assert_eq!(&a, &b);
        prop_assert!(none.is_empty());
        let (s_lazy, s_eager, s_counted) = (lazy.summary(), eager.summary(), counted.summary());
        prop_assert_eq!(format!("{s_lazy:?}"), format!("{s_eager:?}"));
        prop_assert_eq!(format!("{s_lazy:?}"), format!("{s_counted:?}"));
        prop_assert_eq!(
            s_lazy.totals.unaccepted,
            a.iter().filter(|r| r.accepted_by.is_none()).count() as u64
        );
    }
}

/// Before 6.6 the tracepoint backend infers arrivals from
/// `inet_sock_set_state` and does not know the listener socket (sk = 0):
/// accepts still match by child and EAGAINs by local port.
#[test]
fn substitute_arrivals_without_listener_still_count_losers() {
    let mut b = StreamBuilder::new();
    let c = chain(0, 1);
    b.arrival(0, c, 0, child(1));
    for w in [W1, W2, W3, W4] {
        b.wake(0, c, w);
    }
    for w in [W1, W2, W3, W4] {
        b.poll_ret(1, w, 1);
    }
    b.accept(1, W2, L, child(1));
    for w in [W1, W3, W4] {
        b.eagain(1, w, L);
    }
    for w in [W1, W2, W3, W4] {
        b.poll_ret(1, w, 1);
    }
    let (recs, e) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.accepted_by, by(W2));
    assert_eq!((r.woken, r.eagain, r.eagain_losers), (4, 3, 3));
    assert_eq!(e.summary().diagnostics, Diagnostics::default());
}

/// A task on another CPU can take a child off the accept queue before the
/// handshake tracepoint and the listener's wakeup report its arrival: the
/// accept waits for that arrival instead of being lost.
#[test]
fn an_accept_seen_before_its_arrival_is_matched_when_it_comes() {
    let mut b = StreamBuilder::new();
    b.accept(1, W2, L, child(1));
    let t1 = b.now();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1);
    b.poll_ret(0, W1, 1).eagain(0, W1, L);
    let (recs, e) = run(immediate(), &b.take());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].accepted_by, by(W2));
    assert_eq!(recs[0].ts_ns, t1);
    // Accepted before the arrival was stamped: latency 0, never negative.
    assert_eq!(recs[0].accept_latency_us, Some(0));
    assert_eq!(e.summary().diagnostics.unmatched_accepts, 0);
    assert_eq!(e.summary().totals.unaccepted, 0);
    assert_eq!(task_row(&e.summary(), 102, "worker2").accepts, 1);
}

/// An early accept whose arrival never comes is unmatched once it has
/// waited EARLY_ACCEPT_WAIT_NS of stream time, and does not match a later
/// connection that reuses the child's address.
#[test]
fn an_early_accept_without_an_arrival_expires_as_unmatched() {
    let mut b = StreamBuilder::new();
    b.accept(1, W2, L, child(1));
    let mut e = Engine::new(immediate());
    push_all(&mut e, &b.take());
    e.advance_to(b.now() + EARLY_ACCEPT_WAIT_NS, &mut |_| {});
    assert_eq!(e.summary().diagnostics.unmatched_accepts, 1);
    let later = b.now() + EARLY_ACCEPT_WAIT_NS + 1;
    b.at(later).arrival(0, chain(0, 9), L, child(1));
    let recs = push_all(&mut e, &b.take());
    assert!(recs.is_empty());
    let rest = finish(&mut e);
    assert_eq!(rest.len(), 1);
    assert_eq!(
        rest[0].accepted_by, None,
        "the expired accept is not reused"
    );
}

/// Skipped runs (the kernel's recursion guard) flag the connections open at
/// that moment as possibly incomplete, and only those.
#[test]
fn skipped_runs_flag_open_episodes_possibly_incomplete() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .wake(0, chain(0, 1), W1);
    let mut e = Engine::new(immediate());
    push_all(&mut e, &b.take());
    e.note_skipped(0); // nothing skipped: nothing flagged
    b.arrival(0, chain(0, 2), L, child(2));
    push_all(&mut e, &b.take());
    e.note_skipped(3);
    b.arrival(0, chain(0, 3), L, child(3));
    let recs = {
        let mut r = push_all(&mut e, &b.take());
        r.extend(finish(&mut e));
        r
    };
    let flags: Vec<(u64, bool)> = recs
        .iter()
        .map(|r| (r.ts_ns, r.possibly_incomplete))
        .collect();
    assert_eq!(recs.len(), 3, "{flags:?}");
    let third = recs
        .iter()
        .find(|r| r.port == 8080 && !r.possibly_incomplete);
    assert!(
        third.is_some(),
        "the connection that arrived after the skip is clean: {flags:?}"
    );
    assert_eq!(recs.iter().filter(|r| r.possibly_incomplete).count(), 2);
    assert!(recs.iter().all(|r| !r.incomplete), "not a certain loss");
    let s = e.summary();
    assert_eq!(s.totals.possibly_incomplete, 2);
    assert_eq!(s.skipped_runs, 3);
}

/// Skips of programs that cannot change a connection's figures are counted,
/// not flagged.
#[test]
fn harmless_skips_are_counted_not_flagged() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1));
    let mut e = Engine::new(immediate());
    push_all(&mut e, &b.take());
    e.note_skipped_runs(4, false);
    let recs = finish(&mut e);
    assert!(!recs[0].possibly_incomplete);
    assert_eq!(e.summary().skipped_runs, 4);
    assert_eq!(e.summary().totals.possibly_incomplete, 0);
}

/// Arrivals without a listener socket (the pre-6.6 substitute) are grouped
/// by namespace and port: two containers on the same port stay apart, and
/// an EAGAIN counts on the connection of its own namespace.
#[test]
fn substitute_arrivals_are_keyed_by_namespace_and_port() {
    let ns_a = 4026531840u32;
    let ns_b = 4026532999u32;
    let mut b = StreamBuilder::new();
    b.arrival_in(0, chain(0, 1), 0, child(1), ns_a)
        .arrival_in(0, chain(0, 2), 0, child(2), ns_b)
        .wake(0, chain(0, 1), W1)
        .poll_ret(1, W1, 1)
        .eagain_in(1, W1, 0, ns_a);
    let (recs, _) = run(immediate(), &b.take());
    let a = recs.iter().find(|r| r.netns == ns_a).expect("ns a");
    let bb = recs.iter().find(|r| r.netns == ns_b).expect("ns b");
    assert_eq!((a.eagain, bb.eagain), (1, 0));
    assert_ne!(port_key(8080, ns_a), port_key(8080, ns_b));
    assert_ne!(listener_key(0, 8080, ns_a), listener_key(0, 8081, ns_a));
    assert_eq!(listener_key(L, 8080, ns_a), L);
    // A key never collides with a kernel address.
    assert!(port_key(u16::MAX, u32::MAX) < 0xffff_0000_0000_0000);
}

/// One whole connection on chain `n` (blocking accept: it closes at the
/// accept).
fn one_conn(b: &mut StreamBuilder, n: u64) {
    b.arrival(0, chain(0, n), L, child(n))
        .wake(0, chain(0, n), W1)
        .accept(1, W1, L, child(n));
}

/// Pushes a stream into a held engine; returns what it passed on meanwhile.
fn push_held(e: &mut Engine, b: &mut StreamBuilder) -> Vec<ConnRecord> {
    push_all(e, &b.take())
}

fn sample(e: &mut Engine, at_ns: u64, flagged: bool) -> Vec<ConnRecord> {
    sample_scoped(e, at_ns, flagged.then_some(AfterSkip::Anything))
}

fn sample_scoped(e: &mut Engine, at_ns: u64, scope: Option<AfterSkip>) -> Vec<ConnRecord> {
    let mut out = Vec::new();
    e.skip_sample(at_ns, scope, &mut |r| out.push(r));
    out
}

/// Live tracing: a connection that closed before the sample showed a skip
/// was open in the window the skip happened in, and is flagged; one that
/// closed before the previous sample is not. Nothing is passed on or
/// counted before its sample.
#[test]
fn held_records_are_flagged_by_the_sample_that_covers_them() {
    let mut e = Engine::new(immediate());
    e.hold_for_skip_samples();
    let mut b = StreamBuilder::new();
    one_conn(&mut b, 1);
    assert!(push_held(&mut e, &mut b).is_empty(), "held until a sample");
    assert_eq!(e.summary().totals.connections, 0, "not counted yet");
    let clean_at = b.now() + 1_000;
    let first = sample(&mut e, clean_at, false);
    assert_eq!(first.len(), 1);
    assert!(!first[0].possibly_incomplete, "no skip in its window");
    assert_eq!(e.summary().totals.connections, 1);

    b.at(clean_at + 1_000);
    one_conn(&mut b, 2);
    assert!(push_held(&mut e, &mut b).is_empty());
    // The skip's sample: conn 2 closed after the previous sample.
    e.note_skipped_runs(1, true);
    let second = sample(&mut e, b.now() + 1_000, true);
    assert_eq!(second.len(), 1);
    assert!(
        second[0].possibly_incomplete,
        "closed before the sample, open in its window"
    );
    let s = e.summary();
    assert_eq!((s.totals.connections, s.totals.possibly_incomplete), (2, 1));
}

/// Skips flag the window after their sample too (a skipped run leaves its
/// task's state stale until its next traced call); the one after that is
/// clean again.
#[test]
fn the_window_after_skips_is_flagged_too() {
    let mut e = Engine::new(immediate());
    e.hold_for_skip_samples();
    let mut b = StreamBuilder::new();
    e.note_skipped_runs(1, true);
    assert!(sample(&mut e, 1_000, true).is_empty());
    b.at(2_000);
    one_conn(&mut b, 1); // closes in the window after the skips
    b.arrival(0, chain(0, 2), L, child(2)); // open across the next sample
    push_held(&mut e, &mut b);
    let after = sample(&mut e, b.now() + 1, false);
    assert_eq!(after.len(), 1);
    assert!(after[0].possibly_incomplete, "closed in the window after");
    let t = b.now() + 10;
    b.at(t);
    one_conn(&mut b, 3); // a clean window
    b.wake(0, chain(0, 2), W2).accept(1, W2, L, child(2));
    push_held(&mut e, &mut b);
    let clean = sample(&mut e, b.now() + 1, false);
    assert_eq!(clean.len(), 2);
    let mut flags: Vec<(u64, bool)> = clean
        .iter()
        .map(|r| (r.ts_ns, r.possibly_incomplete))
        .collect();
    flags.sort_unstable();
    // Conn 2 (the earlier arrival) was open across the window after the
    // skips; conn 3 arrived and closed in the clean window.
    assert_eq!(
        flags.iter().map(|f| f.1).collect::<Vec<_>>(),
        [true, false],
        "{flags:?}"
    );
}

/// A connection woken in cascade (W1, woken by it, wakes W2 before
/// returning), accepted by W1.
fn cascade_conn(b: &mut StreamBuilder, n: u64) {
    b.arrival(0, chain(0, n), L, child(n))
        .wake(0, chain(0, n), W1)
        .cascade_wake(1, chain(0, n), W2)
        .accept(1, W1, L, child(n))
        .eagain(2, W2, L);
}

/// A skipped syscall exit leaves only its task's "woken by" mark stale: in
/// the window after its sample, only a connection woken in cascade is
/// flagged. Its own window is flagged whole, as for any skip.
#[test]
fn after_a_task_scoped_skip_only_cascade_woken_connections_are_flagged() {
    let mut e = Engine::new(immediate());
    e.hold_for_skip_samples();
    let mut b = StreamBuilder::new();
    one_conn(&mut b, 1); // in the window of the skip
    push_held(&mut e, &mut b);
    e.note_skipped_runs(1, true);
    let own = sample_scoped(&mut e, b.now() + 1, Some(AfterSkip::TaskCascades));
    assert_eq!(own.len(), 1);
    assert!(own[0].possibly_incomplete, "open in the skip's window");
    let t = b.now() + 10;
    b.at(t);
    one_conn(&mut b, 2); // the window after: no cascade
    cascade_conn(&mut b, 3); // the window after: a cascade
    b.arrival(0, chain(0, 4), L, child(4)); // open across the next sample
    push_held(&mut e, &mut b);
    let after = sample(&mut e, b.now() + 1, false);
    let flags: Vec<(u64, bool)> = after
        .iter()
        .map(|r| (r.ts_ns, r.possibly_incomplete))
        .collect();
    assert_eq!(after.len(), 2);
    assert!(!after[0].possibly_incomplete, "no cascade: {flags:?}");
    assert!(after[1].possibly_incomplete, "a cascade: {flags:?}");
    // The next window is clean: a cascade there flags nothing, and conn 4,
    // open across the window after but woken in no cascade, is not flagged.
    let t = b.now() + 10;
    b.at(t);
    cascade_conn(&mut b, 5);
    b.wake(0, chain(0, 4), W2).accept(1, W2, L, child(4));
    push_held(&mut e, &mut b);
    let clean = sample(&mut e, b.now() + 1, false);
    assert_eq!(clean.len(), 2);
    assert!(clean.iter().all(|r| !r.possibly_incomplete), "{clean:?}");
    let s = e.summary();
    assert_eq!((s.totals.connections, s.totals.possibly_incomplete), (5, 2));
}

/// Skips of per-CPU state and of a task's own in one sample: the window
/// after is flagged whole.
#[test]
fn the_widest_scope_of_a_sample_decides_the_window_after() {
    let mut e = Engine::new(immediate());
    e.hold_for_skip_samples();
    let mut b = StreamBuilder::new();
    e.note_skipped_runs(2, true);
    let runs = [
        crate::pipeline::SkippedRuns::of("tp_poll_exit".into(), 1),
        crate::pipeline::SkippedRuns::of("btf_softirq_exit".into(), 1),
    ];
    let scope = crate::pipeline::skip_scope(&runs);
    assert_eq!(scope, Some(AfterSkip::Anything));
    assert_eq!(
        crate::pipeline::skip_scope(&runs[..1]),
        Some(AfterSkip::TaskCascades)
    );
    assert_eq!(crate::pipeline::skip_scope(&[]), None);
    assert!(sample_scoped(&mut e, 1_000, scope).is_empty());
    b.at(2_000);
    one_conn(&mut b, 1); // the window after, no cascade
    push_held(&mut e, &mut b);
    let after = sample(&mut e, b.now() + 1, false);
    assert_eq!(after.len(), 1);
    assert!(after[0].possibly_incomplete);
}

/// A record that closed after the sample's read time waits for the next
/// sample (a later skip may still concern it), and is flagged by it.
#[test]
fn records_closed_after_the_read_wait_for_the_next_sample() {
    let mut e = Engine::new(immediate());
    e.hold_for_skip_samples();
    let mut b = StreamBuilder::new();
    b.at(5_000_000);
    one_conn(&mut b, 1);
    push_held(&mut e, &mut b);
    // Read before the connection closed (the events were drained after).
    assert!(sample(&mut e, 1_000_000, false).is_empty());
    e.note_skipped_runs(2, true);
    let next = sample(&mut e, b.now() + 1, true);
    assert_eq!(next.len(), 1);
    assert!(next[0].possibly_incomplete);
}

/// The end passes on what is held; skips that flag nothing flag no held record.
#[test]
fn finish_passes_on_held_records_and_harmless_skips_flag_none() {
    let mut e = Engine::new(immediate());
    e.hold_for_skip_samples();
    let mut b = StreamBuilder::new();
    one_conn(&mut b, 1);
    push_held(&mut e, &mut b);
    e.note_skipped_runs(3, false);
    assert!(sample(&mut e, 0, false).is_empty(), "closed after the read");
    one_conn(&mut b, 2);
    push_held(&mut e, &mut b);
    let rest = finish(&mut e);
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|r| !r.possibly_incomplete));
    let s = e.summary();
    assert_eq!((s.totals.connections, s.skipped_runs), (2, 3));
}

/// Without a reader of records, held episodes are still counted at their
/// sample, flags included.
#[test]
fn held_counts_without_records() {
    let mut e = Engine::new(immediate());
    e.set_records(false);
    e.hold_for_skip_samples();
    let mut b = StreamBuilder::new();
    one_conn(&mut b, 1);
    push_held(&mut e, &mut b);
    e.note_skipped_runs(1, true);
    assert!(
        sample(&mut e, b.now() + 1, true).is_empty(),
        "no records wanted"
    );
    let s = e.summary();
    assert_eq!((s.totals.connections, s.totals.possibly_incomplete), (1, 1));
}

// ---- epoll returns held for the task's next event -----------------------------

/// What the eBPF programs send for `events` (see `POLL_HELD`): an epoll
/// return that no reported wake waits on is not sent but flagged on the
/// task's next event; sequence numbers count only what is sent.
fn with_held_poll_returns(events: &[RawEvent]) -> Vec<RawEvent> {
    use herdtrace_common::{POLL_HELD, POLL_HELD_WORK, POLL_WAKE_REPORTED};
    let mut poll: std::collections::HashMap<u32, u32> = Default::default();
    let mut seq: std::collections::HashMap<u32, u64> = Default::default();
    let mut out = Vec::new();
    for ev in events {
        let mut ev = *ev;
        let state = poll.entry(ev.tid).or_default();
        let take_held = |state: &mut u32| {
            let held = *state & POLL_HELD;
            let work = *state & POLL_HELD_WORK;
            *state &= !(POLL_HELD | POLL_HELD_WORK);
            match (held != 0, work != 0) {
                (false, _) => 0,
                (true, false) => FLAG_AFTER_POLL,
                (true, true) => FLAG_AFTER_POLL | FLAG_AFTER_POLL_WORK,
            }
        };
        match ev.kind {
            EV_POLL_RET if *state & POLL_WAKE_REPORTED == 0 => {
                *state = POLL_HELD | if ev.ret > 0 { POLL_HELD_WORK } else { 0 };
                continue;
            }
            EV_WAKE => {
                ev.flags |= take_held(state);
                *state |= POLL_WAKE_REPORTED;
            }
            EV_POLL_RET | EV_SEND_EVENTS | EV_ACCEPT_RET => {
                ev.flags |= take_held(state);
                *state &= !POLL_WAKE_REPORTED;
            }
            EV_TASK_EXIT => {
                ev.flags |= take_held(state);
                poll.remove(&ev.tid);
            }
            _ => {}
        }
        let s = seq.entry(ev.cpu).or_default();
        *s += 1;
        ev.seq = *s;
        out.push(ev);
    }
    out
}

/// Records in a stable order, for comparing two runs.
fn sorted(mut recs: Vec<ConnRecord>) -> Vec<ConnRecord> {
    recs.sort_by_key(|r| (r.ts_ns, r.port));
    recs
}

/// The reconstruction of `events` equals that of the stream the programs
/// send for it with epoll returns held: same records, same summary.
fn assert_same_with_held(events: &[RawEvent]) -> usize {
    let held = with_held_poll_returns(events);
    let (a, ea) = run(EngineConfig::default(), events);
    let (b, eb) = run(EngineConfig::default(), &held);
    assert_eq!(sorted(a.clone()), sorted(b), "records differ");
    let (sa, sb) = (ea.summary(), eb.summary());
    assert_eq!(sa.totals, sb.totals);
    assert_eq!(sa.tasks, sb.tasks);
    assert_eq!(sa.diagnostics, sb.diagnostics);
    assert!(!a.is_empty());
    events.len() - held.len()
}

#[test]
fn held_poll_return_is_the_event_it_rides_on_after_a_poll_return() {
    let ev = RawEvent {
        kind: EV_ACCEPT_RET,
        flags: FLAG_AFTER_POLL | FLAG_AFTER_POLL_WORK | FLAG_ACCEPT_KERNEL,
        ..RawEvent::default()
    };
    assert_eq!(held_poll_return(&ev), Some(1));
    let no_work = RawEvent {
        flags: FLAG_AFTER_POLL,
        ..ev
    };
    assert_eq!(held_poll_return(&no_work), Some(0));
    assert_eq!(
        held_poll_return(&RawEvent {
            flags: FLAG_ACCEPT_KERNEL,
            ..ev
        }),
        None
    );
    // Only a task's own events carry one.
    for kind in [EV_ARRIVAL, EV_EPOLL_CB, EV_TASK_NEW] {
        assert_eq!(held_poll_return(&RawEvent { kind, ..no_work }), None);
    }
}

/// A busy worker: its epoll returns follow no wake (it did not sleep), so
/// they ride on its accepts, and the counts do not change.
#[test]
fn busy_workers_returns_held_on_their_accepts_change_nothing() {
    let mut b = StreamBuilder::new();
    for n in 1..=6 {
        b.arrival(0, chain(0, n), L, child(n));
        let w = if n % 2 == 0 { W1 } else { W2 };
        b.poll_ret(1, w, 1)
            .accept(1, w, L, child(n))
            .eagain(1, w, L);
    }
    let held = assert_same_with_held(&b.take());
    assert_eq!(held, 6, "every return rides on an accept");
}

#[test]
fn herds_with_held_returns_reconstruct_the_same() {
    let mut b = StreamBuilder::new();
    epoll_per_worker(&mut b, 1, 1, W2);
    b.poll_ret(1, W2, 1);
    epoll_per_worker(&mut b, 2, 2, W3);
    // W1 returns with nothing, then again with work (two held returns are one).
    b.poll_ret(1, W1, 0).poll_ret(1, W1, 1).eagain(1, W1, L);
    assert_same_with_held(&b.take());
    for (conns, workers) in [(50, 4), (30, 1), (20, 3)] {
        assert_same_with_held(&herd_stream(conns, workers));
    }
}

#[test]
fn cascades_batches_and_second_wakes_with_held_returns_reconstruct_the_same() {
    // Batch accepting (lighttpd), a cascade on a shared epoll, a wake by a
    // second connection before the first return.
    let mut b = StreamBuilder::new();
    batch_accepting(&mut b);
    b.poll_ret(1, W1, 1).poll_ret(2, W2, 0);
    b.arrival(0, chain(0, 4), L, child(4))
        .wake(0, chain(0, 4), W3)
        .arrival(0, chain(0, 5), L, child(5))
        .wake(0, chain(0, 5), W3)
        .poll_ret(1, W3, 1)
        .accept(1, W3, L, child(4))
        .accept(1, W3, L, child(5))
        .eagain(1, W3, L)
        .poll_ret(1, W3, 1)
        .task_exit(1, W3);
    assert_same_with_held(&b.take());
}

/// A held return still starts a new activation of its task: an EAGAIN after
/// it counts as a loser's although the task accepted before it.
#[test]
fn held_return_resets_what_the_task_accepted_since_it_returned() {
    let mut b = StreamBuilder::new();
    b.arrival(0, chain(0, 1), L, child(1))
        .arrival(0, chain(0, 2), L, child(2))
        .poll_ret(1, W1, 1)
        .accept(1, W1, L, child(1))
        .poll_ret(1, W1, 1)
        .eagain(1, W1, L)
        .poll_ret(2, W2, 1)
        .accept(2, W2, L, child(2));
    let events = b.take();
    let held = with_held_poll_returns(&events);
    assert_eq!(held.len(), events.len() - 3, "no wake: every return held");
    let (recs, _) = run(EngineConfig::default(), &held);
    let second = recs
        .iter()
        .find(|r| r.accepted_by == by(W2))
        .expect("second connection");
    assert_eq!((second.eagain, second.eagain_losers), (1, 1));
    assert_same_with_held(&events);
}

#[test]
fn workers_known_from_proc_are_listed_when_they_did_nothing() {
    let mut b = StreamBuilder::new();
    // W1 takes every connection alone (taking turns, or LIFO).
    for n in 1..=3 {
        let ch = chain(0, n);
        b.arrival(0, ch, L, child(n));
        b.wake(0, ch, W1);
        b.poll_ret(1, W1, 1);
        b.accept(1, W1, L, child(n));
        b.eagain(1, W1, L);
    }
    let known = |t: SynthTask| KnownTask {
        pid: t.pid,
        tid: t.tid,
        comm: t.comm.into(),
        ports: Vec::new(),
    };
    let mut e = Engine::new(immediate());
    e.set_setup(KnownSetup {
        workers: 3,
        listeners_per_addr: 1,
        // W1 is known too: listed once, with what it did.
        tasks: vec![known(W3), known(W1), known(W2)],
        hint: SetupHint::Unknown,
        untraced: Default::default(),
        accept_loops: Vec::new(),
    });
    push_all(&mut e, &b.take());
    finish(&mut e);
    let s = e.summary();
    let rows: Vec<(u32, u64, u64)> = s
        .tasks
        .iter()
        .map(|t| (t.tid, t.accepts, t.woken))
        .collect();
    assert_eq!(rows, vec![(101, 3, 3), (102, 0, 0), (103, 0, 0)]);
    assert_eq!(task_row(&s, 103, "worker3").eagain, 0);
    // The idle rows change no figure of the balance verdict.
    assert_eq!(s.balance.accepting_tasks, 1);
    assert_eq!(s.balance.workers, 3);
    assert_eq!(
        s.balance.top.as_ref().map(|t| (t.tid, t.accepts)),
        Some((101, 3))
    );
    // Without /proc's names the table has only the tasks seen.
    let mut e = Engine::new(immediate());
    push_all(&mut e, &herd_stream(1, 1));
    finish(&mut e);
    assert!(e.summary().tasks.iter().all(|t| t.accepts + t.woken > 0));
}

#[test]
fn workers_replaced_by_a_reload_count_once_at_a_time() {
    // nginx -s reload: 4 workers take 3 s of connections evenly, exit, and 4
    // new ones do the same. At 200 accepts a second, an even 25% each is far
    // beyond chance for 8 workers (z 5.3) but not for the 4 alive at a time.
    let old: Vec<SynthTask> = (201..=204)
        .map(|p| SynthTask::process(p, "nginx"))
        .collect();
    let new: Vec<SynthTask> = (301..=304)
        .map(|p| SynthTask::process(p, "nginx"))
        .collect();
    let mut b = StreamBuilder::new();
    let mut n = 0;
    let mut second = |b: &mut StreamBuilder, workers: &[SynthTask], s: u64| {
        b.at(s * 1_000_000_000);
        for i in 0..200 {
            n += 1;
            b.arrival(0, chain(0, n), L, child(n));
            b.accept(1, workers[i % 4], L, child(n));
        }
    };
    let mut e = Engine::new(immediate());
    e.set_setup(KnownSetup {
        workers: 4,
        listeners_per_addr: 1,
        tasks: Vec::new(),
        hint: SetupHint::Unknown,
        untraced: Default::default(),
        accept_loops: Vec::new(),
    });
    for s in 1..=3 {
        second(&mut b, &old, s);
    }
    push_all(&mut e, &b.take());
    assert_eq!(e.take_interval().workers, 4);
    for &w in &old {
        b.task_exit(1, w);
    }
    for s in 4..=6 {
        second(&mut b, &new, s);
    }
    push_all(&mut e, &b.take());
    let interval = e.take_interval();
    finish(&mut e);
    let s = e.summary();
    assert_eq!(s.balance.accepts, 1200);
    // Shares are of the run's accepts, which 8 workers shared...
    assert_eq!(s.balance.workers, 8);
    assert_eq!(s.balance.accepting_tasks, 8);
    // ...but never more than 4 at once: no second was dominated.
    assert_eq!(s.balance.workers_at_once, 4);
    assert_eq!(s.balance.held, None);
    assert_eq!(interval.workers, 4, "the interval's N is the workers alive");
}

#[test]
fn an_accept_loop_on_several_threads_is_one_worker() {
    // tokio: one accept task, run by whichever worker thread is free.
    let threads: Vec<SynthTask> = (501..=503)
        .map(|t| SynthTask::thread(500, t, "tokio-rt-worker"))
        .collect();
    let other = SynthTask::process(600, "srv");
    let stream = |b: &mut StreamBuilder, who: &dyn Fn(u64) -> SynthTask, from: u64, n: u64| {
        for i in from..from + n {
            b.at(i * 2_000_000);
            b.arrival(0, chain(0, i), L, child(i));
            b.accept(1, who(i), L, child(i));
        }
    };
    let setup = |loops: Vec<u32>| KnownSetup {
        workers: 1,
        listeners_per_addr: 1,
        accept_loops: loops,
        ..Default::default()
    };
    // Mostly the first thread, now and then another one (work stealing).
    let tokio = |i: u64| {
        threads[if i.is_multiple_of(10) {
            1 + (i as usize / 10) % 2
        } else {
            0
        }]
    };
    let mut b = StreamBuilder::new();
    stream(&mut b, &tokio, 1, 300);
    let events = b.take();
    let mut e = Engine::new(immediate());
    e.set_setup(setup(vec![500]));
    push_all(&mut e, &events);
    let interval = e.take_interval();
    finish(&mut e);
    let s = e.summary();
    assert_eq!(s.balance.workers, 1);
    assert_eq!(s.balance.accepting_tasks, 1);
    assert_eq!(s.balance.loop_threads, 3);
    assert_eq!(
        s.balance.top.as_ref().map(|t| (t.tid, t.accepts)),
        Some((501, 300))
    );
    assert_eq!(
        crate::report::balance::classify(&s.balance),
        crate::report::balance::BalanceVerdict::OneWorker
    );
    assert_eq!(interval.workers, 1);
    assert_eq!(interval.shares.len(), 1, "{:?}", interval.shares);
    assert_eq!(interval.shares[0].accepts, 300);
    // The task table still says which thread made each accept.
    let rows: Vec<(u32, u64)> = s.tasks.iter().map(|t| (t.tid, t.accepts)).collect();
    assert_eq!(rows, vec![(501, 270), (502, 15), (503, 15)]);

    // Not known as a loop: three threads, one with 90 %, an imbalance.
    let mut e = Engine::new(immediate());
    e.set_setup(setup(Vec::new()));
    push_all(&mut e, &events);
    finish(&mut e);
    let s = e.summary();
    assert_eq!((s.balance.workers, s.balance.loop_threads), (3, 0));
    assert_eq!(
        crate::report::balance::classify(&s.balance),
        crate::report::balance::BalanceVerdict::Imbalanced
    );

    // Two processes, one a loop: two workers, the loop's threads summed.
    let mut b = StreamBuilder::new();
    stream(
        &mut b,
        &|i| if i % 2 == 0 { tokio(i / 2) } else { other },
        1,
        400,
    );
    let mut e = Engine::new(immediate());
    e.set_setup(KnownSetup {
        workers: 2,
        ..setup(vec![500])
    });
    push_all(&mut e, &b.take());
    finish(&mut e);
    let s = e.summary();
    assert_eq!((s.balance.workers, s.balance.accepting_tasks), (2, 2));
    assert_eq!(s.balance.accepts, 400);
    assert_eq!(s.balance.top.as_ref().map(|t| t.accepts), Some(200));
    assert_eq!(
        crate::report::balance::classify(&s.balance),
        crate::report::balance::BalanceVerdict::Balanced
    );
}

#[test]
fn an_accept_loop_per_reuseport_socket_is_a_worker_each() {
    // tokio-reuseport: one accept task per SO_REUSEPORT socket, any thread
    // runs any of them; the kernel's hash picks the socket.
    let threads: Vec<SynthTask> = (501..=504)
        .map(|t| SynthTask::thread(500, t, "worker"))
        .collect();
    let sockets = [L, L + 0x100, L + 0x200, L + 0x300];
    let mut b = StreamBuilder::new();
    for i in 1..=400u64 {
        b.at(i * 2_000_000);
        let sk = sockets[(i % 4) as usize];
        b.arrival(0, chain(0, i), sk, child(i));
        // Mostly one thread runs them all.
        let who = if i.is_multiple_of(7) {
            threads[(i % 3) as usize + 1]
        } else {
            threads[0]
        };
        b.accept(1, who, sk, child(i));
    }
    let mut e = Engine::new(immediate());
    e.set_setup(KnownSetup {
        workers: 4,
        listeners_per_addr: 4,
        accept_loops: vec![500],
        ..Default::default()
    });
    push_all(&mut e, &b.take());
    finish(&mut e);
    let s = e.summary();
    assert_eq!((s.balance.workers, s.balance.accepting_tasks), (4, 4));
    assert_eq!(s.balance.top.as_ref().map(|t| t.accepts), Some(100));
    assert_eq!(
        crate::report::balance::classify(&s.balance),
        crate::report::balance::BalanceVerdict::Balanced
    );
}

#[test]
fn an_accept_loop_outlives_the_thread_that_first_ran_it() {
    let (t1, t2) = (
        SynthTask::thread(500, 501, "w"),
        SynthTask::thread(500, 502, "w"),
    );
    let mut b = StreamBuilder::new();
    for i in 1..=100 {
        b.at(i * 2_000_000);
        b.arrival(0, chain(0, i), L, child(i));
        b.accept(1, if i <= 50 { t1 } else { t2 }, L, child(i));
        if i == 50 {
            b.task_exit(1, t1);
        }
    }
    let mut e = Engine::new(immediate());
    e.set_setup(KnownSetup {
        workers: 1,
        listeners_per_addr: 1,
        accept_loops: vec![500],
        ..Default::default()
    });
    push_all(&mut e, &b.take());
    finish(&mut e);
    let s = e.summary();
    // The loop's first thread exited: the next thread's accepts start a
    // unit of their own, one at a time, as a replaced worker's would.
    assert_eq!(s.balance.workers, 2);
    assert_eq!(s.balance.workers_at_once, 1);
    assert_eq!(s.balance.accepts, 100);
}
