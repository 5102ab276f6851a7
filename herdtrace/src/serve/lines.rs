//! The lines `herdtrace serve` prints for machines: the listening line and
//! the `--stats` lines. The server writes them with these `Display`s and
//! its callers parse them with these parsers, so the formats are exact.
//! xtask compiles this file in with `#[path]` (it cannot depend on the
//! herdtrace crate), so it uses only std.
use std::fmt;
use std::str::FromStr;

/// The loopback address the server listens on, as the listening line writes it.
pub fn loopback(ipv6: bool) -> &'static str {
    if ipv6 {
        "[::1]"
    } else {
        "127.0.0.1"
    }
}

/// `listening on 127.0.0.1:<port> pid <pid> model <model> workers <n>`
/// (`[::1]:<port>` with `--ipv6`). `M` is the model: herdtrace's own enum
/// (which refuses unknown names), or its name as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListeningLine<M = String> {
    /// Listening on [::1] rather than 127.0.0.1.
    pub ipv6: bool,
    pub port: u16,
    pub pid: i32,
    pub model: M,
    pub workers: usize,
}

impl<M: fmt::Display> fmt::Display for ListeningLine<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "listening on {}:{} pid {} model {} workers {}",
            loopback(self.ipv6),
            self.port,
            self.pid,
            self.model,
            self.workers
        )
    }
}

impl<M> ListeningLine<M> {
    /// `host:port` to connect to.
    pub fn addr(&self) -> String {
        format!("{}:{}", loopback(self.ipv6), self.port)
    }
}

impl<M: FromStr> ListeningLine<M> {
    /// Parses exactly the format `Display` writes (no trailing newline).
    pub fn parse(line: &str) -> Option<Self> {
        let w: Vec<&str> = line.split(' ').collect();
        match w.as_slice() {
            ["listening", "on", addr, "pid", pid, "model", model, "workers", n] => Some(Self {
                ipv6: addr.starts_with('['),
                port: addr
                    .strip_prefix("127.0.0.1:")
                    .or_else(|| addr.strip_prefix("[::1]:"))?
                    .parse()
                    .ok()?,
                pid: pid.parse().ok()?,
                model: model.parse().ok()?,
                workers: n.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// One worker's user-space counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkerStats {
    pub idx: usize,
    pub pid: i32,
    pub tid: i32,
    /// Connections accepted.
    pub accepts: u64,
    /// accept calls that returned EAGAIN.
    pub eagain: u64,
    /// epoll_wait calls that returned 0 events.
    pub empty_waits: u64,
}

/// The sum over all workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TotalStats {
    pub accepts: u64,
    pub eagain: u64,
    pub empty_waits: u64,
}

impl TotalStats {
    pub fn of(workers: &[WorkerStats]) -> Self {
        workers.iter().fold(Self::default(), |t, w| Self {
            accepts: t.accepts + w.accepts,
            eagain: t.eagain + w.eagain,
            empty_waits: t.empty_waits + w.empty_waits,
        })
    }
}

impl fmt::Display for WorkerStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stats worker {} pid {} tid {} accepts {} eagain {} empty_waits {}",
            self.idx, self.pid, self.tid, self.accepts, self.eagain, self.empty_waits
        )
    }
}

impl fmt::Display for TotalStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stats total accepts {} eagain {} empty_waits {}",
            self.accepts, self.eagain, self.empty_waits
        )
    }
}

/// A parsed `--stats` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsLine {
    Worker(WorkerStats),
    Total(TotalStats),
}

impl StatsLine {
    /// Parses exactly the formats `Display` writes; None for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        let w: Vec<&str> = line.split(' ').collect();
        match w.as_slice() {
            ["stats", "worker", idx, "pid", pid, "tid", tid, "accepts", a, "eagain", e, "empty_waits", z] => {
                Some(StatsLine::Worker(WorkerStats {
                    idx: idx.parse().ok()?,
                    pid: pid.parse().ok()?,
                    tid: tid.parse().ok()?,
                    accepts: a.parse().ok()?,
                    eagain: e.parse().ok()?,
                    empty_waits: z.parse().ok()?,
                }))
            }
            ["stats", "total", "accepts", a, "eagain", e, "empty_waits", z] => {
                Some(StatsLine::Total(TotalStats {
                    accepts: a.parse().ok()?,
                    eagain: e.parse().ok()?,
                    empty_waits: z.parse().ok()?,
                }))
            }
            _ => None,
        }
    }
}

/// What a server run with `--stats` printed after its listening line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsOutput {
    /// `stats worker` lines, in the order printed.
    pub workers: Vec<WorkerStats>,
    pub total: Option<TotalStats>,
    /// Every other line.
    pub other: Vec<String>,
}

impl StatsOutput {
    pub fn of(lines: impl IntoIterator<Item = String>) -> StatsOutput {
        let mut out = StatsOutput::default();
        for line in lines {
            match StatsLine::parse(&line) {
                Some(StatsLine::Worker(w)) => out.workers.push(w),
                Some(StatsLine::Total(t)) => out.total = Some(t),
                None => out.other.push(line),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model type that, like herdtrace's, knows its names.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Model {
        SharedEpoll,
        Reuseport,
    }

    impl fmt::Display for Model {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                Model::SharedEpoll => "shared-epoll",
                Model::Reuseport => "reuseport",
            })
        }
    }

    impl FromStr for Model {
        type Err = ();
        fn from_str(s: &str) -> Result<Self, ()> {
            match s {
                "shared-epoll" => Ok(Model::SharedEpoll),
                "reuseport" => Ok(Model::Reuseport),
                _ => Err(()),
            }
        }
    }

    #[test]
    fn listening_line_exact_format_and_round_trip() {
        let l = ListeningLine {
            ipv6: false,
            port: 8080,
            pid: 42,
            model: Model::SharedEpoll,
            workers: 4,
        };
        let s = l.to_string();
        assert_eq!(
            s,
            "listening on 127.0.0.1:8080 pid 42 model shared-epoll workers 4"
        );
        assert_eq!(ListeningLine::parse(&s), Some(l));
        assert_eq!(l.addr(), "127.0.0.1:8080");
        let v6 = ListeningLine { ipv6: true, ..l };
        assert_eq!(
            v6.to_string(),
            "listening on [::1]:8080 pid 42 model shared-epoll workers 4"
        );
        assert_eq!(ListeningLine::parse(&v6.to_string()), Some(v6));
        assert_eq!(v6.addr(), "[::1]:8080");
        let r = ListeningLine {
            model: Model::Reuseport,
            ..l
        };
        assert_eq!(ListeningLine::parse(&r.to_string()), Some(r));
    }

    #[test]
    fn a_string_model_takes_any_name() {
        let line = "listening on 127.0.0.1:43451 pid 24722 model tokio-reuseport workers 4";
        let l: ListeningLine = ListeningLine::parse(line).expect("parses");
        assert_eq!((l.port, l.pid, l.workers), (43451, 24722, 4));
        assert_eq!(l.model, "tokio-reuseport");
        assert_eq!(l.to_string(), line);
    }

    #[test]
    fn listening_line_rejects_variants() {
        for bad in [
            "listening on 127.0.0.1:8080 pid 42 model shared-epoll workers 4 ",
            "listening on 0.0.0.0:8080 pid 42 model shared-epoll workers 4",
            "listening on 127.0.0.1:99999 pid 42 model shared-epoll workers 4",
            "listening on 127.0.0.1:8080 pid x model shared-epoll workers 4",
            "listening on 127.0.0.1:8080 pid 42 model bogus workers 4",
            "listening on 127.0.0.1:8080 pid 42 model shared-epoll",
            "stats total accepts 1 eagain 2 empty_waits 3",
            "",
        ] {
            assert_eq!(ListeningLine::<Model>::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn worker_line_exact_format_and_round_trip() {
        let w = WorkerStats {
            idx: 3,
            pid: 100,
            tid: 101,
            accepts: 250,
            eagain: 17,
            empty_waits: 2,
        };
        let s = w.to_string();
        assert_eq!(
            s,
            "stats worker 3 pid 100 tid 101 accepts 250 eagain 17 empty_waits 2"
        );
        assert_eq!(StatsLine::parse(&s), Some(StatsLine::Worker(w)));
    }

    #[test]
    fn total_line_exact_format_and_round_trip() {
        let t = TotalStats {
            accepts: u64::MAX,
            eagain: 0,
            empty_waits: 9,
        };
        let s = t.to_string();
        assert_eq!(
            s,
            format!("stats total accepts {} eagain 0 empty_waits 9", u64::MAX)
        );
        assert_eq!(StatsLine::parse(&s), Some(StatsLine::Total(t)));
    }

    #[test]
    fn stats_parse_rejects_other_lines() {
        for bad in [
            "stats worker 3 pid 100 tid 101 accepts 250 eagain 17",
            "stats worker 3 pid 100 tid 101 accepts -1 eagain 17 empty_waits 2",
            "stats total accepts 1 eagain 2 empty_waits",
            "stats total accepts 1 eagain 2 empty_waits 3 extra",
            "listening on 127.0.0.1:8080 pid 42 model shared-epoll workers 4",
            "",
        ] {
            assert_eq!(StatsLine::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stats_output_sorts_the_lines() {
        let lines = [
            "stats worker 0 pid 1 tid 1 accepts 5 eagain 1 empty_waits 0",
            "herdtrace serve: stopping",
            "stats worker 1 pid 2 tid 2 accepts 7 eagain 3 empty_waits 4",
            "stats total accepts 12 eagain 4 empty_waits 4",
        ];
        let out = StatsOutput::of(lines.map(String::from));
        assert_eq!(
            out.workers.iter().map(|w| w.accepts).collect::<Vec<_>>(),
            [5, 7]
        );
        assert_eq!(out.total.map(|t| t.accepts), Some(12));
        assert_eq!(out.other, ["herdtrace serve: stopping"]);
        assert_eq!(StatsOutput::of(Vec::new()), StatsOutput::default());
    }

    #[test]
    fn total_sums_every_counter() {
        let ws = [
            WorkerStats {
                idx: 0,
                pid: 1,
                tid: 1,
                accepts: 5,
                eagain: 1,
                empty_waits: 0,
            },
            WorkerStats {
                idx: 1,
                pid: 2,
                tid: 2,
                accepts: 7,
                eagain: 3,
                empty_waits: 4,
            },
        ];
        assert_eq!(
            TotalStats::of(&ws),
            TotalStats {
                accepts: 12,
                eagain: 4,
                empty_waits: 4
            }
        );
        assert_eq!(TotalStats::of(&[]), TotalStats::default());
    }
}
