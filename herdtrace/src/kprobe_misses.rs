//! Runs of kprobe programs that the kernel's kprobe layer missed, which the
//! program's own `recursion_misses` does not count: a kretprobe whose
//! instances ran out (a fixed pool per probe, `max(10, 2 * CPUs)` on a
//! preemptible kernel, one per CPU otherwise, shared by every task that
//! calls the function, so many sleepers in `epoll_wait` exhaust it) and a
//! kprobe hit while another one ran on the CPU. Kernels 6.7+ report them
//! per attachment (`bpf_link_info.perf_event.kprobe.missed`); older ones do
//! not, and the count is then 0 (docs/kernel-matrix.md says what that hides).
//!
//! The links are found once after attaching, in `/proc/self/fdinfo`; each
//! read is then one `BPF_OBJ_GET_INFO_BY_FD` per kprobe attachment.
use std::os::fd::{BorrowedFd, RawFd};

/// `struct bpf_link_info` up to and including `perf_event.kprobe.cookie`.
pub const LINK_INFO_LEN: usize = 64;
/// Offset of `perf_event.type` (the union starts at 16, 8-aligned).
const PERF_EVENT_TYPE_OFFSET: usize = 16;
/// Offset of `perf_event.kprobe.missed` (6.7+).
const KPROBE_MISSED_OFFSET: usize = 48;
/// `enum bpf_perf_event_type`.
const BPF_PERF_EVENT_KPROBE: u32 = 3;
const BPF_PERF_EVENT_KRETPROBE: u32 = 4;

/// A kprobe or kretprobe attachment of one of our programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KprobeLink {
    /// The link's fd in this process, owned by the loaded programs: valid
    /// as long as they are attached.
    pub fd: RawFd,
    pub prog_id: u32,
}

/// The program id of a BPF link from its `/proc/self/fdinfo` text, when the
/// link is a perf-event one (kprobes, tracepoints); `None` for anything else.
pub fn perf_link_prog_id(fdinfo: &str) -> Option<u32> {
    let field = |key: &str| {
        fdinfo
            .lines()
            .find_map(|l| l.strip_prefix(key).map(str::trim))
    };
    if !field("link_type:")?.starts_with("perf") {
        return None;
    }
    field("prog_id:")?.parse().ok()
}

/// `perf_event.kprobe.missed` from the bytes the kernel filled in; `None`
/// when the link is not a kprobe's or the kernel predates the field
/// (`info_len` is the length it reported back).
pub fn kprobe_missed_from_info(info: &[u8], info_len: u32) -> Option<u64> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(info.get(at..at + 4)?.try_into().ok()?))
    };
    let end = KPROBE_MISSED_OFFSET + 8;
    if (info_len as usize) < end {
        return None;
    }
    let kind = u32_at(PERF_EVENT_TYPE_OFFSET)?;
    if kind != BPF_PERF_EVENT_KPROBE && kind != BPF_PERF_EVENT_KRETPROBE {
        return None;
    }
    Some(u64::from_ne_bytes(
        info.get(KPROBE_MISSED_OFFSET..end)?.try_into().ok()?,
    ))
}

/// The perf-event links open in this process whose program is one of
/// `prog_ids` (ours), as kprobe links: which kind each is shows only in
/// its info, read by [`missed`].
pub fn find_links(prog_ids: &[u32]) -> Vec<KprobeLink> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd: RawFd = e.file_name().to_str()?.parse().ok()?;
        let text = std::fs::read_to_string(e.path()).ok()?;
        let prog_id = perf_link_prog_id(&text)?;
        prog_ids
            .contains(&prog_id)
            .then_some(KprobeLink { fd, prog_id })
    })
    .collect()
}

/// The link's missed runs so far; `None` if it is not a kprobe link or the
/// kernel cannot say.
pub fn missed(fd: BorrowedFd<'_>) -> Option<u64> {
    let (info, len) = crate::bpf_info::get::<LINK_INFO_LEN>(fd).ok()?;
    kprobe_missed_from_info(&info, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_links_are_told_from_fdinfo() {
        let link = "pos:\t0\nflags:\t02000000\nmnt_id:\t15\nino:\t1057\nlink_type:\tperf\nlink_id:\t7\nprog_tag:\t0123456789abcdef\nprog_id:\t42\n";
        assert_eq!(perf_link_prog_id(link), Some(42));
        let tracing = link.replace("link_type:\tperf", "link_type:\ttracing");
        assert_eq!(
            perf_link_prog_id(&tracing),
            None,
            "fentry links have no kprobe miss"
        );
        // A program's or a map's fdinfo, a plain file's, garbage.
        assert_eq!(perf_link_prog_id("prog_type:\t2\nprog_id:\t42\n"), None);
        assert_eq!(perf_link_prog_id("pos:\t0\nflags:\t02\n"), None);
        assert_eq!(perf_link_prog_id("link_type:\tperf\nprog_id:\tx\n"), None);
    }

    fn info(kind: u32, missed: u64) -> Vec<u8> {
        let mut b = vec![0u8; LINK_INFO_LEN];
        b[PERF_EVENT_TYPE_OFFSET..PERF_EVENT_TYPE_OFFSET + 4].copy_from_slice(&kind.to_ne_bytes());
        b[KPROBE_MISSED_OFFSET..KPROBE_MISSED_OFFSET + 8].copy_from_slice(&missed.to_ne_bytes());
        b
    }

    #[test]
    fn kprobe_misses_are_read_at_their_uapi_offset() {
        let full = LINK_INFO_LEN as u32;
        assert_eq!(
            kprobe_missed_from_info(&info(BPF_PERF_EVENT_KPROBE, 7), full),
            Some(7)
        );
        assert_eq!(
            kprobe_missed_from_info(&info(BPF_PERF_EVENT_KRETPROBE, 3), full),
            Some(3)
        );
        // A tracepoint's perf link, a uprobe's: no kprobe misses.
        assert_eq!(kprobe_missed_from_info(&info(5, 9), full), None);
        assert_eq!(kprobe_missed_from_info(&info(1, 9), full), None);
        // A kernel before 6.7 fills in less: the field is not there.
        assert_eq!(
            kprobe_missed_from_info(&info(BPF_PERF_EVENT_KPROBE, 7), 40),
            None
        );
        assert_eq!(kprobe_missed_from_info(&[0; 8], full), None, "short buffer");
    }
}
