//! Whether this process may load and attach tracing BPF programs: root, or
//! the capabilities in `/proc/self/status`.
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// What a tracer that is not root needs (each was checked by leaving it out,
/// docs/install.md): CAP_BPF and CAP_PERFMON create the maps and load and
/// attach the programs (CAP_SYS_ADMIN does both before 5.8); tracefs, where
/// every backend finds its tracepoints, is readable by root only, hence
/// CAP_DAC_READ_SEARCH, which also lists other users' /proc/PID/fd; reading
/// those fd links (where the listening sockets are found) is a ptrace access
/// check, hence CAP_SYS_PTRACE.
pub const NEEDED_CAPS: &str = "CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE";

/// Whether this process may trace: load and attach tracing BPF programs,
/// read tracefs and the traced processes' /proc entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Effective uid 0.
    Root,
    /// Every capability of [`NEEDED_CAPS`] (CAP_SYS_ADMIN standing in for
    /// CAP_BPF+CAP_PERFMON, as older kernels need).
    Capabilities,
    /// Not root, and some of them missing (`cap_eff`: the effective set).
    Insufficient { uid: u32, cap_eff: u64 },
}

impl Privilege {
    /// The one-line error for a user who cannot trace, `None` when they can.
    pub fn problem(&self) -> Option<String> {
        match self {
            Privilege::Insufficient { uid, cap_eff } => {
                let missing = missing_caps(*cap_eff);
                // Naming what is missing helps only when some are there.
                Some(if missing.len() == 4 {
                    format!("need root or {NEEDED_CAPS} (current uid {uid})")
                } else {
                    format!(
                        "need root or {NEEDED_CAPS} (current uid {uid}, missing {})",
                        missing.join("+")
                    )
                })
            }
            _ => None,
        }
    }

    /// Whether BPF programs can be loaded at all (what `check`'s trial loads
    /// need), even if tracing would still be refused.
    pub fn can_load_programs(&self) -> bool {
        match self {
            Privilege::Root | Privilege::Capabilities => true,
            Privilege::Insufficient { cap_eff, .. } => {
                let missing = missing_caps(*cap_eff);
                !missing.contains(&"CAP_BPF") && !missing.contains(&"CAP_PERFMON")
            }
        }
    }
}

/// The capabilities of [`NEEDED_CAPS`] that the effective set `cap_eff` lacks.
pub fn missing_caps(cap_eff: u64) -> Vec<&'static str> {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_SYS_ADMIN) {
        if !has(CAP_BPF) {
            missing.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    if !has(CAP_DAC_READ_SEARCH) {
        missing.push("CAP_DAC_READ_SEARCH");
    }
    if !has(CAP_SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    missing
}

/// The `CapEff:` mask from the text of `/proc/self/status`.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Decides from the effective uid and capability mask.
pub fn classify_privilege(euid: u32, cap_eff: Option<u64>) -> Privilege {
    let cap_eff = cap_eff.unwrap_or(0);
    if euid == 0 {
        Privilege::Root
    } else if missing_caps(cap_eff).is_empty() {
        Privilege::Capabilities
    } else {
        Privilege::Insufficient { uid: euid, cap_eff }
    }
}

/// This process's privilege.
pub fn privilege() -> Privilege {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    classify_privilege(euid, parse_cap_eff(&status))
}

/// `Some("need root or CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE
/// (current uid N)")` when this process cannot trace.
pub fn privilege_problem() -> Option<String> {
    privilege().problem()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1fffeffffff));
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn privilege_rules() {
        let bit = |cap: u32| 1u64 << cap;
        let four = bit(CAP_BPF) | bit(CAP_PERFMON) | bit(CAP_DAC_READ_SEARCH) | bit(CAP_SYS_PTRACE);
        assert_eq!(classify_privilege(0, None), Privilege::Root);
        assert_eq!(classify_privilege(0, Some(0)), Privilege::Root);
        assert_eq!(
            classify_privilege(1000, Some(four)),
            Privilege::Capabilities
        );
        // Before 5.8, CAP_SYS_ADMIN stands in for CAP_BPF+CAP_PERFMON only.
        let old_kernel = bit(CAP_SYS_ADMIN) | bit(CAP_DAC_READ_SEARCH) | bit(CAP_SYS_PTRACE);
        assert_eq!(
            classify_privilege(1000, Some(old_kernel)),
            Privilege::Capabilities
        );
        // Any one of the four left out is not enough.
        for cap in [CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE] {
            let cap_eff = four & !bit(cap);
            assert_eq!(
                classify_privilege(1000, Some(cap_eff)),
                Privilege::Insufficient { uid: 1000, cap_eff }
            );
        }
        for cap_eff in [bit(CAP_SYS_ADMIN), bit(CAP_BPF) | bit(CAP_PERFMON), 0] {
            assert_eq!(
                classify_privilege(1000, Some(cap_eff)),
                Privilege::Insufficient { uid: 1000, cap_eff }
            );
        }
        assert_eq!(
            classify_privilege(7, None),
            Privilege::Insufficient { uid: 7, cap_eff: 0 }
        );
    }

    #[test]
    fn privilege_error_names_the_four_and_what_is_missing() {
        let bit = |cap: u32| 1u64 << cap;
        assert_eq!(
            Privilege::Insufficient {
                uid: 1000,
                cap_eff: 0
            }
            .problem()
            .as_deref(),
            Some(
                "need root or CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE \
                 (current uid 1000)"
            )
        );
        let two = bit(CAP_BPF) | bit(CAP_PERFMON);
        assert_eq!(
            Privilege::Insufficient {
                uid: 999,
                cap_eff: two
            }
            .problem()
            .as_deref(),
            Some(
                "need root or CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE \
                 (current uid 999, missing CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE)"
            )
        );
        assert_eq!(
            Privilege::Insufficient {
                uid: 5,
                cap_eff: bit(CAP_SYS_ADMIN) | bit(CAP_SYS_PTRACE)
            }
            .problem()
            .as_deref(),
            Some(
                "need root or CAP_BPF+CAP_PERFMON+CAP_DAC_READ_SEARCH+CAP_SYS_PTRACE \
                 (current uid 5, missing CAP_DAC_READ_SEARCH)"
            )
        );
        assert_eq!(Privilege::Root.problem(), None);
        assert_eq!(Privilege::Capabilities.problem(), None);
    }

    #[test]
    fn programs_load_with_bpf_and_perfmon_alone() {
        let bit = |cap: u32| 1u64 << cap;
        let can = |cap_eff: u64| Privilege::Insufficient { uid: 1, cap_eff }.can_load_programs();
        assert!(can(bit(CAP_BPF) | bit(CAP_PERFMON)));
        assert!(can(bit(CAP_SYS_ADMIN)));
        assert!(!can(bit(CAP_BPF)
            | bit(CAP_DAC_READ_SEARCH)
            | bit(CAP_SYS_PTRACE)));
        assert!(!can(0));
        assert!(Privilege::Root.can_load_programs());
        assert!(Privilege::Capabilities.can_load_programs());
    }

    #[test]
    fn host_privilege_matches_euid() {
        // SAFETY: no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(privilege() == Privilege::Root, euid == 0);
        assert_eq!(
            privilege_problem().is_none(),
            !matches!(privilege(), Privilege::Insufficient { .. })
        );
    }
}
