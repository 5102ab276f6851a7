use super::*;
use crate::backend::tests::all_ok;
use crate::probes::Kind;

fn refused(r: &str) -> ProbeStatus {
    ProbeStatus::Refused(r.into())
}

/// The development host as `check` sees it.
fn host_like() -> Report {
    let mut facts = all_ok();
    facts.release = "6.18.44-fc-v782".into();
    facts.version = Some((6, 18, 44));
    facts
        .programs
        .insert(ProgramType::Fentry, refused("load returned EPERM"));
    facts.programs.insert(
        ProgramType::Kprobe,
        refused("kernel built without CONFIG_KPROBES"),
    );
    Report {
        facts,
        privilege: Privilege::Root,
        config: Ok("/proc/config.gz".into()),
        tracefs: Ok("/sys/kernel/tracing".into()),
        kallsyms: Ok(()),
        filter_functions: Err("reading x: Operation not permitted (os error 1)".into()),
        offsets: Ok(KernelOffsets {
            task_struct_pid: Some(1264),
            ..KernelOffsets::default()
        }),
        attach_failed: Vec::new(),
    }
}

#[test]
fn text_report_lines() {
    let text = render_text(&host_like());
    let lines: Vec<&str> = text.lines().collect();
    let want_in_order = [
        "kernel: 6.18.44-fc-v782 (6.18.44)",
        "btf: ok (/sys/kernel/btf/vmlinux)",
        "kernel config: ok (/proc/config.gz)",
        "privileges: ok (root)",
        "tracefs: ok (/sys/kernel/tracing)",
        "program tracepoint: ok",
        "program tp_btf: ok",
        "program kprobe: refused: kernel built without CONFIG_KPROBES",
        "program fentry: refused: load returned EPERM",
        "helper bpf_get_current_task_btf: ok",
        "helper bpf_task_pt_regs: ok",
        "kallsyms: ok",
        "available_filter_functions: refused: reading x: Operation not permitted (os error 1)",
        "function __wake_up_common: ok (5 params)",
        "function do_epoll_wait: ok (4 params)",
    ];
    assert_eq!(&lines[..want_in_order.len()], want_in_order);
    // One line per table target.
    for f in probes::functions() {
        assert!(text.contains(&format!("function {f}: ok (")), "{f}");
    }
    for t in probes::classic_tracepoints() {
        assert!(text.contains(&format!("tracepoint {t}: ok\n")), "{t}");
    }
    for t in probes::btf_tracepoints() {
        // Events read by argument count show it (6.12's io_uring here).
        let want = match t {
            "io_uring_submit_req" => "ok (1 argument)",
            "io_uring_task_add" => "ok (2 arguments)",
            "io_uring_complete" => "ok (7 arguments)",
            _ => "ok",
        };
        assert!(
            text.contains(&format!("btf tracepoint {t}: {want}\n")),
            "{t}"
        );
    }
    assert!(lines.contains(&"btf offset task_struct.tgid: missing (lost: process of forked tasks)"));
    assert!(!lines.iter().any(|l| l.contains("task_struct.pid")));
    assert!(lines.contains(&"backend fentry: unavailable (refused: load returned EPERM)"));
    assert!(lines.contains(&"backend tracepoint: ok"));
    assert!(lines.contains(&"  wakeups: tp_btf sched_waking"));
    assert!(lines.contains(
        &"  epoll-returns: tracepoint syscalls:sys_exit_epoll_wait, tracepoint \
          syscalls:sys_exit_epoll_pwait, tracepoint syscalls:sys_exit_epoll_pwait2"
    ));
    assert_eq!(
        lines.last().copied(),
        Some(
            "backend auto: tracepoint (fentry skipped: refused: load returned EPERM; \
             kprobe skipped: refused: kernel built without CONFIG_KPROBES)"
        )
    );
}

#[test]
fn a_plan_refused_at_attach_is_reported_as_refused() {
    let mut r = host_like();
    r.attach_failed = vec![(
        Backend::Tracepoint,
        "attaching btf_sched_waking to sched_waking: EINVAL".into(),
    )];
    let text = render_text(&r);
    assert!(text.contains(
        "backend tracepoint: unavailable (attaching btf_sched_waking to sched_waking: EINVAL)\n"
    ));
    assert!(text.contains("backend auto: none (no backend works on this kernel ("));
    let v = render_json(&r);
    assert_eq!(v["backend"]["auto"]["status"], json!("refused"));
    assert_eq!(
        v["backends"]["tracepoint"]["reason"],
        json!("tracepoint backend unavailable: attaching btf_sched_waking to sched_waking: EINVAL")
    );
}

#[test]
fn text_report_non_root() {
    let mut r = host_like();
    r.privilege = Privilege::Insufficient {
        uid: 1000,
        cap_eff: 0,
    };
    r.facts.privileges = refused(
        "need root or CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE (current uid 1000)",
    );
    for t in ProgramType::ALL {
        r.facts
            .programs
            .insert(t, refused("needs root or CAP_BPF+CAP_PERFMON"));
    }
    let text = render_text(&r);
    assert!(
        text.contains("privileges: refused: need root or CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE (current uid 1000)\n")
    );
    for p in ["tracepoint", "tp_btf", "kprobe", "fentry"] {
        assert!(
            text.contains(&format!(
                "program {p}: refused: needs root or CAP_BPF+CAP_PERFMON\n"
            )),
            "{text}"
        );
    }
    // The rest is still checked and printed.
    assert!(text.contains("function ep_poll_callback: ok (4 params)\n"));
    assert!(text.contains("tracepoint sched:sched_waking: ok\n"));
    assert!(text.contains("backend auto: none (no backend works on this kernel ("));
}

#[test]
fn text_report_warnings_and_missing_btf() {
    let mut r = host_like();
    for s in [
        r.facts.tracepoints.get_mut("sock:sk_data_ready"),
        r.facts.btf_tracepoints.get_mut("sk_data_ready"),
    ]
    .into_iter()
    .flatten()
    {
        *s = ProbeStatus::Missing("no events/sock/sk_data_ready in tracefs".into());
    }
    let text = render_text(&r);
    assert!(text.contains(
        "tracepoint sock:sk_data_ready: missing: no events/sock/sk_data_ready in tracefs\n"
    ));
    assert!(text.contains("  arrival: via handshake\n"), "{text}");
    assert!(
        text.contains("  warning: sock:sk_data_ready missing (added in 6.6)"),
        "{text}"
    );
    r.facts.btf = ProbeStatus::Missing("no /sys/kernel/btf/vmlinux".into());
    r.offsets = Err("no /sys/kernel/btf/vmlinux".into());
    let text = render_text(&r);
    assert!(text.contains("btf: missing: no /sys/kernel/btf/vmlinux\n"));
    assert!(text.contains("btf offsets: missing: no /sys/kernel/btf/vmlinux\n"));
    assert!(text.contains(
        "backend tracepoint: unavailable (kernel BTF missing: no /sys/kernel/btf/vmlinux)\n"
    ));
}

#[test]
fn tracefs_lines() {
    let mut r = host_like();
    r.tracefs = Err(TracefsError::Denied("/sys/kernel/tracing".into()));
    assert!(render_text(&r)
        .contains("tracefs: refused: permission denied reading /sys/kernel/tracing\n"));
    assert_eq!(
        render_json(&r)["tracefs"],
        json!({"status": "refused", "reason": "permission denied reading /sys/kernel/tracing"})
    );
    r.tracefs = Err(TracefsError::NotMounted);
    assert!(render_text(&r).contains("tracefs: missing: tracefs not mounted"));
    assert_eq!(render_json(&r)["tracefs"]["status"], json!("missing"));
    assert_eq!(
        render_json(&host_like())["tracefs"],
        json!({"status": "ok", "path": "/sys/kernel/tracing"})
    );
}

fn sym(params: Option<usize>) -> SymbolFact {
    SymbolFact {
        kallsyms: Some(SymbolPresence::Exact),
        btf_params: params,
        traceable: None,
    }
}

#[test]
fn function_lines() {
    assert_eq!(function_line(&sym(Some(5))), "ok (5 params)");
    assert_eq!(
        function_line(&sym(None)),
        "ok (fentry: missing: no BTF function of this name)"
    );
    let clone = SymbolFact {
        kallsyms: Some(SymbolPresence::Suffixed("ep_send_events.isra.0".into())),
        btf_params: None,
        traceable: Some(true),
    };
    assert_eq!(
        function_line(&clone),
        "refused: only present as the compiler clone ep_send_events.isra.0, whose parameters \
         cannot be verified"
    );
    let renamed = SymbolFact {
        kallsyms: Some(SymbolPresence::Suffixed("fd_install.llvm.77".into())),
        btf_params: Some(2),
        traceable: Some(true),
    };
    assert_eq!(
        function_line(&renamed),
        "ok (2 params; present as fd_install.llvm.77; fentry: missing: only present as \
         fd_install.llvm.77, fentry needs the exact name)"
    );
    let absent = SymbolFact {
        kallsyms: Some(SymbolPresence::Absent),
        ..SymbolFact::default()
    };
    assert_eq!(
        function_line(&absent),
        "missing: not in /proc/kallsyms (inlined or not built)"
    );
}

#[test]
fn refusals_name_the_missing_config() {
    let cfg = KernelConfig::parse(
        "# CONFIG_KPROBES is not set\nCONFIG_BPF_EVENTS=y\nCONFIG_DEBUG_INFO_BTF=y\n\
         # CONFIG_FUNCTION_TRACER is not set\n",
    );
    let raw = || "attach returned ENOENT".to_owned();
    assert_eq!(
        refine_refusal(ProgramType::Kprobe, raw(), Some(&cfg), true),
        refused("kernel built without CONFIG_KPROBES")
    );
    assert_eq!(
        refine_refusal(ProgramType::Fentry, raw(), Some(&cfg), true),
        refused("kernel built without CONFIG_FUNCTION_TRACER")
    );
    assert_eq!(
        refine_refusal(ProgramType::Tracepoint, raw(), Some(&cfg), true),
        ProbeStatus::Refused(raw())
    );
    assert_eq!(
        refine_refusal(ProgramType::TpBtf, raw(), Some(&cfg), false),
        ProbeStatus::Missing("no kernel BTF (attach returned ENOENT)".into())
    );
    // Without a config the raw reason stands.
    assert_eq!(
        refine_refusal(ProgramType::Kprobe, raw(), None, true),
        ProbeStatus::Refused(raw())
    );
    let kprobes_on = KernelConfig::parse("CONFIG_KPROBES=y\n# CONFIG_BPF_EVENTS is not set\n");
    assert_eq!(
        refine_refusal(ProgramType::Kprobe, raw(), Some(&kprobes_on), true),
        refused("kernel built without CONFIG_BPF_EVENTS")
    );
}

#[test]
fn json_has_stable_keys_and_statuses() {
    let v = render_json(&host_like());
    let keys: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = vec![
        "available_filter_functions",
        "backend",
        "backends",
        "btf",
        "btf_tracepoints",
        "functions",
        "helpers",
        "kallsyms",
        "kernel",
        "kernel_config",
        "offsets",
        "privileges",
        "probes",
        "programs",
        "tracefs",
        "tracepoints",
    ];
    want.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!(v["kernel"]["version"], json!([6, 18, 44]));
    assert_eq!(v["btf"], json!({"status": "ok", "path": VMLINUX_BTF}));
    assert_eq!(
        v["helpers"]["bpf_get_current_task_btf"],
        json!({"status": "ok"})
    );
    assert_eq!(v["helpers"]["bpf_task_pt_regs"], json!({"status": "ok"}));
    assert_eq!(v["privileges"], json!({"status": "ok", "as": "root"}));
    assert_eq!(v["programs"]["tracepoint"], json!({"status": "ok"}));
    assert_eq!(
        v["programs"]["kprobe"],
        json!({"status": "refused", "reason": "kernel built without CONFIG_KPROBES"})
    );
    assert_eq!(v["functions"]["inet_accept"]["btf_params"], json!(3));
    assert_eq!(
        v["functions"]["inet_accept"]["kallsyms_name"],
        json!("inet_accept")
    );
    assert_eq!(
        v["tracepoints"]["sock:sk_data_ready"],
        json!({"status": "ok"})
    );
    assert_eq!(
        v["tracepoints"].as_object().expect("map").len(),
        probes::classic_tracepoints().len()
    );
    assert_eq!(v["offsets"]["values"]["task_struct.pid"], json!(1264));
    assert_eq!(v["offsets"]["values"]["task_struct.tgid"], Value::Null);
    assert_eq!(v["backend"]["auto"]["backend"], json!("tracepoint"));
    assert_eq!(
        v["backend"]["auto"]["skipped"],
        json!([
            "fentry skipped: refused: load returned EPERM",
            "kprobe skipped: refused: kernel built without CONFIG_KPROBES"
        ])
    );
    assert_eq!(
        v["backend"]["auto"]["attach"][0],
        json!("tp_btf sched_waking <- btf_sched_waking")
    );
    assert_eq!(v["backends"]["tracepoint"]["status"], json!("ok"));
    assert_eq!(
        v["backends"]["fentry"],
        json!({"status": "refused", "reason": "fentry backend unavailable: refused: load returned EPERM"})
    );
    assert_eq!(v["available_filter_functions"]["status"], json!("refused"));
}

/// `check --json` lists every probe point of the table with its backends,
/// the status of each attachment, and what each usable backend uses.
#[test]
fn json_lists_every_probe_point_with_its_backends() {
    let v = render_json(&host_like());
    let points = v["probes"].as_array().expect("array");
    assert_eq!(points.len(), probes::TABLE.len());
    for (p, want) in points.iter().zip(probes::TABLE) {
        assert_eq!(p["id"], json!(want.id));
        let backends: Vec<&str> = want.backends().iter().map(|b| b.name()).collect();
        assert_eq!(p["backends"], json!(backends));
        assert!(p["variants"].as_array().is_some_and(|v| !v.is_empty()));
    }
    let wakeups = &points[0];
    assert_eq!(wakeups["id"], json!("wakeups"));
    assert_eq!(
        wakeups["used"]["tracepoint"],
        json!({"status": "ok", "attach": ["tp_btf sched_waking"], "via": null})
    );
    assert_eq!(
        wakeups["used"]["fentry"],
        json!({"status": "refused", "reason": "backend unavailable"})
    );
    assert_eq!(
        wakeups["variants"][1]["attach"][0],
        json!({
            "program": "tp_sched_waking",
            "kind": "tracepoint",
            "target": "sched:sched_waking",
            "params": null,
            "fields": ["pid", "comm"],
            "status": {"status": "ok"},
        })
    );
    let accept = points
        .iter()
        .find(|p| p["id"] == "accept")
        .expect("accept point");
    assert_eq!(
        accept["variants"][0]["attach"][0]["status"],
        json!({"status": "missing", "reason": "fexit inet_accept refused: load returned EPERM (program fexit)"})
    );
}

#[test]
fn json_when_nothing_works() {
    let mut r = host_like();
    r.facts.programs.insert(
        ProgramType::Tracepoint,
        refused("needs root or CAP_BPF+CAP_PERFMON"),
    );
    r.privilege = Privilege::Insufficient { uid: 5, cap_eff: 0 };
    r.facts.privileges = refused(
        "need root or CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE (current uid 5)",
    );
    r.offsets = Err("no BTF".into());
    let v = render_json(&r);
    assert_eq!(v["backend"]["auto"]["status"], json!("refused"));
    assert_eq!(
        v["privileges"],
        json!({"status": "refused", "reason": "need root or CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE (current uid 5)"})
    );
    assert_eq!(
        v["offsets"],
        json!({"status": "missing", "reason": "no BTF"})
    );
}

#[test]
fn table_targets_are_unique() {
    let t = table_targets();
    let mut d = t.clone();
    d.dedup();
    assert_eq!(t, d);
    assert!(t.contains(&(Kind::Fexit, "inet_accept")));
}

/// A helper whose programs call another one is missing, without a trial,
/// where that one is; otherwise its own trial decides.
#[test]
fn a_feature_needs_what_it_requires() {
    let tried = std::cell::RefCell::new(Vec::new());
    let refuse_task_btf = |f: Feature| {
        tried.borrow_mut().push(f);
        match f {
            Feature::TaskBtf => ProbeStatus::Missing("load returned EINVAL".into()),
            Feature::TaskPtRegs => ProbeStatus::Ok,
        }
    };
    let got = feature_statuses(refuse_task_btf);
    assert_eq!(
        got[&Feature::TaskPtRegs],
        ProbeStatus::Missing("needs bpf_get_current_task_btf".into())
    );
    assert_eq!(*tried.borrow(), [Feature::TaskBtf]);

    let only_pt_regs_missing = |f: Feature| match f {
        Feature::TaskBtf => ProbeStatus::Ok,
        Feature::TaskPtRegs => ProbeStatus::Missing("load returned EINVAL".into()),
    };
    let got = feature_statuses(only_pt_regs_missing);
    assert_eq!(got[&Feature::TaskBtf], ProbeStatus::Ok);
    assert_eq!(
        got[&Feature::TaskPtRegs],
        ProbeStatus::Missing("load returned EINVAL".into())
    );
}
