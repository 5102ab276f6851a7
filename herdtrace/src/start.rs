//! Starting the tracer: the programs' configuration for a plan of the probe
//! table, and the backend choice walked with real attaches, so what `check`
//! reports is what the tracer attaches (a plan the kernel still refuses at
//! load or attach is skipped with that reason, like any other gap).
use herdtrace_common::Config;

use crate::backend::{
    choose_from, Backend, BackendRequest, Choice, KernelFacts, Plan, ProbeStatus,
};
use crate::btf::KernelOffsets;
use crate::loader::{FeatureRefused, Tracer, TracerConfig};
use crate::probes::Kind;

/// What the user sets that the programs read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Only connections to this local port (0: all).
    pub port_filter: u16,
    /// Bound of a wake chain, in nanoseconds.
    pub chain_window_ns: u64,
    /// Ring buffer size in bytes.
    pub ringbuf_bytes: u32,
    /// Attach do-nothing programs instead (benchmarks).
    #[cfg(feature = "test-hooks")]
    pub empty_programs: bool,
}

/// The `Config` slot of one tracepoint field.
type Slot = fn(&mut Config) -> &mut u32;

/// Where each classic tracepoint field the programs read goes in `Config`.
const URING_COMPLETE: &str = "io_uring:io_uring_complete";

const TRACEPOINT_FIELDS: &[(&str, &str, Slot)] = &[
    ("sched:sched_waking", "pid", |c| &mut c.sched_waking_pid),
    ("sched:sched_waking", "comm", |c| &mut c.sched_waking_comm),
    ("sched:sched_process_fork", "child_pid", |c| {
        &mut c.sched_process_fork_child_pid
    }),
    ("sock:sk_data_ready", "skaddr", |c| {
        &mut c.sk_data_ready_skaddr
    }),
    ("sock:inet_sock_set_state", "skaddr", |c| {
        &mut c.inet_sock_set_state_skaddr
    }),
    ("sock:inet_sock_set_state", "oldstate", |c| {
        &mut c.inet_sock_set_state_oldstate
    }),
    ("sock:inet_sock_set_state", "newstate", |c| {
        &mut c.inet_sock_set_state_newstate
    }),
    ("io_uring:io_uring_submit_sqe", "ctx", |c| {
        &mut c.uring_submit_ctx
    }),
    ("io_uring:io_uring_submit_sqe", "user_data", |c| {
        &mut c.uring_submit_user_data
    }),
    ("io_uring:io_uring_submit_sqe", "opcode", |c| {
        &mut c.uring_submit_opcode
    }),
    ("io_uring:io_uring_complete", "ctx", |c| {
        &mut c.uring_complete_ctx
    }),
    ("io_uring:io_uring_complete", "user_data", |c| {
        &mut c.uring_complete_user_data
    }),
    ("io_uring:io_uring_complete", "res", |c| {
        &mut c.uring_complete_res
    }),
    ("io_uring:io_uring_complete", "req", |c| {
        &mut c.uring_complete_req
    }),
    ("io_uring:io_uring_complete", "cflags", |c| {
        &mut c.uring_complete_cflags
    }),
    ("io_uring:io_uring_submit_req", "ctx", |c| {
        &mut c.uring_submit_ctx
    }),
    ("io_uring:io_uring_submit_req", "user_data", |c| {
        &mut c.uring_submit_user_data
    }),
    ("io_uring:io_uring_submit_req", "opcode", |c| {
        &mut c.uring_submit_opcode
    }),
    ("io_uring:io_uring_task_add", "ctx", |c| {
        &mut c.uring_task_add_ctx
    }),
    ("io_uring:io_uring_task_add", "user_data", |c| {
        &mut c.uring_task_add_user_data
    }),
    ("io_uring:io_uring_task_add", "opcode", |c| {
        &mut c.uring_task_add_opcode
    }),
];

/// The programs' configuration for `plan`: struct offsets from BTF, the
/// record offsets of the classic tracepoints it attaches (from their format
/// files), its flags and the user's options. `Err` names what is missing.
pub fn program_config(
    plan: &Plan,
    offsets: &KernelOffsets,
    facts: &KernelFacts,
    opts: &Options,
) -> Result<Config, String> {
    if let Some(m) = offsets.missing_required() {
        return Err(format!(
            "kernel BTF lacks {}, which every backend needs",
            m.member
        ));
    }
    let mut config = Config::default();
    offsets.apply(&mut config);
    for at in plan.attachments().filter(|a| a.kind == Kind::Tracepoint) {
        let fields = facts.tracepoint_fields.get(at.target);
        for field in at.fields {
            let offset = fields
                .and_then(|f| f.get(*field))
                .copied()
                .ok_or_else(|| format!("tracepoint {} has no field {field}", at.target))?;
            set_field(&mut config, at.target, field, offset)?;
        }
    }
    // An optional field: records before 5.13 have no CQE flags (and no
    // multishot accepts to mark).
    if plan.attachments().any(|a| a.target == URING_COMPLETE) {
        config.uring_complete_cflags = facts
            .tracepoint_fields
            .get(URING_COMPLETE)
            .and_then(|f| f.get("cflags"))
            .copied()
            .unwrap_or(0);
    }
    config.iss_opens_chain = u32::from(plan.arrival_substitute());
    config.port_filter = u32::from(opts.port_filter);
    // With softirq_exit attached a chain ends with its softirq: a time
    // bound would only cut real chains when the clock jumps (a guest's vCPU
    // descheduled, a busy host).
    config.chain_window_ns = if plan.point("chain-end").is_some_and(|p| p.attached()) {
        0
    } else {
        opts.chain_window_ns
    };
    Ok(config)
}

/// Writes one tracepoint field offset. The syscall families share one slot
/// each (their records are laid out alike); a kernel where they differ is
/// refused rather than read wrongly.
fn set_field(config: &mut Config, target: &str, field: &str, offset: u32) -> Result<(), String> {
    let slot: &mut u32 = if target.starts_with("syscalls:sys_enter_") && field == "fd" {
        &mut config.sys_enter_fd
    } else if target.starts_with("syscalls:sys_exit_") && field == "ret" {
        &mut config.sys_exit_ret
    } else if let Some((_, _, slot)) = TRACEPOINT_FIELDS
        .iter()
        .find(|(t, f, _)| *t == target && *f == field)
    {
        slot(config)
    } else {
        return Err(format!("no configuration slot for {target} field {field}"));
    };
    if *slot != 0 && *slot != offset {
        return Err(format!(
            "{target} has {field} at offset {offset}, other tracepoints of its family at {}",
            *slot
        ));
    }
    *slot = offset;
    Ok(())
}

/// Chooses the backend for `req` and attaches its plan; with `auto`, a plan
/// the kernel refuses is skipped (with the reason) and the next backend
/// tried. A program the kernel refuses that needs a helper (a [`Feature`])
/// marks that helper refused in `facts`, and the same backend is tried
/// again with the variants without it (said in a warning). Returns the
/// choice as it finally stands and the running tracer.
pub fn attach_first(
    req: BackendRequest,
    facts: &mut KernelFacts,
    offsets: &KernelOffsets,
    opts: &Options,
) -> Result<(Choice, Tracer), String> {
    let mut failed: Vec<(Backend, String)> = Vec::new();
    let mut fallbacks = Vec::new();
    loop {
        let mut choice = choose_from(req, facts, &failed)?;
        let attempt = program_config(&choice.plan, offsets, facts, opts)
            .map_err(|e| anyhow::anyhow!(e))
            .and_then(|config| {
                Tracer::start(&TracerConfig {
                    plan: choice.plan.clone(),
                    config,
                    ringbuf_bytes: opts.ringbuf_bytes,
                    #[cfg(feature = "test-hooks")]
                    empty_programs: opts.empty_programs,
                })
            });
        match attempt {
            Ok(tracer) => {
                choice.plan.warnings.extend(fallbacks);
                return Ok((choice, tracer));
            }
            Err(e) => match e.downcast_ref::<FeatureRefused>() {
                // Only once per helper: its variants are then out of the plan.
                Some(r) if facts.feature(r.feature).is_ok() => {
                    // The whole verifier log, shown with -v.
                    log::warn!("{}", r.reason);
                    let first = r.reason.lines().next().unwrap_or_default();
                    let first = first.split(" Verifier output:").next().unwrap_or(first);
                    fallbacks.push(format!(
                        "{first}: using the programs without {} instead (the same facts, \
                         {}; -v shows the verifier's log)",
                        r.feature.name(),
                        r.feature.fallback_cost()
                    ));
                    facts
                        .features
                        .insert(r.feature, ProbeStatus::Refused(first.to_owned()));
                }
                _ => failed.push((choice.backend, format!("{e:#}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tests::all_ok;
    use crate::backend::{plan, ProbeStatus};
    use crate::probes::{Feature, ProgramType};

    fn offsets() -> KernelOffsets {
        KernelOffsets {
            task_struct_pid: Some(100),
            task_struct_tgid: Some(104),
            file_private_data: Some(200),
            socket_sk: Some(24),
            sock_common_skc_num: Some(14),
            sock_common_skc_state: Some(18),
            ..KernelOffsets::default()
        }
    }

    fn opts() -> Options {
        Options {
            port_filter: 8080,
            chain_window_ns: 5_000_000,
            ringbuf_bytes: 1 << 22,
            #[cfg(feature = "test-hooks")]
            empty_programs: false,
        }
    }

    /// The tracepoint backend with classic tracepoints only (no tp_btf).
    fn classic_only() -> KernelFacts {
        let mut f = all_ok();
        f.programs
            .insert(ProgramType::TpBtf, ProbeStatus::Refused("x".into()));
        f
    }

    #[test]
    fn chains_are_bounded_by_time_only_without_softirq_exit() {
        let mut facts = all_ok();
        for (name, status) in facts.tracepoints.iter_mut() {
            if name.ends_with("softirq_exit") {
                *status = ProbeStatus::Missing("gone".into());
            }
        }
        if let Some(s) = facts.btf_tracepoints.get_mut("softirq_exit") {
            *s = ProbeStatus::Missing("gone".into());
        }
        let p = plan(Backend::Tracepoint, &facts).expect("plan");
        assert!(!p.point("chain-end").expect("chain-end").attached());
        let c = program_config(&p, &offsets(), &facts, &opts()).expect("config");
        assert_eq!(c.chain_window_ns, 5_000_000);
        let p = plan(Backend::Tracepoint, &all_ok()).expect("plan");
        let c = program_config(&p, &offsets(), &all_ok(), &opts()).expect("config");
        assert_eq!(c.chain_window_ns, 0);
    }

    #[test]
    fn classic_tracepoint_fields_come_from_the_formats() {
        let facts = classic_only();
        let p = plan(Backend::Tracepoint, &facts).expect("plan");
        let c = program_config(&p, &offsets(), &facts, &opts()).expect("config");
        assert_eq!(c.sched_waking_pid, 24);
        assert_eq!(c.sched_waking_comm, 8);
        assert_eq!(c.sk_data_ready_skaddr, 8);
        assert_eq!(
            (
                c.inet_sock_set_state_skaddr,
                c.inet_sock_set_state_oldstate,
                c.inet_sock_set_state_newstate
            ),
            (8, 16, 20)
        );
        // No entry program where bpf_task_pt_regs loads: no entry field.
        assert_eq!((c.sys_enter_fd, c.sys_exit_ret), (0, 16));
        let mut older = facts.clone();
        older
            .features
            .insert(Feature::TaskPtRegs, ProbeStatus::Missing("5.14".into()));
        let p = plan(Backend::Tracepoint, &older).expect("plan");
        let c = program_config(&p, &offsets(), &older, &opts()).expect("config");
        assert_eq!((c.sys_enter_fd, c.sys_exit_ret), (16, 16));
        assert_eq!(c.sched_process_fork_child_pid, 44);
        assert_eq!(c.port_filter, 8080);
        // softirq_exit ends chains: no time bound.
        assert_eq!(c.chain_window_ns, 0);
        assert_eq!(c.iss_opens_chain, 0);
        assert_eq!(c.task_struct_pid, 100);
        // BTF tracepoints read no record: nothing to take from a format.
        let p = plan(Backend::Tracepoint, &all_ok()).expect("plan");
        let c = program_config(&p, &offsets(), &all_ok(), &opts()).expect("config");
        assert_eq!((c.sched_waking_pid, c.sk_data_ready_skaddr), (0, 0));
        assert_eq!(c.sys_exit_ret, 16, "syscalls have no BTF variant");
    }

    #[test]
    fn io_uring_accepts_are_told_by_the_request_where_the_record_names_it() {
        let facts = classic_only();
        let p = plan(Backend::Tracepoint, &facts).expect("plan");
        let used = p.point("io-uring-accept").expect("point").used.clone();
        assert_eq!(
            used.iter().map(|a| a.program).collect::<Vec<_>>(),
            [
                "tp_uring_submit",
                "tp_uring_task_add",
                "tp_uring_complete_req"
            ]
        );
        let c = program_config(&p, &offsets(), &facts, &opts()).expect("config");
        assert_eq!(
            (
                c.uring_submit_ctx,
                c.uring_submit_user_data,
                c.uring_submit_opcode
            ),
            (8, 24, 32)
        );
        assert_eq!(
            (
                c.uring_complete_req,
                c.uring_complete_ctx,
                c.uring_complete_user_data,
                c.uring_complete_res,
                c.uring_complete_cflags
            ),
            (16, 8, 24, 32, 36)
        );
        assert_eq!(
            (
                c.uring_task_add_ctx,
                c.uring_task_add_user_data,
                c.uring_task_add_opcode
            ),
            (8, 24, 32)
        );
        // 6.1: the old submission event, the request in the completion.
        let mut six_one = facts.clone();
        six_one.tracepoints.insert(
            "io_uring:io_uring_submit_req".into(),
            ProbeStatus::Missing("6.1".into()),
        );
        let p = plan(Backend::Tracepoint, &six_one).expect("plan");
        let point = p.point("io-uring-accept").expect("point");
        assert_eq!(
            point
                .used
                .iter()
                .map(|a| (a.program, a.target))
                .collect::<Vec<_>>(),
            [
                ("tp_uring_submit", "io_uring:io_uring_submit_sqe"),
                ("tp_uring_task_add", "io_uring:io_uring_task_add"),
                ("tp_uring_complete_req", "io_uring:io_uring_complete")
            ]
        );
        // 5.10: no request in the completion or the poll's wakeup, no CQE
        // flags, the old submission event; accepts are told by their
        // submission or their poll's wakeup.
        let mut old = facts.clone();
        old.tracepoints.remove("io_uring:io_uring_submit_req");
        old.tracepoint_fields.remove("io_uring:io_uring_submit_req");
        let complete = old
            .tracepoint_fields
            .get_mut("io_uring:io_uring_complete")
            .expect("complete");
        complete.remove("req");
        complete.remove("cflags");
        old.tracepoint_fields.insert(
            "io_uring:io_uring_task_add".into(),
            [("ctx", 8), ("opcode", 16), ("user_data", 24), ("mask", 32)]
                .map(|(f, o)| (f.to_owned(), o))
                .into(),
        );
        let p = plan(Backend::Tracepoint, &old).expect("plan");
        let point = p.point("io-uring-accept").expect("point");
        assert_eq!(
            point.used.iter().map(|a| a.program).collect::<Vec<_>>(),
            ["tp_uring_submit", "tp_uring_task_add", "tp_uring_complete"]
        );
        // Nothing is missed there: no warning.
        assert!(
            !p.warnings.iter().any(|w| w.contains("io_uring")),
            "{:?}",
            p.warnings
        );
        let c = program_config(&p, &offsets(), &old, &opts()).expect("config");
        assert_eq!(
            (
                c.uring_task_add_ctx,
                c.uring_task_add_user_data,
                c.uring_task_add_opcode
            ),
            (8, 24, 16)
        );
        assert_eq!(
            (
                c.uring_submit_ctx,
                c.uring_submit_user_data,
                c.uring_submit_opcode
            ),
            (8, 24, 16)
        );
        assert_eq!((c.uring_complete_req, c.uring_complete_cflags), (0, 0));
        assert_eq!(c.uring_complete_res, 32);
        // A kernel without io_uring (CONFIG_IO_URING off) loses only this.
        let mut none = facts.clone();
        for t in [
            "io_uring:io_uring_submit_req",
            "io_uring:io_uring_submit_sqe",
            "io_uring:io_uring_task_add",
            "io_uring:io_uring_complete",
        ] {
            none.tracepoints
                .insert(t.into(), ProbeStatus::Missing("no events/io_uring".into()));
        }
        let p = plan(Backend::Tracepoint, &none).expect("plan");
        assert!(!p.point("io-uring-accept").expect("point").attached());
        program_config(&p, &offsets(), &none, &opts()).expect("config");
    }

    #[test]
    fn a_field_missing_or_out_of_step_is_refused() {
        let mut facts = classic_only();
        facts
            .tracepoint_fields
            .get_mut("sched:sched_waking")
            .expect("waking")
            .remove("comm");
        let p = plan(Backend::Tracepoint, &classic_only()).expect("plan");
        assert_eq!(
            program_config(&p, &offsets(), &facts, &opts()),
            Err("tracepoint sched:sched_waking has no field comm".into())
        );
        let mut facts = classic_only();
        facts
            .tracepoint_fields
            .get_mut("syscalls:sys_exit_accept")
            .expect("accept")
            .insert("ret".into(), 24);
        assert_eq!(
            program_config(&p, &offsets(), &facts, &opts()),
            Err(
                "syscalls:sys_exit_accept has ret at offset 24, other tracepoints of its \
                 family at 16"
                    .into()
            )
        );
    }

    #[test]
    fn substitute_arrivals_set_the_flag_and_required_offsets_are_checked() {
        let mut facts = all_ok();
        facts.tracepoints.insert(
            "sock:sk_data_ready".into(),
            ProbeStatus::Missing("6.1".into()),
        );
        facts
            .btf_tracepoints
            .insert("sk_data_ready".into(), ProbeStatus::Missing("6.1".into()));
        let p = plan(Backend::Tracepoint, &facts).expect("plan");
        let c = program_config(&p, &offsets(), &facts, &opts()).expect("config");
        assert_eq!(c.iss_opens_chain, 1);
        let mut o = offsets();
        o.socket_sk = None;
        assert_eq!(
            program_config(&p, &o, &facts, &opts()),
            Err("kernel BTF lacks socket.sk, which every backend needs".into())
        );
    }
}
