//! Prometheus exporter mode (`herdtrace --pid PID --prometheus ADDR`): every
//! reconstructed connection updates counters and histograms
//! ([`metrics::Collector`], a [`crate::pipeline::Observer`] on the trace
//! pipeline) that [`http`] serves on `/metrics` with hyper, on the trace
//! session's tokio runtime, in the OpenMetrics text format, encoded by
//! `prometheus-client`.
use std::net::SocketAddr;

use anyhow::{Context as _, Result};

use crate::pipeline::Observer;

pub mod fold;
pub mod http;
pub mod metrics;
#[cfg(test)]
mod sample;

pub use metrics::Collector;

/// A bound `/metrics` endpoint and the collector that feeds it.
pub struct Exporter {
    collector: Collector,
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

impl Exporter {
    /// Binds `addr` (a port in use is a one-line error); nothing is served
    /// until [`serve`](Self::serve).
    pub fn bind(addr: SocketAddr) -> Result<Exporter> {
        let listener = http::bind(addr)?;
        let addr = listener
            .local_addr()
            .with_context(|| format!("--prometheus {addr}: reading the bound address"))?;
        Ok(Exporter {
            collector: Collector::new(),
            listener,
            addr,
        })
    }

    /// The address actually bound (port 0 picks a free one).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Labels `herdtrace_build_info` with the run's backend and kernel.
    pub fn set_run_info(&mut self, info: &crate::report::RunInfo) {
        self.collector.set_run_info(info);
    }

    /// Zero accept series for the workers /proc named (see
    /// [`Collector::set_known_tasks`]).
    pub fn set_known_tasks(&mut self, tasks: &[crate::engine::KnownTask]) {
        self.collector.set_known_tasks(tasks);
    }

    /// Tasks outside the trace waiting on its listeners (a gauge).
    pub fn set_untraced(&mut self, tasks: usize) {
        self.collector.set_untraced(tasks);
    }

    /// Serves `/metrics` on the current tokio runtime (the trace session's)
    /// until it ends; returns the observer to hand to the trace pipeline.
    pub fn serve(self) -> Result<Box<dyn Observer + Send>> {
        http::spawn(self.listener, self.collector.registry())?;
        Ok(Box::new(self.collector))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ConnRecord, TaskRef};
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpStream};
    use std::time::Duration;

    fn get_metrics(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .expect("write");
        let mut r = String::new();
        s.read_to_string(&mut r).expect("read");
        r
    }

    #[test]
    fn records_given_to_the_observer_show_in_the_served_metrics() {
        let ex = Exporter::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("bind");
        let addr = ex.local_addr();
        assert_ne!(addr.port(), 0);
        let mut obs = http::tests::in_runtime_thread(move || ex.serve().expect("serve"));
        let before = get_metrics(addr);
        assert!(!before.contains("herdtrace_connections_total{"), "{before}");
        for _ in 0..3 {
            obs.on_conn(&ConnRecord {
                ts_ns: 0,
                port: 8080,
                peer: None,
                accepted_by: Some(TaskRef {
                    pid: 42,
                    tid: 42,
                    comm: "nginx".into(),
                }),
                woken: 4,
                returned: 1,
                spurious: 3,
                eagain: 3,
                eagain_losers: 3,
                epolls: 4,
                accept_latency_us: Some(12),
                incomplete: false,
                possibly_incomplete: false,
                netns: 0,
            });
        }
        obs.on_lost_total(2);
        let s = sample::parse(
            get_metrics(addr)
                .split_once("\r\n\r\n")
                .expect("head and body")
                .1,
        );
        let l = [("port", "8080"), ("process", "nginx")];
        assert_eq!(
            sample::value(&s, "herdtrace_connections_total", &l),
            Some(3.0)
        );
        assert_eq!(
            sample::value(&s, "herdtrace_woken_per_connection_sum", &l),
            Some(12.0)
        );
        assert_eq!(
            sample::value(&s, "herdtrace_lost_events_total", &[]),
            Some(2.0)
        );
    }
}
