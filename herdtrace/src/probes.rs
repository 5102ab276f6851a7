//! The probe table: every probe point herdtrace attaches, which backends use
//! it, whether it is required, the kernels that have it, and what is lost
//! without it. It is the one description of the probe points: `check`
//! renders it, backend choice walks it (`backend::plan`), and the loader
//! attaches the plan's list in one loop (like kunai's probe configuration or
//! libbpf-tools' probe-then-autoload).
//!
//! A point has variants, best first; a variant is usable when every program
//! it attaches is (`Pick::First` takes the first usable variant,
//! `Pick::Each` attaches every usable one, e.g. one per syscall).
use crate::backend::Backend;

/// How a program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A classic tracepoint (`category:name` in tracefs).
    Tracepoint,
    /// A BTF ("raw") tracepoint: no trace record is built, the program gets
    /// the tracepoint's own arguments.
    BtfTracepoint,
    Kprobe,
    Kretprobe,
    Fentry,
    Fexit,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tracepoint => "tracepoint",
            Kind::BtfTracepoint => "tp_btf",
            Kind::Kprobe => "kprobe",
            Kind::Kretprobe => "kretprobe",
            Kind::Fentry => "fentry",
            Kind::Fexit => "fexit",
        }
    }

    /// The program type whose support (a trial load in `check`) it needs.
    pub fn program_type(self) -> ProgramType {
        match self {
            Kind::Tracepoint => ProgramType::Tracepoint,
            Kind::BtfTracepoint => ProgramType::TpBtf,
            Kind::Kprobe | Kind::Kretprobe => ProgramType::Kprobe,
            Kind::Fentry | Kind::Fexit => ProgramType::Fentry,
        }
    }
}

/// Program types `check` trial-loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProgramType {
    Tracepoint,
    TpBtf,
    Kprobe,
    Fentry,
}

impl ProgramType {
    pub const ALL: [ProgramType; 4] = [
        ProgramType::Tracepoint,
        ProgramType::TpBtf,
        ProgramType::Kprobe,
        ProgramType::Fentry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProgramType::Tracepoint => "tracepoint",
            ProgramType::TpBtf => "tp_btf",
            ProgramType::Kprobe => "kprobe",
            ProgramType::Fentry => "fentry",
        }
    }
}

/// A kernel capability some programs need beyond their program type and
/// target: a helper newer than the oldest kernel herdtrace supports.
/// `check` trial-loads a program that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// `bpf_get_current_task_btf` (5.11+): the current task as a BTF
    /// pointer, whose fields a program loads directly instead of through
    /// `bpf_probe_read_kernel`.
    TaskBtf,
    /// `bpf_task_pt_regs` (5.15+), called on the task from `TaskBtf`: a
    /// syscall's arguments, read at its exit from the task's saved user
    /// registers, so the syscall needs no entry tracepoint.
    TaskPtRegs,
}

impl Feature {
    /// In dependency order: a feature comes after those it [`requires`](Feature::requires).
    pub const ALL: [Feature; 2] = [Feature::TaskBtf, Feature::TaskPtRegs];

    /// The helper's name, as `check` shows it and `HERDTRACE_MISSING` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Feature::TaskBtf => "bpf_get_current_task_btf",
            Feature::TaskPtRegs => "bpf_task_pt_regs",
        }
    }

    /// What the variants without it cost more, as the fallback warning says.
    pub fn fallback_cost(self) -> &'static str {
        match self {
            Feature::TaskBtf => "read with more helper calls",
            Feature::TaskPtRegs => "with a syscall entry tracepoint as well",
        }
    }

    /// The features its programs use as well.
    pub fn requires(self) -> &'static [Feature] {
        match self {
            Feature::TaskBtf => &[],
            Feature::TaskPtRegs => &[Feature::TaskBtf],
        }
    }
}

/// One program attached to one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attach {
    /// The eBPF program (a function in `herdtrace-ebpf/src/main.rs`).
    pub program: &'static str,
    pub kind: Kind,
    /// `category:name` for a classic tracepoint, the event name for a BTF
    /// tracepoint, the kernel function otherwise.
    pub target: &'static str,
    /// The BTF parameter count the program was written for: an fexit
    /// program reads the return value after the arguments, and a BTF
    /// tracepoint whose arguments changed between versions has one program
    /// per shape.
    pub params: Option<usize>,
    /// Classic tracepoints: the record fields the program reads (their
    /// offsets come from the event's tracefs `format` file).
    pub fields: &'static [&'static str],
    /// A capability the program needs besides its program type.
    pub needs: Option<Feature>,
}

impl Attach {
    /// The same attachment by a program that needs `feature`.
    const fn needing(self, feature: Feature) -> Attach {
        Attach {
            needs: Some(feature),
            ..self
        }
    }

    /// `kind target`, as `check` and the warnings name it, with the helper
    /// the program needs, if any (it tells two variants apart).
    pub fn label(&self) -> String {
        match self.needs {
            None => format!("{} {}", self.kind.name(), self.target),
            Some(f) => format!("{} {} (with {})", self.kind.name(), self.target, f.name()),
        }
    }
}

/// One way to provide a probe point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub backends: &'static [Backend],
    pub attach: &'static [Attach],
    /// Provided by another point's programs when that point is attached
    /// (the pre-6.6 arrival substitute); no programs of its own.
    pub via: Option<&'static str>,
    /// Said once when this variant is the one used: what is less precise.
    pub note: Option<&'static str>,
}

/// Whether a point takes its first usable variant or every usable one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    First,
    /// Every usable variant (e.g. each syscall of a family); a required
    /// point needs at least one, and each one missing is warned about.
    Each,
}

/// One probe point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    pub id: &'static str,
    /// What it observes.
    pub what: &'static str,
    /// Backends that cannot run without it; for the others it is optional.
    pub required: &'static [Backend],
    pub pick: Pick,
    /// Which kernels have it, and why the variants exist.
    pub kernels: &'static str,
    /// What is lost when it is missing (optional points), or, for
    /// `Pick::Each`, when one of its variants is.
    pub lost: &'static str,
    /// A run of its programs the kernel skips (recursion guard) can change
    /// the figures of the connections open at that moment (woken, accepts,
    /// EAGAIN), which are then flagged possibly incomplete. Epoll returns
    /// count: a skipped one leaves the task marked as woken by its last
    /// connection until its next traced call, and a wakeup it makes meanwhile
    /// (a server's worker signalling a thread pool) would count there. Points
    /// that only refine how a wake ended (`ep_send_events`) or keep the maps
    /// tidy do not flag: their events are recovered from the task's next one.
    pub counts: bool,
    /// What a skipped run can leave stale past the sample that shows it.
    pub after_skip: AfterSkip,
    pub variants: &'static [Variant],
}

/// What a skipped run of a point's programs can leave stale after the skip
/// sample that shows it, and so which connections of the next sample
/// window are flagged too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSkip {
    /// Per-CPU or global state (an open wake chain, a timer bracket, the
    /// traced set): any connection of the next window may be touched.
    Anything,
    /// Only the skipped task's own state, on its syscall return path: its
    /// "woken by" mark, which outlives the skip until the task's next
    /// traced call and is read only when the task wakes another one (a
    /// cascade wakeup, `FLAG_WAKE_CASCADE`). Its other state (a wake not
    /// resolved, an accept not reported) concerns the connection that woke
    /// it, open in the window the skip was seen in and flagged with it.
    TaskCascades,
}

impl Point {
    /// Backends that use this point at all.
    pub fn backends(&self) -> Vec<Backend> {
        Backend::ALL
            .into_iter()
            .filter(|b| self.variants.iter().any(|v| v.backends.contains(b)))
            .collect()
    }

    pub fn is_required(&self, backend: Backend) -> bool {
        self.required.contains(&backend)
    }

    /// The variants `backend` may use, in preference order.
    pub fn variants_for(&self, backend: Backend) -> impl Iterator<Item = &'static Variant> + '_ {
        self.variants
            .iter()
            .filter(move |v| v.backends.contains(&backend))
    }
}

const ALL: &[Backend] = &[Backend::Fentry, Backend::Kprobe, Backend::Tracepoint];
const TP: &[Backend] = &[Backend::Tracepoint];
const KP: &[Backend] = &[Backend::Kprobe];
const FE: &[Backend] = &[Backend::Fentry];
const KFUNC: &[Backend] = &[Backend::Fentry, Backend::Kprobe];

const fn a(program: &'static str, kind: Kind, target: &'static str) -> Attach {
    Attach {
        program,
        kind,
        target,
        params: None,
        fields: &[],
        needs: None,
    }
}

const fn tp(
    program: &'static str,
    target: &'static str,
    fields: &'static [&'static str],
) -> Attach {
    Attach {
        program,
        kind: Kind::Tracepoint,
        target,
        params: None,
        fields,
        needs: None,
    }
}

const fn fexit(program: &'static str, target: &'static str, params: usize) -> Attach {
    Attach {
        program,
        kind: Kind::Fexit,
        target,
        params: Some(params),
        fields: &[],
        needs: None,
    }
}

/// A BTF tracepoint whose arguments changed between versions: usable where
/// it passes `params` arguments.
const fn btf_args(program: &'static str, target: &'static str, params: usize) -> Attach {
    Attach {
        program,
        kind: Kind::BtfTracepoint,
        target,
        params: Some(params),
        fields: &[],
        needs: None,
    }
}

const fn v(backends: &'static [Backend], attach: &'static [Attach]) -> Variant {
    Variant {
        backends,
        attach,
        via: None,
        note: None,
    }
}

/// The io_uring record fields the programs read (named alike in every version).
const URING_SUBMIT: &[&str] = &["ctx", "user_data", "opcode"];
const URING_TASK_ADD: &[&str] = &["ctx", "user_data", "opcode"];
/// `cflags` too where the record has it (5.13+): see `start::program_config`.
const URING_COMPLETE: &[&str] = &["ctx", "user_data", "res"];
/// 5.19+: the request too, and the CQE flags (multishot accepts).
const URING_COMPLETE_REQ: &[&str] = &["req", "ctx", "user_data", "res", "cflags"];

/// Why the accept syscalls have three variants.
const ACCEPT_SYSCALL_KERNELS: &str = "every kernel; from 5.11 the exit finds the task's fd table \
     through bpf_get_current_task_btf (direct loads instead of helper calls); from 5.15 it reads \
     the listening fd from the task's saved registers (bpf_task_pt_regs), so no entry \
     tracepoint is attached (each syscall tracepoint direction attached costs every syscall \
     on the machine)";

pub const ARRIVAL_SUBSTITUTE_NOTE: &str =
    "sock:sk_data_ready missing (added in 6.6): arrivals come from sock:inet_sock_set_state, \
     which fires when the handshake completes, not when the listener is woken, so wakes are \
     matched to arrivals less precisely and EAGAIN by port";

/// Every probe point. Order matters only where a variant depends on another
/// point (`via`): that point comes first.
pub const TABLE: &[Point] = &[
    Point {
        id: "wakeups",
        what: "tasks the kernel wakes (sched_waking)",
        required: ALL,
        pick: Pick::First,
        kernels: "every kernel; the BTF tracepoint (5.5+, needs BTF) costs less: no trace \
                  record is built",
        lost: "",
        counts: true,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                ALL,
                &[a("btf_sched_waking", Kind::BtfTracepoint, "sched_waking")],
            ),
            v(
                ALL,
                &[tp(
                    "tp_sched_waking",
                    "sched:sched_waking",
                    &["pid", "comm"],
                )],
            ),
        ],
    },
    Point {
        id: "fork",
        what: "processes and threads the traced tasks start",
        required: &[],
        pick: Pick::First,
        kernels: "every kernel; the classic tracepoint does not name the new task's process, \
                  which is then learned at its first traced call",
        lost: "processes and threads started after the tracer are not followed",
        counts: true,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                ALL,
                &[a(
                    "btf_sched_process_fork",
                    Kind::BtfTracepoint,
                    "sched_process_fork",
                )],
            ),
            v(
                ALL,
                &[tp(
                    "tp_sched_process_fork",
                    "sched:sched_process_fork",
                    &["child_pid"],
                )],
            ),
        ],
    },
    Point {
        id: "exit",
        what: "traced tasks exiting",
        required: &[],
        pick: Pick::First,
        kernels: "every kernel",
        lost: "exited tasks are not forgotten (a reused pid is taken for the old task)",
        counts: false,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                ALL,
                &[a(
                    "btf_sched_process_exit",
                    Kind::BtfTracepoint,
                    "sched_process_exit",
                )],
            ),
            v(
                ALL,
                &[tp("tp_sched_process_exit", "sched:sched_process_exit", &[])],
            ),
        ],
    },
    Point {
        id: "timers",
        what: "expiring timers (a task woken by its own timeout is not woken by a connection)",
        required: &[],
        pick: Pick::First,
        kernels: "every kernel",
        lost: "a worker's timeout that expires while a connection is being delivered on the \
               same CPU is counted as woken by that connection",
        counts: true,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                ALL,
                &[
                    a(
                        "btf_hrtimer_expire_entry",
                        Kind::BtfTracepoint,
                        "hrtimer_expire_entry",
                    ),
                    a(
                        "btf_hrtimer_expire_exit",
                        Kind::BtfTracepoint,
                        "hrtimer_expire_exit",
                    ),
                    a(
                        "btf_timer_expire_entry",
                        Kind::BtfTracepoint,
                        "timer_expire_entry",
                    ),
                    a(
                        "btf_timer_expire_exit",
                        Kind::BtfTracepoint,
                        "timer_expire_exit",
                    ),
                ],
            ),
            v(
                ALL,
                &[
                    tp("tp_hrtimer_expire_entry", "timer:hrtimer_expire_entry", &[]),
                    tp("tp_hrtimer_expire_exit", "timer:hrtimer_expire_exit", &[]),
                    tp("tp_timer_expire_entry", "timer:timer_expire_entry", &[]),
                    tp("tp_timer_expire_exit", "timer:timer_expire_exit", &[]),
                ],
            ),
        ],
    },
    Point {
        id: "handshake",
        what: "each connection's child socket (SYN_RECV -> ESTABLISHED) and listeners closing",
        required: &[],
        pick: Pick::First,
        kernels: "4.16+ (sock:inet_sock_set_state)",
        lost: "an arrival's child socket is read from the accept queue, which can name another \
               connection under concurrent arrivals; a closed listener stays known",
        counts: true,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                TP,
                &[a(
                    "btf_inet_sock_set_state",
                    Kind::BtfTracepoint,
                    "inet_sock_set_state",
                )],
            ),
            v(
                TP,
                &[tp(
                    "tp_inet_sock_set_state",
                    "sock:inet_sock_set_state",
                    &["skaddr", "oldstate", "newstate"],
                )],
            ),
        ],
    },
    Point {
        id: "arrival",
        what: "a connection ready on a listening socket (sk_data_ready)",
        required: TP,
        pick: Pick::First,
        kernels: "sock:sk_data_ready is 6.6+; before, the handshake tracepoint stands in",
        lost: "",
        counts: true,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                TP,
                &[a("btf_sk_data_ready", Kind::BtfTracepoint, "sk_data_ready")],
            ),
            v(
                TP,
                &[tp("tp_sk_data_ready", "sock:sk_data_ready", &["skaddr"])],
            ),
            Variant {
                backends: TP,
                attach: &[],
                via: Some("handshake"),
                note: Some(ARRIVAL_SUBSTITUTE_NOTE),
            },
        ],
    },
    Point {
        id: "chain-end",
        what: "the end of the softirq that processed a connection (closes its wake chain)",
        required: &[],
        pick: Pick::First,
        kernels: "every kernel",
        lost: "wake chains end only by time (--chain-window-us)",
        counts: true,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                TP,
                &[a("btf_softirq_exit", Kind::BtfTracepoint, "softirq_exit")],
            ),
            v(TP, &[tp("tp_softirq_exit", "irq:softirq_exit", &[])]),
        ],
    },
    Point {
        id: "wake-queue",
        what: "wait-queue wakeups (__wake_up_common): where a chain starts and ends",
        required: KFUNC,
        pick: Pick::First,
        kernels: "every kernel (6 parameters up to 6.6, 5 from 6.7; only the first is read)",
        lost: "",
        counts: true,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                FE,
                &[
                    a("fe_wake_up_common", Kind::Fentry, "__wake_up_common"),
                    a("fx_wake_up_common", Kind::Fexit, "__wake_up_common"),
                ],
            ),
            v(
                KP,
                &[
                    a("kp_wake_up_common", Kind::Kprobe, "__wake_up_common"),
                    a("krp_wake_up_common", Kind::Kretprobe, "__wake_up_common"),
                ],
            ),
        ],
    },
    Point {
        id: "epoll-callback",
        what: "each epoll instance a listener's wakeup notifies (ep_poll_callback)",
        required: KFUNC,
        pick: Pick::First,
        kernels: "every kernel",
        lost: "",
        counts: true,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                FE,
                &[a("fe_ep_poll_callback", Kind::Fentry, "ep_poll_callback")],
            ),
            v(
                KP,
                &[a("kp_ep_poll_callback", Kind::Kprobe, "ep_poll_callback")],
            ),
        ],
    },
    Point {
        id: "new-connection",
        what: "a child socket joining its listener's accept queue (names each connection)",
        required: KFUNC,
        pick: Pick::Each,
        kernels: "every kernel; the normal handshake goes through \
                  inet_csk_complete_hashdance (7.x inlines inet_csk_reqsk_queue_add into it), \
                  syncookies and TCP Fast Open call inet_csk_reqsk_queue_add directly",
        lost: "connections completed that way are named from the accept queue's tail",
        counts: true,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                FE,
                &[
                    a(
                        "fe_complete_hashdance",
                        Kind::Fentry,
                        "inet_csk_complete_hashdance",
                    ),
                    fexit("fx_complete_hashdance", "inet_csk_complete_hashdance", 4),
                ],
            ),
            v(
                KP,
                &[
                    a(
                        "kp_complete_hashdance",
                        Kind::Kprobe,
                        "inet_csk_complete_hashdance",
                    ),
                    a(
                        "krp_complete_hashdance",
                        Kind::Kretprobe,
                        "inet_csk_complete_hashdance",
                    ),
                ],
            ),
            v(
                FE,
                &[a(
                    "fe_reqsk_queue_add",
                    Kind::Fentry,
                    "inet_csk_reqsk_queue_add",
                )],
            ),
            v(
                KP,
                &[a(
                    "kp_reqsk_queue_add",
                    Kind::Kprobe,
                    "inet_csk_reqsk_queue_add",
                )],
            ),
        ],
    },
    Point {
        id: "epoll-activations",
        what: "what a woken epoll waiter found (ep_send_events' return)",
        required: &[],
        pick: Pick::First,
        kernels: "every kernel (3 parameters)",
        lost: "wakeups that found no event inside the kernel (never seen by user space) are \
               counted only when the task is woken again or the episode times out",
        counts: false,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(FE, &[fexit("fx_ep_send_events", "ep_send_events", 3)]),
            v(
                KP,
                &[
                    a("kp_ep_send_events", Kind::Kprobe, "ep_send_events"),
                    a("krp_ep_send_events", Kind::Kretprobe, "ep_send_events"),
                ],
            ),
        ],
    },
    Point {
        id: "listen",
        what: "listen() by a traced task (its listener is known from the first connection)",
        required: &[],
        pick: Pick::First,
        kernels: "every kernel",
        lost: "listeners the targets open after the start are learned at their first accept \
               (connections before it are not reported)",
        counts: false,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                TP,
                &[
                    tp("tp_listen_exit_regs", "syscalls:sys_exit_listen", &["ret"])
                        .needing(Feature::TaskPtRegs),
                ],
            ),
            v(
                TP,
                &[tp("tp_listen_enter", "syscalls:sys_enter_listen", &["fd"])],
            ),
            v(FE, &[fexit("fx_inet_listen", "inet_listen", 2)]),
            v(KP, &[a("kp_inet_listen", Kind::Kprobe, "inet_listen")]),
        ],
    },
    Point {
        id: "accept",
        what: "accept results (the child socket, or the error such as EAGAIN)",
        required: KFUNC,
        pick: Pick::First,
        kernels: "inet_accept has 4 parameters up to 6.9 and 3 from 6.10 (one fexit program \
                  each); the kprobe backend also takes successes at fd_install, because \
                  kretprobe instances run out while tasks sleep in accept",
        lost: "",
        counts: true,
        after_skip: AfterSkip::TaskCascades,
        variants: &[
            v(FE, &[fexit("fx_inet_accept4", "inet_accept", 4)]),
            v(FE, &[fexit("fx_inet_accept3", "inet_accept", 3)]),
            v(
                KP,
                &[
                    a("kp_inet_accept", Kind::Kprobe, "inet_accept"),
                    a("krp_inet_accept", Kind::Kretprobe, "inet_accept"),
                    a("kp_fd_install", Kind::Kprobe, "fd_install"),
                ],
            ),
        ],
    },
    Point {
        id: "accept4-syscall",
        what: "accept4 calls (their listening fd, both sockets at exit)",
        required: TP,
        pick: Pick::First,
        kernels: ACCEPT_SYSCALL_KERNELS,
        lost: "",
        counts: true,
        after_skip: AfterSkip::TaskCascades,
        variants: &[
            v(
                TP,
                &[
                    tp("tp_accept_exit_regs", "syscalls:sys_exit_accept4", &["ret"])
                        .needing(Feature::TaskPtRegs),
                ],
            ),
            v(
                TP,
                &[
                    tp("tp_accept_enter", "syscalls:sys_enter_accept4", &["fd"]),
                    tp("tp_accept_exit_tb", "syscalls:sys_exit_accept4", &["ret"])
                        .needing(Feature::TaskBtf),
                ],
            ),
            v(
                TP,
                &[
                    tp("tp_accept_enter", "syscalls:sys_enter_accept4", &["fd"]),
                    tp("tp_accept_exit", "syscalls:sys_exit_accept4", &["ret"]),
                ],
            ),
        ],
    },
    Point {
        id: "accept-syscall",
        what: "accept calls (servers that use accept rather than accept4)",
        required: &[],
        pick: Pick::First,
        kernels: "every kernel",
        lost: "accepts made with accept(2) rather than accept4(2) are not seen",
        counts: true,
        after_skip: AfterSkip::TaskCascades,
        variants: &[
            v(
                TP,
                &[
                    tp("tp_accept_exit_regs", "syscalls:sys_exit_accept", &["ret"])
                        .needing(Feature::TaskPtRegs),
                ],
            ),
            v(
                TP,
                &[
                    tp("tp_accept_enter", "syscalls:sys_enter_accept", &["fd"]),
                    tp("tp_accept_exit_tb", "syscalls:sys_exit_accept", &["ret"])
                        .needing(Feature::TaskBtf),
                ],
            ),
            v(
                TP,
                &[
                    tp("tp_accept_enter", "syscalls:sys_enter_accept", &["fd"]),
                    tp("tp_accept_exit", "syscalls:sys_exit_accept", &["ret"]),
                ],
            ),
        ],
    },
    Point {
        id: "io-uring-accept",
        what: "accepts made through io_uring (IORING_OP_ACCEPT), which no accept syscall \
               reports",
        required: &[],
        pick: Pick::First,
        kernels: "io_uring_complete names the request from 5.19 (whose opcode tells an \
                  accept); io_uring_submit_sqe was renamed io_uring_submit_req after 6.1; completions \
                  without their request (before 5.19, and a multishot accept's but the last) \
                  are told by the accept's submission or by its poll's wakeup \
                  (io_uring_task_add) inside a traced listener's, so an accept armed before \
                  tracing began is seen from its next connection; from 6.0, where they pass the \
                  request, BTF tracepoints (no record built for the machine's other io_uring \
                  operations)",
        lost: "accepts made through io_uring are not seen: their connections show as not \
               accepted, and the tasks they woke as woken for nothing",
        counts: true,
        // A skipped submission loses a multishot accept's later
        // completions, not only the window's.
        after_skip: AfterSkip::Anything,
        variants: &[
            // BTF tracepoints first: a classic one builds its record (the
            // opcode's name copied as a string) on every io_uring operation
            // of the machine, traced process or not. Their arguments: the
            // request (6.0+) and, for completions, (ctx, req, user_data,
            // res, cflags, extra1, extra2) until the CQE itself (after 6.12).
            v(
                TP,
                &[
                    btf_args("btf_uring_submit", "io_uring_submit_req", 1),
                    btf_args("btf_uring_task_add", "io_uring_task_add", 2),
                    btf_args("btf_uring_complete_cqe", "io_uring_complete", 3),
                ],
            ),
            v(
                TP,
                &[
                    btf_args("btf_uring_submit", "io_uring_submit_req", 1),
                    btf_args("btf_uring_task_add", "io_uring_task_add", 2),
                    btf_args("btf_uring_complete", "io_uring_complete", 7),
                ],
            ),
            v(
                TP,
                &[
                    btf_args("btf_uring_submit", "io_uring_submit_sqe", 2),
                    btf_args("btf_uring_task_add", "io_uring_task_add", 2),
                    btf_args("btf_uring_complete", "io_uring_complete", 7),
                ],
            ),
            v(
                TP,
                &[
                    tp("tp_uring_submit", "io_uring:io_uring_submit_req", URING_SUBMIT),
                    tp("tp_uring_task_add", "io_uring:io_uring_task_add", URING_TASK_ADD),
                    tp("tp_uring_complete_req", "io_uring:io_uring_complete", URING_COMPLETE_REQ),
                ],
            ),
            v(
                TP,
                &[
                    tp("tp_uring_submit", "io_uring:io_uring_submit_sqe", URING_SUBMIT),
                    tp("tp_uring_task_add", "io_uring:io_uring_task_add", URING_TASK_ADD),
                    tp("tp_uring_complete_req", "io_uring:io_uring_complete", URING_COMPLETE_REQ),
                ],
            ),
            v(
                TP,
                &[
                    tp("tp_uring_submit", "io_uring:io_uring_submit_sqe", URING_SUBMIT),
                    tp("tp_uring_task_add", "io_uring:io_uring_task_add", URING_TASK_ADD),
                    tp("tp_uring_complete", "io_uring:io_uring_complete", URING_COMPLETE),
                ],
            ),
        ],
    },
    Point {
        id: "accept-in-progress",
        what: "the first accept of tasks already blocked in accept() when tracing starts",
        required: &[],
        pick: Pick::First,
        kernels: "every kernel (fd_install)",
        lost: "the first accept of each task already blocked in accept() when tracing starts is \
               not seen",
        counts: true,
        after_skip: AfterSkip::TaskCascades,
        variants: &[v(FE, &[a("fe_fd_install", Kind::Fentry, "fd_install")])],
    },
    Point {
        id: "epoll-returns",
        what: "epoll_wait, epoll_pwait and epoll_pwait2 returning to user space",
        required: TP,
        pick: Pick::Each,
        kernels: "epoll_pwait2 is 5.11+",
        lost: "tasks returning from that call are not seen",
        counts: true,
        after_skip: AfterSkip::TaskCascades,
        variants: &[
            v(
                TP,
                &[tp("tp_poll_exit", "syscalls:sys_exit_epoll_wait", &["ret"])],
            ),
            v(
                TP,
                &[tp(
                    "tp_poll_exit",
                    "syscalls:sys_exit_epoll_pwait",
                    &["ret"],
                )],
            ),
            v(
                TP,
                &[tp(
                    "tp_poll_exit",
                    "syscalls:sys_exit_epoll_pwait2",
                    &["ret"],
                )],
            ),
        ],
    },
    Point {
        id: "epoll-wait-exit",
        what: "epoll waits returning to user space (do_epoll_wait), and the waiter's epoll \
               instance",
        required: &[],
        pick: Pick::First,
        kernels: "every kernel (4 parameters)",
        lost: "an epoll_wait that returns an error or times out after a wake is seen only at \
               the task's next wake",
        counts: true,
        after_skip: AfterSkip::TaskCascades,
        variants: &[
            v(FE, &[fexit("fx_do_epoll_wait", "do_epoll_wait", 4)]),
            // The entry clears what a missed return (kretprobe instances
            // run out) would leave behind.
            v(
                KP,
                &[
                    a("kp_do_epoll_wait", Kind::Kprobe, "do_epoll_wait"),
                    a("krp_do_epoll_wait", Kind::Kretprobe, "do_epoll_wait"),
                ],
            ),
        ],
    },
    Point {
        id: "listener-close",
        what: "a listening socket closing (inet_csk_listen_stop)",
        required: &[],
        pick: Pick::First,
        kernels: "every kernel",
        lost: "a closed listener stays known: a later socket at the same kernel address could \
               be taken for it",
        counts: false,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                FE,
                &[a(
                    "fe_inet_csk_listen_stop",
                    Kind::Fentry,
                    "inet_csk_listen_stop",
                )],
            ),
            v(
                KP,
                &[a(
                    "kp_inet_csk_listen_stop",
                    Kind::Kprobe,
                    "inet_csk_listen_stop",
                )],
            ),
        ],
    },
    Point {
        id: "epoll-close",
        what: "an epoll instance being released",
        required: &[],
        pick: Pick::First,
        kernels: "every kernel",
        lost: "a released epoll instance stays known: a later one at the same kernel address \
               could be taken for a traced task's",
        counts: false,
        after_skip: AfterSkip::Anything,
        variants: &[
            v(
                FE,
                &[a(
                    "fe_ep_eventpoll_release",
                    Kind::Fentry,
                    "ep_eventpoll_release",
                )],
            ),
            v(
                KP,
                &[a(
                    "kp_ep_eventpoll_release",
                    Kind::Kprobe,
                    "ep_eventpoll_release",
                )],
            ),
        ],
    },
];

/// Looks a point up by id.
#[cfg(test)]
pub fn point(id: &str) -> Option<&'static Point> {
    TABLE.iter().find(|p| p.id == id)
}

/// The point an eBPF program belongs to.
pub fn point_of_program(program: &str) -> Option<&'static Point> {
    TABLE.iter().find(|p| {
        p.variants
            .iter()
            .flat_map(|v| v.attach.iter())
            .any(|a| a.program == program)
    })
}

/// Every attachment in the table, once per (kind, target, program).
pub fn all_attachments() -> impl Iterator<Item = &'static Attach> {
    TABLE
        .iter()
        .flat_map(|p| p.variants.iter())
        .flat_map(|v| v.attach.iter())
}

/// Classic tracepoints the table names (`category:name`), sorted, once each.
pub fn classic_tracepoints() -> Vec<&'static str> {
    targets(Kind::Tracepoint)
}

/// BTF tracepoints the table names (event names), sorted, once each.
pub fn btf_tracepoints() -> Vec<&'static str> {
    targets(Kind::BtfTracepoint)
}

/// Whether a program of the table reads BTF tracepoint `event` by its
/// argument count (its arguments changed between versions).
pub fn btf_arguments_vary(event: &str) -> bool {
    all_attachments()
        .any(|a| a.kind == Kind::BtfTracepoint && a.target == event && a.params.is_some())
}

/// Kernel functions the table names, sorted, once each.
pub fn functions() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = all_attachments()
        .filter(|a| !matches!(a.kind, Kind::Tracepoint | Kind::BtfTracepoint))
        .map(|a| a.target)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

fn targets(kind: Kind) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = all_attachments()
        .filter(|a| a.kind == kind)
        .map(|a| a.target)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The record fields every program of a classic tracepoint reads: without
/// one the tracepoint is of no use. A program that reads more (a newer
/// record's field) is checked on its own by `KernelFacts::attach_status`.
pub fn fields_of(tracepoint: &str) -> Vec<&'static str> {
    let mut programs = all_attachments()
        .filter(|a| a.kind == Kind::Tracepoint && a.target == tracepoint)
        .map(|a| a.fields);
    let Some(first) = programs.next() else {
        return Vec::new();
    };
    let mut fields: Vec<&'static str> = first.to_vec();
    for other in programs {
        fields.retain(|f| other.contains(f));
    }
    fields.sort_unstable();
    fields.dedup();
    fields
}

/// The event name of a BTF tracepoint target or classic `category:name`.
#[cfg(feature = "test-hooks")]
pub fn event_name(target: &str) -> &str {
    target.split_once(':').map_or(target, |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_every_backend_has_required_points() {
        let mut ids: Vec<&str> = TABLE.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate point ids");
        for b in Backend::ALL {
            assert!(TABLE.iter().any(|p| p.is_required(b)), "{b}");
        }
    }

    /// Only points on a task's syscall return path leave nothing but that
    /// task's state stale when skipped; the rest (wake chains, timers, the
    /// traced set) flag the whole window after a skip.
    #[test]
    fn only_syscall_return_points_are_task_scoped() {
        let mut task: Vec<&str> = TABLE
            .iter()
            .filter(|p| p.after_skip == AfterSkip::TaskCascades)
            .map(|p| p.id)
            .collect();
        task.sort_unstable();
        assert_eq!(
            task,
            [
                "accept",
                "accept-in-progress",
                "accept-syscall",
                "accept4-syscall",
                "epoll-returns",
                "epoll-wait-exit"
            ]
        );
        for id in &task {
            assert!(point(id).expect("point").counts, "{id} flags connections");
        }
        for id in [
            "wakeups",
            "wake-queue",
            "chain-end",
            "arrival",
            "handshake",
            "timers",
            "fork",
        ] {
            assert_eq!(
                point(id).expect("point").after_skip,
                AfterSkip::Anything,
                "{id}"
            );
        }
    }

    #[test]
    fn required_backends_use_the_point() {
        for p in TABLE {
            for b in p.required {
                assert!(
                    p.variants_for(*b).next().is_some(),
                    "{} required for {b} but has no variant for it",
                    p.id
                );
            }
            if !p.required.is_empty() || p.pick == Pick::Each {
                continue;
            }
            assert!(
                !p.lost.is_empty(),
                "optional point {} must say what is lost",
                p.id
            );
        }
    }

    #[test]
    fn attach_kinds_match_their_backends() {
        for p in TABLE {
            for var in p.variants {
                for at in var.attach {
                    let ok = match at.kind {
                        Kind::Kprobe | Kind::Kretprobe => var.backends == KP,
                        Kind::Fentry | Kind::Fexit => var.backends == FE,
                        // Classic and BTF tracepoints serve every backend.
                        Kind::Tracepoint | Kind::BtfTracepoint => true,
                    };
                    assert!(ok, "{} {} in {:?}", p.id, at.program, var.backends);
                    assert!(
                        at.params.is_none() || matches!(at.kind, Kind::Fexit | Kind::BtfTracepoint),
                        "only fexit programs and BTF tracepoints say their parameters: {}",
                        at.program
                    );
                    if at.kind == Kind::Tracepoint {
                        assert!(at.target.contains(':'), "{}", at.target);
                    } else {
                        assert!(!at.target.contains(':'), "{}", at.target);
                    }
                }
            }
        }
    }

    /// The kprobe and fentry backends take everything from kernel functions
    /// and sched/sock/irq tracepoints: no syscall tracepoint puts every
    /// system call of the machine on the slow path.
    #[test]
    fn kernel_function_backends_use_no_syscall_tracepoint() {
        for p in TABLE {
            for b in [Backend::Fentry, Backend::Kprobe] {
                for var in p.variants_for(b) {
                    for at in var.attach {
                        assert!(
                            !at.target.starts_with("syscalls:"),
                            "{} uses {} for {b}",
                            p.id,
                            at.target
                        );
                    }
                }
            }
        }
    }

    /// Where `bpf_task_pt_regs` loads, the tracepoint backend's first choice
    /// of every point attaches no syscall entry tracepoint: each direction
    /// attached puts a cost on every syscall of the machine. Every variant
    /// with an entry program has such a variant before it.
    #[test]
    fn tracepoint_backend_prefers_no_syscall_entry() {
        for p in TABLE {
            let variants: Vec<_> = p.variants_for(Backend::Tracepoint).collect();
            for (i, var) in variants.iter().enumerate() {
                let enters = var
                    .attach
                    .iter()
                    .any(|at| at.target.starts_with("syscalls:sys_enter_"));
                if !enters {
                    continue;
                }
                assert!(
                    variants[..i].iter().any(|w| {
                        w.attach.iter().all(|at| {
                            !at.target.starts_with("syscalls:sys_enter_")
                                && at.target.starts_with("syscalls:sys_exit_")
                                    == (at.needs == Some(Feature::TaskPtRegs))
                        })
                    }),
                    "{}: no variant without the entry tracepoint before {:?}",
                    p.id,
                    var.attach
                );
            }
        }
    }

    /// A feature comes after the features it requires, so `check` knows their
    /// status before its own.
    #[test]
    fn features_come_after_what_they_require() {
        for (i, f) in Feature::ALL.iter().enumerate() {
            for r in f.requires() {
                assert!(Feature::ALL[..i].contains(r), "{f:?} requires {r:?}");
            }
        }
        assert_eq!(Feature::TaskPtRegs.requires(), [Feature::TaskBtf]);
    }

    #[test]
    fn substitutes_come_after_the_point_they_use() {
        for (i, p) in TABLE.iter().enumerate() {
            for var in p.variants {
                if let Some(via) = var.via {
                    let j = TABLE
                        .iter()
                        .position(|q| q.id == via)
                        .expect("via names a point");
                    assert!(j < i, "{} uses {via}, which must come first", p.id);
                    assert!(var.attach.is_empty() && var.note.is_some());
                }
            }
        }
    }

    /// Skips of the programs that carry arrivals, wakes, accepts and epoll
    /// returns flag connections; `ep_send_events` and housekeeping do not.
    #[test]
    fn which_skips_flag_connections() {
        for (program, counts) in [
            ("btf_sched_waking", true),
            ("fx_inet_accept3", true),
            ("tp_accept_exit", true),
            ("kp_complete_hashdance", true),
            ("fx_do_epoll_wait", true),
            ("krp_do_epoll_wait", true),
            ("fx_ep_send_events", false),
            ("tp_poll_exit", true),
            ("fe_inet_csk_listen_stop", false),
        ] {
            assert_eq!(
                point_of_program(program).map(|p| p.counts),
                Some(counts),
                "{program}"
            );
        }
        assert!(point_of_program("trial_tracepoint").is_none());
    }

    #[test]
    fn target_lists() {
        let tps = classic_tracepoints();
        assert!(tps.contains(&"sched:sched_waking"));
        assert!(tps.contains(&"syscalls:sys_exit_accept4"));
        assert!(tps.windows(2).all(|w| w[0] < w[1]));
        let btf = btf_tracepoints();
        assert_eq!(
            btf,
            [
                "hrtimer_expire_entry",
                "hrtimer_expire_exit",
                "inet_sock_set_state",
                "io_uring_complete",
                "io_uring_submit_req",
                "io_uring_submit_sqe",
                "io_uring_task_add",
                "sched_process_exit",
                "sched_process_fork",
                "sched_waking",
                "sk_data_ready",
                "softirq_exit",
                "timer_expire_entry",
                "timer_expire_exit"
            ]
        );
        let funcs = functions();
        for f in [
            "__wake_up_common",
            "inet_accept",
            "fd_install",
            "do_epoll_wait",
        ] {
            assert!(funcs.contains(&f), "{f}");
        }
        assert_eq!(fields_of("sched:sched_waking"), ["comm", "pid"]);
        assert_eq!(
            fields_of("sock:inet_sock_set_state"),
            ["newstate", "oldstate", "skaddr"]
        );
        assert!(fields_of("irq:softirq_exit").is_empty());
        // Only what every program on it reads: the newer program's `req`
        // and `cflags` are checked per program.
        assert_eq!(
            fields_of("io_uring:io_uring_complete"),
            ["ctx", "res", "user_data"]
        );
        assert_eq!(event_name("sock:sk_data_ready"), "sk_data_ready");
        assert_eq!(event_name("softirq_exit"), "softirq_exit");
        assert_eq!(point("accept").map(|p| p.pick), Some(Pick::First));
        assert!(point("nope").is_none());
    }
}
