//! `HERDTRACE_MISSING`: kernel features to treat as absent, so users and
//! tests can see what herdtrace does on a kernel without them (`check` and
//! the tracer both honour it, so they decide alike).
/// Environment variable naming kernel features to treat as absent, so tests
/// (and users checking the fallbacks) can see what herdtrace does on a kernel
/// without them: `btf`, a program type (`tracepoint`, `tp_btf`, `kprobe`,
/// `fentry`: refused), tracepoints as `category:name` (the event, classic and
/// BTF), kernel functions by name (seen as inlined), helpers by name
/// (`bpf_get_current_task_btf`: missing), separated by commas or spaces.
/// Example: `HERDTRACE_MISSING=ep_send_events,sock:sk_data_ready,btf`.
pub const MISSING_ENV: &str = "HERDTRACE_MISSING";

/// The parsed [`MISSING_ENV`] list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    items: Vec<String>,
}

impl Missing {
    pub fn parse(text: &str) -> Missing {
        let items = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Missing { items }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The entries as given, for the note saying what is simulated.
    pub fn items(&self) -> &[String] {
        &self.items
    }

    /// Kernel BTF (`btf`).
    pub fn btf(&self) -> bool {
        self.items.iter().any(|i| i == "btf")
    }

    /// A program type (`tracepoint`, `tp_btf`, `kprobe`, `fentry`) treated
    /// as refused by the kernel.
    pub fn program_type(&self, name: &str) -> bool {
        self.items.iter().any(|i| i == name)
    }

    /// A helper (`bpf_get_current_task_btf`) treated as missing.
    pub fn helper(&self, name: &str) -> bool {
        self.items.iter().any(|i| i == name)
    }

    /// Tracepoint `cat:name`.
    pub fn tracepoint(&self, cat: &str, name: &str) -> bool {
        self.items
            .iter()
            .any(|i| i.split_once(':') == Some((cat, name)))
    }

    /// Tracepoint event `name` of any category (its BTF tracepoint too):
    /// the item that names it (`category:name`).
    pub fn event(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|i| i.split_once(':').is_some_and(|(_, n)| n == name))
            .map(String::as_str)
    }

    /// Kernel function `name` (treated as inlined: in neither kallsyms nor BTF).
    pub fn symbol(&self, name: &str) -> bool {
        !matches!(name, "btf" | "tracepoint" | "tp_btf" | "kprobe" | "fentry")
            && self.items.iter().any(|i| i == name)
    }
}

/// What [`MISSING_ENV`] asks to simulate in this process (read once).
pub fn simulated_missing() -> &'static Missing {
    static MISSING: std::sync::OnceLock<Missing> = std::sync::OnceLock::new();
    MISSING.get_or_init(|| Missing::parse(&std::env::var(MISSING_ENV).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_list_parses_each_kind() {
        let m = Missing::parse(" ep_send_events,sock:sk_data_ready  btf,,irq:softirq_exit ");
        assert_eq!(
            m.items(),
            [
                "ep_send_events",
                "sock:sk_data_ready",
                "btf",
                "irq:softirq_exit"
            ]
        );
        assert!(m.btf());
        assert!(m.symbol("ep_send_events"));
        assert!(!m.symbol("ep_poll_callback"));
        assert!(!m.symbol("btf"), "btf is not a kernel function");
        assert!(m.tracepoint("sock", "sk_data_ready"));
        assert!(m.tracepoint("irq", "softirq_exit"));
        assert!(!m.tracepoint("sock", "inet_sock_set_state"));
        assert!(!m.tracepoint("irq", "sk_data_ready"), "category must match");
        assert!(!m.symbol("sk_data_ready"), "a tracepoint is not a symbol");
        let none = Missing::parse("");
        assert!(none.is_empty() && !none.btf() && !none.symbol("x"));
    }
}
