//! The agent's module layering (issue 19): which top-level module of
//! `agent/src` may refer to which (`crate::<module>` anywhere in it).
//!
//! ARCHITECTURE.md's order is model → store → cluster → controllers → api
//! → cli, with the daemon wiring everything; today 13 of the modules form
//! one import circle. This test holds the line while the circle is cut:
//! [`ALLOWED`] lists every edge that exists now, a new one fails the test
//! (name the layer it belongs to, or put the code where it belongs), and so
//! does an edge that is gone but still listed (delete its line: the table
//! only ever shrinks). `main.rs` wires everything and is not checked.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Every `crate::` edge between top-level modules of the agent, as of the
/// commit that added this test. Delete lines as edges disappear.
const ALLOWED: &[(&str, &str)] = &[
    ("api", "bundle"),
    ("api", "cli"),
    ("api", "cluster"),
    ("api", "controller"),
    ("api", "daemon"),
    ("api", "health"),
    ("api", "metrics"),
    ("api", "model"),
    ("api", "scheduler"),
    ("api", "settings"),
    ("api", "store"),
    ("api", "telemetry"),
    ("bundle", "cli"),
    ("bundle", "daemon"),
    ("bundle", "health"),
    ("bundle", "metrics"),
    ("bundle", "model"),
    ("bundle", "settings"),
    ("bundle", "store"),
    ("bundle", "telemetry"),
    ("cli", "api"),
    ("cli", "bundle"),
    ("cli", "daemon"),
    ("cli", "ebpf"),
    ("cli", "health"),
    ("cli", "metrics"),
    ("cli", "model"),
    ("cli", "store"),
    ("cli", "telemetry"),
    ("cluster", "model"),
    ("cluster", "scheduler"),
    ("cluster", "settings"),
    ("cluster", "store"),
    ("controller", "cluster"),
    ("controller", "daemon"),
    ("controller", "failpoints"),
    ("controller", "metrics"),
    ("controller", "model"),
    ("controller", "scheduler"),
    ("controller", "settings"),
    ("controller", "store"),
    ("daemon", "api"),
    ("daemon", "cluster"),
    ("daemon", "controller"),
    ("daemon", "ebpf"),
    ("daemon", "metrics"),
    ("daemon", "model"),
    ("daemon", "store"),
    ("ebpf", "daemon"),
    ("ebpf", "health"),
    ("ebpf", "metrics"),
    ("ebpf", "model"),
    ("health", "cluster"),
    ("health", "controller"),
    ("health", "daemon"),
    ("health", "model"),
    ("health", "settings"),
    ("metrics", "cluster"),
    ("metrics", "controller"),
    ("metrics", "daemon"),
    ("metrics", "ebpf"),
    ("metrics", "health"),
    ("metrics", "model"),
    ("metrics", "store"),
    ("scheduler", "model"),
    ("scheduler", "settings"),
    ("settings", "model"),
    ("telemetry", "model"),
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

/// Every edge `(module, referenced module)` in `agent/src`.
fn edges() -> BTreeSet<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src");
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
        if name == "main" {
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
    let found = edges();
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
fn the_reader_finds_crate_paths() {
    let text =
        "use crate::model::Volume;\nlet x = crate::cluster::keys::volume(n);\n// crate:: alone";
    let got: Vec<String> = referenced(text).into_iter().collect();
    assert_eq!(got, ["cluster", "model"]);
}
