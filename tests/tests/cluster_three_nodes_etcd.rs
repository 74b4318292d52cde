//! Three agents on one real etcd, in two zones (n1 in a; n2 and n3 in b):
//! every agent shows the same cluster; replicas are spread over nodes and
//! zones, and when they cannot be the volume says why; data locality,
//! eviction, a crashed replica node, and calls answered by an agent other
//! than the one serving the volume.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::{Agent, Cluster, tools};

/// Runs a CLI call that must fail with `[code]`; returns stderr.
fn refused(a: &Agent, args: &[&str], code: &str) -> String {
    let (ok, out, err) = a.cli(args);
    assert!(!ok, "vigil {args:?} should fail; it printed {out}");
    assert!(
        err.starts_with("error: ") && err.contains(&format!("[{code}]")),
        "vigil {args:?}: expected [{code}], got: {err}"
    );
    err
}

/// The nodes holding the volume's replicas, in replica order.
fn replica_nodes(v: &Value) -> Vec<String> {
    v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_str().unwrap().to_string())
        .collect()
}

fn distinct(nodes: &[String]) -> usize {
    nodes.iter().collect::<BTreeSet<_>>().len()
}

/// The scheduling notes of a volume as one string per note.
fn notes(v: &Value) -> Vec<String> {
    v["scheduling"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

fn volume_names(a: &Agent) -> Vec<String> {
    a.json(&["volume", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

/// `name -> ready` as `node list` from `a` shows it.
fn readiness(a: &Agent) -> Vec<(String, bool)> {
    a.json(&["node", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["ready"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn all_ready(names: &[&str]) -> Vec<(String, bool)> {
    names.iter().map(|n| (n.to_string(), true)).collect()
}

#[test]
fn three_agents_on_etcd_spread_replicas_explain_refusals_and_survive_a_crash() {
    let mut c = Cluster::builder()
        .node_args("n1", &["--label", "zone=a"])
        .node_args("n2", &["--label", "zone=b"])
        .node_args("n3", &["--label", "zone=b"])
        .on_etcd(&["n1", "n2", "n3"]);

    // Every agent shows the same three ready nodes with their zones.
    for a in c.nodes() {
        wait_until(
            &format!("3 ready nodes seen from {}", a.name),
            Duration::from_secs(10),
            || readiness(a) == all_ready(&["n1", "n2", "n3"]),
        );
        let nodes = a.json(&["node", "list"]);
        let zones: Vec<&str> = nodes
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["labels"]["zone"].as_str().unwrap())
            .collect();
        assert_eq!(zones, ["a", "b", "b"], "{nodes}");
        assert!(
            nodes
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["store"] == "etcd"),
            "{nodes}"
        );
    }

    // Three replicas on three nodes; only two zones, so the soft zone rule
    // is bent, and the volume says so.
    let spread = c["n1"].json(&[
        "volume",
        "create",
        "spread",
        "--size",
        "32MiB",
        "--replicas",
        "3",
    ]);
    assert_eq!(spread["state"], "detached", "{spread}");
    let nodes = replica_nodes(&spread);
    assert_eq!(nodes.len(), 3, "{spread}");
    assert_eq!(distinct(&nodes), 3, "replicas share a node: {spread}");
    let sched = notes(&spread);
    assert!(
        sched
            .iter()
            .any(|n| n.contains("zone anti-affinity relaxed") && n.contains("zone b")),
        "no note about the bent zone rule: {sched:?}"
    );
    // The same view from another agent.
    let seen = c["n3"].json(&["volume", "get", "spread"]);
    assert_eq!(replica_nodes(&seen), nodes, "{seen}");

    // Too large for any disk: refused, with a reason for every node.
    let before = volume_names(&c["n1"]);
    let err = refused(
        &c["n2"],
        &[
            "volume",
            "create",
            "huge",
            "--size",
            "60TiB",
            "--replicas",
            "1",
        ],
        "unschedulable",
    );
    assert!(err.contains("cannot place any replica of huge"), "{err}");
    for n in ["n1", "n2", "n3"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("  - {n}: ")) && l.contains("needs 60 TiB")),
            "no capacity reason for {n}: {err}"
        );
    }
    assert_eq!(
        volume_names(&c["n1"]),
        before,
        "a refused create left a volume"
    );

    // Data locality best-effort: the node answering the create is local.
    let local = c["n3"].json(&[
        "volume",
        "create",
        "local",
        "--size",
        "16MiB",
        "--replicas",
        "2",
        "--data-locality",
        "best-effort",
    ]);
    assert_eq!(local["data_locality"], "best-effort", "{local}");
    let nodes = replica_nodes(&local);
    assert_eq!(nodes.len(), 2, "{local}");
    assert!(
        nodes.contains(&"n3".to_string()),
        "no replica on the local node n3: {local}"
    );
    assert_eq!(distinct(&nodes), 2, "{local}");

    // A hard zone rule: only two zones, so only two replicas. Degraded
    // creation is allowed by default: created with 2, and why not 3 per node.
    let s = c["n1"].json(&[
        "settings",
        "set",
        "replica-zone-level-soft-anti-affinity",
        "false",
    ]);
    assert_eq!(s["value"], "false", "{s}");
    let hard = c["n2"].json(&[
        "volume",
        "create",
        "hard",
        "--size",
        "16MiB",
        "--replicas",
        "3",
    ]);
    assert_eq!(hard["state"], "detached", "{hard}");
    assert_eq!(hard["number_of_replicas"], 3, "{hard}");
    let nodes = replica_nodes(&hard);
    assert_eq!(nodes.len(), 2, "{hard}");
    assert!(nodes.contains(&"n1".to_string()), "zone a unused: {hard}");
    assert_eq!(
        hard["message"], "created degraded: 2 of 3 replicas placed",
        "{hard}"
    );
    let sched = notes(&hard);
    for n in ["n1", "n2", "n3"] {
        assert!(
            sched.iter().any(|l| l.starts_with(&format!("{n}: "))),
            "no reason for {n} in {sched:?}"
        );
    }
    assert!(
        sched
            .iter()
            .any(|l| l.contains("zone b already holds a replica of hard")
                && l.contains("zone anti-affinity is hard")),
        "{sched:?}"
    );
    // ...and refused when degraded creation is not allowed.
    c["n1"].json(&[
        "settings",
        "set",
        "allow-volume-creation-with-degraded-availability",
        "false",
    ]);
    let before = volume_names(&c["n1"]);
    let err = refused(
        &c["n3"],
        &[
            "volume",
            "create",
            "hard2",
            "--size",
            "16MiB",
            "--replicas",
            "3",
        ],
        "unschedulable",
    );
    assert!(
        err.contains("only 2 of 3 replicas of hard2 can be placed")
            && err.contains("allow-volume-creation-with-degraded-availability is false"),
        "{err}"
    );
    for n in ["n1", "n2", "n3"] {
        assert!(
            err.lines().any(|l| l.starts_with(&format!("  - {n}: "))),
            "no reason for {n}: {err}"
        );
    }
    assert_eq!(
        volume_names(&c["n1"]),
        before,
        "a refused create left a volume"
    );
    for (setting, default) in [
        ("replica-zone-level-soft-anti-affinity", "true"),
        ("allow-volume-creation-with-degraded-availability", "true"),
    ] {
        let s = c["n2"].json(&["settings", "set", setting, default]);
        assert_eq!(s["is_default"], true, "{s}");
    }

    // Eviction: nothing new goes to n2.
    let node = c["n1"].json(&["node", "evict", "n2"]);
    assert_eq!(node["eviction_requested"], true, "{node}");
    let (ok, table, err) = c["n3"].cli(&["node", "list"]);
    assert!(ok, "{err}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("n2 ") && l.contains("evicting")),
        "{table}"
    );
    let avoid = c["n2"].json(&[
        "volume",
        "create",
        "avoid",
        "--size",
        "16MiB",
        "--replicas",
        "3",
    ]);
    let nodes = replica_nodes(&avoid);
    assert_eq!(nodes.len(), 2, "{avoid}");
    assert!(
        !nodes.contains(&"n2".to_string()),
        "replica on evicted n2: {avoid}"
    );
    assert!(
        notes(&avoid).iter().any(|l| l == "n2: eviction requested"),
        "{avoid}"
    );
    let node = c["n1"].json(&["node", "evict", "n2", "--cancel"]);
    assert_eq!(node["eviction_requested"], false, "{node}");

    // Attach on n2 (asked through n1), write; every agent shows the same
    // endpoint, and snapshots go through an agent that does not serve it.
    let (ok, out, err) = c["n1"].cli(&["volume", "attach", "spread", "--node", "n2"]);
    assert!(ok, "{err}");
    let endpoint = out.trim().to_string();
    let n2_nbd = c["n2"].json(&["node", "get", "n2"])["nbd_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(endpoint, format!("nbd://{n2_nbd}/spread"));
    for a in c.nodes() {
        let v = a.json(&["volume", "get", "spread"]);
        assert_eq!(v["state"], "attached", "{v}");
        assert_eq!(v["attached_node"], "n2", "{v}");
        assert_eq!(v["endpoint"], endpoint.as_str(), "{v}");
        assert_eq!(v["robustness"], "healthy", "{v}");
    }
    let data = c.root().join("data");
    tools::random_file(&data, 32 << 20, 3);
    tools::qemu_write(&data, &endpoint);

    let snap = c["n3"].json(&["volume", "snapshot", "create", "spread", "s1"]);
    assert_eq!(snap["name"], "s1", "{snap}");
    let chain = c["n1"].json(&["volume", "snapshot", "list", "spread"]);
    assert!(
        chain["chain"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "s1"),
        "s1 not in the chain: {chain}"
    );

    // kill -9 of n1, which holds a replica: the volume stays attached on
    // n2, the data still reads back, and the volume is degraded.
    let spread_nodes = replica_nodes(&c["n2"].json(&["volume", "get", "spread"]));
    assert!(spread_nodes.contains(&"n1".to_string()));
    c.kill9("n1");
    assert!(
        tools::qemu_equal(&data, &endpoint),
        "data differs after n1 died"
    );
    wait_until(
        "spread degraded after n1 died",
        Duration::from_secs(20),
        || {
            let v = c["n3"].json(&["volume", "get", "spread"]);
            v["state"] == "attached" && v["robustness"] == "degraded"
        },
    );
    let v = c["n2"].json(&["volume", "get", "spread"]);
    assert_eq!(v["attached_node"], "n2", "{v}");
    assert_eq!(v["endpoint"], endpoint.as_str(), "{v}");
    let modes: Vec<(String, String)> = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["node"].as_str().unwrap().into(),
                r["mode"].as_str().unwrap().into(),
            )
        })
        .collect();
    for (node, mode) in &modes {
        if node == "n1" {
            assert_ne!(mode, "RW", "the dead node's replica is still RW: {v}");
        } else {
            assert_eq!(mode, "RW", "{v}");
        }
    }
    // Writes still go through.
    tools::random_file(&data, 32 << 20, 4);
    tools::qemu_write(&data, &endpoint);
    assert!(
        tools::qemu_equal(&data, &endpoint),
        "data differs while degraded"
    );

    // n1 shows down from the agents left, within the lease TTL (10 s).
    for a in [&c["n2"], &c["n3"]] {
        wait_until(
            &format!("n1 down as seen from {}", a.name),
            Duration::from_secs(15),
            || {
                readiness(a)
                    == vec![
                        ("n1".into(), false),
                        ("n2".into(), true),
                        ("n3".into(), true),
                    ]
            },
        );
    }
    let (ok, table, err) = c["n2"].cli(&["node", "list"]);
    assert!(ok, "{err}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("n1 ") && l.contains(" down ")),
        "{table}"
    );
}
