//! Issue 5, scenario 5 (replica part): a node dies (`kill -9` of its
//! agent). Its lease expires and NODE_DOWN is raised; after
//! node-down-timeout its replicas are marked failed (never left "running"
//! or "stopped"); after replica-replenishment-wait-interval they are
//! replaced on another node, one rebuild at a time into that node
//! (concurrent-replica-rebuild-per-node-limit 1), and the failed ones are
//! retired once the new ones are RW. When the node returns, its stale
//! replica directories are discarded (their objects are gone), nothing is
//! left stopped, doctor exits 0 and the data is what was written.
//!
//! Setup: three agents on etcd; n3 takes no replicas at first, so the two
//! 2-replica volumes (attached on n1) live on n1 and n2; then n3 is opened
//! for scheduling and n2 is killed.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::{Cluster, tools};

const VOLUMES: [&str; 2] = ["va", "vb"];
const SIZE: usize = 48 << 20;

#[test]
fn a_dead_nodes_replicas_are_failed_replaced_within_the_rebuild_limit_and_discarded_on_return() {
    let mut c = Cluster::on_etcd(&["n1", "n2", "n3"]);
    c["n1"].set("node-down-timeout", "5");
    c["n1"].set("replica-replenishment-wait-interval", "5");
    c["n1"].set("concurrent-replica-rebuild-per-node-limit", "1");
    let (ok, _, err) = c["n1"].cli(&["node", "update", "n3", "--allow-scheduling", "false"]);
    assert!(ok, "{err}");

    let mut endpoints = Vec::new();
    for (i, v) in VOLUMES.iter().enumerate() {
        c["n1"].json(&["volume", "create", v, "--size", "64MiB", "--replicas", "2"]);
        let endpoint = c.attach(v, "n1");
        let data = c.root().join(format!("data-{v}"));
        tools::random_file(&data, SIZE, 40 + i as u64);
        tools::qemu_write(&data, &endpoint);
        let nodes: Vec<String> = c["n1"]
            .replicas(v)
            .iter()
            .map(|r| r["node"].as_str().unwrap().to_string())
            .collect();
        assert!(nodes.contains(&"n2".to_string()), "{v} on {nodes:?}");
        endpoints.push((data, endpoint));
    }
    let old: Vec<String> = VOLUMES
        .iter()
        .map(|v| {
            c["n1"]
                .replicas(v)
                .into_iter()
                .find(|r| r["node"] == "n2")
                .map(|r| r["name"].as_str().unwrap().to_string())
                .unwrap()
        })
        .collect();
    let (ok, _, err) = c["n1"].cli(&["node", "update", "n3", "--allow-scheduling", "true"]);
    assert!(ok, "{err}");
    wait_until("doctor healthy", Duration::from_secs(20), || {
        doctor(&c["n1"]).0 == 0
    });

    c.kill9("n2");
    let killed = Instant::now();
    wait_until("NODE_DOWN", Duration::from_secs(20), || {
        check(&doctor(&c["n1"]).1, "NODE_DOWN").is_some()
    });
    eprintln!("NODE_DOWN {:?} after kill -9", killed.elapsed());
    let report = doctor(&c["n1"]).1;
    let down = check(&report, "NODE_DOWN").unwrap();
    assert!(
        !down["cause"].as_str().unwrap().is_empty() && !down["fix"].as_str().unwrap().is_empty()
    );

    // Failed after node-down-timeout, in the object, with the reason.
    for r in &old {
        wait_until("replica marked failed", Duration::from_secs(30), || {
            c["n1"]
                .events_of(&format!("replica/{r}"))
                .iter()
                .any(|e| e["reason"] == "ReplicaFailed")
        });
    }
    eprintln!("replicas failed {:?} after kill -9", killed.elapsed());
    let e = c["n1"].events_of(&format!("replica/{}", old[0]));
    let failed = e.iter().find(|e| e["reason"] == "ReplicaFailed").unwrap();
    assert!(
        failed["message"].as_str().unwrap().contains("node n2 down"),
        "{failed}"
    );

    // Replaced on n3 and the failed ones retired; with the per-node limit
    // the two rebuilds into n3 never overlap (sampled every 100 ms, and
    // checked on the recorded rebuild times).
    let mut most_wo = 0;
    wait_until(
        "both volumes healthy on n1+n3",
        Duration::from_secs(120),
        || {
            let all: Vec<Vec<Value>> = VOLUMES.iter().map(|v| c["n1"].replicas(v)).collect();
            let wo = all
                .iter()
                .flatten()
                .filter(|r| r["node"] == "n3" && r["mode"] == "WO")
                .count();
            most_wo = most_wo.max(wo);
            all.iter().all(|rs| {
                rs.len() == 2
                    && rs.iter().all(|r| r["mode"] == "RW")
                    && rs.iter().any(|r| r["node"] == "n3")
            })
        },
    );
    eprintln!("replaced {:?} after kill -9", killed.elapsed());
    assert!(
        most_wo <= 1,
        "{most_wo} rebuilds into n3 at once with a limit of 1"
    );
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for v in VOLUMES {
        let doc = c["n1"].json(&["volume", "get", v]);
        assert_eq!(doc["robustness"], "healthy", "{doc}");
        let fresh = c["n1"]
            .replicas(v)
            .into_iter()
            .find(|r| r["node"] == "n3")
            .unwrap();
        let name = fresh["name"].as_str().unwrap();
        let reasons: Vec<String> = c["n1"]
            .events_of(&format!("replica/{name}"))
            .iter()
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .collect();
        for want in ["ReplicaScheduled", "RebuildStarted", "ReplicaRebuilt"] {
            assert!(reasons.iter().any(|r| r == want), "{name}: {reasons:?}");
        }
        let rb = &fresh["rebuild"];
        if let (Some(s), Some(f)) = (rb["started_unix"].as_u64(), rb["finished_unix"].as_u64()) {
            spans.push((s, f));
        }
    }
    spans.sort();
    if spans.len() == 2 {
        assert!(
            spans[1].0 >= spans[0].1,
            "rebuilds into n3 overlapped: {spans:?}"
        );
    }
    for r in &old {
        assert!(
            c["n1"]
                .events_of(&format!("replica/{r}"))
                .iter()
                .any(|e| e["reason"] == "ReplicaRetired"),
            "{r} not retired"
        );
    }
    for (data, endpoint) in &endpoints {
        assert!(
            tools::qemu_equal(data, endpoint),
            "data differs after replacement"
        );
    }

    // n2 returns: its stale directories are discarded, nothing stopped.
    c.start_again("n2");
    c["n2"].wait_live();
    for r in &old {
        wait_until("stale directory discarded", Duration::from_secs(60), || {
            c["n1"]
                .events_of(&format!("replica/{r}"))
                .iter()
                .any(|e| e["reason"] == "ReplicaDiscarded")
        });
        assert!(
            !c["n2"]
                .data_dir
                .join("disks/default/replicas")
                .join(r)
                .exists(),
            "{r} still on n2's disk"
        );
    }
    wait_until(
        "doctor healthy after n2 returned",
        Duration::from_secs(30),
        || doctor(&c["n1"]).0 == 0,
    );
    for v in VOLUMES {
        let rs = c["n1"].replicas(v);
        assert!(
            rs.iter()
                .all(|r| r["state"] == "running" && r["mode"] == "RW"),
            "{v}: {rs:?}"
        );
    }
    for (data, endpoint) in &endpoints {
        assert!(tools::qemu_equal(data, endpoint), "data differs at the end");
    }
}
