//! NDJSON output: one object per line, tagged by `"type"`.
use std::io::{self, Write};

use serde::Serialize;

use crate::engine::{
    balance::fair_share, ConnRecord, Diagnostics, IntervalStats, Summary, TaskRef, TaskShare,
    TaskStats, WokenStats,
};

use super::{
    balance::{self, BalanceFinding},
    verdict, RunInfo,
};

/// Tasks listed in an interval object's `shares` (the busiest first).
pub const MAX_INTERVAL_SHARES: usize = 64;

#[derive(Serialize)]
struct ConnLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts_ns: u64,
    /// Wall-clock time of `ts_ns`, RFC 3339 UTC; null without a wall clock.
    time: Option<&'a str>,
    port: u16,
    /// "ip:port", or null when the probe had no address.
    peer: Option<String>,
    accepted_by: Option<&'a TaskRef>,
    woken: u32,
    returned: u32,
    spurious: u32,
    eagain: u32,
    eagain_losers: u32,
    /// null when the backend cannot see `ep_poll_callback` (tracepoint).
    epolls: Option<u32>,
    accept_latency_us: Option<u64>,
    incomplete: bool,
    possibly_incomplete: bool,
    /// Network namespace (inode number) of the listener; null when unknown.
    netns: Option<u32>,
}

#[derive(Serialize)]
struct IntervalLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts_ns: u64,
    time: Option<&'a str>,
    connections: u64,
    woken_mean: f64,
    woken_max: u32,
    eagain_per_conn: f64,
    spurious_per_conn: f64,
    lost_events: u64,
    /// Accepts in the interval, and how they were shared.
    accepts: u64,
    workers: u64,
    fair_share: f64,
    share_max: f64,
    shares: &'a [TaskShare],
}

/// When a run ended, for the summary object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEnd {
    /// Stream time (CLOCK_MONOTONIC ns) at the end.
    pub ts_ns: u64,
    pub time: Option<String>,
    /// Where the wall clock comes from, or why there is none.
    pub wall_clock: String,
}

#[derive(Serialize)]
struct SummaryLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts_ns: u64,
    time: Option<&'a str>,
    wall_clock: &'a str,
    backend: &'a str,
    kernel: &'a str,
    /// What was attached (empty in a replay).
    attach: &'a [String],
    /// `cgroup /path` when one was traced, else null.
    scope: Option<&'a str>,
    listeners: &'a [String],
    connections: u64,
    woken_per_conn: &'a WokenStats,
    woken_histogram: &'a [u64],
    returned: u64,
    eagain: u64,
    eagain_losers: u64,
    spurious: u64,
    incomplete: u64,
    possibly_incomplete: u64,
    unaccepted: u64,
    tasks: &'a [TaskStats],
    lost_events: u64,
    skipped_runs: u64,
    skipped_by_program: &'a std::collections::BTreeMap<String, u64>,
    insert_failed: &'a std::collections::BTreeMap<String, u64>,
    late_records: u64,
    late_max_behind_ns: u64,
    diagnostics: &'a Diagnostics,
    /// Tasks outside the trace waiting on the same listeners (`tasks` empty
    /// when there were none).
    untraced: &'a crate::engine::Untraced,
    verdict: String,
    balance: BalanceFinding,
}

fn line(out: &mut impl Write, v: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, v).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

pub fn write_conn(
    out: &mut impl Write,
    r: &ConnRecord,
    epolls_seen: bool,
    time: Option<&str>,
) -> io::Result<()> {
    line(
        out,
        &ConnLine {
            kind: "conn",
            ts_ns: r.ts_ns,
            time,
            port: r.port,
            peer: r.peer.map(|p| p.to_string()),
            accepted_by: r.accepted_by.as_ref(),
            woken: r.woken,
            returned: r.returned,
            spurious: r.spurious,
            eagain: r.eagain,
            eagain_losers: r.eagain_losers,
            epolls: epolls_seen.then_some(r.epolls),
            accept_latency_us: r.accept_latency_us,
            incomplete: r.incomplete,
            possibly_incomplete: r.possibly_incomplete,
            netns: (r.netns != 0).then_some(r.netns),
        },
    )
}

pub fn write_interval(
    out: &mut impl Write,
    i: &IntervalStats,
    time: Option<&str>,
) -> io::Result<()> {
    let t = &i.tally;
    line(
        out,
        &IntervalLine {
            kind: "interval",
            ts_ns: i.ts_ns,
            time,
            connections: t.connections,
            woken_mean: t.woken_mean(),
            woken_max: t.woken_max,
            eagain_per_conn: t.eagain_per_conn(),
            spurious_per_conn: t.spurious_per_conn(),
            lost_events: i.lost_events,
            accepts: i.accepts(),
            workers: i.workers,
            fair_share: fair_share(i.workers),
            share_max: i.share_max(),
            shares: &i.shares[..i.shares.len().min(MAX_INTERVAL_SHARES)],
        },
    )
}

pub fn write_summary(
    out: &mut impl Write,
    info: &RunInfo,
    s: &Summary,
    end: &RunEnd,
) -> io::Result<()> {
    let t = &s.totals;
    line(
        out,
        &SummaryLine {
            kind: "summary",
            ts_ns: end.ts_ns,
            time: end.time.as_deref(),
            wall_clock: &end.wall_clock,
            backend: &info.backend,
            kernel: &info.kernel,
            attach: &info.attach,
            scope: (!info.scope.is_empty()).then_some(info.scope.as_str()),
            listeners: &info.listeners,
            connections: t.connections,
            woken_per_conn: &s.woken_per_conn,
            woken_histogram: &s.woken_histogram,
            returned: t.returned,
            eagain: t.eagain,
            eagain_losers: t.eagain_losers,
            spurious: t.spurious,
            incomplete: t.incomplete,
            possibly_incomplete: t.possibly_incomplete,
            unaccepted: t.unaccepted,
            tasks: &s.tasks,
            lost_events: s.lost_events,
            skipped_runs: s.skipped_runs,
            skipped_by_program: &s.skipped_by_program,
            insert_failed: &s.insert_failed,
            late_records: s.late_records,
            late_max_behind_ns: s.late_max_behind_ns,
            diagnostics: &s.diagnostics,
            untraced: &s.untraced,
            verdict: verdict::verdict_line(s),
            balance: balance::finding_of(&s.balance, s.woken_per_conn.mean),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Balance, Tally};
    use serde_json::{json, Value};

    fn parse(buf: &[u8]) -> Value {
        let text = std::str::from_utf8(buf).expect("utf8");
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text}"
        );
        serde_json::from_str(text).expect("json")
    }

    #[test]
    fn conn_object_has_every_field() {
        let r = ConnRecord {
            ts_ns: 5,
            port: 8080,
            peer: Some("[::1]:7".parse().expect("addr")),
            accepted_by: Some(TaskRef {
                pid: 1,
                tid: 2,
                comm: "lighttpd".into(),
            }),
            woken: 4,
            returned: 3,
            spurious: 1,
            eagain: 2,
            eagain_losers: 2,
            epolls: 4,
            accept_latency_us: Some(9),
            incomplete: false,
            possibly_incomplete: true,
            netns: 4026531840,
        };
        let mut out = Vec::new();
        write_conn(&mut out, &r, true, Some("2026-11-30T06:15:52.123456Z")).expect("write");
        assert_eq!(
            parse(&out),
            json!({"type":"conn","ts_ns":5,"time":"2026-11-30T06:15:52.123456Z",
                   "port":8080,"peer":"[::1]:7",
                   "accepted_by":{"pid":1,"tid":2,"comm":"lighttpd"},
                   "woken":4,"returned":3,"spurious":1,"eagain":2,"eagain_losers":2,
                   "epolls":4,"accept_latency_us":9,"incomplete":false,
                   "possibly_incomplete":true,"netns":4026531840u32})
        );
        let none = ConnRecord {
            accepted_by: None,
            accept_latency_us: None,
            peer: None,
            netns: 0,
            ..r
        };
        let mut out = Vec::new();
        write_conn(&mut out, &none, false, None).expect("write");
        let v = parse(&out);
        // An unknown namespace is null, not 0.
        assert_eq!(v["netns"], Value::Null);
        // No wall clock (an old recording): null, not an invented time.
        assert_eq!(v["time"], Value::Null);
        // The tracepoint backend does not see epoll callbacks: unknown, not 0.
        assert_eq!(v["epolls"], Value::Null);
        assert_eq!(v["accepted_by"], Value::Null);
        assert_eq!(v["accept_latency_us"], Value::Null);
        assert_eq!(v["peer"], Value::Null);
    }

    #[test]
    fn interval_object() {
        let i = IntervalStats {
            ts_ns: 77,
            tally: Tally {
                connections: 2,
                woken: 5,
                woken_max: 3,
                eagain: 3,
                spurious: 1,
                ..Tally::default()
            },
            lost_events: 4,
            shares: vec![
                TaskShare {
                    pid: 9,
                    tid: 9,
                    comm: "w".into(),
                    accepts: 3,
                    share: 0.75,
                },
                TaskShare {
                    pid: 8,
                    tid: 8,
                    comm: "w".into(),
                    accepts: 1,
                    share: 0.25,
                },
            ],
            workers: 4,
        };
        let mut out = Vec::new();
        write_interval(&mut out, &i, Some("1970-01-01T00:00:00.000000Z")).expect("write");
        assert_eq!(
            parse(&out),
            json!({"type":"interval","ts_ns":77,"time":"1970-01-01T00:00:00.000000Z",
                   "connections":2,"woken_mean":2.5,"woken_max":3,
                   "eagain_per_conn":1.5,"spurious_per_conn":0.5,"lost_events":4,
                   "accepts":4,"workers":4,"fair_share":0.25,"share_max":0.75,
                   "shares":[{"pid":9,"tid":9,"comm":"w","accepts":3,"share":0.75},
                             {"pid":8,"tid":8,"comm":"w","accepts":1,"share":0.25}]})
        );
        // Many tasks: the busiest are listed, the totals cover them all.
        let many = IntervalStats {
            shares: (0..100)
                .map(|k| TaskShare {
                    pid: k,
                    tid: k,
                    comm: "t".into(),
                    accepts: 1,
                    share: 0.01,
                })
                .collect(),
            workers: 100,
            ..IntervalStats::default()
        };
        let mut out = Vec::new();
        write_interval(&mut out, &many, None).expect("write");
        let v = parse(&out);
        assert_eq!(
            v["shares"].as_array().map(Vec::len),
            Some(MAX_INTERVAL_SHARES)
        );
        assert_eq!(v["accepts"], 100);
        assert_eq!(v["time"], Value::Null);
    }

    #[test]
    fn summary_object() {
        let s = Summary {
            totals: Tally {
                connections: 1,
                woken: 1,
                woken_won: 1,
                returned: 1,
                ..Tally::default()
            },
            woken_per_conn: WokenStats {
                mean: 1.0,
                p50: 1,
                p99: 1,
                max: 1,
            },
            woken_histogram: vec![0, 1],
            tasks: vec![TaskStats {
                pid: 3,
                tid: 4,
                comm: "srv".into(),
                accepts: 1,
                woken: 1,
                eagain: 0,
                eagain_losers: 0,
                spurious: 0,
            }],
            balance: Balance {
                workers: 1,
                workers_at_once: 1,
                setup: Default::default(),
                accepts: 1,
                accepting_tasks: 1,
                top: Some(TaskShare {
                    pid: 3,
                    tid: 4,
                    comm: "srv".into(),
                    accepts: 1,
                    share: 1.0,
                }),
                ..Balance::default()
            },
            ..Summary::default()
        };
        let info = RunInfo {
            backend: "fentry".into(),
            kernel: "6.1.0".into(),
            attach: Vec::new(),
            scope: String::new(),
            listeners: Vec::new(),
        };
        let end = RunEnd {
            ts_ns: 42,
            time: Some("1970-01-01T00:00:00.000000Z".into()),
            wall_clock: "live".into(),
        };
        let mut out = Vec::new();
        write_summary(&mut out, &info, &s, &end).expect("write");
        let mut v = parse(&out);
        let balance = v
            .as_object_mut()
            .and_then(|o| o.remove("balance"))
            .expect("balance");
        assert_eq!(balance["verdict"], "one_worker");
        assert_eq!(
            balance["line"],
            balance::finding_of(&s.balance, s.woken_per_conn.mean).line
        );
        assert_eq!(
            v,
            json!({"type":"summary","ts_ns":42,"time":"1970-01-01T00:00:00.000000Z",
                   "wall_clock":"live","backend":"fentry","kernel":"6.1.0",
                   "attach":[],"scope":null,"listeners":[],"connections":1,
                   "woken_per_conn":{"mean":1.0,"p50":1,"p99":1,"max":1},
                   "woken_histogram":[0,1],
                   "returned":1,"eagain":0,"eagain_losers":0,"spurious":0,"incomplete":0,
                   "possibly_incomplete":0,"unaccepted":0,
                   "tasks":[{"pid":3,"tid":4,"comm":"srv","accepts":1,"woken":1,"eagain":0,"eagain_losers":0,"spurious":0}],
                   "lost_events":0,
                   "skipped_runs":0,"skipped_by_program":{},"insert_failed":{},
                   "late_records":0,"late_max_behind_ns":0,
                   "diagnostics":{"orphan_wakes":0,"unmatched_accepts":0,"eagain_unattributed":0},
                   "untraced":{"tasks":[]},
                   "verdict":"no herd: ~1 task woken per connection (mean 1.00); 0.00 wasted wakeups per connection (0% of all wakeups: EAGAIN losers 0.00 + spurious 0.00)"})
        );
    }
}
