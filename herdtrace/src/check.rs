//! `herdtrace check`: what the running kernel offers the tracer.
//!
//! Program-type lines come from real trial loads (`loader::trial`); everything
//! else from BTF, kallsyms, tracefs and the kernel config. Gathering does the
//! I/O; rendering (text and JSON) is pure and unit-tested.
use std::io::Write;

use anyhow::Context;
use serde_json::{json, Value};

use crate::backend::{
    choose, Backend, BackendRequest, Choice, KernelFacts, ProbeStatus, SymbolFact, Symbols,
    Tracepoints,
};
use crate::btf::{Btf, KernelOffsets, VMLINUX_BTF};
use crate::kernel::{self, KernelConfig, Privilege, SymbolPresence, TracefsError};
use crate::loader::{self, ProgramKind};

const EXAMPLES: &str = "\
Examples:
  sudo herdtrace check                 one line per probe point: ok / missing / refused + reason
  sudo herdtrace check --json | jq .backend.auto
  herdtrace check                      as non-root: program lines say refused, the rest is checked
  HERDTRACE_MISSING=sock:sk_data_ready,ep_send_events sudo herdtrace check
                                       as if the kernel lacked them (also for tracing; `btf` for no BTF)";

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct CheckArgs {
    /// Print one JSON object (stable keys) instead of text lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CheckArgs) -> anyhow::Result<i32> {
    let report = gather_report();
    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&render_json(&report))
            .context("encoding the report as JSON")?;
        text.push('\n');
        text
    } else {
        render_text(&report)
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // `herdtrace check | head` closing the pipe early is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        other => other.context("writing to stdout").map(|()| 0),
    }
}

/// Facts about the running kernel for [`choose`], including trial loads of
/// each program type. Reads and parses the kernel BTF itself.
pub fn gather_facts() -> KernelFacts {
    gather_report().facts
}

/// Like [`gather_facts`] with a BTF the caller already parsed (`None`: no BTF).
pub fn gather_facts_with(btf: Option<&Btf>) -> KernelFacts {
    let btf = btf.ok_or_else(|| "no kernel BTF".to_owned());
    gather(btf).facts
}

/// Everything `check` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub facts: KernelFacts,
    pub privilege: Privilege,
    /// Where the kernel config came from, or why it could not be read.
    pub config: Result<String, String>,
    /// The mounted tracefs, or why there is none.
    pub tracefs: Result<String, TracefsError>,
    /// `/proc/kallsyms` and `available_filter_functions` readable, or why not.
    pub kallsyms: Result<(), String>,
    pub filter_functions: Result<(), String>,
    pub offsets: Result<KernelOffsets, String>,
}

fn gather_report() -> Report {
    let btf = if std::path::Path::new(VMLINUX_BTF).exists() {
        Btf::load_vmlinux().map_err(|e| format!("{e:#}"))
    } else {
        Err(format!(
            "no {VMLINUX_BTF} (kernel built without CONFIG_DEBUG_INFO_BTF)"
        ))
    };
    gather(btf.as_ref().map_err(Clone::clone))
}

fn gather(btf: Result<&Btf, String>) -> Report {
    let release = kernel::release().unwrap_or_else(|e| format!("unknown ({e:#})"));
    let config = KernelConfig::load(&release);
    let privilege = kernel::privilege();

    let program = |kind: ProgramKind| -> ProbeStatus {
        if privilege.problem().is_some() {
            return ProbeStatus::Refused("needs root or CAP_BPF+CAP_PERFMON".into());
        }
        match loader::trial(kind) {
            Ok(()) => ProbeStatus::Ok,
            Err(e) => refine_refusal(kind, format!("{e:#}"), config.as_ref().ok(), btf.is_ok()),
        }
    };
    let tracepoint = program(ProgramKind::TracePoint);
    let tp_btf = program(ProgramKind::TpBtf);
    let kprobe = program(ProgramKind::Kprobe);
    let fentry = program(ProgramKind::Fentry);

    let kallsyms = kernel::read_kallsyms().map_err(|e| format!("{e:#}"));
    let filter = kernel::read_filter_functions().map_err(|e| format!("{e:#}"));
    let in_kallsyms = kallsyms
        .as_ref()
        .ok()
        .map(|t| kernel::find_symbols(kernel::kallsyms_names(t), &Symbols::NAMES));
    let in_filter = filter
        .as_ref()
        .ok()
        .map(|t| kernel::find_symbols(kernel::filter_function_names(t), &Symbols::NAMES));
    let simulated = kernel::simulated_missing();
    let symbols = Symbols::from_fn(|name| {
        if simulated.symbol(name) {
            // What an inlined function looks like: no symbol, no BTF FUNC.
            return SymbolFact {
                kallsyms: Some(SymbolPresence::Absent),
                btf_params: None,
                traceable: Some(false),
            };
        }
        let at = |found: &Vec<SymbolPresence>| {
            Symbols::NAMES
                .iter()
                .position(|n| *n == name)
                .map(|i| found[i].clone())
        };
        SymbolFact {
            kallsyms: in_kallsyms.as_ref().and_then(at),
            btf_params: btf.as_ref().ok().and_then(|b| b.func_param_count(name)),
            traceable: in_filter
                .as_ref()
                .and_then(at)
                .map(|p| p != SymbolPresence::Absent),
        }
    });

    let tracepoints =
        Tracepoints::from_fn(|cat, name| match kernel::tracepoint_exists(cat, name) {
            Ok(true) => ProbeStatus::Ok,
            Ok(false) if simulated.tracepoint(cat, name) => ProbeStatus::Missing(format!(
                "treated as missing ({}={cat}:{name})",
                kernel::MISSING_ENV
            )),
            Ok(false) => ProbeStatus::Missing(format!("no events/{cat}/{name} in tracefs")),
            Err(e @ TracefsError::Denied(_)) => ProbeStatus::Refused(e.to_string()),
            Err(e) => ProbeStatus::Missing(e.to_string()),
        });

    let facts = KernelFacts {
        version: kernel::parse_version(&release),
        release,
        btf: match &btf {
            Ok(_) => ProbeStatus::Ok,
            Err(e) => ProbeStatus::Missing(e.clone()),
        },
        privileges: match privilege.problem() {
            None => ProbeStatus::Ok,
            Some(p) => ProbeStatus::Refused(p),
        },
        fentry,
        kprobe,
        tracepoint,
        tp_btf,
        symbols,
        tracepoints,
    };
    Report {
        facts,
        privilege,
        config: config
            .as_ref()
            .map(|c| c.source.display().to_string())
            .map_err(|e| format!("{e:#}")),
        tracefs: kernel::tracefs().map(|p| p.display().to_string()),
        kallsyms: kallsyms.map(drop),
        filter_functions: filter.map(drop),
        offsets: btf.and_then(|b| KernelOffsets::from_btf(b).map_err(|e| format!("{e:#}"))),
    }
}

/// Turns a failed trial load into the line users read: a kernel built
/// without the feature says so instead of a bare errno.
pub fn refine_refusal(
    kind: ProgramKind,
    raw: String,
    config: Option<&KernelConfig>,
    btf: bool,
) -> ProbeStatus {
    let not_set = |name: &str| config.is_some_and(|c| c.is_not_set(name));
    let needs: &[&str] = match kind {
        ProgramKind::Kprobe => &["CONFIG_KPROBES", "CONFIG_BPF_EVENTS"],
        ProgramKind::TracePoint => &["CONFIG_BPF_EVENTS"],
        ProgramKind::Fentry => &["CONFIG_DEBUG_INFO_BTF", "CONFIG_FUNCTION_TRACER"],
        ProgramKind::TpBtf => &["CONFIG_DEBUG_INFO_BTF"],
    };
    if let Some(option) = needs.iter().find(|o| not_set(o)) {
        return ProbeStatus::Refused(format!("kernel built without {option}"));
    }
    if !btf && matches!(kind, ProgramKind::Fentry | ProgramKind::TpBtf) {
        return ProbeStatus::Missing(format!("no kernel BTF ({raw})"));
    }
    ProbeStatus::Refused(raw)
}

/// `ok (5 args)`, `ok (present as f.isra.0; fentry: ...)`, `missing: ...`.
pub fn symbol_line(name: &str, fact: &SymbolFact) -> String {
    let status = fact.kprobe_status();
    if !status.is_ok() {
        return status.to_string();
    }
    let mut notes = Vec::new();
    match (name, fact.btf_params) {
        ("__wake_up_common", Some(6)) => notes.push("6 args, pre-6.7 form".to_owned()),
        ("inet_csk_accept", Some(2)) => notes.push("2 args, 6.10+ form".to_owned()),
        ("inet_csk_accept", Some(4)) => notes.push("4 args, pre-6.10 form".to_owned()),
        ("__wake_up_common" | "inet_csk_accept", Some(n)) => notes.push(format!("{n} args")),
        _ => {}
    }
    if let Some(SymbolPresence::Suffixed(clone)) = &fact.kallsyms {
        notes.push(format!("present as {clone}"));
    }
    let fentry = fact.fentry_status();
    if !fentry.is_ok() {
        notes.push(format!("fentry: {fentry}"));
    }
    if notes.is_empty() {
        "ok".to_owned()
    } else {
        format!("ok ({})", notes.join("; "))
    }
}

fn ok_or_missing(r: &Result<String, String>) -> String {
    match r {
        Ok(detail) => format!("ok ({detail})"),
        Err(e) => format!("missing: {e}"),
    }
}

fn tracefs_status(r: &Result<String, TracefsError>) -> Result<String, ProbeStatus> {
    match r {
        Ok(path) => Ok(path.clone()),
        Err(e @ TracefsError::NotMounted) => Err(ProbeStatus::Missing(e.to_string())),
        Err(e) => Err(ProbeStatus::Refused(e.to_string())),
    }
}

/// The text `herdtrace check` prints, one line per fact.
pub fn render_text(r: &Report) -> String {
    let f = &r.facts;
    let mut out = Vec::new();
    let version = f
        .version
        .map(|(a, b, c)| format!("{a}.{b}.{c}"))
        .unwrap_or_else(|| "unparsed".into());
    out.push(format!("kernel: {} ({version})", f.release));
    out.push(format!(
        "btf: {}",
        match &f.btf {
            ProbeStatus::Ok => format!("ok ({VMLINUX_BTF})"),
            other => other.to_string(),
        }
    ));
    out.push(format!("kernel config: {}", ok_or_missing(&r.config)));
    out.push(format!(
        "privileges: {}",
        match r.privilege {
            Privilege::Root => "ok (root)".to_owned(),
            Privilege::Capabilities => "ok (CAP_BPF+CAP_PERFMON)".to_owned(),
            Privilege::Insufficient { .. } => f.privileges.to_string(),
        }
    ));
    out.push(format!(
        "tracefs: {}",
        tracefs_status(&r.tracefs).map_or_else(|s| s.to_string(), |p| format!("ok ({p})"))
    ));
    for (name, status) in programs(f) {
        out.push(format!("program {name}: {status}"));
    }
    out.push(format!(
        "kallsyms: {}",
        r.kallsyms
            .as_ref()
            .map_or_else(|e| format!("refused: {e}"), |()| "ok".into())
    ));
    out.push(format!(
        "available_filter_functions: {}",
        r.filter_functions
            .as_ref()
            .map_or_else(|e| format!("refused: {e}"), |()| "ok".into())
    ));
    for (name, fact) in f.symbols.each() {
        out.push(format!("symbol {name}: {}", symbol_line(name, fact)));
    }
    for (name, status) in f.tracepoints.each() {
        out.push(format!("tracepoint {name}: {status}"));
    }
    match &r.offsets {
        Ok(o) => {
            let missing = o.missing();
            if missing.is_empty() {
                out.push(format!("btf offsets: ok ({} members)", o.entries().len()));
            }
            for m in missing {
                out.push(format!(
                    "btf offset {}: missing (lost: {})",
                    m.member, m.lost
                ));
            }
        }
        Err(e) => out.push(format!("btf offsets: missing: {e}")),
    }
    match choose(BackendRequest::Auto, f) {
        Ok(c) => {
            out.push(format!("backend auto: {c}"));
            for w in &c.warnings {
                out.push(format!("  warning: {w}"));
            }
        }
        Err(e) => out.push(format!("backend auto: none ({e})")),
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

fn programs(f: &KernelFacts) -> [(&'static str, &ProbeStatus); 4] {
    [
        ("tracepoint", &f.tracepoint),
        ("tp_btf", &f.tp_btf),
        ("kprobe", &f.kprobe),
        ("fentry", &f.fentry),
    ]
}

fn status_json(s: &ProbeStatus) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

fn result_json(r: &Result<String, String>, key: &str) -> Value {
    match r {
        Ok(v) => json!({"status": "ok", key: v}),
        Err(e) => json!({"status": "missing", "reason": e}),
    }
}

fn choice_json(c: &Result<Choice, String>) -> Value {
    match c {
        Ok(c) => json!({
            "status": "ok",
            "backend": c.backend.name(),
            "skipped": c.skipped,
            "warnings": c.warnings,
        }),
        Err(e) => json!({"status": "refused", "reason": e}),
    }
}

/// The object `herdtrace check --json` prints. Keys are stable; every status
/// is `{"status": "ok"|"missing"|"refused", "reason"?: ...}`.
pub fn render_json(r: &Report) -> Value {
    let f = &r.facts;
    let programs: serde_json::Map<String, Value> = programs(f)
        .iter()
        .map(|(n, s)| ((*n).to_owned(), status_json(s)))
        .collect();
    let symbols: serde_json::Map<String, Value> = f
        .symbols
        .each()
        .iter()
        .map(|(name, fact)| {
            let mut v = status_json(&fact.kprobe_status());
            v["kallsyms_name"] = match &fact.kallsyms {
                Some(SymbolPresence::Exact) => json!(name),
                Some(SymbolPresence::Suffixed(clone)) => json!(clone),
                Some(SymbolPresence::Absent) | None => Value::Null,
            };
            v["btf_params"] = json!(fact.btf_params);
            v["traceable"] = json!(fact.traceable);
            v["kprobe"] = status_json(&fact.kprobe_status());
            v["fentry"] = status_json(&fact.fentry_status());
            ((*name).to_owned(), v)
        })
        .collect();
    let tracepoints: serde_json::Map<String, Value> = f
        .tracepoints
        .each()
        .into_iter()
        .map(|(n, s)| (n, status_json(s)))
        .collect();
    let offsets = match &r.offsets {
        Ok(o) => {
            let values: serde_json::Map<String, Value> = o
                .entries()
                .iter()
                .map(|e| (e.member.to_owned(), json!(e.offset)))
                .collect();
            let missing: Vec<Value> = o
                .missing()
                .iter()
                .map(|e| json!({"member": e.member, "lost": e.lost}))
                .collect();
            json!({"status": "ok", "values": values, "missing": missing})
        }
        Err(e) => json!({"status": "missing", "reason": e}),
    };
    let backends: serde_json::Map<String, Value> = [
        (Backend::Fentry, BackendRequest::Fentry),
        (Backend::Kprobe, BackendRequest::Kprobe),
        (Backend::Tracepoint, BackendRequest::Tracepoint),
    ]
    .iter()
    .map(|(b, req)| (b.name().to_owned(), choice_json(&choose(*req, f))))
    .collect();
    let privileges = match r.privilege {
        Privilege::Root => json!({"status": "ok", "as": "root"}),
        Privilege::Capabilities => json!({"status": "ok", "as": "CAP_BPF+CAP_PERFMON"}),
        Privilege::Insufficient { .. } => status_json(&f.privileges),
    };
    let mut btf = status_json(&f.btf);
    if f.btf.is_ok() {
        btf["path"] = json!(VMLINUX_BTF);
    }
    let readable = |r: &Result<(), String>| match r {
        Ok(()) => json!({"status": "ok"}),
        Err(e) => json!({"status": "refused", "reason": e}),
    };
    json!({
        "kernel": {"release": f.release, "version": f.version.map(|(a, b, c)| [a, b, c])},
        "btf": btf,
        "kernel_config": result_json(&r.config, "source"),
        "privileges": privileges,
        "tracefs": match tracefs_status(&r.tracefs) {
            Ok(path) => json!({"status": "ok", "path": path}),
            Err(s) => status_json(&s),
        },
        "programs": programs,
        "kallsyms": readable(&r.kallsyms),
        "available_filter_functions": readable(&r.filter_functions),
        "symbols": symbols,
        "tracepoints": tracepoints,
        "offsets": offsets,
        "backends": backends,
        "backend": {"auto": choice_json(&choose(BackendRequest::Auto, f))},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(params: Option<usize>) -> SymbolFact {
        SymbolFact {
            kallsyms: Some(SymbolPresence::Exact),
            btf_params: params,
            traceable: None,
        }
    }

    /// The development host as `check` sees it.
    fn host_like() -> Report {
        let facts = KernelFacts {
            release: "6.18.44-fc-v782".into(),
            version: Some((6, 18, 44)),
            btf: ProbeStatus::Ok,
            privileges: ProbeStatus::Ok,
            fentry: ProbeStatus::Refused("load returned EPERM".into()),
            kprobe: ProbeStatus::Refused("kernel built without CONFIG_KPROBES".into()),
            tracepoint: ProbeStatus::Ok,
            tp_btf: ProbeStatus::Ok,
            symbols: Symbols {
                wake_up_common: sym(Some(5)),
                ep_poll_callback: sym(Some(4)),
                ep_send_events: sym(Some(3)),
                inet_csk_accept: sym(Some(2)),
            },
            tracepoints: Tracepoints::from_fn(|_, _| ProbeStatus::Ok),
        };
        Report {
            facts,
            privilege: Privilege::Root,
            config: Ok("/proc/config.gz".into()),
            tracefs: Ok("/sys/kernel/tracing".into()),
            kallsyms: Ok(()),
            filter_functions: Err("reading x: Operation not permitted (os error 1)".into()),
            offsets: Ok(KernelOffsets {
                task_pid: Some(1264),
                ..KernelOffsets::default()
            }),
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
            "kallsyms: ok",
            "available_filter_functions: refused: reading x: Operation not permitted (os error 1)",
            "symbol __wake_up_common: ok (5 args)",
            "symbol ep_poll_callback: ok",
            "symbol ep_send_events: ok",
            "symbol inet_csk_accept: ok (2 args, 6.10+ form)",
            "tracepoint sock:sk_data_ready: ok",
            "tracepoint sock:inet_sock_set_state: ok",
            "tracepoint sched:sched_waking: ok",
            "tracepoint syscalls:sys_exit_epoll_wait: ok",
            "tracepoint syscalls:sys_exit_epoll_pwait: ok",
            "tracepoint syscalls:sys_exit_epoll_pwait2: ok",
            "tracepoint syscalls:sys_exit_accept: ok",
            "tracepoint syscalls:sys_exit_accept4: ok",
            "tracepoint sched:sched_process_fork: ok",
            "tracepoint sched:sched_process_exit: ok",
        ];
        assert_eq!(&lines[..want_in_order.len()], want_in_order);
        assert!(
            lines.contains(&"btf offset task_struct.tgid: missing (lost: process of woken tasks)")
        );
        assert!(!lines.iter().any(|l| l.contains("task_struct.pid")));
        assert_eq!(
            lines.last().copied(),
            Some(
                "backend auto: tracepoint (fentry skipped: refused: load returned EPERM; \
                 kprobe skipped: refused: kernel built without CONFIG_KPROBES)"
            )
        );
    }

    #[test]
    fn text_report_non_root() {
        let mut r = host_like();
        let refused = ProbeStatus::Refused("needs root or CAP_BPF+CAP_PERFMON".into());
        r.privilege = Privilege::Insufficient { uid: 1000 };
        r.facts.privileges =
            ProbeStatus::Refused("need root or CAP_BPF+CAP_PERFMON (current uid 1000)".into());
        for p in [
            &mut r.facts.fentry,
            &mut r.facts.kprobe,
            &mut r.facts.tracepoint,
            &mut r.facts.tp_btf,
        ] {
            *p = refused.clone();
        }
        let text = render_text(&r);
        assert!(text.contains(
            "privileges: refused: need root or CAP_BPF+CAP_PERFMON (current uid 1000)\n"
        ));
        for p in ["tracepoint", "tp_btf", "kprobe", "fentry"] {
            assert!(
                text.contains(&format!(
                    "program {p}: refused: needs root or CAP_BPF+CAP_PERFMON\n"
                )),
                "{text}"
            );
        }
        // The rest is still checked and printed.
        assert!(text.contains("symbol ep_poll_callback: ok\n"));
        assert!(text.contains("tracepoint sched:sched_waking: ok\n"));
        assert!(text.contains("backend auto: none (no backend works on this kernel ("));
    }

    #[test]
    fn text_report_warnings_and_missing_btf() {
        let mut r = host_like();
        r.facts.tracepoints.sk_data_ready =
            ProbeStatus::Missing("no events/sock/sk_data_ready in tracefs".into());
        r.facts.btf = ProbeStatus::Missing("no /sys/kernel/btf/vmlinux".into());
        r.offsets = Err("no /sys/kernel/btf/vmlinux".into());
        let text = render_text(&r);
        assert!(text.contains("btf: missing: no /sys/kernel/btf/vmlinux\n"));
        assert!(text.contains("btf offsets: missing: no /sys/kernel/btf/vmlinux\n"));
        assert!(text.contains(
            "tracepoint sock:sk_data_ready: missing: no events/sock/sk_data_ready in tracefs\n"
        ));
        assert!(
            text.contains("  warning: tracepoint sock:sk_data_ready missing"),
            "{text}"
        );
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

    #[test]
    fn symbol_lines() {
        assert_eq!(
            symbol_line("__wake_up_common", &sym(Some(5))),
            "ok (5 args)"
        );
        assert_eq!(
            symbol_line("__wake_up_common", &sym(Some(6))),
            "ok (6 args, pre-6.7 form)"
        );
        assert_eq!(
            symbol_line("inet_csk_accept", &sym(Some(4))),
            "ok (4 args, pre-6.10 form)"
        );
        assert_eq!(symbol_line("inet_csk_accept", &sym(Some(3))), "ok (3 args)");
        assert_eq!(symbol_line("ep_poll_callback", &sym(Some(4))), "ok");
        assert_eq!(
            symbol_line("ep_send_events", &sym(None)),
            "ok (fentry: missing: no BTF function of this name)"
        );
        let clone = SymbolFact {
            kallsyms: Some(SymbolPresence::Suffixed("ep_send_events.isra.0".into())),
            btf_params: None,
            traceable: Some(true),
        };
        assert_eq!(
            symbol_line("ep_send_events", &clone),
            "ok (present as ep_send_events.isra.0; fentry: missing: only present as \
             ep_send_events.isra.0, fentry needs the exact name)"
        );
        let absent = SymbolFact {
            kallsyms: Some(SymbolPresence::Absent),
            ..SymbolFact::default()
        };
        assert_eq!(
            symbol_line("ep_send_events", &absent),
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
            refine_refusal(ProgramKind::Kprobe, raw(), Some(&cfg), true),
            ProbeStatus::Refused("kernel built without CONFIG_KPROBES".into())
        );
        assert_eq!(
            refine_refusal(ProgramKind::Fentry, raw(), Some(&cfg), true),
            ProbeStatus::Refused("kernel built without CONFIG_FUNCTION_TRACER".into())
        );
        assert_eq!(
            refine_refusal(ProgramKind::TracePoint, raw(), Some(&cfg), true),
            ProbeStatus::Refused(raw())
        );
        assert_eq!(
            refine_refusal(ProgramKind::TpBtf, raw(), Some(&cfg), false),
            ProbeStatus::Missing("no kernel BTF (attach returned ENOENT)".into())
        );
        // Without a config the raw reason stands.
        assert_eq!(
            refine_refusal(ProgramKind::Kprobe, raw(), None, true),
            ProbeStatus::Refused(raw())
        );
        let kprobes_on = KernelConfig::parse("CONFIG_KPROBES=y\n# CONFIG_BPF_EVENTS is not set\n");
        assert_eq!(
            refine_refusal(ProgramKind::Kprobe, raw(), Some(&kprobes_on), true),
            ProbeStatus::Refused("kernel built without CONFIG_BPF_EVENTS".into())
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
            "kallsyms",
            "kernel",
            "kernel_config",
            "offsets",
            "privileges",
            "programs",
            "symbols",
            "tracefs",
            "tracepoints",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["kernel"]["version"], json!([6, 18, 44]));
        assert_eq!(v["btf"], json!({"status": "ok", "path": VMLINUX_BTF}));
        assert_eq!(v["privileges"], json!({"status": "ok", "as": "root"}));
        assert_eq!(v["programs"]["tracepoint"], json!({"status": "ok"}));
        assert_eq!(
            v["programs"]["kprobe"],
            json!({"status": "refused", "reason": "kernel built without CONFIG_KPROBES"})
        );
        assert_eq!(v["symbols"]["inet_csk_accept"]["btf_params"], json!(2));
        assert_eq!(
            v["symbols"]["inet_csk_accept"]["kallsyms_name"],
            json!("inet_csk_accept")
        );
        assert_eq!(v["symbols"]["inet_csk_accept"]["status"], json!("ok"));
        assert_eq!(
            v["tracepoints"]["sock:sk_data_ready"],
            json!({"status": "ok"})
        );
        assert_eq!(v["tracepoints"].as_object().expect("map").len(), 10);
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
        assert_eq!(v["backends"]["tracepoint"]["status"], json!("ok"));
        assert_eq!(
            v["backends"]["fentry"],
            json!({"status": "refused", "reason": "fentry backend unavailable: refused: load returned EPERM"})
        );
        assert_eq!(v["available_filter_functions"]["status"], json!("refused"));
    }

    #[test]
    fn json_when_nothing_works() {
        let mut r = host_like();
        r.facts.tracepoint = ProbeStatus::Refused("needs root or CAP_BPF+CAP_PERFMON".into());
        r.privilege = Privilege::Insufficient { uid: 5 };
        r.facts.privileges =
            ProbeStatus::Refused("need root or CAP_BPF+CAP_PERFMON (current uid 5)".into());
        r.offsets = Err("no BTF".into());
        let v = render_json(&r);
        assert_eq!(v["backend"]["auto"]["status"], json!("refused"));
        assert_eq!(
            v["privileges"],
            json!({"status": "refused", "reason": "need root or CAP_BPF+CAP_PERFMON (current uid 5)"})
        );
        assert_eq!(
            v["offsets"],
            json!({"status": "missing", "reason": "no BTF"})
        );
    }
}
