//! tracefs: where it is mounted, which tracepoints exist, and the record
//! layout of each (its `format` file).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::missing::simulated_missing;

const TRACEFS_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The mounted tracefs directory (the one that has `events/`), if any.
#[cfg(test)]
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
#[cfg(test)]
pub fn find_field<'a>(fields: &'a [TpField], field: &str) -> anyhow::Result<&'a TpField> {
    fields
        .iter()
        .find(|f| f.name == field)
        .with_context(|| format!("no field {field:?}"))
}

/// Offset of `field` in the records of tracepoint `cat:name` on this kernel.
#[cfg(test)]
pub fn tracepoint_field_offset(cat: &str, name: &str, field: &str) -> anyhow::Result<u32> {
    let fields = tracepoint_format(cat, name)?;
    let f = find_field(&fields, field).with_context(|| format!("tracepoint {cat}:{name}"))?;
    Ok(f.offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::privilege::{privilege, Privilege};

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
}
