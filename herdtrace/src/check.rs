//! `herdtrace check`: what the running kernel offers the tracer.
//!
//! Program-type lines come from real trial loads (`loader::trial`); the
//! probe points of the table (`probes::TABLE`) from BTF, kallsyms, tracefs
//! and the kernel config; each backend's plan is then attached for real and
//! detached, so the backend `check` names is the one the tracer attaches.
//! Gathering does the I/O; rendering (text and JSON) is pure and unit-tested.
use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use serde_json::{json, Value};

use crate::backend::{
    choose_from, plan, Backend, BackendRequest, Choice, KernelFacts, Plan, ProbeStatus, SymbolFact,
};
use crate::btf::{Btf, KernelOffsets, VMLINUX_BTF};
use crate::kernel::{self, KernelConfig, Privilege, SymbolPresence, TracefsError};
use crate::loader;
use crate::probes::{self, Feature, Pick, ProgramType};
use crate::start::{self, Options};

const EXAMPLES: &str = "\
Examples:
  sudo herdtrace check                 programs, probe points, and each backend's plan
  sudo herdtrace check --json | jq '.backend.auto'
  sudo herdtrace check --json | jq '.probes[] | {id, backends}'
  herdtrace check                      as non-root: program lines say refused, the rest is checked
  HERDTRACE_MISSING=sock:sk_data_ready,ep_send_events sudo herdtrace check
                                       as if the kernel lacked them (also for tracing): a
                                       tracepoint as category:name, a kernel function by
                                       name, `btf` for no BTF";

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

/// Facts about the running kernel for the backend choice, including trial
/// loads of each program type. Reads and parses the kernel BTF itself.
pub fn gather_facts() -> KernelFacts {
    let btf = load_btf();
    gather_facts_with(btf.as_ref().ok())
}

/// Like [`gather_facts`] with a BTF the caller already parsed (`None`: no BTF).
pub fn gather_facts_with(btf: Option<&Btf>) -> KernelFacts {
    let btf = btf.ok_or_else(no_btf_reason);
    facts(btf, &kernel::privilege(), kernel::release().ok().as_deref())
}

/// The kernel BTF, or why there is none (also when simulated missing).
pub fn load_btf() -> Result<Btf, String> {
    if kernel::simulated_missing().btf() || !std::path::Path::new(VMLINUX_BTF).exists() {
        return Err(no_btf_reason());
    }
    Btf::load_vmlinux().map_err(|e| format!("{e:#}"))
}

fn no_btf_reason() -> String {
    if kernel::simulated_missing().btf() {
        format!(
            "no {VMLINUX_BTF} (treated as missing: {}=btf)",
            kernel::MISSING_ENV
        )
    } else {
        format!("no {VMLINUX_BTF} (kernel built without CONFIG_DEBUG_INFO_BTF)")
    }
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
    /// Backends whose plan the kernel refused when attached for real.
    pub attach_failed: Vec<(Backend, String)>,
}

impl Report {
    /// The choice for `req`, with the real attach results taken into account.
    pub fn choice(&self, req: BackendRequest) -> Result<Choice, String> {
        choose_from(req, &self.facts, &self.attach_failed)
    }
}

fn gather_report() -> Report {
    let btf = load_btf();
    let release = kernel::release().unwrap_or_else(|e| format!("unknown ({e:#})"));
    let privilege = kernel::privilege();
    let mut facts = facts(
        btf.as_ref().map_err(Clone::clone),
        &privilege,
        Some(&release),
    );
    let offsets = btf
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|b| KernelOffsets::from_btf(b).map_err(|e| format!("{e:#}")));
    let attach_failed = match &offsets {
        Ok(o) if privilege.problem().is_none() => trial_attach(&mut facts, o),
        _ => Vec::new(),
    };
    Report {
        facts,
        privilege,
        config: KernelConfig::load(&release)
            .map(|c| c.source.display().to_string())
            .map_err(|e| format!("{e:#}")),
        tracefs: kernel::tracefs().map(|p| p.display().to_string()),
        kallsyms: kernel::read_kallsyms()
            .map(drop)
            .map_err(|e| format!("{e:#}")),
        filter_functions: kernel::read_filter_functions()
            .map(drop)
            .map_err(|e| format!("{e:#}")),
        offsets,
        attach_failed,
    }
}

/// Attaches each backend's plan for real and detaches it again: a plan the
/// kernel refuses (verifier, attach) is what `check` must report as refused,
/// and a helper whose programs it refuses is marked so in `facts`.
fn trial_attach(facts: &mut KernelFacts, offsets: &KernelOffsets) -> Vec<(Backend, String)> {
    let opts = Options {
        port_filter: 0,
        chain_window_ns: 5_000_000,
        ringbuf_bytes: 1 << 16,
        #[cfg(feature = "test-hooks")]
        empty_programs: false,
    };
    let mut failed = Vec::new();
    for b in Backend::ALL {
        if plan(b, facts).is_err() {
            continue;
        }
        // On success, dropping the tracer detaches it.
        if let Err(e) = start::attach_first(b.into(), facts, offsets, &opts) {
            let reason = e.strip_prefix(&format!("{b} backend unavailable: "));
            failed.push((b, reason.unwrap_or(&e).to_owned()));
        }
    }
    failed
}

fn facts(btf: Result<&Btf, String>, privilege: &Privilege, release: Option<&str>) -> KernelFacts {
    let release = release
        .map(str::to_owned)
        .unwrap_or_else(|| "unknown".into());
    let config = KernelConfig::load(&release);
    let simulated = kernel::simulated_missing();
    // A trial load, unless the privileges or HERDTRACE_MISSING (`simulated`)
    // settle it.
    let trial = |simulated: Option<ProbeStatus>, load: &dyn Fn() -> ProbeStatus| {
        if !privilege.can_load_programs() {
            ProbeStatus::Refused("needs root or CAP_BPF+CAP_PERFMON".into())
        } else {
            simulated.unwrap_or_else(load)
        }
    };
    let treated =
        |how: &str, name: &str| format!("treated as {how} ({}={name})", kernel::MISSING_ENV);
    let programs: BTreeMap<ProgramType, ProbeStatus> = ProgramType::ALL
        .into_iter()
        .map(|t| {
            let simulated = simulated
                .program_type(t.name())
                .then(|| ProbeStatus::Refused(treated("refused", t.name())));
            let status = trial(simulated, &|| match loader::trial(t) {
                Ok(()) => ProbeStatus::Ok,
                Err(e) => refine_refusal(t, format!("{e:#}"), config.as_ref().ok(), btf.is_ok()),
            });
            (t, status)
        })
        .collect();
    let features = feature_statuses(|f| {
        let simulated = simulated
            .helper(f.name())
            .then(|| ProbeStatus::Missing(treated("missing", f.name())));
        trial(simulated, &|| match loader::trial_feature(f) {
            Ok(()) => ProbeStatus::Ok,
            // The verifier's refusal of an unknown helper: not in this
            // kernel, whatever the errno says.
            Err(e) => ProbeStatus::Missing(format!("a program calling it: {e:#}")),
        })
    });
    let mut tracepoints = BTreeMap::new();
    let mut tracepoint_fields = BTreeMap::new();
    for target in probes::classic_tracepoints() {
        let (cat, name) = target.split_once(':').unwrap_or(("", target));
        let status = match kernel::tracepoint_exists(cat, name) {
            Ok(true) => match read_fields(cat, name) {
                Ok(fields) => {
                    let wanted = probes::fields_of(target);
                    let status = match wanted.iter().find(|f| !fields.contains_key(**f)) {
                        Some(f) => ProbeStatus::Missing(format!("no field {f} in its format")),
                        None => ProbeStatus::Ok,
                    };
                    tracepoint_fields.insert(target.to_owned(), fields);
                    status
                }
                Err(e) => ProbeStatus::Refused(e),
            },
            Ok(false) if simulated.tracepoint(cat, name) => ProbeStatus::Missing(format!(
                "treated as missing ({}={cat}:{name})",
                kernel::MISSING_ENV
            )),
            Ok(false) => ProbeStatus::Missing(format!("no events/{cat}/{name} in tracefs")),
            Err(e @ TracefsError::Denied(_)) => ProbeStatus::Refused(e.to_string()),
            Err(e) => ProbeStatus::Missing(e.to_string()),
        };
        tracepoints.insert(target.to_owned(), status);
    }
    let btf_tracepoints = probes::btf_tracepoints()
        .into_iter()
        .map(|event| {
            let status = match (&btf, simulated.event(event)) {
                (_, Some(item)) => ProbeStatus::Missing(format!(
                    "treated as missing ({}={item})",
                    kernel::MISSING_ENV
                )),
                (Ok(b), None) if b.has_btf_tracepoint(event) => ProbeStatus::Ok,
                (Ok(_), None) => {
                    ProbeStatus::Missing(format!("no btf_trace_{event} in the kernel BTF"))
                }
                (Err(e), None) => ProbeStatus::Missing(e.clone()),
            };
            (event.to_owned(), status)
        })
        .collect();
    KernelFacts {
        version: kernel::parse_version(&release),
        release,
        btf: match &btf {
            Ok(_) => ProbeStatus::Ok,
            Err(e) => ProbeStatus::Missing(e.clone()),
        },
        // Lockdown refuses whatever the privileges allow: said in their place.
        privileges: match privilege.problem().or_else(kernel::lockdown_problem) {
            None => ProbeStatus::Ok,
            Some(p) => ProbeStatus::Refused(p),
        },
        programs,
        features,
        tracepoints,
        btf_tracepoint_params: btf
            .as_ref()
            .ok()
            .map(|b| {
                probes::btf_tracepoints()
                    .into_iter()
                    .filter_map(|e| Some((e.to_owned(), b.btf_tracepoint_params(e)?)))
                    .collect()
            })
            .unwrap_or_default(),
        btf_tracepoints,
        functions: functions(btf.ok()),
        tracepoint_fields,
    }
}

/// Field name -> offset of a tracepoint's record.
fn read_fields(cat: &str, name: &str) -> Result<BTreeMap<String, u32>, String> {
    let fields = kernel::tracepoint_format(cat, name).map_err(|e| format!("{e:#}"))?;
    Ok(fields.into_iter().map(|f| (f.name, f.offset)).collect())
}

/// What kallsyms, the traceable-function list and BTF say of each function.
fn functions(btf: Option<&Btf>) -> BTreeMap<String, SymbolFact> {
    let names = probes::functions();
    let kallsyms = kernel::read_kallsyms().ok();
    let filter = kernel::read_filter_functions().ok();
    let in_kallsyms = kallsyms
        .as_ref()
        .map(|t| kernel::find_symbols(kernel::kallsyms_names(t), &names));
    let in_filter = filter
        .as_ref()
        .map(|t| kernel::find_symbols(kernel::filter_function_names(t), &names));
    let simulated = kernel::simulated_missing();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let fact = if simulated.symbol(name) {
                // What an inlined function looks like: no symbol, no BTF FUNC.
                SymbolFact {
                    kallsyms: Some(SymbolPresence::Absent),
                    btf_params: None,
                    traceable: Some(false),
                }
            } else {
                SymbolFact {
                    kallsyms: in_kallsyms.as_ref().map(|f| f[i].clone()),
                    btf_params: btf.and_then(|b| b.func_param_count(name)),
                    traceable: in_filter.as_ref().map(|f| f[i] != SymbolPresence::Absent),
                }
            };
            ((*name).to_owned(), fact)
        })
        .collect()
}

/// Turns a failed trial load into the line users read: a kernel built
/// without the feature says so instead of a bare errno.
pub fn refine_refusal(
    t: ProgramType,
    raw: String,
    config: Option<&KernelConfig>,
    btf: bool,
) -> ProbeStatus {
    let not_set = |name: &str| config.is_some_and(|c| c.is_not_set(name));
    let needs: &[&str] = match t {
        ProgramType::Kprobe => &["CONFIG_KPROBES", "CONFIG_BPF_EVENTS"],
        ProgramType::Tracepoint => &["CONFIG_BPF_EVENTS"],
        ProgramType::Fentry => &["CONFIG_DEBUG_INFO_BTF", "CONFIG_FUNCTION_TRACER"],
        ProgramType::TpBtf => &["CONFIG_DEBUG_INFO_BTF"],
    };
    if let Some(option) = needs.iter().find(|o| not_set(o)) {
        return ProbeStatus::Refused(format!("kernel built without {option}"));
    }
    if !btf && matches!(t, ProgramType::Fentry | ProgramType::TpBtf) {
        return ProbeStatus::Missing(format!("no kernel BTF ({raw})"));
    }
    ProbeStatus::Refused(raw)
}

/// `ok (4 params)`, `ok (present as f.llvm.1)`, `missing: ...`: what a
/// kprobe and an fentry program would find.
pub fn function_line(fact: &SymbolFact) -> String {
    let kprobe = fact.kprobe_status();
    let fentry = fact.fentry_status();
    if !kprobe.is_ok() && !fentry.is_ok() {
        return kprobe.to_string();
    }
    let mut notes = Vec::new();
    if let Some(n) = fact.btf_params {
        notes.push(format!("{n} params"));
    }
    if let Some(SymbolPresence::Suffixed(name)) = &fact.kallsyms {
        notes.push(format!("present as {name}"));
    }
    if !kprobe.is_ok() {
        notes.push(format!("kprobe: {kprobe}"));
    }
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

/// One backend's status: its plan, or why it cannot run (planning or the
/// real attach).
fn backend_status(r: &Report, b: Backend) -> Result<Plan, String> {
    if let Some((_, reason)) = r.attach_failed.iter().find(|(x, _)| *x == b) {
        return Err(reason.clone());
    }
    plan(b, &r.facts)
}

/// `tp_btf sched_waking`, `fexit inet_accept (4 params)`, `via handshake`.
fn used_label(p: &crate::backend::PointPlan) -> String {
    if let Some(via) = p.via {
        return format!("via {via}");
    }
    let labels: Vec<String> = p.used.iter().map(|a| a.label()).collect();
    labels.join(", ")
}

/// The text `herdtrace check` prints.
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
            Privilege::Capabilities => format!("ok ({})", kernel::NEEDED_CAPS),
            Privilege::Insufficient { .. } => f.privileges.to_string(),
        }
    ));
    out.push(format!(
        "tracefs: {}",
        tracefs_status(&r.tracefs).map_or_else(|s| s.to_string(), |p| format!("ok ({p})"))
    ));
    for t in ProgramType::ALL {
        out.push(format!("program {}: {}", t.name(), f.program(t)));
    }
    for h in Feature::ALL {
        out.push(format!("helper {}: {}", h.name(), f.feature(h)));
    }
    let readable = |r: &Result<(), String>| {
        r.as_ref()
            .map_or_else(|e| format!("refused: {e}"), |()| "ok".into())
    };
    out.push(format!("kallsyms: {}", readable(&r.kallsyms)));
    out.push(format!(
        "available_filter_functions: {}",
        readable(&r.filter_functions)
    ));
    for (name, fact) in &f.functions {
        out.push(format!("function {name}: {}", function_line(fact)));
    }
    for (name, status) in &f.tracepoints {
        out.push(format!("tracepoint {name}: {status}"));
    }
    for (name, status) in &f.btf_tracepoints {
        // The argument count of events whose arguments changed, as a
        // function's parameter count is shown.
        match (status, f.btf_tracepoint_params.get(name)) {
            (ProbeStatus::Ok, Some(n)) if probes::btf_arguments_vary(name) => {
                let s = if *n == 1 { "" } else { "s" };
                out.push(format!("btf tracepoint {name}: ok ({n} argument{s})"))
            }
            _ => out.push(format!("btf tracepoint {name}: {status}")),
        }
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
    for b in Backend::ALL {
        match backend_status(r, b) {
            Ok(p) => {
                out.push(format!("backend {b}: ok"));
                for point in &p.points {
                    let used = if point.attached() {
                        used_label(point)
                    } else {
                        "none".into()
                    };
                    out.push(format!("  {}: {used}", point.id));
                }
                for w in &p.warnings {
                    out.push(format!("  warning: {w}"));
                }
            }
            Err(e) => out.push(format!("backend {b}: unavailable ({e})")),
        }
    }
    match r.choice(BackendRequest::Auto) {
        Ok(c) => out.push(format!("backend auto: {c}")),
        Err(e) => out.push(format!("backend auto: none ({e})")),
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
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

fn attach_json(r: &Report, at: &probes::Attach) -> Value {
    json!({
        "program": at.program,
        "kind": at.kind.name(),
        "target": at.target,
        "params": at.params,
        "fields": at.fields,
        "status": match r.facts.attach_status(at) {
            Ok(()) => json!({"status": "ok"}),
            Err(e) => json!({"status": "missing", "reason": e}),
        },
    })
}

/// The probe table with each attachment's status on this kernel and, per
/// backend, what it uses.
fn probes_json(r: &Report) -> Value {
    let plans: BTreeMap<Backend, Result<Plan, String>> = Backend::ALL
        .into_iter()
        .map(|b| (b, backend_status(r, b)))
        .collect();
    let points: Vec<Value> = probes::TABLE
        .iter()
        .map(|p| {
            let used: serde_json::Map<String, Value> = p
                .backends()
                .into_iter()
                .map(|b| {
                    let v = match plans.get(&b).and_then(|x| x.as_ref().ok()) {
                        Some(plan) => match plan.point(p.id) {
                            Some(pp) if pp.attached() => json!({
                                "status": "ok",
                                "attach": pp.used.iter().map(|a| a.label()).collect::<Vec<_>>(),
                                "via": pp.via,
                            }),
                            Some(pp) => json!({
                                "status": "missing",
                                "reason": pp.unusable.first(),
                            }),
                            None => Value::Null,
                        },
                        None => json!({"status": "refused", "reason": "backend unavailable"}),
                    };
                    (b.name().to_owned(), v)
                })
                .collect();
            json!({
                "id": p.id,
                "what": p.what,
                "backends": p.backends().iter().map(|b| b.name()).collect::<Vec<_>>(),
                "required_for": p.required.iter().map(|b| b.name()).collect::<Vec<_>>(),
                "pick": match p.pick { Pick::First => "first", Pick::Each => "each" },
                "kernels": p.kernels,
                "lost": p.lost,
                "variants": p.variants.iter().map(|v| json!({
                    "backends": v.backends.iter().map(|b| b.name()).collect::<Vec<_>>(),
                    "attach": v.attach.iter().map(|a| attach_json(r, a)).collect::<Vec<_>>(),
                    "via": v.via,
                    "note": v.note,
                })).collect::<Vec<_>>(),
                "used": used,
            })
        })
        .collect();
    Value::Array(points)
}

fn choice_json(c: &Result<Choice, String>) -> Value {
    match c {
        Ok(c) => json!({
            "status": "ok",
            "backend": c.backend.name(),
            "skipped": c.skipped,
            "warnings": c.warnings(),
            "attach": c.plan.attachments().map(|a| format!("{} <- {}", a.label(), a.program)).collect::<Vec<_>>(),
        }),
        Err(e) => json!({"status": "refused", "reason": e}),
    }
}

/// The object `herdtrace check --json` prints. Keys are stable; every status
/// is `{"status": "ok"|"missing"|"refused", "reason"?: ...}`.
pub fn render_json(r: &Report) -> Value {
    let f = &r.facts;
    let programs: serde_json::Map<String, Value> = ProgramType::ALL
        .iter()
        .map(|t| (t.name().to_owned(), status_json(&f.program(*t))))
        .collect();
    let helpers: serde_json::Map<String, Value> = Feature::ALL
        .iter()
        .map(|h| (h.name().to_owned(), status_json(&f.feature(*h))))
        .collect();
    let functions: serde_json::Map<String, Value> = f
        .functions
        .iter()
        .map(|(name, fact)| {
            let v = json!({
                "kallsyms_name": match &fact.kallsyms {
                    Some(SymbolPresence::Exact) => json!(name),
                    Some(SymbolPresence::Suffixed(clone)) => json!(clone),
                    Some(SymbolPresence::Absent) | None => Value::Null,
                },
                "btf_params": fact.btf_params,
                "traceable": fact.traceable,
                "kprobe": status_json(&fact.kprobe_status()),
                "fentry": status_json(&fact.fentry_status()),
            });
            (name.clone(), v)
        })
        .collect();
    let statuses = |m: &BTreeMap<String, ProbeStatus>| -> serde_json::Map<String, Value> {
        m.iter().map(|(n, s)| (n.clone(), status_json(s))).collect()
    };
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
                .map(|e| json!({"member": e.member, "required": e.required, "lost": e.lost}))
                .collect();
            json!({"status": "ok", "values": values, "missing": missing})
        }
        Err(e) => json!({"status": "missing", "reason": e}),
    };
    let backends: serde_json::Map<String, Value> = Backend::ALL
        .iter()
        .map(|b| (b.name().to_owned(), choice_json(&r.choice((*b).into()))))
        .collect();
    let privileges = match r.privilege {
        Privilege::Root => json!({"status": "ok", "as": "root"}),
        Privilege::Capabilities => json!({"status": "ok", "as": kernel::NEEDED_CAPS}),
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
        "helpers": helpers,
        "kallsyms": readable(&r.kallsyms),
        "available_filter_functions": readable(&r.filter_functions),
        "functions": functions,
        "tracepoints": statuses(&f.tracepoints),
        "btf_tracepoints": statuses(&f.btf_tracepoints),
        "offsets": offsets,
        "probes": probes_json(r),
        "backends": backends,
        "backend": {"auto": choice_json(&r.choice(BackendRequest::Auto))},
    })
}

/// Used by the consistency tests: every (kind, target) of the table.
#[cfg(feature = "test-hooks")]
pub fn table_targets() -> Vec<(probes::Kind, &'static str)> {
    let mut v: Vec<(probes::Kind, &'static str)> = probes::all_attachments()
        .map(|a| (a.kind, a.target))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Each helper feature's status: `trial_one`'s, or missing without a trial
/// when a feature it requires is not ok (its programs call that one too).
pub(crate) fn feature_statuses(
    trial_one: impl Fn(Feature) -> ProbeStatus,
) -> BTreeMap<Feature, ProbeStatus> {
    let mut features: BTreeMap<Feature, ProbeStatus> = BTreeMap::new();
    // `Feature::ALL` lists a feature after those it requires.
    for f in Feature::ALL {
        let lacking = f
            .requires()
            .iter()
            .find(|r| !features.get(r).is_some_and(ProbeStatus::is_ok));
        let status = match lacking {
            Some(r) => ProbeStatus::Missing(format!("needs {}", r.name())),
            None => trial_one(f),
        };
        features.insert(f, status);
    }
    features
}

#[cfg(test)]
mod tests;
