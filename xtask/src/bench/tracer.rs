//! herdtrace's tracer as the benchmark drives it: which backends this kernel
//! offers (`herdtrace check --json`), a tracer started on a server's pid and
//! stopped with SIGINT, and its summary parsed (text, or the NDJSON line).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail};

use super::bg::{Background, Finished};
use super::parse::{json_count, json_string, json_top_level_raw};
use super::procfs;
use crate::proc;

/// The tracer loads BTF and attaches about ten programs: seconds at most.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Every backend, in the order `auto` prefers them.
pub const BACKENDS: [&str; 3] = ["fentry", "kprobe", "tracepoint"];
/// The default `--ringbuf-size`.
pub const DEFAULT_RINGBUF: &str = "4M";

/// Whether a backend can run here, from `herdtrace check --json`'s `backends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Ok,
    /// The reason `check` gives.
    Unavailable(String),
}

/// (backend, availability) for each of [`BACKENDS`].
pub fn parse_backends(check_json: &str) -> Result<Vec<(String, Availability)>, String> {
    let backends = json_top_level_raw(check_json, "backends")
        .ok_or("no \"backends\" object in herdtrace check --json")?;
    BACKENDS
        .iter()
        .map(|&name| {
            let b = json_top_level_raw(backends, name)
                .ok_or_else(|| format!("no backend {name:?} in herdtrace check --json"))?;
            let status = json_top_level_raw(b, "status")
                .and_then(json_string)
                .ok_or_else(|| format!("backend {name:?} has no status"))?;
            let avail = if status == "ok" {
                Availability::Ok
            } else {
                let reason = json_top_level_raw(b, "reason")
                    .and_then(json_string)
                    .unwrap_or(status);
                Availability::Unavailable(reason)
            };
            Ok((name.to_string(), avail))
        })
        .collect()
}

pub fn backends(bin: &Path) -> anyhow::Result<Vec<(String, Availability)>> {
    let out = proc::stdout(Command::new(bin).args(["check", "--json"]))?;
    parse_backends(&out).map_err(|e| anyhow!(e))
}

/// What a text-mode tracer run printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceSummary {
    pub connections: u64,
    /// Connections not accepted by a traced task.
    pub unaccepted: u64,
    pub lost_events: u64,
    pub incomplete: u64,
    /// `drops N` of each interval line, in order.
    pub interval_drops: Vec<u64>,
}

/// Parses the text output: interval lines, then the summary block.
pub fn parse_text_summary(out: &str) -> Result<TraceSummary, String> {
    let mut s = TraceSummary::default();
    let mut seen_summary = false;
    let mut seen_connections = false;
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.contains(" conns ") {
            if let ["drops", n] = words[words.len().saturating_sub(2)..] {
                s.interval_drops.push(
                    n.parse()
                        .map_err(|_| format!("bad drops in interval line {line:?}"))?,
                );
            }
        } else if line.starts_with("herdtrace summary") {
            seen_summary = true;
        } else if let (true, Some(rest)) = (seen_summary, line.strip_prefix("connections: ")) {
            let mut w = rest.split_whitespace();
            s.connections = number(w.next(), line)?;
            if let Some(n) = w.next() {
                s.unaccepted = number(n.strip_prefix('('), line)?;
            }
            seen_connections = true;
        } else if let ["WARNING:", lost, "events", "LOST,", incomplete, "episodes", ..] =
            words.as_slice()
        {
            s.lost_events = number(Some(lost), line)?;
            s.incomplete = number(Some(incomplete), line)?;
        }
    }
    if !seen_connections {
        return Err(format!(
            "no summary with a \"connections:\" line in the tracer's output: {:?}",
            tail(out)
        ));
    }
    Ok(s)
}

fn number(w: Option<&str>, line: &str) -> Result<u64, String> {
    w.and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("not a count in {line:?}"))
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(400);
    let start = (start..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    &s[start..]
}

/// The totals of the NDJSON `summary` line (the last line of `--json`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonSummary {
    pub connections: u64,
    pub eagain: u64,
    pub eagain_unattributed: u64,
    pub incomplete: u64,
    pub unaccepted: u64,
    pub lost_events: u64,
}

pub fn parse_json_summary(out: &str) -> Result<JsonSummary, String> {
    let line = out
        .lines()
        .rev()
        .find(|l| {
            json_top_level_raw(l, "type")
                .and_then(json_string)
                .as_deref()
                == Some("summary")
        })
        .ok_or("no \"summary\" line in the tracer's NDJSON")?;
    let diag = json_top_level_raw(line, "diagnostics").ok_or("summary without diagnostics")?;
    Ok(JsonSummary {
        connections: json_count(line, "connections")?,
        eagain: json_count(line, "eagain")?,
        eagain_unattributed: json_count(diag, "eagain_unattributed")?,
        incomplete: json_count(line, "incomplete")?,
        unaccepted: json_count(line, "unaccepted")?,
        lost_events: json_count(line, "lost_events")?,
    })
}

/// How to run the tracer.
#[derive(Debug, Clone)]
pub struct TracerSpec<'a> {
    pub backend: &'a str,
    pub ringbuf: &'a str,
    pub record: Option<PathBuf>,
    pub json: bool,
    /// Attach do-nothing programs to the same probe points (the hidden
    /// `--empty-programs`): what the probe points alone cost.
    pub empty_programs: bool,
}

impl<'a> TracerSpec<'a> {
    pub fn new(backend: &'a str) -> Self {
        Self {
            backend,
            ringbuf: DEFAULT_RINGBUF,
            record: None,
            json: false,
            empty_programs: false,
        }
    }

    pub fn command(&self, bin: &Path, pid: u32) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(["--pid", &pid.to_string(), "--backend", self.backend])
            .args(["--ringbuf-size", self.ringbuf]);
        if let Some(r) = &self.record {
            cmd.arg("--record").arg(r);
        }
        if self.json {
            cmd.arg("--json");
        }
        if self.empty_programs {
            cmd.arg("--empty-programs");
        }
        cmd
    }
}

fn is_ready(line: &str) -> bool {
    line.starts_with("herdtrace: tracing ")
}

/// A running tracer.
pub struct Tracer {
    bg: Background,
    cpu_at_ready: f64,
}

impl Tracer {
    pub fn start(bin: &Path, pid: u32, spec: &TracerSpec) -> anyhow::Result<Self> {
        // NDJSON carries a line per connection: keep only the tail.
        let keep = if spec.json { 64 } else { 0 };
        Self::start_kept(&mut spec.command(bin, pid), keep)
    }

    /// A text-mode tracer from a command made by [`TracerSpec::command`]
    /// and changed further (an environment variable).
    pub fn start_command(cmd: &mut Command) -> anyhow::Result<Self> {
        Self::start_kept(cmd, 0)
    }

    fn start_kept(cmd: &mut Command, keep: usize) -> anyhow::Result<Self> {
        let bg = Background::start(cmd, is_ready, READY_TIMEOUT, keep)?;
        let cpu_at_ready = procfs::cpu_seconds(bg.pid()).unwrap_or(0.0);
        Ok(Self { bg, cpu_at_ready })
    }

    pub fn pid(&self) -> u32 {
        self.bg.pid()
    }

    /// CPU seconds used since the tracer was ready (startup excluded).
    pub fn cpu_since_ready(&self) -> f64 {
        procfs::cpu_seconds(self.pid()).map_or(0.0, |c| c - self.cpu_at_ready)
    }

    /// Ends the tracer; its end-of-run warnings about the records
    /// themselves (out of time order, malformed) are printed, since no
    /// figure shows them.
    pub fn stop(self) -> anyhow::Result<Finished> {
        let f = self.bg.stop()?;
        if !f.status.success() {
            bail!("the tracer failed ({}): {}", f.status, f.stderr.trim());
        }
        for line in record_warnings(&f.stderr) {
            println!("   {line}");
        }
        Ok(f)
    }
}

/// The tracer's warnings about its records: merged out of time order, or
/// malformed.
pub fn record_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("herdtrace: warning: "))
        .filter(|l| l.contains("too late to be merged") || l.contains("malformed records"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK: &str = r#"{
  "kernel": {"release": "6.18.1", "version": [6, 18, 1]},
  "symbols": {"x": {"status": "ok"}},
  "backends": {
    "fentry": {"status": "refused", "reason": "load returned EPERM (\"lockdown\")"},
    "kprobe": {"status": "refused", "reason": "kernel built without CONFIG_KPROBES"},
    "tracepoint": {"status": "ok", "backend": "tracepoint", "skipped": [], "warnings": []}
  },
  "backend": {"auto": {"status": "ok", "backend": "tracepoint"}}
}"#;

    #[test]
    fn record_warnings_are_picked_from_stderr() {
        let stderr = "herdtrace: tracing 5 tasks in 5 processes\n\
            herdtrace: warning: 2 records reached the ring buffers too late to be merged in time order (up to 3 us behind)\n\
            herdtrace: warning: 1 malformed records from the kernel were skipped\n\
            herdtrace: warning: 1 idle waiter is not traced\n\
            late: too late to be merged\n";
        assert_eq!(
            record_warnings(stderr),
            vec![
                "herdtrace: warning: 2 records reached the ring buffers too late to be merged in time order (up to 3 us behind)",
                "herdtrace: warning: 1 malformed records from the kernel were skipped",
            ]
        );
        assert!(record_warnings("herdtrace: listeners: x\n").is_empty());
    }

    #[test]
    fn backends_from_check_json() {
        let b = parse_backends(CHECK).expect("parse");
        assert_eq!(
            b,
            vec![
                (
                    "fentry".to_string(),
                    Availability::Unavailable("load returned EPERM (\"lockdown\")".into())
                ),
                (
                    "kprobe".to_string(),
                    Availability::Unavailable("kernel built without CONFIG_KPROBES".into())
                ),
                ("tracepoint".to_string(), Availability::Ok),
            ]
        );
        assert!(parse_backends("{}").is_err());
        assert!(parse_backends(&CHECK.replace("\"kprobe\"", "\"kp\"")).is_err());
    }

    const TEXT: &str = "\
17:01:02 conns 9000  woken/conn 1.00 (max 1)  eagain/conn 0.00  spurious/conn 0.00  drops 0
17:01:03 conns 9100  woken/conn 1.00 (max 2)  eagain/conn 0.01  spurious/conn 0.00  drops 17

herdtrace summary  (backend: tracepoint, kernel: 6.18.1)
connections: 20000 (3 not accepted by a traced task)
tasks woken per connection: mean 1.00  p50 1  p99 1  max 2
[1]  20000 |@@@@|

     PID      TID COMM              ACCEPTS  SHARE    WOKEN   EAGAIN SPURIOUS
    4242     4242 herdtrace            5000  25.0%     5000        0        0

WARNING: 17 events LOST, 2 episodes INCOMPLETE: their counts are lower bounds (try a larger ring buffer or fewer traced processes)
verdict: no herd
";

    #[test]
    fn text_summary_with_drops() {
        let s = parse_text_summary(TEXT).expect("parse");
        assert_eq!(
            s,
            TraceSummary {
                connections: 20000,
                unaccepted: 3,
                lost_events: 17,
                incomplete: 2,
                interval_drops: vec![0, 17],
            }
        );
    }

    #[test]
    fn text_summary_clean_and_broken() {
        let clean = "\nherdtrace summary  (backend: tracepoint, kernel: 6.18)\nconnections: 0\n\nverdict: no connections\n";
        assert_eq!(
            parse_text_summary(clean).expect("clean"),
            TraceSummary::default()
        );
        assert!(parse_text_summary("").is_err());
        assert!(
            parse_text_summary("connections: 5\n").is_err(),
            "no summary header"
        );
        assert!(parse_text_summary(&TEXT.replace("connections: 20000", "connections: x")).is_err());
        assert!(parse_text_summary(&TEXT.replace("drops 17", "drops many")).is_err());
    }

    #[test]
    fn json_summary_is_the_last_summary_line() {
        let out = r#"{"type":"conn","connections":1}
{"type":"summary","backend":"tracepoint","connections":12,"woken_per_conn":{"mean":1.0},"eagain":30,"eagain_losers":1,"incomplete":0,"unaccepted":2,"tasks":[{"eagain":9}],"lost_events":0,"diagnostics":{"orphan_wakes":1,"eagain_unattributed":4},"verdict":"x"}
"#;
        assert_eq!(
            parse_json_summary(out).expect("parse"),
            JsonSummary {
                connections: 12,
                eagain: 30,
                eagain_unattributed: 4,
                incomplete: 0,
                unaccepted: 2,
                lost_events: 0,
            }
        );
        assert!(parse_json_summary(r#"{"type":"conn","connections":1}"#).is_err());
    }

    #[test]
    fn tracer_command_line() {
        let mut spec = TracerSpec::new("tracepoint");
        spec.ringbuf = "64K";
        spec.record = Some(PathBuf::from("/tmp/x.htr"));
        spec.json = true;
        let cmd = spec.command(Path::new("/bin/herdtrace"), 42);
        assert_eq!(
            proc::display(&cmd),
            "/bin/herdtrace --pid 42 --backend tracepoint --ringbuf-size 64K --record /tmp/x.htr --json"
        );
        assert!(is_ready(
            "herdtrace: tracing 5 tasks in 5 processes with the tracepoint backend; Ctrl-C to end"
        ));
        assert!(!is_ready("herdtrace: backend tracepoint"));
    }
}
