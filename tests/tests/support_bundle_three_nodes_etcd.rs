//! Three agents on a real etcd share one known secret: it is their
//! cluster token (environment), a node label's value (`--label
//! api-key=...`, a flag) and a setting's value written straight into the
//! store (`settings/alert-webhook-token`). Faults: n3 (holding a replica
//! of the attached volume `va`) is killed with `kill -9`, and a snapshot
//! file is removed under `vb`'s replica on n2. With n3 dead, `vigil
//! support-bundle` through n1 finishes, its manifest records n3 as failed
//! with why (lease gone, connection refused) and n1, n2 as answered;
//! `vigil doctor --bundle` (no agent) reports the same checks, roots and
//! objects as the live `vigil doctor` did, with the same exit code; `vigil
//! bundle inspect` shows `vb`'s timeline; and the secret is in no file of
//! the extracted archive. Then n2 is frozen (SIGSTOP): the next bundle
//! records it as timed out and is not held up past the per-node timeout.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::{Cluster, bundle, tools};

const SECRET: &str = "vigil-bundle-secret-7f3a9c2e41d8";

#[test]
fn bundle_with_a_dead_node_diagnoses_offline_like_the_live_doctor_and_holds_no_secret() {
    let mut c = Cluster::builder()
        .token(SECRET)
        .args(&["--label", &format!("api-key={SECRET}")])
        .on_etcd(&["n1", "n2", "n3"]);
    // A credential-looking setting, as a newer version or another tool
    // might have stored it.
    c.etcd().ctl(&[
        "put",
        "/vigil/settings/alert-webhook-token",
        &format!(r#"{{"name":"alert-webhook-token","value":"{SECRET}"}}"#),
    ]);

    c.create_attached("va", "32MiB", 3, "n1");
    wait_until("doctor healthy", Duration::from_secs(15), || {
        doctor(&c["n1"]).0 == 0
    });

    // Fault 1: n3 dies; wait until its lease is gone (NODE_DOWN).
    c.kill9("n3");
    wait_until("NODE_DOWN of n3", Duration::from_secs(30), || {
        check(&doctor(&c["n1"]).1, "NODE_DOWN").is_some()
    });

    // Fault 2: a snapshot file removed under vb's replica on n2 (vb is
    // placed on n1 and n2: n3 is down).
    let out = c.create_attached("vb", "32MiB", 2, "n1");
    let data = c.root().join("data");
    tools::random_file(&data, 4 << 20, 3);
    tools::qemu_write(&data, out.trim());
    let (ok, _, err) = c["n1"].cli(&["volume", "snapshot", "create", "vb", "s1"]);
    assert!(ok, "snapshot: {err}");
    let vb = c["n1"].json(&["volume", "get", "vb"]);
    let r2 = vb["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == "n2")
        .unwrap_or_else(|| panic!("vb has no replica on n2: {vb}"))
        .clone();
    let file = PathBuf::from(r2["disk_path"].as_str().unwrap())
        .join("replicas")
        .join(r2["name"].as_str().unwrap())
        .join("volume-snap-s1.img");
    std::fs::remove_file(&file).unwrap();
    wait_until("SNAPSHOT_FILE_MISSING", Duration::from_secs(30), || {
        check(&doctor(&c["n1"]).1, "SNAPSHOT_FILE_MISSING").is_some()
    });

    // The bundle, made while n3 is dead. The live diagnosis is taken just
    // before and just after; when the cluster changed in between (a
    // repair finishing), try again, so the comparison is with a cluster
    // that held still while the bundle was made.
    let path = c.root().join("bundle.tar.gz");
    let mut compared = None;
    for attempt in 0..5 {
        let (live_exit, live) = doctor(&c["n1"]);
        let started = Instant::now();
        let (code, err) = bundle::make(&c["n1"], &path, &[]);
        let took = started.elapsed();
        let (live_exit_after, live_after) = doctor(&c["n1"]);
        assert_eq!(code, 0, "support-bundle failed: {err}");
        eprintln!("attempt {attempt}: bundle made in {took:?}:\n{err}");
        assert!(
            took < Duration::from_secs(10),
            "a dead node must not hold the bundle up: {took:?}"
        );
        if bundle::codes(&live) != bundle::codes(&live_after) || live_exit != live_exit_after {
            continue;
        }
        compared = Some((live_exit, live));
        break;
    }
    let (live_exit, live) = compared.expect("the cluster never held still for a bundle");
    let (offline_exit, offline, err) = bundle::doctor(&path);
    assert_eq!(
        bundle::codes(&offline),
        bundle::codes(&live),
        "offline diagnosis differs from the live one\noffline: {offline}\nlive: {live}\n{err}"
    );
    assert_eq!(offline_exit, live_exit, "exit codes differ: {offline}");
    assert_eq!(offline_exit, 2, "errors present: {offline}");
    let live_codes: Vec<String> = bundle::codes(&live).into_iter().map(|c| c.0).collect();
    for c in ["NODE_DOWN", "SNAPSHOT_FILE_MISSING", "REPLICA_ERROR"] {
        assert!(
            live_codes.iter().any(|x| x == c),
            "{c} not in {live_codes:?}"
        );
    }
    // The human report is the live doctor's, word for word.
    let (_, text_live, _) = c["n1"].cli_code(&["doctor"]);
    let (_, text_offline, _) = bundle::offline(&["doctor", "--bundle", path.to_str().unwrap()]);
    let first = |t: &str| t.lines().next().unwrap_or("").to_string();
    assert_eq!(first(&text_offline), first(&text_live), "{text_offline}");

    // The manifest: n3 failed with why, the others answered.
    let dir = bundle::extract(&path, &c.root().join("x"));
    let m = bundle::manifest(&dir);
    let node = |n: &str| {
        m["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["node"] == n)
            .unwrap_or_else(|| panic!("{n} not in the manifest: {m}"))
            .clone()
    };
    assert_eq!(node("n1")["status"], "answered", "{m}");
    assert_eq!(node("n2")["status"], "answered", "{m}");
    assert_eq!(node("n3")["status"], "failed", "{m}");
    let why = node("n3")["reason"].as_str().unwrap().to_string();
    assert!(why.contains("lease is gone"), "{why}");
    assert!(why.contains("cannot reach"), "{why}");
    // Every file is listed with its size and checksum.
    let listed = m["files"].as_array().unwrap().len();
    assert_eq!(listed + 1, bundle::files(&dir).len(), "{m}");
    for f in [
        "nodes/n1/replicas.json",
        "nodes/n2/replicas.json",
        "nodes/n2/logs.jsonl",
        "nodes/n1/metrics.prom",
        "nodes/n2/system.json",
        "cluster/store.jsonl",
        "cluster/health/view.json",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    assert!(!dir.join("nodes/n3").exists());
    // n2's part names the damaged replica's missing file (metadata only).
    let replicas = std::fs::read_to_string(dir.join("nodes/n2/replicas.json")).unwrap();
    assert!(replicas.contains("volume-snap-s1"), "{replicas}");
    assert!(replicas.contains("missing"), "{replicas}");
    for f in bundle::files(&dir) {
        assert!(
            !f.to_string_lossy().ends_with(".img"),
            "volume data in the bundle: {}",
            f.display()
        );
    }

    // The secret is nowhere.
    let leaks = bundle::files_containing(&dir, SECRET);
    assert!(leaks.is_empty(), "the secret is in {leaks:?}");
    // ...and it was there to be found: the label and the setting are in.
    let store_dump = std::fs::read_to_string(dir.join("cluster/store.jsonl")).unwrap();
    let setting = store_dump
        .lines()
        .find(|l| l.contains("\"settings/alert-webhook-token\""))
        .expect("the setting is dumped");
    assert!(setting.contains("[REDACTED]"), "{setting}");
    assert!(store_dump.contains("api-key"), "label not dumped");

    // A volume's timeline.
    let (code, text, err) = bundle::offline(&[
        "bundle",
        "inspect",
        path.to_str().unwrap(),
        "--volume",
        "vb",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("ReplicaFilesDamaged") || text.contains("SNAPSHOT_FILE_MISSING"),
        "{text}"
    );
    assert!(text.contains("Timeline"), "{text}");

    // A hung node (frozen, its lease still held for a while, its socket
    // accepting but never answering) is recorded as timed out and holds up
    // the bundle no longer than the per-node timeout.
    c.freeze("n2");
    let hung = c.root().join("hung.tar.gz");
    let started = Instant::now();
    let (code, err) = bundle::make(&c["n1"], &hung, &["--node-timeout", "2s"]);
    let took = started.elapsed();
    c.thaw("n2");
    assert_eq!(code, 0, "{err}");
    assert!(
        took < Duration::from_secs(8),
        "bundle with a hung node took {took:?}"
    );
    let dir = bundle::extract(&hung, &c.root().join("hung"));
    let m = bundle::manifest(&dir);
    let n2_outcome = m["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["node"] == "n2")
        .unwrap_or_else(|| panic!("n2 not in the manifest: {m}"))
        .clone();
    assert_eq!(n2_outcome["status"], "timed_out", "{m}");
    assert!(dir.join("nodes/n1/metrics.prom").exists(), "{m}");
}
