//! A replica's disk starts returning I/O errors (a FUSE passthrough under
//! n2's disk that fails every write and fsync with EIO on demand). Two
//! agents on a real etcd; a 2-replica volume attached on n1, written and
//! flushed. With EIO on: the engine marks n2's replica ERR `io_error` and
//! keeps serving from n1 (qemu-io writes and reads succeed); n2's agent
//! marks the disk failing, `vigil doctor` shows DISK_FAILING naming the
//! disk with the REPLICA_ERROR under it; a new volume gets no replica there
//! (the create names the disk). With EIO off: the disk takes replicas
//! again, the replica is rebuilt, doctor is healthy and the data is equal.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::faults::EioFs;
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

#[test]
fn a_disk_returning_eio_loses_its_replica_takes_no_new_ones_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let fs = EioFs::mount(root.path(), "n2-disk");
    let disk = fs.path.to_str().unwrap();
    let c = Cluster::builder()
        .in_dir(root.path())
        .node_args("n2", &["--disk", disk])
        .on_etcd(&["n1", "n2"]);
    // A create that cannot place every replica is refused, so the refusal
    // lists every node's reason.
    let (ok, _, err) = c["n1"].cli(&[
        "settings",
        "set",
        "allow-volume-creation-with-degraded-availability",
        "false",
    ]);
    assert!(ok, "{err}");

    let endpoint = c.create_attached("v", "32MiB", 2, "n1");
    let data = c.root().join("data");
    tools::random_file(&data, 8 << 20, 7);
    tools::qemu_write(&data, &endpoint);
    wait_until("doctor healthy", Duration::from_secs(20), || {
        doctor(&c["n1"]).0 == 0
    });
    let v = c["n1"].json(&["volume", "get", "v"]);
    let r2 = replica_on(&v, "n2");
    let replica = r2["name"].as_str().unwrap().to_string();
    let disk_uuid = r2["disk"].as_str().unwrap().to_string();
    assert_eq!(r2["disk_path"], disk, "{v}");

    // --- the disk fails --------------------------------------------------
    fs.fail_writes(true);
    let t0 = Instant::now();
    // Writes keep succeeding: the engine drops n2 and carries on with n1.
    tools::run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &endpoint,
            "-c",
            "write -P 0x5a 16M 1M",
            "-c",
            "flush",
        ],
    );
    wait_until("n2's replica ERR io_error", Duration::from_secs(10), || {
        let v = c["n1"].json(&["volume", "get", "v"]);
        let r = replica_on(&v, "n2");
        r["mode"] == "ERR" && r["fault"]["reason"] == "io_error"
    });
    let replica_err = t0.elapsed();
    eprintln!("detection: replica ERR io_error {replica_err:?} after EIO was switched on");
    let v = c["n1"].json(&["volume", "get", "v"]);
    let msg = replica_on(&v, "n2")["fault"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains("Input/output error"), "{v}");
    assert_eq!(v["robustness"], "degraded", "{v}");
    tools::run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &endpoint,
            "-c",
            "read -P 0x5a 16M 1M",
            "-c",
            "write -P 0x5b 17M 64k",
            "-c",
            "read -P 0x5b 17M 64k",
            "-c",
            "flush",
        ],
    );

    let mut report = Value::Null;
    let mut exit = 0;
    wait_until("doctor shows DISK_FAILING", Duration::from_secs(30), || {
        (exit, report) = doctor(&c["n1"]);
        check(&report, "DISK_FAILING").is_some()
    });
    eprintln!(
        "detection: DISK_FAILING {:?} after EIO was switched on",
        t0.elapsed()
    );
    assert_eq!(exit, 2, "DISK_FAILING is an error: {report}");
    let failing = check(&report, "DISK_FAILING").unwrap();
    assert_eq!(failing["root"], true, "{report}");
    assert!(
        failing["cause"].as_str().unwrap().contains("I/O error")
            && failing["fix"].as_str().unwrap().contains("smartctl"),
        "{failing}"
    );
    let item = &failing["items"][0];
    assert_eq!(item["object"], format!("disk/{disk_uuid}"), "{failing}");
    let text = item["message"].as_str().unwrap();
    assert!(text.contains(disk) && text.contains("n2"), "{text}");
    let rerr = check(&report, "REPLICA_ERROR").unwrap();
    let ri = rerr["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["object"] == format!("replica/{replica}"))
        .unwrap_or_else(|| panic!("{rerr}"));
    assert!(
        ri["caused_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["code"] == "DISK_FAILING" && c["object"] == format!("disk/{disk_uuid}")),
        "REPLICA_ERROR not under DISK_FAILING: {report}"
    );
    let (_, human, _) = c["n1"].cli_code(&["doctor"]);
    assert!(
        human.find("DISK_FAILING").unwrap() < human.find("REPLICA_ERROR").unwrap(),
        "{human}"
    );
    assert!(has_event(
        &c["n1"],
        &format!("replica/{replica}"),
        "ReplicaFaulted"
    ));
    assert!(has_event(
        &c["n1"],
        &format!("disk/{disk_uuid}"),
        "DiskFailing"
    ));

    // A new volume gets no replica on the failing disk, and says why.
    let (ok, out, err) = c["n1"].cli(&[
        "volume",
        "create",
        "w",
        "--size",
        "16MiB",
        "--replicas",
        "2",
    ]);
    let said = format!("{out}{err}");
    assert!(!ok, "created with a replica on a failing disk: {said}");
    assert!(
        said.contains(&disk_uuid) && said.contains("returns I/O errors since"),
        "{said}"
    );
    eprintln!("create refused: {said}");

    // --- the disk works again -------------------------------------------
    fs.fail_writes(false);
    let t1 = Instant::now();
    wait_until("n2's replica rebuilt", Duration::from_secs(100), || {
        replica_on(&c["n1"].json(&["volume", "get", "v"]), "n2")["mode"] == "RW"
    });
    eprintln!(
        "repair: replica rebuilt {:?} after EIO was switched off",
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
        "repair: doctor healthy {:?} after EIO was switched off",
        t1.elapsed()
    );
    assert!(has_event(
        &c["n1"],
        &format!("disk/{disk_uuid}"),
        "DiskRecovered"
    ));

    // The disk is schedulable again.
    c.create_volume("w", "16MiB", 2);
    let g = c["n1"].json(&["volume", "get", "w"]);
    assert_eq!(replica_on(&g, "n2")["disk"], disk_uuid.as_str(), "{g}");

    // Everything flushed before and during the fault is there.
    let mut expect = std::fs::read(&data).unwrap();
    expect.resize((17 << 20) + (64 << 10), 0);
    expect[16 << 20..17 << 20].fill(0x5a);
    expect[17 << 20..].fill(0x5b);
    std::fs::write(&data, &expect).unwrap();
    assert!(tools::qemu_equal(&data, &endpoint), "data differs");
}
