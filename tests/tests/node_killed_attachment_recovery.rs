//! A node dies (`kill -9` of its agent) while a volume is attached on it.
//! Two agents on a real etcd; a 2-replica volume (one replica per node)
//! attached on n1 and written and flushed with qemu-img; n1 is killed.
//! NODE_DOWN is raised once its lease lapses, and the volume follows
//! `volume-attachment-recovery-policy`, one test per policy:
//!
//! - `never`: still attached to n1 well past node-down-timeout, the doctor
//!   says so and names the fix; attaching on n2 is refused naming the
//!   policy; `vigil volume detach v` (asked of n2) completes at once;
//! - `wait`: attaching on n2 before node-down-timeout is refused naming the
//!   policy and the time left; the volume is detached by itself after it;
//! - `immediate`: `vigil volume attach v --node n2` succeeds at once, long
//!   before node-down-timeout.
//!
//! Then the volume is attached on n2 and reads back what was written. When
//! n1 returns it runs no engine for v, the volume stays where the last
//! request put it, n1's replica is rebuilt, and the doctor is healthy.
//!
//! The data is random from a seed printed at the start; `VIGIL_SEED`
//! replays one.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::prom::sample;
use vigil_tests::{Cluster, tools};

const SIZE: usize = 16 << 20;

/// Two agents and a volume attached on n1 holding `data`.
struct Attached {
    cluster: Cluster,
    data: PathBuf,
    replica_on_n1: String,
}

impl std::ops::Deref for Attached {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for Attached {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

fn seed() -> u64 {
    let seed = std::env::var("VIGIL_SEED")
        .ok()
        .map(|s| s.trim().parse().expect("VIGIL_SEED is a u64"))
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with VIGIL_SEED={seed})");
    seed
}

/// Starts the cluster with `policy` and `node-down-timeout` = `timeout`
/// seconds, attaches v on n1 and writes seeded data through n1's endpoint.
fn cluster(policy: &str, timeout: u64) -> Attached {
    let cluster = Cluster::on_etcd(&["n1", "n2"]);
    let n2 = &cluster["n2"];
    for (name, value) in [
        ("volume-attachment-recovery-policy", policy.to_string()),
        ("node-down-timeout", timeout.to_string()),
    ] {
        let (ok, _, err) = n2.cli(&["settings", "set", name, &value]);
        assert!(ok, "settings set {name} {value}: {err}");
    }
    cluster.create_volume("v", "64MiB", 2);
    let replica_on_n1 = cluster.replica_on("v", "n1");
    let uri = cluster.attach("v", "n1");
    let data = cluster.root().join("data");
    tools::random_file(&data, SIZE, seed());
    // qemu-img flushes before it exits: this is what must survive.
    tools::qemu_write(&data, &uri);
    wait_until("doctor healthy", Duration::from_secs(30), || {
        doctor(n2).0 == 0
    });
    Attached {
        cluster,
        data,
        replica_on_n1,
    }
}

/// The VOLUME_FAULTED item of v, if present.
fn faulted_item(report: &Value) -> Option<Value> {
    check(report, "VOLUME_FAULTED")?["items"]
        .as_array()?
        .iter()
        .find(|i| i["object"] == "volume/v")
        .cloned()
}

/// Kills n1 and waits for NODE_DOWN; returns when it was killed. Asserts
/// that the volume is reported faulted because of it, with `policy_words`
/// in the explanation.
fn kill_n1(c: &mut Attached, policy_words: &str) -> Instant {
    c.kill9("n1");
    let killed = Instant::now();
    wait_until("NODE_DOWN for n1", Duration::from_secs(40), || {
        check(&doctor(&c["n2"]).1, "NODE_DOWN").is_some()
    });
    eprintln!(
        "NODE_DOWN raised {:.1} s after kill -9 of n1",
        killed.elapsed().as_secs_f64()
    );
    let (exit, report) = doctor(&c["n2"]);
    assert_ne!(exit, 0, "{report}");
    let down = check(&report, "NODE_DOWN").unwrap();
    assert!(
        down["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["object"] == "node/n1"),
        "{down}"
    );
    assert!(
        down["cause"].as_str().unwrap().contains("crashed")
            && down["fix"].as_str().unwrap().contains("restart the agent"),
        "NODE_DOWN gives its cause and fix: {down}"
    );
    // The volume is faulted because of it, and the item says what the
    // policy will do (written by the agent acting for the volume).
    let mut item = Value::Null;
    wait_until(
        "VOLUME_FAULTED under NODE_DOWN explains the policy",
        Duration::from_secs(15),
        || {
            item = faulted_item(&doctor(&c["n2"]).1).unwrap_or(Value::Null);
            item["message"]
                .as_str()
                .is_some_and(|m| m.contains(policy_words))
        },
    );
    assert!(
        item["caused_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["code"] == "NODE_DOWN" && r["object"] == "node/n1"),
        "VOLUME_FAULTED not caused by NODE_DOWN: {item}"
    );
    eprintln!("doctor: {}", item["message"]);
    killed
}

/// `vigil volume get v` on n2.
fn volume(c: &Attached) -> Value {
    c["n2"].json(&["volume", "get", "v"])
}

/// Events about volume v, as (reason, message).
fn volume_events(c: &Attached) -> Vec<(String, String)> {
    c["n2"]
        .json(&["events", "--object", "volume/v"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The event `reason` about v; panics with every event when missing.
fn event(c: &Attached, reason: &str) -> String {
    let events = volume_events(c);
    events
        .iter()
        .find(|(r, _)| r == reason)
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("no {reason} event for v: {events:?}"))
}

/// Attaching v on n2 is refused while n1 is down; returns the message.
fn attach_on_n2_refused(c: &Attached) -> String {
    let (ok, out, err) = c["n2"].cli(&["volume", "attach", "v", "--node", "n2"]);
    assert!(!ok, "attach on n2 should be refused: {out}");
    assert!(err.contains("n1"), "the refusal names the down node: {err}");
    let v = volume(c);
    assert_eq!(v["attached_node"], "n1", "{v}");
    err
}

/// Attaches v on n2 (it is detached); returns the endpoint.
fn attach_on_n2(c: &Attached) -> String {
    let (ok, out, err) = c["n2"].cli(&["volume", "attach", "v", "--node", "n2"]);
    assert!(ok, "attach on n2: {err}");
    out.trim().to_string()
}

/// Data read back on n2; n1 returns: it runs no engine for v, v stays
/// attached on n2, n1's replica is rebuilt and the doctor is healthy.
fn n1_returns(c: &mut Attached, endpoint: &str) {
    let v = volume(c);
    assert_eq!(v["state"], "attached", "{v}");
    assert_eq!(v["attached_node"], "n2", "{v}");
    assert!(
        tools::qemu_equal(&c.data, endpoint),
        "data read from n2 differs from what was written on n1"
    );
    c.start_again("n1");
    c["n1"].wait_live();
    let back = Instant::now();
    wait_until(
        "doctor healthy with n1 back",
        Duration::from_secs(90),
        || doctor(&c["n2"]).0 == 0,
    );
    eprintln!(
        "healthy again {:.1} s after n1 returned",
        back.elapsed().as_secs_f64()
    );
    // A few rounds of n1 later it still serves nothing for v.
    std::thread::sleep(Duration::from_secs(3));
    let engines = c["n1"].json(&["engine", "list"]);
    assert!(
        !engines.as_array().unwrap().iter().any(|e| e["name"] == "v"),
        "n1 runs an engine for v: {engines}"
    );
    let v = volume(c);
    assert_eq!(v["state"], "attached", "{v}");
    assert_eq!(v["attached_node"], "n2", "{v}");
    assert_eq!(v["robustness"], "healthy", "{v}");
    let events = c["n2"].json(&[
        "events",
        "--object",
        &format!("replica/{}", c.replica_on_n1),
    ]);
    let reasons: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"RebuildStarted") && reasons.contains(&"ReplicaRebuilt"),
        "events of {}: {reasons:?}",
        c.replica_on_n1
    );
    assert!(
        tools::qemu_equal(&c.data, endpoint),
        "data differs after n1's replica was rebuilt"
    );
}

#[test]
fn policy_never_keeps_the_volume_on_the_dead_node_until_the_operator_detaches() {
    let timeout = 5;
    let mut c = cluster("never", timeout);
    kill_n1(&mut c, "policy is never");
    let item = faulted_item(&doctor(&c["n2"]).1).unwrap();
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("vigil volume detach v"),
        "the item names the fix: {item}"
    );
    let refused = attach_on_n2_refused(&c);
    assert!(refused.contains("policy is never"), "{refused}");
    // Well past node-down-timeout: nothing moved.
    std::thread::sleep(Duration::from_secs(3 * timeout));
    let v = volume(&c);
    assert_eq!(v["state"], "attached", "{v}");
    assert_eq!(v["attached_node"], "n1", "{v}");
    assert!(faulted_item(&doctor(&c["n2"]).1).is_some());

    // The operator detaches: done at once, though n1 cannot act.
    let (ok, _, err) = c["n2"].cli(&["volume", "detach", "v"]);
    assert!(ok, "detach while n1 is down: {err}");
    let v = volume(&c);
    assert_eq!(v["state"], "detached", "{v}");
    assert!(v["attached_node"].is_null(), "{v}");
    let msg = event(&c, "DetachedFromDownNode");
    assert!(msg.contains("n1") && msg.contains("as requested"), "{msg}");

    let endpoint = attach_on_n2(&c);
    n1_returns(&mut c, &endpoint);
}

#[test]
fn policy_wait_detaches_the_volume_after_node_down_timeout() {
    // Long enough that the refusal below comes before it on a slow box.
    let timeout = 15;
    let mut c = cluster("wait", timeout);
    let killed = kill_n1(&mut c, "policy is wait");
    let refused = attach_on_n2_refused(&c);
    assert!(
        refused.contains("policy is wait") && refused.contains(" s; attach it then"),
        "the refusal names the policy and the time left: {refused}"
    );
    eprintln!("refused: {}", refused.trim());

    wait_until(
        "v detached by the policy",
        Duration::from_secs(timeout + 40),
        || volume(&c)["state"] == "detached",
    );
    eprintln!(
        "detached by policy wait {:.1} s after kill -9 (node-down-timeout {timeout} s, lease 10 s)",
        killed.elapsed().as_secs_f64()
    );
    let msg = event(&c, "DetachedFromDownNode");
    assert!(msg.contains("n1") && msg.contains("policy wait"), "{msg}");
    let page = c["n2"].get("/metrics").unwrap();
    assert_eq!(
        sample(
            &page,
            "vigil_remediations_total",
            &[("action", "detach_from_dead_node")]
        ),
        Some(1.0),
        "the remediation is counted by the agent that acted (n2, the only one ready)"
    );

    let endpoint = attach_on_n2(&c);
    n1_returns(&mut c, &endpoint);
}

#[test]
fn policy_immediate_moves_the_volume_when_another_node_asks() {
    // Far longer than the test: the move cannot be the timeout's doing.
    let timeout = 600;
    let mut c = cluster("immediate", timeout);
    let killed = kill_n1(&mut c, "policy is immediate");
    let endpoint = attach_on_n2(&c);
    eprintln!(
        "attached on n2 {:.1} s after kill -9 of n1 (node-down-timeout {timeout} s)",
        killed.elapsed().as_secs_f64()
    );
    let msg = event(&c, "MovedFromDownNode");
    assert!(
        msg.contains("from n1") && msg.contains("to n2") && msg.contains("immediate"),
        "{msg}"
    );
    n1_returns(&mut c, &endpoint);
}
