//! The diagnosis as text or as one JSON object.
use std::io::{self, Write};

use serde::Serialize;

use super::{
    advice::{Advice, ServerKind},
    cost::Cost,
    layout::{plural, Endpoint},
};
use crate::report::balance::BalanceFinding;

/// One listening address: what the server does there and what to change.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    pub advice: Advice,
}

/// Everything `diagnose` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When the report was made (RFC 3339, UTC); None in reports built
    /// without a clock (tests).
    pub time: Option<String>,
    pub pid: u32,
    pub comm: String,
    pub server: ServerKind,
    /// What the server was recognised by ("executable /usr/sbin/nginx").
    pub recognised_by: String,
    /// What /proc showed of its settings (MPM, worker class, ...).
    pub server_facts: Vec<String>,
    pub processes: usize,
    pub threads: usize,
    pub endpoints: Vec<EndpointReport>,
    /// None when nothing was traced.
    pub cost: Option<Cost>,
    /// How the accepts were shared (None when nothing was traced).
    pub balance: Option<BalanceFinding>,
    /// What to change when one worker took too large a share.
    pub balance_advice: Option<Advice>,
    pub backend: Option<String>,
    /// Every endpoint is fine (setup and measurement) and no worker took
    /// more than its share.
    pub fine: bool,
    pub notes: Vec<String>,
}

/// Epoll watchers listed per socket; a 64-worker server gets a count for the rest.
const SHOWN_WATCHERS: usize = 6;

/// One line per listening socket: who holds it, which epolls watch it.
fn watcher_line(e: &Endpoint) -> Vec<String> {
    let mut lines = Vec::new();
    for s in &e.sockets {
        let mut parts = vec![format!(
            "socket {}: held by {}",
            s.inode,
            plural(s.holders.len(), "process", "processes")
        )];
        if !s.watchers.is_empty() {
            let mut ws: Vec<String> = s
                .watchers
                .iter()
                .take(SHOWN_WATCHERS)
                .map(|w| {
                    let flags = if w.flags.is_empty() {
                        "no flags".to_string()
                    } else {
                        w.flags.join("|")
                    };
                    let pids = if w.pids.len() == 1 {
                        format!("pid {}", w.pids[0])
                    } else {
                        format!("pids {:?}", w.pids)
                    };
                    format!(
                        "{pids} fd {} ({flags}, {} waiting)",
                        w.fd,
                        w.waiting_threads.len()
                    )
                })
                .collect();
            if s.watchers.len() > SHOWN_WATCHERS {
                ws.push(format!("and {} more", s.watchers.len() - SHOWN_WATCHERS));
            }
            parts.push(format!("in epoll of {}", ws.join(", ")));
        }
        if !s.accepting_threads.is_empty() {
            parts.push(format!(
                "{} in accept()",
                plural(
                    s.accepting_threads.len(),
                    "thread blocked",
                    "threads blocked"
                )
            ));
        }
        lines.push(parts.join("; "));
    }
    lines
}

pub fn write_text(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(
        out,
        "{} (pid {}): {}, {}",
        r.comm,
        r.pid,
        plural(r.processes, "process", "processes"),
        plural(r.threads, "thread", "threads")
    )?;
    let facts = if r.server_facts.is_empty() {
        String::new()
    } else {
        format!("; {}", r.server_facts.join(", "))
    };
    writeln!(
        out,
        "server: {} (recognised by {}{facts})",
        r.server.name(),
        r.recognised_by
    )?;
    writeln!(out, "\nwhat it does (from /proc):")?;
    for e in &r.endpoints {
        writeln!(out, "  {}", e.endpoint.description)?;
        for line in watcher_line(&e.endpoint) {
            writeln!(out, "    {line}")?;
        }
    }
    match &r.cost {
        Some(c) => {
            writeln!(
                out,
                "\nwhat it costs (traced {:.1} s{}):",
                c.seconds,
                r.backend
                    .as_deref()
                    .map(|b| format!(", {b} backend"))
                    .unwrap_or_default()
            )?;
            writeln!(
                out,
                "  {} connections ({:.1}/s), {:.2} tasks woken per connection (max {})",
                c.connections, c.connections_per_s, c.woken_per_conn, c.woken_max
            )?;
            writeln!(
                out,
                "  wasted wakeups: {:.2} per connection, {:.1}/s (EAGAIN losers {:.1}/s + spurious {:.1}/s); EAGAIN from accept {:.1}/s",
                c.wasted_per_conn,
                c.wasted_per_s,
                c.eagain_losers_per_s,
                c.spurious_per_s,
                c.eagain_per_s
            )?;
            let measured = c
                .measured_context_switches_per_conn
                .map(|m| {
                    format!("; the server's threads switched {m:.1} times per connection in all")
                })
                .unwrap_or_default();
            writeln!(
                out,
                "  extra context switches: ~{:.1}/s (2 per wasted wakeup){measured}",
                c.extra_context_switches_per_s
            )?;
            if c.lost_events > 0 {
                writeln!(out, "  warning: {} events lost", c.lost_events)?;
            }
            writeln!(out, "  {}", c.verdict_line)?;
            if let Some(b) = &r.balance {
                writeln!(out, "  balance: {}", b.line)?;
            }
        }
        None => writeln!(out, "\nwhat it costs: not traced")?,
    }
    writeln!(out, "\nwhat to change:")?;
    for e in &r.endpoints {
        let prefix = if r.endpoints.len() > 1 {
            format!("{}: ", e.endpoint.addr)
        } else {
            String::new()
        };
        write_advice(out, &prefix, &e.advice)?;
    }
    if let Some(a) = &r.balance_advice {
        write_advice(out, "", a)?;
    }
    for n in &r.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}

fn write_advice(out: &mut impl Write, prefix: &str, a: &Advice) -> io::Result<()> {
    writeln!(out, "  {prefix}{}", a.headline)?;
    for item in &a.items {
        writeln!(out, "    - {item}")?;
    }
    Ok(())
}

pub fn write_json(out: &mut impl Write, r: &Report) -> io::Result<()> {
    serde_json::to_writer(&mut *out, r)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::layout::{Pattern, SocketSetup, Watcher};

    fn endpoint(watchers: usize) -> Endpoint {
        let pattern = Pattern::EpollPerWorker {
            instances: watchers,
            exclusive: 0,
            threads: false,
        };
        Endpoint {
            addr: "0.0.0.0:80".parse().expect("addr"),
            sockets: vec![SocketSetup {
                inode: 77,
                holders: (1..=watchers as u32).collect(),
                watchers: (0..watchers)
                    .map(|i| Watcher {
                        instance: i,
                        pids: vec![100 + i as u32],
                        fd: 5,
                        events: 0x19,
                        flags: vec![],
                        waiting_threads: vec![100 + i as u32],
                        likely_waiters: 1,
                    })
                    .collect(),
                accepting_threads: vec![],
                polling_threads: vec![],
                workers_with_epoll: vec![],
                lock_waiters: vec![],
                uring_accepts: 0,
                uring_exclusive: true,
            }],
            pattern,
            acceptors: watchers,
            description: String::new(),
        }
    }

    #[test]
    fn lists_a_few_watchers_then_counts() {
        let lines = watcher_line(&endpoint(8));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with(
                "socket 77: held by 8 processes; in epoll of pid 100 fd 5 (no flags, 1 waiting)"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("pid 105 fd 5"), "{}", lines[0]);
        assert!(!lines[0].contains("pid 106"), "{}", lines[0]);
        assert!(lines[0].ends_with("and 2 more"), "{}", lines[0]);
        let lines = watcher_line(&endpoint(1));
        assert_eq!(
            lines[0],
            "socket 77: held by 1 process; in epoll of pid 100 fd 5 (no flags, 1 waiting)"
        );
    }
}
