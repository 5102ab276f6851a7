//! Which backend (set of probe points) the tracer uses on this kernel, and
//! exactly which programs it attaches.
//!
//! Pure: [`plan`] and [`choose`] walk the probe table (`probes::TABLE`) over
//! [`KernelFacts`] gathered elsewhere (`check::gather_facts`), so every
//! combination is unit-tested without a kernel, and `check` and the tracer
//! decide with the same code.
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::kernel::SymbolPresence;
use crate::probes::{self, Attach, Feature, Kind, Pick, Point, ProgramType, Variant};

/// A set of probe points the tracer can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
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

    /// The program type every one of its probe points needs.
    fn program_type(self) -> ProgramType {
        match self {
            Backend::Fentry => ProgramType::Fentry,
            Backend::Kprobe => ProgramType::Kprobe,
            Backend::Tracepoint => ProgramType::Tracepoint,
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

impl From<Backend> for BackendRequest {
    fn from(b: Backend) -> BackendRequest {
        match b {
            Backend::Fentry => BackendRequest::Fentry,
            Backend::Kprobe => BackendRequest::Kprobe,
            Backend::Tracepoint => BackendRequest::Tracepoint,
        }
    }
}

impl BackendRequest {
    /// The backends to try, in order.
    pub fn candidates(self) -> Vec<Backend> {
        match self {
            BackendRequest::Auto => Backend::ALL.to_vec(),
            BackendRequest::Fentry => vec![Backend::Fentry],
            BackendRequest::Kprobe => vec![Backend::Kprobe],
            BackendRequest::Tracepoint => vec![Backend::Tracepoint],
        }
    }
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
    /// Usable by a kprobe. A compiler clone (`.isra`, `.constprop`, `.part`)
    /// may have dropped or reordered parameters, which nothing here can
    /// verify, so it is refused; an LTO rename (`.llvm.N`) keeps them.
    pub fn kprobe_status(&self) -> ProbeStatus {
        match &self.kallsyms {
            Some(SymbolPresence::Exact) => ProbeStatus::Ok,
            Some(SymbolPresence::Suffixed(name)) if is_rename(name) => ProbeStatus::Ok,
            Some(SymbolPresence::Suffixed(clone)) => ProbeStatus::Refused(format!(
                "only present as the compiler clone {clone}, whose parameters cannot be verified"
            )),
            Some(SymbolPresence::Absent) => {
                ProbeStatus::Missing("not in /proc/kallsyms (inlined or not built)".into())
            }
            None if self.btf_params.is_some() => ProbeStatus::Ok,
            None => ProbeStatus::Missing("not in BTF, and /proc/kallsyms is unreadable".into()),
        }
    }

    /// Usable by fentry/fexit: needs the BTF function and the exact, traceable symbol.
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

    /// The name a kprobe attaches to: the renamed symbol when only that exists.
    pub fn attach_name<'a>(&'a self, name: &'a str) -> &'a str {
        match &self.kallsyms {
            Some(SymbolPresence::Suffixed(renamed)) if is_rename(renamed) => renamed,
            _ => name,
        }
    }
}

/// `name.llvm.123`: renamed by LTO, same parameters.
fn is_rename(symbol: &str) -> bool {
    symbol
        .split_once('.')
        .is_some_and(|(_, suffix)| suffix.starts_with("llvm."))
}

/// Everything [`plan`] needs to know about the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    pub version: Option<(u32, u32, u32)>,
    /// Kernel BTF (`/sys/kernel/btf/vmlinux`) with the struct members every
    /// backend reads.
    pub btf: ProbeStatus,
    /// Root or the capabilities of `kernel::NEEDED_CAPS`.
    pub privileges: ProbeStatus,
    /// Program types, from trial loads.
    pub programs: BTreeMap<ProgramType, ProbeStatus>,
    /// Helpers some program variants need, from trial loads.
    pub features: BTreeMap<Feature, ProbeStatus>,
    /// Classic tracepoints of the table (`category:name`): present in tracefs
    /// with the record fields the programs read.
    pub tracepoints: BTreeMap<String, ProbeStatus>,
    /// BTF tracepoints of the table (event name): `btf_trace_<name>` in BTF.
    pub btf_tracepoints: BTreeMap<String, ProbeStatus>,
    /// How many arguments each BTF tracepoint of the table passes, where
    /// BTF says (events whose arguments changed between versions).
    pub btf_tracepoint_params: BTreeMap<String, usize>,
    /// Kernel functions of the table.
    pub functions: BTreeMap<String, SymbolFact>,
    /// Record field offsets of the classic tracepoints that exist
    /// (`category:name` -> field -> offset), from their tracefs format files.
    pub tracepoint_fields: BTreeMap<String, BTreeMap<String, u32>>,
}

impl KernelFacts {
    pub fn program(&self, t: ProgramType) -> ProbeStatus {
        self.programs
            .get(&t)
            .cloned()
            .unwrap_or_else(|| ProbeStatus::Missing("not checked".into()))
    }

    pub fn feature(&self, f: Feature) -> ProbeStatus {
        self.features
            .get(&f)
            .cloned()
            .unwrap_or_else(|| ProbeStatus::Missing("not checked".into()))
    }

    pub fn function(&self, name: &str) -> SymbolFact {
        self.functions.get(name).cloned().unwrap_or_default()
    }

    /// Whether a classic tracepoint's record has every field the program
    /// reads (fields that only some records have: `probes::fields_of`).
    fn record_status(&self, at: &Attach) -> ProbeStatus {
        let fields = self.tracepoint_fields.get(at.target);
        match at
            .fields
            .iter()
            .find(|f| !fields.is_some_and(|fs| fs.contains_key(**f)))
        {
            Some(f) => ProbeStatus::Missing(format!("no field {f} in its format")),
            None => ProbeStatus::Ok,
        }
    }

    /// Whether one attachment can be made here, and if not, why (`"fexit
    /// inet_accept missing: ..."`).
    pub fn attach_status(&self, at: &Attach) -> Result<(), String> {
        // The target alone: a variant that differs only by its helper fails
        // for the same reason, said once.
        let why = |s: ProbeStatus| format!("{} {} {s}", at.kind.name(), at.target);
        let program = self.program(at.kind.program_type());
        if !program.is_ok() {
            return Err(format!("{} (program {})", why(program), at.kind.name()));
        }
        if let Some(f) = at.needs {
            // What it requires first: its reason is then the same as that of
            // the variant that needs only that, said once.
            for g in f.requires().iter().copied().chain([f]) {
                let status = self.feature(g);
                if !status.is_ok() {
                    return Err(format!("helper {} {status}", g.name()));
                }
            }
        }
        let lookup = |map: &BTreeMap<String, ProbeStatus>, key: &str| {
            map.get(key)
                .cloned()
                .unwrap_or_else(|| ProbeStatus::Missing("not checked".into()))
        };
        let status = match at.kind {
            Kind::Tracepoint => match lookup(&self.tracepoints, at.target) {
                ProbeStatus::Ok => self.record_status(at),
                s => s,
            },
            Kind::BtfTracepoint if !self.btf.is_ok() => {
                ProbeStatus::Missing(format!("kernel BTF {}", self.btf))
            }
            Kind::BtfTracepoint => match (
                lookup(&self.btf_tracepoints, at.target),
                at.params,
                self.btf_tracepoint_params.get(at.target),
            ) {
                (ProbeStatus::Ok, Some(want), Some(&n)) if n != want => ProbeStatus::Missing(
                    format!("passes {n} arguments here, this program reads {want}"),
                ),
                (ProbeStatus::Ok, Some(_), None) => {
                    ProbeStatus::Missing("has no prototype in BTF".into())
                }
                (s, _, _) => s,
            },
            Kind::Kprobe | Kind::Kretprobe => self.function(at.target).kprobe_status(),
            Kind::Fentry | Kind::Fexit => {
                let f = self.function(at.target);
                match (f.fentry_status(), at.params) {
                    (ProbeStatus::Ok, Some(want)) if f.btf_params != Some(want) => {
                        ProbeStatus::Missing(format!(
                            "has {} parameters here, this program reads {want}",
                            f.btf_params.unwrap_or(0)
                        ))
                    }
                    (s, _) => s,
                }
            }
        };
        if status.is_ok() {
            Ok(())
        } else {
            Err(why(status))
        }
    }
}

/// How one probe point is provided under one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointPlan {
    pub id: &'static str,
    /// The attachments used (several for `Pick::Each`).
    pub used: Vec<Attach>,
    /// Provided by another point (the arrival substitute).
    pub via: Option<&'static str>,
    /// Why the best variant (or, for `Pick::Each`, each missing one) is not
    /// used; empty when the best one is.
    pub unusable: Vec<String>,
}

impl PointPlan {
    pub fn attached(&self) -> bool {
        !self.used.is_empty() || self.via.is_some()
    }
}

/// What one backend attaches on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub backend: Backend,
    /// Every point the backend uses, in table order.
    pub points: Vec<PointPlan>,
    /// What is lost or less precise on this kernel, each said once.
    pub warnings: Vec<String>,
    /// Kernel functions a kprobe reaches under another symbol (an LTO
    /// rename, `name.llvm.N`): table target -> symbol to attach to.
    pub renamed: BTreeMap<&'static str, String>,
}

impl Plan {
    /// The kernel symbol a kprobe on `target` attaches to.
    pub fn kernel_symbol<'a>(&'a self, target: &'a str) -> &'a str {
        self.renamed.get(target).map_or(target, String::as_str)
    }

    /// Every program to attach, in order.
    pub fn attachments(&self) -> impl Iterator<Item = &Attach> {
        self.points.iter().flat_map(|p| p.used.iter())
    }

    pub fn point(&self, id: &str) -> Option<&PointPlan> {
        self.points.iter().find(|p| p.id == id)
    }

    /// Arrivals come from the handshake tracepoint (no `sock:sk_data_ready`).
    pub fn arrival_substitute(&self) -> bool {
        self.point("arrival").is_some_and(|p| p.via.is_some())
    }
}

/// Walks the probe table for `backend`: `Err(reason)` when a required point
/// has no usable variant (the reason names the first one missing).
pub fn plan(backend: Backend, facts: &KernelFacts) -> Result<Plan, String> {
    let program = facts.program(backend.program_type());
    if !program.is_ok() {
        return Err(program.to_string());
    }
    if !facts.btf.is_ok() {
        // Every backend reads kernel structs at offsets found in BTF.
        return Err(format!("kernel BTF {}", facts.btf));
    }
    let mut points: Vec<PointPlan> = Vec::new();
    let mut warnings = Vec::new();
    for point in probes::TABLE {
        if !point.backends().contains(&backend) {
            debug_assert!(
                !point.is_required(backend),
                "{} required without a variant",
                point.id
            );
            continue;
        }
        let p = plan_point(point, backend, facts, &points);
        if !p.attached() {
            // Every variant failed: each one's reason, once.
            let mut reasons: Vec<&str> = Vec::new();
            for r in &p.unusable {
                if !reasons.contains(&r.as_str()) {
                    reasons.push(r);
                }
            }
            let reason = reasons.join("; ");
            if point.is_required(backend) {
                return Err(reason);
            }
            warnings.push(format!("{reason}: {}", point.lost));
        } else {
            warnings.extend(point_warnings(point, backend, &p));
        }
        points.push(p);
    }
    let guarded = points
        .iter()
        .flat_map(|p| p.used.iter())
        .any(|a| matches!(a.kind, Kind::Kprobe | Kind::Kretprobe | Kind::Tracepoint));
    if guarded && facts.version.is_some_and(|v| v < (5, 12, 0)) {
        warnings.push(UNCOUNTED_SKIPS.to_owned());
    }
    let returns = points
        .iter()
        .flat_map(|p| p.used.iter())
        .any(|a| a.kind == Kind::Kretprobe);
    if returns && facts.version.is_some_and(|v| v < (6, 7, 0)) {
        warnings.push(UNCOUNTED_KRETPROBE_MISSES.to_owned());
    }
    let mut renamed = BTreeMap::new();
    for at in points.iter().flat_map(|p| p.used.iter()) {
        if matches!(at.kind, Kind::Kprobe | Kind::Kretprobe) {
            let symbol = facts.function(at.target).attach_name(at.target).to_owned();
            if symbol != at.target {
                renamed.insert(at.target, symbol);
            }
        }
    }
    Ok(Plan {
        backend,
        points,
        warnings,
        renamed,
    })
}

/// Said on kernels that skip kprobe and tracepoint programs (their shared
/// recursion guard) without counting it.
pub const UNCOUNTED_SKIPS: &str = "kernel before 5.12: runs of kprobe and tracepoint programs \
    the kernel skips (an interrupt's softirq arriving while another BPF program runs on that \
    CPU) are not counted, so counts can be short under load without notice";

/// Said for the kprobe backend on kernels that do not report a kprobe
/// link's missed runs (`bpf_link_info.perf_event.kprobe.missed`, 6.7+).
pub const UNCOUNTED_KRETPROBE_MISSES: &str = "kernel before 6.7: return probes the kernel \
    misses (kretprobe instances run out when many tasks sleep in a probed function such as \
    epoll_wait) are not counted, so the woken, EAGAIN and returned counts of connections open \
    then can be off under load without notice; the fentry backend has no such limit";

fn plan_point(
    point: &Point,
    backend: Backend,
    facts: &KernelFacts,
    done: &[PointPlan],
) -> PointPlan {
    let mut p = PointPlan {
        id: point.id,
        used: Vec::new(),
        via: None,
        unusable: Vec::new(),
    };
    for var in point.variants_for(backend) {
        match variant_status(var, facts, done) {
            Ok(()) => {
                p.used.extend(var.attach.iter().copied());
                p.via = p.via.or(var.via);
                if point.pick == Pick::First {
                    break;
                }
            }
            Err(reason) if p.unusable.contains(&reason) => {}
            Err(reason) => p.unusable.push(reason),
        }
    }
    if point.pick == Pick::First && p.attached() {
        // Only the reasons of better variants matter (the note says what they cost).
        p.unusable.truncate(usize::from(!p.unusable.is_empty()));
    }
    p
}

fn variant_status(var: &Variant, facts: &KernelFacts, done: &[PointPlan]) -> Result<(), String> {
    if let Some(via) = var.via {
        return match done.iter().find(|d| d.id == via) {
            Some(d) if !d.used.is_empty() => Ok(()),
            _ => Err(format!("point {via} not attached")),
        };
    }
    var.attach.iter().try_for_each(|at| facts.attach_status(at))
}

/// Warnings for a point that is attached: a degraded variant's note, or
/// each missing variant of a `Pick::Each` point.
fn point_warnings(point: &Point, backend: Backend, p: &PointPlan) -> Vec<String> {
    match point.pick {
        Pick::Each => p
            .unusable
            .iter()
            .map(|r| format!("{r}: {}", point.lost))
            .collect(),
        Pick::First => point
            .variants_for(backend)
            // The whole list: two variants can share their first program.
            .find(|v| v.via == p.via && v.attach == p.used.as_slice())
            .and_then(|v| v.note)
            .map(|note| vec![note.to_owned()])
            .unwrap_or_default(),
    }
}

/// The backend [`choose`] picked, and why better ones were passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub backend: Backend,
    pub plan: Plan,
    /// For auto: one `"<backend> skipped: <reason>"` per better backend.
    pub skipped: Vec<String>,
}

impl Choice {
    /// Metrics the chosen backend loses on this kernel.
    pub fn warnings(&self) -> &[String] {
        &self.plan.warnings
    }
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

/// Picks the backend for `req`: auto takes the first of fentry, kprobe,
/// tracepoint whose plan works; an explicit request fails with the reason.
pub fn choose(req: BackendRequest, facts: &KernelFacts) -> Result<Choice, String> {
    choose_from(req, facts, &[])
}

/// [`choose`], with backends already known not to attach (`(backend,
/// reason)`: the trial attach of their plan failed) skipped with that reason.
pub fn choose_from(
    req: BackendRequest,
    facts: &KernelFacts,
    failed: &[(Backend, String)],
) -> Result<Choice, String> {
    let mut skipped = Vec::new();
    for backend in req.candidates() {
        let result = match failed.iter().find(|(b, _)| *b == backend) {
            Some((_, reason)) => Err(reason.clone()),
            None => plan(backend, facts),
        };
        match result {
            Ok(plan) => {
                return Ok(Choice {
                    backend,
                    plan,
                    skipped,
                })
            }
            Err(reason) if req != BackendRequest::Auto => {
                return Err(format!("{backend} backend unavailable: {reason}"))
            }
            Err(reason) => skipped.push(format!("{backend} skipped: {reason}")),
        }
    }
    Err(format!(
        "no backend works on this kernel ({})",
        skipped.join("; ")
    ))
}

#[cfg(test)]
pub(crate) mod tests;
