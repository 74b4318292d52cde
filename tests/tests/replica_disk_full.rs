//! A replica's disk fills up: n2's disk is a 64 MiB ext4 on a loop device.
//! Two agents on a real etcd; a 2-replica volume attached on n1, written
//! and flushed. Then something else fills n2's filesystem to the last block
//! and the volume is written where it holds no data yet: n2's replica needs
//! new blocks, gets ENOSPC and goes ERR `no_space` while n1 keeps serving
//! (qemu-io writes and reads succeed). `vigil doctor` shows DISK_FULL
//! naming the disk with the REPLICA_ERROR under it, also right after the
//! space is freed (statvfs fine again, ENOSPC recent); a new volume gets no
//! replica there meanwhile. Once writes work again the disk takes replicas,
//! the replica is rebuilt, doctor is healthy and the data is equal.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::faults::LoopExt4;
use vigil_tests::{Agent, Cluster, tools};

fn replica_on<'a>(v: &'a Value, node: &str) -> &'a Value {
    v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == node)
        .unwrap_or_else(|| panic!("no replica on {node}: {v}"))
}

fn has_event(a: &Agent, object: &str, reason: &str) -> bool {
    a.json(&["events", "--object", object])
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["reason"] == reason)
}

/// The DISK_FULL item of `disk` with the REPLICA_ERROR of `replica` caused
/// by it, or why not.
fn full_over_replica(report: &Value, disk: &str, replica: &str) -> Result<String, String> {
    let full = check(report, "DISK_FULL").ok_or("no DISK_FULL")?;
    let item = full["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["object"] == format!("disk/{disk}"))
        .ok_or("DISK_FULL does not name the disk")?;
    let rerr = check(report, "REPLICA_ERROR").ok_or("no REPLICA_ERROR")?;
    let under = rerr["items"].as_array().unwrap().iter().any(|i| {
        i["object"] == format!("replica/{replica}")
            && i["caused_by"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["code"] == "DISK_FULL" && c["object"] == format!("disk/{disk}"))
    });
    if !under {
        return Err(format!("REPLICA_ERROR not under DISK_FULL: {report}"));
    }
    Ok(item["message"].as_str().unwrap().to_string())
}

#[test]
fn a_full_disk_loses_its_replica_takes_no_new_ones_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let ext4 = LoopExt4::create(root.path(), "n2-ext4", 64);
    let disk_dir = ext4.path.join("vigil");
    let disk = disk_dir.to_str().unwrap();
    let c = Cluster::builder()
        .in_dir(root.path())
        .node_args("n2", &["--disk", disk])
        .on_etcd(&["n1", "n2"]);
    let (ok, _, err) = c["n1"].cli(&[
        "settings",
        "set",
        "allow-volume-creation-with-degraded-availability",
        "false",
    ]);
    assert!(ok, "{err}");

    let endpoint = c.create_attached("v", "32MiB", 2, "n1");
    let data = c.root().join("data");
    tools::random_file(&data, 8 << 20, 11);
    tools::qemu_write(&data, &endpoint);
    wait_until("doctor healthy", Duration::from_secs(20), || {
        doctor(&c["n1"]).0 == 0
    });
    let v = c["n1"].json(&["volume", "get", "v"]);
    let r2 = replica_on(&v, "n2");
    let replica = r2["name"].as_str().unwrap().to_string();
    let disk_uuid = r2["disk"].as_str().unwrap().to_string();

    // --- the disk fills up -------------------------------------------------
    ext4.fill("filler", 0);
    eprintln!(
        "{} filled: {} bytes free",
        ext4.image().display(),
        ext4.free_bytes()
    );
    let t0 = Instant::now();
    tools::run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &endpoint,
            "-c",
            "write -P 0x6c 16M 4M",
            "-c",
            "flush",
        ],
    );
    wait_until("n2's replica ERR no_space", Duration::from_secs(10), || {
        let v = c["n1"].json(&["volume", "get", "v"]);
        let r = replica_on(&v, "n2");
        r["mode"] == "ERR" && r["fault"]["reason"] == "no_space"
    });
    eprintln!(
        "detection: replica ERR no_space {:?} after the write",
        t0.elapsed()
    );
    let v = c["n1"].json(&["volume", "get", "v"]);
    assert_eq!(v["robustness"], "degraded", "{v}");
    tools::run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &endpoint,
            "-c",
            "read -P 0x6c 16M 4M",
            "-c",
            "write -P 0x6d 20M 64k",
            "-c",
            "read -P 0x6d 20M 64k",
            "-c",
            "flush",
        ],
    );
    wait_until(
        "the disk's agent records the ENOSPC",
        Duration::from_secs(30),
        || has_event(&c["n1"], &format!("disk/{disk_uuid}"), "DiskNoSpace"),
    );
    eprintln!(
        "detection: DiskNoSpace event {:?} after the write",
        t0.elapsed()
    );
    let (exit, report) = doctor(&c["n1"]);
    assert_eq!(exit, 2, "DISK_FULL is an error: {report}");
    let msg = full_over_replica(&report, &disk_uuid, &replica).unwrap();
    assert!(msg.contains(disk) && msg.contains("no space left"), "{msg}");
    let full = check(&report, "DISK_FULL").unwrap();
    assert_eq!(full["root"], true, "{report}");
    assert!(
        !full["cause"].as_str().unwrap().is_empty()
            && full["fix"].as_str().unwrap().contains("df -h"),
        "{full}"
    );
    assert!(has_event(
        &c["n1"],
        &format!("replica/{replica}"),
        "ReplicaFaulted"
    ));

    // A new volume gets no replica on the full disk, and says why.
    let (ok, out, err) =
        c["n1"].cli(&["volume", "create", "w", "--size", "8MiB", "--replicas", "2"]);
    let said = format!("{out}{err}");
    assert!(!ok, "created with a replica on a full disk: {said}");
    assert!(said.contains(&disk_uuid) && said.contains("full"), "{said}");
    eprintln!("create refused: {said}");

    // --- space is freed ------------------------------------------------------
    ext4.unfill("filler");
    let t1 = Instant::now();
    eprintln!("freed: {} bytes free", ext4.free_bytes());
    // statvfs is fine now, but writes failed moments ago: still DISK_FULL.
    std::thread::sleep(Duration::from_secs(12));
    let (_, report) = doctor(&c["n1"]);
    if t1.elapsed() < Duration::from_secs(50) {
        let msg = full_over_replica(&report, &disk_uuid, &replica).unwrap();
        assert!(msg.contains("no space left"), "{msg}");
    }

    wait_until("n2's replica rebuilt", Duration::from_secs(100), || {
        replica_on(&c["n1"].json(&["volume", "get", "v"]), "n2")["mode"] == "RW"
    });
    eprintln!(
        "repair: replica rebuilt {:?} after space was freed",
        t1.elapsed()
    );
    assert!(has_event(
        &c["n1"],
        &format!("replica/{replica}"),
        "RebuildStarted"
    ));
    assert!(has_event(
        &c["n1"],
        &format!("replica/{replica}"),
        "ReplicaRebuilt"
    ));
    wait_until("doctor healthy again", Duration::from_secs(100), || {
        doctor(&c["n1"]).0 == 0
    });
    eprintln!(
        "repair: doctor healthy {:?} after space was freed",
        t1.elapsed()
    );
    assert!(has_event(
        &c["n1"],
        &format!("disk/{disk_uuid}"),
        "DiskSpaceRecovered"
    ));

    // The disk is schedulable again.
    c["n1"].json(&["volume", "create", "w", "--size", "8MiB", "--replicas", "2"]);
    let g = c["n1"].json(&["volume", "get", "w"]);
    assert_eq!(replica_on(&g, "n2")["disk"], disk_uuid.as_str(), "{g}");

    let mut expect = std::fs::read(&data).unwrap();
    expect.resize((20 << 20) + (64 << 10), 0);
    expect[16 << 20..20 << 20].fill(0x6c);
    expect[20 << 20..].fill(0x6d);
    std::fs::write(&data, &expect).unwrap();
    assert!(tools::qemu_equal(&data, &endpoint), "data differs");
}
