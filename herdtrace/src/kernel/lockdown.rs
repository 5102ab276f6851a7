//! Kernel lockdown (`/sys/kernel/security/lockdown`, 5.4+). Its
//! confidentiality level refuses what tracing needs: BPF programs reading
//! kernel memory, tracefs, perf events and kprobes. The integrity level
//! (the usual one with Secure Boot) refuses only writes to user memory from
//! BPF, which herdtrace never does.
use std::fs;

pub const LOCKDOWN_PATH: &str = "/sys/kernel/security/lockdown";

/// The level in force: the bracketed word of `none integrity
/// [confidentiality]`.
pub fn level(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
}

/// The problem, if the level refuses tracing.
pub fn classify(text: Option<&str>) -> Option<String> {
    let level = level(text?)?;
    (level == "confidentiality").then(|| {
        format!(
            "the kernel is locked down at the confidentiality level ({LOCKDOWN_PATH}): it \
             refuses BPF programs that read kernel memory, and tracefs, so nothing can be \
             traced; boot without lockdown=confidentiality (the integrity level, Secure Boot's \
             usual one, allows herdtrace)"
        )
    })
}

/// [`classify`] for this kernel (no file: no lockdown LSM, nothing refused).
pub fn lockdown_problem() -> Option<String> {
    classify(fs::read_to_string(LOCKDOWN_PATH).ok().as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level("[none] integrity confidentiality\n"), Some("none"));
        assert_eq!(
            level("none [integrity] confidentiality\n"),
            Some("integrity")
        );
        assert_eq!(
            level("none integrity [confidentiality]\n"),
            Some("confidentiality")
        );
        assert_eq!(level(""), None);
    }

    #[test]
    fn only_confidentiality_refuses_tracing() {
        assert_eq!(classify(None), None, "no lockdown LSM");
        assert_eq!(classify(Some("[none] integrity confidentiality")), None);
        assert_eq!(classify(Some("none [integrity] confidentiality")), None);
        let problem = classify(Some("none integrity [confidentiality]")).expect("refused");
        assert!(problem.starts_with("the kernel is locked down at the confidentiality level"));
        assert!(!problem.contains('\n'), "one line");
        assert_eq!(classify(Some("garbage")), None);
    }
}
