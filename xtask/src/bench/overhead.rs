//! Sections "Overhead" and "CPU": the built-in server at the load generator's
//! maximum rate, untraced, traced by herdtrace (each backend this kernel
//! offers) and by bpftrace's equivalent aggregate script, in rotating order
//! within each round. The tracing tools' own CPU time comes from the same runs.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::bpftrace::Bpftrace;
use super::loadgen;
use super::parse::{self, LoadRun};
use super::report::{SectionReport, Table};
use super::server::Server;
use super::tracer::{self, Availability, Tracer, TracerSpec};
use super::Ctx;
use crate::proc;

pub const TITLE: &str = "Overhead: connections/s untraced vs traced";
pub const CPU_TITLE: &str = "CPU: the tracing tool's own CPU time per 1,000 connections";
/// The two configurations of the built-in server.
pub const MODELS: [(&str, u16); 2] = [("epoll-per-worker", 4), ("reuseport", 4)];
pub const CONCURRENCY: u32 = 32;
/// herdtrace keeps at least this share of the untraced throughput.
pub const GOAL: f64 = 0.97;
/// Time for the tracer to drain what the last connections produced.
pub const SETTLE: Duration = Duration::from_millis(300);

/// What runs beside the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    Untraced,
    Herdtrace(String),
    /// herdtrace's tracepoints with programs that do nothing: the part of the
    /// overhead that any tracer of these events pays before doing any work.
    ProbePoints,
    Bpftrace,
}

impl Tool {
    pub fn label(&self) -> String {
        match self {
            Tool::Untraced => "untraced".into(),
            Tool::Herdtrace(b) => format!("herdtrace ({b})"),
            Tool::ProbePoints => "probe points only".into(),
            Tool::Bpftrace => "bpftrace 0.17 script".into(),
        }
    }
}

/// One load run under one tool.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Measurement {
    pub rate: f64,
    pub completed: u64,
    pub errors: u64,
    /// The tool's CPU seconds while the load ran (none untraced).
    pub tool_cpu_s: Option<f64>,
    /// Connections the tool saw: herdtrace's episodes, bpftrace's accepts.
    pub seen: Option<u64>,
    /// herdtrace's lost events.
    pub lost: Option<u64>,
}

pub fn from_load(l: &LoadRun) -> Measurement {
    Measurement {
        rate: l.rate_per_s,
        completed: l.attempted.saturating_sub(l.errors),
        errors: l.errors + l.non_2xx,
        ..Measurement::default()
    }
}

/// Runs the load with `tool` attached to `server`.
pub fn measure(
    bin: &Path,
    server: &Server,
    tool: &Tool,
    bpftrace: Option<&PathBuf>,
    n: u64,
    rate: Option<f64>,
) -> anyhow::Result<Measurement> {
    let load = || loadgen::load(bin, server.port, n, rate, CONCURRENCY);
    match tool {
        Tool::Untraced => Ok(from_load(&load()?)),
        Tool::Herdtrace(backend) => {
            let t = Tracer::start(bin, server.pid(), &TracerSpec::new(backend))?;
            let l = load()?;
            std::thread::sleep(SETTLE);
            let cpu = t.cpu_since_ready();
            let f = t.stop()?;
            let s = tracer::parse_text_summary(&f.stdout).map_err(anyhow::Error::msg)?;
            Ok(Measurement {
                tool_cpu_s: Some(cpu),
                seen: Some(s.connections),
                lost: Some(s.lost_events),
                ..from_load(&l)
            })
        }
        Tool::ProbePoints => {
            let spec = TracerSpec {
                empty_programs: true,
                ..TracerSpec::new(PROBE_POINTS_BACKEND)
            };
            let t = Tracer::start(bin, server.pid(), &spec)?;
            let l = load()?;
            std::thread::sleep(SETTLE);
            let cpu = t.cpu_since_ready();
            let f = t.stop()?;
            let s = tracer::parse_text_summary(&f.stdout).map_err(anyhow::Error::msg)?;
            // The empty programs emit nothing: a connection here means they did work.
            if s.connections != 0 {
                bail!("empty programs reported {} connections", s.connections);
            }
            Ok(Measurement {
                tool_cpu_s: Some(cpu),
                ..from_load(&l)
            })
        }
        Tool::Bpftrace => {
            let path = bpftrace.context("bpftrace not found on PATH")?;
            let b = Bpftrace::start(path, server.pid(), server.port)?;
            let l = load()?;
            std::thread::sleep(SETTLE);
            let cpu = b.cpu_since_ready();
            let (maps, _) = b.stop()?;
            Ok(Measurement {
                tool_cpu_s: Some(cpu),
                seen: maps.get("accepts").copied(),
                ..from_load(&l)
            })
        }
    }
}

/// The backend whose probe points are measured alone (the one every kernel has).
pub const PROBE_POINTS_BACKEND: &str = "tracepoint";

/// The tools of this run: untraced, each available backend, the tracepoint
/// backend's probe points alone, bpftrace if installed.
pub fn tools(backends: &[(String, Availability)], have_bpftrace: bool) -> (Vec<Tool>, Vec<String>) {
    let mut tools = vec![Tool::Untraced];
    let mut notes = Vec::new();
    for (name, a) in backends {
        match a {
            Availability::Ok => tools.push(Tool::Herdtrace(name.clone())),
            Availability::Unavailable(why) => notes.push(format!(
                "herdtrace ({name}): not available on this kernel: {why}"
            )),
        }
    }
    if tools.contains(&Tool::Herdtrace(PROBE_POINTS_BACKEND.into())) {
        tools.push(Tool::ProbePoints);
    }
    if have_bpftrace {
        tools.push(Tool::Bpftrace);
    } else {
        notes.push("bpftrace: not installed (Debian package bpftrace)".into());
    }
    (tools, notes)
}

/// Every measurement of one model, per tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRuns {
    pub model: String,
    pub workers: u16,
    pub runs: Vec<(Tool, Vec<Measurement>)>,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Vec<SectionReport>> {
    let backends = tracer::backends(&ctx.bin)?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let bpftrace = proc::which_in("bpftrace", &path);
    let (tools, notes) = tools(&backends, bpftrace.is_some());
    let n = u64::from(ctx.connections);
    let mut all = Vec::new();
    for (model, workers) in MODELS {
        let server = Server::start(&ctx.bin, model, workers)?;
        // Warm-up: first connections pay for page faults and cold caches.
        loadgen::load(&ctx.bin, server.port, n / 4 + 1, None, CONCURRENCY)?;
        let mut runs: Vec<(Tool, Vec<Measurement>)> =
            tools.iter().map(|t| (t.clone(), Vec::new())).collect();
        for round in 0..ctx.rounds as usize {
            println!("-- {model}: round {}/{}", round + 1, ctx.rounds);
            // Rotating the order keeps drift from favouring one tool.
            for k in 0..runs.len() {
                let i = (k + round) % runs.len();
                let m = measure(&ctx.bin, &server, &runs[i].0, bpftrace.as_ref(), n, None)
                    .with_context(|| format!("{model}, {}", runs[i].0.label()))?;
                println!(
                    "   {:<28} {:>8.0} conn/s  errors {}  tool CPU {}",
                    runs[i].0.label(),
                    m.rate,
                    m.errors,
                    m.tool_cpu_s.map_or("-".into(), |c| format!("{c:.2} s"))
                );
                runs[i].1.push(m);
            }
        }
        let mut server = server;
        let st = server.stop()?;
        if !st.success() {
            bail!("the {model} server exited with {st}");
        }
        all.push(ModelRuns {
            model: model.to_string(),
            workers,
            runs,
        });
    }
    Ok(summarize(&all, &notes, ctx.connections, ctx.rounds))
}

/// Each tool's median rate and its ratio to the untraced median, in `runs` order.
pub fn rates_and_ratios(runs: &[(Tool, Vec<Measurement>)]) -> Vec<(Option<f64>, Option<f64>)> {
    let rate = |ms: &[Measurement]| median_of(ms, |x| Some(x.rate));
    let base = runs
        .iter()
        .find(|(t, _)| *t == Tool::Untraced)
        .and_then(|(_, ms)| rate(ms));
    runs.iter()
        .map(|(_, ms)| {
            let r = rate(ms);
            let ratio = match (r, base) {
                (Some(r), Some(b)) if b > 0.0 => Some(r / b),
                _ => None,
            };
            (r, ratio)
        })
        .collect()
}

/// A run with failed connections fails the section: `who` names it.
pub fn check_errors(report: &mut SectionReport, who: &str, ms: &[Measurement]) {
    let errors: u64 = ms.iter().map(|x| x.errors).sum();
    if errors > 0 {
        report.failed = true;
        report
            .warnings
            .push(format!("{who}: {errors} failed connections"));
    }
}

fn median_of(ms: &[Measurement], f: impl Fn(&Measurement) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = ms.iter().filter_map(f).collect();
    parse::median(&v)
}

/// ms of tool CPU per 1,000 connections.
pub fn cpu_per_1000(cpu_s: f64, connections: u64) -> Option<f64> {
    (connections > 0).then(|| cpu_s * 1e6 / connections as f64)
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.3}"))
}

/// Both section reports from the measurements (pure, so it is tested).
pub fn summarize(
    all: &[ModelRuns],
    notes: &[String],
    connections: u32,
    rounds: u32,
) -> Vec<SectionReport> {
    let mut over = SectionReport::new(TITLE);
    over.setup = vec![
        format!(
            "server: `herdtrace serve --model M --workers 4` for M in {}",
            MODELS.map(|m| m.0).join(", ")
        ),
        format!(
            "load: `herdtrace load --connections {connections} --concurrency {CONCURRENCY}` \
             at its maximum rate; {rounds} round(s), tools in rotating order; medians"
        ),
        format!(
            "herdtrace: `herdtrace --pid SERVER --backend B` (defaults: text output, \
             --ringbuf-size {})",
            tracer::DEFAULT_RINGBUF
        ),
        "bpftrace: per-task counts in kernel maps of sched_waking, accept/accept4 exits \
         (successes and EAGAIN), epoll_wait/epoll_pwait exits (empty or not), \
         sock:sk_data_ready and inet_sock_set_state to ESTABLISHED on the port"
            .into(),
    ];
    over.setup.extend(notes.iter().cloned());
    let mut cpu = SectionReport::new(CPU_TITLE);
    cpu.setup = vec![
        "CPU time of the tool's threads (/proc/PID/task/*/schedstat, in ns) from when it was \
         attached to the end of the load, at the maximum rate of the overhead runs; time the \
         eBPF programs spend in the kernel is charged to the traced tasks and shows in the \
         overhead ratios instead"
            .into(),
    ];
    let mut rows = Vec::new();
    let mut cpu_rows = Vec::new();
    for m in all {
        let rates = rates_and_ratios(&m.runs);
        let mut herd_ratios: Vec<(String, Option<f64>)> = Vec::new();
        let mut bpf_ratio: Option<f64> = None;
        let mut floor_ratio: Option<f64> = None;
        for ((tool, ms), &(rate, ratio)) in m.runs.iter().zip(&rates) {
            match tool {
                Tool::Herdtrace(b) => herd_ratios.push((b.clone(), ratio)),
                Tool::Bpftrace => bpf_ratio = ratio,
                Tool::ProbePoints => floor_ratio = ratio,
                Tool::Untraced => {}
            }
            let completed: u64 = ms.iter().map(|x| x.completed).sum();
            let seen: Option<u64> = ms.iter().map(|x| x.seen).sum();
            let lost: Option<u64> = ms.iter().map(|x| x.lost).sum();
            check_errors(&mut over, &format!("{} {}", m.model, tool.label()), ms);
            rows.push(vec![
                m.model.clone(),
                tool.label(),
                rate.map_or("-".into(), |r| format!("{r:.0}")),
                ratio_text(ratio),
                seen.map_or("-".into(), |s| format!("{s}/{completed}")),
                lost.map_or("-".into(), |l| l.to_string()),
            ]);
            if *tool != Tool::Untraced {
                let per: Vec<f64> = ms
                    .iter()
                    .filter_map(|x| cpu_per_1000(x.tool_cpu_s?, x.completed))
                    .collect();
                let share: Vec<f64> = ms
                    .iter()
                    .filter_map(|x| {
                        let secs = x.completed as f64 / x.rate.max(1e-9);
                        Some(100.0 * x.tool_cpu_s? / secs)
                    })
                    .collect();
                cpu_rows.push(vec![
                    m.model.clone(),
                    tool.label(),
                    rate.map_or("-".into(), |r| format!("{r:.0}")),
                    parse::median(&per).map_or("-".into(), |v| format!("{v:.1}")),
                    parse::median(&share).map_or("-".into(), |v| format!("{v:.1}%")),
                ]);
            }
        }
        over.lines.extend(noise_line(&m.model, &m.runs));
        if let Some(f) = floor_ratio {
            over.lines.push(format!(
                "{}: the {PROBE_POINTS_BACKEND} probe points alone (programs that do nothing) \
                 keep {f:.3} of the untraced throughput",
                m.model
            ));
        }
        for (backend, ratio) in herd_ratios {
            let who = format!("{} ({backend})", m.model);
            over.lines.push(verdict(&who, ratio, bpf_ratio));
            if let Some(r) = ratio.filter(|&r| r < GOAL) {
                over.warnings.push(format!(
                    "{who}: herdtrace kept {r:.3} of the untraced throughput (goal >= {GOAL})"
                ));
            }
        }
    }
    over.table = Some(Table {
        header: [
            "model",
            "tool",
            "conn/s",
            "ratio",
            "seen/completed",
            "lost events",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    over.lines.push(
        "ratio = traced/untraced of the median rates; seen = connections the tool counted \
         (herdtrace: episodes, bpftrace: accepts) over connections the load completed"
            .into(),
    );
    cpu.table = Some(Table {
        header: [
            "model",
            "tool",
            "conn/s",
            "CPU ms per 1000 conns",
            "CPU share",
        ]
        .map(String::from)
        .to_vec(),
        rows: cpu_rows,
    });
    cpu.lines.push(
        "CPU share = the tool's CPU seconds over the load's wall seconds (100% = one core)".into(),
    );
    vec![over, cpu]
}

/// How much a traced/untraced ratio moves by chance, from the spread of
/// the untraced rounds' rates: (coefficient of variation, two standard
/// errors of a ratio of two medians of that many rounds). A median's
/// standard error is about 1.25 sigma / sqrt(n), and a ratio of two
/// independent ones sqrt(2) times that, relatively. None under 3 rounds.
pub fn ratio_noise(rates: &[f64]) -> Option<(f64, f64)> {
    let n = rates.len();
    if n < 3 {
        return None;
    }
    let mean = rates.iter().sum::<f64>() / n as f64;
    if mean <= 0.0 {
        return None;
    }
    let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let cv = var.sqrt() / mean;
    let two_se = 2.0 * 1.2533 * cv * std::f64::consts::SQRT_2 / (n as f64).sqrt();
    Some((cv, two_se))
}

/// The noise line of a model, from its untraced rounds in `runs`.
pub fn noise_line(model: &str, runs: &[(Tool, Vec<Measurement>)]) -> Option<String> {
    let (_, untraced) = runs.iter().find(|(t, _)| *t == Tool::Untraced)?;
    let rates: Vec<f64> = untraced.iter().map(|m| m.rate).collect();
    let Some((cv, two_se)) = ratio_noise(&rates) else {
        return (!rates.is_empty()).then(|| {
            format!(
                "{model}: noise: not measured ({} round(s); --rounds 3 or more measure it), \
                 so these ratios say nothing about a goal",
                rates.len()
            )
        });
    };
    let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rates.iter().copied().fold(0.0, f64::max);
    Some(format!(
        "{model}: noise: the untraced rounds ran at {lo:.0}-{hi:.0} conn/s (coefficient of \
         variation {:.1}%), so a ratio of medians of {} rounds is good to about +/-{two_se:.3} \
         (two standard errors); a ratio that close to a goal decides nothing",
        cv * 100.0,
        rates.len()
    ))
}

/// The tracked line for one model.
pub fn verdict(model: &str, herd: Option<f64>, bpf: Option<f64>) -> String {
    let Some(h) = herd else {
        return format!("{model}: no herdtrace ratio measured");
    };
    let goal = if h >= GOAL {
        "goal met"
    } else {
        "goal NOT met"
    };
    let vs = match bpf {
        Some(b) if h > b => format!("; bpftrace {b:.3}: herdtrace costs less"),
        Some(b) if h < b => format!("; bpftrace {b:.3}: herdtrace costs MORE"),
        Some(b) => format!("; bpftrace {b:.3}: the same"),
        None => "; no bpftrace ratio".into(),
    };
    format!("{model}: herdtrace/untraced {h:.3} (goal >= {GOAL}): {goal}{vs}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rate: f64, completed: u64, cpu: Option<f64>, seen: Option<u64>) -> Measurement {
        Measurement {
            rate,
            completed,
            errors: 0,
            tool_cpu_s: cpu,
            seen,
            lost: seen.map(|_| 0),
        }
    }

    fn runs() -> ModelRuns {
        ModelRuns {
            model: "reuseport".into(),
            workers: 4,
            runs: vec![
                (
                    Tool::Untraced,
                    vec![m(10000.0, 20000, None, None), m(12000.0, 20000, None, None)],
                ),
                (
                    Tool::Herdtrace("tracepoint".into()),
                    vec![
                        m(9800.0, 20000, Some(0.2), Some(20000)),
                        m(10800.0, 20000, Some(0.4), Some(20000)),
                    ],
                ),
                (
                    Tool::Bpftrace,
                    vec![
                        m(9000.0, 20000, Some(0.1), Some(19990)),
                        m(9400.0, 20000, Some(0.1), Some(20000)),
                    ],
                ),
            ],
        }
    }

    #[test]
    fn ratios_cpu_and_verdicts() {
        let out = summarize(&[runs()], &["kprobe: not available".into()], 20000, 2);
        let (over, cpu) = (&out[0], &out[1]);
        let t = over.table.as_ref().expect("table");
        assert_eq!(
            t.rows[0],
            ["reuseport", "untraced", "11000", "1.000", "-", "-"]
        );
        assert_eq!(
            t.rows[1],
            [
                "reuseport",
                "herdtrace (tracepoint)",
                "10300",
                "0.936",
                "40000/40000",
                "0"
            ]
        );
        assert_eq!(t.rows[2][3], "0.836");
        assert_eq!(t.rows[2][4], "39990/40000");
        assert!(over.setup.iter().any(|l| l == "kprobe: not available"));
        assert!(over.lines.iter().any(|l| l
            == "reuseport (tracepoint): herdtrace/untraced 0.936 (goal >= 0.97): goal NOT met; bpftrace 0.836: herdtrace costs less"));
        assert_eq!(over.warnings.len(), 1);
        assert!(!over.failed, "a ratio below goal is tracked, not a failure");
        let c = cpu.table.as_ref().expect("cpu table");
        assert_eq!(c.rows.len(), 2, "untraced has no CPU row");
        // 0.2 s and 0.4 s per 20000 connections: 10 and 20 ms per 1000, median 15.
        assert_eq!(c.rows[0][3], "15.0");
        // 0.2 s over 20000/9800 s = 9.8%, 0.4 s over 20000/10800 s = 21.6%: median 15.7%.
        assert_eq!(c.rows[0][4], "15.7%");
        assert_eq!(c.rows[1][3], "5.0");
    }

    #[test]
    fn errors_fail_the_section() {
        let mut r = runs();
        r.runs[1].1[0].errors = 3;
        let out = summarize(&[r], &[], 20000, 2);
        assert!(out[0].failed);
        assert!(out[0]
            .warnings
            .iter()
            .any(|w| w.contains("3 failed connections")));
    }

    #[test]
    fn verdict_texts() {
        assert_eq!(
            verdict("m", Some(0.99), Some(0.9)),
            "m: herdtrace/untraced 0.990 (goal >= 0.97): goal met; bpftrace 0.900: herdtrace costs less"
        );
        assert!(verdict("m", Some(0.9), Some(0.95)).ends_with("herdtrace costs MORE"));
        assert!(verdict("m", Some(0.98), None).ends_with("goal met; no bpftrace ratio"));
        assert_eq!(
            verdict("m", None, Some(0.9)),
            "m: no herdtrace ratio measured"
        );
    }

    #[test]
    fn tools_follow_backends_and_bpftrace() {
        let b = vec![
            (
                "fentry".to_string(),
                Availability::Unavailable("EPERM".into()),
            ),
            ("tracepoint".to_string(), Availability::Ok),
        ];
        let (t, notes) = tools(&b, true);
        assert_eq!(
            t,
            [
                Tool::Untraced,
                Tool::Herdtrace("tracepoint".into()),
                Tool::ProbePoints,
                Tool::Bpftrace
            ]
        );
        assert_eq!(
            notes,
            ["herdtrace (fentry): not available on this kernel: EPERM"]
        );
        let (t, notes) = tools(&b, false);
        assert_eq!(t.len(), 3);
        assert!(notes[1].starts_with("bpftrace: not installed"));
        // Without the tracepoint backend there are no probe points to measure alone.
        let (t, _) = tools(&b[..1], true);
        assert_eq!(t, [Tool::Untraced, Tool::Bpftrace]);
    }

    #[test]
    fn probe_points_row_and_line() {
        let mut r = runs();
        r.runs.push((
            Tool::ProbePoints,
            vec![
                m(10500.0, 20000, Some(0.01), None),
                m(10900.0, 20000, Some(0.01), None),
            ],
        ));
        let out = summarize(&[r], &[], 20000, 2);
        let t = out[0].table.as_ref().expect("table");
        assert_eq!(
            t.rows[3],
            ["reuseport", "probe points only", "10700", "0.973", "-", "-"]
        );
        assert!(out[0].lines.iter().any(|l| l
            == "reuseport: the tracepoint probe points alone (programs that do nothing) keep 0.973 of the untraced throughput"));
        // Only herdtrace's own ratio is judged against the goal.
        assert_eq!(out[0].warnings.len(), 1);
    }

    #[test]
    fn ratio_noise_from_the_untraced_spread() {
        assert_eq!(ratio_noise(&[1.0, 2.0]), None);
        assert_eq!(ratio_noise(&[0.0, 0.0, 0.0]), None);
        let (cv, two_se) = ratio_noise(&[100.0; 9]).expect("noise");
        assert_eq!((cv, two_se), (0.0, 0.0));
        // Sample sd of 90, 100, 110 is 10: cv 0.1; 2 x 1.2533 x 0.1 x 1.414 / sqrt(3).
        let (cv, two_se) = ratio_noise(&[90.0, 100.0, 110.0]).expect("noise");
        assert!((cv - 0.1).abs() < 1e-12, "{cv}");
        assert!((two_se - 0.20468).abs() < 1e-4, "{two_se}");
        // Four times the rounds: half the error, less with the sample sd.
        let twelve: Vec<f64> = [90.0, 100.0, 110.0].repeat(4);
        let (_, se12) = ratio_noise(&twelve).expect("noise");
        assert!(se12 < two_se / 2.0 && se12 > two_se / 2.5, "{se12}");
    }

    #[test]
    fn the_noise_line_names_the_spread_and_the_error() {
        let ms: Vec<Measurement> = [90.0, 100.0, 110.0].map(|r| m(r, 10, None, None)).to_vec();
        let untraced = |ms: &[Measurement]| vec![(Tool::Untraced, ms.to_vec())];
        assert_eq!(
            noise_line("reuseport", &untraced(&ms)).expect("line"),
            "reuseport: noise: the untraced rounds ran at 90-110 conn/s (coefficient of \
             variation 10.0%), so a ratio of medians of 3 rounds is good to about +/-0.205 \
             (two standard errors); a ratio that close to a goal decides nothing"
        );
        assert_eq!(
            noise_line("x", &untraced(&ms[..2])).expect("line"),
            "x: noise: not measured (2 round(s); --rounds 3 or more measure it), so these \
             ratios say nothing about a goal"
        );
        assert_eq!(noise_line("x", &untraced(&[])), None);
        // No untraced runs: nothing to measure the noise by.
        assert_eq!(noise_line("x", &[(Tool::Bpftrace, ms.clone())]), None);
    }

    #[test]
    fn cpu_per_1000_handles_zero() {
        assert_eq!(cpu_per_1000(0.5, 10000), Some(50.0));
        assert_eq!(cpu_per_1000(0.5, 0), None);
    }
}
