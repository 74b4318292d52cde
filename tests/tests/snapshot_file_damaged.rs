//! A snapshot layer file damaged on one replica (the reported case:
//! "Failed to get file … volume-snap-….img size", then "monitoring failed,
//! mark as ERR", then "no backend available"). Three agents on a real
//! etcd, a 3-replica volume attached on n1, data written with qemu-img, a
//! snapshot `s1` taken, more data written over part of it and flushed.
//! Then `volume-snap-s1.img` is damaged under one replica:
//!
//! * deleted, then (same volume) deleted again just before a snapshot is
//!   taken — the snapshot operation finds it;
//! * truncated, then deleted while the replica's agent is stopped — found
//!   when the agent opens it at start;
//! * bytes flipped at an allocated offset, same size — found only by the
//!   periodic checksum comparison across replicas, by majority.
//!
//! Each time: the detection time is printed; the replica is named ERR with
//! the file and what is wrong; SNAPSHOT_FILE_MISSING / _CORRUPT with cause
//! and fix; qemu-img reads the volume while it is damaged; the replica is
//! reset, rebuilt in full, RW again and its chain verified (events); the
//! doctor exits 0 and the data compares equal.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::{Cluster, tools};

const FIRST: usize = 8 << 20;
const SECOND: usize = 4 << 20;

/// The cluster and its volume v, attached on n1, with a snapshot s1.
struct Snapshotted {
    cluster: Cluster,
    endpoint: String,
    /// What the volume must read: FIRST bytes of seed 1, the first SECOND
    /// of them overwritten with seed 2 after the snapshot.
    expected: PathBuf,
}

impl std::ops::Deref for Snapshotted {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for Snapshotted {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

impl Snapshotted {
    fn start() -> Snapshotted {
        Snapshotted::start_with(3)
    }

    /// `replicas` agents and a volume with as many replicas.
    fn start_with(replicas: usize) -> Snapshotted {
        let cluster = Cluster::on_etcd(&["n1", "n2", "n3"][..replicas]);
        let n1 = &cluster["n1"];
        let root = cluster.root();
        // Off until the case that needs it: the file checks must find the
        // first two kinds of damage, not the comparison.
        n1.json(&["settings", "set", "integrity-check-interval", "0"]);
        let endpoint = cluster.create_attached("v", "32MiB", replicas, "n1");
        let first = root.join("first");
        tools::random_file(&first, FIRST, 1);
        tools::qemu_write(&first, &endpoint);
        let (ok, _, err) = n1.cli(&["volume", "snapshot", "create", "v", "s1"]);
        assert!(ok, "snapshot: {err}");
        let second = root.join("second");
        tools::random_file(&second, SECOND, 2);
        // qemu-img flushes before it exits.
        tools::qemu_write(&second, &endpoint);
        let mut expected = std::fs::read(&first).unwrap();
        expected[..SECOND].copy_from_slice(&std::fs::read(&second).unwrap());
        let expected_path = root.join("expected");
        std::fs::write(&expected_path, expected).unwrap();
        assert!(tools::qemu_equal(&expected_path, &endpoint), "data differs");
        wait_until("doctor healthy", Duration::from_secs(30), || {
            doctor(n1).0 == 0
        });
        Snapshotted {
            cluster,
            endpoint,
            expected: expected_path,
        }
    }

    /// The replica on `node`: its name and its s1 layer file.
    fn replica_on(&self, node: &str) -> (String, PathBuf) {
        let v = self["n1"].json(&["volume", "get", "v"]);
        let r = v["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == node)
            .unwrap_or_else(|| panic!("no replica on {node}: {v}"))
            .clone();
        let name = r["name"].as_str().unwrap().to_string();
        let file = PathBuf::from(r["disk_path"].as_str().unwrap())
            .join("replicas")
            .join(&name)
            .join("volume-snap-s1.img");
        (name, file)
    }

    fn replica(&self, name: &str) -> Value {
        let v = self["n1"].json(&["volume", "get", "v"]);
        v["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn events(&self, replica: &str) -> Vec<Value> {
        self["n1"]
            .json(&["events", "--object", &format!("replica/{replica}")])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits for the damage to show, then for the repair; asserts what the
    /// user sees on the way. `before` is the number of events of the
    /// replica before the damage.
    fn detect_and_heal(&self, d: &Damage<'_>, damaged_at: Instant, before: usize) {
        let n1 = &self["n1"];
        let file = d.file.display().to_string();
        let object = format!("replica/{}", d.replica);

        // Detection: the health check names the replica, the file and the
        // kind of damage. (Before every replica has reported its checksums
        // after the interval was set, the two that have — one of them the
        // damaged one — can disagree with no majority; the check names the
        // file then too, correctly, until the third report decides.)
        let mut report = Value::Null;
        wait_until(
            &format!("{} shows the {} file", d.code, d.kind),
            Duration::from_secs(90),
            || {
                report = doctor(n1).1;
                check(&report, d.code).is_some_and(|c| {
                    c["items"].as_array().unwrap().iter().any(|i| {
                        let message = i["message"].as_str().unwrap();
                        i["object"] == object && message.contains(&file) && message.contains(d.kind)
                    })
                })
            },
        );
        println!(
            "{}: {} detected after {:?}",
            d.what,
            d.code,
            damaged_at.elapsed()
        );
        let c = check(&report, d.code).unwrap();
        assert!(!c["cause"].as_str().unwrap().is_empty(), "{c}");
        assert!(!c["fix"].as_str().unwrap().is_empty(), "{c}");
        let item = c["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["object"] == object)
            .unwrap();
        assert!(
            item["message"].as_str().unwrap().contains(d.kind),
            "{} does not say {}: {item}",
            d.code,
            d.kind
        );

        // Served throughout: once the damaged replica is out of service
        // (a silently changed block could be read from it before), the
        // others answer while it waits for its repair.
        wait_until(
            &format!("{}: replica out of service", d.what),
            Duration::from_secs(30),
            || {
                let ev = self.events(&d.replica);
                ev[before.min(ev.len())..]
                    .iter()
                    .any(|e| e["reason"] == "ReplicaFaulted" || e["reason"] == "ReplicaReset")
            },
        );
        assert!(
            tools::qemu_equal(&self.expected, &self.endpoint),
            "{}: data differs while a replica is damaged",
            d.what
        );

        // Taken out of service, reset, rebuilt in full, verified.
        let mut events = Vec::new();
        wait_until(
            &format!("{}: replica reset, rebuilt and verified", d.what),
            Duration::from_secs(120),
            || {
                events = self.events(&d.replica);
                events = events.split_off(before.min(events.len()));
                ["ReplicaReset", "ReplicaVerified"]
                    .iter()
                    .all(|r| events.iter().any(|e| e["reason"] == *r))
            },
        );
        let says = |reason: &str, text: &[&str]| {
            events.iter().any(|e| {
                e["reason"] == reason
                    && text
                        .iter()
                        .all(|t| e["message"].as_str().unwrap_or("").contains(t))
            })
        };
        let all = serde_json::to_string_pretty(&events).unwrap();
        if let Some(fault) = d.fault {
            assert!(
                says("ReplicaFaulted", &["checksum_mismatch", &file, fault]),
                "{}: no ERR naming {file} ({fault}): {all}",
                d.what
            );
        }
        assert!(
            says("ReplicaReset", &[&file, d.kind]),
            "{}: no reset naming {file}: {all}",
            d.what
        );
        assert!(says("RebuildStarted", &[]), "{}: no rebuild: {all}", d.what);
        assert!(says("ReplicaVerified", &[]), "{}: {all}", d.what);
        for reason in d.also {
            assert!(says(reason, &[]), "{}: no {reason} event: {all}", d.what);
        }
        println!(
            "{}: repaired (reset, rebuilt, verified) after {:?}",
            d.what,
            damaged_at.elapsed()
        );

        wait_until(
            &format!("{}: replica RW and doctor healthy", d.what),
            Duration::from_secs(60),
            || self.replica(&d.replica)["mode"] == "RW" && doctor(n1).0 == 0,
        );
        assert!(
            self.replica(&d.replica)["integrity"].is_null(),
            "{}",
            self.replica(&d.replica)
        );
        assert!(d.file.exists(), "{} not rebuilt", d.file.display());
        assert!(
            tools::qemu_equal(&self.expected, &self.endpoint),
            "{}: data differs after the repair",
            d.what
        );
    }
}

struct Damage<'a> {
    what: &'a str,
    replica: String,
    file: PathBuf,
    code: &'a str,
    /// The word the health item and the reset event use.
    kind: &'a str,
    /// Text the ERR reason must carry besides the file, when the engine
    /// marks the replica ERR for the damage.
    fault: Option<&'a str>,
    /// Further events expected.
    also: &'a [&'a str],
}

/// Inverts 4 KiB at `offset` of `file` (same size); run twice, restores it.
fn flip(file: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let mut block = vec![0u8; 4096];
    f.read_exact_at(&mut block, offset).unwrap();
    for b in &mut block {
        *b = !*b;
    }
    f.write_all_at(&block, offset).unwrap();
    f.sync_all().unwrap();
    assert_eq!(f.metadata().unwrap().len(), len, "size changed");
}

fn seed() -> u64 {
    let seed = std::env::var("VIGIL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (replay with VIGIL_TEST_SEED={seed})");
    seed
}

fn delete(file: &Path) {
    assert!(file.exists(), "{} not found", file.display());
    std::fs::remove_file(file).unwrap();
}

#[test]
fn deleted_snapshot_file_is_found_by_the_file_check_and_by_a_snapshot() {
    let c = Snapshotted::start();

    // (a) deleted: found by the periodic file check.
    let (replica, file) = c.replica_on("n2");
    let before = c.events(&replica).len();
    delete(&file);
    let at = Instant::now();
    c.detect_and_heal(
        &Damage {
            what: "deleted",
            replica: replica.clone(),
            file: file.clone(),
            code: "SNAPSHOT_FILE_MISSING",
            kind: "missing",
            fault: Some("missing"),
            also: &["ReplicaFilesDamaged", "DamagedReplicaFailed"],
        },
        at,
        before,
    );

    // (e) deleted again, then a snapshot: the operation checks the files
    // first, takes the damaged replica out and succeeds on the others.
    let (replica, file) = c.replica_on("n3");
    let before = c.events(&replica).len();
    delete(&file);
    let at = Instant::now();
    let (ok, _, err) = c["n1"].cli(&["volume", "snapshot", "create", "v", "s2"]);
    assert!(ok, "snapshot with one damaged replica: {err}");
    let mut faulted = Value::Null;
    wait_until(
        "the damaged replica marked ERR",
        Duration::from_secs(30),
        || {
            let ev = c.events(&replica);
            faulted = ev[before.min(ev.len())..]
                .iter()
                .find(|e| e["reason"] == "ReplicaFaulted")
                .cloned()
                .unwrap_or(Value::Null);
            !faulted.is_null()
        },
    );
    let by_snapshot = faulted["message"]
        .as_str()
        .is_some_and(|m| m.contains("(checksum_mismatch: snapshot:"));
    println!(
        "snapshot with a deleted layer: ERR after {:?} ({}): {}",
        at.elapsed(),
        if by_snapshot {
            "found by the snapshot operation"
        } else {
            "the file check got there first"
        },
        faulted["message"]
    );
    c.detect_and_heal(
        &Damage {
            what: "deleted before a snapshot",
            replica,
            file,
            code: "SNAPSHOT_FILE_MISSING",
            kind: "missing",
            fault: Some(""),
            also: &[],
        },
        at,
        before,
    );
    let snaps = c["n1"].json(&["volume", "snapshot", "list", "v"]);
    assert!(snaps.to_string().contains("s2"), "{snaps}");
}

#[test]
fn truncated_snapshot_file_is_found_by_the_file_check_and_at_open() {
    let mut c = Snapshotted::start();

    // (b) truncated to half its size.
    let (replica, file) = c.replica_on("n3");
    let before = c.events(&replica).len();
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 2).unwrap();
    drop(f);
    let at = Instant::now();
    c.detect_and_heal(
        &Damage {
            what: "truncated",
            replica,
            file,
            code: "SNAPSHOT_FILE_CORRUPT",
            kind: "truncated",
            fault: Some("truncated"),
            also: &["ReplicaFilesDamaged", "DamagedReplicaFailed"],
        },
        at,
        before,
    );

    // (d) deleted while the replica's agent is stopped: found when it
    // opens the replica at start, which it then does not serve.
    let (replica, file) = c.replica_on("n2");
    let before = c.events(&replica).len();
    c.stop("n2");
    delete(&file);
    c.start_again("n2");
    let at = Instant::now();
    c["n2"].wait_live();
    c.detect_and_heal(
        &Damage {
            what: "deleted while stopped",
            replica,
            file,
            code: "SNAPSHOT_FILE_MISSING",
            kind: "missing",
            fault: None,
            also: &["ReplicaFilesDamaged"],
        },
        at,
        before,
    );
    let log = c["n2"].log_text();
    assert!(log.contains("replica damaged; not served"), "{log}");
}

#[test]
fn flipped_bytes_in_a_snapshot_are_found_by_checksum_majority() {
    let c = Snapshotted::start();
    let seed = seed();
    // Which replica and which allocated 4 KiB block of s1.
    let node = ["n2", "n3"][(seed % 2) as usize];
    let offset = ((seed / 2) % (FIRST as u64 / 4096)) * 4096;
    let (replica, file) = c.replica_on(node);
    let before = c.events(&replica).len();
    c["n1"].json(&["settings", "set", "integrity-check-interval", "3"]);
    flip(&file, offset);
    println!(
        "flipped 4096 bytes at {offset} of {} on {node}",
        file.display()
    );
    let at = Instant::now();
    c.detect_and_heal(
        &Damage {
            what: "flipped",
            replica: replica.clone(),
            file,
            code: "SNAPSHOT_FILE_CORRUPT",
            kind: "corrupt",
            fault: Some("checksum differs from the majority"),
            also: &["LayerChecksumMismatch", "DamagedReplicaFailed"],
        },
        at,
        before,
    );
    let ev = c.events(&replica);
    let found = ev[before..]
        .iter()
        .find(|e| e["reason"] == "LayerChecksumMismatch")
        .unwrap();
    println!("flipped: {}", found["message"]);
}

/// Two replicas that disagree: no majority, so neither is picked (no
/// reset); the health check names both. Putting the bytes back (what an
/// operator does after comparing them) clears it.
#[test]
fn two_replicas_that_disagree_are_reported_not_repaired() {
    let c = Snapshotted::start_with(2);
    let seed = seed();
    let offset = (seed % (FIRST as u64 / 4096)) * 4096;
    let (replica, file) = c.replica_on("n2");
    let (other, _) = c.replica_on("n1");
    let before = c.events(&replica).len();
    c["n1"].json(&["settings", "set", "integrity-check-interval", "3"]);
    flip(&file, offset);
    let at = Instant::now();
    let mut report = Value::Null;
    wait_until(
        "no-majority disagreement shown",
        Duration::from_secs(60),
        || {
            report = doctor(&c["n1"]).1;
            check(&report, "SNAPSHOT_FILE_CORRUPT").is_some_and(|ch| {
                let items = ch["items"].as_array().unwrap();
                [&replica, &other].iter().all(|r| {
                    items.iter().any(|i| {
                        i["object"] == format!("replica/{r}")
                            && i["message"].as_str().unwrap().contains("no majority")
                    })
                })
            })
        },
    );
    println!("no majority: detected after {:?}", at.elapsed());
    let ch = check(&report, "SNAPSHOT_FILE_CORRUPT").unwrap();
    assert!(!ch["cause"].as_str().unwrap().is_empty(), "{ch}");
    assert!(!ch["fix"].as_str().unwrap().is_empty(), "{ch}");
    let ev = c["n1"]
        .json(&["events", "--object", "volume/v"])
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        ev.iter().any(|e| e["reason"] == "LayerChecksumMismatch"
            && e["message"].as_str().unwrap().contains("no majority")),
        "{ev:?}"
    );
    // Neither is picked: both stay RW, nothing is reset.
    std::thread::sleep(Duration::from_secs(8));
    for r in [&replica, &other] {
        assert_eq!(c.replica(r)["mode"], "RW", "{}", c.replica(r));
        assert!(
            !c.events(r).iter().any(|e| e["reason"] == "ReplicaReset"),
            "{r} reset without a majority"
        );
    }
    assert!(c.events(&replica).len() >= before);

    flip(&file, offset);
    wait_until("the disagreement clears", Duration::from_secs(60), || {
        doctor(&c["n1"]).0 == 0
    });
    assert!(tools::qemu_equal(&c.expected, &c.endpoint), "data differs");
}
