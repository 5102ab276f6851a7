//! Which kernel functions exist, and under which symbol: `/proc/kallsyms`
//! and tracefs `available_filter_functions`.
use anyhow::Context;

use super::tracefs::tracefs;

/// How a function name appears in a symbol listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolPresence {
    /// Under its exact name.
    Exact,
    /// Only as a compiler clone such as `name.isra.0` (given in full).
    Suffixed(String),
    /// Not listed (inlined, or not built in).
    Absent,
}

/// Symbol names in `/proc/kallsyms` (`address type name [module]`).
pub fn kallsyms_names(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|l| l.split_whitespace().nth(2))
}

/// Function names in tracefs `available_filter_functions` (`name [module]`).
pub fn filter_function_names(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|l| l.split_whitespace().next())
}

/// Looks every `wanted` name up in one pass over `names`. An exact match wins
/// over a clone (`.isra.N`, `.constprop.N`, `.part.N`, `.llvm.N`, chained);
/// `.cold` parts and other suffixes are not the function's entry and do not count.
pub fn find_symbols<'a>(
    names: impl Iterator<Item = &'a str>,
    wanted: &[&str],
) -> Vec<SymbolPresence> {
    let mut found = vec![SymbolPresence::Absent; wanted.len()];
    for name in names {
        for (slot, want) in found.iter_mut().zip(wanted) {
            if *slot == SymbolPresence::Exact {
                continue;
            }
            if name == *want {
                *slot = SymbolPresence::Exact;
            } else if *slot == SymbolPresence::Absent
                && name.strip_prefix(want).is_some_and(is_clone_suffix)
            {
                *slot = SymbolPresence::Suffixed(name.to_owned());
            }
        }
    }
    found
}

/// `.isra.0`, `.constprop.0.isra.0`, `.part.3`, `.llvm.1234`: one or more
/// `.<kind>.<digits>` groups.
fn is_clone_suffix(suffix: &str) -> bool {
    let Some(rest) = suffix.strip_prefix('.') else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    parts.len().is_multiple_of(2)
        && parts.chunks(2).all(|pair| {
            matches!(pair[0], "isra" | "constprop" | "part" | "llvm")
                && !pair[1].is_empty()
                && pair[1].bytes().all(|b| b.is_ascii_digit())
        })
}

/// The text of `/proc/kallsyms` (names are listed even for non-root users).
pub fn read_kallsyms() -> anyhow::Result<String> {
    std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")
}

/// The text of tracefs `available_filter_functions` (functions kprobe/fentry can attach to).
pub fn read_filter_functions() -> anyhow::Result<String> {
    let path = tracefs()?.join("available_filter_functions");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff813d9fd0 t __wake_up_common
ffffffff813da000 T __wake_up_common_lock
ffffffff817504e0 t ep_send_events.isra.0
ffffffff81750750 t ep_poll_callback
ffffffff81750800 t ep_poll_callback.cold
ffffffff82067fb0 T inet_csk_accept
ffffffff82067fc0 t inet_csk_accept.constprop.0.isra.0
ffffffffc0001000 t tcp_helper.part.3\t[some_module]
ffffffff82000000 t only_cold.cold
ffffffff82000010 t weird.isra
ffffffff82000020 t weird2.isra.x
ffffffff82000030 t weird3.foo.1
";

    #[test]
    fn kallsyms_lookup() {
        let want = [
            "__wake_up_common",
            "ep_send_events",
            "ep_poll_callback",
            "inet_csk_accept",
            "tcp_helper",
            "only_cold",
            "weird",
            "weird2",
            "weird3",
            "absent_fn",
            "__wake_up",
        ];
        let got = find_symbols(kallsyms_names(KALLSYMS), &want);
        assert_eq!(
            got,
            vec![
                SymbolPresence::Exact,
                SymbolPresence::Suffixed("ep_send_events.isra.0".into()),
                SymbolPresence::Exact,
                SymbolPresence::Exact,
                SymbolPresence::Suffixed("tcp_helper.part.3".into()),
                SymbolPresence::Absent,
                SymbolPresence::Absent,
                SymbolPresence::Absent,
                SymbolPresence::Absent,
                SymbolPresence::Absent,
                SymbolPresence::Absent,
            ]
        );
    }

    #[test]
    fn exact_name_wins_over_an_earlier_clone() {
        let text = "1 t f.isra.0\n2 t f\n";
        assert_eq!(
            find_symbols(kallsyms_names(text), &["f"]),
            vec![SymbolPresence::Exact]
        );
        let text = "1 t f.isra.0\n2 t f.constprop.1\n";
        assert_eq!(
            find_symbols(kallsyms_names(text), &["f"]),
            vec![SymbolPresence::Suffixed("f.isra.0".into())]
        );
    }

    #[test]
    fn clone_suffixes() {
        for ok in [
            ".isra.0",
            ".constprop.12",
            ".part.3",
            ".llvm.987",
            ".constprop.0.isra.0",
        ] {
            assert!(is_clone_suffix(ok), "{ok}");
        }
        for bad in [
            "",
            ".cold",
            ".isra",
            ".isra.",
            ".isra.x",
            "isra.0",
            ".foo.1",
            ".isra.0.cold",
            "_x",
        ] {
            assert!(!is_clone_suffix(bad), "{bad}");
        }
    }

    #[test]
    fn filter_functions_listing() {
        let text = "__wake_up_common\nep_poll_callback\nsome_mod_fn [some_mod]\n";
        let got = find_symbols(
            filter_function_names(text),
            &["ep_poll_callback", "some_mod_fn", "inet_csk_accept"],
        );
        assert_eq!(
            got,
            vec![
                SymbolPresence::Exact,
                SymbolPresence::Exact,
                SymbolPresence::Absent
            ]
        );
    }

    #[test]
    fn host_kallsyms_has_a_core_symbol() {
        let text = read_kallsyms().expect("/proc/kallsyms is world-readable");
        assert_eq!(
            find_symbols(kallsyms_names(&text), &["schedule"]),
            vec![SymbolPresence::Exact]
        );
    }
}
