//! Which server it is, from what /proc shows of its processes (executable,
//! command line, mapped libraries, a few environment variables), and the
//! facts about it that change the advice (Apache httpd's MPM, uWSGI's
//! `--thunder-lock`, gunicorn's worker class, Node.js cluster's scheduling
//! policy).
use serde::Serialize;

use super::{
    layout::plural,
    procfs::{ProcessInfo, Snapshot},
};

/// The server, so the advice names its own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    Nginx,
    Lighttpd,
    ApacheHttpd,
    Uwsgi,
    Gunicorn,
    Nodejs,
    Haproxy,
    /// `herdtrace serve`.
    BuiltIn,
    Generic,
}

impl ServerKind {
    /// From a process name alone (what saved /proc trees keep).
    #[cfg(test)]
    pub fn from_comm(comm: &str) -> ServerKind {
        from_name(comm).unwrap_or(ServerKind::Generic)
    }

    /// The server's own name, for sentences.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Nginx => "nginx",
            ServerKind::Lighttpd => "lighttpd",
            ServerKind::ApacheHttpd => "Apache httpd",
            ServerKind::Uwsgi => "uWSGI",
            ServerKind::Gunicorn => "gunicorn",
            ServerKind::Nodejs => "Node.js",
            ServerKind::Haproxy => "HAProxy",
            ServerKind::BuiltIn => "herdtrace serve",
            ServerKind::Generic => "this server",
        }
    }
}

/// The kind an executable or process name stands for.
fn from_name(name: &str) -> Option<ServerKind> {
    let base = name.rsplit('/').next().unwrap_or(name);
    Some(match base {
        "nginx" => ServerKind::Nginx,
        "lighttpd" => ServerKind::Lighttpd,
        "apache2" | "httpd" => ServerKind::ApacheHttpd,
        "haproxy" => ServerKind::Haproxy,
        "node" | "nodejs" => ServerKind::Nodejs,
        "gunicorn" => ServerKind::Gunicorn,
        "herdtrace" => ServerKind::BuiltIn,
        b if b == "uwsgi" || b.starts_with("uwsgi-") || b.starts_with("uwsgi_") => {
            ServerKind::Uwsgi
        }
        _ => return None,
    })
}

/// A Python interpreter running gunicorn: `python3 /usr/bin/gunicorn ...`
/// or `python3 -m gunicorn ...`.
fn runs_gunicorn(cmdline: &[String]) -> bool {
    let Some(interp) = cmdline.first() else {
        return false;
    };
    if !interp
        .rsplit('/')
        .next()
        .unwrap_or("")
        .starts_with("python")
    {
        return false;
    }
    cmdline
        .iter()
        .skip(1)
        .take_while(|a| a.starts_with('-') || a.ends_with("gunicorn"))
        .any(|a| a.rsplit('/').next() == Some("gunicorn"))
        || cmdline
            .windows(2)
            .any(|w| w[0] == "-m" && w[1] == "gunicorn")
}

/// The value of `--flag VALUE`, `--flag=VALUE` or `-f VALUE` in a command line.
fn option_value<'a>(cmdline: &'a [String], names: &[&str]) -> Option<&'a str> {
    for (i, a) in cmdline.iter().enumerate() {
        for n in names {
            if a == n {
                return cmdline.get(i + 1).map(String::as_str);
            }
            if let Some(v) = a.strip_prefix(n).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
    }
    None
}

/// What was recognised, and the facts that change the advice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerId {
    pub kind: ServerKind,
    /// What it was recognised by, e.g. "executable /usr/sbin/apache2".
    pub evidence: String,
    /// Apache httpd's MPM module, from the libraries its processes map
    /// ("event", "worker", "prefork").
    pub mpm: Option<String>,
    /// uWSGI started with `--thunder-lock`.
    pub thunder_lock: bool,
    /// gunicorn's worker class (`-k`), "sync" by default.
    pub worker_class: Option<String>,
    /// Node.js cluster's scheduling policy from NODE_CLUSTER_SCHED_POLICY
    /// ("rr" or "none"), if set.
    pub sched_policy: Option<String>,
    /// Processes running the same executable below the root (workers).
    pub workers: usize,
}

impl ServerId {
    pub(crate) fn new(kind: ServerKind, evidence: String) -> ServerId {
        ServerId {
            kind,
            evidence,
            mpm: None,
            thunder_lock: false,
            worker_class: None,
            sched_policy: None,
            workers: 0,
        }
    }

    /// Facts shown in the report, one phrase each.
    pub fn facts(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(m) = &self.mpm {
            v.push(format!("MPM {m} (mod_mpm_{m}.so is mapped)"));
        }
        if self.kind == ServerKind::Uwsgi {
            v.push(format!(
                "--thunder-lock {}",
                if self.thunder_lock {
                    "on"
                } else {
                    "not on the command line"
                }
            ));
        }
        if let Some(c) = &self.worker_class {
            v.push(format!("worker class {c}"));
        }
        if self.kind == ServerKind::Nodejs {
            v.push(match &self.sched_policy {
                Some(p) => format!("NODE_CLUSTER_SCHED_POLICY={p}"),
                None => "NODE_CLUSTER_SCHED_POLICY not set (round-robin by default on Linux)"
                    .to_string(),
            });
        }
        if self.workers > 0 {
            v.push(plural(self.workers, "worker process", "worker processes"));
        }
        v
    }
}

/// How one process names itself: by executable, else command line, else comm.
fn kind_of(p: &ProcessInfo) -> Option<(ServerKind, String)> {
    if runs_gunicorn(&p.cmdline) {
        return Some((
            ServerKind::Gunicorn,
            format!("command line `{}`", short_cmdline(&p.cmdline)),
        ));
    }
    let found = (!p.exe.is_empty())
        .then(|| from_name(&p.exe))
        .flatten()
        .map(|k| (k, format!("executable {}", p.exe)))
        .or_else(|| {
            let k = p.cmdline.first().and_then(|a| from_name(a))?;
            Some((k, format!("command line `{}`", short_cmdline(&p.cmdline))))
        })
        .or_else(|| from_name(&p.comm).map(|k| (k, format!("process name {}", p.comm))))?;
    // A herdtrace binary is the built-in server only when serving (a saved
    // tree keeps no command line: its name is all there is).
    let serving = p.cmdline.is_empty() || p.cmdline.iter().any(|a| a == "serve");
    (found.0 != ServerKind::BuiltIn || serving).then_some(found)
}

fn short_cmdline(cmdline: &[String]) -> String {
    let s = cmdline.join(" ");
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// Recognises the server of a snapshot (root first, then its descendants).
pub fn identify(snap: &Snapshot) -> ServerId {
    let Some((kind, evidence)) = snap.processes.iter().find_map(kind_of) else {
        return ServerId::new(ServerKind::Generic, "not a server herdtrace knows".into());
    };
    let mut id = ServerId::new(kind, evidence);
    let root = &snap.processes[0];
    id.workers = snap
        .processes
        .iter()
        .skip(1)
        .filter(|p| kind_of(p).is_some_and(|(k, _)| k == kind))
        .count();
    match kind {
        ServerKind::ApacheHttpd => {
            id.mpm = snap
                .processes
                .iter()
                .flat_map(|p| &p.libraries)
                .find_map(|l| {
                    l.strip_prefix("mod_mpm_")
                        .and_then(|r| r.strip_suffix(".so"))
                        .map(str::to_string)
                });
        }
        ServerKind::Uwsgi => {
            id.thunder_lock = snap
                .processes
                .iter()
                .any(|p| p.cmdline.iter().any(|a| a == "--thunder-lock"));
        }
        ServerKind::Gunicorn => {
            id.worker_class = Some(
                option_value(&root.cmdline, &["-k", "--worker-class"])
                    .unwrap_or("sync")
                    .to_string(),
            );
        }
        ServerKind::Nodejs => {
            id.sched_policy = root
                .env
                .iter()
                .find_map(|kv| kv.strip_prefix("NODE_CLUSTER_SCHED_POLICY="))
                .map(str::to_string);
        }
        _ => {}
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::procfs::{read_snapshot, FdRef};

    fn proc(pid: u32, comm: &str, exe: &str, cmdline: &[&str]) -> ProcessInfo {
        ProcessInfo {
            pid,
            ppid: 1,
            comm: comm.into(),
            exe: exe.into(),
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            libraries: Vec::new(),
            env: Vec::new(),
            threads: Vec::new(),
            listen_fds: Vec::new(),
            epolls: Vec::new(),
            uring_accepts: 0,
        }
    }

    fn snap(processes: Vec<ProcessInfo>) -> Snapshot {
        Snapshot {
            processes,
            listeners: Vec::new(),
            instances: Vec::new(),
            unparsed_watch_lines: 0,
            identity_unknown: false,
            kernel: None,
        }
    }

    fn server(processes: Vec<ProcessInfo>) -> ServerId {
        identify(&snap(processes))
    }

    #[test]
    fn each_server_by_its_executable() {
        for (exe, kind) in [
            ("/usr/sbin/nginx", ServerKind::Nginx),
            ("/usr/sbin/lighttpd", ServerKind::Lighttpd),
            ("/usr/sbin/apache2", ServerKind::ApacheHttpd),
            ("/usr/local/apache2/bin/httpd", ServerKind::ApacheHttpd),
            ("/usr/bin/uwsgi-core", ServerKind::Uwsgi),
            ("/usr/bin/node", ServerKind::Nodejs),
            ("/usr/sbin/haproxy", ServerKind::Haproxy),
            ("/opt/app/server", ServerKind::Generic),
        ] {
            let id = server(vec![proc(1, "x", exe, &[exe])]);
            assert_eq!(id.kind, kind, "{exe}");
            if kind != ServerKind::Generic {
                assert_eq!(id.evidence, format!("executable {exe}"));
            }
        }
    }

    #[test]
    fn gunicorn_runs_in_python() {
        let cmd = [
            "/usr/bin/python3",
            "/usr/bin/gunicorn",
            "--bind",
            "127.0.0.1:8000",
            "-k",
            "gthread",
            "app:app",
        ];
        let id = server(vec![
            proc(1, "gunicorn", "/usr/bin/python3.11", &cmd),
            proc(2, "gunicorn", "/usr/bin/python3.11", &cmd),
            proc(3, "gunicorn", "/usr/bin/python3.11", &cmd),
        ]);
        assert_eq!(id.kind, ServerKind::Gunicorn);
        assert!(id
            .evidence
            .starts_with("command line `/usr/bin/python3 /usr/bin/gunicorn"));
        assert_eq!(id.worker_class.as_deref(), Some("gthread"));
        assert_eq!(id.workers, 2);
        let m = server(vec![proc(
            1,
            "python3",
            "/usr/bin/python3.11",
            &["python3", "-m", "gunicorn", "app:app"],
        )]);
        assert_eq!(m.kind, ServerKind::Gunicorn);
        assert_eq!(m.worker_class.as_deref(), Some("sync"));
        // A Python program that merely mentions gunicorn later is not gunicorn.
        let other = server(vec![proc(
            1,
            "python3",
            "/usr/bin/python3.11",
            &["python3", "myapp.py", "--log", "gunicorn"],
        )]);
        assert_eq!(other.kind, ServerKind::Generic);
        assert_eq!(
            option_value(
                &["a".into(), "--worker-class=gevent".into()],
                &["--worker-class"]
            ),
            Some("gevent")
        );
    }

    #[test]
    fn saved_trees_fall_back_to_the_process_name() {
        let id = server(vec![proc(1, "lighttpd", "", &[])]);
        assert_eq!(id.kind, ServerKind::Lighttpd);
        assert_eq!(id.evidence, "process name lighttpd");
        let d = |_: FdRef, _: FdRef| Some(false);
        let s =
            read_snapshot(&crate::diagnose::fixture("nginx-default"), 2162, &d).expect("fixture");
        let id = identify(&s);
        assert_eq!(id.kind, ServerKind::Nginx);
        assert_eq!(id.workers, 4);
        assert_eq!(ServerKind::from_comm("myserver"), ServerKind::Generic);
        assert_eq!(ServerKind::from_comm("apache2"), ServerKind::ApacheHttpd);
    }

    #[test]
    fn the_builtin_server_only_when_serving() {
        let serving = server(vec![proc(
            1,
            "herdtrace",
            "/x/herdtrace",
            &["/x/herdtrace", "serve", "--model", "exclusive"],
        )]);
        assert_eq!(serving.kind, ServerKind::BuiltIn);
        let tracing = server(vec![proc(
            1,
            "herdtrace",
            "/x/herdtrace",
            &["/x/herdtrace", "--pid", "7"],
        )]);
        assert_eq!(tracing.kind, ServerKind::Generic);
    }

    #[test]
    fn facts_that_change_the_advice() {
        let mut child = proc(2, "apache2", "/usr/sbin/apache2", &["apache2"]);
        child.libraries = vec!["libc.so.6".into(), "mod_mpm_event.so".into()];
        let id = server(vec![
            proc(1, "apache2", "/usr/sbin/apache2", &["apache2"]),
            child,
        ]);
        assert_eq!(id.mpm.as_deref(), Some("event"));
        assert_eq!(id.facts()[0], "MPM event (mod_mpm_event.so is mapped)");

        let w = ["uwsgi", "--http-socket", ":80", "--thunder-lock"];
        let id = server(vec![proc(1, "uwsgi", "/usr/bin/uwsgi-core", &w)]);
        assert!(id.thunder_lock);
        assert!(id.facts().contains(&"--thunder-lock on".to_string()));
        let id = server(vec![proc(1, "uwsgi", "/usr/bin/uwsgi-core", &w[..3])]);
        assert!(!id.thunder_lock);

        let mut primary = proc(1, "node", "/usr/bin/node", &["node", "app.js"]);
        let id = server(vec![primary.clone()]);
        assert_eq!(id.sched_policy, None);
        assert!(id.facts()[0].contains("round-robin by default"));
        primary.env = vec!["NODE_CLUSTER_SCHED_POLICY=none".into()];
        let id = server(vec![
            primary,
            proc(2, "node", "/usr/bin/node", &["/usr/bin/node", "app.js"]),
        ]);
        assert_eq!(id.sched_policy.as_deref(), Some("none"));
        assert_eq!(
            id.facts(),
            vec!["NODE_CLUSTER_SCHED_POLICY=none", "1 worker process"]
        );
        assert_eq!(ServerKind::Haproxy.name(), "HAProxy");
        let long: Vec<String> = (0..40).map(|i| format!("arg{i}")).collect();
        assert!(short_cmdline(&long).ends_with("..."));
    }
}
