//! Issue 5, scenario 1: a disk comes back with a new identity (a node
//! upgrade reformatted it). Three agents on etcd, a 3-replica volume
//! attached on n1 and written. n2 is killed, its disk directory wiped, and
//! n2 started again: the disk registers under a new UUID, the old one is
//! `replaced`, DISK_REPLACED is raised with cause and fix, the old replica
//! is marked failed (naming both UUIDs — never left "stopped") and removed
//! from the volume, a new replica is built and the volume is healthy again;
//! the old disk is forgotten, DISK_REPLACED clears, doctor exits 0 and the
//! data is what was written.
//!
//! Second test: a volume created while the cluster is short of nodes is
//! refused when `allow-volume-creation-with-degraded-availability` is false,
//! created degraded when true, and heals when the node returns.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::{Agent, Cluster, tools};

const SIZE: usize = 16 << 20;

fn disk_of(a: &Agent, node: &str) -> Vec<Value> {
    a.json(&["disk", "list"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["node"] == node)
        .cloned()
        .collect()
}

#[test]
fn a_wiped_disk_is_a_new_disk_and_its_replicas_are_rebuilt() {
    let mut c = Cluster::on_etcd(&["n1", "n2", "n3"]);
    let endpoint = c.create_attached("v", "64MiB", 3, "n1");
    let data = c.root().join("data");
    tools::random_file(&data, SIZE, 5);
    tools::qemu_write(&data, &endpoint);
    wait_until("doctor healthy", Duration::from_secs(20), || {
        doctor(&c["n1"]).0 == 0
    });
    let old_disk = disk_of(&c["n1"], "n2")[0]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let old_replica = c["n1"]
        .replicas("v")
        .into_iter()
        .find(|r| r["node"] == "n2")
        .map(|r| r["name"].as_str().unwrap().to_string())
        .unwrap();

    // No rebuilds for now (limit 0): the replacement is placed but not
    // filled, so the state before the repair can be looked at at leisure.
    let (ok, _, err) = c["n1"].cli(&[
        "settings",
        "set",
        "concurrent-replica-rebuild-per-node-limit",
        "0",
    ]);
    assert!(ok, "{err}");

    // The node "upgrade": agent gone, disk reformatted, agent back.
    c.kill9("n2");
    let disk_dir = c["n2"].data_dir.join("disks").join("default");
    std::fs::remove_dir_all(&disk_dir).unwrap();
    c.start_again("n2");
    c["n2"].wait_live();
    let back = Instant::now();

    // The repair can be quick: keep the report that showed the check.
    let (mut code, mut report) = (0, Value::Null);
    wait_until("DISK_REPLACED raised", Duration::from_secs(20), || {
        (code, report) = doctor(&c["n1"]);
        check(&report, "DISK_REPLACED").is_some()
    });
    eprintln!(
        "DISK_REPLACED seen {:?} after the agent came back",
        back.elapsed()
    );
    assert_ne!(code, 0, "{report}");
    let replaced = check(&report, "DISK_REPLACED").unwrap();
    for field in ["cause", "fix"] {
        assert!(
            !replaced[field].as_str().unwrap_or("").is_empty(),
            "{replaced}"
        );
    }
    let new_disk = disk_of(&c["n1"], "n2")
        .into_iter()
        .find(|d| d["uuid"] != old_disk.as_str())
        .map(|d| d["uuid"].as_str().unwrap().to_string())
        .expect("the new disk is registered");

    // The old replica is failed with both UUIDs named (never "stopped"),
    // a replacement is placed on the new disk; nothing is rebuilt yet.
    wait_until(
        "old replica failed, replacement placed",
        Duration::from_secs(30),
        || {
            c["n1"]
                .event(&format!("replica/{old_replica}"), "ReplicaFailed")
                .is_some()
                && c["n1"].replicas("v").len() == 4
        },
    );
    eprintln!(
        "old replica failed and replacement placed {:?} after the agent came back",
        back.elapsed()
    );
    let failed = c["n1"]
        .event(&format!("replica/{old_replica}"), "ReplicaFailed")
        .expect("a ReplicaFailed event");
    let msg = failed["message"].as_str().unwrap();
    assert!(
        msg.contains("disk replaced") && msg.contains(&old_disk) && msg.contains(&new_disk),
        "ReplicaFailed should name the reason and both UUIDs: {msg}"
    );
    let old_view = c["n1"]
        .replicas("v")
        .into_iter()
        .find(|r| r["name"] == old_replica.as_str())
        .unwrap();
    assert_eq!(old_view["state"], "error", "{old_view}");
    // The engine notices the old replica's connection is gone (its next
    // ping) and the volume shows degraded, still with DISK_REPLACED.
    wait_until("volume degraded", Duration::from_secs(10), || {
        let report = doctor(&c["n1"]).1;
        check(&report, "DISK_REPLACED").is_some() && check(&report, "VOLUME_DEGRADED").is_some()
    });

    // Rebuilds allowed again: the replacement is filled, the old replica
    // retired (removed from the volume).
    let (ok, _, err) = c["n1"].cli(&[
        "settings",
        "set",
        "concurrent-replica-rebuild-per-node-limit",
        "5",
    ]);
    assert!(ok, "{err}");
    let allowed = Instant::now();
    wait_until("old replica retired", Duration::from_secs(60), || {
        c["n1"]
            .event(&format!("replica/{old_replica}"), "ReplicaRetired")
            .is_some()
    });
    eprintln!(
        "old replica retired {:?} after rebuilds were allowed",
        allowed.elapsed()
    );
    assert!(
        !c["n1"]
            .replicas("v")
            .iter()
            .any(|r| r["name"] == old_replica.as_str()),
        "the old replica is still listed"
    );

    // A new replica is built and the volume heals; the new disk is usable.
    wait_until(
        "volume healthy with 3 RW replicas",
        Duration::from_secs(60),
        || {
            let rs = c["n1"].replicas("v");
            rs.len() == 3
                && rs.iter().all(|r| r["mode"] == "RW")
                && c["n1"].json(&["volume", "get", "v"])["robustness"] == "healthy"
        },
    );
    eprintln!(
        "volume healthy again {:?} after the agent came back",
        back.elapsed()
    );
    let rs = c["n1"].replicas("v");
    let fresh = rs
        .iter()
        .find(|r| r["node"] == "n2")
        .expect("a replica on n2");
    assert_eq!(fresh["disk"], new_disk.as_str(), "{fresh}");
    let name = fresh["name"].as_str().unwrap();
    assert!(
        c["n1"]
            .event(&format!("replica/{name}"), "ReplicaScheduled")
            .is_some()
    );
    assert!(
        c["n1"]
            .event(&format!("replica/{name}"), "ReplicaRebuilt")
            .is_some()
    );

    // The old disk is forgotten; everything is healthy.
    wait_until("doctor healthy again", Duration::from_secs(30), || {
        doctor(&c["n1"]).0 == 0
    });
    assert!(
        disk_of(&c["n1"], "n2")
            .iter()
            .all(|d| d["uuid"] != old_disk.as_str())
    );
    assert!(
        c["n1"]
            .event(&format!("disk/{old_disk}"), "DiskForgotten")
            .is_some()
    );
    assert!(
        tools::qemu_equal(&data, &endpoint),
        "data differs after the disk was replaced"
    );
}

#[test]
fn a_volume_created_short_of_nodes_is_degraded_only_if_allowed_and_heals() {
    let mut c = Cluster::on_etcd(&["n1", "n2"]);
    c.stop("n2");
    wait_until("n2 down", Duration::from_secs(20), || {
        c["n1"].json(&["node", "get", "n2"])["ready"] == false
    });

    let (ok, _, _) = c["n1"].cli(&[
        "settings",
        "set",
        "allow-volume-creation-with-degraded-availability",
        "false",
    ]);
    assert!(ok);
    let (ok, _, err) = c["n1"].cli(&[
        "volume",
        "create",
        "v",
        "--size",
        "32MiB",
        "--replicas",
        "2",
    ]);
    assert!(!ok, "created although degraded creation is off");
    assert!(
        err.contains("allow-volume-creation-with-degraded-availability"),
        "{err}"
    );

    let (ok, _, _) = c["n1"].cli(&[
        "settings",
        "set",
        "allow-volume-creation-with-degraded-availability",
        "true",
    ]);
    assert!(ok);
    let v = c.create_volume("v", "32MiB", 2);
    assert_eq!(v["replicas"].as_array().unwrap().len(), 1, "{v}");
    let endpoint = c.attach("v", "n1");
    let data = c.root().join("data");
    tools::random_file(&data, 8 << 20, 9);
    tools::qemu_write(&data, &endpoint);
    let report = doctor(&c["n1"]).1;
    assert!(
        check(&report, "REPLICA_UNSCHEDULABLE").is_some()
            || check(&report, "VOLUME_DEGRADED").is_some(),
        "{report}"
    );

    c.start_again("n2");
    c["n2"].wait_live();
    let back = Instant::now();
    wait_until(
        "volume healthy with 2 replicas",
        Duration::from_secs(60),
        || {
            let v = c["n1"].json(&["volume", "get", "v"]);
            v["robustness"] == "healthy" && v["replicas"].as_array().is_some_and(|r| r.len() == 2)
        },
    );
    eprintln!("healed {:?} after n2 returned", back.elapsed());
    wait_until("doctor healthy", Duration::from_secs(30), || {
        doctor(&c["n1"]).0 == 0
    });
    assert!(
        tools::qemu_equal(&data, &endpoint),
        "data differs after healing"
    );
}
