//! `cargo xtask soak`: one tracer for a long run over a traced process set that
//! grows and shrinks. A holder shell is traced by pid; servers of mixed models
//! are forked under it and stopped over time, each phase loads the live ones
//! at mixed rates. At the end: memory flat, no drops, and the tracer's totals
//! equal to the servers' own counters (`--stats`).
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use super::loadgen;
use super::machine::Machine;
use super::memory::Shape;
use super::procfs::RssSampler;
use super::report::{Report, SectionReport, Table};
use super::tracer::{self, JsonSummary, Tracer, TracerSpec};
use crate::herdtrace_src::lines::{ListeningLine, StatsOutput};
use crate::{proc, setup};

pub const TITLE: &str = "Soak: a growing and shrinking traced process set";

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  cargo xtask soak                      10 minutes, a phase every 30 s
  cargo xtask soak --quick              20 s, a phase every 4 s (a smoke run)
  cargo xtask soak --secs 3600 --phase-secs 60

One tracer (`herdtrace --pid HOLDER --backend tracepoint --json`) follows a
holder shell; servers (epoll-per-worker, reuseport, exclusive, shared-epoll,
epoll-per-worker with threads) are started under it and stopped over time, so
the traced set grows and shrinks; each phase loads every live server at its
own rate (500, 1500 or 4000 connections/s). Checks: no lost events, the
tracer's RSS flat, its connections equal to the servers' accepts and to the
load's completed connections, its EAGAINs equal to the servers'. Report in
target/bench/soak.md; exit status 1 if a check fails.")]
pub struct SoakArgs {
    /// Short run: 20 s, a phase every 4 s (explicit flags still win).
    #[arg(long)]
    pub quick: bool,
    /// Length of the run in seconds [default: 600].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub secs: Option<u64>,
    /// Seconds per phase (a server starts or stops between phases) [default: 30].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub phase_secs: Option<u64>,
}

/// Servers started in turn: (model, workers, threads).
pub const MODELS: [(&str, u16, bool); 5] = [
    ("epoll-per-worker", 4, false),
    ("reuseport", 4, false),
    ("exclusive", 4, false),
    ("shared-epoll", 4, true),
    ("epoll-per-worker", 2, true),
];
/// Connections per second given to live servers in turn.
pub const RATES: [f64; 3] = [500.0, 1500.0, 4000.0];
const CONCURRENCY: u32 = 16;

/// What happens before a phase's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Start,
    StopOldest,
}

/// From the one server started before the tracer, the set oscillates
/// between two and three servers, one change per phase: it grows and shrinks
/// and is never empty.
pub fn step(live: usize, phase: usize) -> Step {
    match live {
        0 | 1 => Step::Start,
        2 if phase % 2 == 1 => Step::Start,
        _ => Step::StopOldest,
    }
}

/// The rate of the `i`th live server in `phase`.
pub fn rate(phase: usize, i: usize) -> f64 {
    RATES[(phase + i) % RATES.len()]
}

/// A shell the tracer follows; servers are started and stopped under it by
/// commands on its stdin, so they are its children, forked after the tracer
/// attached.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    dir: PathBuf,
    live: Vec<Live>,
    started: usize,
}

struct Live {
    pid: u32,
    port: u16,
    model: String,
    out: PathBuf,
}

/// The holder's loop: `start OUTFILE ARGS...` and `stop PID`, one reply line each.
const HOLDER_SCRIPT: &str = r#"
while read -r cmd arg rest; do
  case "$cmd" in
    start) "$HT_BIN" serve $rest --stats >"$arg" 2>&1 & echo "started $!" ;;
    stop) kill -TERM "$arg"; wait "$arg"; echo "stopped $arg $?" ;;
  esac
done
"#;

impl Holder {
    fn start(bin: &Path, dir: PathBuf) -> anyhow::Result<Self> {
        let mut child = Command::new("sh")
            .args(["-c", HOLDER_SCRIPT])
            .env("HT_BIN", bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the holder shell")?;
        let stdin = child.stdin.take().context("holder stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("holder stdout")?);
        Ok(Self {
            child,
            stdin,
            stdout,
            dir,
            live: Vec::new(),
            started: 0,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ask(&mut self, line: &str) -> anyhow::Result<String> {
        writeln!(self.stdin, "{line}").context("writing to the holder shell")?;
        self.stdin.flush().context("writing to the holder shell")?;
        let mut reply = String::new();
        self.stdout
            .read_line(&mut reply)
            .context("reading from the holder shell")?;
        if reply.is_empty() {
            bail!("the holder shell exited");
        }
        Ok(reply.trim().to_string())
    }

    /// Starts the next model; returns when it printed its listening line.
    fn start_next(&mut self) -> anyhow::Result<()> {
        let (model, workers, threads) = MODELS[self.started % MODELS.len()];
        let out = self.dir.join(format!("server-{}.out", self.started));
        self.started += 1;
        let mut args = format!("{} --model {model} --workers {workers}", out.display());
        if threads {
            args.push_str(" --threads");
        }
        let reply = self.ask(&format!("start {args}"))?;
        let pid: u32 = reply
            .strip_prefix("started ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("unexpected holder reply {reply:?}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if let Some(first) = text.lines().next() {
                let line = ListeningLine::parse(first)
                    .ok_or_else(|| anyhow!("server {model}: not a listening line: {first:?}"))?;
                break super::server::port_of(&line, model)?;
            }
            if Instant::now() >= deadline {
                bail!("server {model} (pid {pid}) printed no listening line in 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let label = if threads {
            format!("{model} x{workers} threads")
        } else {
            format!("{model} x{workers}")
        };
        println!("   + {label} pid {pid} port {port}");
        self.live.push(Live {
            pid,
            port,
            model: label,
            out,
        });
        Ok(())
    }

    /// Stops the oldest server; returns its (accepts, eagain).
    fn stop_oldest(&mut self) -> anyhow::Result<(String, u64, u64)> {
        let s = self.live.remove(0);
        let reply = self.ask(&format!("stop {}", s.pid))?;
        if reply != format!("stopped {} 0", s.pid) {
            bail!(
                "server {} (pid {}) did not stop cleanly: {reply}",
                s.model,
                s.pid
            );
        }
        let text =
            std::fs::read_to_string(&s.out).with_context(|| format!("{}", s.out.display()))?;
        let total = StatsOutput::of(text.lines().map(String::from))
            .total
            .ok_or_else(|| anyhow!("server {} printed no stats total line", s.model))?;
        let (a, e) = (total.accepts, total.eagain);
        println!("   - {} pid {}: accepts {a} eagain {e}", s.model, s.pid);
        Ok((s.model, a, e))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        for s in &self.live {
            // SAFETY: kill has no memory preconditions; these are the holder's
            // unreaped children, so the pids cannot have been recycled.
            unsafe { libc::kill(s.pid as i32, libc::SIGTERM) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The end-of-run figures the checks compare.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub secs: f64,
    pub phases: usize,
    pub servers: Vec<(String, u64, u64)>,
    pub load_completed: u64,
    pub load_errors: u64,
    pub traced: JsonSummary,
    pub shape: Option<Shape>,
    pub cpu_s: f64,
    /// Lines the tracer printed: a "conn" object per connection plus intervals.
    pub ndjson_lines: u64,
}

pub fn summarize(o: &Outcome) -> SectionReport {
    let mut r = SectionReport::new(TITLE);
    r.setup = vec![
        format!(
            "{:.0} s in {} phases; servers started in turn: {}",
            o.secs,
            o.phases,
            MODELS
                .iter()
                .map(|(m, w, t)| format!("{m} x{w}{}", if *t { " threads" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "each phase loads every live server at {} connections/s in turn (concurrency {CONCURRENCY})",
            RATES.map(|r| format!("{r:.0}")).join("/")
        ),
        "tracer: `herdtrace --pid HOLDER --backend tracepoint --json`, the servers forked under \
         the holder after it attached"
            .into(),
    ];
    r.table = Some(Table {
        header: ["server", "accepts", "eagain"].map(String::from).to_vec(),
        rows: o
            .servers
            .iter()
            .map(|(m, a, e)| vec![m.clone(), a.to_string(), e.to_string()])
            .collect(),
    });
    let accepts: u64 = o.servers.iter().map(|s| s.1).sum();
    let eagain: u64 = o.servers.iter().map(|s| s.2).sum();
    let t = &o.traced;
    let traced_eagain = t.eagain + t.eagain_unattributed;
    let mut check = |ok: bool, what: String| {
        r.lines
            .push(format!("{}: {what}", if ok { "ok" } else { "FAILED" }));
        if !ok {
            r.failed = true;
            r.warnings.push(what);
        }
    };
    check(
        t.connections == accepts && accepts == o.load_completed,
        format!(
            "connections: tracer {}, servers' accepts {accepts}, load completed {}",
            t.connections, o.load_completed
        ),
    );
    check(
        traced_eagain == eagain,
        format!(
            "EAGAIN: tracer {traced_eagain} ({} in episodes + {} unattributed), servers {eagain}",
            t.eagain, t.eagain_unattributed
        ),
    );
    check(
        t.lost_events == 0 && t.incomplete == 0,
        format!(
            "lost events {}, incomplete episodes {}",
            t.lost_events, t.incomplete
        ),
    );
    check(o.load_errors == 0, format!("load errors {}", o.load_errors));
    match &o.shape {
        Some(s) => check(
            s.flat(),
            format!(
                "RSS: first {:.1} MB, peak {:.1} MB, last-quarter peak {:.1} MB vs first-quarter {:.1} MB",
                s.first_kb as f64 / 1024.0,
                s.max_kb as f64 / 1024.0,
                s.last_quarter_max_kb as f64 / 1024.0,
                s.first_quarter_max_kb as f64 / 1024.0
            ),
        ),
        None => check(false, "no RSS sample".into()),
    }
    if accepts > 0 {
        r.lines.push(format!(
            "tracer CPU {:.1} s: {:.1} ms per 1000 connections; {} NDJSON lines printed",
            o.cpu_s,
            o.cpu_s * 1e6 / accepts as f64,
            o.ndjson_lines
        ));
    }
    r
}

pub fn run(args: SoakArgs) -> anyhow::Result<i32> {
    let start = Instant::now();
    setup::run(&setup::SetupArgs { no_vm: true })?;
    proc::run(&mut proc::cargo(["build", "--release", "-p", "herdtrace"]))?;
    let bin = super::release_bin();
    let secs = args.secs.unwrap_or(if args.quick { 20 } else { 600 });
    let phase_secs = args.phase_secs.unwrap_or(if args.quick { 4 } else { 30 });
    let phases = (secs / phase_secs).max(1) as usize;
    let dir = std::env::temp_dir().join(format!("herdtrace-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let outcome = soak(&bin, dir.clone(), phases, phase_secs);
    let _ = std::fs::remove_dir_all(&dir);
    let section = outcome.map_or_else(|e| SectionReport::failure(TITLE, &e), |o| summarize(&o));
    let report = Report {
        machine: Machine::current(),
        sections: vec![section],
        elapsed_s: start.elapsed().as_secs_f64(),
    };
    println!("\n{}", report.text());
    let path = super::write_report("soak.md", &report.markdown())?;
    println!("report written to {}", path.display());
    Ok(i32::from(report.failed()))
}

fn soak(bin: &Path, dir: PathBuf, phases: usize, phase_secs: u64) -> anyhow::Result<Outcome> {
    let mut holder = Holder::start(bin, dir)?;
    // One server exists before the tracer; the others are forked under it later.
    holder.start_next()?;
    let mut spec = TracerSpec::new("tracepoint");
    spec.json = true;
    let t = Tracer::start(bin, holder.pid(), &spec)?;
    let sampler = RssSampler::start(t.pid(), Duration::from_secs(1));
    let began = Instant::now();
    let mut servers = Vec::new();
    let (mut completed, mut errors) = (0u64, 0u64);
    for phase in 0..phases {
        match step(holder.live.len(), phase) {
            Step::Start => holder.start_next()?,
            Step::StopOldest => servers.push(holder.stop_oldest()?),
        }
        let loads: Vec<(u16, f64)> = holder
            .live
            .iter()
            .enumerate()
            .map(|(i, s)| (s.port, rate(phase, i)))
            .collect();
        println!(
            "-- phase {}/{phases}: {} servers, rates {:?}",
            phase + 1,
            loads.len(),
            loads.iter().map(|l| l.1).collect::<Vec<_>>()
        );
        let results: Vec<anyhow::Result<super::parse::LoadRun>> = std::thread::scope(|s| {
            let handles: Vec<_> = loads
                .iter()
                .map(|&(port, r)| {
                    s.spawn(move || {
                        loadgen::load(
                            bin,
                            port,
                            (r * phase_secs as f64) as u64,
                            Some(r),
                            CONCURRENCY,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a load thread panicked")))
                })
                .collect()
        });
        for l in results {
            let l = l?;
            completed += l.attempted.saturating_sub(l.errors);
            errors += l.errors + l.non_2xx;
        }
    }
    std::thread::sleep(super::overhead::SETTLE);
    while !holder.live.is_empty() {
        servers.push(holder.stop_oldest()?);
    }
    let cpu_s = t.cpu_since_ready();
    let (samples, _) = sampler.finish();
    let f = t.stop()?;
    let traced = tracer::parse_json_summary(&f.stdout).map_err(|e| anyhow!(e))?;
    Ok(Outcome {
        secs: began.elapsed().as_secs_f64(),
        phases,
        servers,
        load_completed: completed,
        load_errors: errors,
        traced,
        shape: Shape::of(&samples),
        cpu_s,
        ndjson_lines: f.stdout_lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_grows_and_shrinks_and_is_never_empty() {
        let mut live = 1usize;
        let (mut grew, mut shrank) = (0, 0);
        for phase in 0..20 {
            match step(live, phase) {
                Step::Start => {
                    live += 1;
                    grew += 1;
                }
                Step::StopOldest => {
                    live -= 1;
                    shrank += 1;
                }
            }
            assert!(
                (2..=3).contains(&live) || phase == 0,
                "phase {phase}: {live}"
            );
        }
        assert!(grew >= 5 && shrank >= 5, "grew {grew} shrank {shrank}");
        assert_eq!(step(0, 1), Step::Start);
        assert_eq!(step(3, 0), Step::StopOldest);
    }

    #[test]
    fn rates_rotate_over_servers_and_phases() {
        assert_eq!([rate(0, 0), rate(0, 1), rate(0, 2)], RATES);
        assert_eq!(rate(1, 0), RATES[1]);
        assert_eq!(rate(2, 2), RATES[1]);
    }

    fn outcome() -> Outcome {
        Outcome {
            secs: 600.0,
            phases: 20,
            servers: vec![
                ("reuseport x4".into(), 700, 0),
                ("exclusive x4".into(), 300, 12),
            ],
            load_completed: 1000,
            load_errors: 0,
            traced: JsonSummary {
                connections: 1000,
                eagain: 10,
                eagain_unattributed: 2,
                ..JsonSummary::default()
            },
            shape: Shape::of(&[(0.0, 9000), (1.0, 9100), (2.0, 9050), (3.0, 9100)]),
            cpu_s: 2.0,
            ndjson_lines: 1040,
        }
    }

    #[test]
    fn every_check_passes_on_equal_totals() {
        let r = summarize(&outcome());
        assert!(!r.failed, "{:?}", r.warnings);
        assert!(
            r.lines.iter().all(|l| !l.starts_with("FAILED")),
            "{:?}",
            r.lines
        );
        assert!(r.lines.contains(
            &"ok: connections: tracer 1000, servers' accepts 1000, load completed 1000".into()
        ));
        assert!(r.lines.contains(
            &"tracer CPU 2.0 s: 2000.0 ms per 1000 connections; 1040 NDJSON lines printed".into()
        ));
        assert_eq!(r.table.as_ref().expect("table").rows.len(), 2);
    }

    #[test]
    fn mismatches_fail() {
        let mut o = outcome();
        o.traced.connections = 999;
        o.traced.lost_events = 4;
        o.traced.eagain = 9;
        let r = summarize(&o);
        assert!(r.failed);
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
        let mut o = outcome();
        o.shape = Shape::of(&[(0.0, 9000), (1.0, 20000)]);
        o.load_errors = 1;
        let r = summarize(&o);
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    }
}
