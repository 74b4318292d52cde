//! Issue 5, scenario 7: data locality. Three agents on etcd.
//!
//! * best-effort: a 2-replica volume whose replicas are on n1 and n2 is
//!   attached on n3 (no replica there). A replica is built on n3 and,
//!   once it is RW, a remote one is retired: the volume ends with 2
//!   replicas, one of them on n3, healthy, with the data written before
//!   and during the move.
//! * strict-local: a 1-replica volume refuses to attach on a node without
//!   its replica and says why; it attaches where its replica lives.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::{Duration, Instant};

use vigil_tests::agent::wait_until;
use vigil_tests::doctor::doctor;
use vigil_tests::{Agent, Cluster, tools};

fn nodes_of(a: &Agent, volume: &str) -> Vec<String> {
    let mut n: Vec<String> = a
        .replicas(volume)
        .iter()
        .map(|r| r["node"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn best_effort_builds_a_local_replica_and_retires_a_remote_one_strict_local_refuses() {
    let c = Cluster::on_etcd(&["n1", "n2", "n3"]);

    // best-effort, placed on n1+n2 (n3 closed to scheduling at create).
    let (ok, _, err) = c["n1"].cli(&["node", "update", "n3", "--allow-scheduling", "false"]);
    assert!(ok, "{err}");
    let v = c["n1"].json(&[
        "volume",
        "create",
        "loc",
        "--size",
        "64MiB",
        "--replicas",
        "2",
        "--data-locality",
        "best-effort",
    ]);
    assert_eq!(v["data_locality"], "best-effort", "{v}");
    assert_eq!(nodes_of(&c["n1"], "loc"), ["n1", "n2"]);
    let (ok, _, err) = c["n1"].cli(&["node", "update", "n3", "--allow-scheduling", "true"]);
    assert!(ok, "{err}");

    let out = c.attach("loc", "n3");
    let attached = Instant::now();
    let endpoint = out.trim().to_string();
    let data = c.root().join("data");
    tools::random_file(&data, 24 << 20, 77);
    tools::qemu_write(&data, &endpoint);

    wait_until(
        "a local replica on n3, RW, and a remote one retired",
        Duration::from_secs(60),
        || {
            let rs = c["n3"].replicas("loc");
            rs.len() == 2
                && rs.iter().all(|r| r["mode"] == "RW")
                && rs.iter().any(|r| r["node"] == "n3")
        },
    );
    eprintln!("locality reached {:?} after attach", attached.elapsed());
    let events = c["n3"].json(&["events"]);
    let reasons: Vec<(String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(r, m)| r == "ReplicaScheduled" && m.contains("data locality")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(r, m)| r == "ReplicaRetired" && m.contains("data locality")),
        "{reasons:?}"
    );
    let v = c["n3"].json(&["volume", "get", "loc"]);
    assert_eq!(v["robustness"], "healthy", "{v}");
    wait_until("doctor healthy", Duration::from_secs(30), || {
        doctor(&c["n3"]).0 == 0
    });
    assert!(
        tools::qemu_equal(&data, &endpoint),
        "data differs after the move"
    );

    // strict-local: refused where its replica is not, with the reason.
    let v = c["n1"].json(&[
        "volume",
        "create",
        "strict",
        "--size",
        "16MiB",
        "--replicas",
        "1",
        "--data-locality",
        "strict-local",
    ]);
    assert_eq!(v["data_locality"], "strict-local", "{v}");
    let home = nodes_of(&c["n1"], "strict").pop().unwrap();
    let other = ["n1", "n2", "n3"].into_iter().find(|n| *n != home).unwrap();
    let (ok, _, err) = c["n1"].cli(&["volume", "attach", "strict", "--node", other]);
    assert!(!ok, "strict-local volume attached away from its replica");
    assert!(
        err.contains("strict-local") && err.contains(&home),
        "refusal should say why and where the replica lives: {err}"
    );
    let v = c["n1"].json(&["volume", "get", "strict"]);
    assert_eq!(v["state"], "detached", "{v}");
    let (ok, _, err) = c["n1"].cli(&["volume", "attach", "strict", "--node", &home]);
    assert!(ok, "attach on {home}: {err}");
}
