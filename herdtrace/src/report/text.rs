//! Human-readable output: interval lines, per-connection lines, the summary.
use std::io::{self, Write};

use crate::engine::{ConnRecord, IntervalStats, Summary, Untraced};

use super::{balance, verdict, RunInfo};
use crate::engine::balance::fair_share;

/// Width of the histogram bars, as bpftrace draws them.
const BAR_WIDTH: u64 = 52;
/// Above this many histogram rows only the non-empty ones are printed.
const MAX_DENSE_ROWS: usize = 40;
/// Tasks listed in the summary table.
const MAX_TASK_ROWS: usize = 30;

/// `15:04:05 conns 1234  woken/conn 3.98 (max 4)  eagain/conn 2.91  spurious/conn 0.07  drops 0  top 31% nginx[812/812] (fair 25%)`
pub fn write_interval(out: &mut impl Write, label: &str, i: &IntervalStats) -> io::Result<()> {
    let t = &i.tally;
    writeln!(
        out,
        "{label} conns {}  woken/conn {:.2} (max {})  eagain/conn {:.2}  spurious/conn {:.2}  drops {}  {}",
        t.connections,
        t.woken_mean(),
        t.woken_max,
        t.eagain_per_conn(),
        t.spurious_per_conn(),
        i.lost_events,
        top_share(i)
    )
}

/// The interval's busiest worker: `top 31% nginx[812/812] (fair 25%)`, or
/// `top -` without accepts.
fn top_share(i: &IntervalStats) -> String {
    let Some(top) = i.shares.first() else {
        return "top -".into();
    };
    let fair = if i.workers > 0 {
        format!(" (fair {})", super::pct(fair_share(i.workers)))
    } else {
        String::new()
    };
    format!(
        "top {} {}[{}/{}]{fair}",
        super::pct(top.share),
        top.comm,
        top.pid,
        top.tid
    )
}

/// One connection per line.
pub fn write_conn(
    out: &mut impl Write,
    label: &str,
    r: &ConnRecord,
    epolls_seen: bool,
) -> io::Result<()> {
    let peer = r.peer.map_or_else(|| "?".to_string(), |p| p.to_string());
    let who = match (&r.accepted_by, r.accept_latency_us) {
        (Some(t), Some(us)) => format!("accepted by {}[{}/{}] after {us}us", t.comm, t.pid, t.tid),
        (Some(t), None) => format!("accepted by {}[{}/{}]", t.comm, t.pid, t.tid),
        (None, _) => "not accepted by a traced task".to_string(),
    };
    let epolls = if epolls_seen {
        format!(" epolls {}", r.epolls)
    } else {
        String::new()
    };
    writeln!(
        out,
        "{label} :{} <- {peer}  woken {} returned {} spurious {} eagain {} (losers {}){epolls}  {who}{}",
        r.port,
        r.woken,
        r.returned,
        r.spurious,
        r.eagain,
        r.eagain_losers,
        if r.incomplete {
            "  INCOMPLETE"
        } else if r.possibly_incomplete {
            "  POSSIBLY-INCOMPLETE"
        } else {
            ""
        }
    )
}

/// bpftrace-style histogram rows: `[n]  count |@@@@  |`.
pub fn histogram_lines(hist: &[u64]) -> Vec<String> {
    let Some(first) = hist.iter().position(|&c| c > 0) else {
        return Vec::new();
    };
    let last = hist.iter().rposition(|&c| c > 0).unwrap_or(first);
    let peak = hist.iter().copied().max().unwrap_or(1).max(1);
    let dense = last - first < MAX_DENSE_ROWS;
    let label_w = format!("[{last}]").len();
    let count_w = peak.to_string().len().max(6);
    (first..=last)
        .filter(|&n| dense || hist[n] > 0)
        .map(|n| {
            let c = hist[n];
            let bar = (c * BAR_WIDTH / peak) as usize;
            format!(
                "{:<label_w$} {c:>count_w$} |{}{}|",
                format!("[{n}]"),
                "@".repeat(bar),
                " ".repeat(BAR_WIDTH as usize - bar)
            )
        })
        .collect()
}

/// What a trace that left out tasks waiting on its listeners misses, and
/// what to trace instead; None when nothing was left out.
pub fn untraced_line(u: &Untraced) -> Option<String> {
    if u.is_empty() {
        return None;
    }
    let pids: Vec<String> = u.pids().iter().map(u32::to_string).collect();
    let one = u.tasks.len() == 1;
    let (tasks, wait, their, them) = if one {
        ("1 task".to_string(), "waits", "its", "it")
    } else {
        (format!("{} tasks", u.tasks.len()), "wait", "their", "them")
    };
    let processes = if pids.len() == 1 {
        "process"
    } else {
        "processes"
    };
    let instead = match u.trace_pid {
        Some(pid) => format!("trace the whole server with --pid {pid}"),
        None => format!("add {them} with --pid {}", pids.join(" --pid ")),
    };
    Some(format!(
        "{tasks} of {processes} {} also {wait} on these listeners untraced: {their} wakeups \
         and accepts are not counted, so the counts are lower bounds; {instead}",
        pids.join(", ")
    ))
}

pub fn write_summary(out: &mut impl Write, info: &RunInfo, s: &Summary) -> io::Result<()> {
    let t = &s.totals;
    writeln!(out)?;
    let scope = if info.scope.is_empty() {
        String::new()
    } else {
        format!(", {}", info.scope)
    };
    writeln!(
        out,
        "herdtrace summary  (backend: {}, kernel: {}{scope})",
        info.backend, info.kernel
    )?;
    if !info.listeners.is_empty() {
        writeln!(out, "listeners: {}", info.listeners.join(", "))?;
    }
    write!(out, "connections: {}", t.connections)?;
    if t.unaccepted > 0 {
        write!(out, " ({} not accepted by a traced task)", t.unaccepted)?;
    }
    let d = &s.diagnostics;
    if d.orphan_wakes > 0 {
        write!(
            out,
            "; {} wakes of traced tasks belonged to no traced connection",
            d.orphan_wakes
        )?;
    }
    writeln!(out)?;
    if t.connections > 0 {
        let w = &s.woken_per_conn;
        writeln!(
            out,
            "tasks woken per connection: mean {:.2}  p50 {}  p99 {}  max {}",
            w.mean, w.p50, w.p99, w.max
        )?;
        for line in histogram_lines(&s.woken_histogram) {
            writeln!(out, "{line}")?;
        }
        writeln!(
            out,
            "per connection: returned {:.2}  eagain {:.2} (losers {:.2})  spurious {:.2}",
            t.returned as f64 / t.connections as f64,
            t.eagain_per_conn(),
            t.eagain_losers as f64 / t.connections as f64,
            t.spurious_per_conn()
        )?;
    }
    if !s.tasks.is_empty() {
        let total_accepts: u64 = s.tasks.iter().map(|t| t.accepts).sum();
        writeln!(out)?;
        writeln!(
            out,
            "{:>8} {:>8} {:<16} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8}",
            "PID", "TID", "COMM", "ACCEPTS", "SHARE", "WOKEN", "EAGAIN", "LOSERS", "SPURIOUS"
        )?;
        for task in s.tasks.iter().take(MAX_TASK_ROWS) {
            let share = if total_accepts == 0 {
                0.0
            } else {
                100.0 * task.accepts as f64 / total_accepts as f64
            };
            writeln!(
                out,
                "{:>8} {:>8} {:<16} {:>8} {:>5.1}% {:>8} {:>8} {:>8} {:>8}",
                task.pid,
                task.tid,
                task.comm,
                task.accepts,
                share,
                task.woken,
                task.eagain,
                task.eagain_losers,
                task.spurious
            )?;
        }
        if s.tasks.len() > MAX_TASK_ROWS {
            writeln!(out, "... and {} more tasks", s.tasks.len() - MAX_TASK_ROWS)?;
        }
    }
    writeln!(out)?;
    if s.lost_events > 0 || t.incomplete > 0 {
        writeln!(
            out,
            "WARNING: {} events LOST, {} episodes INCOMPLETE: their counts are lower bounds \
             (try a larger ring buffer or fewer traced processes)",
            s.lost_events, t.incomplete
        )?;
    }
    if let Some(line) = untraced_line(&s.untraced) {
        writeln!(out, "PARTIAL: {line}")?;
    }
    if s.skipped_runs > 0 {
        let by: Vec<String> = s
            .skipped_by_program
            .iter()
            .map(|(p, n)| format!("{p} {n}"))
            .collect();
        let by = if by.is_empty() {
            String::new()
        } else {
            format!(" ({})", by.join(", "))
        };
        writeln!(
            out,
            "note: the kernel skipped {} runs of herdtrace's programs{by} (another BPF program \
             was running on that CPU); {} connections open meanwhile are POSSIBLY INCOMPLETE",
            s.skipped_runs, t.possibly_incomplete
        )?;
    }
    let failed: Vec<String> = s
        .insert_failed
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    if !failed.is_empty() {
        writeln!(
            out,
            "WARNING: kernel maps full, inserts failed: {} (what they should have remembered is \
             missing from the counts)",
            failed.join(", ")
        )?;
    }
    let d = &s.diagnostics;
    if d.orphan_wakes + d.unmatched_accepts + d.eagain_unattributed > 0 {
        writeln!(
            out,
            "unattributed: {} wakes of untraced arrivals, {} accepts of untraced arrivals, {} EAGAINs",
            d.orphan_wakes, d.unmatched_accepts, d.eagain_unattributed
        )?;
    }
    writeln!(out, "verdict: {}", verdict::verdict_line(s))?;
    writeln!(
        out,
        "balance: {}",
        balance::finding_of(&s.balance, s.woken_per_conn.mean).line
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{KnownTask, Tally, TaskRef, TaskShare, TaskStats, WokenStats};

    #[test]
    fn untraced_waiters_are_named_with_what_to_trace_instead() {
        assert_eq!(untraced_line(&Untraced::default()), None);
        let task = |pid, tid| KnownTask {
            pid,
            tid,
            comm: "w".into(),
            ports: vec![80],
        };
        let mut u = Untraced {
            tasks: vec![task(21, 21), task(22, 22), task(22, 23)],
            trace_pid: Some(20),
        };
        assert_eq!(
            untraced_line(&u).as_deref(),
            Some(
                "3 tasks of processes 21, 22 also wait on these listeners untraced: their \
                 wakeups and accepts are not counted, so the counts are lower bounds; trace \
                 the whole server with --pid 20"
            )
        );
        u.trace_pid = None;
        u.tasks.truncate(1);
        assert_eq!(
            untraced_line(&u).as_deref(),
            Some(
                "1 task of process 21 also waits on these listeners untraced: its wakeups and \
                 accepts are not counted, so the counts are lower bounds; add it with --pid 21"
            )
        );
        // The summary carries it as a PARTIAL line.
        let s = Summary {
            untraced: u,
            ..Summary::default()
        };
        let info = RunInfo::default();
        let mut out = Vec::new();
        write_summary(&mut out, &info, &s).expect("write");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("\nPARTIAL: 1 task of process 21 also waits"),
            "{text}"
        );
    }

    #[test]
    fn interval_line_matches_the_documented_shape() {
        let i = IntervalStats {
            ts_ns: 0,
            tally: Tally {
                connections: 100,
                woken: 398,
                woken_max: 4,
                eagain: 291,
                spurious: 7,
                ..Tally::default()
            },
            lost_events: 0,
            shares: vec![TaskShare {
                pid: 812,
                tid: 812,
                comm: "nginx".into(),
                accepts: 31,
                share: 0.31,
            }],
            workers: 4,
        };
        let mut out = Vec::new();
        write_interval(&mut out, "15:04:05", &i).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "15:04:05 conns 100  woken/conn 3.98 (max 4)  eagain/conn 2.91  spurious/conn 0.07  drops 0  top 31% nginx[812/812] (fair 25%)\n"
        );
        let none = IntervalStats::default();
        assert_eq!(top_share(&none), "top -");
        let unknown = IntervalStats {
            workers: 0,
            ..i.clone()
        };
        assert_eq!(top_share(&unknown), "top 31% nginx[812/812]");
        // 200 workers (a big prefork server): the fair share is 0.5%, not "0%".
        let mut big = IntervalStats { workers: 200, ..i };
        big.shares[0].share = 0.054;
        assert_eq!(top_share(&big), "top 5.4% nginx[812/812] (fair 0.5%)");
    }

    #[test]
    fn conn_line_names_the_winner_or_says_none() {
        let mut r = ConnRecord {
            ts_ns: 0,
            port: 8080,
            peer: Some("127.0.0.1:5000".parse().expect("addr")),
            accepted_by: Some(TaskRef {
                pid: 10,
                tid: 11,
                comm: "nginx".into(),
            }),
            woken: 4,
            returned: 4,
            spurious: 0,
            eagain: 3,
            eagain_losers: 3,
            epolls: 4,
            accept_latency_us: Some(85),
            incomplete: false,
            possibly_incomplete: false,
            netns: 0,
        };
        let line_with = |r: &ConnRecord, epolls_seen: bool| {
            let mut out = Vec::new();
            write_conn(&mut out, "T", r, epolls_seen).expect("write");
            String::from_utf8(out).expect("utf8")
        };
        let line = |r: &ConnRecord| line_with(r, true);
        // Without ep_poll_callback (tracepoint backend) the field is left out.
        assert!(!line_with(&r, false).contains("epolls"));
        assert_eq!(
            line(&r),
            "T :8080 <- 127.0.0.1:5000  woken 4 returned 4 spurious 0 eagain 3 (losers 3) epolls 4  \
             accepted by nginx[10/11] after 85us\n"
        );
        r.accepted_by = None;
        r.accept_latency_us = None;
        r.peer = None;
        r.incomplete = true;
        let l = line(&r);
        assert!(l.contains(":8080 <- ?"), "{l}");
        assert!(
            l.ends_with("not accepted by a traced task  INCOMPLETE\n"),
            "{l}"
        );
    }

    #[test]
    fn histogram_bars_scale_to_the_peak() {
        let lines = histogram_lines(&[0, 2, 0, 0, 4]);
        assert_eq!(lines.len(), 4, "contiguous from first to last: {lines:?}");
        assert_eq!(
            lines[0],
            format!("[1]      2 |{}{}|", "@".repeat(26), " ".repeat(26))
        );
        assert_eq!(lines[1], format!("[2]      0 |{}|", " ".repeat(52)));
        assert_eq!(lines[3], format!("[4]      4 |{}|", "@".repeat(52)));
        assert!(histogram_lines(&[]).is_empty());
        assert!(histogram_lines(&[0, 0]).is_empty());
    }

    #[test]
    fn wide_histograms_keep_only_non_empty_rows() {
        let mut hist = vec![0u64; 200];
        hist[1] = 5;
        hist[199] = 1;
        let lines = histogram_lines(&hist);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1],
            format!("[199]      1 |{}{}|", "@".repeat(10), " ".repeat(42))
        );
    }

    fn summary_text(s: &Summary) -> String {
        let info = RunInfo {
            backend: "tracepoint".into(),
            kernel: "6.18.0".into(),
            attach: Vec::new(),
            scope: String::new(),
            listeners: Vec::new(),
        };
        let mut out = Vec::new();
        write_summary(&mut out, &info, s).expect("write");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn summary_lists_tasks_warns_about_losses_and_concludes() {
        let s = Summary {
            totals: Tally {
                connections: 4,
                woken: 16,
                woken_won: 4,
                woken_max: 4,
                eagain: 12,
                eagain_losers: 12,
                returned: 16,
                incomplete: 1,
                ..Tally::default()
            },
            woken_per_conn: WokenStats {
                mean: 4.0,
                p50: 4,
                p99: 4,
                max: 4,
            },
            woken_histogram: vec![0, 0, 0, 0, 4],
            tasks: vec![
                TaskStats {
                    pid: 1,
                    tid: 1,
                    comm: "w".into(),
                    accepts: 3,
                    woken: 4,
                    eagain: 1,
                    eagain_losers: 0,
                    spurious: 0,
                },
                TaskStats {
                    pid: 2,
                    tid: 2,
                    comm: "w".into(),
                    accepts: 1,
                    woken: 4,
                    eagain: 3,
                    eagain_losers: 2,
                    spurious: 0,
                },
            ],
            lost_events: 9,
            ..Summary::default()
        };
        let text = summary_text(&s);
        assert!(
            text.contains("(backend: tracepoint, kernel: 6.18.0)"),
            "{text}"
        );
        assert!(text.contains("mean 4.00  p50 4  p99 4  max 4"), "{text}");
        assert!(
            text.contains(&format!("[4]      4 |{}|", "@".repeat(52))),
            "{text}"
        );
        assert!(
            text.contains("       1        1 w                       3  75.0%"),
            "{text}"
        );
        assert!(
            text.contains("       2        2 w                       1  25.0%"),
            "{text}"
        );
        // The losers' part of each task's EAGAINs has its own column.
        assert!(
            text.contains("ACCEPTS  SHARE    WOKEN   EAGAIN   LOSERS SPURIOUS"),
            "{text}"
        );
        assert!(
            text.contains("25.0%        4        3        2        0"),
            "{text}"
        );
        assert!(
            text.contains("WARNING: 9 events LOST, 1 episodes INCOMPLETE"),
            "{text}"
        );
        assert!(
            text.contains("verdict: herd: every connection woke 4.00 tasks"),
            "{text}"
        );
        assert!(
            text.contains("; from an incomplete trace (9 events lost, 1 of 4 connections"),
            "{text}"
        );
        assert!(!text.contains("unattributed"), "{text}");
    }

    #[test]
    fn empty_summary_says_so_without_a_table() {
        let text = summary_text(&Summary::default());
        assert!(text.contains("connections: 0\n"), "{text}");
        assert!(!text.contains("PID"), "{text}");
        assert!(!text.contains("WARNING"), "{text}");
        assert!(
            text.ends_with(
                "verdict: no verdict: no connection was traced\n\
                 balance: no balance verdict: no accept was traced\n"
            ),
            "{text}"
        );
    }
}
