//! `herdtrace selftest` (hidden; built with the `test-hooks` feature): the
//! end-to-end scenarios of [`crate::scenario`] run from the binary itself, as
//! `cargo xtask vmtest` does inside each QEMU guest, one result line each.
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::backend::BackendRequest;
use crate::scenario::{
    all, find, measure_agreement, run_together, run_with, Agreement, Outcome, Scenario,
};

/// `herdtrace selftest`: runs scenarios and prints one result line each.
#[derive(Debug, clap::Args)]
pub struct SelftestArgs {
    /// Backends to test, comma-separated (auto, fentry, kprobe, tracepoint), or
    /// `working`: every backend this kernel supports (the others are printed as SKIP).
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Also run each scenario once with all the tested backends attached
    /// together and check that they agree (PASS/FAIL agree lines).
    #[arg(long)]
    pub agree: bool,
    /// Only these scenarios (default: all).
    #[arg(long = "scenario")]
    pub scenarios: Vec<String>,
    /// One JSON object per scenario instead of text.
    #[arg(long)]
    pub json: bool,
    /// Override the scenarios' connection rate (per second); slower machines
    /// (QEMU's software emulation) need a lower rate to keep workers idle.
    #[arg(long)]
    pub rate: Option<u32>,
    /// Override the scenarios' number of connections.
    #[arg(long)]
    pub connections: Option<u32>,
    /// Connections the load generator keeps in flight (default 2).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Only the runs with the first backend and each other one attached
    /// together (with `--agree`), not one run per backend first (a single
    /// available backend still runs alone).
    #[arg(long, requires = "agree")]
    pub agree_only: bool,
    /// Extra argument for the tracer (repeatable), e.g. `--tracer-arg=--chain-window-us=5000`.
    #[arg(long = "tracer-arg", allow_hyphen_values = true)]
    pub tracer_args: Vec<String>,
}

pub fn run(args: SelftestArgs) -> Result<i32> {
    let exe: PathBuf = std::env::current_exe().context("locating the herdtrace binary")?;
    let chosen: Vec<Scenario> = if args.scenarios.is_empty() {
        all()
    } else {
        args.scenarios
            .iter()
            .map(|n| find(n).ok_or_else(|| anyhow!("unknown scenario {n:?}")))
            .collect::<Result<_>>()?
    };
    let chosen: Vec<Scenario> = chosen
        .into_iter()
        .map(|mut sc| {
            sc.rate = args.rate.unwrap_or(sc.rate);
            sc.connections = args.connections.unwrap_or(sc.connections);
            sc.concurrency = args.concurrency.unwrap_or(sc.concurrency);
            sc
        })
        .collect();
    let BackendSelection {
        run: backends,
        unavailable,
    } = expand_backends(&args.backend)?;
    // With a single backend there is nothing to pair it with: it runs alone.
    let alone = !args.agree_only || backends.len() < 2;
    let release = crate::kernel::release()?;
    let mut failed = 0;
    for sc in &chosen {
        // Not a skipped test but one that does not apply: `N/A`, which CI
        // does not count, unlike `SKIP` (a backend the kernel refused).
        if let Some(why) = sc.unsupported_on(&release) {
            println!("N/A {}: {why}", sc.name);
            continue;
        }
        for (backend, reason) in &unavailable {
            println!("SKIP {} {backend}: unavailable: {reason}", sc.name);
        }
        for backend in backends.iter().filter(|_| alone) {
            let outcome = match run_with(&exe, backend, sc, &args.tracer_args) {
                Ok(o) => o,
                Err(e) => {
                    failed += 1;
                    println!("FAIL {} {backend}: {e:#}", sc.name);
                    continue;
                }
            };
            if !outcome.passed() {
                failed += 1;
            }
            print_outcome(&outcome, args.json)?;
        }
        // The first backend (the tracepoint one by convention) against each
        // other one, two tracers per run: as a user would run them, not
        // three tracers' programs competing for each event.
        let pairs = backends
            .split_first()
            .map(|(first, rest)| rest.iter().map(|o| [first.as_str(), o.as_str()]).collect())
            .unwrap_or_else(Vec::new);
        for names in pairs.iter().filter(|_| args.agree) {
            match agree_runs(|| run_together(&exe, names, sc, &args.tracer_args)) {
                Ok(lines) => {
                    for mut a in lines {
                        a.judge();
                        if !a.passed() {
                            failed += 1;
                        }
                        if args.json {
                            println!("{}", serde_json::to_string(&a).context("encoding")?);
                        } else {
                            println!("{}", a.line());
                        }
                    }
                }
                Err(e) => {
                    failed += 1;
                    println!("FAIL agree {} {}: {e:#}", sc.name, names.join("~"));
                }
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Runs one scenario with two tracers attached (`run`) until its agreement
/// compares enough connections, at most `AGREEMENT_MAX_RUNS` times: a run
/// whose connections were mostly flagged is too small a sample, not a
/// disagreement, and the next run's connections are added to it. Every
/// disagreement of every run stays in the totals.
fn agree_runs(mut run: impl FnMut() -> Result<Vec<Outcome>>) -> Result<Vec<Agreement>> {
    let mut total = measure_agreement(&run()?);
    while let Some(short) = total.iter().find(|a| a.needs_another_run()) {
        println!(
            "note: agree {} {}~{}: {} of {} connections compared after {} run(s), fewer than {}: running the scenario again",
            short.scenario,
            short.reference,
            short.other,
            short.matched,
            short.matched + short.flagged,
            short.runs,
            short.min_compared
        );
        let next = measure_agreement(&run()?);
        for (a, n) in total.iter_mut().zip(next) {
            a.absorb(n);
        }
    }
    Ok(total)
}

/// The backends a selftest runs, and those it skips with the reason.
struct BackendSelection {
    run: Vec<String>,
    unavailable: Vec<(String, String)>,
}

/// `--backend` → a [`BackendSelection`]. `working` asks the kernel
/// (tracepoint first: it is the agreement reference).
fn expand_backends(spec: &str) -> Result<BackendSelection> {
    if spec != "working" {
        let list: Vec<String> = spec
            .split(',')
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if list.is_empty() {
            bail!("--backend: no backend given");
        }
        return Ok(BackendSelection {
            run: list,
            unavailable: Vec::new(),
        });
    }
    let facts = crate::check::gather_facts();
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for (name, req) in [
        ("tracepoint", BackendRequest::Tracepoint),
        ("kprobe", BackendRequest::Kprobe),
        ("fentry", BackendRequest::Fentry),
    ] {
        match crate::backend::choose(req, &facts) {
            Ok(_) => ok.push(name.to_string()),
            Err(reason) => skipped.push((name.to_string(), reason)),
        }
    }
    if ok.is_empty() {
        bail!("no backend works on this kernel");
    }
    Ok(BackendSelection {
        run: ok,
        unavailable: skipped,
    })
}

/// What the kernel denied the tracer, from its `warning:` lines, each cut to
/// its subject (`tracepoint sock:sk_data_ready missing (added in 6.6)`): the
/// report shows these beside the figures, so a gap is never a silent pass.
fn limits(tracer_stderr: &str) -> Vec<String> {
    tracer_stderr
        .lines()
        .filter_map(|l| l.strip_prefix("herdtrace: warning: "))
        .map(|w| w.split(": ").next().unwrap_or(w).trim().to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

fn print_outcome(outcome: &Outcome, json: bool) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(outcome).context("encoding the outcome")?
        );
        return Ok(());
    }
    let limits = limits(&outcome.tracer_stderr);
    println!(
        "{} {} {}: woken/conn {:.2} eagain/conn {:.2} losers/conn {:.2} spurious/conn {:.2} conns {}/{} lost {}{}{}",
        if outcome.passed() { "PASS" } else { "FAIL" },
        outcome.scenario,
        outcome.backend,
        outcome.woken_mean,
        outcome.eagain_per_conn,
        outcome.eagain_losers_per_conn,
        outcome.spurious_per_conn,
        outcome.conn_records,
        outcome.load_connections,
        outcome.lost_events,
        if limits.is_empty() {
            String::new()
        } else {
            format!(" {{{}}}", limits.join("; "))
        },
        if outcome.failures.is_empty() && outcome.explained.is_empty() {
            String::new()
        } else if outcome.failures.is_empty() {
            format!(" (reported by the tracer: {})", outcome.explained.join("; "))
        } else if outcome.diagnostics.is_empty() {
            format!(" [{}]", outcome.failures.join("; "))
        } else {
            format!(
                " [{}] (tracer: {})",
                outcome.failures.join("; "),
                outcome.diagnostics.join(", ")
            )
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_runs_again_only_while_too_few_connections_were_compared() {
        use crate::scenario::tests::pair_run;
        // Mostly flagged, then a fuller run: two runs, then it stops.
        let mut flagged = [190, 100, 0].into_iter();
        let mut runs = 0;
        let lines = agree_runs(|| {
            runs += 1;
            Ok(pair_run(
                3.0,
                flagged.next().expect("at most three runs"),
                0,
            ))
        })
        .expect("runs");
        assert_eq!((runs, lines[0].runs, lines[0].matched), (2, 2, 110));
        // A full first run: one run.
        let mut runs = 0;
        agree_runs(|| {
            runs += 1;
            Ok(pair_run(3.0, 0, 0))
        })
        .expect("runs");
        assert_eq!(runs, 1);
        // A run that fails to run fails the line.
        let mut first = true;
        let err = agree_runs(|| {
            if std::mem::take(&mut first) {
                Ok(pair_run(3.0, 190, 0))
            } else {
                Err(anyhow!("the server did not start"))
            }
        })
        .expect_err("the second run failed");
        assert_eq!(format!("{err:#}"), "the server did not start");
    }

    #[test]
    fn limits_are_the_subjects_of_the_tracer_warnings() {
        let stderr = "herdtrace: backend tracepoint\n\
            herdtrace: warning: tracepoint sock:sk_data_ready missing (added in 6.6): arrivals come from x\n\
            herdtrace: warning: ep_send_events cannot be probed (inlined or missing): wakeups\n\
            herdtrace: tracing 5 tasks in 1 process with the tracepoint backend; Ctrl-C to end\n";
        assert_eq!(
            limits(stderr),
            vec![
                "tracepoint sock:sk_data_ready missing (added in 6.6)".to_string(),
                "ep_send_events cannot be probed (inlined or missing)".to_string()
            ]
        );
        assert!(limits("herdtrace: backend fentry\n").is_empty());
    }

    #[test]
    fn backend_lists_are_split_and_empty_ones_refused() {
        let sel = expand_backends("tracepoint, kprobe,fentry").expect("list");
        assert_eq!(sel.run, vec!["tracepoint", "kprobe", "fentry"]);
        assert!(sel.unavailable.is_empty());
        assert!(expand_backends(" , ").is_err());
    }
}
