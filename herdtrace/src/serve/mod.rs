//! `herdtrace serve`: a small epoll test server whose accept model is chosen
//! on the command line, so the tracer has a known herd to measure.
//!
//! Layout: `model` (the accept models), `sys`/`signals` (libc wrappers),
//! `http` (request/response bytes), `conn` (one connection), `worker` (the
//! worker loops), `uring` (the io-uring model's ring), `slots` (shared
//! counters), `lines` (the exact output lines), `supervise` (fork/threads,
//! shutdown).
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

pub mod child;
pub(crate) mod conn;
pub(crate) mod http;
pub mod lines;
pub(crate) mod model;
pub(crate) mod process;
pub(crate) mod signals;
pub(crate) mod slots;
pub(crate) mod supervise;
pub mod sys;
pub(crate) mod tokio_workers;
pub(crate) mod uring;
pub(crate) mod worker;

pub use lines::{StatsLine, TotalStats, WorkerStats};
pub use model::Model;

/// The listening line with its model read as a [`Model`] (an unknown name
/// is not a listening line).
pub type ListeningLine = lines::ListeningLine<Model>;

const EXAMPLES: &str = "\
Examples:
  herdtrace serve --model epoll-per-worker --workers 4 --stats
  herdtrace serve --model shared-epoll --workers 8 --edge-triggered
  herdtrace serve --model exclusive --threads --port 8080
  herdtrace serve --model epoll-per-worker --accept-batch 100   (lighttpd-style accept loop)
  herdtrace serve --model reuseport --work-us 200
  herdtrace serve --model tokio --workers 4 --stats    (a typical Rust async server)
  herdtrace serve --model io-uring --threads           (accepts through io_uring)
  herdtrace serve --model io-uring --multishot         (one multishot accept per ring, 5.19+)

The first stdout line is `listening on 127.0.0.1:<port> pid <pid> model <model> workers <n>`.
SIGTERM, SIGINT or SIGHUP stop every worker; --stats then prints one line per worker
(`stats worker <idx> pid <pid> tid <tid> accepts <n> eagain <n> empty_waits <n>`) and
`stats total accepts <n> eagain <n> empty_waits <n>`. In the tokio models a worker is a
runtime worker thread, counted for the accepts it made; tokio retries EAGAIN inside
TcpListener::accept, so their eagain stays 0 (the tracer counts it).";

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct ServeArgs {
    /// Accept model.
    #[arg(long, value_enum, default_value = "epoll-per-worker")]
    pub model: Model,
    /// Number of workers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: u16,
    /// Run workers as threads of one process instead of forked processes
    /// (shared-epoll always uses threads).
    #[arg(long)]
    pub threads: bool,
    /// Register the listener with EPOLLET. Workers then accept until EAGAIN
    /// (an edge is not repeated for connections still queued), whatever --accept-batch says.
    #[arg(long)]
    pub edge_triggered: bool,
    /// Accept in a loop until EAGAIN or N accepts per readiness event (lighttpd uses 100);
    /// 1 = one accept per event.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub accept_batch: u32,
    /// TCP port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Listen on [::1] instead of 127.0.0.1.
    #[arg(long)]
    pub ipv6: bool,
    /// Busy-loop this many microseconds per request (simulated work).
    #[arg(long, default_value_t = 0, value_name = "US")]
    pub work_us: u64,
    /// listen() backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(i32).range(1..))]
    pub backlog: i32,
    /// epoll_wait timeout; unset = wait forever. With a timeout, idle workers
    /// return with 0 events and count `empty_waits` (the kernel never returns 0
    /// events to an infinite wait: a wake that finds nothing sleeps again inside it).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u32).range(0..=i32::MAX as i64))]
    pub wait_timeout_ms: Option<u32>,
    /// io-uring: arm one multishot accept per ring for good
    /// (IORING_ACCEPT_MULTISHOT, Linux 5.19+), as servers that set up their
    /// accepts at start-up do, instead of one accept per connection.
    #[arg(long)]
    pub multishot: bool,
    /// At exit, print per-worker and total counters (see below).
    #[arg(long)]
    pub stats: bool,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub model: Model,
    pub workers: usize,
    /// Workers are threads (always for shared-epoll).
    pub threads: bool,
    pub edge_triggered: bool,
    pub accept_batch: usize,
    pub port: u16,
    pub ipv6: bool,
    pub work: Duration,
    pub backlog: i32,
    pub wait_timeout_ms: Option<u32>,
    /// io-uring: a multishot accept per ring.
    pub multishot: bool,
    pub stats: bool,
}

impl Config {
    /// Checks the combinations clap cannot express.
    pub fn from_args(a: &ServeArgs) -> anyhow::Result<Self> {
        if a.multishot && a.model != Model::IoUring {
            anyhow::bail!("--multishot is an io-uring option (not {})", a.model);
        }
        if a.model.is_tokio() {
            if a.edge_triggered {
                anyhow::bail!(
                    "--edge-triggered: the tokio models are always edge-triggered (tokio registers every socket with EPOLLET)"
                );
            }
            if a.accept_batch > 1 {
                anyhow::bail!("--accept-batch: the tokio models accept one connection per call of TcpListener::accept");
            }
            if a.wait_timeout_ms.is_some() {
                anyhow::bail!("--wait-timeout-ms: in the tokio models the runtime decides how long it waits in epoll_wait");
            }
        } else if !a.model.uses_epoll() {
            let m = a.model;
            if a.edge_triggered {
                anyhow::bail!("--edge-triggered needs an epoll model (not {m})");
            }
            if a.accept_batch > 1 {
                anyhow::bail!("--accept-batch needs an epoll model ({m} accepts one at a time)");
            }
            if a.wait_timeout_ms.is_some() {
                anyhow::bail!("--wait-timeout-ms needs an epoll model ({m} has no epoll_wait)");
            }
        }
        Ok(Self {
            model: a.model,
            workers: usize::from(a.workers),
            threads: a.threads || a.model.threads_only(),
            edge_triggered: a.edge_triggered,
            accept_batch: a.accept_batch as usize,
            port: a.port,
            ipv6: a.ipv6,
            work: Duration::from_micros(a.work_us),
            backlog: a.backlog,
            wait_timeout_ms: a.wait_timeout_ms,
            multishot: a.multishot,
            stats: a.stats,
        })
    }

    /// The events the listener is registered with.
    pub fn epoll_events(&self) -> u32 {
        let mut ev = libc::EPOLLIN as u32;
        if self.edge_triggered {
            ev |= libc::EPOLLET as u32;
        }
        if self.model == Model::Exclusive {
            ev |= libc::EPOLLEXCLUSIVE as u32;
        }
        ev
    }

    /// Accept limit per readiness event; None = until EAGAIN (edge-triggered).
    pub fn batch(&self) -> Option<usize> {
        if self.edge_triggered {
            None
        } else {
            Some(self.accept_batch)
        }
    }

    /// The epoll_wait timeout argument (-1 = forever).
    pub fn wait_timeout_ms(&self) -> i32 {
        self.wait_timeout_ms
            .map_or(-1, |t| i32::try_from(t).unwrap_or(i32::MAX))
    }

    /// Listening sockets: one per worker with reuseport, else one.
    fn open_listeners(&self) -> anyhow::Result<Vec<OwnedFd>> {
        let nonblocking = self.model.uses_epoll() || self.model.is_tokio();
        let host = lines::loopback(self.ipv6);
        let addr = format!("{host}:{}", self.port);
        if !self.model.reuseport() {
            let l = sys::listener(self.port, self.backlog, false, nonblocking, self.ipv6)
                .with_context(|| format!("listen on {addr}"))?;
            return Ok(vec![l]);
        }
        let first = sys::listener(self.port, self.backlog, true, nonblocking, self.ipv6)
            .with_context(|| format!("listen on {addr}"))?;
        // With port 0 the others join the port the kernel picked for the first.
        let port = sys::local_port(first.as_raw_fd()).context("getsockname")?;
        let mut all = vec![first];
        for i in 1..self.workers {
            let l = sys::listener(port, self.backlog, true, nonblocking, self.ipv6)
                .with_context(|| format!("listen socket {i} on {host}:{port} (SO_REUSEPORT)"))?;
            all.push(l);
        }
        Ok(all)
    }
}

/// Runs the server until SIGTERM/SIGINT/SIGHUP; returns the exit code.
pub fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let cfg = Config::from_args(&args)?;
    signals::install_handlers().context("install signal handlers")?;
    // Stop signals are taken synchronously by the supervisor (sigtimedwait);
    // threads and forks inherit the mask.
    signals::block(&signals::supervisor_set()).context("block signals")?;
    let listeners = cfg.open_listeners()?;
    let port = sys::local_port(listeners[0].as_raw_fd()).context("getsockname")?;
    let slots = Arc::new(slots::Slots::new(cfg.workers).context("mmap worker counters")?);
    let line = ListeningLine {
        ipv6: cfg.ipv6,
        port,
        pid: sys::getpid(),
        model: cfg.model,
        workers: cfg.workers,
    };
    let code = if cfg.model.is_tokio() {
        tokio_workers::run(&cfg, listeners, &slots, line)?
    } else if cfg.threads {
        let shared_epoll = if cfg.model == Model::SharedEpoll {
            let ep = sys::epoll_create().context("epoll_create1")?;
            sys::epoll_add(ep.as_raw_fd(), listeners[0].as_raw_fd(), cfg.epoll_events())
                .context("epoll_ctl")?;
            Some(ep)
        } else {
            None
        };
        supervise::threads(&cfg, listeners, shared_epoll, &slots, line)?
    } else {
        supervise::processes(&cfg, listeners, &slots, line)?
    };
    if cfg.stats {
        print_stats(&slots.snapshot()).context("write --stats")?;
    }
    Ok(code)
}

fn print_stats(workers: &[WorkerStats]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for w in workers {
        writeln!(out, "{w}")?;
    }
    writeln!(out, "{}", TotalStats::of(workers))?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map(|c| c.serve)
    }

    fn config(args: &[&str]) -> anyhow::Result<Config> {
        Config::from_args(&parse(args).expect("valid arguments"))
    }

    #[test]
    fn defaults() {
        let c = config(&[]).expect("defaults are valid");
        assert_eq!(
            c,
            Config {
                model: Model::EpollPerWorker,
                workers: 4,
                threads: false,
                edge_triggered: false,
                accept_batch: 1,
                port: 0,
                ipv6: false,
                work: Duration::ZERO,
                backlog: 4096,
                wait_timeout_ms: None,
                multishot: false,
                stats: false,
            }
        );
        assert_eq!(c.batch(), Some(1));
        assert_eq!(c.wait_timeout_ms(), -1);
        assert_eq!(c.epoll_events(), libc::EPOLLIN as u32);
    }

    #[test]
    fn every_option_is_read() {
        let c = config(&[
            "--model",
            "exclusive",
            "--workers",
            "8",
            "--threads",
            "--edge-triggered",
            "--accept-batch",
            "100",
            "--port",
            "8080",
            "--work-us",
            "250",
            "--backlog",
            "128",
            "--wait-timeout-ms",
            "50",
            "--stats",
        ])
        .expect("valid");
        assert_eq!(c.model, Model::Exclusive);
        assert_eq!(c.workers, 8);
        assert!(c.threads && c.edge_triggered && c.stats);
        assert_eq!(c.accept_batch, 100);
        assert_eq!(c.port, 8080);
        assert_eq!(c.work, Duration::from_micros(250));
        assert_eq!(c.backlog, 128);
        assert_eq!(c.wait_timeout_ms(), 50);
        // Edge-triggered drains the queue whatever the batch says.
        assert_eq!(c.batch(), None);
        assert_eq!(
            c.epoll_events(),
            libc::EPOLLIN as u32 | libc::EPOLLET as u32 | libc::EPOLLEXCLUSIVE as u32
        );
    }

    #[test]
    fn shared_epoll_is_always_threads_and_never_exclusive() {
        let c = config(&["--model", "shared-epoll"]).expect("valid");
        assert!(c.threads);
        assert_eq!(c.epoll_events() & libc::EPOLLEXCLUSIVE as u32, 0);
        assert!(!config(&["--model", "reuseport"]).expect("valid").threads);
    }

    #[test]
    fn batch_without_edge() {
        assert_eq!(
            config(&["--accept-batch", "8"]).expect("valid").batch(),
            Some(8)
        );
    }

    #[test]
    fn bad_values_are_clap_errors() {
        for bad in [
            &["--workers", "0"][..],
            &["--workers", "1025"],
            &["--workers", "-1"],
            &["--model", "bogus"],
            &["--accept-batch", "0"],
            &["--port", "70000"],
            &["--backlog", "0"],
            &["--work-us", "x"],
            &["--wait-timeout-ms", "-5"],
            &["--bogus"],
        ] {
            let err = parse(bad).expect_err(&format!("{bad:?} must be rejected"));
            assert_ne!(err.kind(), clap::error::ErrorKind::DisplayHelp, "{bad:?}");
        }
    }

    #[test]
    fn tokio_models_are_threads_and_reject_epoll_options() {
        for model in ["tokio", "tokio-reuseport"] {
            let c = config(&[
                "--model",
                model,
                "--workers",
                "3",
                "--work-us",
                "50",
                "--stats",
            ])
            .expect("valid");
            assert!(c.threads && c.stats, "{model}");
            assert_eq!((c.workers, c.work), (3, Duration::from_micros(50)));
            for (bad, says) in [
                (&["--edge-triggered"][..], "always edge-triggered"),
                (&["--accept-batch", "2"], "one connection per call"),
                (&["--wait-timeout-ms", "10"], "the runtime decides"),
            ] {
                let mut args = vec!["--model", model];
                args.extend_from_slice(bad);
                let err = config(&args).expect_err("rejected");
                assert!(err.to_string().contains(says), "{model} {bad:?}: {err}");
            }
        }
    }

    #[test]
    fn blocking_accept_and_io_uring_reject_epoll_options() {
        for model in ["blocking-accept", "io-uring"] {
            let c = config(&["--model", model]).expect("valid");
            assert!(!c.threads, "{model} forks by default");
            assert!(
                config(&["--model", model, "--threads"])
                    .expect("valid")
                    .threads
            );
            for bad in [
                &["--edge-triggered"][..],
                &["--accept-batch", "2"],
                &["--wait-timeout-ms", "10"],
            ] {
                let mut args = vec!["--model", model];
                args.extend_from_slice(bad);
                let err = config(&args).expect_err("rejected").to_string();
                assert!(err.contains("epoll model") && err.contains(model), "{err}");
            }
        }
    }

    #[test]
    fn multishot_is_an_io_uring_option() {
        assert!(
            config(&["--model", "io-uring", "--multishot"])
                .expect("valid")
                .multishot
        );
        assert!(!config(&["--model", "io-uring"]).expect("valid").multishot);
        let err = config(&["--model", "exclusive", "--multishot"])
            .expect_err("rejected")
            .to_string();
        assert_eq!(err, "--multishot is an io-uring option (not exclusive)");
    }

    /// io_uring's accept on an O_NONBLOCK listener can complete with -EAGAIN
    /// instead of waiting: the model's listener blocks.
    #[test]
    fn io_uring_listener_is_blocking() {
        let c = config(&["--model", "io-uring", "--workers", "1"]).expect("valid");
        let ls = c.open_listeners().expect("listen");
        assert_eq!(ls.len(), 1);
        // SAFETY: F_GETFL on an fd we own.
        let fl = unsafe { libc::fcntl(ls[0].as_raw_fd(), libc::F_GETFL) };
        assert!(fl >= 0 && fl & libc::O_NONBLOCK == 0, "flags {fl:#x}");
    }
}
