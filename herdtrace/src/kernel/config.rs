//! The kernel's build configuration (`/proc/config.gz` or
//! `/boot/config-<release>`), parsed into `CONFIG_*` values.
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The value of one `CONFIG_*` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigValue {
    /// `=y`
    Yes,
    /// `=m`
    Module,
    /// `# CONFIG_X is not set`
    NotSet,
    /// Any other value (numbers, strings without their quotes).
    Str(String),
}

/// A parsed kernel configuration.
#[derive(Debug, Clone, Default)]
pub struct KernelConfig {
    values: HashMap<String, ConfigValue>,
    /// Where it was read from (empty when parsed from a string).
    pub source: PathBuf,
}

impl KernelConfig {
    /// Parses the text of a `.config`.
    pub fn parse(text: &str) -> KernelConfig {
        let mut values = HashMap::new();
        for line in text.lines().map(str::trim) {
            if let Some(name) = line
                .strip_prefix("# ")
                .and_then(|l| l.strip_suffix(" is not set"))
            {
                if name.starts_with("CONFIG_") {
                    values.insert(name.to_owned(), ConfigValue::NotSet);
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            if !name.starts_with("CONFIG_") {
                continue;
            }
            let value = match value {
                "y" => ConfigValue::Yes,
                "m" => ConfigValue::Module,
                "n" => ConfigValue::NotSet,
                v => ConfigValue::Str(
                    v.strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v)
                        .to_owned(),
                ),
            };
            values.insert(name.to_owned(), value);
        }
        KernelConfig {
            values,
            source: PathBuf::new(),
        }
    }

    /// Reads `/proc/config.gz`, else `/boot/config-<release>`.
    pub fn load(release: &str) -> anyhow::Result<KernelConfig> {
        let proc = Path::new("/proc/config.gz");
        let boot = PathBuf::from(format!("/boot/config-{release}"));
        let (text, source) = if proc.exists() {
            let file = std::fs::File::open(proc).context("opening /proc/config.gz")?;
            let mut text = String::new();
            flate2::read::GzDecoder::new(file)
                .read_to_string(&mut text)
                .context("decompressing /proc/config.gz")?;
            (text, proc.to_path_buf())
        } else if boot.exists() {
            let text = std::fs::read_to_string(&boot)
                .with_context(|| format!("reading {}", boot.display()))?;
            (text, boot)
        } else {
            bail!(
                "no kernel config: neither /proc/config.gz nor {} exists",
                boot.display()
            );
        };
        Ok(KernelConfig {
            source,
            ..KernelConfig::parse(&text)
        })
    }

    /// Value of `name` (with or without the `CONFIG_` prefix); `None` if the
    /// config does not mention it at all.
    pub fn value(&self, name: &str) -> Option<ConfigValue> {
        let key = if name.starts_with("CONFIG_") {
            name.to_owned()
        } else {
            format!("CONFIG_{name}")
        };
        self.values.get(&key).cloned()
    }

    /// Whether the config explicitly says `name` is not set.
    pub fn is_not_set(&self, name: &str) -> bool {
        self.value(name) == Some(ConfigValue::NotSet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::release;

    const CONFIG: &str = "\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_BPF=y
CONFIG_BPF_SYSCALL=y
# CONFIG_KPROBES is not set
CONFIG_HAVE_KPROBES=y
CONFIG_IPV6=m
CONFIG_HZ=250
CONFIG_LOCALVERSION=\"-fc\"
CONFIG_EMPTY=\"\"
CONFIG_OLD_STYLE=n
# CONFIG_NOT_SET_WEIRDLY
# Some comment is not set
garbage line
NOTCONFIG=y
";

    #[test]
    fn config_parsing() {
        let c = KernelConfig::parse(CONFIG);
        assert_eq!(c.value("CONFIG_BPF"), Some(ConfigValue::Yes));
        assert_eq!(c.value("BPF_SYSCALL"), Some(ConfigValue::Yes));
        assert_eq!(c.value("CONFIG_KPROBES"), Some(ConfigValue::NotSet));
        assert!(c.is_not_set("KPROBES"));
        assert!(!c.is_not_set("BPF"));
        assert!(!c.is_not_set("ABSENT"));
        assert_eq!(c.value("IPV6"), Some(ConfigValue::Module));
        assert_eq!(c.value("HZ"), Some(ConfigValue::Str("250".into())));
        assert_eq!(
            c.value("LOCALVERSION"),
            Some(ConfigValue::Str("-fc".into()))
        );
        assert_eq!(c.value("EMPTY"), Some(ConfigValue::Str(String::new())));
        assert_eq!(c.value("OLD_STYLE"), Some(ConfigValue::NotSet));
        assert_eq!(c.value("NOT_SET_WEIRDLY"), None);
        assert_eq!(c.value("ABSENT"), None);
        assert_eq!(c.value("NOTCONFIG"), None);
        assert_eq!(c.value("CONFIG_Some comment"), None);
    }

    #[test]
    fn host_config_loads_when_present() {
        let r = release().expect("uname");
        let present = Path::new("/proc/config.gz").exists()
            || Path::new(&format!("/boot/config-{r}")).exists();
        match KernelConfig::load(&r) {
            Ok(c) => {
                assert!(present);
                // Every kernel that can run herdtrace has the BPF syscall.
                assert_eq!(c.value("BPF_SYSCALL"), Some(ConfigValue::Yes));
                assert!(!c.source.as_os_str().is_empty());
            }
            Err(e) => {
                assert!(!present, "config present but unreadable: {e:#}");
                assert!(format!("{e:#}").contains("no kernel config"));
            }
        }
    }
}
