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
use vigil_tests::{Agent, Cluster, tools};

fn volume(a: &Agent) -> Value {
    a.json(&["volume", "get", "v"])
}

#[test]
fn a_volume_whose_in_sync_replicas_are_gone_waits_for_the_operator() {
    let mut c = Cluster::on_etcd(&["n1", "n2", "n3"]);
    c["n1"].set("node-down-timeout", "5");
    let (ok, _, err) = c["n1"].cli(&["node", "update", "n1", "--allow-scheduling", "false"]);
    assert!(ok, "node update: {err}");
    let uri = c.create_attached("v", "16MiB", 2, "n1");
    let (on2, on3) = (c.replica_on("v", "n2"), c.replica_on("v", "n3"));
    let a = c.root().join("a");
    tools::random_file(&a, 16 << 20, 17);
    tools::qemu_write(&a, &uri);

    c.kill9("n3");
    wait_until("n3's replica ERR", Duration::from_secs(15), || {
        volume(&c["n1"])["replicas"]
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
    c.kill9("n2");
    c.kill9("n1");
    c.start_again("n3");
    c.start_again("n1");
    c["n1"].wait_live();
    c["n3"].wait_live();

    // Well past node-down-timeout: still not served from n3's replica.
    let mut message = String::new();
    wait_until(
        "the volume says it waits for the in-sync replica",
        Duration::from_secs(30),
        || {
            message = volume(&c["n1"])["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            message.contains(&format!("waiting for replica {on2} on node n2"))
        },
    );
    std::thread::sleep(Duration::from_secs(12));
    let v = volume(&c["n1"]);
    let engine = c["n1"].get("/v1/engines/v");
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
    let (ok, _, err) = c["n1"].cli(&["volume", "salvage", "v", "--replica", &on3]);
    assert!(!ok && err.contains("--accept-data-loss"), "{err}");
    let (ok, _, err) = c["n1"].cli(&[
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
        || volume(&c["n1"])["robustness"] == "degraded",
    );
    let uri = volume(&c["n1"])["endpoint"].as_str().unwrap().to_string();
    assert!(
        tools::qemu_equal(&a, &uri),
        "the salvaged volume does not hold A (what n3's replica had)"
    );
    let event = c["n1"]
        .event("volume/v", "DataLossAccepted")
        .expect("DataLossAccepted");
    let text = event["message"].as_str().unwrap_or_default();
    eprintln!("event: {text}");
    assert!(text.contains(&on3) && text.contains(&on2), "{event}");

    // n2 returns: its replica is rebuilt from the salvaged one.
    c.start_again("n2");
    wait_until("v healthy again", Duration::from_secs(60), || {
        volume(&c["n1"])["robustness"] == "healthy"
    });
    assert!(tools::qemu_equal(&a, &uri));
}
