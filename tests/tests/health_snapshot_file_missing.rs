//! A snapshot layer file removed from one replica's directory (the
//! reported case: "Failed to get file … volume-snap-….img size"). Two
//! agents on a real etcd, a 2-replica volume attached and written, a
//! snapshot taken, then `volume-snap-s1.img` deleted under the replica on
//! n2. The replica's agent finds it, the engine takes that replica out of
//! service while the other keeps serving, and `vigil doctor` shows ONE
//! root cause — SNAPSHOT_FILE_MISSING naming the file — with the replica
//! error and the degraded volume listed as its consequences, not as
//! causes of their own.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::prom::sample;
use vigil_tests::{Cluster, tools};

#[test]
fn missing_snapshot_file_is_the_one_root_cause_and_the_volume_keeps_serving() {
    let c = Cluster::on_etcd(&["n1", "n2"]);
    let endpoint = c.create_attached("v", "32MiB", 2, "n1");
    let data = c.root().join("data");
    tools::random_file(&data, 8 << 20, 5);
    tools::qemu_write(&data, &endpoint);
    let (ok, _, err) = c["n1"].cli(&["volume", "snapshot", "create", "v", "s1"]);
    assert!(ok, "snapshot: {err}");
    wait_until("doctor healthy", Duration::from_secs(15), || {
        doctor(&c["n1"]).0 == 0
    });

    let v = c["n1"].json(&["volume", "get", "v"]);
    let r2 = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == "n2")
        .unwrap()
        .clone();
    let replica = r2["name"].as_str().unwrap().to_string();
    let file = PathBuf::from(r2["disk_path"].as_str().unwrap())
        .join("replicas")
        .join(&replica)
        .join("volume-snap-s1.img");
    assert!(file.exists(), "{} not found", file.display());
    std::fs::remove_file(&file).unwrap();
    let file = file.display().to_string();

    let mut report = Value::Null;
    let mut exit = 0;
    wait_until(
        "doctor shows the missing file",
        Duration::from_secs(30),
        || {
            (exit, report) = doctor(&c["n1"]);
            check(&report, "SNAPSHOT_FILE_MISSING").is_some()
                && check(&report, "VOLUME_DEGRADED").is_some()
        },
    );
    assert_eq!(exit, 2, "SNAPSHOT_FILE_MISSING is an error: {report}");
    let missing = check(&report, "SNAPSHOT_FILE_MISSING").unwrap();
    assert_eq!(missing["root"], true, "{report}");
    let items = missing["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i["object"] == format!("replica/{replica}")
                && i["message"].as_str().unwrap().contains(&file)),
        "SNAPSHOT_FILE_MISSING does not name {file}: {missing}"
    );
    let degraded = check(&report, "VOLUME_DEGRADED").unwrap();
    assert_eq!(
        degraded["root"], false,
        "VOLUME_DEGRADED shown as a second root cause: {report}"
    );
    let roots: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["root"] == true)
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(roots, ["SNAPSHOT_FILE_MISSING"], "{report}");

    // The human doctor prints the root first with the volume under it.
    let (_, text, _) = c["n1"].cli_code(&["doctor"]);
    let root_at = text.find("SNAPSHOT_FILE_MISSING").unwrap();
    let degraded_at = text.find("VOLUME_DEGRADED").unwrap();
    assert!(root_at < degraded_at, "{text}");

    // The engine drops the damaged replica and serves from the other.
    wait_until(
        "the engine drops the damaged replica",
        Duration::from_secs(10),
        || c["n1"].json(&["volume", "get", "v"])["robustness"] == "degraded",
    );
    let v = c["n1"].json(&["volume", "get", "v"]);
    assert_eq!(v["robustness"], "degraded", "{v}");
    let r2 = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == replica.as_str())
        .unwrap();
    assert_eq!(r2["mode"], "ERR", "{v}");
    assert_eq!(r2["integrity"]["kind"], "missing", "{v}");
    assert!(tools::qemu_equal(&data, &endpoint), "data differs");
    let page = c["n1"].get("/metrics").unwrap();
    assert_eq!(
        sample(
            &page,
            "vigil_health_check",
            &[("code", "SNAPSHOT_FILE_MISSING"), ("severity", "error")]
        ),
        Some(1.0)
    );
    let events = c["n1"].json(&["events", "--object", &format!("replica/{replica}")]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "ReplicaFilesDamaged"),
        "{events}"
    );
}
