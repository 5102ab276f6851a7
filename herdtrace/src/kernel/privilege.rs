//! Whether this process may load and attach tracing BPF programs: root, or
//! the capabilities in `/proc/self/status`.
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Whether this process may load and attach tracing BPF programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Effective uid 0.
    Root,
    /// CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN, which older kernels need instead).
    Capabilities,
    /// Neither: BPF loads will fail.
    Insufficient { uid: u32 },
}

impl Privilege {
    /// The one-line error for a user who cannot trace, `None` when they can.
    pub fn problem(&self) -> Option<String> {
        match self {
            Privilege::Insufficient { uid } => Some(format!(
                "need root or CAP_BPF+CAP_PERFMON (current uid {uid})"
            )),
            _ => None,
        }
    }
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
    let has = |cap: u32| cap_eff.is_some_and(|m| m & (1u64 << cap) != 0);
    if euid == 0 {
        Privilege::Root
    } else if (has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN) {
        Privilege::Capabilities
    } else {
        Privilege::Insufficient { uid: euid }
    }
}

/// This process's privilege.
pub fn privilege() -> Privilege {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    classify_privilege(euid, parse_cap_eff(&status))
}

/// `Some("need root or CAP_BPF+CAP_PERFMON (current uid N)")` when this
/// process cannot load tracing programs.
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
        let bpf_perfmon = (1u64 << CAP_BPF) | (1u64 << CAP_PERFMON);
        assert_eq!(classify_privilege(0, None), Privilege::Root);
        assert_eq!(classify_privilege(0, Some(0)), Privilege::Root);
        assert_eq!(
            classify_privilege(1000, Some(bpf_perfmon)),
            Privilege::Capabilities
        );
        assert_eq!(
            classify_privilege(1000, Some(1u64 << CAP_SYS_ADMIN)),
            Privilege::Capabilities
        );
        for only_one in [1u64 << CAP_BPF, 1u64 << CAP_PERFMON, 0] {
            assert_eq!(
                classify_privilege(1000, Some(only_one)),
                Privilege::Insufficient { uid: 1000 }
            );
        }
        assert_eq!(
            classify_privilege(7, None),
            Privilege::Insufficient { uid: 7 }
        );
        assert_eq!(
            Privilege::Insufficient { uid: 1000 }.problem().as_deref(),
            Some("need root or CAP_BPF+CAP_PERFMON (current uid 1000)")
        );
        assert_eq!(Privilege::Root.problem(), None);
        assert_eq!(Privilege::Capabilities.problem(), None);
    }

    #[test]
    fn host_privilege_matches_euid() {
        // SAFETY: no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(privilege() == Privilege::Root, euid == 0);
        assert_eq!(
            privilege_problem().is_none(),
            privilege() != Privilege::Insufficient { uid: euid }
        );
    }
}
