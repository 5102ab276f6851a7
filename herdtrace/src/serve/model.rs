//! The accept models the server can run.
use std::fmt;
use std::str::FromStr;

/// How workers wait for and take connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Model {
    /// One listening socket, each worker its own epoll watching it (the classic herd).
    EpollPerWorker,
    /// One epoll instance shared by all worker threads.
    SharedEpoll,
    /// As epoll-per-worker, registered with EPOLLEXCLUSIVE.
    Exclusive,
    /// One SO_REUSEPORT listening socket and one epoll per worker.
    Reuseport,
    /// Workers blocked in accept() on the shared socket, no epoll.
    BlockingAccept,
    /// Each worker its own io_uring, one IORING_OP_ACCEPT at a time on the
    /// shared socket (no syscall accept).
    IoUring,
    /// A multi-threaded tokio runtime (one worker thread per worker): one
    /// task accepts from a tokio TcpListener, one task per connection.
    Tokio,
    /// As tokio, with one SO_REUSEPORT listener (and accept task) per worker.
    TokioReuseport,
}

impl Model {
    pub const ALL: [Model; 8] = [
        Model::EpollPerWorker,
        Model::SharedEpoll,
        Model::Exclusive,
        Model::Reuseport,
        Model::BlockingAccept,
        Model::IoUring,
        Model::Tokio,
        Model::TokioReuseport,
    ];

    /// The name used on the command line and in the listening line.
    pub fn name(self) -> &'static str {
        match self {
            Model::EpollPerWorker => "epoll-per-worker",
            Model::SharedEpoll => "shared-epoll",
            Model::Exclusive => "exclusive",
            Model::Reuseport => "reuseport",
            Model::BlockingAccept => "blocking-accept",
            Model::IoUring => "io-uring",
            Model::Tokio => "tokio",
            Model::TokioReuseport => "tokio-reuseport",
        }
    }

    /// Whether workers wait in their own epoll_wait loop (the hand-written
    /// epoll models; not blocking-accept or io-uring, not tokio, whose runtime
    /// owns the epoll).
    pub fn uses_epoll(self) -> bool {
        !matches!(self, Model::BlockingAccept | Model::IoUring) && !self.is_tokio()
    }

    /// Whether a tokio runtime runs the workers.
    pub fn is_tokio(self) -> bool {
        matches!(self, Model::Tokio | Model::TokioReuseport)
    }

    /// Whether every worker has a SO_REUSEPORT listener of its own.
    pub fn reuseport(self) -> bool {
        matches!(self, Model::Reuseport | Model::TokioReuseport)
    }

    /// Whether the model can only run as threads of one process.
    pub fn threads_only(self) -> bool {
        self == Model::SharedEpoll || self.is_tokio()
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Model {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Model::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown model {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_round_trip_and_match_clap() {
        for m in Model::ALL {
            assert_eq!(m.name().parse::<Model>(), Ok(m));
            let pv = m.to_possible_value().expect("every model is selectable");
            assert_eq!(pv.get_name(), m.name());
        }
        assert!("bogus".parse::<Model>().is_err());
        assert_eq!(Model::value_variants().len(), Model::ALL.len());
    }

    #[test]
    fn every_model_round_trips_through_the_listening_line() {
        for m in Model::ALL {
            let l = crate::serve::ListeningLine {
                ipv6: m.reuseport(),
                port: 8080,
                pid: 42,
                model: m,
                workers: 3,
            };
            let text = l.to_string();
            assert!(text.contains(&format!(" model {} ", m.name())), "{text}");
            assert_eq!(crate::serve::ListeningLine::parse(&text), Some(l));
        }
        let bogus = "listening on 127.0.0.1:8080 pid 42 model bogus workers 4";
        assert_eq!(crate::serve::ListeningLine::parse(bogus), None);
    }

    #[test]
    fn properties() {
        assert!(!Model::BlockingAccept.uses_epoll());
        let u = Model::IoUring;
        assert!(!u.uses_epoll() && !u.is_tokio() && !u.reuseport() && !u.threads_only());
        assert_eq!("io-uring".parse::<Model>(), Ok(u));
        assert!(Model::Reuseport.uses_epoll());
        assert!(Model::SharedEpoll.threads_only());
        assert!(!Model::Exclusive.threads_only());
        for m in [Model::Tokio, Model::TokioReuseport] {
            assert!(m.is_tokio() && m.threads_only() && !m.uses_epoll(), "{m}");
        }
        assert!(Model::TokioReuseport.reuseport() && Model::Reuseport.reuseport());
        assert!(!Model::Tokio.reuseport() && !Model::EpollPerWorker.is_tokio());
    }
}
