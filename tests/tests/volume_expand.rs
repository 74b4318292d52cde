//! A detached volume grows: every replica is expanded on its node, the data
//! stays, the new range reads as zeros and takes writes; shrinking and
//! expanding an attached volume are refused.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::Duration;

use vigil_tests::agent::wait_until;
use vigil_tests::{Agent, tools};

#[test]
fn a_detached_volume_grows_and_keeps_its_data() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start(root.path(), "n1");
    a.json(&[
        "volume",
        "create",
        "grow",
        "--size",
        "16MiB",
        "--replicas",
        "1",
    ]);
    let v = a.json(&["volume", "attach", "grow"]);
    let uri = v["endpoint"].as_str().unwrap().to_string();
    let data = root.path().join("data");
    tools::random_file(&data, 16 << 20, 7);
    tools::qemu_write(&data, &uri);

    // attached: refused, nothing changes
    let (ok, _, err) = a.cli(&["volume", "expand", "grow", "--size", "32MiB"]);
    assert!(!ok && err.contains("[volume_not_detached]"), "{err}");
    a.json(&["volume", "detach", "grow"]);
    let (ok, _, err) = a.cli(&["volume", "expand", "grow", "--size", "8MiB"]);
    assert!(!ok && err.contains("only grow"), "{err}");

    let v = a.json(&["volume", "expand", "grow", "--size", "32MiB"]);
    assert_eq!(v["size"], 32 << 20, "{v}");
    let v = a.json(&["volume", "attach", "grow"]);
    assert_eq!(v["state"], "attached", "{v}");
    let uri = v["endpoint"].as_str().unwrap().to_string();
    let size = tools::run("nbdinfo", &["--size", &uri]);
    assert_eq!(size.trim(), (32u64 << 20).to_string(), "nbdinfo size");
    // the old data is there, the new half reads zeros and takes writes
    let (ok, out) = tools::try_run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "read -P 0 16M 16M",
            "-c",
            "write -P 0xab 31M 1M",
            "-c",
            "read -P 0xab 31M 1M",
            &uri,
        ],
    );
    assert!(ok && !out.contains("Pattern verification failed"), "{out}");
    let copy = root.path().join("copy");
    tools::run("nbdcopy", &[&uri, copy.to_str().unwrap()]);
    let got = std::fs::read(&copy).unwrap();
    assert_eq!(got.len(), 32 << 20);
    assert!(
        got[..16 << 20] == std::fs::read(&data).unwrap()[..],
        "old data changed"
    );
    assert!(
        got[16 << 20..31 << 20].iter().all(|&b| b == 0),
        "new range not zero"
    );
    assert!(
        got[31 << 20..].iter().all(|&b| b == 0xab),
        "write in new range lost"
    );
    wait_until(
        "replica reports the new size",
        Duration::from_secs(5),
        || {
            let v = a.json(&["replica", "list"]);
            v[0]["info"]["size"] == 32 << 20
        },
    );
}
