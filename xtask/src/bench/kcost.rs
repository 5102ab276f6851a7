//! Section "Kernel cost": the time the kernel spends in herdtrace's eBPF
//! programs per connection, from the kernel's own per-program statistics
//! (`kernel.bpf_stats_enabled`, read with `bpftool prog show --json`). Unlike
//! a throughput ratio it hardly moves with the machine's noise, so it is the
//! figure to watch when a probe changes; the share of the untraced CPU time
//! per connection it represents bounds the throughput a traced server keeps.
use std::collections::HashSet;
use std::process::Command;

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::loadgen;
use super::report::{SectionReport, Table};
use super::server::Server;
use super::tracer::{self, Availability, Tracer, TracerSpec};
use super::Ctx;
use crate::proc;

pub const TITLE: &str = "Kernel cost: time in herdtrace's eBPF programs per connection";
pub const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
const CONCURRENCY: u32 = 32;

/// One program's counters as bpftool reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgStat {
    pub id: u64,
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// Parses `bpftool prog show --json` (counters are absent while statistics
/// are off: read as 0).
pub fn parse_progs(json: &str) -> Result<Vec<ProgStat>, String> {
    prog_list(json)?
        .iter()
        .map(|p| {
            let id = p["id"]
                .as_u64()
                .ok_or("bpftool JSON: a program without id")?;
            Ok(ProgStat {
                id,
                name: p["name"].as_str().unwrap_or("?").to_string(),
                run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
                run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

/// The programs of `bpftool prog show --json`.
fn prog_list(json: &str) -> Result<Vec<Value>, String> {
    match serde_json::from_str(json).map_err(|e| format!("bpftool JSON: {e}"))? {
        Value::Array(progs) => Ok(progs),
        _ => Err("bpftool JSON: not an array".into()),
    }
}

/// Program types that run on tracing hooks. Another tool's programs of
/// these types run on the same hits as herdtrace's and slow every run of a
/// bench, the untraced ones too (a tracer left attached once made a whole
/// afternoon's figures wrong).
const TRACING_TYPES: [&str; 5] = [
    "kprobe",
    "tracepoint",
    "raw_tracepoint",
    "tracing",
    "perf_event",
];

/// The tracing programs in `bpftool prog show --json`, as `name (type, id N)`.
pub fn tracing_programs(json: &str) -> Result<Vec<String>, String> {
    Ok(prog_list(json)?
        .iter()
        .filter_map(|p| {
            let kind = p["type"].as_str()?;
            TRACING_TYPES.contains(&kind).then(|| {
                let name = p["name"].as_str().unwrap_or("?");
                format!("{name} ({kind}, id {})", p["id"])
            })
        })
        .collect())
}

/// A section that warns when tracing programs are already loaded before the
/// bench starts: their cost is in every figure. None when there are none.
pub fn other_tracers_check() -> Option<SectionReport> {
    let listed = bpftool_progs()
        .map_err(|e| format!("{e:#}"))
        .and_then(|json| tracing_programs(&json));
    if listed.as_ref().is_ok_and(Vec::is_empty) {
        return None;
    }
    let mut r = SectionReport::new("Other tracing programs");
    match listed {
        Ok(progs) => {
            const SHOWN: usize = 8;
            let more = progs.len().saturating_sub(SHOWN);
            let mut list = progs
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if more > 0 {
                list.push_str(&format!(" and {more} more"));
            }
            r.warnings.push(format!(
                "{} tracing program(s) were loaded before the bench began: {list}. They run \
                 on the same probe hits, so every figure below, the untraced runs included, \
                 carries their cost; stop them and run again",
                progs.len()
            ));
        }
        Err(e) => r
            .warnings
            .push(format!("could not list the loaded BPF programs: {e}")),
    }
    Some(r)
}

/// What each of `ours` ran between the two snapshots, busiest first.
pub fn delta(before: &[ProgStat], after: &[ProgStat], ours: &HashSet<u64>) -> Vec<ProgStat> {
    let mut out: Vec<ProgStat> = after
        .iter()
        .filter(|a| ours.contains(&a.id))
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            // A counter below its earlier value was reset: count from zero.
            let since =
                |now: u64, then: Option<u64>| now.checked_sub(then.unwrap_or(0)).unwrap_or(now);
            ProgStat {
                id: a.id,
                name: a.name.clone(),
                run_cnt: since(a.run_cnt, b.map(|b| b.run_cnt)),
                run_time_ns: since(a.run_time_ns, b.map(|b| b.run_time_ns)),
            }
        })
        .filter(|p| p.run_cnt > 0)
        .collect();
    out.sort_by(|x, y| y.run_time_ns.cmp(&x.run_time_ns).then(x.name.cmp(&y.name)));
    out
}

/// One model's measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCost {
    pub model: String,
    pub backend: String,
    pub connections: u64,
    pub untraced_rate: f64,
    pub progs: Vec<ProgStat>,
    /// The same probe points with programs that do nothing (tracepoint backend).
    pub floor: Option<Floor>,
}

/// What do-nothing programs on herdtrace's probe points measure: the
/// statistics' own clock reads and the call, which every figure above includes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floor {
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub connections: u64,
}

impl Floor {
    pub fn ns_per_run(&self) -> f64 {
        self.run_time_ns as f64 / self.run_cnt.max(1) as f64
    }
}

impl ModelCost {
    pub fn ns_per_conn(&self) -> f64 {
        let total: u64 = self.progs.iter().map(|p| p.run_time_ns).sum();
        total as f64 / self.connections.max(1) as f64
    }

    pub fn runs_per_conn(&self) -> f64 {
        let runs: u64 = self.progs.iter().map(|p| p.run_cnt).sum();
        runs as f64 / self.connections.max(1) as f64
    }

    /// The CPU time the untraced machine spends per connection at its
    /// maximum rate, in ns.
    pub fn budget_ns(&self, cpus: usize) -> f64 {
        cpus as f64 * 1e9 / self.untraced_rate.max(1.0)
    }
}

/// `bpftool prog show --json`: every loaded program.
fn bpftool_progs() -> anyhow::Result<String> {
    proc::stdout(Command::new("bpftool").args(["prog", "show", "--json"]))
}

fn snapshot() -> anyhow::Result<Vec<ProgStat>> {
    parse_progs(&bpftool_progs()?).map_err(anyhow::Error::msg)
}

/// A sysctl set for a section, and put back to what it was when dropped
/// (the per-program statistics cost a clock read per run while on).
pub struct Sysctl {
    path: &'static str,
    previous: String,
}

impl Sysctl {
    pub fn set(path: &'static str, value: &str) -> anyhow::Result<Self> {
        let previous = std::fs::read_to_string(path)
            .with_context(|| format!("reading {path}"))?
            .trim()
            .to_string();
        std::fs::write(path, value).with_context(|| format!("writing {path}"))?;
        Ok(Self { path, previous })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, &self.previous);
    }
}

/// The backends that can run here, by `herdtrace check --json`.
pub fn usable_backends(bin: &std::path::Path) -> anyhow::Result<Vec<String>> {
    Ok(tracer::backends(bin)?
        .into_iter()
        .filter(|(_, a)| *a == Availability::Ok)
        .map(|(b, _)| b)
        .collect())
}

/// Attaches `spec` to the server, loads it with statistics on, and returns
/// the tracer's output and what its programs ran.
fn traced_load(
    ctx: &Ctx,
    server: &Server,
    spec: &TracerSpec,
) -> anyhow::Result<(String, Vec<ProgStat>, u64)> {
    let n = u64::from(ctx.connections);
    let existing: HashSet<u64> = snapshot()?.iter().map(|p| p.id).collect();
    let t = Tracer::start(&ctx.bin, server.pid(), spec)?;
    let ours: HashSet<u64> = snapshot()?
        .iter()
        .map(|p| p.id)
        .filter(|id| !existing.contains(id))
        .collect();
    let (before, after, load) = {
        let _stats = Sysctl::set(STATS_SYSCTL, "1")?;
        let before = snapshot()?;
        let load = loadgen::load(&ctx.bin, server.port, n, None, CONCURRENCY)?;
        (before, snapshot()?, load)
    };
    let f = t.stop()?;
    if ours.is_empty() {
        bail!("no eBPF program appeared when herdtrace attached");
    }
    let completed = load.attempted.saturating_sub(load.errors);
    Ok((f.stdout, delta(&before, &after, &ours), completed))
}

fn measure(ctx: &Ctx, model: &str, workers: u16, backend: &str) -> anyhow::Result<ModelCost> {
    let mut server = Server::start(&ctx.bin, model, workers)?;
    let n = u64::from(ctx.connections);
    let untraced = loadgen::load(&ctx.bin, server.port, n, None, CONCURRENCY)?;
    let (stdout, progs, _) = traced_load(ctx, &server, &TracerSpec::new(backend))?;
    let s = tracer::parse_text_summary(&stdout).map_err(anyhow::Error::msg)?;
    let floor = if backend == super::overhead::PROBE_POINTS_BACKEND {
        let spec = TracerSpec {
            empty_programs: true,
            ..TracerSpec::new(backend)
        };
        let (_, empty, completed) = traced_load(ctx, &server, &spec)?;
        Some(Floor {
            run_cnt: empty.iter().map(|p| p.run_cnt).sum(),
            run_time_ns: empty.iter().map(|p| p.run_time_ns).sum(),
            connections: completed,
        })
    } else {
        None
    };
    let st = server.stop()?;
    if !st.success() {
        bail!("the server exited with {st}");
    }
    println!(
        "   {model} ({backend}): {:.0} ns of eBPF per connection over {} connections",
        progs.iter().map(|p| p.run_time_ns).sum::<u64>() as f64 / s.connections.max(1) as f64,
        s.connections
    );
    Ok(ModelCost {
        model: model.to_string(),
        backend: backend.to_string(),
        connections: s.connections,
        untraced_rate: untraced.rate_per_s,
        progs,
        floor,
    })
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<SectionReport>> {
    let backends = usable_backends(&ctx.bin)?;
    let mut costs = Vec::new();
    for (model, workers) in super::overhead::MODELS {
        for b in &backends {
            costs.push(measure(ctx, model, workers, b).with_context(|| format!("{model} ({b})"))?);
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(vec![summarize(&costs, cpus, ctx.connections)])
}

pub fn summarize(costs: &[ModelCost], cpus: usize, connections: u32) -> SectionReport {
    let mut r = SectionReport::new(TITLE);
    r.setup = vec![
        format!("server: `herdtrace serve --model M --workers 4`; load: `herdtrace load --connections {connections} --concurrency {CONCURRENCY}` at its maximum rate, once untraced, once traced"),
        "per-program run counts and run time from the kernel (`kernel.bpf_stats_enabled=1` during the traced run only, `bpftool prog show --json`); the tracepoints' own dispatch is not in these figures".into(),
        "budget = the untraced machine's CPU time per connection (CPUs / untraced conn/s); share = eBPF time / budget, the throughput a CPU-bound traced run gives up at least".into(),
    ];
    let mut t = Table {
        header: [
            "model (backend)",
            "program",
            "runs/conn",
            "ns/run",
            "ns/conn",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
    };
    for c in costs {
        let label = format!("{} ({})", c.model, c.backend);
        let n = c.connections.max(1) as f64;
        for p in &c.progs {
            t.rows.push(vec![
                label.clone(),
                p.name.clone(),
                format!("{:.2}", p.run_cnt as f64 / n),
                format!("{:.0}", p.run_time_ns as f64 / p.run_cnt.max(1) as f64),
                format!("{:.0}", p.run_time_ns as f64 / n),
            ]);
        }
        let share = c.ns_per_conn() / c.budget_ns(cpus);
        r.lines.push(format!(
            "{label}: {:.0} ns of eBPF per connection; budget {:.0} ns ({cpus} CPUs / {:.0} conn/s untraced): share {:.1}%, so a CPU-bound traced run keeps at most {:.3} of the untraced rate",
            c.ns_per_conn(),
            c.budget_ns(cpus),
            c.untraced_rate,
            share * 100.0,
            1.0 - share
        ));
        if let Some(f) = c.floor {
            let floor_ns = c.runs_per_conn() * f.ns_per_run();
            let work = (c.ns_per_conn() - floor_ns).max(0.0);
            r.lines.push(format!(
                "{label}: programs that do nothing on the same probe points ran {:.2} times per connection at {:.0} ns a run (the statistics' clock reads and the call); at herdtrace's {:.2} runs per connection that floor is {floor_ns:.0} ns, herdtrace's own work {work:.0} ns ({:.1}% of the budget)",
                f.run_cnt as f64 / f.connections.max(1) as f64,
                f.ns_per_run(),
                c.runs_per_conn(),
                100.0 * work / c.budget_ns(cpus)
            ));
        }
    }
    r.table = Some(t);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"[{"id":7,"type":"cgroup_skb","name":"sd_fw_ingress","run_time_ns":50,"run_cnt":5},
        {"id":12,"type":"tracing","name":"btf_sched_wakin","run_time_ns":1000,"run_cnt":10},
        {"id":13,"type":"tracepoint","name":"tp_accept_exit"}]"#;
    const AFTER: &str = r#"[{"id":7,"type":"cgroup_skb","name":"sd_fw_ingress","run_time_ns":90,"run_cnt":9},
        {"id":12,"type":"tracing","name":"btf_sched_wakin","run_time_ns":5000,"run_cnt":30},
        {"id":13,"type":"tracepoint","name":"tp_accept_exit","run_time_ns":8000,"run_cnt":10},
        {"id":14,"type":"tracepoint","name":"tp_idle","run_time_ns":0,"run_cnt":0}]"#;

    #[test]
    fn tracing_programs_lists_only_tracing_types() {
        assert_eq!(
            tracing_programs(AFTER).unwrap(),
            [
                "btf_sched_wakin (tracing, id 12)",
                "tp_accept_exit (tracepoint, id 13)",
                "tp_idle (tracepoint, id 14)",
            ]
        );
        let others = r#"[{"id":7,"type":"cgroup_skb","name":"sd_fw_ingress"},
            {"id":8,"type":"kprobe","name":"opensnoop"},{"id":9,"name":"no_type"}]"#;
        assert_eq!(
            tracing_programs(others).unwrap(),
            ["opensnoop (kprobe, id 8)"]
        );
        assert!(tracing_programs("[]").unwrap().is_empty());
        assert!(tracing_programs("{").is_err());
        assert!(tracing_programs("{}").is_err());
    }

    fn stat(id: u64, name: &str, run_cnt: u64, run_time_ns: u64) -> ProgStat {
        ProgStat {
            id,
            name: name.into(),
            run_cnt,
            run_time_ns,
        }
    }

    #[test]
    fn parses_bpftool_json_with_and_without_counters() {
        let b = parse_progs(BEFORE).expect("parses");
        assert_eq!(b[1], stat(12, "btf_sched_wakin", 10, 1000));
        assert_eq!(b[2], stat(13, "tp_accept_exit", 0, 0));
        assert!(parse_progs("{}").is_err());
        assert!(parse_progs("[{\"name\":\"x\"}]").is_err());
        assert!(parse_progs("not json").is_err());
    }

    #[test]
    fn delta_keeps_only_ours_that_ran_busiest_first() {
        let b = parse_progs(BEFORE).expect("before");
        let a = parse_progs(AFTER).expect("after");
        let ours: HashSet<u64> = [12, 13, 14].into();
        assert_eq!(
            delta(&b, &a, &ours),
            vec![
                stat(13, "tp_accept_exit", 10, 8000),
                stat(12, "btf_sched_wakin", 20, 4000)
            ]
        );
        // Counters that went backwards (statistics reset) count from zero.
        let reset = [stat(12, "btf_sched_wakin", 100, 100_000)];
        assert_eq!(
            delta(&reset, &a, &[12].into()),
            vec![stat(12, "btf_sched_wakin", 30, 5000)]
        );
    }

    #[test]
    fn summary_per_connection_and_share_of_the_budget() {
        let c = ModelCost {
            model: "reuseport".into(),
            backend: "tracepoint".into(),
            connections: 1000,
            untraced_rate: 20_000.0,
            progs: vec![
                stat(13, "tp_accept_exit", 1000, 1_000_000),
                stat(12, "btf_sched_wakin", 4000, 400_000),
            ],
            floor: None,
        };
        assert_eq!(c.ns_per_conn(), 1400.0);
        assert_eq!(c.runs_per_conn(), 5.0);
        assert_eq!(c.budget_ns(2), 100_000.0);
        let r = summarize(&[c], 2, 1000);
        let t = r.table.expect("table");
        assert_eq!(
            t.rows[0],
            [
                "reuseport (tracepoint)",
                "tp_accept_exit",
                "1.00",
                "1000",
                "1000"
            ]
            .map(String::from)
        );
        assert_eq!(
            t.rows[1],
            [
                "reuseport (tracepoint)",
                "btf_sched_wakin",
                "4.00",
                "100",
                "400"
            ]
            .map(String::from)
        );
        assert_eq!(
            r.lines,
            ["reuseport (tracepoint): 1400 ns of eBPF per connection; budget 100000 ns (2 CPUs / 20000 conn/s untraced): share 1.4%, so a CPU-bound traced run keeps at most 0.986 of the untraced rate"]
        );
    }

    #[test]
    fn floor_of_empty_programs_is_taken_out_of_the_work() {
        let c = ModelCost {
            model: "reuseport".into(),
            backend: "tracepoint".into(),
            connections: 1000,
            untraced_rate: 20_000.0,
            progs: vec![stat(13, "tp_accept_exit", 5000, 1_400_000)],
            // 4.8 runs per connection of 2000 completed, 60 ns each.
            floor: Some(Floor {
                run_cnt: 9600,
                run_time_ns: 576_000,
                connections: 2000,
            }),
        };
        let r = summarize(&[c], 2, 1000);
        assert_eq!(
            r.lines[1],
            "reuseport (tracepoint): programs that do nothing on the same probe points ran 4.80 times per connection at 60 ns a run (the statistics' clock reads and the call); at herdtrace's 5.00 runs per connection that floor is 300 ns, herdtrace's own work 1100 ns (1.1% of the budget)"
        );
    }
}
