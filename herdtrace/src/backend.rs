//! Which backend (set of probe points) the tracer uses on this kernel.
//!
//! Pure: [`choose`] decides from [`KernelFacts`] gathered elsewhere
//! (`check::gather_facts`), so every combination is unit-tested without a kernel.
use std::fmt;

use serde::Serialize;

use crate::kernel::SymbolPresence;

/// A set of probe points the tracer can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// fentry/fexit on the wake path: most precise, needs BTF and trampolines.
    Fentry,
    /// kprobe/kretprobe on the same functions.
    Kprobe,
    /// Stable tracepoints only: no per-epoll or in-kernel spurious counts.
    Tracepoint,
}

impl Backend {
    /// In preference order, best first.
    pub const ALL: [Backend; 3] = [Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Fentry => "fentry",
            Backend::Kprobe => "kprobe",
            Backend::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asked for with `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendRequest {
    /// The best one this kernel supports: fentry, else kprobe, else tracepoint.
    #[default]
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

/// Whether something the tracer needs is usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum ProbeStatus {
    Ok,
    /// Not present on this kernel (the reason says where it was looked for).
    Missing(String),
    /// Present, but the kernel or the permissions refuse it.
    Refused(String),
}

impl ProbeStatus {
    pub fn is_ok(&self) -> bool {
        matches!(self, ProbeStatus::Ok)
    }
}

impl fmt::Display for ProbeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeStatus::Ok => f.write_str("ok"),
            ProbeStatus::Missing(r) => write!(f, "missing: {r}"),
            ProbeStatus::Refused(r) => write!(f, "refused: {r}"),
        }
    }
}

/// What is known about one kernel function the kprobe/fentry backends attach to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SymbolFact {
    /// How it appears in `/proc/kallsyms`; `None` when that was unreadable.
    pub kallsyms: Option<SymbolPresence>,
    /// Parameter count of the BTF function of this exact name; `None` if BTF
    /// has no such function (or there is no BTF).
    pub btf_params: Option<usize>,
    /// Listed in tracefs `available_filter_functions`; `None` when unreadable.
    pub traceable: Option<bool>,
}

impl SymbolFact {
    /// Usable by a kprobe (which can also attach to a `.isra`/`.constprop` clone).
    pub fn kprobe_status(&self) -> ProbeStatus {
        match &self.kallsyms {
            Some(SymbolPresence::Exact | SymbolPresence::Suffixed(_)) => ProbeStatus::Ok,
            Some(SymbolPresence::Absent) => {
                ProbeStatus::Missing("not in /proc/kallsyms (inlined or not built)".into())
            }
            None if self.btf_params.is_some() => ProbeStatus::Ok,
            None => ProbeStatus::Missing("not in BTF, and /proc/kallsyms is unreadable".into()),
        }
    }

    /// Usable by fentry: needs the BTF function and the exact, traceable symbol.
    pub fn fentry_status(&self) -> ProbeStatus {
        if let Some(SymbolPresence::Absent) = self.kallsyms {
            return ProbeStatus::Missing("not in /proc/kallsyms (inlined or not built)".into());
        }
        if let Some(SymbolPresence::Suffixed(clone)) = &self.kallsyms {
            return ProbeStatus::Missing(format!(
                "only present as {clone}, fentry needs the exact name"
            ));
        }
        if self.btf_params.is_none() {
            return ProbeStatus::Missing("no BTF function of this name".into());
        }
        if self.traceable == Some(false) {
            return ProbeStatus::Refused("not in available_filter_functions (notrace)".into());
        }
        ProbeStatus::Ok
    }

    /// The name a kprobe attaches to: the clone's name when only a clone exists.
    pub fn attach_name<'a>(&'a self, name: &'a str) -> &'a str {
        match &self.kallsyms {
            Some(SymbolPresence::Suffixed(clone)) => clone,
            _ => name,
        }
    }
}

/// The kernel functions the kprobe/fentry backends attach to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Symbols {
    pub wake_up_common: SymbolFact,
    pub ep_poll_callback: SymbolFact,
    pub ep_send_events: SymbolFact,
    pub inet_csk_accept: SymbolFact,
}

impl Symbols {
    pub const NAMES: [&'static str; 4] = [
        "__wake_up_common",
        "ep_poll_callback",
        "ep_send_events",
        "inet_csk_accept",
    ];

    /// Builds the set from a lookup by kernel function name.
    pub fn from_fn(mut f: impl FnMut(&str) -> SymbolFact) -> Symbols {
        Symbols {
            wake_up_common: f(Self::NAMES[0]),
            ep_poll_callback: f(Self::NAMES[1]),
            ep_send_events: f(Self::NAMES[2]),
            inet_csk_accept: f(Self::NAMES[3]),
        }
    }

    /// `(kernel function name, fact)` in display order.
    pub fn each(&self) -> [(&'static str, &SymbolFact); 4] {
        [
            (Self::NAMES[0], &self.wake_up_common),
            (Self::NAMES[1], &self.ep_poll_callback),
            (Self::NAMES[2], &self.ep_send_events),
            (Self::NAMES[3], &self.inet_csk_accept),
        ]
    }

    /// Without these the wake chain cannot be followed in the kernel.
    fn required(&self) -> [(&'static str, &SymbolFact); 3] {
        [
            (Self::NAMES[0], &self.wake_up_common),
            (Self::NAMES[1], &self.ep_poll_callback),
            (Self::NAMES[3], &self.inet_csk_accept),
        ]
    }
}

/// Presence of each tracepoint herdtrace may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracepoints {
    pub sk_data_ready: ProbeStatus,
    pub inet_sock_set_state: ProbeStatus,
    pub sched_waking: ProbeStatus,
    pub sys_exit_epoll_wait: ProbeStatus,
    pub sys_exit_epoll_pwait: ProbeStatus,
    pub sys_exit_epoll_pwait2: ProbeStatus,
    pub sys_exit_accept: ProbeStatus,
    pub sys_exit_accept4: ProbeStatus,
    pub sched_process_fork: ProbeStatus,
    pub sched_process_exit: ProbeStatus,
}

impl Tracepoints {
    /// `(category, name)` in display order.
    pub const NAMES: [(&'static str, &'static str); 10] = [
        ("sock", "sk_data_ready"),
        ("sock", "inet_sock_set_state"),
        ("sched", "sched_waking"),
        ("syscalls", "sys_exit_epoll_wait"),
        ("syscalls", "sys_exit_epoll_pwait"),
        ("syscalls", "sys_exit_epoll_pwait2"),
        ("syscalls", "sys_exit_accept"),
        ("syscalls", "sys_exit_accept4"),
        ("sched", "sched_process_fork"),
        ("sched", "sched_process_exit"),
    ];

    /// Builds the set from a lookup by `(category, name)`.
    pub fn from_fn(mut f: impl FnMut(&str, &str) -> ProbeStatus) -> Tracepoints {
        let [sk_data_ready, inet_sock_set_state, sched_waking, sys_exit_epoll_wait, sys_exit_epoll_pwait, sys_exit_epoll_pwait2, sys_exit_accept, sys_exit_accept4, sched_process_fork, sched_process_exit] =
            Self::NAMES.map(|(c, n)| f(c, n));
        Tracepoints {
            sk_data_ready,
            inet_sock_set_state,
            sched_waking,
            sys_exit_epoll_wait,
            sys_exit_epoll_pwait,
            sys_exit_epoll_pwait2,
            sys_exit_accept,
            sys_exit_accept4,
            sched_process_fork,
            sched_process_exit,
        }
    }

    /// `("category:name", status)` in display order.
    pub fn each(&self) -> Vec<(String, &ProbeStatus)> {
        let statuses = [
            &self.sk_data_ready,
            &self.inet_sock_set_state,
            &self.sched_waking,
            &self.sys_exit_epoll_wait,
            &self.sys_exit_epoll_pwait,
            &self.sys_exit_epoll_pwait2,
            &self.sys_exit_accept,
            &self.sys_exit_accept4,
            &self.sched_process_fork,
            &self.sched_process_exit,
        ];
        Self::NAMES
            .iter()
            .zip(statuses)
            .map(|((cat, name), s)| (format!("{cat}:{name}"), s))
            .collect()
    }

    fn epoll_exits(&self) -> [(&'static str, &ProbeStatus); 3] {
        [
            ("syscalls:sys_exit_epoll_wait", &self.sys_exit_epoll_wait),
            ("syscalls:sys_exit_epoll_pwait", &self.sys_exit_epoll_pwait),
            (
                "syscalls:sys_exit_epoll_pwait2",
                &self.sys_exit_epoll_pwait2,
            ),
        ]
    }
}

/// Everything [`choose`] needs to know about the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    pub version: Option<(u32, u32, u32)>,
    /// Kernel BTF (`/sys/kernel/btf/vmlinux`).
    pub btf: ProbeStatus,
    /// Root or CAP_BPF+CAP_PERFMON.
    pub privileges: ProbeStatus,
    /// Program types, from a trial load + attach.
    pub fentry: ProbeStatus,
    pub kprobe: ProbeStatus,
    pub tracepoint: ProbeStatus,
    pub tp_btf: ProbeStatus,
    pub symbols: Symbols,
    pub tracepoints: Tracepoints,
}

/// The backend [`choose`] picked, and why better ones were passed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    pub backend: Backend,
    /// For auto: one `"<backend> skipped: <reason>"` per better backend.
    pub skipped: Vec<String>,
    /// Metrics the chosen backend loses on this kernel.
    pub warnings: Vec<String>,
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.backend)?;
        if !self.skipped.is_empty() {
            write!(f, " ({})", self.skipped.join("; "))?;
        }
        Ok(())
    }
}

/// Picks the backend for `req`: auto takes the first usable of fentry, kprobe,
/// tracepoint; an explicit request fails with the reason it is unusable.
pub fn choose(req: BackendRequest, facts: &KernelFacts) -> Result<Choice, String> {
    let explicit = match req {
        BackendRequest::Auto => None,
        BackendRequest::Fentry => Some(Backend::Fentry),
        BackendRequest::Kprobe => Some(Backend::Kprobe),
        BackendRequest::Tracepoint => Some(Backend::Tracepoint),
    };
    if let Some(backend) = explicit {
        return assess(backend, facts)
            .map(|warnings| Choice {
                backend,
                skipped: Vec::new(),
                warnings,
            })
            .map_err(|reason| format!("{backend} backend unavailable: {reason}"));
    }
    let mut skipped = Vec::new();
    for backend in Backend::ALL {
        match assess(backend, facts) {
            Ok(warnings) => {
                return Ok(Choice {
                    backend,
                    skipped,
                    warnings,
                })
            }
            Err(reason) => skipped.push(format!("{backend} skipped: {reason}")),
        }
    }
    Err(format!(
        "no backend works on this kernel ({})",
        skipped.join("; ")
    ))
}

/// `Ok(warnings)` when `backend` can run, else the first reason it cannot.
fn assess(backend: Backend, facts: &KernelFacts) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    match backend {
        Backend::Fentry | Backend::Kprobe => {
            let (program, symbol_status): (_, fn(&SymbolFact) -> ProbeStatus) =
                if backend == Backend::Fentry {
                    (&facts.fentry, SymbolFact::fentry_status)
                } else {
                    (&facts.kprobe, SymbolFact::kprobe_status)
                };
            if !program.is_ok() {
                return Err(program.to_string());
            }
            if backend == Backend::Fentry && !facts.btf.is_ok() {
                return Err(format!("kernel BTF {}", facts.btf));
            }
            for (name, fact) in facts.symbols.required() {
                let status = symbol_status(fact);
                if !status.is_ok() {
                    return Err(format!("symbol {name} {status}"));
                }
            }
            wake_source(facts)?;
            let send = symbol_status(&facts.symbols.ep_send_events);
            if !send.is_ok() {
                warnings.push(format!(
                    "symbol ep_send_events {send}: wakeups that found no event inside the \
                     kernel (never seen by user space) are not counted"
                ));
            }
        }
        Backend::Tracepoint => {
            if !facts.tracepoint.is_ok() {
                return Err(facts.tracepoint.to_string());
            }
            let tp = &facts.tracepoints;
            for (name, status) in [
                ("sched:sched_waking", &tp.sched_waking),
                ("syscalls:sys_exit_accept", &tp.sys_exit_accept),
                ("syscalls:sys_exit_accept4", &tp.sys_exit_accept4),
            ] {
                if !status.is_ok() {
                    return Err(format!("tracepoint {name} {status}"));
                }
            }
            let epoll = tp.epoll_exits();
            if epoll.iter().all(|(_, s)| !s.is_ok()) {
                return Err(
                    "no syscalls:sys_exit_epoll_wait/epoll_pwait/epoll_pwait2 tracepoint".into(),
                );
            }
            for (name, status) in epoll.iter().filter(|(_, s)| !s.is_ok()) {
                warnings.push(format!(
                    "tracepoint {name} {status}: tasks returning from that call are not seen"
                ));
            }
            if !tp.sk_data_ready.is_ok() {
                if !tp.inet_sock_set_state.is_ok() {
                    return Err(format!(
                        "tracepoint sock:sk_data_ready {} and sock:inet_sock_set_state {}",
                        tp.sk_data_ready, tp.inet_sock_set_state
                    ));
                }
                warnings.push(
                    "tracepoint sock:sk_data_ready missing (added in 6.6): arrivals come from \
                     sock:inet_sock_set_state, which fires when the handshake completes, not \
                     when the listener is woken, so wakes are matched to arrivals less precisely"
                        .into(),
                );
            }
        }
    }
    let tp = &facts.tracepoints;
    for (name, status, lost) in [
        (
            "sched:sched_process_fork",
            &tp.sched_process_fork,
            "processes and threads started after the tracer are not followed",
        ),
        (
            "sched:sched_process_exit",
            &tp.sched_process_exit,
            "exited tasks are not forgotten (a reused pid is taken for the old task)",
        ),
    ] {
        if !status.is_ok() {
            warnings.push(format!("tracepoint {name} {status}: {lost}"));
        }
    }
    Ok(warnings)
}

/// kprobe/fentry still learn which tasks were woken from `sched_waking`,
/// through tp_btf (attached by BTF name) or a classic tracepoint.
fn wake_source(facts: &KernelFacts) -> Result<(), String> {
    if facts.tp_btf.is_ok() && facts.btf.is_ok() {
        return Ok(());
    }
    if !facts.tracepoint.is_ok() {
        return Err(format!(
            "woken tasks need program tp_btf or tracepoint: tp_btf {}, tracepoint {}",
            facts.tp_btf, facts.tracepoint
        ));
    }
    if !facts.tracepoints.sched_waking.is_ok() {
        return Err(format!(
            "tracepoint sched:sched_waking {}",
            facts.tracepoints.sched_waking
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_symbol(params: usize) -> SymbolFact {
        SymbolFact {
            kallsyms: Some(SymbolPresence::Exact),
            btf_params: Some(params),
            traceable: Some(true),
        }
    }

    fn absent_symbol() -> SymbolFact {
        SymbolFact {
            kallsyms: Some(SymbolPresence::Absent),
            btf_params: None,
            traceable: Some(false),
        }
    }

    fn refused(r: &str) -> ProbeStatus {
        ProbeStatus::Refused(r.into())
    }

    fn missing(r: &str) -> ProbeStatus {
        ProbeStatus::Missing(r.into())
    }

    /// A kernel where everything works (like a Debian 6.12 in QEMU).
    fn all_ok() -> KernelFacts {
        KernelFacts {
            release: "6.12.117+deb12-cloud-amd64".into(),
            version: Some((6, 12, 117)),
            btf: ProbeStatus::Ok,
            privileges: ProbeStatus::Ok,
            fentry: ProbeStatus::Ok,
            kprobe: ProbeStatus::Ok,
            tracepoint: ProbeStatus::Ok,
            tp_btf: ProbeStatus::Ok,
            symbols: Symbols {
                wake_up_common: ok_symbol(5),
                ep_poll_callback: ok_symbol(4),
                ep_send_events: ok_symbol(3),
                inet_csk_accept: ok_symbol(2),
            },
            tracepoints: Tracepoints::from_fn(|_, _| ProbeStatus::Ok),
        }
    }

    /// The development host: tracepoints only.
    fn this_host() -> KernelFacts {
        KernelFacts {
            fentry: refused("load returned EPERM"),
            kprobe: refused("kernel built without CONFIG_KPROBES"),
            ..all_ok()
        }
    }

    #[test]
    fn everything_works_auto_takes_fentry() {
        let c = choose(BackendRequest::Auto, &all_ok()).expect("fentry");
        assert_eq!(c.backend, Backend::Fentry);
        assert!(c.skipped.is_empty());
        assert!(c.warnings.is_empty());
        assert_eq!(c.to_string(), "fentry");
        for (req, want) in [
            (BackendRequest::Fentry, Backend::Fentry),
            (BackendRequest::Kprobe, Backend::Kprobe),
            (BackendRequest::Tracepoint, Backend::Tracepoint),
        ] {
            assert_eq!(choose(req, &all_ok()).expect("explicit").backend, want);
        }
    }

    #[test]
    fn this_host_falls_back_to_tracepoint_with_reasons() {
        let c = choose(BackendRequest::Auto, &this_host()).expect("tracepoint");
        assert_eq!(c.backend, Backend::Tracepoint);
        assert_eq!(
            c.to_string(),
            "tracepoint (fentry skipped: refused: load returned EPERM; \
             kprobe skipped: refused: kernel built without CONFIG_KPROBES)"
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            choose(BackendRequest::Kprobe, &this_host()),
            Err("kprobe backend unavailable: refused: kernel built without CONFIG_KPROBES".into())
        );
        assert_eq!(
            choose(BackendRequest::Fentry, &this_host()),
            Err("fentry backend unavailable: refused: load returned EPERM".into())
        );
    }

    #[test]
    fn kprobe_when_fentry_refused() {
        let facts = KernelFacts {
            fentry: refused("load returned EPERM"),
            ..all_ok()
        };
        let c = choose(BackendRequest::Auto, &facts).expect("kprobe");
        assert_eq!(c.backend, Backend::Kprobe);
        assert_eq!(c.skipped, ["fentry skipped: refused: load returned EPERM"]);
    }

    #[test]
    fn missing_required_symbol_skips_both_in_kernel_backends() {
        for name in ["__wake_up_common", "ep_poll_callback", "inet_csk_accept"] {
            let mut facts = all_ok();
            facts.symbols = Symbols::from_fn(|n| {
                if n == name {
                    absent_symbol()
                } else {
                    ok_symbol(3)
                }
            });
            let c = choose(BackendRequest::Auto, &facts).expect("tracepoint");
            assert_eq!(c.backend, Backend::Tracepoint);
            let reason =
                format!("symbol {name} missing: not in /proc/kallsyms (inlined or not built)");
            assert_eq!(
                c.skipped,
                [
                    format!("fentry skipped: {reason}"),
                    format!("kprobe skipped: {reason}")
                ]
            );
        }
    }

    #[test]
    fn ep_send_events_missing_only_warns() {
        let mut facts = all_ok();
        facts.symbols.ep_send_events = absent_symbol();
        for req in [
            BackendRequest::Auto,
            BackendRequest::Fentry,
            BackendRequest::Kprobe,
        ] {
            let c = choose(req, &facts).expect("usable");
            assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
            assert!(c.warnings[0].starts_with("symbol ep_send_events missing"));
            assert!(c.warnings[0].contains("not counted"));
        }
        // The tracepoint backend never uses it.
        let c = choose(BackendRequest::Tracepoint, &facts).expect("tracepoint");
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn clone_symbol_suits_kprobe_not_fentry() {
        let mut facts = all_ok();
        facts.symbols.ep_poll_callback = SymbolFact {
            kallsyms: Some(SymbolPresence::Suffixed("ep_poll_callback.isra.0".into())),
            btf_params: None,
            traceable: Some(true),
        };
        let c = choose(BackendRequest::Auto, &facts).expect("kprobe");
        assert_eq!(c.backend, Backend::Kprobe);
        assert_eq!(
            c.skipped,
            [
                "fentry skipped: symbol ep_poll_callback missing: only present as \
              ep_poll_callback.isra.0, fentry needs the exact name"
            ]
        );
        assert_eq!(
            facts
                .symbols
                .ep_poll_callback
                .attach_name("ep_poll_callback"),
            "ep_poll_callback.isra.0"
        );
        assert_eq!(
            facts.symbols.wake_up_common.attach_name("__wake_up_common"),
            "__wake_up_common"
        );
    }

    #[test]
    fn symbol_fact_rules() {
        let notrace = SymbolFact {
            traceable: Some(false),
            ..ok_symbol(2)
        };
        assert!(notrace.kprobe_status().is_ok());
        assert_eq!(
            notrace.fentry_status(),
            refused("not in available_filter_functions (notrace)")
        );
        let no_btf = SymbolFact {
            btf_params: None,
            ..ok_symbol(2)
        };
        assert!(no_btf.kprobe_status().is_ok());
        assert_eq!(
            no_btf.fentry_status(),
            missing("no BTF function of this name")
        );
        // Unreadable kallsyms / filter list: BTF decides.
        let unknown = SymbolFact {
            kallsyms: None,
            btf_params: Some(4),
            traceable: None,
        };
        assert!(unknown.kprobe_status().is_ok());
        assert!(unknown.fentry_status().is_ok());
        let nothing = SymbolFact::default();
        assert_eq!(
            nothing.kprobe_status(),
            missing("not in BTF, and /proc/kallsyms is unreadable")
        );
        assert_eq!(
            nothing.fentry_status(),
            missing("no BTF function of this name")
        );
    }

    #[test]
    fn fentry_needs_btf() {
        let facts = KernelFacts {
            btf: missing("no /sys/kernel/btf/vmlinux"),
            tp_btf: missing("no BTF"),
            ..all_ok()
        };
        let c = choose(BackendRequest::Auto, &facts).expect("kprobe");
        assert_eq!(c.backend, Backend::Kprobe);
        assert_eq!(
            c.skipped,
            ["fentry skipped: kernel BTF missing: no /sys/kernel/btf/vmlinux"]
        );
    }

    #[test]
    fn in_kernel_backends_need_a_wake_source() {
        // tp_btf alone is enough (attached by BTF name, no tracefs event needed).
        let facts = KernelFacts {
            tracepoint: refused("x"),
            ..all_ok()
        };
        assert_eq!(
            choose(BackendRequest::Auto, &facts)
                .expect("fentry")
                .backend,
            Backend::Fentry
        );
        // A classic tracepoint needs sched_waking to exist.
        let mut facts = KernelFacts {
            tp_btf: refused("y"),
            ..all_ok()
        };
        facts.tracepoints.sched_waking = missing("no events/sched/sched_waking");
        let err = choose(BackendRequest::Kprobe, &facts).expect_err("no wake source");
        assert_eq!(
            err,
            "kprobe backend unavailable: tracepoint sched:sched_waking missing: no events/sched/sched_waking"
        );
        let facts = KernelFacts {
            tp_btf: refused("y"),
            tracepoint: refused("x"),
            ..all_ok()
        };
        let err = choose(BackendRequest::Fentry, &facts).expect_err("no wake source");
        assert_eq!(
            err,
            "fentry backend unavailable: woken tasks need program tp_btf or tracepoint: \
             tp_btf refused: y, tracepoint refused: x"
        );
    }

    #[test]
    fn tracepoint_backend_requirements() {
        for field in ["sched_waking", "sys_exit_accept", "sys_exit_accept4"] {
            let mut facts = this_host();
            facts.tracepoints = Tracepoints::from_fn(|_, n| {
                if n == field {
                    missing("gone")
                } else {
                    ProbeStatus::Ok
                }
            });
            let err = choose(BackendRequest::Tracepoint, &facts).expect_err(field);
            assert!(
                err.contains(field) && err.contains("missing: gone"),
                "{err}"
            );
            let err = choose(BackendRequest::Auto, &facts).expect_err(field);
            assert!(
                err.starts_with("no backend works on this kernel (fentry skipped: "),
                "{err}"
            );
        }
        let facts = KernelFacts {
            tracepoint: refused("needs root or CAP_BPF+CAP_PERFMON"),
            ..this_host()
        };
        assert_eq!(
            choose(BackendRequest::Tracepoint, &facts),
            Err(
                "tracepoint backend unavailable: refused: needs root or CAP_BPF+CAP_PERFMON".into()
            )
        );
    }

    #[test]
    fn epoll_variants_one_is_enough() {
        let names = [
            "sys_exit_epoll_wait",
            "sys_exit_epoll_pwait",
            "sys_exit_epoll_pwait2",
        ];
        for mask in 0u8..8 {
            let mut facts = this_host();
            facts.tracepoints =
                Tracepoints::from_fn(|_, n| match names.iter().position(|x| *x == n) {
                    Some(i) if mask & (1 << i) == 0 => missing("absent"),
                    _ => ProbeStatus::Ok,
                });
            let result = choose(BackendRequest::Tracepoint, &facts);
            if mask == 0 {
                assert_eq!(
                    result,
                    Err("tracepoint backend unavailable: no syscalls:sys_exit_epoll_wait/epoll_pwait/epoll_pwait2 tracepoint".into())
                );
            } else {
                let c = result.expect("one variant suffices");
                let absent: Vec<_> = (0..3).filter(|i| mask & (1 << i) == 0).collect();
                assert_eq!(c.warnings.len(), absent.len(), "{:?}", c.warnings);
                for (w, i) in c.warnings.iter().zip(&absent) {
                    assert!(w.contains(names[*i]), "{w}");
                }
            }
        }
    }

    #[test]
    fn arrival_tracepoint_and_substitute() {
        let set = |data_ready: bool, set_state: bool| {
            let mut f = this_host();
            f.tracepoints.sk_data_ready = if data_ready {
                ProbeStatus::Ok
            } else {
                missing("a")
            };
            f.tracepoints.inet_sock_set_state = if set_state {
                ProbeStatus::Ok
            } else {
                missing("b")
            };
            choose(BackendRequest::Tracepoint, &f)
        };
        assert!(set(true, true).expect("both").warnings.is_empty());
        assert!(set(true, false).expect("data_ready").warnings.is_empty());
        let c = set(false, true).expect("substitute");
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("sock:inet_sock_set_state"));
        assert!(c.warnings[0].contains("less precisely"));
        assert_eq!(
            set(false, false),
            Err(
                "tracepoint backend unavailable: tracepoint sock:sk_data_ready missing: a and \
                 sock:inet_sock_set_state missing: b"
                    .into()
            )
        );
    }

    #[test]
    fn task_tracking_tracepoints_only_warn() {
        let mut facts = all_ok();
        facts.tracepoints.sched_process_fork = missing("f");
        facts.tracepoints.sched_process_exit = missing("e");
        for req in [
            BackendRequest::Fentry,
            BackendRequest::Kprobe,
            BackendRequest::Tracepoint,
        ] {
            let c = choose(req, &facts).expect("usable");
            assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
            assert!(c.warnings[0].starts_with("tracepoint sched:sched_process_fork missing: f"));
            assert!(c.warnings[1].starts_with("tracepoint sched:sched_process_exit missing: e"));
        }
    }

    #[test]
    fn nothing_works() {
        let facts = KernelFacts {
            tracepoint: refused("needs root or CAP_BPF+CAP_PERFMON"),
            tp_btf: refused("needs root or CAP_BPF+CAP_PERFMON"),
            fentry: refused("needs root or CAP_BPF+CAP_PERFMON"),
            kprobe: refused("needs root or CAP_BPF+CAP_PERFMON"),
            ..all_ok()
        };
        let err = choose(BackendRequest::Auto, &facts).expect_err("none");
        assert_eq!(
            err,
            "no backend works on this kernel (fentry skipped: refused: needs root or \
             CAP_BPF+CAP_PERFMON; kprobe skipped: refused: needs root or CAP_BPF+CAP_PERFMON; \
             tracepoint skipped: refused: needs root or CAP_BPF+CAP_PERFMON)"
        );
    }

    /// Every combination of program statuses, BTF, symbol presence and the
    /// tracepoints that matter: auto must equal the first explicit request that
    /// succeeds, with one skip line per better backend carrying that request's reason.
    #[test]
    fn auto_is_first_usable_explicit_for_all_combinations() {
        let statuses = [ProbeStatus::Ok, refused("r"), missing("m")];
        let mut checked = 0;
        for bits in 0u32..(1 << 7) {
            let on = |i: u32| bits & (1 << i) == 0;
            let mut f = all_ok();
            f.btf = if on(0) {
                ProbeStatus::Ok
            } else {
                missing("btf")
            };
            if !on(1) {
                f.symbols.wake_up_common = absent_symbol();
            }
            if !on(2) {
                f.symbols.inet_csk_accept.kallsyms =
                    Some(SymbolPresence::Suffixed("inet_csk_accept.isra.0".into()));
            }
            if !on(3) {
                f.symbols.ep_send_events = absent_symbol();
            }
            if !on(4) {
                f.tracepoints.sk_data_ready = missing("sdr");
            }
            if !on(5) {
                f.tracepoints.sys_exit_accept4 = missing("a4");
            }
            if !on(6) {
                f.tracepoints.sched_waking = missing("sw");
            }
            // Each of the 4 program types ok, refused or missing: 3^4 combinations.
            for p in 0..81u32 {
                let pick = |k: u32| statuses[((p / 3u32.pow(k)) % 3) as usize].clone();
                f.fentry = pick(0);
                f.kprobe = pick(1);
                f.tracepoint = pick(2);
                f.tp_btf = pick(3);
                let explicit: Vec<_> = [
                    BackendRequest::Fentry,
                    BackendRequest::Kprobe,
                    BackendRequest::Tracepoint,
                ]
                .into_iter()
                .map(|r| choose(r, &f))
                .collect();
                // Independent spec of each backend's hard requirements.
                let wake = (f.tp_btf.is_ok() && f.btf.is_ok())
                    || (f.tracepoint.is_ok() && f.tracepoints.sched_waking.is_ok());
                let fentry_ok = f.fentry.is_ok() && f.btf.is_ok() && on(1) && on(2) && wake;
                let kprobe_ok = f.kprobe.is_ok() && on(1) && wake;
                let tp_ok = f.tracepoint.is_ok() && on(5) && on(6);
                assert_eq!(explicit[0].is_ok(), fentry_ok, "{f:?}");
                assert_eq!(explicit[1].is_ok(), kprobe_ok, "{f:?}");
                assert_eq!(explicit[2].is_ok(), tp_ok, "{f:?}");
                let auto = choose(BackendRequest::Auto, &f);
                match explicit.iter().position(Result::is_ok) {
                    Some(i) => {
                        let c = auto.expect("some backend");
                        assert_eq!(c.backend, Backend::ALL[i]);
                        assert_eq!(c.skipped.len(), i);
                        for (j, line) in c.skipped.iter().enumerate() {
                            let reason = explicit[j].as_ref().expect_err("skipped");
                            let reason = reason
                                .strip_prefix(&format!("{} backend unavailable: ", Backend::ALL[j]))
                                .expect("explicit error prefix");
                            assert_eq!(line, &format!("{} skipped: {reason}", Backend::ALL[j]));
                        }
                        let chosen = explicit[i].as_ref().expect("chosen");
                        assert_eq!(c.warnings, chosen.warnings);
                        let send_warn = c.warnings.iter().any(|w| w.contains("ep_send_events"));
                        assert_eq!(send_warn, i < 2 && !on(3));
                        let substitute = c.warnings.iter().any(|w| w.contains("sk_data_ready"));
                        assert_eq!(substitute, i == 2 && !on(4));
                    }
                    None => assert!(auto.expect_err("none").starts_with("no backend works")),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 128 * 81);
    }

    #[test]
    fn status_display() {
        assert_eq!(ProbeStatus::Ok.to_string(), "ok");
        assert_eq!(missing("x").to_string(), "missing: x");
        assert_eq!(
            refused("load returned EPERM").to_string(),
            "refused: load returned EPERM"
        );
        assert_eq!(
            serde_json::to_value(refused("r")).expect("json"),
            serde_json::json!({"status": "refused", "reason": "r"})
        );
        assert_eq!(
            serde_json::to_value(ProbeStatus::Ok).expect("json"),
            serde_json::json!({"status": "ok"})
        );
    }

    #[test]
    fn request_names() {
        use clap::ValueEnum;
        let names: Vec<_> = BackendRequest::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| p.get_name().to_owned())
            .collect();
        assert_eq!(names, ["auto", "fentry", "kprobe", "tracepoint"]);
        assert_eq!(BackendRequest::default(), BackendRequest::Auto);
    }

    #[test]
    fn tracepoint_names_line_up() {
        let tp = Tracepoints::from_fn(|c, n| missing(&format!("{c}/{n}")));
        for (name, status) in tp.each() {
            assert_eq!(
                status.to_string(),
                format!("missing: {}", name.replace(':', "/"))
            );
        }
        let syms = Symbols::from_fn(|n| SymbolFact {
            btf_params: Some(n.len()),
            ..SymbolFact::default()
        });
        for (name, fact) in syms.each() {
            assert_eq!(fact.btf_params, Some(name.len()));
        }
    }
}
