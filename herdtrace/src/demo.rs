//! `herdtrace demo`: the built-in server in several models, each traced
//! while the built-in load generator drives it, then the models side by side.
use std::{
    io::{self, Write},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::{
    backend::BackendRequest,
    engine::Summary,
    report::verdict,
    serve::{model::Model, process::ServerProcess, TotalStats},
    stop,
    trace::{prepare, trace_session, EndReason, TargetSet, TraceArgs},
};

#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  sudo herdtrace demo\n  sudo herdtrace demo --models epoll-per-worker,shared-epoll --connections 1000"
)]
pub struct DemoArgs {
    /// Workers of the built-in server.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Connections per model.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Connections per second: moderate, so that workers are idle (asleep in
    /// epoll_wait) when each connection arrives, as on a real server most of the time.
    #[arg(long, default_value_t = 400)]
    pub rate: u32,
    /// Server models to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "epoll-per-worker,exclusive,reuseport"
    )]
    pub models: Vec<Model>,
    /// Probe set.
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendRequest,
    #[command(flatten)]
    pub log: crate::logging::LogArgs,
}

/// One model's result, for the side-by-side table.
struct Row {
    model: String,
    summary: Summary,
    server_accepts: Option<u64>,
    load_ok: Option<u64>,
}

/// Runs the load generator in the background; `done` flips when it ends.
fn start_load(port: u16, args: &DemoArgs, done: Arc<AtomicBool>, result: Arc<Mutex<Option<u64>>>) {
    let exe = std::env::current_exe();
    let (connections, rate) = (args.connections, args.rate);
    thread::spawn(move || {
        let ok = exe.ok().and_then(|exe| {
            Command::new(exe)
                .args([
                    "load",
                    "--addr",
                    &format!("127.0.0.1:{port}"),
                    "--connections",
                    &connections.to_string(),
                    "--rate",
                    &rate.to_string(),
                    "--concurrency",
                    "4",
                    "--json",
                ])
                .stderr(Stdio::null())
                .output()
                .ok()
        });
        let connections = ok.and_then(|o| {
            serde_json::from_slice::<serde_json::Value>(&o.stdout)
                .ok()
                .and_then(|v| v.get("connections").and_then(|c| c.as_u64()))
        });
        if let Ok(mut slot) = result.lock() {
            *slot = connections;
        }
        done.store(true, Ordering::SeqCst);
    });
}

fn run_model(model: Model, args: &DemoArgs, out: &mut impl Write) -> Result<Option<Row>> {
    let exe = std::env::current_exe().context("locating the herdtrace binary")?;
    let server = ServerProcess::start(&exe, model, args.workers, &[], true)?;
    let (pid, port) = (server.listening().pid, server.listening().port);
    writeln!(
        out,
        "\n=== {model}: {} workers, {} connections at {}/s on 127.0.0.1:{port} ===",
        args.workers, args.connections, args.rate
    )?;
    out.flush()?;
    let trace_args = TraceArgs {
        pids: vec![i64::from(pid)],
        backend: args.backend,
        port: Some(port),
        ..TraceArgs::default()
    };
    let targets = TargetSet::resolve(&trace_args.pids, &[])?;
    let prepared = prepare(&trace_args)?;
    let done = Arc::new(AtomicBool::new(false));
    let load_result = Arc::new(Mutex::new(None));
    let mut finished_at: Option<Instant> = None;
    let (summary, reason) = trace_session(
        &trace_args,
        &prepared,
        &targets,
        &mut *out,
        || start_load(port, args, done.clone(), load_result.clone()),
        || {
            if !done.load(Ordering::SeqCst) {
                return false;
            }
            // Let the last episodes settle before stopping.
            let at = *finished_at.get_or_insert_with(Instant::now);
            at.elapsed() >= Duration::from_millis(1500)
        },
    )?;
    // The server's own count, from its --stats (None if it printed none).
    let workers = server.stop()?;
    let server_accepts = (!workers.is_empty()).then(|| TotalStats::of(&workers).accepts);
    if let EndReason::Signal(_) = reason {
        return Ok(None);
    }
    let summary = summary.ok_or_else(|| anyhow!("output closed"))?;
    let load_ok = load_result.lock().ok().and_then(|g| *g);
    Ok(Some(Row {
        model: model.to_string(),
        summary,
        server_accepts,
        load_ok,
    }))
}

fn write_table(out: &mut impl Write, rows: &[Row]) -> io::Result<()> {
    writeln!(out, "\n=== side by side ===")?;
    writeln!(
        out,
        "{:<18} {:>6} {:>11} {:>9} {:>9} {:>14} {:>12} {:>8}  verdict",
        "model", "conns", "woken/conn", "max", "eagain", "eagain_losers", "spurious", "accepts"
    )?;
    for r in rows {
        let t = &r.summary.totals;
        let per = |v: u64| {
            if t.connections == 0 {
                0.0
            } else {
                v as f64 / t.connections as f64
            }
        };
        let verdict = verdict::classify(&r.summary).label();
        writeln!(
            out,
            "{:<18} {:>6} {:>11.2} {:>9} {:>9.2} {:>14.2} {:>12.2} {:>8}  {verdict}",
            r.model,
            t.connections,
            t.woken_mean(),
            r.summary.woken_per_conn.max,
            per(t.eagain),
            per(t.eagain_losers),
            per(t.spurious),
            r.server_accepts.map_or("?".into(), |a| a.to_string()),
        )?;
    }
    writeln!(
        out,
        "(per connection; eagain_losers = EAGAIN from tasks that accepted nothing; \
         accepts = the server's own count)"
    )?;
    for r in rows {
        if let (Some(ok), Some(acc)) = (r.load_ok, r.server_accepts) {
            if ok != acc {
                writeln!(out, "note: {}: the load generator completed {ok} connections, the server accepted {acc}", r.model)?;
            }
        }
    }
    Ok(())
}

pub fn demo(args: DemoArgs) -> Result<i32> {
    if args.models.is_empty() {
        bail!("--models needs at least one model");
    }
    stop::install()?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut rows = Vec::new();
    for model in &args.models {
        match run_model(*model, &args, &mut out)? {
            Some(row) => rows.push(row),
            None => break, // Ctrl-C: show what we have
        }
    }
    write_table(&mut out, &rows)?;
    Ok(0)
}
