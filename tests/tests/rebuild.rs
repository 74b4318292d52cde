//! Rebuild: a new replica joins WO, receives only allocated data, becomes
//! RW, and can then serve alone.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::Duration;

use vigil_tests::agent::wait_until;
use vigil_tests::{Agent, tools};

#[test]
fn rebuild_moves_only_allocated_data_and_new_replica_serves_alone() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start(root.path(), "n1");
    let b = Agent::start(root.path(), "n2");
    let mut c = Agent::start(root.path(), "n3");
    let r1 = a.create_replica("rb-r1", "256MiB");
    let r2 = b.create_replica("rb-r2", "256MiB");
    let e = c.create_engine("rb", "256MiB", &[&r1]);
    let uri = e["nbd_uri"].as_str().unwrap().to_string();

    // 8 MiB of data in a 256 MiB volume, in two places, across a snapshot.
    let d1 = root.path().join("d1");
    tools::random_file(&d1, 4 << 20, 21);
    tools::run(
        "qemu-io",
        &["-f", "raw", &uri, "-c", "write -P 0x33 100M 4M"],
    );
    tools::qemu_write(&d1, &uri);
    c.json(&["snapshot", "create", "rb", "s1"]);
    tools::run(
        "qemu-io",
        &["-f", "raw", &uri, "-c", "write -P 0x44 200M 4M"],
    );

    let shown = c.json(&["engine", "add-replica", "rb", &r2]);
    assert!(
        shown["replicas"][1]["mode"] == "WO" || shown["replicas"][1]["mode"] == "RW",
        "{shown}"
    );
    wait_until("new replica RW", Duration::from_secs(60), || {
        c.engine("rb")["replicas"][1]["mode"] == "RW"
    });
    let shown = c.engine("rb");
    let progress = &shown["replicas"][1]["rebuild"];
    let total = progress["bytes_total"].as_u64().unwrap();
    let done = progress["bytes_done"].as_u64().unwrap();
    eprintln!("rebuild moved {done} of {total} bytes for 12 MiB written in a 256 MiB volume");
    assert_eq!(done, total);
    assert!(total >= 12 << 20, "must move all written data: {total}");
    assert!(
        total <= 13 << 20,
        "must move only allocated data, moved {total}"
    );

    // Writes while WO landed too: now let r2 serve alone.
    drop(a); // kill n1, the only other replica
    wait_until("r1 ERR", Duration::from_secs(10), || {
        c.engine("rb")["replicas"][0]["mode"] == "ERR"
    });
    tools::run(
        "qemu-io",
        &[
            "-f",
            "raw",
            &uri,
            "-c",
            "read -P 0x33 100M 4M",
            "-c",
            "read -P 0x44 200M 4M",
            "-c",
            "read -P 0 104M 4M",
        ],
    );
    let expect = root.path().join("expect");
    std::fs::write(&expect, std::fs::read(&d1).unwrap()).unwrap();
    let back = root.path().join("back");
    tools::run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &uri,
            back.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&back).unwrap()[..4 << 20] == std::fs::read(&d1).unwrap()[..]);
    c.stop();
}
