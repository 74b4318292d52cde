//! Every replica of a volume fails (their agents are killed with `kill -9`),
//! then the agents come back. With `auto-salvage` on (the default) the
//! in-sync replicas (the newest by revision among them) become the source,
//! the others are rebuilt
//! from it, the volume is healthy again with every byte flushed before the
//! crash, and a `Salvaged` event names the replica chosen and why.
//!
//! Two cases, one test each:
//! * the engine's node survives: a 2-replica volume on n2 and n3 attached
//!   on n1 (no scheduling on n1). n3 dies, more data is flushed to n2
//!   alone, n2 dies: the engine has no replica left. With auto-salvage off
//!   the volume stays faulted once they are back; turned on, the engine is
//!   restarted over the replicas and picks n2's.
//! * the engine's node dies too: a 3-replica volume attached on n1. n3
//!   dies, more data is flushed, then n1 and n2 die together. They come
//!   back (n1 last) and the engine starts fresh over n1's and n2's replicas,
//!   leaving n3's out as stale and rebuilding it.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::{Agent, Cluster, tools};

const REGION: usize = 8 << 20;

/// `qemu-io` writes `len` bytes of `file` at `offset` and flushes.
fn write_region(uri: &str, file: &Path, offset: usize) {
    tools::run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("write -q -s {} {offset} {REGION}", file.display()),
            "-c",
            "flush",
            uri,
        ],
    );
}

/// Two seeded regions and the image they make together.
fn data(root: &Path) -> (Vec<PathBuf>, PathBuf) {
    let seed: u64 = std::env::var("VIGIL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    eprintln!("seed {seed} (VIGIL_TEST_SEED to replay)");
    let mut all = Vec::new();
    let regions = (0..2u64)
        .map(|i| {
            let p = root.join(format!("region{i}"));
            tools::random_file(&p, REGION, seed * 10 + i);
            all.extend(std::fs::read(&p).unwrap());
            p
        })
        .collect();
    let expected = root.join("expected");
    std::fs::write(&expected, all).unwrap();
    (regions, expected)
}

fn mode(a: &Agent, volume: &str, replica: &str) -> String {
    a.json(&["volume", "get", volume])["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == replica)
        .map(|r| r["mode"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn events(a: &Agent, object: &str) -> Vec<Value> {
    a.json(&["events", "--object", object])
        .as_array()
        .unwrap()
        .clone()
}

fn salvaged(a: &Agent, volume: &str) -> Option<String> {
    events(a, &format!("volume/{volume}"))
        .iter()
        .rev()
        .find(|e| e["reason"] == "Salvaged")
        .map(|e| e["message"].as_str().unwrap().to_string())
}

/// The repair is complete: healthy, the stale replica rebuilt, doctor
/// healthy, the data flushed before the crash intact.
fn assert_recovered(a: &Agent, volume: &str, stale: &str, uri: &str, expected: &Path) {
    wait_until("volume healthy", Duration::from_secs(90), || {
        a.json(&["volume", "get", volume])["robustness"] == "healthy"
    });
    let reasons: Vec<String> = events(a, &format!("replica/{stale}"))
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r == "RebuildStarted")
            && reasons.iter().any(|r| r == "ReplicaRebuilt"),
        "stale replica {stale} not rebuilt: {reasons:?}"
    );
    wait_until("doctor healthy", Duration::from_secs(30), || {
        doctor(a).0 == 0
    });
    assert!(
        tools::qemu_equal(expected, uri),
        "data differs after salvage"
    );
}

#[test]
fn engine_node_survives_every_replica_failing_and_salvages_the_newest() {
    let mut c = Cluster::on_etcd(&["n1", "n2", "n3"]);
    let (ok, _, err) = c["n1"].cli(&["node", "update", "n1", "--allow-scheduling", "false"]);
    assert!(ok, "node update: {err}");
    let uri = c.create_attached("v", "32MiB", 2, "n1");
    let (on2, on3) = (c.replica_on("v", "n2"), c.replica_on("v", "n3"));
    let (regions, expected) = data(c.root());

    write_region(&uri, &regions[0], 0);
    c.kill9("n3");
    wait_until("n3's replica ERR", Duration::from_secs(15), || {
        mode(&c["n1"], "v", &on3) == "ERR"
    });
    // Flushed to n2 alone: n2's revision is now the newest.
    write_region(&uri, &regions[1], REGION);
    c.kill9("n2");
    let killed = Instant::now();
    wait_until("volume faulted", Duration::from_secs(15), || {
        c["n1"].json(&["volume", "get", "v"])["robustness"] == "faulted"
    });
    let detected = killed.elapsed();
    eprintln!("faulted {detected:?} after the last replica's kill -9");

    // auto-salvage off: the replicas return, the volume stays faulted and
    // the doctor says how to proceed.
    let (ok, _, err) = c["n1"].cli(&["settings", "set", "auto-salvage", "false"]);
    assert!(ok, "settings set: {err}");
    c.start_again("n3");
    c.start_again("n2");
    c["n2"].wait_live();
    c["n3"].wait_live();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        c["n1"].json(&["volume", "get", "v"])["robustness"],
        "faulted",
        "salvaged with auto-salvage off"
    );
    let (_, report) = doctor(&c["n1"]);
    let faulted =
        check(&report, "VOLUME_FAULTED").unwrap_or_else(|| panic!("no VOLUME_FAULTED: {report}"));
    assert!(
        !faulted["cause"].as_str().unwrap().is_empty()
            && faulted["fix"].as_str().unwrap().contains("auto-salvage"),
        "{faulted}"
    );
    assert!(salvaged(&c["n1"], "v").is_none());

    // auto-salvage on: the engine restarts over the replicas, n2's is the
    // source and n3's is rebuilt from it.
    let (ok, _, err) = c["n1"].cli(&["settings", "set", "auto-salvage", "true"]);
    assert!(ok, "settings set: {err}");
    let on = Instant::now();
    let mut message = String::new();
    wait_until("Salvaged event", Duration::from_secs(60), || {
        salvaged(&c["n1"], "v").map(|m| message = m).is_some()
    });
    let salvaged_after = on.elapsed();
    assert!(
        message.contains(&format!("replica {on2} chosen as source"))
            && message.contains("revision")
            && message.contains(&on3),
        "Salvaged names n2's replica {on2} as the source and {on3} as behind: {message}"
    );
    assert_recovered(&c["n1"], "v", &on3, &uri, &expected);
    eprintln!(
        "salvaged {salvaged_after:?} after auto-salvage was turned on, healthy {:?}: {message}",
        on.elapsed()
    );
}

#[test]
fn every_agent_killed_restarts_from_the_newest_replicas() {
    let mut c = Cluster::on_etcd(&["n1", "n2", "n3"]);
    let uri = c.create_attached("v", "32MiB", 3, "n1");
    let (on1, on2, on3) = (
        c.replica_on("v", "n1"),
        c.replica_on("v", "n2"),
        c.replica_on("v", "n3"),
    );
    let (regions, expected) = data(c.root());

    write_region(&uri, &regions[0], 0);
    c.kill9("n3");
    wait_until("n3's replica ERR", Duration::from_secs(15), || {
        mode(&c["n1"], "v", &on3) == "ERR"
    });
    write_region(&uri, &regions[1], REGION);
    c.kill9("n1");
    c.kill9("n2");

    // The replicas' nodes first, the engine's last: its fresh start then
    // opens the in-sync replicas (n1's and n2's; n3's left the set when it
    // failed) and leaves n3's out to be rebuilt.
    c.start_again("n2");
    c.start_again("n3");
    let restarted = Instant::now();
    c.start_again("n1");
    let mut message = String::new();
    wait_until("Salvaged event", Duration::from_secs(60), || {
        salvaged(&c["n1"], "v").map(|m| message = m).is_some()
    });
    let salvaged_after = restarted.elapsed();
    assert!(
        message.contains(&on1)
            && message.contains(&on2)
            && message.contains(&format!("{on3} not in the in-sync set")),
        "Salvaged names n1's and n2's replicas as sources and {on3} as left out (it left the in-sync set when it failed): {message}"
    );
    assert_recovered(&c["n1"], "v", &on3, &uri, &expected);
    eprintln!(
        "salvaged {salvaged_after:?} after the agents restarted, healthy {:?}: {message}",
        restarted.elapsed()
    );
}

/// The first node back after a cluster-wide crash must not serve an older
/// replica: a 2-replica volume on n2 and n3 attached on n1; n3 drops out,
/// more data is flushed to n2 alone, then n1 and n2 die. n1 and n3 come
/// back first: the engine waits (n3's replica was ERR in the last engine;
/// n2's, which was RW, is away for less than node-down-timeout) and says
/// so; when n2 returns the engine starts from n2's replica and rebuilds
/// n3's.
#[test]
fn the_first_node_back_does_not_serve_a_replica_that_had_dropped_out() {
    let mut c = Cluster::on_etcd(&["n1", "n2", "n3"]);
    let (ok, _, err) = c["n1"].cli(&["node", "update", "n1", "--allow-scheduling", "false"]);
    assert!(ok, "node update: {err}");
    let uri = c.create_attached("v", "32MiB", 2, "n1");
    let (on2, on3) = (c.replica_on("v", "n2"), c.replica_on("v", "n3"));
    let (regions, expected) = data(c.root());

    write_region(&uri, &regions[0], 0);
    c.kill9("n3");
    wait_until("n3's replica ERR", Duration::from_secs(15), || {
        mode(&c["n1"], "v", &on3) == "ERR"
    });
    write_region(&uri, &regions[1], REGION);
    c.kill9("n1");
    c.kill9("n2");

    c.start_again("n3");
    c.start_again("n1");
    c["n1"].wait_live();
    c["n3"].wait_live();
    let mut message = String::new();
    wait_until(
        "the engine says it waits for n2",
        Duration::from_secs(30),
        || {
            let v = c["n1"].json(&["volume", "get", "v"]);
            let now = v["message"].as_str().unwrap_or_default().to_string();
            if now != message {
                eprintln!("volume: {v}");
            }
            message = now;
            message.contains(&format!("waiting for replica {on2}"))
        },
    );
    eprintln!("waiting: {message}");
    std::thread::sleep(Duration::from_secs(3));
    let v = c["n1"].json(&["volume", "get", "v"]);
    assert_ne!(v["robustness"], "healthy", "served without n2: {v}");
    assert!(salvaged(&c["n1"], "v").is_none(), "started without n2");

    c.start_again("n2");
    let back = Instant::now();
    wait_until("Salvaged event", Duration::from_secs(60), || {
        salvaged(&c["n1"], "v").map(|m| message = m).is_some()
    });
    assert!(
        message.contains(&format!("replica {on2} chosen as source")),
        "n2's replica {on2} must be the source: {message}"
    );
    assert_recovered(&c["n1"], "v", &on3, &uri, &expected);
    eprintln!("served {:?} after n2 returned: {message}", back.elapsed());
}
