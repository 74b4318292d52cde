//! A single agent on the embedded store (the default): the bundle is made
//! the same way (one node, answered), `vigil doctor --bundle` agrees with
//! the live doctor, `--volume` limits the replicas collected, and a secret
//! given as the cluster token (environment) and as a label value (flag)
//! is in no file. A truncated or corrupted copy of the bundle gets a
//! clear error and a non-zero exit from `doctor --bundle` and `bundle
//! inspect`, never a panic.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::Duration;

use vigil_tests::agent::wait_until;
use vigil_tests::doctor::doctor;
use vigil_tests::{Cluster, bundle};

const SECRET: &str = "single-node-secret-0b5e7d21c4";

fn agent() -> Cluster {
    Cluster::builder()
        .token(SECRET)
        .args(&["--label", &format!("db-password={SECRET}")])
        .on_embedded("n1")
}

#[test]
fn single_node_bundle_on_the_embedded_store() {
    let c = agent();
    c["n1"].json(&[
        "volume",
        "create",
        "v1",
        "--size",
        "16MiB",
        "--replicas",
        "1",
    ]);
    c["n1"].json(&[
        "volume",
        "create",
        "v2",
        "--size",
        "16MiB",
        "--replicas",
        "1",
    ]);
    wait_until("doctor healthy", Duration::from_secs(15), || {
        doctor(&c["n1"]).0 == 0
    });
    let (live_exit, live) = doctor(&c["n1"]);

    let path = c.root().join("b.tgz");
    let (code, err) = bundle::make(&c["n1"], &path, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("n1") && err.contains("answered"),
        "progress: {err}"
    );
    let (exit, offline, err) = bundle::doctor(&path);
    assert_eq!(exit, live_exit, "{err}");
    assert_eq!(bundle::codes(&offline), bundle::codes(&live), "{offline}");

    let dir = bundle::extract(&path, &c.root().join("x"));
    let m = bundle::manifest(&dir);
    assert_eq!(m["nodes"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["nodes"][0]["status"], "answered", "{m}");
    assert!(
        m["nodes"][0]["clock_offset_secs"].as_f64().unwrap().abs() < 1.0,
        "{m}"
    );
    let store = std::fs::read_to_string(dir.join("cluster/store.jsonl")).unwrap();
    assert!(
        store.contains("volumes/v1") && store.contains("volumes/v2"),
        "{store}"
    );
    let agent_json = std::fs::read_to_string(dir.join("nodes/n1/agent.json")).unwrap();
    assert!(
        agent_json.contains("db-password=[REDACTED]"),
        "{agent_json}"
    );
    let leaks = bundle::files_containing(&dir, SECRET);
    assert!(leaks.is_empty(), "the secret is in {leaks:?}");

    // Limited to one volume and the last hour.
    let path = c.root().join("v1.tgz");
    let (code, err) = bundle::make(&c["n1"], &path, &["--volume", "v1", "--since", "1h"]);
    assert_eq!(code, 0, "{err}");
    let dir = bundle::extract(&path, &c.root().join("y"));
    let replicas = std::fs::read_to_string(dir.join("nodes/n1/replicas.json")).unwrap();
    assert!(
        replicas.contains("v1-r-") && !replicas.contains("v2-r-"),
        "{replicas}"
    );
    let events = std::fs::read_to_string(dir.join("cluster/events.json")).unwrap();
    assert!(
        events.contains("\"v1\"") && !events.contains("\"v2\""),
        "{events}"
    );
    assert_eq!(bundle::manifest(&dir)["request"]["since_secs"], 3600);
}

#[test]
fn truncated_or_corrupted_bundles_get_a_clear_error() {
    let c = agent();
    let path = c.root().join("b.tgz");
    let (code, err) = bundle::make(&c["n1"], &path, &[]);
    assert_eq!(code, 0, "{err}");
    let data = std::fs::read(&path).unwrap();

    let mut cases = vec![
        (
            "truncated-half",
            data[..data.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "truncated-tail",
            data[..data.len() - 8].to_vec(),
            "truncated",
        ),
        ("empty", Vec::new(), "corrupt"),
        ("not-gzip", b"this is not a bundle".to_vec(), "corrupt"),
    ];
    let mut flipped = data.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    cases.push(("corrupted", flipped, ""));
    for (name, bytes, expect) in cases {
        let p = c.root().join(format!("{name}.tgz"));
        std::fs::write(&p, &bytes).unwrap();
        let (exit, _, err) = bundle::doctor(&p);
        assert_eq!(exit, 2, "{name}: {err}");
        assert!(err.starts_with("error: bundle"), "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        let (exit, _, err) = bundle::offline(&["bundle", "inspect", p.to_str().unwrap()]);
        assert_eq!(exit, 1, "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    let (exit, _, err) = bundle::offline(&["doctor", "--bundle", "/nonexistent/b.tgz"]);
    assert_eq!(exit, 2, "{err}");
    assert!(err.contains("No such file"), "{err}");
}

/// `--log-file`: the agent's lines go to a file rotated by size (whole
/// JSON lines, at most `--log-file-keep` rotated files), and a support
/// bundle carries the current and rotated files, redacted like the rest.
#[test]
fn the_log_file_rotates_by_size_and_the_bundle_carries_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs").join("vigil.log");
    let log_arg = log.to_str().unwrap().to_string();
    let c = Cluster::builder()
        .in_dir(dir.path())
        .token(SECRET)
        .args(&[
            "--log-file",
            &log_arg,
            "--log-file-max-size",
            "16KiB",
            "--log-file-keep",
            "2",
        ])
        .node_env("n1", "RUST_LOG", "debug")
        .on_embedded("n1");
    let rotated = |i: usize| std::path::PathBuf::from(format!("{log_arg}.{i}"));
    // enough work for two rotations
    let mut n = 0;
    wait_until(
        "the log file rotated twice",
        Duration::from_secs(60),
        || {
            n += 1;
            c["n1"].json(&[
                "volume",
                "create",
                &format!("v{n}"),
                "--size",
                "4MiB",
                "--replicas",
                "1",
            ]);
            rotated(2).exists()
        },
    );
    assert!(
        !rotated(3).exists(),
        "more rotated files than --log-file-keep"
    );
    for path in [log.clone(), rotated(1), rotated(2)] {
        let text = std::fs::read_to_string(&path).unwrap();
        if path != log {
            // rotated past the limit by at most its last line
            assert!(
                text.len() < 16 * 1024 + 8192,
                "{}: {} bytes",
                path.display(),
                text.len()
            );
        }
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display()));
            assert!(v["time"].is_string() && v["node"] == "n1", "{line}");
        }
    }

    let path = c.root().join("logs.tgz");
    let (code, err) = bundle::make(&c["n1"], &path, &[]);
    assert_eq!(code, 0, "{err}");
    let out = bundle::extract(&path, &c.root().join("x"));
    for name in ["current.jsonl", "rotated-1.jsonl", "rotated-2.jsonl"] {
        let f = out.join("nodes/n1/log-file").join(name);
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(!text.is_empty(), "{name} is empty");
    }
    let leaks = bundle::files_containing(&out, SECRET);
    assert!(leaks.is_empty(), "the secret is in {leaks:?}");
}
