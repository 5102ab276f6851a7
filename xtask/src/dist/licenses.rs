//! The third-party crates compiled into the shipped binary, for the
//! package's copyright file: the normal (not build, not dev) dependencies of
//! `herdtrace` and of the eBPF programs it embeds, without proc-macro crates
//! (they run in the compiler and are not linked) and their own dependencies.
use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::STATIC_TARGET;
use crate::proc;

/// The crates whose code ends up in the binary: the user-space program and
/// the eBPF object its build script embeds.
const ROOTS: [&str; 2] = ["herdtrace", "herdtrace-ebpf"];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// The license expression the crate declares (`MIT OR Apache-2.0`).
    pub license: String,
}

/// `cargo metadata` for the static target, walked from `ROOTS`.
pub fn linked_crates() -> anyhow::Result<Vec<Crate>> {
    let out = proc::stdout(&mut proc::cargo([
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--filter-platform",
        STATIC_TARGET,
    ]))
    .context("cargo metadata")?;
    let metadata: Value = serde_json::from_str(&out).context("parse cargo metadata")?;
    from_metadata(&metadata, &ROOTS)
}

/// The linked third-party crates of `roots` in a `cargo metadata` document,
/// sorted by name and version. Workspace members are not third parties.
pub fn from_metadata(metadata: &Value, roots: &[&str]) -> anyhow::Result<Vec<Crate>> {
    let packages: HashMap<&str, &Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .context("cargo metadata: no workspace members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();

    let mut stack = Vec::new();
    for root in roots {
        let id = packages
            .iter()
            .find(|(id, p)| p["name"] == *root && members.contains(*id))
            .map(|(id, _)| *id)
            .with_context(|| format!("cargo metadata: no workspace package {root}"))?;
        stack.push(id);
    }
    let mut seen = BTreeSet::new();
    let mut crates = BTreeSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let package = packages
            .get(id)
            .with_context(|| format!("cargo metadata: unknown package {id}"))?;
        if is_proc_macro(package) {
            continue;
        }
        if !members.contains(id) {
            let field = |k: &str| package[k].as_str().unwrap_or_default().to_string();
            let license = match field("license") {
                l if l.is_empty() => {
                    bail!(
                        "crate {} {} declares no license",
                        field("name"),
                        field("version")
                    )
                }
                l => l,
            };
            crates.insert(Crate {
                name: field("name"),
                version: field("version"),
                license,
            });
        }
        let node = nodes
            .get(id)
            .with_context(|| format!("cargo metadata: {id} is not in the resolve graph"))?;
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if let (true, Some(pkg)) = (normal, dep["pkg"].as_str()) {
                stack.push(pkg);
            }
        }
    }
    Ok(crates.into_iter().collect())
}

fn is_proc_macro(package: &Value) -> bool {
    package["targets"].as_array().is_some_and(|targets| {
        targets.iter().any(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn package(id: &str, license: &str, kind: &str) -> Value {
        json!({
            "id": id,
            "name": id.split('@').next().unwrap_or(id),
            "version": id.split('@').nth(1).unwrap_or("0.1.0"),
            "license": license,
            "targets": [{"kind": [kind]}],
        })
    }

    fn dep(pkg: &str, kind: Value) -> Value {
        json!({"pkg": pkg, "dep_kinds": [{"kind": kind, "target": null}]})
    }

    /// app -> lib (normal), derive (proc-macro, normal) -> syn;
    /// app -> builder (build only), tester (dev only); bpf -> bpflib.
    fn metadata() -> Value {
        json!({
            "workspace_members": ["app", "bpf", "common"],
            "packages": [
                package("app", "MIT", "bin"),
                package("bpf", "MIT", "bin"),
                package("common", "MIT", "lib"),
                package("lib@1.2.0", "MIT OR Apache-2.0", "lib"),
                package("shared@0.3.0", "Zlib", "lib"),
                package("derive@1.0.0", "MIT", "proc-macro"),
                package("syn@2.0.0", "MIT", "lib"),
                package("builder@1.0.0", "MIT", "lib"),
                package("tester@1.0.0", "MIT", "lib"),
                package("bpflib@0.2.1", "MIT OR Apache-2.0", "lib"),
            ],
            "resolve": {"nodes": [
                {"id": "app", "deps": [
                    dep("lib@1.2.0", Value::Null),
                    dep("common", Value::Null),
                    dep("derive@1.0.0", Value::Null),
                    dep("builder@1.0.0", json!("build")),
                    dep("tester@1.0.0", json!("dev")),
                ]},
                {"id": "common", "deps": [dep("shared@0.3.0", Value::Null)]},
                {"id": "lib@1.2.0", "deps": [dep("shared@0.3.0", Value::Null)]},
                {"id": "shared@0.3.0", "deps": []},
                {"id": "derive@1.0.0", "deps": [dep("syn@2.0.0", Value::Null)]},
                {"id": "syn@2.0.0", "deps": []},
                {"id": "builder@1.0.0", "deps": []},
                {"id": "tester@1.0.0", "deps": []},
                {"id": "bpf", "deps": [dep("bpflib@0.2.1", Value::Null)]},
                {"id": "bpflib@0.2.1", "deps": []},
            ]},
        })
    }

    fn names(crates: &[Crate]) -> Vec<String> {
        crates
            .iter()
            .map(|c| format!("{} {}", c.name, c.version))
            .collect()
    }

    #[test]
    fn walks_normal_deps_of_every_root_but_not_build_dev_or_proc_macros() {
        let crates = from_metadata(&metadata(), &["app", "bpf"]).expect("walk");
        assert_eq!(
            names(&crates),
            ["bpflib 0.2.1", "lib 1.2.0", "shared 0.3.0"]
        );
        assert_eq!(crates[1].license, "MIT OR Apache-2.0");
        let app_only = from_metadata(&metadata(), &["app"]).expect("walk");
        assert_eq!(names(&app_only), ["lib 1.2.0", "shared 0.3.0"]);
    }

    #[test]
    fn unknown_root_or_missing_license_is_an_error() {
        assert!(from_metadata(&metadata(), &["nope"]).is_err());
        let mut m = metadata();
        m["packages"][3]["license"] = Value::Null;
        let err = from_metadata(&m, &["app"]).expect_err("no license");
        assert!(err.to_string().contains("lib 1.2.0"), "{err}");
        assert!(from_metadata(&json!({}), &["app"]).is_err());
    }

    #[test]
    fn the_workspace_links_aya_and_clap_but_not_build_tools() {
        let crates = linked_crates().expect("cargo metadata");
        let has = |n: &str| crates.iter().any(|c| c.name == n);
        for linked in ["aya", "clap", "clap_builder", "aya-ebpf", "libc"] {
            assert!(has(linked), "{linked}");
        }
        for not_linked in [
            "aya-build",
            "clap_derive",
            "syn",
            "proptest",
            "herdtrace-common",
        ] {
            assert!(!has(not_linked), "{not_linked}");
        }
    }
}
