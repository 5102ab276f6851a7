//! Which tasks to trace: the given pids and `--comm` matches, their
//! descendants and all their threads, read from /proc. Parsing is separated
//! from I/O so it is unit-tested on fixture strings.
use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use anyhow::{bail, Context as _, Result};

use crate::procstat::ProcStat;

/// The process `pid`, or None once it has exited.
fn read_proc(proc_root: &Path, pid: u32) -> Option<ProcStat> {
    ProcStat::read(proc_root, pid).ok()
}

/// Every process in /proc.
pub fn scan(proc_root: &Path) -> Result<Vec<ProcStat>> {
    let mut out = Vec::new();
    let dir =
        fs::read_dir(proc_root).with_context(|| format!("reading {}", proc_root.display()))?;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between readdir and read: skip it.
        if let Some(info) = read_proc(proc_root, pid) {
            out.push(info);
        }
    }
    Ok(out)
}

/// The roots plus all their descendants, from a process list.
pub fn with_descendants(all: &[ProcStat], roots: &[u32]) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for p in all {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        if let Some(kids) = children.get(&pid) {
            stack.extend(kids.iter().copied());
        }
    }
    seen.into_iter().collect()
}

/// The process (thread group) of thread `tid`, from `/proc/TID/status`
/// (a thread's directory is there though `/proc` does not list it).
pub fn tgid_of(proc_root: &Path, tid: u32) -> Option<u32> {
    let status = fs::read_to_string(proc_root.join(tid.to_string()).join("status")).ok()?;
    parse_tgid(&status)
}

/// The `Tgid:` line of a `/proc/PID/status`.
pub fn parse_tgid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The error for a `--pid` that names no process: a thread's id (from
/// `top -H` or `ps -L`) names its process, whose threads are all traced.
pub fn missing_process(pid: u32, tgid: Option<u32>) -> String {
    match tgid {
        Some(tgid) if tgid != pid => format!(
            "{pid} is a thread of process {tgid}, not a process: give --pid {tgid} (all of a \
             process's threads are traced)"
        ),
        _ => format!("no such process: {pid}"),
    }
}

/// Checks `--pid` values and returns the root processes to follow.
/// `tgid_of` names the process of a thread id.
pub fn resolve_roots(
    all: &[ProcStat],
    pids: &[i64],
    comms: &[String],
    self_pid: u32,
    tgid_of: &dyn Fn(u32) -> Option<u32>,
) -> Result<Vec<u32>> {
    let mut roots = Vec::new();
    for &pid in pids {
        if pid <= 0 || pid > i64::from(i32::MAX) {
            bail!("invalid pid {pid}: a process id is a positive number");
        }
        let pid = pid as u32;
        if !all.iter().any(|p| p.pid == pid) {
            bail!("{}", missing_process(pid, tgid_of(pid)));
        }
        roots.push(pid);
    }
    for comm in comms {
        let matches: Vec<u32> = all
            .iter()
            .filter(|p| &p.comm == comm && p.pid != self_pid)
            .map(|p| p.pid)
            .collect();
        if matches.is_empty() {
            bail!("no process named {comm:?} (--comm matches the exact name in /proc/PID/comm)");
        }
        roots.extend(matches);
    }
    if roots.is_empty() {
        bail!("nothing to trace: give --pid PID or --comm NAME (or try `herdtrace demo`)");
    }
    Ok(roots)
}

/// Thread ids of process `pid` (empty if it has exited).
pub fn threads(proc_root: &Path, pid: u32) -> Vec<u32> {
    let dir = proc_root.join(pid.to_string()).join("task");
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Is `pid` still the process that started at `start_ticks`?
pub fn alive(proc_root: &Path, pid: u32, start_ticks: u64) -> bool {
    read_proc(proc_root, pid).is_some_and(|p| p.start_ticks == start_ticks)
}

/// Inodes of the sockets process `pid` holds (`/proc/PID/fd/* -> socket:[N]`).
pub fn socket_inodes(proc_root: &Path, pid: u32) -> Vec<u64> {
    let Ok(entries) = fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|target| parse_socket_link(&target.to_string_lossy()))
        .collect()
}

/// `socket:[12345]` -> 12345.
pub fn parse_socket_link(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// (inode, local port) of every LISTEN socket in a `/proc/net/tcp{,6}` table.
#[cfg(test)]
pub fn parse_listeners(table: &str) -> Vec<(u64, u16)> {
    parse_listen_sockets(table)
        .into_iter()
        .map(|s| (s.inode, s.addr.port()))
        .collect()
}

/// A TCP socket in LISTEN state, from `/proc/net/tcp{,6}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ListenSocket {
    pub inode: u64,
    pub addr: SocketAddr,
}

/// Every LISTEN socket (state `0A`) of a `/proc/net/tcp` or `/proc/net/tcp6` table.
pub fn parse_listen_sockets(table: &str) -> Vec<ListenSocket> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != "0A" {
                return None;
            }
            Some(ListenSocket {
                inode: inode.parse().ok()?,
                addr: parse_proc_addr(local)?,
            })
        })
        .collect()
}

/// `__SO_ACCEPTCON` in `/proc/net/unix`'s Flags: the socket listens.
const UNIX_ACCEPTCON: u32 = 0x0001_0000;

/// (inode, path) of every listening socket of a `/proc/net/unix` table
/// (`@name` for an abstract one; empty when unnamed).
pub fn parse_unix_listeners(table: &str) -> Vec<(u64, String)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode [Path]
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            if flags & UNIX_ACCEPTCON == 0 {
                return None;
            }
            let inode = f.get(6)?.parse().ok()?;
            Some((inode, f.get(7).map_or(String::new(), |p| p.to_string())))
        })
        .collect()
}

/// The paths of the UNIX sockets `pids` listen on (servers such as php-fpm
/// or gunicorn behind a proxy, which herdtrace does not trace), each once.
pub fn unix_listeners(proc_root: &Path, pids: &[u32]) -> Vec<String> {
    let mut found = std::collections::BTreeSet::new();
    for &pid in pids {
        let dir = proc_root.join(pid.to_string());
        let Ok(table) = fs::read_to_string(dir.join("net/unix")) else {
            continue;
        };
        let listening = parse_unix_listeners(&table);
        for inode in socket_inodes(proc_root, pid) {
            if let Some((_, path)) = listening.iter().find(|(i, _)| *i == inode) {
                found.insert(if path.is_empty() {
                    format!("socket:[{inode}]")
                } else {
                    path.clone()
                });
            }
        }
    }
    found.into_iter().collect()
}

/// What to add to "holds no TCP listening socket" when `pids` listen on
/// UNIX sockets: herdtrace traces TCP listeners only.
pub fn unix_only_note(proc_root: &Path, pids: &[u32]) -> String {
    let paths = unix_listeners(proc_root, pids);
    if paths.is_empty() {
        return String::new();
    }
    format!(
        " (they listen on UNIX sockets: {}; herdtrace traces TCP listeners only)",
        paths.join(", ")
    )
}

/// `0100007F:1F90` -> 127.0.0.1:8080; 32 hex digits before the colon for IPv6.
/// The kernel prints each 32-bit word of the address as a host-order integer.
pub fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// LISTEN sockets of both tables under `proc_root` (a missing table is empty:
/// a kernel without IPv6 has no `net/tcp6`).
pub fn listen_sockets(proc_root: &Path) -> Vec<ListenSocket> {
    ["net/tcp", "net/tcp6"]
        .iter()
        .filter_map(|t| fs::read_to_string(proc_root.join(t)).ok())
        .flat_map(|text| parse_listen_sockets(&text))
        .collect()
}

/// Inode number of process `pid`'s network namespace (`/proc/PID/ns/net`),
/// which the kernel side reads as `net->ns.inum`.
pub fn netns_of(proc_root: &Path, pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(proc_root.join(pid.to_string()).join("ns/net")).ok()?;
    u32::try_from(meta.ino()).ok()
}

/// A listening socket held by a traced process, in that process's own
/// network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct TargetListener {
    pub netns: u32,
    pub addr: SocketAddr,
}

impl std::fmt::Display for TargetListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (netns {})", self.addr, self.netns)
    }
}

impl TargetListener {
    /// The kernel side's key for this listener: namespace, family, the
    /// address bytes as the socket stores them (network order), port.
    pub fn key(&self) -> herdtrace_common::ListenKey {
        let (family, addr) = match self.addr.ip() {
            IpAddr::V4(ip) => {
                let mut a = [0u8; 16];
                a[..4].copy_from_slice(&ip.octets());
                (herdtrace_common::AF_INET, a)
            }
            IpAddr::V6(ip) => (herdtrace_common::AF_INET6, ip.octets()),
        };
        herdtrace_common::ListenKey {
            netns: self.netns,
            port: self.addr.port(),
            family,
            addr,
        }
    }
}

/// The TCP listening sockets `pids` hold. Each process's tables are read
/// from its own namespace (`/proc/PID/net/tcp{,6}`), never from ours: a
/// server in a container listens in its namespace, and another container
/// may listen on the same address and port.
pub fn target_listeners(proc_root: &Path, pids: &[u32]) -> Vec<TargetListener> {
    let mut tables: std::collections::HashMap<u32, Vec<ListenSocket>> = Default::default();
    let mut found = Vec::new();
    for &pid in pids {
        let Some(netns) = netns_of(proc_root, pid) else {
            continue;
        };
        let table = tables
            .entry(netns)
            .or_insert_with(|| listen_sockets(&proc_root.join(pid.to_string())));
        for inode in socket_inodes(proc_root, pid) {
            if let Some(s) = table.iter().find(|s| s.inode == inode) {
                found.push(TargetListener {
                    netns,
                    addr: s.addr,
                });
            }
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

/// Threads of `pid` blocked in accept()/accept4() right now
/// (`/proc/PID/task/TID/syscall` starts with the syscall number).
pub fn threads_in_accept(proc_root: &Path, pid: u32) -> Vec<u32> {
    threads(proc_root, pid)
        .into_iter()
        .filter(|tid| {
            let path = proc_root
                .join(pid.to_string())
                .join("task")
                .join(tid.to_string())
                .join("syscall");
            fs::read_to_string(path).is_ok_and(|t| in_accept(&t))
        })
        .collect()
}

/// Whether a `/proc/PID/task/TID/syscall` line shows accept or accept4
/// (read as `diagnose` reads it).
pub fn in_accept(syscall_line: &str) -> bool {
    matches!(
        crate::diagnose::procfs::parse_syscall(syscall_line),
        crate::diagnose::procfs::Blocked::Accept { .. }
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A process for the tree tests (also `diagnose::untraced`'s).
    pub(crate) fn info(pid: u32, ppid: u32, comm: &str) -> ProcStat {
        ProcStat {
            pid,
            ppid,
            comm: comm.into(),
            state: 'S',
            utime: 0,
            stime: 0,
            start_ticks: 7,
        }
    }

    #[test]
    fn descendants_cover_the_tree_only() {
        let all = vec![
            info(1, 0, "init"),
            info(10, 1, "nginx"),
            info(11, 10, "nginx"),
            info(12, 10, "nginx"),
            info(13, 12, "helper"),
            info(20, 1, "other"),
        ];
        assert_eq!(with_descendants(&all, &[10]), vec![10, 11, 12, 13]);
        assert_eq!(with_descendants(&all, &[20]), vec![20]);
        assert_eq!(with_descendants(&all, &[12, 20]), vec![12, 13, 20]);
    }

    #[test]
    fn resolve_roots_validates_pids_and_comms() {
        let all = vec![
            info(1, 0, "init"),
            info(10, 1, "nginx"),
            info(11, 10, "nginx"),
            info(99, 1, "herdtrace"),
        ];
        // Thread 12 of process 11.
        let tgid = |tid: u32| (tid == 12).then_some(11);
        assert_eq!(
            resolve_roots(&all, &[10], &[], 99, &tgid).expect("ok"),
            vec![10]
        );
        assert_eq!(
            resolve_roots(&all, &[], &["nginx".into()], 99, &tgid).expect("ok"),
            vec![10, 11]
        );
        let err = |pids: &[i64], comms: &[String]| {
            resolve_roots(&all, pids, comms, 99, &tgid)
                .expect_err("error")
                .to_string()
        };
        assert_eq!(
            err(&[12], &[]),
            "12 is a thread of process 11, not a process: give --pid 11 (all of a process's \
             threads are traced)"
        );
        assert!(err(&[0], &[]).contains("invalid pid 0"));
        assert!(err(&[-5], &[]).contains("invalid pid -5"));
        assert!(err(&[12345], &[]).contains("no such process: 12345"));
        assert!(err(&[], &["nope".into()]).contains("no process named"));
        assert!(err(&[], &[]).contains("nothing to trace"));
        // herdtrace never traces itself through --comm.
        assert!(err(&[], &["herdtrace".into()]).contains("no process named"));
    }

    #[test]
    fn reads_the_thread_group_of_a_status_file() {
        let status =
            "Name:\tnginx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4519\nNgid:\t0\nPid:\t4524\n";
        assert_eq!(parse_tgid(status), Some(4519));
        assert_eq!(parse_tgid("Name:\tx\n"), None);
        assert_eq!(parse_tgid("Tgid:\tnope\n"), None);
        // A thread of this test: a directory /proc has but does not list.
        let me = std::process::id();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::gettid() } as u32);
            let _ = done_rx.recv();
        });
        let tid = tid_rx.recv().expect("tid");
        assert_ne!(tid, me);
        let listed = scan(Path::new("/proc")).expect("scan");
        let in_proc = tgid_of(Path::new("/proc"), tid);
        let _ = done_tx.send(());
        thread.join().expect("thread");
        assert!(listed.iter().all(|p| p.pid != tid));
        assert_eq!(in_proc, Some(me));
        assert_eq!(tgid_of(Path::new("/proc"), me), Some(me));
        assert_eq!(missing_process(7, None), "no such process: 7");
        assert_eq!(missing_process(7, Some(7)), "no such process: 7");
    }

    #[test]
    fn parses_proc_net_unix_listeners() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
000000006a01e4fe: 00000002 00000000 00010000 0001 01 40662136 /run/php/php8.2-fpm.sock
000000000ee7d61e: 00000003 00000000 00000000 0001 03 40660749
00000000265154e2: 00000003 00000000 00000000 0001 03  1517 /run/systemd/journal/stdout
00000000aaaa0001: 00000002 00000000 00010000 0005 01 777 @abstract-name
00000000aaaa0002: 00000002 00000000 00010000 0001 01 778
bad line
";
        assert_eq!(
            parse_unix_listeners(table),
            vec![
                (40662136, "/run/php/php8.2-fpm.sock".to_string()),
                (777, "@abstract-name".to_string()),
                (778, String::new()),
            ]
        );
    }

    #[test]
    fn unix_listeners_of_a_live_process_are_named() {
        let path = std::env::temp_dir().join(format!("herdtrace-unix-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let proc_root = Path::new("/proc");
        let me = std::process::id();
        let before = unix_only_note(proc_root, &[me]);
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let found = unix_listeners(proc_root, &[me]);
        let note = unix_only_note(proc_root, &[me]);
        drop(listener);
        let _ = std::fs::remove_file(&path);
        let path = path.to_string_lossy().into_owned();
        assert!(found.contains(&path), "{found:?}");
        assert!(!before.contains(&path), "{before}");
        assert!(
            note.starts_with(" (they listen on UNIX sockets: ")
                && note.ends_with("; herdtrace traces TCP listeners only)")
                && note.contains(&path),
            "{note}"
        );
    }

    #[test]
    fn parses_proc_net_tcp_listeners() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0
";
        assert_eq!(parse_listeners(table), vec![(4242, 8080), (99, 22)]);
        assert_eq!(parse_listeners(""), vec![]);
        assert_eq!(parse_listeners("header\ngarbage line\n"), vec![]);
    }

    #[test]
    fn parses_listen_socket_addresses() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:6F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7853660 1 0 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0 100 0 0 10 0
   2: 0100007F:6F40 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 78 1 0 20 4 30 10 -1
";
        let got = parse_listen_sockets(v4);
        assert_eq!(
            got,
            vec![
                ListenSocket {
                    inode: 7853660,
                    addr: "127.0.0.1:28480".parse().expect("addr")
                },
                ListenSocket {
                    inode: 77,
                    addr: "0.0.0.0:80".parse().expect("addr")
                },
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0 100 0 0 10 0
   1: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 98 1 0 100 0 0 10 0
";
        let got = parse_listen_sockets(v6);
        assert_eq!(got[0].addr, "[::1]:80".parse().expect("addr"));
        assert_eq!(got[1].addr, "[::]:8080".parse().expect("addr"));
        assert_eq!(parse_proc_addr("0100007F"), None);
        assert_eq!(parse_proc_addr("0100007:1F90"), None);
        assert_eq!(parse_proc_addr("0100007F:XYZ"), None);
        assert_eq!(parse_proc_addr("G100007F:1F90"), None);
    }

    #[test]
    fn listen_sockets_include_this_process_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let all = listen_sockets(Path::new("/proc"));
        assert!(all.iter().any(|s| s.addr == addr), "{all:?} lacks {addr}");
    }

    #[test]
    fn parses_socket_links() {
        assert_eq!(parse_socket_link("socket:[123]"), Some(123));
        assert_eq!(parse_socket_link("pipe:[123]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
        assert_eq!(parse_socket_link("socket:[x]"), None);
    }

    /// This process's listeners, read from its own namespace, with the
    /// namespace's inode and the address bytes the kernel side compares.
    #[test]
    fn finds_the_listeners_of_this_process() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let v4_addr = v4.local_addr().expect("addr");
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let root = Path::new("/proc");
        let me = std::process::id();
        let netns = netns_of(root, me).expect("own netns");
        let found = target_listeners(root, &[me]);
        let mine = TargetListener {
            netns,
            addr: v4_addr,
        };
        assert!(found.contains(&mine), "{found:?} lacks {mine}");
        let key = mine.key();
        assert_eq!(key.port, v4_addr.port());
        assert_eq!(key.family, herdtrace_common::AF_INET);
        assert_eq!(key.addr[..4], [127, 0, 0, 1]);
        assert_eq!(key.addr[4..], [0; 12]);
        if let Some(v6) = v6 {
            let addr = v6.local_addr().expect("addr");
            let l = TargetListener { netns, addr };
            assert!(found.contains(&l), "{found:?} lacks {l}");
            let mut want = [0u8; 16];
            want[15] = 1;
            assert_eq!(l.key().addr, want);
            assert_eq!(l.key().family, herdtrace_common::AF_INET6);
        }
        assert_eq!(mine.to_string(), format!("{v4_addr} (netns {netns})"));
        assert!(target_listeners(root, &[]).is_empty());
    }

    #[test]
    fn accept_syscall_lines() {
        assert!(in_accept("288 0x3 0x0 0x0 0x80800 0x0 0x0 0x7ffd 0x7f12"));
        assert!(in_accept("43 0x3 0x0 0x0 0x0 0x0 0x0 0x7ffd 0x7f12"));
        assert!(!in_accept(
            "232 0x4 0x7ffd 0x40 0xffffffff 0x0 0x0 0x7ffd 0x7f12"
        ));
        assert!(!in_accept("running"));
        assert!(!in_accept("-1 0x7ffd 0x7f12"));
        assert!(!in_accept(""));
    }

    #[test]
    fn reads_this_process() {
        let root = Path::new("/proc");
        let me = std::process::id();
        let all = scan(root).expect("scan /proc");
        let mine = all.iter().find(|p| p.pid == me).expect("self in /proc");
        assert!(alive(root, me, mine.start_ticks));
        assert!(!alive(root, me, mine.start_ticks + 1));
        assert!(threads(root, me).contains(&me));
    }
}
