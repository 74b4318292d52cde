//! The agent's layering (issue 19), checked at two levels:
//!
//! * crates: [`CRATES`] says which workspace crate may depend on which
//!   (read from `cargo metadata`); a crate outside the table, or an edge
//!   it lacks, fails. Cargo itself refuses a cycle between crates; this
//!   refuses an upward edge.
//! * modules of the `vigil` binary: which top-level module of `agent/src`
//!   may refer to which (`crate::<module>` anywhere in it).
//!
//! ARCHITECTURE.md's order is model → store → cluster → controllers → api
//! → cli, with the daemon wiring everything; today 13 of the modules form
//! one import circle. This test holds the line while the circle is cut:
//! [`ALLOWED`] lists every edge that exists now, a new one fails the test
//! (name the layer it belongs to, or put the code where it belongs), and so
//! does an edge that is gone but still listed (delete its line: the table
//! only ever shrinks). `main.rs` wires everything and is not checked.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each workspace crate and the workspace crates it may depend on (normal,
/// build or dev dependencies), lowest layer first. A crate may use only
/// crates above it in this list. Adding an edge here is a design decision:
/// say in ARCHITECTURE.md's layers table why it points downward.
const CRATES: &[(&str, &[&str])] = &[
    // the data plane: knows nothing of the control plane
    ("vigil-engine", &[]),
    // eBPF programs and their reader: no policy, no model
    ("vigil-ebpf", &[]),
    // the protocol model for the model checker: depends on nothing of ours
    ("vigil-model-check", &[]),
    // objects, states, settings, wire types, time formats
    ("vigil-model", &["vigil-engine"]),
    // the store trait and its two implementations: keys and bytes only
    ("vigil-store", &[]),
    // cluster access (the only key encoder), the scheduler, this node's
    // resources, the controllers and the pure health checks
    (
        "vigil-control",
        &["vigil-engine", "vigil-model", "vigil-store"],
    ),
    // the API's client: wire types over HTTP, nothing of the server
    ("vigil-client", &["vigil-model"]),
    // the binary: wires every layer
    (
        "vigil",
        &[
            "vigil-engine",
            "vigil-ebpf",
            "vigil-model",
            "vigil-store",
            "vigil-control",
            "vigil-client",
        ],
    ),
    // integration tests drive the binary as a process; they may read its
    // types and use the engine's pieces directly
    ("vigil-tests", &["vigil-engine", "vigil-model"]),
];

/// Every `crate::` edge between top-level modules of the agent binary, as
/// of the commit that added this test. Delete lines as edges disappear.
const ALLOWED: &[(&str, &str)] = &[
    ("api", "bundle"),
    ("api", "daemon"),
    ("api", "metrics"),
    ("api", "telemetry"),
    ("bundle", "cli"),
    ("bundle", "daemon"),
    ("bundle", "metrics"),
    ("bundle", "telemetry"),
    ("cli", "bundle"),
    ("cli", "daemon"),
    ("cli", "ebpf"),
    ("cli", "metrics"),
    ("cli", "telemetry"),
    ("daemon", "api"),
    ("daemon", "ebpf"),
    ("daemon", "metrics"),
    // the log file's settings, kept for the support bundle (telemetry is a leaf)
    ("daemon", "telemetry"),
    ("ebpf", "metrics"),
    ("metrics", "ebpf"),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            rust_files(&p, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The modules `text` refers to as `crate::<name>`.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

/// The top-level modules of `vigil-control`, lowest first: each may refer
/// only to modules before it. Pure pieces at the bottom, then the typed
/// store access, this node's resources, and the two readers of all that:
/// the health checks and the controllers.
const CONTROL_LAYERS: &[&str] = &[
    "checksums",
    "failpoints",
    "scheduler",
    "cluster",
    "local",
    "health",
    "controller",
];

/// Every edge `(module, referenced module)` in the crate whose sources are
/// at `dir` (relative to the workspace root).
fn edges_in(dir: &str) -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let mut edges = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if name == "main" || name == "lib" {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for to in referenced(&text) {
                if to != name {
                    edges.insert((name.clone(), to));
                }
            }
        }
    }
    edges
}

#[test]
fn agent_modules_depend_only_along_the_allowed_edges() {
    let found = edges_in("agent/src");
    assert!(
        found.len() > 10,
        "found only {} edges: is agent/src there?",
        found.len()
    );
    let allowed: BTreeSet<(String, String)> = ALLOWED
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = found.difference(&allowed).collect();
    let gone: Vec<_> = allowed.difference(&found).collect();
    assert!(
        new.is_empty(),
        "new dependencies between agent modules (not in ALLOWED, tests/tests/layering.rs): {new:?}"
    );
    assert!(
        gone.is_empty(),
        "these edges are gone: delete them from ALLOWED in tests/tests/layering.rs so they cannot come back: {gone:?}"
    );
    eprintln!("{} edges between agent modules", found.len());
}

#[test]
fn control_modules_depend_only_downward() {
    let found = edges_in("agent/control/src");
    assert!(
        found.len() >= 8,
        "found only {} edges: is agent/control/src there?",
        found.len()
    );
    let rank = |m: &str| CONTROL_LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (from, to) in &found {
        match (rank(from), rank(to)) {
            (Some(f), Some(t)) if t < f => {}
            (None, _) | (_, None) => wrong.push(format!(
                "{from} -> {to}: a module missing from CONTROL_LAYERS (tests/tests/layering.rs)"
            )),
            _ => wrong.push(format!("{from} -> {to}: points upward")),
        }
    }
    assert!(
        wrong.is_empty(),
        "vigil-control's modules must depend only downward: {wrong:?}"
    );
    eprintln!("{} edges between vigil-control modules", found.len());
}

/// What only `vigil-control`'s `cluster/` may write: store keys and raw
/// store operations. Everything else reads and writes typed objects
/// through `Cluster` (ARCHITECTURE.md: "nothing else encodes keys").
const KEY_ENCODING: &[&str] = &[
    "key_of",
    "Op::put",
    "Op::delete",
    "Op::Put",
    "Op::Delete",
    "Op::Check",
    ".store()",
];

#[test]
fn only_the_cluster_module_encodes_store_keys() {
    let mut files = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    rust_files(&root.join("agent/src"), &mut files);
    rust_files(&root.join("agent/control/src"), &mut files);
    let cluster = root.join("agent/control/src/cluster");
    let tests = root.join("agent/control/src/controller/tests");
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut found = Vec::new();
    for f in files {
        if f.starts_with(&cluster) || f.starts_with(&tests) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for token in KEY_ENCODING {
                if code.contains(token) {
                    found.push(format!("{}:{}: {token}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "store keys encoded outside agent/control/src/cluster/ (add a typed method to Cluster instead): {found:#?}"
    );
}

/// Each workspace crate's dependencies on other workspace crates.
fn crate_edges() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let ours: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_string())
                .filter(|d| ours.contains(d))
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect()
}

#[test]
fn crates_depend_only_downward() {
    let found = crate_edges();
    assert!(found.contains_key("vigil"), "no vigil crate in {found:?}");
    let allowed: BTreeMap<&str, &[&str]> = CRATES.iter().copied().collect();
    for (krate, deps) in &found {
        let Some(may) = allowed.get(krate.as_str()) else {
            panic!(
                "crate {krate} is not in CRATES (tests/tests/layering.rs): give it a layer and the crates it may use"
            );
        };
        let upward: Vec<_> = deps.iter().filter(|d| !may.contains(&d.as_str())).collect();
        assert!(
            upward.is_empty(),
            "{krate} depends on {upward:?}, which CRATES does not allow (tests/tests/layering.rs)"
        );
    }
    // Each crate's allowed crates come before it: the table is an order.
    for (i, (krate, may)) in CRATES.iter().enumerate() {
        for dep in *may {
            let j = CRATES.iter().position(|(k, _)| k == dep);
            assert!(
                j.is_some_and(|j| j < i),
                "{krate} may use {dep}, which is not listed above it in CRATES"
            );
        }
    }
}

#[test]
fn the_reader_finds_crate_paths() {
    let text =
        "use crate::model::Volume;\nlet x = crate::cluster::keys::volume(n);\n// crate:: alone";
    let got: Vec<String> = referenced(text).into_iter().collect();
    assert_eq!(got, ["cluster", "model"]);
}
