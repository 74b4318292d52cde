//! Issue 6, flows 1 and 2: node eviction and drain.
//!
//! `eviction_and_drain_move_attached_and_detached_volumes`: four agents on
//! etcd. n1 holds a replica of an attached 2-replica volume (va, on n1+n2,
//! attached on n2), of a detached 2-replica volume (vd, n1+n2) and the only
//! replica of a detached 1-replica volume (v1). The drain check of n1 lists
//! v1 (its only healthy replica is on n1) and exits 1; under
//! `allow-if-replica-is-stopped` it passes. `vigil node drain n1` then
//! moves every replica off n1 (rebuilt on n3/n4 first, then retired) and
//! exits 0. Sampled throughout: va never has fewer than 2 RW replicas;
//! vd and v1 stay `detached` with no desired node and no engine object
//! (their replicas are rebuilt by a maintenance engine). Events and
//! `node get -o json` show the progress; data equal with qemu-img compare.
//!
//! `a_blocked_eviction_is_reported_and_clears_with_capacity_or_cancel`:
//! three agents, a 3-replica volume; evicting n1 is blocked by node
//! anti-affinity (EVICTION_BLOCKED in doctor, with the scheduler's
//! reasons); a fourth agent joins and the eviction completes. Then
//! evicting n2 is blocked again and `--cancel` clears it.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::{vigil_bin, wait_until};
use vigil_tests::doctor::{check, doctor};
use vigil_tests::{Agent, Cluster, tools};

const SIZE: usize = 24 << 20;

/// `vigil -o json ARGS` against `endpoint`; `None` if it failed.
fn vjson(endpoint: &str, args: &[&str]) -> Option<Value> {
    let out = Command::new(vigil_bin())
        .args(["--endpoint", endpoint, "-o", "json"])
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn reasons(a: &Agent, object: &str) -> Vec<String> {
    a.events_of(object)
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect()
}

/// Creates `v`, attaches it on `node`, writes seeded data, returns the
/// data file and the endpoint.
fn create_and_fill(
    c: &Cluster,
    v: &str,
    replicas: usize,
    node: &str,
    seed: u64,
) -> (std::path::PathBuf, String) {
    let endpoint = c.create_attached(v, "32MiB", replicas, node);
    let data = c.root().join(format!("data-{v}"));
    tools::random_file(&data, SIZE, seed);
    tools::qemu_write(&data, &endpoint);
    (data, endpoint)
}

#[test]
fn eviction_and_drain_move_attached_and_detached_volumes() {
    let c = Cluster::builder()
        .keep_logs("vigil-node-eviction-logs")
        .on_etcd(&["n1", "n2", "n3", "n4"]);
    let n1 = &c["n1"];
    let n2 = &c["n2"];
    n1.set("concurrent-replica-rebuild-per-node-limit", "1");
    let schedulable = |node: &str, yes: bool| {
        let (ok, _, err) = n1.cli(&[
            "node",
            "update",
            node,
            "--allow-scheduling",
            if yes { "true" } else { "false" },
        ]);
        assert!(ok, "{err}");
    };
    // v1 only on n1; va and vd on n1 + n2.
    for n in ["n2", "n3", "n4"] {
        schedulable(n, false);
    }
    let (d1, e1) = create_and_fill(&c, "v1", 1, "n1", 61);
    schedulable("n2", true);
    let (da, ea) = create_and_fill(&c, "va", 2, "n2", 62);
    let (dd, ed) = create_and_fill(&c, "vd", 2, "n2", 63);
    for v in ["v1", "vd"] {
        let (ok, _, err) = n1.cli(&["volume", "detach", v]);
        assert!(ok, "detach {v}: {err}");
    }
    assert_eq!(c.replica_nodes("v1"), vec!["n1"]);
    for v in ["va", "vd"] {
        let mut nodes = c.replica_nodes(v);
        nodes.sort();
        assert_eq!(nodes, vec!["n1", "n2"], "{v}");
    }
    let _ = (e1, ed);

    // Drain check before anything moved: v1's only replica is on n1.
    let (code, out, err) = n1.cli_code(&["node", "drain-check", "n1"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("volume v1: only healthy replica is on n1"),
        "{out}"
    );
    let (code, out, _) = n1.cli_code(&["-o", "json", "node", "drain-check", "n1"]);
    assert_eq!(code, 1);
    let check_json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(check_json["can_drain"], false);
    let blocked: Vec<&str> = check_json["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["volume"].as_str().unwrap())
        .collect();
    assert_eq!(blocked, vec!["v1"], "{check_json}");
    // n2 runs va's engine: a note, not a blocker (nothing is lost and its
    // clients go with n2; migrating it first is the operator's choice).
    let (code, out, _) = n1.cli_code(&["node", "drain-check", "n2"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("note: volume va: attached on n2"), "{out}");
    // The policy changes the answer: detached volumes' replicas are stopped.
    n1.set("node-drain-policy", "allow-if-replica-is-stopped");
    let (code, out, err) = n1.cli_code(&["node", "drain-check", "n1"]);
    assert_eq!(code, 0, "{out}{err}");
    n1.set("node-drain-policy", "always-allow");
    assert_eq!(n1.cli_code(&["node", "drain-check", "n2"]).0, 0);
    n1.set("node-drain-policy", "block-if-contains-last-replica");

    // Sample while the drain runs.
    for n in ["n3", "n4"] {
        schedulable(n, true);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        let endpoint = n2.endpoint.clone();
        let all: Vec<String> = c.nodes().map(|a| a.endpoint.clone()).collect();
        std::thread::spawn(move || {
            let mut samples = 0u32;
            let mut bad: Vec<String> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(va) = vjson(&endpoint, &["volume", "get", "va"]) {
                    let rw = va["replicas"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|r| r["mode"] == "RW")
                        .count();
                    if rw < 2 {
                        bad.push(format!("va has {rw} RW replicas: {va}"));
                    }
                }
                for v in ["vd", "v1"] {
                    if let Some(doc) = vjson(&endpoint, &["volume", "get", v])
                        && (doc["state"] != "detached" || !doc["desired_node"].is_null())
                    {
                        bad.push(format!("{v} not plainly detached: {doc}"));
                    }
                }
                // no NBD-served engine for a detached volume on any node
                for ep in &all {
                    if let Some(engines) = vjson(ep, &["engine", "list"]) {
                        for e in engines.as_array().into_iter().flatten() {
                            if e["name"] == "vd" || e["name"] == "v1" {
                                bad.push(format!(
                                    "engine listed on {ep} for a detached volume: {e}"
                                ));
                            }
                        }
                    }
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(150));
            }
            (samples, bad)
        })
    };

    let started = Instant::now();
    let (code, out, err) = n1.cli_code(&["node", "drain", "n1", "--timeout", "180s"]);
    eprintln!("drain took {:?}:\n{out}{err}", started.elapsed());
    assert_eq!(code, 0, "drain failed:\n{out}\n{err}\n{}", n1.log_text());
    assert!(out.contains("node n1 drained"), "{out}");
    stop.store(true, Ordering::Relaxed);
    let (samples, bad) = sampler.join().unwrap();
    eprintln!("{samples} samples");
    assert!(samples > 5, "too few samples: {samples}");
    assert!(bad.is_empty(), "{}", bad.join("\n"));

    // Nothing left on n1; each volume at its desired count, RW.
    wait_until("eviction completed", Duration::from_secs(30), || {
        n1.json(&["node", "get", "n1"])["eviction"]["phase"] == "completed"
    });
    for (v, want) in [("v1", 1), ("va", 2), ("vd", 2)] {
        let rs = n1.replicas(v);
        assert_eq!(rs.len(), want, "{v}: {rs:?}");
        assert!(rs.iter().all(|r| r["node"] != "n1"), "{v}: {rs:?}");
        assert!(rs.iter().all(|r| r["state"] == "running"), "{v}: {rs:?}");
    }
    let node = n1.json(&["node", "get", "n1"]);
    assert_eq!(node["eviction_requested"], true);
    assert_eq!(node["allow_scheduling"], false, "drain cordons the node");
    let ev = &node["eviction"];
    assert_eq!(ev["replicas_left"], 0, "{node}");
    assert_eq!(ev["replicas_moved"], 3, "{node}");
    let (ok, table, _) = n1.cli(&["node", "get", "n1"]);
    assert!(ok && table.contains("eviction: completed"), "{table}");
    let node_events = reasons(n1, "node/n1");
    for want in ["EvictionStarted", "ReplicaEvicted", "EvictionCompleted"] {
        assert!(node_events.iter().any(|r| r == want), "{node_events:?}");
    }
    let evicted = n1
        .events_of("node/n1")
        .into_iter()
        .filter(|e| e["reason"] == "ReplicaEvicted")
        .count();
    assert_eq!(evicted, 3, "{node_events:?}");
    for v in ["v1", "vd"] {
        let r = reasons(n1, &format!("volume/{v}"));
        assert!(
            r.iter().any(|x| x == "MaintenanceStarted")
                && r.iter().any(|x| x == "MaintenanceStopped"),
            "{v}: {r:?}"
        );
        // attached once (to write the data), never by the eviction
        assert_eq!(
            r.iter().filter(|x| *x == "Attached").count(),
            1,
            "{v}: {r:?}"
        );
        let doc = n1.json(&["volume", "get", v]);
        assert!(doc["maintenance"].is_null(), "{doc}");
    }
    let (code, out, _) = n1.cli_code(&["node", "drain-check", "n1"]);
    assert_eq!(code, 0, "{out}");

    // Data: va served all along; the detached ones read after an attach.
    assert!(tools::qemu_equal(&da, &ea), "va differs after eviction");
    for (v, data) in [("v1", &d1), ("vd", &dd)] {
        let (ok, out, err) = n1.cli(&["volume", "attach", v, "--node", "n3"]);
        assert!(ok, "attach {v}: {err}");
        assert!(
            tools::qemu_equal(data, out.trim()),
            "{v} differs after eviction"
        );
        let rs = n1.replicas(v);
        assert!(rs.iter().all(|r| r["mode"] == "RW"), "{v}: {rs:?}");
    }
}

#[test]
fn a_blocked_eviction_is_reported_and_clears_with_capacity_or_cancel() {
    let mut c = Cluster::builder()
        .keep_logs("vigil-node-eviction-logs")
        .on_etcd(&["n1", "n2", "n3"]);
    let (data, _) = create_and_fill(&c, "vb", 3, "n2", 71);
    let (ok, _, err) = c["n1"].cli(&["volume", "detach", "vb"]);
    assert!(ok, "{err}");

    let (ok, _, err) = c["n1"].cli(&["node", "evict", "n1"]);
    assert!(ok, "{err}");
    wait_until("EVICTION_BLOCKED", Duration::from_secs(20), || {
        check(&doctor(&c["n2"]).1, "EVICTION_BLOCKED").is_some()
    });
    let report = doctor(&c["n2"]).1;
    let blocked = check(&report, "EVICTION_BLOCKED").unwrap();
    assert_eq!(blocked["severity"], "warning");
    assert!(
        !blocked["cause"].as_str().unwrap().is_empty()
            && !blocked["fix"].as_str().unwrap().is_empty()
    );
    let item = blocked["items"][0]["message"].as_str().unwrap();
    assert!(
        item.contains("volume vb") && item.contains("no node can take a replacement"),
        "{item}"
    );
    let node = c["n1"].json(&["node", "get", "n1"]);
    assert_eq!(node["eviction"]["phase"], "blocked", "{node}");
    assert_eq!(node["eviction"]["volumes"][0]["state"], "blocked", "{node}");
    assert!(c["n1"].event("node/n1", "EvictionBlocked").is_some());
    // and as a series, from any agent (cluster-wide)
    let page = c["n1"].get("/metrics").unwrap();
    assert_eq!(
        vigil_tests::prom::sample(
            &page,
            "vigil_node_eviction_replicas_left",
            &[("node", "n1"), ("phase", "blocked")]
        ),
        Some(1.0),
        "eviction series"
    );
    // Still three replicas: nothing was dropped.
    assert_eq!(c["n1"].replicas("vb").len(), 3);
    // Draining n1 passes at once even so: vb keeps healthy replicas on n2
    // and n3, so n1 going down makes nothing unavailable (the drain check
    // is about availability; the eviction goes on).
    let (code, out, _) = c["n1"].cli_code(&["node", "drain", "n1", "--timeout", "3s"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 left on it"), "{out}");

    // Capacity arrives: the eviction proceeds and the check clears.
    c.add("n4");
    wait_until("vb moved off n1", Duration::from_secs(120), || {
        let rs = c["n1"].replicas("vb");
        rs.len() == 3 && rs.iter().all(|r| r["node"] != "n1")
    });
    wait_until("EVICTION_BLOCKED cleared", Duration::from_secs(20), || {
        check(&doctor(&c["n2"]).1, "EVICTION_BLOCKED").is_none()
    });
    assert!(c["n1"].event("node/n1", "EvictionCompleted").is_some());
    let doc = c["n1"].json(&["volume", "get", "vb"]);
    assert_eq!(doc["state"], "detached", "{doc}");

    // Evicting n2 is blocked again (n1 refuses, n3 and n4 hold replicas);
    // cancel clears it and drops nothing.
    let (ok, _, err) = c["n1"].cli(&["node", "evict", "n2"]);
    assert!(ok, "{err}");
    wait_until("EVICTION_BLOCKED for n2", Duration::from_secs(20), || {
        check(&doctor(&c["n3"]).1, "EVICTION_BLOCKED").is_some()
    });
    let (ok, _, err) = c["n1"].cli(&["node", "evict", "n2", "--cancel"]);
    assert!(ok, "{err}");
    wait_until(
        "EVICTION_BLOCKED cleared by cancel",
        Duration::from_secs(20),
        || check(&doctor(&c["n3"]).1, "EVICTION_BLOCKED").is_none(),
    );
    wait_until("eviction status cleared", Duration::from_secs(10), || {
        c["n1"].json(&["node", "get", "n2"])["eviction"].is_null()
    });
    assert!(c["n1"].event("node/n2", "EvictionCancelled").is_some());
    assert_eq!(c["n1"].replicas("vb").len(), 3);

    let (ok, out, err) = c["n1"].cli(&["volume", "attach", "vb", "--node", "n3"]);
    assert!(ok, "{err}");
    assert!(tools::qemu_equal(&data, out.trim()), "vb differs");
}
