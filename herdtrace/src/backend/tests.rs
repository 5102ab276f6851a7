use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::probes::TABLE;

fn refused(r: &str) -> ProbeStatus {
    ProbeStatus::Refused(r.into())
}

fn missing(r: &str) -> ProbeStatus {
    ProbeStatus::Missing(r.into())
}

fn ok_function(params: usize) -> SymbolFact {
    SymbolFact {
        kallsyms: Some(SymbolPresence::Exact),
        btf_params: Some(params),
        traceable: Some(true),
    }
}

/// Parameter counts of the table's functions on a 6.10+ kernel.
fn params_of(name: &str) -> usize {
    match name {
        "__wake_up_common" => 5,
        "ep_poll_callback" => 4,
        "inet_accept" | "ep_send_events" | "inet_csk_reqsk_queue_add" => 3,
        "inet_csk_complete_hashdance" => 4,
        "do_epoll_wait" => 4,
        "fd_install" | "inet_listen" | "ep_eventpoll_release" => 2,
        "inet_csk_listen_stop" => 1,
        other => panic!("no parameter count for {other}"),
    }
}

/// Record layouts as Linux prints them in the tracepoints' format files.
fn fields_of(tp: &str) -> BTreeMap<String, u32> {
    let pairs: &[(&str, u32)] = match tp {
        "sched:sched_waking" => &[("comm", 8), ("pid", 24), ("prio", 28), ("target_cpu", 32)],
        "sched:sched_process_fork" => &[("parent_pid", 24), ("child_comm", 28), ("child_pid", 44)],
        "sched:sched_process_exit" => &[("comm", 8), ("pid", 24)],
        "sock:sk_data_ready" => &[("skaddr", 8), ("family", 16)],
        "sock:inet_sock_set_state" => &[("skaddr", 8), ("oldstate", 16), ("newstate", 20)],
        "irq:softirq_exit" => &[("vec", 8)],
        "timer:hrtimer_expire_entry" => &[("hrtimer", 8), ("now", 16), ("function", 24)],
        "timer:hrtimer_expire_exit" => &[("hrtimer", 8)],
        "timer:timer_expire_entry" => &[("timer", 8), ("now", 16), ("function", 24)],
        "timer:timer_expire_exit" => &[("timer", 8)],
        // 6.18's layouts (5.19+ for io_uring_complete).
        "io_uring:io_uring_submit_req" => &[
            ("ctx", 8),
            ("req", 16),
            ("user_data", 24),
            ("opcode", 32),
            ("flags", 40),
        ],
        "io_uring:io_uring_complete" => &[
            ("ctx", 8),
            ("req", 16),
            ("user_data", 24),
            ("res", 32),
            ("cflags", 36),
        ],
        "io_uring:io_uring_task_add" => &[
            ("ctx", 8),
            ("req", 16),
            ("user_data", 24),
            ("opcode", 32),
            ("mask", 36),
        ],
        // 5.10's.
        "io_uring:io_uring_submit_sqe" => &[
            ("ctx", 8),
            ("opcode", 16),
            ("user_data", 24),
            ("force_nonblock", 32),
        ],
        t if t.starts_with("syscalls:sys_enter_") => &[("__syscall_nr", 8), ("fd", 16)],
        t if t.starts_with("syscalls:sys_exit_") => &[("__syscall_nr", 8), ("ret", 16)],
        other => panic!("no layout for {other}"),
    };
    pairs.iter().map(|(f, o)| ((*f).to_owned(), *o)).collect()
}

/// A kernel where everything works (like a Debian 6.12 in QEMU).
pub(crate) fn all_ok() -> KernelFacts {
    KernelFacts {
        release: "6.12.117+deb12-cloud-amd64".into(),
        version: Some((6, 12, 117)),
        btf: ProbeStatus::Ok,
        privileges: ProbeStatus::Ok,
        programs: ProgramType::ALL
            .into_iter()
            .map(|t| (t, ProbeStatus::Ok))
            .collect(),
        features: Feature::ALL
            .into_iter()
            .map(|f| (f, ProbeStatus::Ok))
            .collect(),
        tracepoints: probes::classic_tracepoints()
            .into_iter()
            .map(|t| (t.to_owned(), ProbeStatus::Ok))
            .collect(),
        btf_tracepoints: probes::btf_tracepoints()
            .into_iter()
            .map(|t| (t.to_owned(), ProbeStatus::Ok))
            .collect(),
        // 6.12's io_uring arguments: the request; seven for a completion.
        btf_tracepoint_params: [
            ("io_uring_submit_req", 1),
            ("io_uring_task_add", 2),
            ("io_uring_complete", 7),
        ]
        .map(|(e, n)| (e.to_owned(), n))
        .into(),
        functions: probes::functions()
            .into_iter()
            .map(|f| (f.to_owned(), ok_function(params_of(f))))
            .collect(),
        tracepoint_fields: probes::classic_tracepoints()
            .into_iter()
            .map(|t| (t.to_owned(), fields_of(t)))
            .collect(),
    }
}

/// The development host: tracepoints and BTF tracepoints only.
fn this_host() -> KernelFacts {
    let mut f = all_ok();
    // 6.18: a completion passes (ctx, req, cqe).
    f.btf_tracepoint_params
        .insert("io_uring_complete".into(), 3);
    f.programs
        .insert(ProgramType::Fentry, refused("load returned EPERM"));
    f.programs.insert(
        ProgramType::Kprobe,
        refused("kernel built without CONFIG_KPROBES"),
    );
    f
}

fn programs(plan: &Plan) -> Vec<&'static str> {
    plan.attachments().map(|a| a.program).collect()
}

/// Every tracepoint event of a category named in the table is gone (as on a
/// kernel without it): its classic and BTF forms.
fn without_event(f: &mut KernelFacts, event: &str) {
    for (name, status) in f.tracepoints.iter_mut() {
        if probes::event_name(name) == event {
            *status = missing("gone");
        }
    }
    if let Some(s) = f.btf_tracepoints.get_mut(event) {
        *s = missing("gone");
    }
}

#[test]
fn everything_works_auto_takes_fentry() {
    let c = choose(BackendRequest::Auto, &all_ok()).expect("fentry");
    assert_eq!(c.backend, Backend::Fentry);
    assert!(c.skipped.is_empty());
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    assert_eq!(c.to_string(), "fentry");
    for (req, want) in [
        (BackendRequest::Fentry, Backend::Fentry),
        (BackendRequest::Kprobe, Backend::Kprobe),
        (BackendRequest::Tracepoint, Backend::Tracepoint),
    ] {
        assert_eq!(choose(req, &all_ok()).expect("explicit").backend, want);
    }
}

/// What each backend attaches on a kernel that has everything: the BTF
/// tracepoints (cheaper) win over the classic ones, fexit reads the return
/// value after inet_accept's 3 parameters (6.10+), and only the tracepoint
/// backend uses syscall tracepoints.
#[test]
fn plans_on_a_complete_kernel() {
    let f = all_ok();
    let fentry = plan(Backend::Fentry, &f).expect("fentry");
    assert_eq!(
        programs(&fentry),
        [
            "btf_sched_waking",
            "btf_sched_process_fork",
            "btf_sched_process_exit",
            "btf_hrtimer_expire_entry",
            "btf_hrtimer_expire_exit",
            "btf_timer_expire_entry",
            "btf_timer_expire_exit",
            "fe_wake_up_common",
            "fx_wake_up_common",
            "fe_ep_poll_callback",
            "fe_complete_hashdance",
            "fx_complete_hashdance",
            "fe_reqsk_queue_add",
            "fx_ep_send_events",
            "fx_inet_listen",
            "fx_inet_accept3",
            "fe_fd_install",
            "fx_do_epoll_wait",
            "fe_inet_csk_listen_stop",
            "fe_ep_eventpoll_release",
        ]
    );
    let kprobe = plan(Backend::Kprobe, &f).expect("kprobe");
    assert_eq!(
        programs(&kprobe),
        [
            "btf_sched_waking",
            "btf_sched_process_fork",
            "btf_sched_process_exit",
            "btf_hrtimer_expire_entry",
            "btf_hrtimer_expire_exit",
            "btf_timer_expire_entry",
            "btf_timer_expire_exit",
            "kp_wake_up_common",
            "krp_wake_up_common",
            "kp_ep_poll_callback",
            "kp_complete_hashdance",
            "krp_complete_hashdance",
            "kp_reqsk_queue_add",
            "kp_ep_send_events",
            "krp_ep_send_events",
            "kp_inet_listen",
            "kp_inet_accept",
            "krp_inet_accept",
            "kp_fd_install",
            "kp_do_epoll_wait",
            "krp_do_epoll_wait",
            "kp_inet_csk_listen_stop",
            "kp_ep_eventpoll_release",
        ]
    );
    let tp = plan(Backend::Tracepoint, &f).expect("tracepoint");
    let targets: Vec<String> = tp.attachments().map(|a| a.label()).collect();
    assert_eq!(
        targets,
        [
            "tp_btf sched_waking",
            "tp_btf sched_process_fork",
            "tp_btf sched_process_exit",
            "tp_btf hrtimer_expire_entry",
            "tp_btf hrtimer_expire_exit",
            "tp_btf timer_expire_entry",
            "tp_btf timer_expire_exit",
            "tp_btf inet_sock_set_state",
            "tp_btf sk_data_ready",
            "tp_btf softirq_exit",
            "tracepoint syscalls:sys_exit_listen (with bpf_task_pt_regs)",
            "tracepoint syscalls:sys_exit_accept4 (with bpf_task_pt_regs)",
            "tracepoint syscalls:sys_exit_accept (with bpf_task_pt_regs)",
            "tp_btf io_uring_submit_req",
            "tp_btf io_uring_task_add",
            "tp_btf io_uring_complete",
            "tracepoint syscalls:sys_exit_epoll_wait",
            "tracepoint syscalls:sys_exit_epoll_pwait",
            "tracepoint syscalls:sys_exit_epoll_pwait2",
        ]
    );
    for p in [&fentry, &kprobe] {
        assert!(
            p.attachments().all(|a| !a.target.starts_with("syscalls:")),
            "{:?}",
            programs(p)
        );
    }
    assert!(!tp.arrival_substitute());
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
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    assert_eq!(
        choose(BackendRequest::Kprobe, &this_host()),
        Err("kprobe backend unavailable: refused: kernel built without CONFIG_KPROBES".into())
    );
}

#[test]
fn fexit_variant_follows_the_parameter_count() {
    let mut f = all_ok();
    f.functions.insert("inet_accept".into(), ok_function(4));
    let p = plan(Backend::Fentry, &f).expect("pre-6.10 form");
    assert!(programs(&p).contains(&"fx_inet_accept4"));
    assert!(!programs(&p).contains(&"fx_inet_accept3"));
    // A form no program was written for: fentry refused, kprobe unaffected.
    f.functions.insert("inet_accept".into(), ok_function(5));
    let err = choose(BackendRequest::Fentry, &f).expect_err("no variant");
    assert_eq!(
        err,
        "fentry backend unavailable: fexit inet_accept missing: has 5 parameters here, this \
         program reads 4; fexit inet_accept missing: has 5 parameters here, this program reads 3"
    );
    let c = choose(BackendRequest::Auto, &f).expect("kprobe");
    assert_eq!(c.backend, Backend::Kprobe);
    // An optional fexit with the wrong form is a warning, not a refusal.
    let mut f = all_ok();
    f.functions.insert("do_epoll_wait".into(), ok_function(5));
    let c = choose(BackendRequest::Fentry, &f).expect("fentry");
    assert_eq!(
        c.warnings(),
        [
            "fexit do_epoll_wait missing: has 5 parameters here, this program reads 4: an \
          epoll_wait that returns an error or times out after a wake is seen only at the \
          task's next wake"
        ]
    );
}

#[test]
fn compiler_clones_are_refused_renames_are_not() {
    let mut f = all_ok();
    f.functions.insert(
        "ep_poll_callback".into(),
        SymbolFact {
            kallsyms: Some(SymbolPresence::Suffixed("ep_poll_callback.isra.0".into())),
            btf_params: None,
            traceable: Some(true),
        },
    );
    let c = choose(BackendRequest::Auto, &f).expect("tracepoint");
    assert_eq!(c.backend, Backend::Tracepoint);
    assert_eq!(
        c.skipped,
        [
            "fentry skipped: fentry ep_poll_callback missing: only present as \
             ep_poll_callback.isra.0, fentry needs the exact name",
            "kprobe skipped: kprobe ep_poll_callback refused: only present as the compiler \
             clone ep_poll_callback.isra.0, whose parameters cannot be verified"
        ]
    );
    let renamed = SymbolFact {
        kallsyms: Some(SymbolPresence::Suffixed(
            "ep_poll_callback.llvm.8812".into(),
        )),
        btf_params: None,
        traceable: Some(true),
    };
    assert!(renamed.kprobe_status().is_ok());
    assert_eq!(
        renamed.attach_name("ep_poll_callback"),
        "ep_poll_callback.llvm.8812"
    );
    assert_eq!(
        ok_function(2).attach_name("inet_listen"),
        "inet_listen",
        "an exact symbol keeps its name"
    );
    // The kprobe plan attaches to the renamed symbol, the others by name.
    let mut f = all_ok();
    f.functions.insert("ep_poll_callback".into(), renamed);
    let p = plan(Backend::Kprobe, &f).expect("kprobe plan");
    assert!(p
        .attachments()
        .any(|a| a.kind == Kind::Kprobe && a.target == "ep_poll_callback"));
    assert_eq!(
        p.kernel_symbol("ep_poll_callback"),
        "ep_poll_callback.llvm.8812"
    );
    assert_eq!(p.kernel_symbol("inet_listen"), "inet_listen");
    assert_eq!(p.renamed.len(), 1);
    assert!(plan(Backend::Kprobe, &all_ok())
        .expect("plan")
        .renamed
        .is_empty());
}

#[test]
fn symbol_fact_rules() {
    let notrace = SymbolFact {
        traceable: Some(false),
        ..ok_function(2)
    };
    assert!(notrace.kprobe_status().is_ok());
    assert_eq!(
        notrace.fentry_status(),
        refused("not in available_filter_functions (notrace)")
    );
    let no_btf = SymbolFact {
        btf_params: None,
        ..ok_function(2)
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
fn classic_tracepoints_stand_in_for_btf_ones() {
    let mut f = this_host();
    f.programs.insert(ProgramType::TpBtf, refused("no"));
    let p = plan(Backend::Tracepoint, &f).expect("classic");
    assert!(p.attachments().all(|a| a.kind == Kind::Tracepoint));
    assert!(programs(&p).contains(&"tp_sched_waking"));
    assert!(p.warnings.is_empty(), "classic costs more, loses nothing");
    // One BTF event missing: only that point falls back.
    let mut f = all_ok();
    f.btf_tracepoints
        .insert("sched_waking".into(), missing("no btf_trace_sched_waking"));
    let p = plan(Backend::Fentry, &f).expect("fentry");
    assert_eq!(
        p.point("wakeups").map(|x| programs_of(&x.used)),
        Some(vec!["tp_sched_waking"])
    );
    assert_eq!(
        p.point("wakeups").map(|x| x.unusable.clone()),
        Some(vec![
            "tp_btf sched_waking missing: no btf_trace_sched_waking".to_owned()
        ])
    );
    assert_eq!(
        p.point("fork").map(|x| programs_of(&x.used)),
        Some(vec!["btf_sched_process_fork"])
    );
}

/// Where a trial load shows `bpf_task_pt_regs` (5.15+), the accept exit
/// reads the listening fd from the task's registers and no entry program is
/// attached; without it the entry keeps the fd, and the exit finds the fd
/// table through `bpf_get_current_task_btf` where that loads (5.11+),
/// through helper reads otherwise (5.10). No warning: only the cost differs.
#[test]
fn accept_exit_uses_the_helpers_that_load() {
    let p = plan(Backend::Tracepoint, &this_host()).expect("plan");
    for id in ["accept4-syscall", "accept-syscall"] {
        assert_eq!(
            p.point(id).map(|x| programs_of(&x.used)),
            Some(vec!["tp_accept_exit_regs"]),
            "{id}"
        );
    }
    assert_eq!(
        p.point("listen").map(|x| programs_of(&x.used)),
        Some(vec!["tp_listen_exit_regs"])
    );

    let mut f = this_host();
    f.features.insert(
        Feature::TaskPtRegs,
        missing("a program calling it: load returned EINVAL"),
    );
    let p = plan(Backend::Tracepoint, &f).expect("plan");
    let accept4 = p.point("accept4-syscall").expect("accept4");
    assert_eq!(
        programs_of(&accept4.used),
        ["tp_accept_enter", "tp_accept_exit_tb"]
    );
    assert_eq!(
        accept4.unusable,
        ["helper bpf_task_pt_regs missing: a program calling it: load returned EINVAL"]
    );
    assert_eq!(
        p.point("listen").map(|x| programs_of(&x.used)),
        Some(vec!["tp_listen_enter"])
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);

    // 5.10: neither helper. `check` reports bpf_task_pt_regs as needing the
    // other; the reason is said once for the two variants that fail by it.
    let mut f = this_host();
    f.features.insert(
        Feature::TaskBtf,
        missing("a program calling it: load returned EINVAL"),
    );
    let p = plan(Backend::Tracepoint, &f).expect("plan");
    let accept4 = p.point("accept4-syscall").expect("accept4");
    assert_eq!(
        programs_of(&accept4.used),
        ["tp_accept_enter", "tp_accept_exit"]
    );
    assert_eq!(
        accept4.unusable,
        ["helper bpf_get_current_task_btf missing: a program calling it: load returned EINVAL"]
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    // The kprobe and fentry backends do not use the syscall tracepoints.
    assert!(
        !programs(&plan(Backend::Fentry, &all_ok()).expect("fentry"))
            .contains(&"tp_accept_exit_tb")
    );
}

fn programs_of(v: &[Attach]) -> Vec<&'static str> {
    v.iter().map(|a| a.program).collect()
}

#[test]
fn a_tracepoint_without_a_field_is_not_used() {
    let mut f = this_host();
    f.programs.insert(ProgramType::TpBtf, refused("no"));
    f.tracepoints.insert(
        "sched:sched_waking".into(),
        missing("no field comm in its format"),
    );
    assert_eq!(
        choose(BackendRequest::Tracepoint, &f),
        Err(
            "tracepoint backend unavailable: tp_btf sched_waking refused: no (program tp_btf); \
             tracepoint sched:sched_waking missing: no field comm in its format"
                .into()
        )
    );
}

#[test]
fn arrival_substitute_before_6_6() {
    let mut f = all_ok();
    without_event(&mut f, "sk_data_ready");
    let p = plan(Backend::Tracepoint, &f).expect("substitute");
    assert!(p.arrival_substitute());
    assert_eq!(p.point("arrival").and_then(|a| a.via), Some("handshake"));
    assert_eq!(p.warnings, [probes::ARRIVAL_SUBSTITUTE_NOTE]);
    // Without the handshake tracepoint too there is no arrival at all.
    without_event(&mut f, "inet_sock_set_state");
    assert_eq!(
        plan(Backend::Tracepoint, &f),
        Err(
            "tp_btf sk_data_ready missing: gone; tracepoint sock:sk_data_ready missing: gone; \
             point handshake not attached"
                .into()
        )
    );
    // The kprobe/fentry backends do not use either.
    assert!(plan(Backend::Fentry, &f).is_ok());
}

#[test]
fn optional_points_warn_once_each_with_the_loss() {
    let mut f = all_ok();
    without_event(&mut f, "softirq_exit");
    without_event(&mut f, "sched_process_fork");
    without_event(&mut f, "sys_exit_epoll_pwait2");
    for gone in ["syscalls:sys_exit_listen", "syscalls:sys_enter_listen"] {
        f.tracepoints.insert(gone.into(), missing("gone"));
    }
    let p = plan(Backend::Tracepoint, &f).expect("tracepoint");
    assert_eq!(
        p.warnings,
        [
            "tp_btf sched_process_fork missing: gone; tracepoint sched:sched_process_fork \
             missing: gone: processes and threads started after the tracer are not followed",
            "tp_btf softirq_exit missing: gone; tracepoint irq:softirq_exit missing: gone: wake \
             chains end only by time (--chain-window-us)",
            "tracepoint syscalls:sys_exit_listen missing: gone; tracepoint \
             syscalls:sys_enter_listen missing: gone: listeners the targets open after the \
             start are learned at their first accept (connections before it are not reported)",
            "tracepoint syscalls:sys_exit_epoll_pwait2 missing: gone: tasks returning from that \
             call are not seen",
        ]
    );
    assert!(p.point("chain-end").is_some_and(|c| !c.attached()));
}

#[test]
fn each_pick_points_need_one_variant() {
    let calls = [
        "syscalls:sys_exit_epoll_wait",
        "syscalls:sys_exit_epoll_pwait",
        "syscalls:sys_exit_epoll_pwait2",
    ];
    for mask in 0u8..8 {
        let mut f = this_host();
        for (i, c) in calls.iter().enumerate() {
            if mask & (1 << i) == 0 {
                f.tracepoints.insert((*c).into(), missing("absent"));
            }
        }
        let result = choose(BackendRequest::Tracepoint, &f);
        if mask == 0 {
            assert_eq!(
                result,
                Err(
                    "tracepoint backend unavailable: tracepoint syscalls:sys_exit_epoll_wait \
                     missing: absent; tracepoint syscalls:sys_exit_epoll_pwait missing: absent; \
                     tracepoint syscalls:sys_exit_epoll_pwait2 missing: absent"
                        .into()
                )
            );
            continue;
        }
        let c = result.expect("one is enough");
        let used: Vec<&str> = c
            .plan
            .point("epoll-returns")
            .map(|p| p.used.iter().map(|a| a.target).collect())
            .unwrap_or_default();
        let want: Vec<&str> = (0..3)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| calls[i])
            .collect();
        assert_eq!(used, want);
        assert_eq!(c.warnings().len(), 3 - want.len(), "{:?}", c.warnings());
    }
}

/// Before 5.12 the kernel does not count the runs its recursion guard skips:
/// said for the backends that use guarded program types, not for fentry.
#[test]
fn old_kernels_warn_that_skips_are_not_counted() {
    let mut f = all_ok();
    f.version = Some((5, 10, 223));
    for (b, warned) in [
        (Backend::Fentry, false),
        (Backend::Kprobe, true),
        (Backend::Tracepoint, true),
    ] {
        let p = plan(b, &f).expect("plan");
        assert_eq!(
            p.warnings.iter().any(|w| w == UNCOUNTED_SKIPS),
            warned,
            "{b}: {:?}",
            p.warnings
        );
    }
    f.version = Some((5, 12, 0));
    // From 5.12 only the missed return probes (counted from 6.7) are said.
    assert_eq!(
        plan(Backend::Kprobe, &f).expect("plan").warnings,
        [UNCOUNTED_KRETPROBE_MISSES]
    );
}

/// Before 6.7 the kernel does not report a kprobe link's missed runs: said
/// for the kprobe backend (it uses return probes) and no other.
#[test]
fn kprobe_backend_warns_that_missed_returns_are_not_counted_before_6_7() {
    let mut f = all_ok();
    for (version, warned) in [((6, 1, 192), true), ((6, 6, 99), true), ((6, 7, 0), false)] {
        f.version = Some(version);
        for b in Backend::ALL {
            let p = plan(b, &f).expect("plan");
            assert_eq!(
                p.warnings.iter().any(|w| w == UNCOUNTED_KRETPROBE_MISSES),
                warned && b == Backend::Kprobe,
                "{b} on {version:?}: {:?}",
                p.warnings
            );
        }
    }
}

#[test]
fn without_btf_no_backend_runs() {
    let mut f = all_ok();
    f.btf = missing("no /sys/kernel/btf/vmlinux");
    assert_eq!(
        choose(BackendRequest::Auto, &f),
        Err(
            "no backend works on this kernel (fentry skipped: kernel BTF missing: no \
             /sys/kernel/btf/vmlinux; kprobe skipped: kernel BTF missing: no \
             /sys/kernel/btf/vmlinux; tracepoint skipped: kernel BTF missing: no \
             /sys/kernel/btf/vmlinux)"
                .into()
        )
    );
}

#[test]
fn a_plan_the_kernel_refused_is_skipped_with_that_reason() {
    let failed = [(
        Backend::Fentry,
        "loading fx_inet_accept3 for inet_accept: Permission denied".to_owned(),
    )];
    let c = choose_from(BackendRequest::Auto, &all_ok(), &failed).expect("kprobe");
    assert_eq!(c.backend, Backend::Kprobe);
    assert_eq!(
        c.skipped,
        ["fentry skipped: loading fx_inet_accept3 for inet_accept: Permission denied"]
    );
    assert_eq!(
        choose_from(BackendRequest::Fentry, &all_ok(), &failed),
        Err(
            "fentry backend unavailable: loading fx_inet_accept3 for inet_accept: Permission \
             denied"
                .into()
        )
    );
}

#[test]
fn request_names_and_candidates() {
    use clap::ValueEnum;
    let names: Vec<_> = BackendRequest::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value())
        .map(|p| p.get_name().to_owned())
        .collect();
    assert_eq!(names, ["auto", "fentry", "kprobe", "tracepoint"]);
    assert_eq!(BackendRequest::default(), BackendRequest::Auto);
    assert_eq!(BackendRequest::Auto.candidates(), Backend::ALL);
    assert_eq!(BackendRequest::Kprobe.candidates(), [Backend::Kprobe]);
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
}

/// Every single gap a kernel can have (one target of the table missing, or
/// one program type refused) against an independent statement of what the
/// table requires: auto is the first explicit request that works, each
/// skip line carries that request's reason, required points are never
/// missing from a plan, and no warning is said twice.
#[test]
fn every_single_gap_is_planned_consistently() {
    let mut gaps: Vec<(String, KernelFacts)> = Vec::new();
    for t in ProgramType::ALL {
        let mut f = all_ok();
        f.programs.insert(t, refused("simulated"));
        gaps.push((format!("program {}", t.name()), f));
    }
    for at in probes::all_attachments() {
        let mut f = all_ok();
        match at.kind {
            Kind::Tracepoint => {
                f.tracepoints.insert(at.target.into(), missing("simulated"));
            }
            Kind::BtfTracepoint => {
                f.btf_tracepoints
                    .insert(at.target.into(), missing("simulated"));
            }
            _ => {
                f.functions.insert(
                    at.target.into(),
                    SymbolFact {
                        kallsyms: Some(SymbolPresence::Absent),
                        btf_params: None,
                        traceable: Some(false),
                    },
                );
            }
        }
        gaps.push((at.label(), f));
    }
    assert!(gaps.len() > 40, "{}", gaps.len());
    for (what, f) in &gaps {
        let explicit: Vec<Result<Choice, String>> = Backend::ALL
            .iter()
            .map(|b| choose(BackendRequest::from(*b), f))
            .collect();
        for (b, r) in Backend::ALL.iter().zip(&explicit) {
            // Independent: a backend works iff every required point of the
            // table has a variant for it whose attachments are all usable here.
            let usable = |v: &Variant| {
                v.via.is_none_or(|via| {
                    probes::point(via).is_some_and(|p| {
                        p.variants_for(*b)
                            .any(|pv| pv.attach.iter().all(|a| f.attach_status(a).is_ok()))
                    })
                }) && v.attach.iter().all(|a| f.attach_status(a).is_ok())
            };
            let works = f.program(b.program_type()).is_ok()
                && TABLE
                    .iter()
                    .filter(|p| p.is_required(*b))
                    .all(|p| p.variants_for(*b).any(usable));
            assert_eq!(r.is_ok(), works, "{what}: {b}: {r:?}");
            if let Ok(c) = r {
                let unique: BTreeSet<&String> = c.warnings().iter().collect();
                assert_eq!(
                    unique.len(),
                    c.warnings().len(),
                    "{what}: {:?}",
                    c.warnings()
                );
                for p in TABLE.iter().filter(|p| p.is_required(*b)) {
                    assert!(
                        c.plan.point(p.id).is_some_and(PointPlan::attached),
                        "{what}"
                    );
                }
            }
        }
        let auto = choose(BackendRequest::Auto, f);
        match explicit.iter().position(Result::is_ok) {
            Some(i) => {
                let c = auto.expect("some backend");
                assert_eq!(c.backend, Backend::ALL[i], "{what}");
                assert_eq!(c.skipped.len(), i);
                for (j, line) in c.skipped.iter().enumerate() {
                    let reason = explicit[j].as_ref().expect_err("skipped");
                    let reason = reason
                        .strip_prefix(&format!("{} backend unavailable: ", Backend::ALL[j]))
                        .expect("explicit error prefix");
                    assert_eq!(line, &format!("{} skipped: {reason}", Backend::ALL[j]));
                }
            }
            None => assert!(auto.expect_err("none").starts_with("no backend works")),
        }
    }
}

/// The io_uring tracepoints' arguments changed three times; each shape has
/// its BTF programs, and a shape none of them reads takes the classic
/// tracepoints (their record fields are named alike in every version).
#[test]
fn io_uring_btf_programs_follow_the_arguments_of_each_kernel() {
    let used = |f: &KernelFacts| -> Vec<String> {
        let p = plan(Backend::Tracepoint, f).expect("plan");
        let point = p.point("io-uring-accept").expect("point");
        point
            .used
            .iter()
            .map(|a| format!("{} {}", a.program, a.target))
            .collect()
    };
    // 6.18 and 7.x: the completion passes its CQE.
    assert_eq!(
        used(&this_host()),
        [
            "btf_uring_submit io_uring_submit_req",
            "btf_uring_task_add io_uring_task_add",
            "btf_uring_complete_cqe io_uring_complete"
        ]
    );
    // 6.12: seven completion arguments.
    assert_eq!(
        used(&all_ok()),
        [
            "btf_uring_submit io_uring_submit_req",
            "btf_uring_task_add io_uring_task_add",
            "btf_uring_complete io_uring_complete"
        ]
    );
    // 6.1: the submission's old name, with (req, force_nonblock).
    let mut six_one = all_ok();
    without_event(&mut six_one, "io_uring_submit_req");
    six_one
        .btf_tracepoint_params
        .insert("io_uring_submit_sqe".into(), 2);
    assert_eq!(
        used(&six_one),
        [
            "btf_uring_submit io_uring_submit_sqe",
            "btf_uring_task_add io_uring_task_add",
            "btf_uring_complete io_uring_complete"
        ]
    );
    // Debian's 5.10: no request argument anywhere: the classic records.
    let mut old = six_one.clone();
    for (event, n) in [
        ("io_uring_submit_sqe", 7),
        ("io_uring_task_add", 4),
        ("io_uring_complete", 4),
    ] {
        old.btf_tracepoint_params.insert(event.into(), n);
    }
    assert_eq!(
        used(&old),
        [
            "tp_uring_submit io_uring:io_uring_submit_sqe",
            "tp_uring_task_add io_uring:io_uring_task_add",
            "tp_uring_complete_req io_uring:io_uring_complete"
        ]
    );
    // A BTF without the prototype counts as a different shape, and says so.
    let mut unknown = all_ok();
    unknown.btf_tracepoint_params.remove("io_uring_task_add");
    assert!(used(&unknown)[0].starts_with("tp_uring_submit "));
    let at = probes::TABLE
        .iter()
        .flat_map(|p| p.variants)
        .flat_map(|v| v.attach)
        .find(|a| a.program == "btf_uring_complete_cqe")
        .expect("program");
    assert_eq!(
        all_ok().attach_status(at),
        Err(
            "tp_btf io_uring_complete missing: passes 7 arguments here, this program reads 3"
                .into()
        )
    );
    assert_eq!(
        unknown.attach_status(&probes::Attach {
            target: "io_uring_task_add",
            ..*at
        }),
        Err("tp_btf io_uring_task_add missing: has no prototype in BTF".into())
    );
}
