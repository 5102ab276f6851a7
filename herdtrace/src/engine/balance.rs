//! How evenly the workers share the accepts: the facts a balance verdict
//! needs, gathered as episodes close (pure; no kernel, no clock of its own).
//!
//! - per-task accepts come from the engine's task rows; the fair share is
//!   1/N, N being the workers able to accept (from /proc when the caller
//!   knows it, else the tasks seen accepting);
//! - *dominance*: stream time is cut into 1 s windows; a window is dominated
//!   when one task took a share of its accepts both large (at least
//!   [`dominance_threshold`]) and statistically beyond chance (a binomial
//!   z-score of at least [`MIN_Z`] against a fair pick); the longest run of
//!   consecutive dominated windows won by the same task says how long an
//!   imbalance held (windows without accepts neither extend nor break it);
//! - *same-worker share*: of consecutive accepts, the share made by the task
//!   that made the previous one (LIFO wakeups make it ~1, round-robin ~0, a
//!   random pick 1/N);
//! - *clients*: distinct client addresses and address:port pairs, and the
//!   share of connections from the N busiest pairs, since SO_REUSEPORT hashes
//!   the connection's addresses and ports to pick a socket: few pairs cannot
//!   spread;
//! - *listeners*: distinct listening sockets seen per port (two or more: an
//!   SO_REUSEPORT group).
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use rustc_hash::FxHashMap;

/// Length of a dominance window (stream time).
pub const WINDOW_NS: u64 = 1_000_000_000;
/// A share is beyond chance from this many standard deviations above the fair count.
pub const MIN_Z: f64 = 3.0;
/// Accepts below which the whole run is not judged.
pub const MIN_ACCEPTS: u64 = 20;
/// Distinct clients remembered (beyond, they are counted as "many").
pub const MAX_PEERS: usize = 1024;
/// Distinct listening sockets remembered per port, and ports.
const MAX_LISTENERS: usize = 64;
const MAX_PORTS: usize = 64;

/// 1/N (0 without workers).
pub fn fair_share(workers: u64) -> f64 {
    if workers == 0 {
        0.0
    } else {
        1.0 / workers as f64
    }
}

/// The share from which one task's take is an imbalance: twice the fair
/// share, but never above halfway between the fair share and all of it
/// (with 2 workers twice 1/2 would be everything).
pub fn dominance_threshold(workers: u64) -> f64 {
    let fair = fair_share(workers);
    (2.0 * fair).min((1.0 + fair) / 2.0)
}

/// Standard deviations by which `top` of `total` accepts exceed the count a
/// fair pick among `workers` gives (binomial, p = 1/N); 0 when undefined.
pub fn z_score(top: u64, total: u64, workers: u64) -> f64 {
    if workers < 2 || total == 0 {
        return 0.0;
    }
    let p = fair_share(workers);
    let n = total as f64;
    let sd = (n * p * (1.0 - p)).sqrt();
    (top as f64 - n * p) / sd
}

/// One task took an imbalanced share: large and beyond chance.
pub fn is_dominant(top: u64, total: u64, workers: u64) -> bool {
    workers >= 2
        && total > 0
        && top as f64 / total as f64 >= dominance_threshold(workers)
        && z_score(top, total, workers) >= MIN_Z
}

/// The longest run of dominated windows won by one task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Run {
    pub unit: u32,
    pub windows: u64,
    /// Start of the first window and end of the last.
    pub from_ns: u64,
    pub to_ns: u64,
    /// The smallest share the task had in a window of the run.
    pub share_min: f64,
}

/// Client spread (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Clients {
    /// Connections with a known client address.
    pub connections: u64,
    /// Distinct client address:port pairs (at most [`MAX_PEERS`]: see `capped`).
    pub distinct_peers: u64,
    /// Distinct client addresses.
    pub distinct_addrs: u64,
    /// Share of the connections made from the N busiest address:port pairs
    /// (N = workers).
    pub top_peers_share: f64,
    /// More distinct clients came than are remembered: the counts are lower bounds.
    pub capped: bool,
}

/// Balance facts gathered by the engine.
#[derive(Debug, Default)]
pub(super) struct BalanceTracker {
    window: Option<u64>,
    window_counts: Vec<(u32, u64)>,
    run: Option<Run>,
    longest: Option<Run>,
    windows_with_accepts: u64,
    dominated_windows: u64,
    last_unit: Option<u32>,
    pairs: u64,
    same: u64,
    peers: FxHashMap<SocketAddr, u64>,
    addrs: FxHashMap<IpAddr, u64>,
    peers_capped: bool,
    peer_conns: u64,
    listeners: FxHashMap<u16, Vec<u64>>,
    /// The (port, socket) of the last arrival: most arrivals repeat it.
    last_listener: (u16, u64),
}

impl BalanceTracker {
    /// A successful accept by balance unit `unit` (see `units`) at `ts_ns`;
    /// `workers` is the current N.
    pub fn on_accept(&mut self, unit: u32, ts_ns: u64, workers: u64) {
        let idx = ts_ns / WINDOW_NS;
        match self.window {
            Some(w) if idx > w => {
                self.close_window(workers);
                self.window = Some(idx);
            }
            None => self.window = Some(idx),
            // Same window, or a few µs out of order across CPUs: this one.
            _ => {}
        }
        match self.window_counts.iter_mut().find(|(r, _)| *r == unit) {
            Some((_, n)) => *n += 1,
            None => self.window_counts.push((unit, 1)),
        }
        if let Some(prev) = self.last_unit {
            self.pairs += 1;
            self.same += u64::from(prev == unit);
        }
        self.last_unit = Some(unit);
    }

    /// Judges the current window and starts over.
    fn close_window(&mut self, workers: u64) {
        let Some(w) = self.window else {
            return;
        };
        let total: u64 = self.window_counts.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return;
        }
        self.windows_with_accepts += 1;
        let (top_unit, top) = self
            .window_counts
            .iter()
            .copied()
            .max_by_key(|&(unit, n)| (n, std::cmp::Reverse(unit)))
            .unwrap_or((0, 0));
        // Every task that accepted in the window could, even one that has
        // exited since (a reload's old worker).
        let workers = workers.max(self.window_counts.len() as u64);
        self.window_counts.clear();
        let share = top as f64 / total as f64;
        // Saturating: a corrupt recording can carry a timestamp near u64::MAX.
        let (from, to) = (w * WINDOW_NS, (w + 1).saturating_mul(WINDOW_NS));
        if is_dominant(top, total, workers) {
            self.dominated_windows += 1;
            match self.run.as_mut() {
                Some(r) if r.unit == top_unit => {
                    r.windows += 1;
                    r.to_ns = to;
                    r.share_min = r.share_min.min(share);
                }
                _ => {
                    self.end_run();
                    self.run = Some(Run {
                        unit: top_unit,
                        windows: 1,
                        from_ns: from,
                        to_ns: to,
                        share_min: share,
                    });
                }
            }
        } else {
            self.end_run();
        }
    }

    fn end_run(&mut self) {
        if let Some(r) = self.run.take() {
            if self.longest.is_none_or(|l| r.windows > l.windows) {
                self.longest = Some(r);
            }
        }
    }

    /// A closed connection's client address.
    pub fn on_conn(&mut self, peer: Option<SocketAddr>) {
        let Some(p) = peer else {
            return;
        };
        self.peer_conns += 1;
        let room = self.peers.len() < MAX_PEERS;
        match self.peers.get_mut(&p) {
            Some(n) => *n += 1,
            None if room => {
                self.peers.insert(p, 1);
            }
            None => self.peers_capped = true,
        }
        let room = self.addrs.len() < MAX_PEERS;
        match self.addrs.get_mut(&p.ip()) {
            Some(n) => *n += 1,
            None if room => {
                self.addrs.insert(p.ip(), 1);
            }
            None => self.peers_capped = true,
        }
    }

    /// An arrival on listening socket `sk` (0: unknown) of `port`.
    pub fn on_listener(&mut self, port: u16, sk: u64) {
        if sk == 0 || self.last_listener == (port, sk) {
            return;
        }
        self.last_listener = (port, sk);
        if !self.listeners.contains_key(&port) && self.listeners.len() >= MAX_PORTS {
            return;
        }
        let socks = self.listeners.entry(port).or_default();
        if socks.len() < MAX_LISTENERS && !socks.contains(&sk) {
            socks.push(sk);
        }
    }

    /// The longest dominance run, the current window and run included
    /// (without closing them: the stream may go on).
    pub fn longest_run(&self, workers: u64) -> Option<Run> {
        let mut probe = BalanceTracker {
            window: self.window,
            window_counts: self.window_counts.clone(),
            run: self.run,
            longest: self.longest,
            ..BalanceTracker::default()
        };
        probe.close_window(workers);
        probe.end_run();
        probe.longest
    }

    /// 1 s windows with accepts so far (the current one included).
    pub fn windows(&self) -> u64 {
        self.windows_with_accepts + u64::from(!self.window_counts.is_empty())
    }

    pub fn same_worker_share(&self) -> Option<f64> {
        (self.pairs > 0).then(|| self.same as f64 / self.pairs as f64)
    }

    pub fn clients(&self, workers: u64) -> Clients {
        let mut counts: Vec<u64> = self.peers.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: u64 = counts.iter().take(workers.max(1) as usize).sum();
        Clients {
            connections: self.peer_conns,
            distinct_peers: self.peers.len() as u64,
            distinct_addrs: self.addrs.len() as u64,
            top_peers_share: if self.peer_conns == 0 {
                0.0
            } else {
                top as f64 / self.peer_conns as f64
            },
            capped: self.peers_capped,
        }
    }

    /// The most listening sockets seen on one port (2+: an SO_REUSEPORT group).
    pub fn max_listeners_per_port(&self) -> u64 {
        self.listeners.values().map(Vec::len).max().unwrap_or(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = WINDOW_NS;

    #[test]
    fn fair_share_and_threshold_by_worker_count() {
        assert_eq!(fair_share(0), 0.0);
        assert_eq!(fair_share(4), 0.25);
        // Two workers: halfway to all (0.75), not twice the fair share (1.0).
        assert_eq!(dominance_threshold(2), 0.75);
        assert!((dominance_threshold(3) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(dominance_threshold(4), 0.5);
        assert_eq!(dominance_threshold(8), 0.25);
        assert_eq!(dominance_threshold(1), 1.0);
    }

    #[test]
    fn z_score_of_a_fair_and_a_skewed_pick() {
        // 100 accepts over 4 workers: 25 expected, sd sqrt(18.75) = 4.33.
        assert!(z_score(25, 100, 4).abs() < 1e-12);
        assert!((z_score(38, 100, 4) - 13.0 / 18.75f64.sqrt()).abs() < 1e-12);
        assert_eq!(z_score(5, 5, 1), 0.0, "one worker: nothing to compare");
        assert_eq!(z_score(0, 0, 4), 0.0);
    }

    #[test]
    fn dominance_needs_both_size_and_evidence() {
        // All of 100 to one of 4: dominant.
        assert!(is_dominant(100, 100, 4));
        // 40% of 1000 with 4 workers: beyond chance but below twice the fair share.
        assert!(!is_dominant(400, 1000, 4));
        // 2 of 2: a large share, too few accepts to tell from chance (z 1.73).
        assert!(!is_dominant(2, 2, 4));
        // 3 of 3 reach z 3.0 exactly.
        assert!(is_dominant(3, 3, 4));
        // The cloudflare-like report: 349 of 468 with 8 workers.
        assert!(is_dominant(349, 468, 8));
        assert!(!is_dominant(10, 10, 1), "a single worker cannot be unfair");
        assert!(!is_dominant(0, 0, 4));
    }

    fn accept_all(t: &mut BalanceTracker, row: u32, from_s: u64, secs: u64, per_s: u64) {
        for s in from_s..from_s + secs {
            for k in 0..per_s {
                t.on_accept(row, s * S + k * (S / per_s), 4);
            }
        }
    }

    #[test]
    fn a_run_of_dominated_windows_is_measured_in_seconds() {
        let mut t = BalanceTracker::default();
        accept_all(&mut t, 7, 10, 5, 10);
        let r = t.longest_run(4).expect("run");
        assert_eq!((r.unit, r.windows), (7, 5));
        assert_eq!((r.from_ns, r.to_ns), (10 * S, 15 * S));
        assert_eq!(r.share_min, 1.0);
        assert_eq!(t.windows(), 5);
        // Every accept after the first repeats the previous worker.
        assert_eq!(t.same_worker_share(), Some(1.0));
    }

    #[test]
    fn a_balanced_window_ends_the_run_and_the_longest_is_kept() {
        let mut t = BalanceTracker::default();
        accept_all(&mut t, 1, 0, 3, 10);
        // Second 3: round-robin over 4 workers.
        for k in 0..12u64 {
            t.on_accept((k % 4) as u32, 3 * S + k, 4);
        }
        accept_all(&mut t, 2, 4, 2, 10);
        let r = t.longest_run(4).expect("run");
        assert_eq!((r.unit, r.windows), (1, 3), "{r:?}");
        assert_eq!(t.windows(), 6);
    }

    #[test]
    fn empty_windows_neither_extend_nor_break_a_run() {
        let mut t = BalanceTracker::default();
        accept_all(&mut t, 3, 0, 2, 10);
        accept_all(&mut t, 3, 10, 2, 10);
        let r = t.longest_run(4).expect("run");
        assert_eq!(r.windows, 4);
        assert_eq!((r.from_ns, r.to_ns), (0, 12 * S));
    }

    #[test]
    fn another_winner_starts_a_new_run() {
        let mut t = BalanceTracker::default();
        accept_all(&mut t, 1, 0, 2, 10);
        accept_all(&mut t, 2, 2, 3, 10);
        let r = t.longest_run(4).expect("run");
        assert_eq!((r.unit, r.windows), (2, 3));
    }

    #[test]
    fn no_run_without_dominance_or_workers() {
        let mut t = BalanceTracker::default();
        for k in 0..400u64 {
            t.on_accept((k % 4) as u32, k * (S / 100), 4);
        }
        assert_eq!(t.longest_run(4), None);
        assert_eq!(t.same_worker_share(), Some(0.0));
        let mut one = BalanceTracker::default();
        for k in 0..30u64 {
            one.on_accept(0, k * (S / 10), 1);
        }
        assert_eq!(one.longest_run(1), None, "one worker");
        assert_eq!(BalanceTracker::default().longest_run(4), None);
        assert_eq!(BalanceTracker::default().same_worker_share(), None);
        assert_eq!(BalanceTracker::default().windows(), 0);
    }

    #[test]
    fn late_accepts_count_in_the_current_window() {
        let mut t = BalanceTracker::default();
        t.on_accept(1, 5 * S, 4);
        // A few µs earlier, from another CPU: not a new (older) window.
        t.on_accept(1, 5 * S - 3_000, 4);
        t.on_accept(1, 5 * S + 10, 4);
        assert_eq!(t.windows(), 1);
        assert_eq!(t.longest_run(4).map(|r| r.windows), Some(1));
    }

    fn peer(ip: [u8; 4], port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from((ip, port)))
    }

    #[test]
    fn clients_count_pairs_addresses_and_the_busiest_share() {
        let mut t = BalanceTracker::default();
        // Two clients reusing two ports each for 90 connections, 10 others once.
        for k in 0..90u16 {
            t.on_conn(peer([10, 0, 0, 1 + (k % 2) as u8], 5000 + k % 2));
        }
        for k in 0..10u16 {
            t.on_conn(peer([10, 0, 1, 1], 6000 + k));
        }
        t.on_conn(None);
        let c = t.clients(4);
        assert_eq!(c.connections, 100);
        assert_eq!(c.distinct_peers, 12);
        assert_eq!(c.distinct_addrs, 3);
        // The 4 busiest pairs: 45 + 45 + 1 + 1.
        assert!((c.top_peers_share - 0.92).abs() < 1e-12, "{c:?}");
        assert!(!c.capped);
        assert_eq!(BalanceTracker::default().clients(4), Clients::default());
    }

    #[test]
    fn clients_beyond_the_cap_are_flagged() {
        let mut t = BalanceTracker::default();
        for k in 0..(MAX_PEERS as u32 + 10) {
            t.on_conn(peer([127, 0, (k >> 16) as u8, (k >> 8) as u8], k as u16));
        }
        let c = t.clients(4);
        assert_eq!(c.distinct_peers, MAX_PEERS as u64);
        assert!(c.capped);
        assert_eq!(c.connections, MAX_PEERS as u64 + 10);
    }

    #[test]
    fn listeners_per_port_reveal_a_reuseport_group() {
        let mut t = BalanceTracker::default();
        assert_eq!(t.max_listeners_per_port(), 0);
        t.on_listener(80, 0xa);
        t.on_listener(80, 0xa);
        t.on_listener(443, 0xb);
        assert_eq!(t.max_listeners_per_port(), 1);
        for sk in 1..=4 {
            t.on_listener(8080, sk);
        }
        t.on_listener(8080, 0); // unknown listener: not counted
        assert_eq!(t.max_listeners_per_port(), 4);
    }
}
