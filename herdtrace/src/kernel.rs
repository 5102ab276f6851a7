//! Facts about the running kernel: release, config, symbols, tracepoints,
//! privileges. Each question has a pure parser (unit-tested on fixture
//! strings) and a thin function that does the I/O.
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

// ---------------------------------------------------------------- release

/// The kernel release string (`uname -r`), e.g. `6.18.44-fc-v782`.
pub fn release() -> anyhow::Result<String> {
    // SAFETY: utsname is plain old data; uname fills it or fails.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(std::io::Error::last_os_error()).context("uname");
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Version triple from a release string: `"5.10.0-32-cloud-amd64"` → `(5, 10, 0)`,
/// `"7.2.13+deb14-cloud-amd64"` → `(7, 2, 13)`, `"6.1"` → `(6, 1, 0)`.
pub fn parse_version(release: &str) -> Option<(u32, u32, u32)> {
    let numeric = release
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = numeric.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        None | Some("") => 0,
        Some(p) => p.parse().ok()?,
    };
    Some((major, minor, patch))
}

// ---------------------------------------------------------------- config

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

/// Reads the running kernel's config and looks one option up; `None` when
/// the config is unreadable or does not mention the option.
pub fn config_value(name: &str) -> Option<ConfigValue> {
    let release = release().ok()?;
    KernelConfig::load(&release).ok()?.value(name)
}

// ---------------------------------------------------------------- symbols

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

// ---------------------------------------------------------------- tracefs

const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The mounted tracefs directory (the one that has `events/`), if any.
pub fn tracefs_root() -> Option<PathBuf> {
    tracefs().ok()
}

/// The mounted tracefs directory, or why there is none usable: not mounted,
/// or not readable by this user (tracefs is root-only by default).
pub fn tracefs() -> Result<PathBuf, TracefsError> {
    let mut denied = None;
    for dir in TRACEFS_ROOTS {
        let events = Path::new(dir).join("events");
        match std::fs::metadata(&events) {
            Ok(m) if m.is_dir() => return Ok(PathBuf::from(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                denied.get_or_insert_with(|| dir.to_owned());
            }
            _ => {}
        }
    }
    Err(denied.map_or(TracefsError::NotMounted, TracefsError::Denied))
}

/// Why tracefs could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TracefsError {
    /// No tracefs with an `events/` directory is mounted.
    NotMounted,
    /// The directory exists but this user may not read it.
    Denied(String),
    /// Any other I/O error.
    Io(String),
}

impl std::fmt::Display for TracefsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TracefsError::NotMounted => {
                f.write_str("tracefs not mounted (mount -t tracefs nodev /sys/kernel/tracing)")
            }
            TracefsError::Denied(what) => write!(f, "permission denied reading {what}"),
            TracefsError::Io(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for TracefsError {}

/// Whether tracepoint `cat:name` exists: `Ok(false)` if it does not, `Err` if
/// that cannot be told.
pub fn tracepoint_exists(cat: &str, name: &str) -> Result<bool, TracefsError> {
    let root = tracefs()?;
    if simulated_missing().tracepoint(cat, name) {
        return Ok(false);
    }
    let dir = root.join("events").join(cat).join(name);
    match std::fs::metadata(&dir) {
        Ok(m) => Ok(m.is_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(TracefsError::Denied(dir.display().to_string()))
        }
        Err(e) => Err(TracefsError::Io(format!("{}: {e}", dir.display()))),
    }
}

/// One field of a tracepoint's `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpField {
    pub name: String,
    /// The C declaration as written, e.g. `__data_loc char[] parent_comm`.
    pub decl: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
    /// A `__data_loc` field: the record holds `(len << 16) | offset` of the data.
    pub data_loc: bool,
}

/// Parses a tracepoint `format` file, e.g.
/// `field:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;`.
pub fn parse_tracepoint_format(text: &str) -> anyhow::Result<Vec<TpField>> {
    let mut fields = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let (mut offset, mut size, mut signed) = (None, None, None);
        for (i, part) in rest.split(';').map(str::trim).enumerate() {
            if i == 0 {
                decl = Some(part);
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse::<u32>().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse::<u32>().ok();
            } else if let Some(v) = part.strip_prefix("signed:") {
                signed = Some(v == "1");
            }
        }
        let decl = decl.unwrap_or_default();
        let name = field_name(decl).with_context(|| format!("bad field line {line:?}"))?;
        let (Some(offset), Some(size)) = (offset, size) else {
            bail!("field line without offset/size: {line:?}");
        };
        fields.push(TpField {
            name: name.to_owned(),
            decl: decl.to_owned(),
            offset,
            size,
            signed: signed.unwrap_or(false),
            data_loc: decl.starts_with("__data_loc ") || decl.starts_with("__rel_loc "),
        });
    }
    if fields.is_empty() {
        bail!("no fields in tracepoint format");
    }
    Ok(fields)
}

/// The identifier a C declaration declares: `char comm[16]` → `comm`,
/// `const void * skaddr` → `skaddr`.
fn field_name(decl: &str) -> Option<&str> {
    let without_array = match decl.find('[') {
        // `char[] name` (data_loc) keeps the name after the brackets.
        Some(i) if decl[i..].contains(']') && decl.trim_end().ends_with(']') => &decl[..i],
        _ => decl,
    };
    let name = without_array
        .rsplit(|c: char| c.is_whitespace() || c == '*')
        .find(|s| !s.is_empty())?;
    let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    valid.then_some(name)
}

/// Reads and parses `events/<cat>/<name>/format`.
pub fn tracepoint_format(cat: &str, name: &str) -> anyhow::Result<Vec<TpField>> {
    let path = tracefs()?
        .join("events")
        .join(cat)
        .join(name)
        .join("format");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_tracepoint_format(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Finds one field of a parsed format.
pub fn find_field<'a>(fields: &'a [TpField], field: &str) -> anyhow::Result<&'a TpField> {
    fields
        .iter()
        .find(|f| f.name == field)
        .with_context(|| format!("no field {field:?}"))
}

/// Offset of `field` in the records of tracepoint `cat:name` on this kernel.
pub fn tracepoint_field_offset(cat: &str, name: &str, field: &str) -> anyhow::Result<u32> {
    let fields = tracepoint_format(cat, name)?;
    let f = find_field(&fields, field).with_context(|| format!("tracepoint {cat}:{name}"))?;
    Ok(f.offset)
}

// ---------------------------------------------------------------- privileges

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

// ---------------------------------------------------------------- simulated gaps

/// Environment variable naming kernel features to treat as absent, so tests
/// (and users checking the fallbacks) can see what herdtrace does on a kernel
/// without them: `btf`, a program type (`tracepoint`, `tp_btf`, `kprobe`,
/// `fentry`: refused), tracepoints as `category:name` (the event, classic and
/// BTF), kernel functions by name (seen as inlined), separated by commas or
/// spaces.
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

    #[test]
    fn versions() {
        assert_eq!(parse_version("6.18.44-fc-v782"), Some((6, 18, 44)));
        assert_eq!(parse_version("5.10.0-32-cloud-amd64"), Some((5, 10, 0)));
        assert_eq!(parse_version("7.2.13+deb14-cloud-amd64"), Some((7, 2, 13)));
        assert_eq!(
            parse_version("6.12.117+deb12-cloud-amd64"),
            Some((6, 12, 117))
        );
        assert_eq!(parse_version("6.1"), Some((6, 1, 0)));
        assert_eq!(parse_version("6.1-rc3"), Some((6, 1, 0)));
        assert_eq!(parse_version("4.19.0"), Some((4, 19, 0)));
        assert_eq!(parse_version(""), None);
        assert_eq!(parse_version("6"), None);
        assert_eq!(parse_version("linux-6.1"), None);
        assert_eq!(parse_version("6.x.1"), None);
        assert_eq!(parse_version("99999999999.1.1"), None);
    }

    #[test]
    fn host_release_parses() {
        let r = release().expect("uname works");
        assert!(parse_version(&r).is_some(), "unparseable release {r:?}");
    }

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

    const FORK_NEW: &str = "name: sched_process_fork
ID: 366
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;

print fmt: \"comm=%s pid=%d child_comm=%s child_pid=%d\", __get_str(parent_comm), REC->parent_pid
";

    const FORK_OLD: &str = "name: sched_process_fork
ID: 312
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:1;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:1;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;

print fmt: \"comm=%s pid=%d child_comm=%s child_pid=%d\", REC->parent_comm, REC->parent_pid
";

    const SK_DATA_READY: &str = "format:
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 family;\toffset:16;\tsize:2;\tsigned:0;
\tfield:unsigned long ip;\toffset:24;\tsize:8;\tsigned:0;
\tfield:__u8 saddr[sizeof(struct sockaddr_in6)];\toffset:32;\tsize:28;\tsigned:0;
";

    #[test]
    fn format_with_data_loc_comm() {
        let f = parse_tracepoint_format(FORK_NEW).expect("parses");
        assert_eq!(f.len(), 8);
        let parent = find_field(&f, "parent_pid").expect("parent_pid");
        assert_eq!((parent.offset, parent.size, parent.signed), (12, 4, true));
        assert_eq!(find_field(&f, "child_pid").expect("child").offset, 20);
        let comm = find_field(&f, "parent_comm").expect("comm");
        assert!(comm.data_loc);
        assert_eq!(comm.decl, "__data_loc char[] parent_comm");
        assert_eq!((comm.offset, comm.size, comm.signed), (8, 4, false));
        assert!(!parent.data_loc);
        assert_eq!(find_field(&f, "common_pid").expect("common").offset, 4);
    }

    #[test]
    fn format_with_array_comm() {
        let f = parse_tracepoint_format(FORK_OLD).expect("parses");
        assert_eq!(find_field(&f, "parent_pid").expect("pp").offset, 24);
        assert_eq!(find_field(&f, "child_pid").expect("cp").offset, 44);
        let comm = find_field(&f, "child_comm").expect("comm");
        assert_eq!((comm.offset, comm.size, comm.data_loc), (28, 16, false));
        let err = find_field(&f, "nope").expect_err("absent field");
        assert!(format!("{err:#}").contains("nope"));
    }

    #[test]
    fn format_pointers_and_expression_arrays() {
        let f = parse_tracepoint_format(SK_DATA_READY).expect("parses");
        let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["skaddr", "family", "ip", "saddr"]);
        assert_eq!(find_field(&f, "saddr").expect("saddr").size, 28);
    }

    #[test]
    fn format_errors() {
        assert!(parse_tracepoint_format("").is_err());
        assert!(parse_tracepoint_format("name: x\nprint fmt: \"\"\n").is_err());
        let no_offset = "\tfield:int x;\tsize:4;\tsigned:1;\n";
        assert!(format!(
            "{:#}",
            parse_tracepoint_format(no_offset).expect_err("no offset")
        )
        .contains("offset"));
        let bad_offset = "\tfield:int x;\toffset:-1;\tsize:4;\n";
        assert!(parse_tracepoint_format(bad_offset).is_err());
        let no_name = "\tfield:;\toffset:0;\tsize:4;\n";
        assert!(parse_tracepoint_format(no_name).is_err());
    }

    #[test]
    fn field_names() {
        assert_eq!(field_name("pid_t child_pid"), Some("child_pid"));
        assert_eq!(field_name("char comm[16]"), Some("comm"));
        assert_eq!(field_name("__data_loc char[] name"), Some("name"));
        assert_eq!(field_name("const void * skaddr"), Some("skaddr"));
        assert_eq!(field_name("const void *skaddr"), Some("skaddr"));
        assert_eq!(
            field_name("__u8 saddr[sizeof(struct sockaddr_in6)]"),
            Some("saddr")
        );
        assert_eq!(field_name(""), None);
        assert_eq!(field_name("int 9x"), None);
    }

    #[test]
    fn host_tracepoints() {
        match tracepoint_exists("sched", "sched_process_fork") {
            Ok(present) => assert!(present, "sched:sched_process_fork missing"),
            Err(e @ TracefsError::Denied(_)) => {
                // Only a non-root run may be refused.
                assert_ne!(privilege(), Privilege::Root, "{e}");
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI=true but {e}"
                );
                eprintln!("skipped: {e}");
                return;
            }
        }
        assert!(tracefs_root().is_some());
        assert!(!tracepoint_exists("sched", "no_such_tracepoint_herdtrace").expect("readable"));
        let parent = tracepoint_field_offset("sched", "sched_process_fork", "parent_pid")
            .expect("parent_pid offset");
        let child = tracepoint_field_offset("sched", "sched_process_fork", "child_pid")
            .expect("child_pid offset");
        // Both layouts (array comm and __data_loc comm) put the pids after the common header.
        assert!(
            parent >= 8 && child > parent,
            "parent {parent} child {child}"
        );
        let err = tracepoint_field_offset("sched", "sched_process_fork", "nope")
            .expect_err("absent field");
        assert!(format!("{err:#}").contains("sched:sched_process_fork"));
    }

    #[test]
    fn tracefs_error_texts() {
        assert_eq!(
            TracefsError::NotMounted.to_string(),
            "tracefs not mounted (mount -t tracefs nodev /sys/kernel/tracing)"
        );
        assert_eq!(
            TracefsError::Denied("/sys/kernel/tracing".into()).to_string(),
            "permission denied reading /sys/kernel/tracing"
        );
    }

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
