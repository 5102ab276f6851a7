//! End-to-end tracer scenarios, defined once and run both by the host
//! integration tests and inside QEMU (`herdtrace selftest`): start the
//! built-in server, trace it, drive load, and check the tracer against the
//! load generator's and the server's own counts and the expected herd.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;
use serde_json::Value;

use crate::serve::{child::ChildGuard, model::Model, process::ServerProcess};

/// What the mean number of woken tasks per connection must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Bound {
    /// Every idle worker woken: mean woken ≥ `woken`, wasted (eagain_losers + spurious) ≥ `wasted`.
    Herd { woken: f64, wasted: f64 },
    /// At most this many woken on average.
    AtMost(f64),
    /// Between these (inclusive).
    Between(f64, f64),
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub model: Model,
    pub serve_args: Vec<&'static str>,
    pub workers: u32,
    pub connections: u32,
    pub rate: u32,
    /// Connections the load generator keeps in flight at once.
    pub concurrency: u32,
    pub bound: Bound,
    /// The oldest kernel (major, minor) whose server can run it, with what
    /// needs it; older kernels skip the scenario.
    pub min_kernel: Option<((u32, u32), &'static str)>,
}

impl Scenario {
    /// Why the scenario cannot run on kernel `release`, if it cannot.
    pub fn unsupported_on(&self, release: &str) -> Option<String> {
        let ((major, minor), what) = self.min_kernel?;
        (crate::kernel::major_minor(release)? < (major, minor))
            .then(|| format!("{what} needs Linux {major}.{minor}+, this kernel is {release}"))
    }
}

/// The scenarios: 4 idle workers (moderate rate, so workers are asleep when
/// each connection arrives), a few hundred connections. Expectations from
/// docs/herd-mechanics.md: epoll-per-worker wakes every idle worker; exclusive,
/// reuseport and blocking accept one; shared epoll in LT mode one to N.
#[cfg(feature = "test-hooks")]
pub fn all() -> Vec<Scenario> {
    let base = |name, model, bound| Scenario {
        name,
        model,
        serve_args: Vec::new(),
        workers: 4,
        connections: 250,
        rate: 200,
        concurrency: 2,
        bound,
        min_kernel: None,
    };
    vec![
        base(
            "epoll-per-worker",
            Model::EpollPerWorker,
            Bound::Herd {
                woken: 3.5,
                wasted: 2.5,
            },
        ),
        base("shared-epoll", Model::SharedEpoll, Bound::Between(1.0, 4.0)),
        base("exclusive", Model::Exclusive, Bound::AtMost(1.5)),
        base("reuseport", Model::Reuseport, Bound::AtMost(1.5)),
        base("blocking-accept", Model::BlockingAccept, Bound::AtMost(1.5)),
        // Each ring's armed accept is a poll on the listener's wait queue,
        // exclusive on the kernels tried (docs/kernel-behaviour.md); accepts
        // come from io_uring's completions, no accept syscall.
        base("io-uring", Model::IoUring, Bound::Between(1.0, 4.0)),
        // One multishot accept per ring, armed before the tracer starts and
        // never submitted again: its completions are told by the accept's
        // poll wakeup. Exclusive since 5.18, and multishot is 5.19+.
        Scenario {
            serve_args: vec!["--multishot"],
            min_kernel: Some((
                crate::diagnose::layout::URING_MULTISHOT_SINCE,
                "a multishot io_uring accept",
            )),
            ..base("io-uring-multishot", Model::IoUring, Bound::AtMost(1.5))
        },
        // One epoll per runtime, one waiter in it (docs/architecture.md).
        base("tokio", Model::Tokio, Bound::AtMost(1.5)),
        base("tokio-reuseport", Model::TokioReuseport, Bound::AtMost(1.5)),
    ]
}

#[cfg(feature = "test-hooks")]
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

/// One traced connection, as far as `verify` and the agreement check need
/// it (from a "conn" line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnSample {
    /// Arrival time (CLOCK_MONOTONIC ns).
    pub ts_ns: u64,
    /// The task that accepted it, when known.
    pub accepted_by: Option<u32>,
    pub accept_latency_us: Option<u64>,
    /// The client's `ip:port`: names the same connection in two tracers' outputs.
    pub peer: Option<String>,
    /// The conn line's counts: `verify` estimates the spread of each
    /// per-connection mean from them.
    pub woken: u32,
    pub eagain: u32,
    pub eagain_losers: u32,
    pub spurious: u32,
    /// The tracer flagged it (events lost, or runs skipped while it was open).
    pub flagged: bool,
}

/// What one run measured and what failed.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub scenario: String,
    pub backend: String,
    /// The kernel release the tracer reported.
    pub kernel: String,
    pub load_connections: u64,
    pub load_errors: u64,
    pub conn_records: u64,
    pub woken_mean: f64,
    pub woken_p99: u64,
    pub eagain_per_conn: f64,
    pub eagain_losers_per_conn: f64,
    pub spurious_per_conn: f64,
    pub lost_events: u64,
    /// tid -> (server's own accepts, tracer's accepts).
    pub accepts_by_tid: BTreeMap<u32, (u64, u64)>,
    pub failures: Vec<String>,
    /// What the tracer's summary says it could not attribute or may have
    /// missed (unmatched accepts, orphan wakes, skipped runs by program,
    /// possibly incomplete connections, failed map inserts); empty when
    /// nothing: printed with a failure so a run in a VM explains itself.
    pub diagnostics: Vec<String>,
    /// Runs of each program the kernel skipped (its recursion guard).
    pub skipped_by_program: BTreeMap<String, u64>,
    /// Count differences the tracer itself reported (skipped runs of the
    /// programs that carry those facts): not failures, but said.
    pub explained: Vec<String>,
    pub tracer_stderr: String,
    /// Every "conn" line, in the tracer's (episode-closing) order; not
    /// serialized (the selftest lines stay short).
    #[serde(skip)]
    pub conns: Vec<ConnSample>,
}

impl Outcome {
    #[cfg(feature = "test-hooks")]
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs of the programs of these probe points the kernel skipped in this run.
fn skipped_in(o: &Outcome, points: &[&str]) -> u64 {
    let programs: Vec<&str> = crate::probes::TABLE
        .iter()
        .filter(|p| points.contains(&p.id))
        .flat_map(|p| p.variants.iter())
        .flat_map(|v| v.attach.iter())
        .map(|a| a.program)
        .collect();
    o.skipped_by_program
        .iter()
        .filter(|(p, _)| programs.contains(&p.as_str()))
        .map(|(_, n)| n)
        .sum()
}

/// Probe points whose skipped runs can cost a connection's arrival.
const ARRIVAL_POINTS: &[&str] = &[
    "arrival",
    "handshake",
    "new-connection",
    "wake-queue",
    "epoll-callback",
];
/// Probe points whose skipped runs can cost an accept.
const ACCEPT_POINTS: &[&str] = &[
    "accept",
    "accept4-syscall",
    "accept-syscall",
    "accept-in-progress",
];

/// Whether the run measured what it should, whatever the herd: every load
/// connection succeeded and has a conn record, no event was lost, and the
/// tracer's per-task accepts equal the server's own counts. A shortfall the
/// tracer itself reported (the kernel skipped that many runs of the programs
/// that carry those facts, and it flagged the connections) is not a
/// failure: it goes to `explained`. Returns (failures, explained).
pub fn integrity_check(sc: &Scenario, o: &Outcome) -> (Vec<String>, Vec<String>) {
    let mut failures = Vec::new();
    let mut explained = Vec::new();
    if o.load_errors > 0 || o.load_connections != u64::from(sc.connections) {
        failures.push(format!(
            "load generator: {} of {} connections ok, {} errors",
            o.load_connections, sc.connections, o.load_errors
        ));
    }
    if o.conn_records != o.load_connections {
        let msg = format!(
            "{} conn records for {} connections",
            o.conn_records, o.load_connections
        );
        let short = o.load_connections.saturating_sub(o.conn_records);
        let skipped = skipped_in(o, ARRIVAL_POINTS);
        if o.conn_records < o.load_connections && short <= skipped {
            explained.push(format!(
                "{msg}: the kernel skipped {skipped} runs of arrival probes"
            ));
        } else {
            failures.push(msg);
        }
    }
    if o.lost_events > 0 {
        failures.push(format!("{} events lost", o.lost_events));
    }
    let accept_skips = skipped_in(o, ACCEPT_POINTS);
    let mut short_total = 0;
    let mut mismatches = Vec::new();
    for (tid, (server, traced)) in &o.accepts_by_tid {
        if server != traced {
            mismatches.push(format!(
                "task {tid}: server counted {server} accepts, tracer {traced}"
            ));
            if traced > server {
                short_total = u64::MAX; // more than happened: never explained
            } else {
                short_total = short_total.saturating_add(server - traced);
            }
        }
    }
    if !mismatches.is_empty() {
        if short_total <= accept_skips {
            explained.extend(
                mismatches.into_iter().map(|m| {
                    format!("{m}: the kernel skipped {accept_skips} runs of accept probes")
                }),
            );
        } else {
            failures.extend(mismatches);
        }
    }
    (failures, explained)
}

/// The failures of [`integrity_check`].
pub fn integrity_failures(sc: &Scenario, o: &Outcome) -> Vec<String> {
    integrity_check(sc, o).0
}

/// The highest load-generator concurrency at which the scenarios' workers
/// are still idle when a connection arrives (their woken bounds hold).
pub const IDLE_CONCURRENCY: u32 = 2;

/// Pure checks of a run's figures against the scenario.
pub fn evaluate(sc: &Scenario, o: &mut Outcome) {
    let (counts, explained) = integrity_check(sc, o);
    o.failures.extend(counts);
    o.explained = explained;
    // The woken bounds assume idle workers; under concurrent load they are
    // busy, and only the counts (and, run together, the agreement) are checked.
    if sc.concurrency > IDLE_CONCURRENCY {
        return;
    }
    let mut fail = |m: String| o.failures.push(m);
    let wasted = o.eagain_losers_per_conn + o.spurious_per_conn;
    match sc.bound {
        Bound::Herd { woken, wasted: w } => {
            if o.woken_mean < woken {
                fail(format!("mean woken {:.2} < {woken}", o.woken_mean));
            }
            if wasted < w {
                fail(format!("wasted wakeups {wasted:.2}/conn < {w}"));
            }
        }
        Bound::AtMost(max) => {
            if o.woken_mean > max {
                fail(format!("mean woken {:.2} > {max}", o.woken_mean));
            }
        }
        Bound::Between(lo, hi) => {
            if o.woken_mean < lo || o.woken_mean > hi {
                fail(format!(
                    "mean woken {:.2} outside [{lo}, {hi}]",
                    o.woken_mean
                ));
            }
        }
    }
}

/// Runs `sc` with the tracer `backend` ("tracepoint", "kprobe", "fentry",
/// "auto"), using the herdtrace binary at `exe`.
#[cfg(feature = "test-hooks")]
pub fn run(exe: &Path, backend: &str, sc: &Scenario) -> Result<Outcome> {
    run_with(exe, backend, sc, &[])
}

/// Runs `sc` with the tracer `backend` and extra tracer arguments.
pub fn run_with(
    exe: &Path,
    backend: &str,
    sc: &Scenario,
    tracer_args: &[String],
) -> Result<Outcome> {
    let mut outcomes = run_together(exe, &[backend], sc, tracer_args)?;
    outcomes.pop().context("no outcome")
}

/// Runs `sc` once with one tracer per backend attached at the same time to
/// the same server: every tracer sees the very same connections, so their
/// figures must agree (`selftest --agree`). One outcome per backend, in order.
pub fn run_together(
    exe: &Path,
    backends: &[&str],
    sc: &Scenario,
    tracer_args: &[String],
) -> Result<Vec<Outcome>> {
    // 1. The server.
    let server = ServerProcess::start(exe, sc.model, sc.workers, &sc.serve_args, false)?;
    let listening = *server.listening();

    // 2. The tracers.
    let mut tracers = Vec::new();
    for backend in backends {
        tracers.push(TracerChild::start(
            exe,
            backend,
            listening.pid,
            listening.port,
            tracer_args,
        )?);
    }

    // 3. Load.
    let load = Command::new(exe)
        .args(["load", "--addr", &listening.addr()])
        .args(["--connections", &sc.connections.to_string()])
        .args([
            "--rate",
            &sc.rate.to_string(),
            "--concurrency",
            &sc.concurrency.to_string(),
            "--json",
        ])
        .stderr(Stdio::null())
        .output()
        .context("running the load generator")?;
    let load_json: Value = serde_json::from_slice(&load.stdout)
        .with_context(|| format!("load output {:?}", String::from_utf8_lossy(&load.stdout)))?;

    // 4. Let the last episodes close (the engine's timeout is 1 s), stop the tracers.
    thread::sleep(Duration::from_millis(2000));
    let mut outputs = Vec::new();
    for t in tracers {
        outputs.push(t.stop()?);
    }

    // 5. Stop the server, read its own counts.
    let server_accepts: BTreeMap<u32, u64> = server
        .stop()?
        .iter()
        .map(|w| (w.tid as u32, w.accepts))
        .collect();

    let mut outcomes = Vec::new();
    for ((ndjson, stderr_text), backend) in outputs.into_iter().zip(backends) {
        let mut outcome = outcome_from(sc, backend, &load_json, &ndjson, &server_accepts)?;
        outcome.tracer_stderr = stderr_text;
        evaluate(sc, &mut outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// A tracer (`herdtrace --pid ... --json`) attached to a scenario's server,
/// its NDJSON and stderr collected by threads.
struct TracerChild {
    child: ChildGuard,
    stdout: thread::JoinHandle<String>,
    stderr: thread::JoinHandle<String>,
}

impl TracerChild {
    /// Starts the tracer and waits until its probes are attached.
    fn start(
        exe: &Path,
        backend: &str,
        pid: i32,
        port: u16,
        tracer_args: &[String],
    ) -> Result<TracerChild> {
        let mut cmd = Command::new(exe);
        cmd.args(["--pid", &pid.to_string(), "--json", "--backend", backend])
            .args(["--port", &port.to_string()])
            .args(tracer_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard(cmd.spawn().context("starting the tracer")?);
        let mut out = child.0.stdout.take().context("tracer stdout")?;
        let stdout = thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = child.0.stderr.take().context("tracer stderr")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains("herdtrace: tracing ") {
                    let _ = ready_tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        // Generous: the trial loads are slow under QEMU's software emulation.
        if ready_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            drop(child);
            let err = stderr.join().unwrap_or_default();
            bail!("the {backend} tracer did not start: {}", err.trim());
        }
        Ok(TracerChild {
            child,
            stdout,
            stderr,
        })
    }

    /// Ctrl-C, then its (NDJSON, stderr).
    fn stop(mut self) -> Result<(String, String)> {
        self.child.signal(libc::SIGINT);
        let status = self.child.0.wait().context("waiting for the tracer")?;
        let ndjson = self.stdout.join().unwrap_or_default();
        let stderr_text = self.stderr.join().unwrap_or_default();
        if !status.success() {
            bail!("the tracer failed ({status}): {}", stderr_text.trim());
        }
        Ok((ndjson, stderr_text))
    }
}

/// How far apart two backends' mean woken per connection may be on the same run.
#[cfg(feature = "test-hooks")]
pub const AGREEMENT_TOLERANCE: f64 = 0.10;
/// The share of connections (matched by client address and port across the
/// two tracers' outputs) that must have the same woken count.
#[cfg(feature = "test-hooks")]
pub const AGREEMENT_SAME_SHARE: f64 = 0.99;

/// Fewest connections a per-connection comparison must cover (reported
/// unflagged by both tracers) to say anything, as a share of the
/// connections of one run (50 of 200). Flagged connections are not
/// compared, and a kernel that preempts kernel code (7.x) skips program
/// runs (the per-CPU recursion guard of tracepoint programs, each fentry
/// program's own), each skip flagging the connections open in the sample
/// window it was seen in: under `--concurrency 8` in a TCG guest with two
/// tracers, 30-70 % of 200 connections. A run that leaves fewer is not a
/// disagreement but too small a sample: the scenario is run again, up to
/// [`AGREEMENT_MAX_RUNS`] times, and the line covers every run.
pub const AGREEMENT_MIN_COMPARED_SHARE: f64 = 0.25;
/// Most runs of one scenario an agreement line may take to reach
/// [`AGREEMENT_MIN_COMPARED_SHARE`] compared connections.
pub const AGREEMENT_MAX_RUNS: u32 = 3;

/// Two backends compared on the same connections.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    pub scenario: String,
    pub reference: String,
    pub other: String,
    pub reference_woken: f64,
    pub other_woken: f64,
    /// |reference - other| / other.
    pub diff: f64,
    /// Connections both tracers reported (matched by client address).
    pub matched: u64,
    /// Of those, how many have the same woken count in both.
    pub same_woken: u64,
    /// Connections only one of the two reported.
    pub unmatched: u64,
    /// Connections either tracer flagged as (possibly) incomplete: matched,
    /// not compared.
    pub flagged: u64,
    /// Runs of the scenario the line covers (more than one when a run left
    /// too few connections to compare; see [`AGREEMENT_MIN_COMPARED_SHARE`]).
    pub runs: u32,
    /// Connections to compare, at least: a share of the first run's.
    pub min_compared: u64,
    /// Why it fails: disagreement, or either run failing its own checks.
    /// Set by [`Agreement::judge`].
    pub failures: Vec<String>,
    /// Failures found within one run (means apart, connections one tracer
    /// lacks, a run failing its own checks), with the run's number.
    #[serde(skip)]
    run_failures: Vec<(u32, String)>,
    /// The first few connections whose counts differ: `peer A/B`.
    #[serde(skip)]
    differing: Vec<String>,
    /// Both tracers' diagnostics, per run, shown beside failures.
    #[serde(skip)]
    diagnostics: Vec<(u32, String)>,
}

#[cfg(feature = "test-hooks")]
impl Agreement {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The runs so far compare too few connections, and nothing else failed
    /// in them, not even one connection's count: the scenario should run
    /// again (see [`AGREEMENT_MIN_COMPARED_SHARE`]). A disagreement is
    /// judged on the runs it was seen in, never diluted by more runs.
    pub fn needs_another_run(&self) -> bool {
        self.matched < self.min_compared
            && self.same_woken == self.matched
            && self.run_failures.is_empty()
            && self.runs < AGREEMENT_MAX_RUNS
    }

    /// Adds the next run of the same scenario and pair: counts add up, the
    /// means are weighted by the connections each run reported.
    pub fn absorb(&mut self, next: Agreement) {
        let weight = |a: &Agreement| (a.matched + a.flagged + a.unmatched).max(1) as f64;
        let (w0, w1) = (weight(self), weight(&next));
        let mean = |a: f64, b: f64| (a * w0 + b * w1) / (w0 + w1);
        self.reference_woken = mean(self.reference_woken, next.reference_woken);
        self.other_woken = mean(self.other_woken, next.other_woken);
        self.diff = relative_diff(self.reference_woken, self.other_woken);
        self.matched += next.matched;
        self.same_woken += next.same_woken;
        self.unmatched += next.unmatched;
        self.flagged += next.flagged;
        let offset = self.runs;
        self.runs += next.runs;
        let renumber = |v: Vec<(u32, String)>| v.into_iter().map(move |(r, f)| (r + offset, f));
        self.run_failures.extend(renumber(next.run_failures));
        self.diagnostics.extend(renumber(next.diagnostics));
        self.differing.extend(next.differing);
    }

    /// Sets [`Agreement::failures`] from every run's own failures and the
    /// totals: enough connections compared, and the same woken count in at
    /// least [`AGREEMENT_SAME_SHARE`] of them.
    pub fn judge(&mut self) {
        let runs = self.runs;
        let numbered = |(r, f): &(u32, String)| {
            if runs > 1 {
                format!("run {r}: {f}")
            } else {
                f.clone()
            }
        };
        let mut failures: Vec<String> = self.run_failures.iter().map(numbered).collect();
        if self.matched < self.min_compared {
            failures.push(format!(
                "{} of {} connections compared < {} ({} flagged (possibly) incomplete)",
                self.matched,
                self.matched + self.flagged,
                self.min_compared,
                self.flagged
            ));
        }
        if self.same_share() < AGREEMENT_SAME_SHARE {
            failures.push(format!(
                "same woken count in {:.1}% of {} connections < {:.0}% (e.g. {})",
                self.same_share() * 100.0,
                self.matched,
                AGREEMENT_SAME_SHARE * 100.0,
                self.differing.join(", ")
            ));
        }
        if !failures.is_empty() {
            failures.extend(self.diagnostics.iter().map(numbered));
        }
        self.failures = failures;
    }

    /// Share of the matched connections with equal woken counts.
    pub fn same_share(&self) -> f64 {
        if self.matched == 0 {
            0.0
        } else {
            self.same_woken as f64 / self.matched as f64
        }
    }

    /// `PASS agree MODEL A~B: woken/conn X vs Y diff D%, same woken in S% of N [failures]`.
    pub fn line(&self) -> String {
        format!(
            "{} agree {} {}~{}: woken/conn {:.2} vs {:.2} diff {:.1}%, same woken in {:.1}% of {} connections{}{}{}",
            if self.passed() { "PASS" } else { "FAIL" },
            self.scenario,
            self.reference,
            self.other,
            self.reference_woken,
            self.other_woken,
            self.diff * 100.0,
            self.same_share() * 100.0,
            self.matched,
            if self.runs > 1 {
                format!(" over {} runs", self.runs)
            } else {
                String::new()
            },
            if self.flagged > 0 {
                format!(" ({} flagged, not compared)", self.flagged)
            } else {
                String::new()
            },
            if self.failures.is_empty() {
                String::new()
            } else {
                format!(" [{}]", self.failures.join("; "))
            }
        )
    }
}

/// Two tracers' records of one run, compared connection by connection.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnComparison {
    /// The first few connections whose counts differ: `peer A/B`.
    pub differing: Vec<String>,
    /// Reported by both, neither flagged: their counts compared.
    pub matched: u64,
    /// Of those, with the same woken count.
    pub same: u64,
    /// Reported by the first only.
    pub only_first: u64,
    /// Reported by the second only.
    pub only_second: u64,
    /// Reported by both, flagged by either (events lost or runs skipped
    /// while open: counts may be short): not compared.
    pub flagged: u64,
}

/// Compares two tracers' records of one run connection by connection.
///
/// A connection is named by its client address and port, but a client
/// reuses a port within one run (the kernel may pick it again as soon as
/// the client side has closed: in 5 of 160 recorded 200-connection runs,
/// 2-12 ports came twice, seconds apart). So the records of one address are
/// paired in time order ([`pair_by_time`]), not by address alone.
#[cfg(feature = "test-hooks")]
pub fn compare_conns(a: &[ConnSample], b: &[ConnSample]) -> ConnComparison {
    fn by_peer(v: &[ConnSample]) -> BTreeMap<&str, Vec<&ConnSample>> {
        let mut m: BTreeMap<&str, Vec<&ConnSample>> = BTreeMap::new();
        for c in v {
            if let Some(peer) = c.peer.as_deref() {
                m.entry(peer).or_default().push(c);
            }
        }
        for list in m.values_mut() {
            list.sort_by_key(|c| c.ts_ns);
        }
        m
    }
    let (a_by, mut b_by) = (by_peer(a), by_peer(b));
    let mut out = ConnComparison::default();
    for (peer, a_list) in &a_by {
        let b_list = b_by.remove(peer).unwrap_or_default();
        let pairs = pair_by_time(a_list, &b_list);
        out.only_first += (a_list.len() - pairs.len()) as u64;
        out.only_second += (b_list.len() - pairs.len()) as u64;
        for (i, j) in pairs {
            let (c, other) = (a_list[i], b_list[j]);
            if c.flagged || other.flagged {
                out.flagged += 1;
                continue;
            }
            out.matched += 1;
            if other.woken == c.woken {
                out.same += 1;
            } else if out.differing.len() < 5 {
                out.differing
                    .push(format!("{peer} {}/{}", c.woken, other.woken));
            }
        }
    }
    out.only_second += b_by.values().map(|l| l.len() as u64).sum::<u64>();
    out
}

/// Pairs two tracers' records of one client address (each sorted by
/// time): the same count on both sides pairs them in order; otherwise each
/// record of the shorter list takes the nearest-in-time record of the
/// longer one that comes after the last taken (both tracers time the same
/// connection within milliseconds; a reused port comes seconds later).
#[cfg(feature = "test-hooks")]
fn pair_by_time(a: &[&ConnSample], b: &[&ConnSample]) -> Vec<(usize, usize)> {
    if a.len() == b.len() {
        return (0..a.len()).map(|i| (i, i)).collect();
    }
    let swap = a.len() > b.len();
    let (short, long) = if swap { (b, a) } else { (a, b) };
    let mut pairs = Vec::with_capacity(short.len());
    let mut next = 0;
    for (i, s) in short.iter().enumerate() {
        let Some(j) = (next..long.len()).min_by_key(|&j| long[j].ts_ns.abs_diff(s.ts_ns)) else {
            break;
        };
        next = j + 1;
        pairs.push(if swap { (j, i) } else { (i, j) });
    }
    pairs
}

/// |a - b| / b (infinite when only `b` is 0).
#[cfg(feature = "test-hooks")]
fn relative_diff(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a - b).abs() / b
    } else if a > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

/// The first outcome (the tracepoint backend by convention) against each of
/// the others, taken on the same run: the same connections, the same woken
/// count for at least [`AGREEMENT_SAME_SHARE`] of them, means within
/// [`AGREEMENT_TOLERANCE`], and each run passing its own checks. Not yet
/// judged: see [`Agreement::absorb`] (another run of the same scenario) and
/// [`Agreement::judge`]; [`agreement`] does both for a single run.
#[cfg(feature = "test-hooks")]
pub fn measure_agreement(outcomes: &[Outcome]) -> Vec<Agreement> {
    let Some((reference, others)) = outcomes.split_first() else {
        return Vec::new();
    };
    others
        .iter()
        .map(|o| {
            let diff = relative_diff(reference.woken_mean, o.woken_mean);
            let cmp = compare_conns(&reference.conns, &o.conns);
            let unmatched = cmp.only_first + cmp.only_second;
            // A connection one tracer lacks is explained when that tracer
            // reported as many skipped runs of its arrival probes.
            let explained = cmp.only_first <= skipped_in(o, ARRIVAL_POINTS)
                && cmp.only_second <= skipped_in(reference, ARRIVAL_POINTS);
            let mut failures = Vec::new();
            if diff > AGREEMENT_TOLERANCE {
                failures.push(format!(
                    "means differ by {:.1}% > {:.0}%",
                    diff * 100.0,
                    AGREEMENT_TOLERANCE * 100.0
                ));
            }
            if unmatched > 0 && !explained {
                failures.push(format!(
                    "{unmatched} connections reported by only one of the two"
                ));
            }
            for run in [reference, o] {
                failures.extend(run.failures.iter().map(|f| format!("{}: {f}", run.backend)));
            }
            let diagnostics = [reference, o]
                .into_iter()
                .filter(|r| !r.diagnostics.is_empty())
                .map(|r| {
                    (
                        1,
                        format!("{} tracer: {}", r.backend, r.diagnostics.join(", ")),
                    )
                })
                .collect();
            Agreement {
                scenario: reference.scenario.clone(),
                reference: reference.backend.clone(),
                other: o.backend.clone(),
                reference_woken: reference.woken_mean,
                other_woken: o.woken_mean,
                diff,
                matched: cmp.matched,
                same_woken: cmp.same,
                unmatched,
                flagged: cmp.flagged,
                runs: 1,
                min_compared: ((cmp.matched + cmp.flagged) as f64 * AGREEMENT_MIN_COMPARED_SHARE)
                    .ceil() as u64,
                failures: Vec::new(),
                run_failures: failures.into_iter().map(|f| (1, f)).collect(),
                differing: cmp.differing,
                diagnostics,
            }
        })
        .collect()
}

/// [`measure_agreement`] of one run, judged.
#[cfg(feature = "test-hooks")]
pub fn agreement(outcomes: &[Outcome]) -> Vec<Agreement> {
    let mut all = measure_agreement(outcomes);
    all.iter_mut().for_each(Agreement::judge);
    all
}

/// Builds the outcome from the three outputs (pure, unit-tested).
pub fn outcome_from(
    sc: &Scenario,
    backend: &str,
    load: &Value,
    ndjson: &str,
    server_accepts: &BTreeMap<u32, u64>,
) -> Result<Outcome> {
    let mut conn_lines = Vec::new();
    let mut summary = None;
    let count = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    for line in ndjson.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("tracer line {line:?}"))?;
        match v.get("type").and_then(Value::as_str) {
            Some("conn") => conn_lines.push(ConnSample {
                ts_ns: v.get("ts_ns").and_then(Value::as_u64).unwrap_or(0),
                accepted_by: v
                    .pointer("/accepted_by/tid")
                    .and_then(Value::as_u64)
                    .and_then(|t| u32::try_from(t).ok()),
                accept_latency_us: v.get("accept_latency_us").and_then(Value::as_u64),
                peer: v.get("peer").and_then(Value::as_str).map(str::to_owned),
                woken: count(&v, "woken"),
                eagain: count(&v, "eagain"),
                eagain_losers: count(&v, "eagain_losers"),
                spurious: count(&v, "spurious"),
                flagged: ["incomplete", "possibly_incomplete"]
                    .iter()
                    .any(|k| v.get(*k).and_then(Value::as_bool) == Some(true)),
            }),
            Some("summary") => summary = Some(v),
            _ => {}
        }
    }
    let s = summary.ok_or_else(|| anyhow!("the tracer printed no summary"))?;
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let conns = num(&s, "connections");
    let per = |k: &str| if conns > 0.0 { num(&s, k) / conns } else { 0.0 };
    let mut accepts_by_tid: BTreeMap<u32, (u64, u64)> = server_accepts
        .iter()
        .map(|(tid, a)| (*tid, (*a, 0)))
        .collect();
    for t in s
        .get("tasks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let tid = t.get("tid").and_then(Value::as_u64).unwrap_or(0) as u32;
        let accepts = t.get("accepts").and_then(Value::as_u64).unwrap_or(0);
        if accepts > 0 || server_accepts.contains_key(&tid) {
            accepts_by_tid.entry(tid).or_insert((0, 0)).1 += accepts;
        }
    }
    Ok(Outcome {
        scenario: sc.name.to_string(),
        backend: s
            .get("backend")
            .and_then(Value::as_str)
            .unwrap_or(backend)
            .to_string(),
        kernel: s
            .get("kernel")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        load_connections: load.get("connections").and_then(Value::as_u64).unwrap_or(0),
        load_errors: load.get("errors").and_then(Value::as_u64).unwrap_or(0),
        conn_records: conn_lines.len() as u64,
        woken_mean: s
            .get("woken_per_conn")
            .map(|w| num(w, "mean"))
            .unwrap_or(0.0),
        woken_p99: s
            .pointer("/woken_per_conn/p99")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        eagain_per_conn: per("eagain"),
        eagain_losers_per_conn: per("eagain_losers"),
        spurious_per_conn: per("spurious"),
        lost_events: num(&s, "lost_events") as u64,
        accepts_by_tid,
        failures: Vec::new(),
        diagnostics: diagnostics_of(&s),
        skipped_by_program: s
            .get("skipped_by_program")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default(),
        explained: Vec::new(),
        tracer_stderr: String::new(),
        conns: conn_lines,
    })
}

/// The non-zero "could not attribute / may have missed" figures of a summary.
pub fn diagnostics_of(s: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |name: &str, v: Option<&Value>| {
        if let Some(n) = v.and_then(Value::as_u64).filter(|n| *n > 0) {
            out.push(format!("{name} {n}"));
        }
    };
    add("unaccepted", s.get("unaccepted"));
    add("possibly_incomplete", s.get("possibly_incomplete"));
    add("incomplete", s.get("incomplete"));
    add("skipped_runs", s.get("skipped_runs"));
    if let Some(d) = s.get("diagnostics") {
        add("orphan_wakes", d.get("orphan_wakes"));
        add("unmatched_accepts", d.get("unmatched_accepts"));
        add("eagain_unattributed", d.get("eagain_unattributed"));
    }
    for key in ["skipped_by_program", "insert_failed"] {
        if let Some(m) = s.get(key).and_then(Value::as_object) {
            for (k, v) in m {
                add(&format!("{key}.{k}"), Some(v));
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn outcome(sc: &Scenario, ndjson: &str, server: &[(u32, u64)]) -> Outcome {
        let load = json!({"connections": sc.connections, "errors": 0});
        let server: BTreeMap<u32, u64> = server.iter().copied().collect();
        let mut o = outcome_from(sc, "tracepoint", &load, ndjson, &server).expect("outcome");
        evaluate(sc, &mut o);
        o
    }

    fn ndjson(conns: u32, woken: f64, losers: u64, spurious: u64, tasks: &[(u32, u64)]) -> String {
        let mut s = String::new();
        for _ in 0..conns {
            s.push_str("{\"type\":\"conn\"}\n");
        }
        let tasks: Vec<Value> = tasks
            .iter()
            .map(|(tid, a)| json!({"pid": tid, "tid": tid, "accepts": a}))
            .collect();
        s.push_str(
            &json!({"type":"summary","backend":"tracepoint","connections":conns,
                "woken_per_conn":{"mean":woken},"eagain":losers,"eagain_losers":losers,
                "spurious":spurious,"lost_events":0,"tasks":tasks})
            .to_string(),
        );
        s
    }

    #[test]
    fn a_scenario_needing_a_newer_kernel_says_so_and_others_run_anywhere() {
        let multishot = find("io-uring-multishot").expect("scenario");
        assert_eq!(
            multishot.unsupported_on("5.10.0-32-cloud-amd64").as_deref(),
            Some(
                "a multishot io_uring accept needs Linux 5.19+, this kernel is \
                 5.10.0-32-cloud-amd64"
            )
        );
        assert!(multishot.unsupported_on("5.18.19").is_some());
        for ok in ["5.19.0", "6.1.0-57-cloud-amd64", "7.2.13+deb14-cloud-amd64"] {
            assert_eq!(multishot.unsupported_on(ok), None, "{ok}");
        }
        // A release that does not parse is not refused.
        assert_eq!(multishot.unsupported_on("custom"), None);
        let uring = find("io-uring").expect("scenario");
        assert_eq!(uring.unsupported_on("5.10.0-32-cloud-amd64"), None);
    }

    #[test]
    fn a_real_herd_passes_the_herd_bound() {
        let sc = find("epoll-per-worker").expect("scenario");
        let text = ndjson(250, 4.0, 300, 450, &[(10, 125), (11, 125)]);
        let o = outcome(&sc, &text, &[(10, 125), (11, 125)]);
        assert!(o.passed(), "{:?}", o.failures);
        assert!((o.eagain_losers_per_conn - 1.2).abs() < 1e-9);
    }

    #[test]
    fn too_few_woken_or_wasted_fails_the_herd_bound() {
        let sc = find("epoll-per-worker").expect("scenario");
        let o = outcome(&sc, &ndjson(250, 3.0, 300, 450, &[(10, 250)]), &[(10, 250)]);
        assert!(
            o.failures
                .iter()
                .any(|f| f.contains("mean woken 3.00 < 3.5")),
            "{:?}",
            o.failures
        );
        let o = outcome(&sc, &ndjson(250, 4.0, 100, 100, &[(10, 250)]), &[(10, 250)]);
        assert!(
            o.failures.iter().any(|f| f.contains("wasted")),
            "{:?}",
            o.failures
        );
    }

    #[test]
    fn exclusive_bound_and_count_mismatches_fail() {
        let sc = find("exclusive").expect("scenario");
        assert!(outcome(&sc, &ndjson(250, 1.0, 0, 0, &[(10, 250)]), &[(10, 250)]).passed());
        let o = outcome(&sc, &ndjson(250, 1.6, 0, 0, &[(10, 250)]), &[(10, 250)]);
        assert!(o.failures.iter().any(|f| f.contains("> 1.5")));
        // Under concurrent load the bound is not checked, the counts still are.
        let busy = Scenario {
            concurrency: 8,
            ..sc.clone()
        };
        let o = outcome(&busy, &ndjson(250, 1.6, 0, 0, &[(10, 250)]), &[(10, 250)]);
        assert!(o.passed(), "{:?}", o.failures);
        let o = outcome(&busy, &ndjson(250, 1.6, 0, 0, &[(10, 249)]), &[(10, 250)]);
        assert!(!o.passed());
        // Missing conn records.
        let o = outcome(&sc, &ndjson(249, 1.0, 0, 0, &[(10, 250)]), &[(10, 250)]);
        assert!(o.failures.iter().any(|f| f.contains("249 conn records")));
        // Tracer and server disagree on a task.
        let o = outcome(
            &sc,
            &ndjson(250, 1.0, 0, 0, &[(10, 249), (11, 1)]),
            &[(10, 250)],
        );
        assert!(
            o.failures.iter().any(|f| f.contains("task 10")),
            "{:?}",
            o.failures
        );
        assert!(
            o.failures.iter().any(|f| f.contains("task 11")),
            "{:?}",
            o.failures
        );
    }

    #[test]
    fn shared_epoll_accepts_one_to_n() {
        let sc = find("shared-epoll").expect("scenario");
        assert!(outcome(&sc, &ndjson(250, 2.3, 0, 0, &[]), &[]).passed());
        assert!(!outcome(&sc, &ndjson(250, 0.5, 0, 0, &[]), &[]).passed());
        assert!(!outcome(&sc, &ndjson(250, 4.5, 0, 0, &[]), &[]).passed());
    }

    fn run_of(backend: &str, woken: f64, failures: &[&str]) -> Outcome {
        Outcome {
            scenario: "shared-epoll".into(),
            backend: backend.into(),
            load_connections: 200,
            load_errors: 0,
            conn_records: 200,
            woken_mean: woken,
            eagain_per_conn: 0.0,
            eagain_losers_per_conn: 0.0,
            spurious_per_conn: 0.0,
            lost_events: 0,
            accepts_by_tid: BTreeMap::new(),
            failures: failures.iter().map(|f| f.to_string()).collect(),
            diagnostics: Vec::new(),
            skipped_by_program: BTreeMap::new(),
            explained: Vec::new(),
            tracer_stderr: String::new(),
            kernel: String::new(),
            woken_p99: 0,
            // 200 connections, each with the mean (truncated) as its count.
            conns: (0..200)
                .map(|i| ConnSample {
                    ts_ns: i,
                    accepted_by: None,
                    accept_latency_us: None,
                    peer: Some(format!("127.0.0.1:{}", 40000 + i)),
                    woken: woken as u32,
                    eagain: 0,
                    eagain_losers: 0,
                    spurious: 0,
                    flagged: false,
                })
                .collect(),
        }
    }

    /// A pair's runs: the reference with every connection's count `woken`,
    /// the other with the first `flagged` connections flagged and the
    /// `differ` after them one higher.
    pub(crate) fn pair_run(woken: f64, flagged: usize, differ: usize) -> Vec<Outcome> {
        let a = run_of("tracepoint", woken, &[]);
        let mut b = run_of("kprobe", woken, &[]);
        for c in b.conns.iter_mut().take(flagged) {
            c.flagged = true;
        }
        for c in b.conns.iter_mut().skip(flagged).take(differ) {
            c.woken += 1;
        }
        vec![a, b]
    }

    #[test]
    fn a_run_with_too_few_compared_connections_is_topped_up_by_another() {
        // 160 of 200 flagged: 40 compared, fewer than 50.
        let mut total = measure_agreement(&pair_run(3.0, 160, 0));
        let a = &mut total[0];
        assert_eq!((a.matched, a.flagged, a.min_compared), (40, 160, 50));
        assert!(a.needs_another_run());
        a.absorb(measure_agreement(&pair_run(2.0, 100, 0)).remove(0));
        assert!(!a.needs_another_run());
        a.judge();
        assert!(a.passed(), "{a:?}");
        assert_eq!((a.matched, a.flagged, a.runs), (140, 260, 2));
        // Means weighted by each run's connections: 200 each.
        assert!((a.reference_woken - 2.5).abs() < 1e-9);
        assert_eq!(
            a.line(),
            "PASS agree shared-epoll tracepoint~kprobe: woken/conn 2.50 vs 2.50 diff 0.0%, \
             same woken in 100.0% of 140 connections over 2 runs (260 flagged, not compared)"
        );
    }

    #[test]
    fn topping_up_stops_at_the_last_run_or_at_any_failure() {
        let mut a = measure_agreement(&pair_run(3.0, 190, 0)).remove(0);
        for _ in 1..AGREEMENT_MAX_RUNS {
            assert!(a.needs_another_run());
            a.absorb(measure_agreement(&pair_run(3.0, 190, 0)).remove(0));
        }
        assert!(
            !a.needs_another_run(),
            "{} runs at most",
            AGREEMENT_MAX_RUNS
        );
        a.judge();
        assert_eq!(
            a.failures,
            ["30 of 600 connections compared < 50 (570 flagged (possibly) incomplete)"]
        );
        // One differing connection in a short run: judged on that run, not
        // diluted by more.
        let mut a = measure_agreement(&pair_run(3.0, 160, 1)).remove(0);
        assert!(!a.needs_another_run());
        a.judge();
        assert_eq!(a.failures.len(), 2, "{:?}", a.failures);
        assert!(
            a.failures[1].starts_with("same woken count in 97.5% of 40"),
            "{:?}",
            a.failures
        );
        // A run failing its own checks is not run again either; its
        // failures keep their run number.
        let mut runs = pair_run(3.0, 160, 0);
        runs[1].failures.push("conns 199/200".into());
        let mut a = measure_agreement(&pair_run(3.0, 160, 0)).remove(0);
        a.absorb(measure_agreement(&runs).remove(0));
        assert!(!a.needs_another_run());
        a.judge();
        assert_eq!(a.failures[0], "run 2: kprobe: conns 199/200");
    }

    #[test]
    fn backends_within_ten_percent_agree() {
        let runs = [
            run_of("tracepoint", 2.50, &[]),
            run_of("kprobe", 2.40, &[]),
            run_of("fentry", 2.50, &[]),
        ];
        let a = agreement(&runs);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(Agreement::passed), "{a:?}");
        assert_eq!(
            (a[0].reference.as_str(), a[0].other.as_str()),
            ("tracepoint", "kprobe")
        );
        assert!((a[0].diff - 0.1 / 2.4).abs() < 1e-9);
        assert_eq!(
            a[0].line(),
            "PASS agree shared-epoll tracepoint~kprobe: woken/conn 2.50 vs 2.40 diff 4.2%, \
             same woken in 100.0% of 200 connections"
        );
        assert_eq!(a[1].diff, 0.0);
    }

    fn cmp(
        matched: u64,
        same: u64,
        only_first: u64,
        only_second: u64,
        flagged: u64,
    ) -> ConnComparison {
        ConnComparison {
            differing: Vec::new(),
            matched,
            same,
            only_first,
            only_second,
            flagged,
        }
    }

    fn sample(peer: Option<&str>, woken: u32) -> ConnSample {
        ConnSample {
            ts_ns: 0,
            accepted_by: None,
            accept_latency_us: None,
            peer: peer.map(str::to_owned),
            woken,
            eagain: 0,
            eagain_losers: 0,
            spurious: 0,
            flagged: false,
        }
    }

    /// Connections are compared one by one (matched by client address):
    /// equal means are not enough when individual counts differ.
    #[test]
    fn agreement_is_per_connection() {
        let a: Vec<ConnSample> = (0..100)
            .map(|i| sample(Some(&format!("127.0.0.1:{}", 40000 + i)), 4))
            .collect();
        let mut b = a.clone();
        assert_eq!(compare_conns(&a, &b), cmp(100, 100, 0, 0, 0));
        // Two connections differ, in opposite directions: means equal, 98% same.
        b[3].woken = 3;
        b[7].woken = 5;
        let c98 = compare_conns(&a, &b);
        assert_eq!(
            c98.differing,
            ["127.0.0.1:40003 4/3", "127.0.0.1:40007 4/5"]
        );
        assert_eq!(
            ConnComparison {
                differing: Vec::new(),
                ..c98
            },
            cmp(100, 98, 0, 0, 0)
        );
        let mut ra = run_of("tracepoint", 4.0, &[]);
        let mut rb = run_of("kprobe", 4.0, &[]);
        ra.conns = a.clone();
        rb.conns = b.clone();
        let ag = &agreement(&[ra.clone(), rb.clone()])[0];
        assert_eq!(ag.diff, 0.0);
        assert_eq!(
            ag.failures,
            [
                "same woken count in 98.0% of 100 connections < 99% (e.g. 127.0.0.1:40003 4/3, \
              127.0.0.1:40007 4/5)"
            ]
        );
        // One differing connection in 100 is within the bound.
        rb.conns[7].woken = 4;
        assert!(agreement(&[ra.clone(), rb.clone()])[0].passed());
        // A connection only one tracer saw fails, whatever the counts...
        rb.conns[3].woken = 4;
        rb.conns.pop();
        let ag = &agreement(&[ra.clone(), rb.clone()])[0];
        assert_eq!(ag.unmatched, 1);
        assert!(ag
            .failures
            .contains(&"1 connections reported by only one of the two".to_string()));
        // ...unless the tracer that lacks it reported a skipped arrival probe.
        rb.skipped_by_program
            .insert("kp_complete_hashdance".into(), 1);
        let ag = &agreement(&[ra.clone(), rb.clone()])[0];
        assert!(ag.passed(), "{:?}", ag.failures);
        // Skips in the other tracer explain nothing.
        rb.skipped_by_program.clear();
        ra.skipped_by_program.insert("btf_sk_data_ready".into(), 1);
        assert!(!agreement(&[ra.clone(), rb])[0].passed());
        // Records without a peer address are not compared.
        let c = [sample(None, 1), sample(Some("x:1"), 2)];
        assert_eq!(
            compare_conns(&c, &[sample(Some("x:1"), 2)]),
            cmp(1, 1, 0, 0, 0)
        );
        // A quarter of the connections must be compared (not flagged);
        // fewer and the comparison says too little.
        let flag = |n: usize| {
            let mut b = a.clone();
            for c in b.iter_mut().take(n) {
                c.flagged = true;
            }
            b
        };
        ra.skipped_by_program.clear();
        ra.conns = a.clone();
        let mut rb = run_of("kprobe", 4.0, &[]);
        rb.conns = flag(75);
        assert!(agreement(&[ra.clone(), rb.clone()])[0].passed());
        rb.conns = flag(76);
        assert_eq!(
            agreement(&[ra.clone(), rb])[0].failures,
            ["24 of 100 connections compared < 25 (76 flagged (possibly) incomplete)"]
        );
        // A flagged connection is matched, not compared.
        let mut flagged = sample(Some("x:1"), 9);
        flagged.flagged = true;
        assert_eq!(compare_conns(&c, &[flagged]), cmp(0, 0, 0, 0, 1));
    }

    /// A client port used twice in one run names two connections: they are
    /// paired in time order. (Keyed by address alone, the first use's
    /// record was compared with the second use's: CI of 87d8610, 5.10,
    /// epoll-per-worker tracepoint~kprobe, "2/4" three times, means equal.)
    #[test]
    fn a_reused_client_port_pairs_its_connections_in_time_order() {
        let at = |peer: &str, ts_ns: u64, woken: u32| ConnSample {
            ts_ns,
            ..sample(Some(peer), woken)
        };
        let a = [
            at("127.0.0.1:43128", 1_000_000_000, 2),
            at("127.0.0.1:5", 1_500_000_000, 1),
            at("127.0.0.1:43128", 4_000_000_000, 4),
        ];
        // The other tracer's records, in another order, timed 0.1-0.4 ms apart.
        let b = [
            at("127.0.0.1:43128", 4_000_400_000, 4),
            at("127.0.0.1:5", 1_500_100_000, 1),
            at("127.0.0.1:43128", 1_000_100_000, 2),
        ];
        assert_eq!(compare_conns(&a, &b), cmp(3, 3, 0, 0, 0));
        // A real difference on the second use is still seen, and named.
        let mut b2 = b.clone();
        b2[0].woken = 3;
        let c = compare_conns(&a, &b2);
        assert_eq!((c.matched, c.same), (3, 2));
        assert_eq!(c.differing, ["127.0.0.1:43128 4/3"]);
        // One tracer lacks the first use: the other use is paired with its
        // nearest record, the first counted as reported by one only.
        let c = compare_conns(&a, &b[..2]);
        assert_eq!(c, cmp(2, 2, 1, 0, 0));
        let c = compare_conns(&b[1..], &a);
        assert_eq!(c, cmp(2, 2, 0, 1, 0));
        // A use only the second tracer has, on an address the first never saw.
        let c = compare_conns(&a[..2], &[b[1].clone(), at("127.0.0.1:9", 7, 1)]);
        assert_eq!(c, cmp(1, 1, 1, 1, 0));
    }

    #[test]
    fn disagreement_or_a_failed_run_fails_the_agreement() {
        let a = agreement(&[run_of("tracepoint", 4.0, &[]), run_of("kprobe", 3.5, &[])]);
        assert!(!a[0].passed());
        assert!(a[0].line().starts_with("FAIL agree "), "{}", a[0].line());
        assert!(
            a[0].line().ends_with(
                "[means differ by 14.3% > 10%; same woken count in 0.0% of 200 connections < 99% \
                 (e.g. 127.0.0.1:40000 4/3, 127.0.0.1:40001 4/3, 127.0.0.1:40002 4/3, \
                 127.0.0.1:40003 4/3, 127.0.0.1:40004 4/3)]"
            ),
            "{}",
            a[0].line()
        );
        let a = agreement(&[
            run_of("tracepoint", 1.0, &["3 events lost"]),
            run_of("fentry", 1.0, &[]),
        ]);
        assert_eq!(a[0].failures, vec!["tracepoint: 3 events lost".to_string()]);
        // Nothing woken by one backend, something by the other: infinitely apart.
        let a = agreement(&[run_of("tracepoint", 1.0, &[]), run_of("kprobe", 0.0, &[])]);
        assert!(!a[0].passed());
        let a = agreement(&[run_of("tracepoint", 0.0, &[]), run_of("kprobe", 0.0, &[])]);
        assert!(a[0].passed());
        assert!(agreement(&[run_of("tracepoint", 1.0, &[])]).is_empty());
        assert!(agreement(&[]).is_empty());
    }

    #[test]
    fn conn_lines_kernel_and_p99_are_kept() {
        let sc = find("exclusive").expect("scenario");
        let text = format!(
            "{}\n{}\n{}\n",
            json!({"type":"conn","ts_ns":20,"accepted_by":{"pid":7,"tid":9,"comm":"w"},
                "accept_latency_us":150,"peer":"127.0.0.1:40001","woken":4,"eagain":2,
                "eagain_losers":1,"spurious":2}),
            json!({"type":"conn","ts_ns":10,"accepted_by":null,"accept_latency_us":null}),
            json!({"type":"summary","backend":"tracepoint","kernel":"6.18.44-x","connections":2,
                "woken_per_conn":{"mean":1.5,"p99":3},"eagain":0,"eagain_losers":0,
                "spurious":0,"lost_events":0,"tasks":[]}),
        );
        let load = json!({"connections": 2, "errors": 0});
        let o = outcome_from(&sc, "auto", &load, &text, &BTreeMap::new()).expect("outcome");
        assert_eq!(o.conn_records, 2);
        assert_eq!(o.kernel, "6.18.44-x");
        assert_eq!(o.woken_p99, 3);
        assert_eq!(
            o.conns,
            vec![
                ConnSample {
                    ts_ns: 20,
                    accepted_by: Some(9),
                    accept_latency_us: Some(150),
                    peer: Some("127.0.0.1:40001".into()),
                    woken: 4,
                    eagain: 2,
                    eagain_losers: 1,
                    spurious: 2,
                    flagged: false,
                },
                ConnSample {
                    ts_ns: 10,
                    accepted_by: None,
                    accept_latency_us: None,
                    peer: None,
                    woken: 0,
                    eagain: 0,
                    eagain_losers: 0,
                    spurious: 0,
                    flagged: false,
                },
            ]
        );
        // The selftest JSON stays short: conn samples are not serialized.
        let v = serde_json::to_value(&o).expect("serialize");
        assert!(v.get("conns").is_none());
        assert_eq!(v["kernel"], "6.18.44-x");
    }

    #[test]
    fn integrity_failures_ignore_the_bound() {
        let sc = find("exclusive").expect("scenario");
        // A herd in the exclusive scenario: the bound fails, the counts are clean.
        let mut o = outcome(&sc, &ndjson(250, 4.0, 0, 0, &[(10, 250)]), &[(10, 250)]);
        assert!(!o.passed());
        assert!(integrity_failures(&sc, &o).is_empty());
        o.lost_events = 2;
        o.load_errors = 1;
        let f = integrity_failures(&sc, &o);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].contains("1 errors") && f[1].contains("2 events lost"));
    }

    /// A shortfall is excused only as far as the tracer reported skipped runs
    /// of the programs that carry the missing facts.
    #[test]
    fn shortfalls_the_tracer_reported_are_explained_not_failed() {
        let sc = find("exclusive").expect("scenario");
        let base = || outcome(&sc, &ndjson(250, 1.0, 0, 0, &[(10, 249)]), &[(10, 250)]);
        let o = base();
        assert_eq!(
            integrity_failures(&sc, &o),
            ["task 10: server counted 250 accepts, tracer 249"]
        );
        let mut o = base();
        o.skipped_by_program.insert("tp_accept_exit".into(), 1);
        let (failures, explained) = integrity_check(&sc, &o);
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(
            explained,
            [
                "task 10: server counted 250 accepts, tracer 249: the kernel skipped 1 runs of \
              accept probes"
            ]
        );
        // Skips of a program that does not report accepts explain nothing.
        let mut o = base();
        o.skipped_by_program.insert("tp_poll_exit".into(), 5);
        assert_eq!(integrity_check(&sc, &o).0.len(), 1);
        // More accepts than the server made is never explained.
        let mut o = outcome(&sc, &ndjson(250, 1.0, 0, 0, &[(10, 251)]), &[(10, 250)]);
        o.skipped_by_program.insert("fx_inet_accept3".into(), 9);
        assert_eq!(integrity_check(&sc, &o).0.len(), 1);
        // Missing conn records: explained by as many skipped arrival probes.
        let mut o = outcome(&sc, &ndjson(248, 1.0, 0, 0, &[(10, 250)]), &[(10, 250)]);
        o.load_connections = 250;
        assert_eq!(
            integrity_failures(&sc, &o),
            ["248 conn records for 250 connections"]
        );
        o.skipped_by_program.insert("btf_sk_data_ready".into(), 2);
        let (failures, explained) = integrity_check(&sc, &o);
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(explained.len(), 1);
        o.skipped_by_program.insert("btf_sk_data_ready".into(), 1);
        assert_eq!(integrity_check(&sc, &o).0.len(), 1, "2 short, 1 skip");
    }

    #[test]
    fn missing_summary_is_an_error() {
        let sc = find("exclusive").expect("scenario");
        let load = json!({"connections": 1, "errors": 0});
        let err = outcome_from(&sc, "x", &load, "{\"type\":\"conn\"}\n", &BTreeMap::new())
            .expect_err("no summary");
        assert!(err.to_string().contains("no summary"));
    }
}
