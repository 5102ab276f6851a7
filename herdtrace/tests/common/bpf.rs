//! The BPF objects a process holds, as the kernel numbers them.
#![allow(dead_code)] // not every test binary uses all of it

use std::collections::BTreeSet;
use std::path::PathBuf;

/// Ids of the BPF programs, maps and links a process holds open.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BpfIds {
    pub progs: BTreeSet<u64>,
    pub maps: BTreeSet<u64>,
    pub links: BTreeSet<u64>,
}

impl BpfIds {
    /// From `/proc/PID/fdinfo`: `prog_id:`, `map_id:`, `link_id:` lines.
    pub fn of_process(pid: i32) -> BpfIds {
        let mut ids = BpfIds::default();
        let dir = PathBuf::from(format!("/proc/{pid}/fd"));
        for entry in std::fs::read_dir(&dir).expect("fd dir").flatten() {
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            let target = target.to_string_lossy().to_string();
            let fdinfo = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
            let Ok(info) = std::fs::read_to_string(fdinfo) else {
                continue;
            };
            let field = |name: &str| -> Option<u64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
            };
            match target.as_str() {
                "anon_inode:bpf-prog" => ids.progs.extend(field("prog_id:")),
                "anon_inode:bpf-map" => ids.maps.extend(field("map_id:")),
                "anon_inode:bpf_link" => ids.links.extend(field("link_id:")),
                _ => {}
            }
        }
        ids
    }
}
