//! Two agents on a real etcd, a 2-replica volume attached on n1 and written
//! with qemu-img. Both scrapes pass `promtool check metrics` and show the
//! I/O. Then n2 (holding the second replica) is killed with `kill -9`:
//! within 10 s `vigil doctor -o json` and n1's `/metrics` show the volume
//! degraded and the replica in error with its reason, the doctor exits
//! non-zero and an event records it. When n2 comes back, its replica is
//! rebuilt (not trusted as it was: it missed writes), the checks clear,
//! and the data is intact.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::prom::{promtool_check, sample};
use vigil_tests::{Cluster, tools};

const SIZE: usize = 16 << 20;

fn items(check: &Value) -> Vec<Value> {
    check["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn killed_replica_node_degrades_the_volume_visibly_and_heals_when_it_returns() {
    let mut c = Cluster::on_etcd(&["n1", "n2"]);

    let endpoint = c.create_attached("v", "64MiB", 2, "n1");
    let data = c.root().join("data");
    tools::random_file(&data, SIZE, 11);
    tools::qemu_write(&data, &endpoint);

    // Healthy: doctor exits 0; both scrapes are valid and n1 shows the I/O.
    wait_until("doctor healthy", Duration::from_secs(15), || {
        doctor(&c["n1"]).0 == 0
    });
    for a in [&c["n1"], &c["n2"]] {
        let page = a.get("/metrics").unwrap();
        let complaints = promtool_check(&page);
        assert!(
            complaints.is_empty(),
            "promtool on {}: {complaints}",
            a.name
        );
        assert_eq!(
            sample(&page, "vigil_cluster_nodes_expected", &[]),
            Some(2.0)
        );
        assert_eq!(sample(&page, "vigil_cluster_nodes_ready", &[]), Some(2.0));
    }
    let page = c["n1"].get("/metrics").unwrap();
    let writes = sample(
        &page,
        "vigil_volume_io_bytes_total",
        &[("volume", "v"), ("op", "write")],
    );
    assert!(
        writes.is_some_and(|w| w >= SIZE as f64),
        "write bytes {writes:?} after writing {SIZE}"
    );
    assert_eq!(
        sample(
            &page,
            "vigil_volume_robustness",
            &[("volume", "v"), ("robustness", "healthy")]
        ),
        Some(1.0)
    );
    let replica_on_n2 = c["n1"].json(&["volume", "get", "v"])["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == "n2")
        .map(|r| r["name"].as_str().unwrap().to_string())
        .expect("a replica on n2");

    // n2 dies.
    c.kill9("n2");
    let killed = Instant::now();
    let mut report = Value::Null;
    let mut exit = 0;
    wait_until(
        "doctor shows the volume degraded",
        Duration::from_secs(10),
        || {
            (exit, report) = doctor(&c["n1"]);
            check(&report, "VOLUME_DEGRADED").is_some() && check(&report, "REPLICA_ERROR").is_some()
        },
    );
    let seen_after = killed.elapsed();
    assert_ne!(exit, 0, "doctor exit code with a degraded volume: {report}");
    let degraded = check(&report, "VOLUME_DEGRADED").unwrap();
    assert!(
        items(degraded).iter().any(|i| i["object"] == "volume/v"),
        "{degraded}"
    );
    let rerr = check(&report, "REPLICA_ERROR").unwrap();
    let item = items(rerr)
        .into_iter()
        .find(|i| i["object"] == format!("replica/{replica_on_n2}"))
        .unwrap_or_else(|| panic!("REPLICA_ERROR does not name {replica_on_n2}: {rerr}"));
    let msg = item["message"].as_str().unwrap();
    assert!(
        ["connection_lost", "unreachable", "timeout"]
            .iter()
            .any(|r| msg.contains(r)),
        "REPLICA_ERROR gives no reason: {msg}"
    );
    wait_until(
        "metrics show the degraded volume",
        Duration::from_secs(5),
        || {
            let page = c["n1"].get("/metrics").unwrap_or_default();
            sample(&page, "vigil_health_check", &[("code", "VOLUME_DEGRADED")]) == Some(1.0)
                && sample(
                    &page,
                    "vigil_volume_robustness",
                    &[("volume", "v"), ("robustness", "degraded")],
                ) == Some(1.0)
                && sample(
                    &page,
                    "vigil_replica_mode",
                    &[("replica", &replica_on_n2), ("node", "n2"), ("mode", "ERR")],
                ) == Some(1.0)
        },
    );
    let page = c["n1"].get("/metrics").unwrap();
    assert!(
        sample(
            &page,
            "vigil_replica_faults_total",
            &[("replica", &replica_on_n2)]
        )
        .is_some_and(|n| n >= 1.0),
        "no fault counted for {replica_on_n2}"
    );
    let events = c["n1"].json(&["events", "--object", &format!("replica/{replica_on_n2}")]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "ReplicaFaulted"),
        "no ReplicaFaulted event: {events}"
    );
    eprintln!("degradation visible {seen_after:?} after kill -9");

    // Once the lease lapses, the node being down is the root cause and the
    // replica error is shown under it.
    wait_until("NODE_DOWN reported", Duration::from_secs(20), || {
        doctor(&c["n1"])
            .1
            .pipe(|r| check(&r, "NODE_DOWN").is_some())
    });
    let (_, report) = doctor(&c["n1"]);
    let rerr = check(&report, "REPLICA_ERROR").unwrap();
    assert_eq!(
        rerr["root"], false,
        "REPLICA_ERROR should be under NODE_DOWN: {report}"
    );
    assert_eq!(
        check(&report, "NODE_DOWN").unwrap()["root"],
        true,
        "{report}"
    );
    let page = c["n1"].get("/metrics").unwrap();
    assert_eq!(sample(&page, "vigil_cluster_nodes_ready", &[]), Some(1.0));
    assert_eq!(
        sample(&page, "vigil_node_ready", &[("node", "n2")]),
        Some(0.0)
    );

    // n2 returns: its replica is rebuilt and everything clears.
    c.start_again("n2");
    wait_until("doctor healthy again", Duration::from_secs(60), || {
        doctor(&c["n1"]).0 == 0
    });
    let v = c["n1"].json(&["volume", "get", "v"]);
    assert_eq!(v["robustness"], "healthy", "{v}");
    let events = c["n1"].json(&["events", "--object", &format!("replica/{replica_on_n2}")]);
    let reasons: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(&"RebuildStarted") && reasons.contains(&"ReplicaRebuilt"),
        "events of {replica_on_n2}: {reasons:?}"
    );
    let page = c["n1"].get("/metrics").unwrap();
    assert_eq!(
        sample(&page, "vigil_health_check", &[("code", "VOLUME_DEGRADED")]),
        None
    );
    assert_eq!(
        sample(
            &page,
            "vigil_volume_robustness",
            &[("volume", "v"), ("robustness", "healthy")]
        ),
        Some(1.0)
    );
    assert!(promtool_check(&page).is_empty());
    assert!(
        tools::qemu_equal(&data, &endpoint),
        "data differs after the rebuild"
    );
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}
