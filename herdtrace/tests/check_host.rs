//! Runs the built `herdtrace check` on this machine and compares it with what
//! the test reads from the kernel itself. Needs root (trial BPF loads): skipped
//! with a printed reason otherwise, except under CI=true, where it must run.
use std::process::Command;

use serde_json::Value;

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (returns false) with a reason, or fails when CI requires the test.
fn may_run(reason: Option<String>) -> bool {
    match reason {
        None => true,
        Some(r) => {
            assert!(!in_ci(), "CI=true, so this must run, but: {r}");
            eprintln!("skipped: {r}");
            false
        }
    }
}

fn run_check(json: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herdtrace"));
    cmd.arg("check");
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("herdtrace check runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "herdtrace check failed: {stderr}"
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn check_reports_this_kernel() {
    if !may_run(herdtrace::kernel::privilege_problem()) {
        return;
    }
    let v: Value = serde_json::from_str(&run_check(true)).expect("check --json prints JSON");
    let status = |v: &Value| v["status"].as_str().unwrap_or("<none>").to_owned();

    let tracepoint = &v["programs"]["tracepoint"];
    // A build without the eBPF object (AYA_BUILD_SKIP) cannot trial-load anything.
    let no_object = tracepoint["reason"]
        .as_str()
        .is_some_and(|r| r.contains("without its eBPF object"));
    if !may_run(no_object.then(|| "herdtrace was built without its eBPF object".to_owned())) {
        return;
    }
    // Every kernel herdtrace supports runs classic and BTF tracepoints.
    assert_eq!(status(tracepoint), "ok", "{tracepoint}");
    assert_eq!(status(&v["programs"]["tp_btf"]), "ok", "{}", v["programs"]);

    let release = herdtrace::kernel::release().expect("uname");
    let kprobe = &v["programs"]["kprobe"];
    match herdtrace::kernel::KernelConfig::load(&release) {
        Ok(config) => {
            let without = config.is_not_set("KPROBES");
            assert_eq!(
                status(kprobe) == "refused",
                without,
                "kprobe {kprobe} vs CONFIG_KPROBES not set = {without}"
            );
            if without {
                assert_eq!(kprobe["reason"], "kernel built without CONFIG_KPROBES");
            }
        }
        Err(e) => eprintln!("kernel config unreadable ({e:#}): kprobe line not compared"),
    }

    // Auto must be the first explicit backend that works, and say why it skipped the others.
    let order = ["fentry", "kprobe", "tracepoint"];
    let first_ok = order
        .iter()
        .position(|b| status(&v["backends"][*b]) == "ok")
        .expect("tracepoints work, so some backend does");
    let auto = &v["backend"]["auto"];
    assert_eq!(status(auto), "ok", "{auto}");
    assert_eq!(auto["backend"], order[first_ok], "{v:#}");
    let skipped = auto["skipped"].as_array().expect("skipped list");
    assert_eq!(skipped.len(), first_ok, "{auto}");
    for (line, backend) in skipped.iter().zip(order) {
        let line = line.as_str().expect("string");
        assert!(line.starts_with(&format!("{backend} skipped: ")), "{line}");
    }
    // Program lines agree with the backends built on them.
    for b in ["fentry", "kprobe"] {
        if status(&v["programs"][b]) != "ok" {
            assert_ne!(status(&v["backends"][b]), "ok", "{b}");
        }
    }
    // The facts the tracer reuses agree with what the binary printed.
    let facts = herdtrace::check::gather_facts();
    use herdtrace::probes::ProgramType;
    assert_eq!(
        facts.program(ProgramType::Tracepoint).is_ok(),
        status(tracepoint) == "ok",
        "{facts:?}"
    );
    assert_eq!(
        facts
            .program(ProgramType::Kprobe)
            .to_string()
            .starts_with("refused"),
        status(kprobe) == "refused"
    );
    // Every probe point of the table is listed, with its backends, and the
    // auto plan names each program it attaches.
    let probes = v["probes"].as_array().expect("probes");
    assert_eq!(probes.len(), herdtrace::probes::TABLE.len());
    for (p, want) in probes.iter().zip(herdtrace::probes::TABLE) {
        assert_eq!(p["id"], want.id);
        assert!(p["backends"].as_array().is_some_and(|b| !b.is_empty()));
    }
    let attach = auto["attach"].as_array().expect("attach list");
    assert!(!attach.is_empty());
    // This kernel has the BTF tracepoints: the plan prefers them.
    assert!(
        attach
            .iter()
            .any(|a| a == "tp_btf sched_waking <- btf_sched_waking"),
        "{attach:?}"
    );

    // From 5.15 (bpf_task_pt_regs) the tracepoint backend's syscall exits
    // read the fd from the task's registers: no syscall entry tracepoint is
    // attached, so the machine's other syscalls pay for the exit side only.
    if auto["backend"] == "tracepoint" {
        let regs = status(&v["helpers"]["bpf_task_pt_regs"]) == "ok";
        let version: Vec<u64> = v["kernel"]["version"]
            .as_array()
            .expect("kernel version")
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        if version[..2] >= [5, 15][..] {
            assert!(regs, "{}", v["helpers"]);
        }
        let entries: Vec<&Value> = attach
            .iter()
            .filter(|a| {
                a.as_str()
                    .is_some_and(|a| a.contains("syscalls:sys_enter_"))
            })
            .collect();
        assert_eq!(entries.is_empty(), regs, "{attach:?}");
        if regs {
            for want in [
                "tracepoint syscalls:sys_exit_accept4 (with bpf_task_pt_regs) <- tp_accept_exit_regs",
                "tracepoint syscalls:sys_exit_listen (with bpf_task_pt_regs) <- tp_listen_exit_regs",
            ] {
                assert!(attach.iter().any(|a| a == want), "{want} in {attach:?}");
            }
        }
    }

    // The text form prints the same decision.
    let text = run_check(false);
    let auto_line = text
        .lines()
        .find(|l| l.starts_with("backend auto: "))
        .expect("backend auto line");
    assert!(
        auto_line.starts_with(&format!("backend auto: {}", order[first_ok])),
        "{auto_line}"
    );
    for p in ["tracepoint", "tp_btf", "kprobe", "fentry"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("program {p}: "))),
            "no program {p} line in:\n{text}"
        );
    }
}
