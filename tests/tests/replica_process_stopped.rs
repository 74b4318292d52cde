//! A replica's agent stops answering (`kill -STOP`), then comes back
//! (`kill -CONT`). Three agents on a real etcd, a 3-replica volume attached
//! on n1, the third replica on n3. Twice: once with qemu-io writing to the
//! volume, once idle. The engine must mark n3's replica ERR within 2 s
//! under load and within 10 s idle (the measured times are printed); the
//! doctor names the replica with its reason while n3 is frozen. After
//! `kill -CONT` the replica is not trusted as it was (it missed writes): it
//! is rebuilt (RebuildStarted, then ReplicaRebuilt; WO, then RW), the doctor
//! is healthy again and the volume holds what was written before the freeze
//! and during it.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::{Agent, Cluster, tools};

const MIB: usize = 1 << 20;
/// Each phase writes its own 16 MiB region: before the freeze, during it.
const REGION: usize = 16 * MIB;
const UNDER_LOAD_BOUND: Duration = Duration::from_secs(2);
const IDLE_BOUND: Duration = Duration::from_secs(10);

/// `qemu-io` writes `len` bytes of `file` (from its start) at `offset`, then flushes.
fn write_region(uri: &str, file: &Path, offset: usize, len: usize) -> (bool, String) {
    tools::try_run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("write -q -s {} {offset} {len}", file.display()),
            "-c",
            "flush",
            uri,
        ],
    )
}

/// n3's replica as n1's engine sees it (`GET /v1/engines/v`).
fn engine_replica(n1: &Agent, replica: &str) -> Option<Value> {
    let body = n1.get("/v1/engines/v")?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["replicas"]
        .as_array()?
        .iter()
        .find(|r| r["address"].as_str().is_some_and(|a| a.ends_with(replica)))
        .cloned()
}

fn mode_of(n1: &Agent, replica: &str) -> String {
    engine_replica(n1, replica)
        .and_then(|r| r["mode"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Polls (every 20 ms) until n3's replica is ERR in n1's engine.
fn time_until_err(n1: &Agent, replica: &str, give_up: Duration) -> Duration {
    let stopped = Instant::now();
    while stopped.elapsed() < give_up {
        if mode_of(n1, replica) == "ERR" {
            return stopped.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("replica {replica} not ERR {give_up:?} after SIGSTOP");
}

fn reasons_of(n1: &Agent, replica: &str) -> Vec<String> {
    n1.json(&["events", "--object", &format!("replica/{replica}")])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect()
}

/// While n3 is frozen the doctor names its replica, with the reason, under
/// a check that has its cause and fix.
fn assert_doctor_names(n1: &Agent, replica: &str) {
    let mut report = Value::Null;
    wait_until(
        "doctor reports the frozen replica",
        Duration::from_secs(10),
        || {
            report = doctor(n1).1;
            check(&report, "REPLICA_ERROR").is_some()
        },
    );
    let rerr = check(&report, "REPLICA_ERROR").unwrap();
    let item = rerr["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["object"] == format!("replica/{replica}"))
        .unwrap_or_else(|| panic!("REPLICA_ERROR does not name {replica}: {rerr}"));
    let msg = item["message"].as_str().unwrap();
    assert!(msg.contains("timeout"), "no timeout reason: {msg}");
    // The cause: the node still renews its lease at first (the network or
    // the replica server is at fault), or its lease lapsed (node down).
    let root = ["BACKEND_UNREACHABLE", "NODE_DOWN"]
        .iter()
        .find_map(|c| check(&report, c))
        .unwrap_or_else(|| panic!("no BACKEND_UNREACHABLE or NODE_DOWN: {report}"));
    for c in [rerr, root] {
        assert!(
            !c["cause"].as_str().unwrap().is_empty() && !c["fix"].as_str().unwrap().is_empty(),
            "check without cause or fix: {c}"
        );
    }
}

/// `kill -CONT`: the replica comes back only through a rebuild.
fn thaw_and_rebuild(n1: &Agent, n3: &Agent, replica: &str) -> Duration {
    let before = reasons_of(n1, replica)
        .iter()
        .filter(|r| *r == "ReplicaRebuilt")
        .count();
    n3.signal(libc::SIGCONT);
    let thawed = Instant::now();
    let mut modes = vec!["ERR".to_string()];
    wait_until(
        "the thawed replica rebuilt and RW",
        Duration::from_secs(60),
        || {
            let m = mode_of(n1, replica);
            if !m.is_empty() && modes.last() != Some(&m) {
                modes.push(m.clone());
            }
            m == "RW"
        },
    );
    let took = thawed.elapsed();
    // Never straight back to RW: the slot went through a rebuild (WO, or
    // at least a finished rebuild recorded when WO was too short to see).
    let rebuild = engine_replica(n1, replica).unwrap()["rebuild"].clone();
    assert!(
        modes.iter().any(|m| m == "WO") || rebuild["finished_unix"].is_u64(),
        "replica back to RW without a rebuild: modes {modes:?}, rebuild {rebuild}"
    );
    wait_until("ReplicaRebuilt event", Duration::from_secs(15), || {
        reasons_of(n1, replica)
            .iter()
            .filter(|r| *r == "ReplicaRebuilt")
            .count()
            > before
    });
    let reasons = reasons_of(n1, replica);
    let started = reasons.iter().rposition(|r| r == "RebuildStarted");
    let rebuilt = reasons.iter().rposition(|r| r == "ReplicaRebuilt");
    assert!(
        started.is_some() && rebuilt.is_some(),
        "events of {replica}: {reasons:?}"
    );
    eprintln!("modes seen after SIGCONT: {modes:?}; RW after {took:?}");
    took
}

#[test]
fn frozen_replica_is_err_within_bounds_and_rebuilt_when_it_thaws() {
    let mut c = Cluster::on_etcd(&["n1", "n2", "n3"]);
    let uri = c.create_attached("v", "64MiB", 3, "n1");
    let replica = c["n1"].json(&["volume", "get", "v"])["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == "n3")
        .map(|r| r["name"].as_str().unwrap().to_string())
        .expect("a replica on n3");

    // The whole expected image: four regions, each written in one phase.
    let seed: u64 = std::env::var("VIGIL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    eprintln!("seed {seed} (VIGIL_TEST_SEED to replay)");
    let regions: Vec<_> = (0..4u64)
        .map(|i| {
            let p = c.root().join(format!("region{i}"));
            tools::random_file(&p, REGION, seed * 10 + i);
            p
        })
        .collect();
    let expected = c.root().join("expected");
    let mut all = Vec::new();
    for p in &regions {
        all.extend(std::fs::read(p).unwrap());
    }
    std::fs::write(&expected, &all).unwrap();

    // Phase 1, under load: region 0 flushed before the freeze; region 1
    // rewritten in a loop by qemu-io while n3 is frozen.
    let (ok, text) = write_region(&uri, &regions[0], 0, REGION);
    assert!(ok, "qemu-io: {text}");
    wait_until("doctor healthy", Duration::from_secs(20), || {
        doctor(&c["n1"]).0 == 0
    });
    let stop_load = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop_load, rounds) = (stop_load.clone(), rounds.clone());
        let (uri, file) = (uri.clone(), regions[1].clone());
        std::thread::spawn(move || {
            while !stop_load.load(Ordering::Relaxed) {
                let (ok, text) = write_region(&uri, &file, REGION, REGION);
                assert!(ok, "qemu-io under load: {text}");
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    wait_until("load running", Duration::from_secs(30), || {
        rounds.load(Ordering::Relaxed) >= 1
    });
    c.freeze("n3");
    let under_load = time_until_err(&c["n1"], &replica, Duration::from_secs(30));
    eprintln!("under load: n3's replica ERR {under_load:?} after SIGSTOP");
    assert_doctor_names(&c["n1"], &replica);
    // Writes go on without n3 (the stalled ones are released by the I/O
    // timeout at the latest).
    let at_err = rounds.load(Ordering::Relaxed);
    wait_until(
        "writes continue without n3",
        Duration::from_secs(30),
        || rounds.load(Ordering::Relaxed) >= at_err + 2,
    );
    stop_load.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let rebuilt_load = thaw_and_rebuild(&c["n1"], &c["n3"], &replica);

    // Phase 2, idle: region 2 flushed, nothing flowing while n3 is frozen,
    // region 3 written (and flushed) once it is ERR.
    let (ok, text) = write_region(&uri, &regions[2], 2 * REGION, REGION);
    assert!(ok, "qemu-io: {text}");
    wait_until("doctor healthy", Duration::from_secs(30), || {
        doctor(&c["n1"]).0 == 0
    });
    c.freeze("n3");
    let idle = time_until_err(&c["n1"], &replica, Duration::from_secs(60));
    eprintln!("idle: n3's replica ERR {idle:?} after SIGSTOP");
    assert_doctor_names(&c["n1"], &replica);
    let (ok, text) = write_region(&uri, &regions[3], 3 * REGION, REGION);
    assert!(ok, "qemu-io while n3 is frozen: {text}");
    let rebuilt_idle = thaw_and_rebuild(&c["n1"], &c["n3"], &replica);

    wait_until("doctor healthy at the end", Duration::from_secs(30), || {
        doctor(&c["n1"]).0 == 0
    });
    let v = c["n1"].json(&["volume", "get", "v"]);
    assert_eq!(v["robustness"], "healthy", "{v}");
    assert!(
        tools::qemu_equal(&expected, &uri),
        "data differs after the rebuilds"
    );
    eprintln!(
        "detection: {under_load:?} under load (bound {UNDER_LOAD_BOUND:?}), {idle:?} idle (bound {IDLE_BOUND:?}); \
         rebuilt and RW {rebuilt_load:?} / {rebuilt_idle:?} after SIGCONT"
    );
    assert!(
        under_load <= UNDER_LOAD_BOUND,
        "ERR after {under_load:?} under load"
    );
    assert!(idle <= IDLE_BOUND, "ERR after {idle:?} idle");
}
