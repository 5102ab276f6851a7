//! The metric families and how a [`ConnRecord`] updates them.
//!
//! Labels: `port` (local port of the listener) and `process` (comm of the
//! task that accepted the connection; empty when no traced task accepted it
//! before the episode closed). `herdtrace_accepts_total` adds `task`: `PID`
//! for a process's main thread (pre-fork workers such as nginx's, one series
//! per worker) and `PID/TID` for other threads (threaded servers, one series
//! per accepting thread). Each label is bounded: beyond [`MAX_PORTS`] ports,
//! [`MAX_PROCESSES`] names and [`MAX_TASKS`] tasks, new values are reported as
//! `other`, so short-lived threads or endlessly restarted workers cannot grow
//! the number of series without bound.
use std::sync::Arc;

use prometheus_client::{
    encoding::{text, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::fold::Folder;
use crate::{
    engine::{balance::fair_share, ConnRecord, IntervalStats, KnownTask},
    pipeline::Observer,
    report::RunInfo,
};

/// Distinct `port` values before folding into `other`.
pub const MAX_PORTS: usize = 32;
/// Distinct `process` values before folding into `other`.
pub const MAX_PROCESSES: usize = 32;
/// Distinct `task` values of `herdtrace_accepts_total` before folding into `other`.
pub const MAX_TASKS: usize = 64;

/// Upper bounds of the woken-per-connection buckets: 1 is no herd, the
/// steps follow typical worker counts.
pub const WOKEN_BUCKETS: [f64; 13] = [
    0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0, 128.0,
];

/// Upper bounds of the accept-latency buckets, in seconds (10 µs to 1 s).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The media type of the exposition (Prometheus picks its parser from it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    port: String,
    process: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    port: String,
    process: String,
    task: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShareLabels {
    process: String,
    task: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabels {
    program: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    backend: String,
    kernel: String,
}

/// `task` label of a task: `PID` for a process's main thread, `PID/TID` otherwise.
fn task_label(pid: u32, tid: u32) -> String {
    if tid == pid {
        pid.to_string()
    } else {
        format!("{pid}/{tid}")
    }
}

fn woken_histogram() -> Histogram {
    Histogram::new(WOKEN_BUCKETS)
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistFamily = Family<ConnLabels, Histogram, fn() -> Histogram>;

/// Turns connection records into metrics. The metric handles share their
/// values with the registry the HTTP thread renders.
#[derive(Debug)]
pub struct Collector {
    registry: Arc<Registry>,
    connections: Family<ConnLabels, Counter>,
    woken: HistFamily,
    eagain: Family<ConnLabels, Counter>,
    eagain_losers: Family<ConnLabels, Counter>,
    spurious: Family<ConnLabels, Counter>,
    incomplete: Family<ConnLabels, Counter>,
    accepts: Family<TaskLabels, Counter>,
    latency: HistFamily,
    lost: Counter,
    lost_seen: u64,
    skipped: Family<ProgramLabels, Counter>,
    insert_failed: Family<MapLabels, Counter>,
    late: Counter,
    late_seen: u64,
    share: Family<ShareLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The share series set at the last interval (reset to 0 at the next).
    share_labels: Vec<ShareLabels>,
    share_max: Gauge<f64, std::sync::atomic::AtomicU64>,
    fair: Gauge<f64, std::sync::atomic::AtomicU64>,
    workers: Gauge,
    interval_accepts: Gauge,
    untraced: Gauge,
    build_info: Family<BuildLabels, Gauge>,
    ports: Folder,
    processes: Folder,
    tasks: Folder,
}

impl Default for Collector {
    fn default() -> Self {
        Collector::new()
    }
}

impl Collector {
    pub fn new() -> Collector {
        let connections = Family::<ConnLabels, Counter>::default();
        let woken: HistFamily = Family::new_with_constructor(woken_histogram);
        let eagain = Family::<ConnLabels, Counter>::default();
        let eagain_losers = Family::<ConnLabels, Counter>::default();
        let spurious = Family::<ConnLabels, Counter>::default();
        let incomplete = Family::<ConnLabels, Counter>::default();
        let accepts = Family::<TaskLabels, Counter>::default();
        let latency: HistFamily = Family::new_with_constructor(latency_histogram);
        let lost = Counter::default();
        let skipped = Family::<ProgramLabels, Counter>::default();
        let insert_failed = Family::<MapLabels, Counter>::default();
        let late = Counter::default();
        let share = Family::<ShareLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let share_max = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let fair = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let workers = Gauge::default();
        let interval_accepts = Gauge::default();
        let untraced = Gauge::default();
        let build_info = Family::<BuildLabels, Gauge>::default();

        // Counter names get `_total` from the encoder.
        let mut r = Registry::with_prefix("herdtrace");
        r.register(
            "connections",
            "Connections that reached a traced listener",
            connections.clone(),
        );
        r.register(
            "woken_per_connection",
            "Tasks the kernel woke for one connection",
            woken.clone(),
        );
        r.register(
            "eagain",
            "accept calls that returned EAGAIN",
            eagain.clone(),
        );
        r.register(
            "eagain_losers",
            "EAGAINs from tasks that woke, lost the race and accepted nothing",
            eagain_losers.clone(),
        );
        r.register(
            "spurious_wakeups",
            "Woken tasks that went back to sleep without work",
            spurious.clone(),
        );
        r.register(
            "incomplete_connections",
            "Connections whose counts are lower bounds (events lost while open)",
            incomplete.clone(),
        );
        r.register(
            "accepts",
            "Connections accepted, per task (PID, or PID/TID for a thread)",
            accepts.clone(),
        );
        r.register_with_unit(
            "accept_latency",
            "Connection arrival to successful accept",
            Unit::Seconds,
            latency.clone(),
        );
        r.register(
            "lost_events",
            "Tracer events lost before reaching herdtrace",
            lost.clone(),
        );
        r.register(
            "skipped_runs",
            "Runs of a tracer program the kernel skipped (another BPF program was running \
             on that CPU); connections open then are flagged possibly incomplete",
            skipped.clone(),
        );
        r.register(
            "map_insert_failures",
            "Inserts into a tracer map that failed because it was full: what it could not \
             remember (a task, a listener...) is missing from the counts",
            insert_failed.clone(),
        );
        r.register(
            "late_records",
            "Records that reached the ring buffers after later ones had been merged \
             (a CPU interrupted or a vCPU descheduled between stamp and commit): \
             merged out of time order",
            late.clone(),
        );
        r.register(
            "accept_share",
            "Share of the last interval's accepts taken by each task (0 to 1)",
            share.clone(),
        );
        r.register(
            "accept_share_max",
            "Largest share of the last interval's accepts one task took (0 to 1)",
            share_max.clone(),
        );
        r.register(
            "accept_share_fair",
            "The fair share 1/N of N workers able to accept (0 if unknown)",
            fair.clone(),
        );
        r.register(
            "workers",
            "Workers able to accept (from /proc at the start, or the tasks seen accepting)",
            workers.clone(),
        );
        r.register(
            "interval_accepts",
            "Accepts in the last interval (the base of the shares)",
            interval_accepts.clone(),
        );
        r.register(
            "untraced_waiters",
            "Tasks outside the trace waiting on the traced listeners at the start: \
             if not 0, the counts cover the traced tasks only",
            untraced.clone(),
        );
        r.register(
            "build_info",
            "herdtrace's version, the backend it traces with and the kernel, as labels (value 1)",
            build_info.clone(),
        );
        Collector {
            registry: Arc::new(r),
            connections,
            woken,
            eagain,
            eagain_losers,
            spurious,
            incomplete,
            accepts,
            latency,
            lost,
            lost_seen: 0,
            skipped,
            insert_failed,
            late,
            late_seen: 0,
            share,
            share_labels: Vec::new(),
            share_max,
            fair,
            workers,
            interval_accepts,
            untraced,
            build_info,
            ports: Folder::new(MAX_PORTS),
            processes: Folder::new(MAX_PROCESSES),
            tasks: Folder::new(MAX_TASKS),
        }
    }

    /// The registry to render (shared with the HTTP thread).
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// Adds one connection.
    pub fn record(&mut self, r: &ConnRecord) {
        let labels = ConnLabels {
            port: self.ports.fold(&r.port.to_string()),
            process: self
                .processes
                .fold(r.accepted_by.as_ref().map_or("", |t| &*t.comm)),
        };
        self.connections.get_or_create(&labels).inc();
        self.woken
            .get_or_create(&labels)
            .observe(f64::from(r.woken));
        // Every family gets its series with the first connection, zeros
        // included, so sums over several families never miss a port.
        self.eagain
            .get_or_create(&labels)
            .inc_by(u64::from(r.eagain));
        self.eagain_losers
            .get_or_create(&labels)
            .inc_by(u64::from(r.eagain_losers));
        self.spurious
            .get_or_create(&labels)
            .inc_by(u64::from(r.spurious));
        self.incomplete
            .get_or_create(&labels)
            .inc_by(u64::from(r.incomplete));
        if let Some(us) = r.accept_latency_us {
            self.latency.get_or_create(&labels).observe(us as f64 / 1e6);
        }
        if let Some(t) = &r.accepted_by {
            let task_labels = TaskLabels {
                port: labels.port,
                process: labels.process,
                task: self.tasks.fold(&task_label(t.pid, t.tid)),
            };
            self.accepts.get_or_create(&task_labels).inc();
        }
    }

    /// The last interval's shares: every task's gauge is reset, then those
    /// that accepted are set, so a task that stopped accepting reads 0.
    pub fn interval(&mut self, i: &IntervalStats) {
        // Series with a folded task label ("other") add up.
        let mut by_label: Vec<(ShareLabels, f64)> = Vec::new();
        for s in &i.shares {
            let labels = ShareLabels {
                process: self.processes.fold(&s.comm),
                task: self.tasks.fold(&task_label(s.pid, s.tid)),
            };
            match by_label.iter_mut().find(|(l, _)| *l == labels) {
                Some((_, v)) => *v += s.share,
                None => by_label.push((labels, s.share)),
            }
        }
        for old in self.share_labels.drain(..) {
            self.share.get_or_create(&old).set(0.0);
        }
        for (labels, v) in by_label {
            self.share.get_or_create(&labels).set(v);
            self.share_labels.push(labels);
        }
        self.share_max.set(i.share_max());
        self.fair.set(fair_share(i.workers));
        self.workers.set(i.workers as i64);
        self.interval_accepts.set(i.accepts() as i64);
    }

    /// A zero `herdtrace_accepts_total` series for each port of each task
    /// /proc showed able to accept, and a zero `herdtrace_accept_share`: a
    /// worker that never accepts (with `accept_mutex on`, or a LIFO wakeup)
    /// is the finding, and a missing series would read as "not there"
    /// rather than "took nothing".
    pub fn set_known_tasks(&mut self, tasks: &[KnownTask]) {
        for t in tasks {
            let share = ShareLabels {
                process: self.processes.fold(&t.comm),
                task: self.tasks.fold(&task_label(t.pid, t.tid)),
            };
            self.share.get_or_create(&share).set(0.0);
            for port in &t.ports {
                let labels = TaskLabels {
                    port: self.ports.fold(&port.to_string()),
                    process: share.process.clone(),
                    task: share.task.clone(),
                };
                self.accepts.get_or_create(&labels).inc_by(0);
            }
        }
    }

    /// `herdtrace_untraced_waiters`: tasks outside the trace waiting on
    /// its listeners (one worker of a pre-fork server traced).
    pub fn set_untraced(&mut self, tasks: usize) {
        self.untraced.set(i64::try_from(tasks).unwrap_or(i64::MAX));
    }

    /// `herdtrace_build_info{version, backend, kernel} 1`.
    pub fn set_run_info(&mut self, info: &RunInfo) {
        self.build_info.clear();
        self.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                backend: info.backend.clone(),
                kernel: info.kernel.clone(),
            })
            .set(1);
    }

    /// The run's lost-event total so far; the counter follows it (it never goes down).
    pub fn set_lost_total(&mut self, total: u64) {
        if total > self.lost_seen {
            self.lost.inc_by(total - self.lost_seen);
            self.lost_seen = total;
        }
    }
}

impl Observer for Collector {
    fn on_conn(&mut self, record: &ConnRecord) {
        self.record(record);
    }

    fn on_lost_total(&mut self, total: u64) {
        self.set_lost_total(total);
    }

    fn on_interval(&mut self, interval: &IntervalStats) {
        self.interval(interval);
    }

    fn on_skipped(&mut self, program: &str, runs: u64) {
        let labels = ProgramLabels {
            program: program.to_string(),
        };
        self.skipped.get_or_create(&labels).inc_by(runs);
    }

    fn on_insert_failed(&mut self, map: &str, n: u64) {
        let labels = MapLabels {
            map: map.to_string(),
        };
        self.insert_failed.get_or_create(&labels).inc_by(n);
    }

    fn on_late_total(&mut self, total: u64) {
        if total > self.late_seen {
            self.late.inc_by(total - self.late_seen);
            self.late_seen = total;
        }
    }
}

/// The exposition of `registry` (OpenMetrics text, ending in `# EOF`).
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    text::encode(&mut out, registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::TaskRef;
    use crate::exporter::fold::OTHER;
    use crate::exporter::sample::{parse, value, Sample};

    fn rec(port: u16, who: Option<(u32, u32, &str)>, woken: u32) -> ConnRecord {
        ConnRecord {
            ts_ns: 1,
            port,
            peer: None,
            accepted_by: who.map(|(pid, tid, comm)| TaskRef {
                pid,
                tid,
                comm: comm.into(),
            }),
            woken,
            returned: woken.min(1),
            spurious: woken.saturating_sub(1),
            eagain: woken.saturating_sub(1),
            eagain_losers: woken.saturating_sub(1),
            epolls: woken,
            accept_latency_us: who.map(|_| 40),
            incomplete: false,
            possibly_incomplete: false,
            netns: 0,
        }
    }

    fn scrape(c: &Collector) -> Vec<Sample> {
        parse(&render(&c.registry()).expect("render"))
    }

    fn conn<'a>(port: &'a str, process: &'a str) -> [(&'a str, &'a str); 2] {
        [("port", port), ("process", process)]
    }

    #[test]
    fn an_empty_collector_renders_only_the_plain_metrics_and_eof() {
        // Families without series are left out by the encoder; plain
        // counters and gauges are there from the start, at zero.
        let s = parse(&render(&Collector::new().registry()).expect("render"));
        let names: Vec<&str> = s.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "herdtrace_lost_events_total",
                "herdtrace_late_records_total",
                "herdtrace_accept_share_max",
                "herdtrace_accept_share_fair",
                "herdtrace_workers",
                "herdtrace_interval_accepts",
                "herdtrace_untraced_waiters",
            ]
        );
        assert!(s.iter().all(|x| x.value == 0.0));
        let text = render(&Collector::new().registry()).expect("render");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    fn shares(workers: u64, tasks: &[(u32, u32, &str, u64)]) -> IntervalStats {
        IntervalStats {
            shares: crate::engine::task_shares(
                tasks
                    .iter()
                    .map(|&(pid, tid, comm, n)| (pid, tid, comm.to_string(), n)),
            ),
            workers,
            ..IntervalStats::default()
        }
    }

    #[test]
    fn interval_shares_follow_the_last_interval() {
        let mut c = Collector::new();
        c.interval(&shares(4, &[(10, 10, "nginx", 30), (11, 11, "nginx", 10)]));
        let s = scrape(&c);
        let share = |s: &[Sample], task: &str| {
            value(
                s,
                "herdtrace_accept_share",
                &[("process", "nginx"), ("task", task)],
            )
        };
        assert_eq!(share(&s, "10"), Some(0.75));
        assert_eq!(share(&s, "11"), Some(0.25));
        assert_eq!(value(&s, "herdtrace_accept_share_max", &[]), Some(0.75));
        assert_eq!(value(&s, "herdtrace_accept_share_fair", &[]), Some(0.25));
        assert_eq!(value(&s, "herdtrace_workers", &[]), Some(4.0));
        assert_eq!(value(&s, "herdtrace_interval_accepts", &[]), Some(40.0));
        // Next interval: only a thread of 10 accepted; the others read 0.
        c.interval(&shares(4, &[(10, 12, "nginx", 5)]));
        let s = scrape(&c);
        assert_eq!(share(&s, "10"), Some(0.0));
        assert_eq!(share(&s, "11"), Some(0.0));
        assert_eq!(share(&s, "10/12"), Some(1.0));
        assert_eq!(value(&s, "herdtrace_accept_share_max", &[]), Some(1.0));
        // An interval without accepts.
        Observer::on_interval(&mut c, &shares(4, &[]));
        let s = scrape(&c);
        assert_eq!(value(&s, "herdtrace_accept_share_max", &[]), Some(0.0));
        assert_eq!(share(&s, "10/12"), Some(0.0));
    }

    #[test]
    fn folded_tasks_add_their_shares() {
        let mut c = Collector::new();
        let many: Vec<(u32, u32, &str, u64)> = (0..(MAX_TASKS as u32 + 4))
            .map(|t| (1, 100 + t, "srv", 1))
            .collect();
        c.interval(&shares(0, &many));
        let s = scrape(&c);
        let other = value(
            &s,
            "herdtrace_accept_share",
            &[("process", "srv"), ("task", OTHER)],
        )
        .expect("other");
        assert!(
            (other - 4.0 / (MAX_TASKS as f64 + 4.0)).abs() < 1e-12,
            "{other}"
        );
        let total: f64 = s
            .iter()
            .filter(|x| x.name == "herdtrace_accept_share")
            .map(|x| x.value)
            .sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        assert_eq!(value(&s, "herdtrace_accept_share_fair", &[]), Some(0.0));
    }

    #[test]
    fn build_info_carries_version_backend_and_kernel() {
        let mut c = Collector::new();
        assert!(!render(&c.registry())
            .expect("render")
            .contains("herdtrace_build_info"));
        c.set_run_info(&RunInfo {
            backend: "tracepoint".into(),
            kernel: "6.18.44".into(),
            ..RunInfo::default()
        });
        let text = render(&c.registry()).expect("render");
        assert!(text.contains("# TYPE herdtrace_build_info gauge"), "{text}");
        let s = parse(&text);
        assert_eq!(
            value(
                &s,
                "herdtrace_build_info",
                &[
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("backend", "tracepoint"),
                    ("kernel", "6.18.44"),
                ]
            ),
            Some(1.0)
        );
        // Set again (never expected): still one series.
        c.set_run_info(&RunInfo {
            backend: "fentry".into(),
            kernel: "6.1.0".into(),
            ..RunInfo::default()
        });
        let s = scrape(&c);
        assert_eq!(
            s.iter()
                .filter(|x| x.name == "herdtrace_build_info")
                .count(),
            1
        );
    }

    #[test]
    fn every_family_has_help_type_and_its_unit() {
        let mut c = Collector::new();
        let mut r = rec(80, Some((1, 1, "srv")), 3);
        r.incomplete = true;
        c.record(&r);
        let text = render(&c.registry()).expect("render");
        for (name, kind) in [
            ("herdtrace_connections", "counter"),
            ("herdtrace_woken_per_connection", "histogram"),
            ("herdtrace_eagain", "counter"),
            ("herdtrace_eagain_losers", "counter"),
            ("herdtrace_spurious_wakeups", "counter"),
            ("herdtrace_incomplete_connections", "counter"),
            ("herdtrace_accepts", "counter"),
            ("herdtrace_accept_latency_seconds", "histogram"),
            ("herdtrace_lost_events", "counter"),
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}: {text}");
            assert!(
                text.contains(&format!("\n# TYPE {name} {kind}\n")),
                "{name}: {text}"
            );
        }
        assert!(text.contains("\n# UNIT herdtrace_accept_latency_seconds seconds\n"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_herd_updates_counts_histograms_and_per_task_accepts() {
        let mut c = Collector::new();
        // nginx-like: 4 worker processes, each connection wakes all 4.
        for i in 0..8u32 {
            let pid = 100 + i % 4;
            c.record(&rec(8080, Some((pid, pid, "nginx")), 4));
        }
        let s = scrape(&c);
        let l = conn("8080", "nginx");
        assert_eq!(value(&s, "herdtrace_connections_total", &l), Some(8.0));
        assert_eq!(value(&s, "herdtrace_eagain_total", &l), Some(24.0));
        assert_eq!(value(&s, "herdtrace_eagain_losers_total", &l), Some(24.0));
        assert_eq!(
            value(&s, "herdtrace_spurious_wakeups_total", &l),
            Some(24.0)
        );
        assert_eq!(
            value(&s, "herdtrace_woken_per_connection_count", &l),
            Some(8.0)
        );
        assert_eq!(
            value(&s, "herdtrace_woken_per_connection_sum", &l),
            Some(32.0)
        );
        for pid in 100..104 {
            let task = pid.to_string();
            let tl = [("port", "8080"), ("process", "nginx"), ("task", &task)];
            assert_eq!(value(&s, "herdtrace_accepts_total", &tl), Some(2.0));
        }
        assert_eq!(
            value(&s, "herdtrace_accept_latency_seconds_count", &l),
            Some(8.0)
        );
        let sum = value(&s, "herdtrace_accept_latency_seconds_sum", &l).expect("sum");
        assert!((sum - 8.0 * 40e-6).abs() < 1e-12, "{sum}");
        // No incomplete connection: the series is there, at zero.
        assert_eq!(
            value(&s, "herdtrace_incomplete_connections_total", &l),
            Some(0.0)
        );
    }

    #[test]
    fn woken_buckets_are_cumulative_with_le_labels() {
        let mut c = Collector::new();
        for woken in [0, 1, 1, 2, 4, 5, 200] {
            c.record(&rec(80, Some((1, 1, "srv")), woken));
        }
        let s = scrape(&c);
        let bucket = |le: &str| {
            value(
                &s,
                "herdtrace_woken_per_connection_bucket",
                &[("port", "80"), ("le", le)],
            )
            .unwrap_or_else(|| panic!("bucket {le}"))
        };
        assert_eq!(bucket("0.0"), 1.0);
        assert_eq!(bucket("1.0"), 3.0);
        assert_eq!(bucket("2.0"), 4.0);
        assert_eq!(bucket("3.0"), 4.0);
        assert_eq!(bucket("4.0"), 5.0);
        assert_eq!(bucket("6.0"), 6.0);
        assert_eq!(bucket("128.0"), 6.0);
        assert_eq!(bucket("+Inf"), 7.0);
        let les = s
            .iter()
            .filter(|x| x.name == "herdtrace_woken_per_connection_bucket")
            .count();
        assert_eq!(les, WOKEN_BUCKETS.len() + 1, "one per bound plus +Inf");
    }

    #[test]
    fn latency_buckets_are_in_seconds() {
        let mut c = Collector::new();
        let mut r = rec(80, Some((1, 1, "srv")), 1);
        for us in [5, 30, 2_000_000] {
            r.accept_latency_us = Some(us);
            c.record(&r);
        }
        // An unaccepted connection has no latency.
        c.record(&rec(80, None, 1));
        let s = scrape(&c);
        let l = [("port", "80"), ("process", "srv")];
        let bucket = |le: &str| {
            let mut want = l.to_vec();
            want.push(("le", le));
            value(&s, "herdtrace_accept_latency_seconds_bucket", &want)
                .unwrap_or_else(|| panic!("bucket {le}"))
        };
        assert_eq!(bucket("0.00001"), 1.0);
        assert_eq!(bucket("0.000025"), 1.0);
        assert_eq!(bucket("0.00005"), 2.0);
        assert_eq!(bucket("1.0"), 2.0);
        assert_eq!(bucket("+Inf"), 3.0);
        assert_eq!(
            value(&s, "herdtrace_accept_latency_seconds_count", &l),
            Some(3.0)
        );
        assert_eq!(
            value(
                &s,
                "herdtrace_accept_latency_seconds_count",
                &conn("80", "")
            ),
            None
        );
    }

    #[test]
    fn ports_and_processes_are_counted_apart() {
        let mut c = Collector::new();
        c.record(&rec(80, Some((10, 10, "nginx")), 4));
        c.record(&rec(80, Some((10, 10, "nginx")), 1));
        c.record(&rec(443, Some((10, 10, "nginx")), 2));
        c.record(&rec(80, Some((20, 20, "lighttpd")), 1));
        c.record(&rec(80, None, 3));
        let s = scrape(&c);
        let n = |port, process| value(&s, "herdtrace_connections_total", &conn(port, process));
        assert_eq!(n("80", "nginx"), Some(2.0));
        assert_eq!(n("443", "nginx"), Some(1.0));
        assert_eq!(n("80", "lighttpd"), Some(1.0));
        // Nobody accepted it: empty process, still a connection with its herd.
        assert_eq!(n("80", ""), Some(1.0));
        assert_eq!(
            value(
                &s,
                "herdtrace_woken_per_connection_sum",
                &conn("80", "nginx")
            ),
            Some(5.0)
        );
        assert_eq!(
            value(&s, "herdtrace_woken_per_connection_sum", &conn("80", "")),
            Some(3.0)
        );
        let accepts: Vec<&Sample> = s
            .iter()
            .filter(|x| x.name == "herdtrace_accepts_total")
            .collect();
        assert_eq!(accepts.len(), 3, "no accepts series without an acceptor");
        let total: f64 = accepts.iter().map(|x| x.value).sum();
        assert_eq!(total, 4.0);
    }

    #[test]
    fn workers_proc_named_have_accept_series_from_the_start() {
        let mut c = Collector::new();
        let known = |pid: u32, tid: u32, comm: &str, ports: &[u16]| KnownTask {
            pid,
            tid,
            comm: comm.into(),
            ports: ports.to_vec(),
        };
        c.set_known_tasks(&[
            known(100, 100, "nginx", &[80, 443]),
            known(101, 101, "nginx", &[80, 443]),
            known(200, 202, "srv-worker", &[8080]),
            // No port known (a recording made before them): no series.
            known(300, 300, "old", &[]),
        ]);
        c.record(&rec(80, Some((100, 100, "nginx")), 4));
        c.record(&rec(80, Some((100, 100, "nginx")), 4));
        let s = scrape(&c);
        let accepts = |port: &str, process: &str, task: &str| {
            value(
                &s,
                "herdtrace_accepts_total",
                &[("port", port), ("process", process), ("task", task)],
            )
        };
        assert_eq!(accepts("80", "nginx", "100"), Some(2.0));
        assert_eq!(value(&s, "herdtrace_untraced_waiters", &[]), Some(0.0));
        c.set_untraced(3);
        assert_eq!(
            value(&scrape(&c), "herdtrace_untraced_waiters", &[]),
            Some(3.0)
        );
        // The idle worker, and each port: there, at zero.
        assert_eq!(accepts("80", "nginx", "101"), Some(0.0));
        assert_eq!(accepts("443", "nginx", "100"), Some(0.0));
        assert_eq!(accepts("443", "nginx", "101"), Some(0.0));
        assert_eq!(accepts("8080", "srv-worker", "200/202"), Some(0.0));
        let series = s
            .iter()
            .filter(|x| x.name == "herdtrace_accepts_total")
            .count();
        assert_eq!(series, 5);
        // Each has a share gauge too, at zero until an interval says more.
        let share = |process: &str, task: &str| {
            value(
                &s,
                "herdtrace_accept_share",
                &[("process", process), ("task", task)],
            )
        };
        assert_eq!(share("nginx", "101"), Some(0.0));
        assert_eq!(share("srv-worker", "200/202"), Some(0.0));
        assert_eq!(share("old", "300"), Some(0.0));
        c.interval(&shares(
            2,
            &[(100, 100, "nginx", 3), (101, 101, "nginx", 1)],
        ));
        let s = scrape(&c);
        let share = |task: &str| {
            value(
                &s,
                "herdtrace_accept_share",
                &[("process", "nginx"), ("task", task)],
            )
        };
        assert_eq!(share("100"), Some(0.75));
        assert_eq!(share("101"), Some(0.25));
    }

    #[test]
    fn threads_are_labelled_pid_slash_tid_and_folded_beyond_the_cap() {
        let mut c = Collector::new();
        // A threaded server: one process, many accepting threads, some short-lived.
        let threads = MAX_TASKS as u32 + 10;
        for tid in 0..threads {
            c.record(&rec(8080, Some((500, 501 + tid, "srv")), 1));
        }
        // The main thread of the process is labelled by its pid alone.
        c.record(&rec(8080, Some((500, 500, "srv")), 1));
        let s = scrape(&c);
        let accepts: Vec<&Sample> = s
            .iter()
            .filter(|x| x.name == "herdtrace_accepts_total")
            .collect();
        assert_eq!(accepts.len(), MAX_TASKS + 1, "the cap plus `other`");
        let task = |t: &str| {
            value(
                &s,
                "herdtrace_accepts_total",
                &[("port", "8080"), ("task", t)],
            )
        };
        assert_eq!(task("500/501"), Some(1.0));
        assert_eq!(task("500/564"), Some(1.0), "the 64th distinct task");
        assert_eq!(task("500/565"), None);
        // 10 late threads plus the main thread, which came after the cap.
        assert_eq!(task(OTHER), Some(11.0));
        let total: f64 = accepts.iter().map(|x| x.value).sum();
        assert_eq!(total, f64::from(threads + 1), "folding loses no accept");
    }

    #[test]
    fn ports_and_process_names_are_bounded_too() {
        let mut c = Collector::new();
        for i in 0..(MAX_PORTS as u16 + 5) {
            c.record(&rec(1000 + i, Some((1, 1, "srv")), 1));
        }
        for i in 0..(MAX_PROCESSES + 3) {
            c.record(&rec(1000, Some((1, 1, &format!("p{i}"))), 1));
        }
        let s = scrape(&c);
        let series = |name: &str| s.iter().filter(|x| x.name == name).count();
        let conns = series("herdtrace_connections_total");
        assert!(
            conns <= (MAX_PORTS + 1) * (MAX_PROCESSES + 1),
            "{conns} series"
        );
        assert_eq!(
            value(&s, "herdtrace_connections_total", &conn(OTHER, "srv")),
            Some(5.0)
        );
        // "srv" took one of the process slots first: p31.. fold.
        let folded = MAX_PROCESSES + 3 - (MAX_PROCESSES - 1);
        assert_eq!(
            value(&s, "herdtrace_connections_total", &conn("1000", OTHER)),
            Some(folded as f64)
        );
        let total: f64 = s
            .iter()
            .filter(|x| x.name == "herdtrace_connections_total")
            .map(|x| x.value)
            .sum();
        assert_eq!(total, (MAX_PORTS + 5 + MAX_PROCESSES + 3) as f64);
    }

    #[test]
    fn a_connection_without_herd_still_creates_every_series_at_zero() {
        let mut c = Collector::new();
        c.record(&rec(80, Some((1, 1, "srv")), 1));
        let s = scrape(&c);
        let l = conn("80", "srv");
        for name in [
            "herdtrace_eagain_total",
            "herdtrace_eagain_losers_total",
            "herdtrace_spurious_wakeups_total",
            "herdtrace_incomplete_connections_total",
        ] {
            assert_eq!(value(&s, name, &l), Some(0.0), "{name}");
        }
        assert_eq!(value(&s, "herdtrace_connections_total", &l), Some(1.0));
    }

    #[test]
    fn incomplete_connections_are_counted() {
        let mut c = Collector::new();
        let mut r = rec(80, Some((1, 1, "srv")), 2);
        r.incomplete = true;
        c.record(&r);
        c.record(&rec(80, Some((1, 1, "srv")), 2));
        let s = scrape(&c);
        assert_eq!(
            value(
                &s,
                "herdtrace_incomplete_connections_total",
                &conn("80", "srv")
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "herdtrace_connections_total", &conn("80", "srv")),
            Some(2.0)
        );
    }

    #[test]
    fn lost_events_follow_the_running_total_and_never_go_down() {
        let mut c = Collector::new();
        let lost = |c: &Collector| value(&scrape(c), "herdtrace_lost_events_total", &[]);
        c.set_lost_total(0);
        assert_eq!(lost(&c), Some(0.0));
        c.set_lost_total(5);
        assert_eq!(lost(&c), Some(5.0));
        c.set_lost_total(5);
        assert_eq!(lost(&c), Some(5.0));
        c.set_lost_total(3);
        assert_eq!(lost(&c), Some(5.0));
        Observer::on_lost_total(&mut c, 12);
        assert_eq!(lost(&c), Some(12.0));
    }

    #[test]
    fn the_observer_interface_records_connections() {
        let mut c = Collector::new();
        Observer::on_conn(&mut c, &rec(9000, Some((7, 7, "w")), 3));
        let s = scrape(&c);
        assert_eq!(
            value(&s, "herdtrace_connections_total", &conn("9000", "w")),
            Some(1.0)
        );
    }

    #[test]
    fn odd_process_names_are_escaped_and_read_back() {
        let mut c = Collector::new();
        c.record(&rec(80, Some((1, 1, "a\"b\\c d")), 1));
        let text = render(&c.registry()).expect("render");
        assert!(text.contains(r#"process="a\"b\\c d""#), "{text}");
        let s = parse(&text);
        assert_eq!(
            value(&s, "herdtrace_connections_total", &conn("80", "a\"b\\c d")),
            Some(1.0)
        );
    }

    #[test]
    fn what_the_trace_may_miss_is_counted_by_program_map_and_late_record() {
        let mut c = Collector::new();
        c.on_skipped("sched_waking", 3);
        c.on_skipped("sched_waking", 2);
        c.on_skipped("tp_accept_exit", 1);
        c.on_insert_failed("TRACED", 4);
        c.on_late_total(2);
        c.on_late_total(7);
        // A total read again, or lower, adds nothing.
        c.on_late_total(7);
        c.on_late_total(5);
        let s = scrape(&c);
        let skipped = |p: &str| value(&s, "herdtrace_skipped_runs_total", &[("program", p)]);
        assert_eq!(skipped("sched_waking"), Some(5.0));
        assert_eq!(skipped("tp_accept_exit"), Some(1.0));
        assert_eq!(
            value(
                &s,
                "herdtrace_map_insert_failures_total",
                &[("map", "TRACED")]
            ),
            Some(4.0)
        );
        assert_eq!(value(&s, "herdtrace_late_records_total", &[]), Some(7.0));
    }
}
