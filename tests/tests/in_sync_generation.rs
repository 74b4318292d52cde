//! The in-sync generation (issue 17, sequence 3 — "equal revision is not
//! equal content"): a revert missed by an ERR replica never lets that
//! replica serve pre-revert data, and a cluster store older than the
//! replicas (restored from a backup) does not start the volume.
//!
//! Four agents on a real etcd; a 3-replica volume on n2, n3, n4 attached on
//! n1 (no scheduling on n1). A is written and flushed, snapshot `s` taken,
//! B written over the first MiB and flushed. n4 dies (its replica ERR and
//! out of the in-sync set), the volume is reverted to `s` (A again) on n2
//! and n3 only. Then n1, n2 and n3 die and n4 and n1 come back: n4's
//! replica, holding B — pre-revert data, at a revision no lower than the
//! others' — is the only one reachable.
//!
//! Before the in-sync set (the build this test was first run against),
//! the engine waited for a replica that was RW until `node-down-timeout`
//! and then served n4's: the revert was undone without a word. Now the
//! volume does not start and names the members; when they return, n4's
//! replica is rebuilt from them, and read alone it holds A.
//!
//! Then the store loses its history: with the engine's node down, the
//! in-sync record is rewritten with generation 1 (as a store restored
//! from an old backup would hold it), below the generation n4's replica
//! persisted when it last joined. The engine refuses to start and says
//! why; the operator's accept-loss salvage numbers a new set above every
//! replica's generation and the volume serves A again.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::Duration;

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::{Agent, Cluster, tools};

fn volume(a: &Agent) -> Value {
    a.json(&["volume", "get", "v"])
}

fn mode_of(a: &Agent, replica: &str) -> String {
    volume(a)["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == replica)
        .map(|r| r["mode"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn message(a: &Agent) -> String {
    volume(a)["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_revert_missed_by_an_err_replica_never_serves_pre_revert_data() {
    let mut c = Cluster::on_etcd(&["n1", "n2", "n3", "n4"]);
    c["n1"].set("node-down-timeout", "5");
    let (ok, _, err) = c["n1"].cli(&["node", "update", "n1", "--allow-scheduling", "false"]);
    assert!(ok, "node update: {err}");
    let uri = c.create_attached("v", "16MiB", 3, "n1");
    let (on2, on3, on4) = (
        c.replica_on("v", "n2"),
        c.replica_on("v", "n3"),
        c.replica_on("v", "n4"),
    );
    let a = c.root().join("a");
    tools::random_file(&a, 16 << 20, 23);
    tools::qemu_write(&a, &uri);
    let snap = c["n1"].json(&["snapshot", "create", "v", "s"]);
    assert_eq!(snap["name"], "s", "{snap}");
    tools::run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0xbb 0 1M", "-c", "flush", &uri],
    );
    assert!(!tools::qemu_equal(&a, &uri));

    // n4 misses the revert.
    c.kill9("n4");
    wait_until("n4's replica ERR", Duration::from_secs(15), || {
        mode_of(&c["n1"], &on4) == "ERR"
    });
    c["n1"].json(&["snapshot", "revert", "v", "s"]);
    assert!(
        tools::qemu_equal(&a, &uri),
        "the revert did not bring A back"
    );

    // Only n4's replica (B, pre-revert) is reachable.
    c.kill9("n1");
    c.kill9("n2");
    c.kill9("n3");
    c.start_again("n4");
    c.start_again("n1");
    c["n1"].wait_live();
    c["n4"].wait_live();
    wait_until(
        "the volume waits for an in-sync replica, or serves",
        Duration::from_secs(30),
        || message(&c["n1"]).contains("in-sync set") || c["n1"].get("/v1/engines/v").is_some(),
    );
    // Well past node-down-timeout: still not served from n4's replica.
    std::thread::sleep(Duration::from_secs(12));
    let v = volume(&c["n1"]);
    let engine = c["n1"].get("/v1/engines/v");
    assert!(
        v["robustness"] == "faulted" && engine.is_none(),
        "served from the replica that missed the revert: {v}\nengine on n1: {engine:?}"
    );
    let text = message(&c["n1"]);
    eprintln!("volume message: {text}");
    assert!(
        text.contains(&on2) && text.contains(&on3) && !text.contains(&format!("{on4},")),
        "the message names the members ({on2}, {on3}), not {on4}: {text}"
    );

    // The members return: n4's replica is rebuilt from them.
    c.start_again("n2");
    c.start_again("n3");
    wait_until("v healthy again", Duration::from_secs(90), || {
        volume(&c["n1"])["robustness"] == "healthy"
    });
    let uri = volume(&c["n1"])["endpoint"].as_str().unwrap().to_string();
    assert!(tools::qemu_equal(&a, &uri), "the volume lost the revert");
    // Read from n4's replica alone: it holds A, never B.
    c.kill9("n2");
    c.kill9("n3");
    wait_until("only n4's replica RW", Duration::from_secs(15), || {
        mode_of(&c["n1"], &on2) == "ERR" && mode_of(&c["n1"], &on3) == "ERR"
    });
    assert!(
        tools::qemu_equal(&a, &uri),
        "n4's replica serves pre-revert data"
    );
    wait_until(
        "the in-sync set is n4's replica",
        Duration::from_secs(15),
        || {
            let set = c
                .etcd()
                .ctl(&["get", "/vigil/insync/v", "--print-value-only"]);
            serde_json::from_str::<Value>(set.trim())
                .is_ok_and(|s| s["members"] == serde_json::json!([on4]))
        },
    );

    // The store loses its history: the record goes back to generation 1,
    // below what n4's replica joined.
    c.kill9("n1");
    let raw = c
        .etcd()
        .ctl(&["get", "/vigil/insync/v", "--print-value-only"]);
    let mut set: Value = serde_json::from_str(raw.trim()).unwrap();
    let joined = set["generation"].as_u64().unwrap();
    assert!(joined > 1, "{set}");
    set["generation"] = 1.into();
    c.etcd().ctl(&["put", "/vigil/insync/v", &set.to_string()]);
    c.start_again("n1");
    c["n1"].wait_live();
    wait_until(
        "the volume refuses a store older than its replicas",
        Duration::from_secs(30),
        || message(&c["n1"]).contains("older than its replicas"),
    );
    let text = message(&c["n1"]);
    eprintln!("volume message: {text}");
    assert!(
        text.contains(&format!("{on4} on node n4 joined generation {joined}"))
            && text.contains("--accept-data-loss"),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        c["n1"].get("/v1/engines/v").is_none(),
        "an engine started anyway"
    );
    assert_eq!(volume(&c["n1"])["robustness"], "faulted");

    // The operator accepts it: a new set above every replica's generation.
    let (ok, _, err) = c["n1"].cli(&[
        "volume",
        "salvage",
        "v",
        "--replica",
        &on4,
        "--accept-data-loss",
    ]);
    assert!(ok, "salvage: {err}");
    wait_until("v served again", Duration::from_secs(30), || {
        volume(&c["n1"])["robustness"] == "degraded"
    });
    let set: Value = serde_json::from_str(
        c.etcd()
            .ctl(&["get", "/vigil/insync/v", "--print-value-only"])
            .trim(),
    )
    .unwrap();
    assert!(set["generation"].as_u64().unwrap() > joined, "{set}");
    let uri = volume(&c["n1"])["endpoint"].as_str().unwrap().to_string();
    assert!(tools::qemu_equal(&a, &uri));
}
