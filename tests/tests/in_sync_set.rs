//! An engine starts only from the volume's in-sync set (issue 17,
//! sequence 2 — "starting from a stale replica").
//!
//! Three agents on a real etcd; a 2-replica volume on n2 and n3 attached
//! on n1 (no scheduling on n1), written and flushed (data A). n3 dies: its
//! replica drops out and the in-sync set shrinks to n2's replica before
//! anything more is acknowledged; B is written and flushed to n2's replica
//! alone. Then n2 dies too, n3 comes back and n1 restarts, so a new engine
//! must start while the only reachable replica is n3's, which lacks B.
//!
//! Before the in-sync set, the engine waited for n2's replica only until
//! `node-down-timeout` and then served n3's: B, acknowledged and flushed,
//! was gone without a word. Now the volume does not start; the volume's
//! message names the missing member, its node and the accept-loss command;
//! the command without `--accept-data-loss` is refused; with it the volume
//! serves A from n3's replica and a `DataLossAccepted` event records what
//! was given up. When n2 returns, its replica is rebuilt from n3's.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::Duration;

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::{Agent, etcd_cluster, tools};

fn replica_on(a: &Agent, node: &str) -> String {
    a.json(&["volume", "get", "v"])["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == node)
        .map(|r| r["name"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no replica of v on {node}"))
}

fn volume(a: &Agent) -> Value {
    a.json(&["volume", "get", "v"])
}

#[test]
fn a_volume_whose_in_sync_replicas_are_gone_waits_for_the_operator() {
    let root = tempfile::tempdir().unwrap();
    let (etcd, agents) = etcd_cluster(root.path(), &["n1", "n2", "n3"]);
    let [mut n1, mut n2, mut n3]: [Agent; 3] = agents.try_into().ok().unwrap();
    n1.set("node-down-timeout", "5");
    let (ok, _, err) = n1.cli(&["node", "update", "n1", "--allow-scheduling", "false"]);
    assert!(ok, "node update: {err}");
    n1.json(&[
        "volume",
        "create",
        "v",
        "--size",
        "16MiB",
        "--replicas",
        "2",
    ]);
    let (ok, out, err) = n1.cli(&["volume", "attach", "v", "--node", "n1"]);
    assert!(ok, "attach: {err}");
    let uri = out.trim().to_string();
    let (on2, on3) = (replica_on(&n1, "n2"), replica_on(&n1, "n3"));
    let a = root.path().join("a");
    tools::random_file(&a, 16 << 20, 17);
    tools::qemu_write(&a, &uri);

    n3.kill9();
    wait_until("n3's replica ERR", Duration::from_secs(15), || {
        volume(&n1)["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == on3.as_str() && r["mode"] == "ERR")
    });
    // B reaches n2's replica alone; acknowledged once the set says so.
    tools::run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0xbb 0 1M", "-c", "flush", &uri],
    );
    n2.kill9();
    n1.kill9();
    n3.start_again();
    n1.start_again();
    n1.wait_live();
    n3.wait_live();

    // Well past node-down-timeout: still not served from n3's replica.
    let mut message = String::new();
    wait_until(
        "the volume says it waits for the in-sync replica",
        Duration::from_secs(30),
        || {
            message = volume(&n1)["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            message.contains(&format!("waiting for replica {on2} on node n2"))
        },
    );
    std::thread::sleep(Duration::from_secs(12));
    let v = volume(&n1);
    let engine = n1.get("/v1/engines/v");
    assert!(
        v["robustness"] == "faulted" && engine.is_none(),
        "served from the replica that missed B: {v}\nengine on n1: {engine:?}"
    );
    let message = v["message"].as_str().unwrap_or_default().to_string();
    eprintln!("volume message: {message}");
    assert!(
        message.contains("in-sync set")
            && message.contains(&format!(
                "vigil volume salvage v --replica {on3} --accept-data-loss"
            )),
        "{message}"
    );

    // The operator's choice, refused unless the loss is accepted.
    let (ok, _, err) = n1.cli(&["volume", "salvage", "v", "--replica", &on3]);
    assert!(!ok && err.contains("--accept-data-loss"), "{err}");
    let (ok, _, err) = n1.cli(&[
        "volume",
        "salvage",
        "v",
        "--replica",
        &on3,
        "--accept-data-loss",
    ]);
    assert!(ok, "salvage: {err}");
    wait_until(
        "v served from n3's replica",
        Duration::from_secs(30),
        || volume(&n1)["robustness"] == "degraded",
    );
    let uri = volume(&n1)["endpoint"].as_str().unwrap().to_string();
    assert!(
        tools::qemu_equal(&a, &uri),
        "the salvaged volume does not hold A (what n3's replica had)"
    );
    let event = n1
        .event("volume/v", "DataLossAccepted")
        .expect("DataLossAccepted");
    let text = event["message"].as_str().unwrap_or_default();
    eprintln!("event: {text}");
    assert!(text.contains(&on3) && text.contains(&on2), "{event}");

    // n2 returns: its replica is rebuilt from the salvaged one.
    n2.start_again();
    wait_until("v healthy again", Duration::from_secs(60), || {
        volume(&n1)["robustness"] == "healthy"
    });
    assert!(tools::qemu_equal(&a, &uri));
    drop(etcd);
}
