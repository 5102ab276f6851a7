//! Naming the machine a report was measured on: figures mean little without it.
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// CPUs this process may run on (what `nproc` prints).
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    pub cpu_model: String,
}

impl Machine {
    /// Reads the current machine; unknown parts are named as such, not errors.
    pub fn current() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: if kernel.is_empty() {
                "unknown".into()
            } else {
                kernel
            },
            cpu_model: cpu_model(&read("/proc/cpuinfo")).unwrap_or_else(|| "unknown".into()),
        }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} CPUs (nproc), kernel {}, CPU {}",
            self.cpus, self.kernel, self.cpu_model
        )
    }
}

/// The first `model name` in `/proc/cpuinfo` text; arm64 kernels print none.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let value = value.trim();
        (key.trim() == "model name" && !value.is_empty()).then(|| value.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_takes_first_model_name() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\nmodel name\t: Other\n";
        assert_eq!(cpu_model(info), Some("AMD EPYC 7B13".into()));
    }

    #[test]
    fn cpu_model_absent_or_empty() {
        assert_eq!(cpu_model(""), None);
        assert_eq!(
            cpu_model("processor\t: 0\nmodel\t\t: 1\n"),
            None,
            "model is not model name"
        );
        assert_eq!(cpu_model("model name\t:   \n"), None);
    }

    #[test]
    fn display_names_all_three() {
        let m = Machine {
            cpus: 2,
            kernel: "6.18.1".into(),
            cpu_model: "AMD EPYC".into(),
        };
        assert_eq!(m.to_string(), "2 CPUs (nproc), kernel 6.18.1, CPU AMD EPYC");
    }
}
