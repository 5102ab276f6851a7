//! Tasks outside the trace that wait on the traced listeners. An operator
//! who gives `--pid` of one worker of a pre-fork server (nginx, Apache,
//! gunicorn) traces that worker alone while its siblings wait on the same
//! address: each connection's other wakeups are not seen, and "1 task woken
//! per connection" would read as no herd. Read from /proc when the trace
//! starts, as the rest of the setup is.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::Path,
};

use super::{layout, procfs};
use crate::{
    engine::Untraced,
    procstat::ProcStat,
    targets::{self, ListenSocket},
};

/// The untraced tasks waiting on an address a traced process listens on
/// (every socket of an SO_REUSEPORT group included), and the process to
/// trace instead. `all` is the process list (`targets::scan`), `roots`
/// the traced trees' roots, `traced` every traced process.
pub fn untraced_waiters(
    proc_root: &Path,
    all: &[ProcStat],
    roots: &[u32],
    traced: &[u32],
    same_file: procfs::SameFile,
) -> Untraced {
    let traced: BTreeSet<u32> = traced.iter().copied().collect();
    let candidates = candidates(all, roots, &traced);
    let mut out = Untraced::default();
    let mut holders = BTreeSet::new();
    for (netns, group) in traced_addresses(proc_root, &traced) {
        // Every listening socket of the namespace on those addresses.
        let inodes: BTreeSet<u64> = group
            .table
            .iter()
            .filter(|l| group.addrs.contains(&l.addr))
            .map(|l| l.inode)
            .collect();
        let others: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|&pid| targets::netns_of(proc_root, pid) == Some(netns))
            .filter(|&pid| {
                targets::socket_inodes(proc_root, pid)
                    .iter()
                    .any(|i| inodes.contains(i))
            })
            .collect();
        if others.is_empty() {
            continue;
        }
        holders.extend(others.iter().copied());
        // The traced holders too: an epoll instance shared across fork is
        // recognised as one only when every process holding it is read.
        let pids: Vec<u32> = group.holders.iter().chain(&others).copied().collect();
        let Ok(snap) = procfs::read_snapshot_of(proc_root, all, &pids, same_file) else {
            continue;
        };
        for e in layout::endpoints(&snap) {
            if !group.addrs.contains(&e.addr) {
                continue;
            }
            for (pid, tid) in layout::acceptor_tasks(&snap, &e) {
                if !traced.contains(&pid) {
                    super::add_task(&mut out.tasks, proc_root, &snap, (pid, tid), e.addr.port());
                }
            }
        }
    }
    out.tasks.sort_by_key(|t| (t.pid, t.tid));
    let waiters: Vec<u32> = out.pids();
    out.trace_pid = whole_server(all, roots, &holders, &waiters);
    out
}

/// Where untraced waiters are looked for, since reading every process's
/// fds would take seconds on a host with tens of thousands: the trees of
/// the roots' parents (a worker's master and siblings; never pid 1's, the
/// whole machine) and the processes named like a traced one.
fn candidates(all: &[ProcStat], roots: &[u32], traced: &BTreeSet<u32>) -> BTreeSet<u32> {
    let parents: Vec<u32> = roots
        .iter()
        .filter_map(|&r| all.iter().find(|p| p.pid == r))
        .map(|p| p.ppid)
        .filter(|&pp| pp > 1)
        .collect();
    let mut set: BTreeSet<u32> = targets::with_descendants(all, &parents)
        .into_iter()
        .collect();
    let comms: BTreeSet<&str> = all
        .iter()
        .filter(|p| traced.contains(&p.pid))
        .map(|p| p.comm.as_str())
        .collect();
    set.extend(
        all.iter()
            .filter(|p| comms.contains(p.comm.as_str()))
            .map(|p| p.pid),
    );
    set.retain(|p| !traced.contains(p));
    set
}

/// What the traced processes of one network namespace listen on.
#[derive(Default)]
struct Group {
    /// Traced processes holding a listener.
    holders: Vec<u32>,
    addrs: BTreeSet<SocketAddr>,
    /// The namespace's listening sockets.
    table: Vec<ListenSocket>,
}

fn traced_addresses(proc_root: &Path, traced: &BTreeSet<u32>) -> BTreeMap<u32, Group> {
    let mut groups: BTreeMap<u32, Group> = BTreeMap::new();
    for &pid in traced {
        let Some(netns) = targets::netns_of(proc_root, pid) else {
            continue;
        };
        let group = groups.entry(netns).or_insert_with(|| Group {
            table: targets::listen_sockets(&proc_root.join(pid.to_string())),
            ..Group::default()
        });
        let mut holds = false;
        for inode in targets::socket_inodes(proc_root, pid) {
            if let Some(l) = group.table.iter().find(|l| l.inode == inode) {
                group.addrs.insert(l.addr);
                holds = true;
            }
        }
        if holds {
            group.holders.push(pid);
        }
    }
    groups.retain(|_, g| !g.addrs.is_empty());
    groups
}

/// The nearest ancestor of a traced root whose tree holds every waiter and
/// which holds one of the listeners itself or is the parent of them all (a
/// pre-fork server's master); never pid 1, whose tree is the whole machine.
pub fn whole_server(
    all: &[ProcStat],
    roots: &[u32],
    holders: &BTreeSet<u32>,
    waiters: &[u32],
) -> Option<u32> {
    if waiters.is_empty() {
        return None;
    }
    let parent = |pid: u32| all.iter().find(|p| p.pid == pid).map(|p| p.ppid);
    for &root in roots {
        let mut at = root;
        // A bound on the walk: /proc read at different moments can show a cycle.
        for _ in 0..64 {
            let Some(up) = parent(at).filter(|&p| p > 1) else {
                break;
            };
            at = up;
            // The master holds the listener, or is at least every one's parent.
            let parent_of_all = waiters.iter().chain(roots).all(|&p| parent(p) == Some(at));
            if !holders.contains(&at) && !parent_of_all {
                continue;
            }
            let tree: BTreeSet<u32> = targets::with_descendants(all, &[at]).into_iter().collect();
            if waiters.iter().chain(roots).all(|p| tree.contains(p)) {
                return Some(at);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{fixture, procfs::FdRef, tests::copy_tree};
    use crate::targets::tests::info;

    /// A saved /proc tree in a scratch directory, with what `untraced_waiters`
    /// reads beyond the saved files: each process's `ns/net` (one file,
    /// hard-linked: one namespace; `other_ns` get their own) and `net/`.
    fn tree(name: &str, other_ns: &[u32]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "herdtrace-untraced-{name}-{}-{}",
            std::process::id(),
            other_ns.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        copy_tree(&fixture(name), &dir);
        let ns = dir.join("netns");
        std::fs::write(&ns, "").expect("ns file");
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let Some(pid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            std::fs::create_dir_all(path.join("ns")).expect("ns dir");
            if other_ns.contains(&pid) {
                std::fs::write(path.join("ns/net"), "").expect("own ns");
            } else {
                std::fs::hard_link(&ns, path.join("ns/net")).expect("link ns");
            }
            std::os::unix::fs::symlink("../net", path.join("net")).expect("net");
        }
        dir
    }

    fn distinct(_: FdRef, _: FdRef) -> Option<bool> {
        Some(false)
    }

    fn tids(u: &Untraced) -> Vec<u32> {
        u.tasks.iter().map(|t| t.tid).collect()
    }

    #[test]
    fn one_nginx_worker_leaves_out_its_siblings_and_names_the_master() {
        // nginx-default: master 2162, workers 2164-2167, one shared listener
        // in each worker's epoll with EPOLLEXCLUSIVE.
        let dir = tree("nginx-default", &[]);
        let one = untraced_waiters(&dir, &scan(&dir), &[2164], &[2164], &distinct);
        let all = untraced_waiters(
            &dir,
            &scan(&dir),
            &[2162],
            &[2162, 2164, 2165, 2166, 2167],
            &distinct,
        );
        let two = untraced_waiters(&dir, &scan(&dir), &[2164, 2165], &[2164, 2165], &distinct);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(tids(&one), vec![2165, 2166, 2167]);
        assert_eq!(one.trace_pid, Some(2162));
        assert!(one
            .tasks
            .iter()
            .all(|t| t.comm == "nginx" && t.ports.len() == 1));
        assert_eq!(all, Untraced::default());
        assert_eq!(tids(&two), vec![2166, 2167]);
        assert_eq!(two.trace_pid, Some(2162));
    }

    #[test]
    fn a_reuseport_worker_leaves_out_the_other_sockets_of_its_address() {
        // nginx-reuseport: master 4519, workers 4524-4527; each worker's
        // epoll watches its own socket of the group.
        let dir = tree("nginx-reuseport", &[]);
        let one = untraced_waiters(&dir, &scan(&dir), &[4524], &[4524], &distinct);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(tids(&one), vec![4525, 4526, 4527]);
        assert_eq!(one.trace_pid, Some(4519));
    }

    #[test]
    fn processes_of_another_network_namespace_are_not_counted() {
        // The same sockets' inodes, seen from another namespace, are other
        // sockets: those workers are left alone.
        let dir = tree("nginx-default", &[2166, 2167]);
        let one = untraced_waiters(&dir, &scan(&dir), &[2164], &[2164], &distinct);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(tids(&one), vec![2165]);
    }

    fn scan(dir: &Path) -> Vec<ProcStat> {
        targets::scan(dir).expect("scan the saved tree")
    }

    #[test]
    fn waiters_are_looked_for_among_relatives_and_namesakes_only() {
        // 1 -> 5 (sshd) -> 20 (nginx master) -> 21, 22 (workers) -> 23;
        // 1 -> 30 (nginx, another master); 1 -> 40 (postgres).
        let all = vec![
            info(5, 1, "sshd"),
            info(20, 5, "nginx"),
            info(21, 20, "nginx"),
            info(22, 20, "nginx"),
            info(23, 22, "helper"),
            info(30, 1, "nginx"),
            info(40, 1, "postgres"),
        ];
        let set = |roots: &[u32], traced: &[u32]| -> Vec<u32> {
            let traced: BTreeSet<u32> = traced.iter().copied().collect();
            candidates(&all, roots, &traced).into_iter().collect()
        };
        // A worker: its master's tree and every nginx, not postgres.
        assert_eq!(set(&[21], &[21]), vec![20, 22, 23, 30]);
        // The master, whose parent is sshd: sshd's tree and the other nginx.
        assert_eq!(set(&[20], &[20, 21, 22, 23]), vec![5, 30]);
        // A root under pid 1: namesakes only, never the whole machine.
        assert_eq!(set(&[40], &[40]), Vec::<u32>::new());
        assert_eq!(set(&[30], &[30]), vec![20, 21, 22]);
    }

    #[test]
    fn the_whole_server_is_the_nearest_ancestor_holding_or_parenting_all() {
        // 1 -> 10 (shell) -> 20 (master) -> 21, 22, 23 (workers); 23 -> 30.
        let all: Vec<ProcStat> = [(10, 1), (20, 10), (21, 20), (22, 20), (23, 20), (30, 23)]
            .iter()
            .map(|&(p, pp)| info(p, pp, "p"))
            .collect();
        let holders: BTreeSet<u32> = [20, 22, 23].into_iter().collect();
        // The master holds the listener.
        assert_eq!(whole_server(&all, &[21], &holders, &[22, 23]), Some(20));
        // It does not, but it is every one's parent.
        let workers_only: BTreeSet<u32> = [22, 23].into_iter().collect();
        assert_eq!(
            whole_server(&all, &[21], &workers_only, &[22, 23]),
            Some(20)
        );
        // A waiter below a worker: the master neither holds nor parents all.
        assert_eq!(whole_server(&all, &[21], &workers_only, &[22, 30]), None);
        // ... but holding it, its tree covers them.
        assert_eq!(whole_server(&all, &[21], &holders, &[22, 30]), Some(20));
        // Nothing left out, nothing to suggest; pid 1 is never suggested.
        assert_eq!(whole_server(&all, &[21], &holders, &[]), None);
        let holders_and_init: BTreeSet<u32> = [1, 10].into_iter().collect();
        assert_eq!(whole_server(&all, &[20], &holders_and_init, &[99]), None);
    }
}
