//! Three agents, a replica on each, one engine over all three. Data written
//! with qemu-img survives `kill -9` of a replica's agent, and `engine show`
//! says which replica went ERR and why.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::Duration;

use vigil_tests::agent::wait_until;
use vigil_tests::{Agent, tools};

#[test]
fn losing_a_replica_loses_no_data_and_says_why() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start(root.path(), "n1");
    let b = Agent::start(root.path(), "n2");
    let mut c = Agent::start(root.path(), "n3");
    let r1 = a.create_replica("vol-r1", "64MiB");
    let r2 = b.create_replica("vol-r2", "64MiB");
    let r3 = c.create_replica("vol-r3", "64MiB");
    let engine = a.create_engine("vol", "64MiB", &[&r1, &r2, &r3]);
    let uri = engine["nbd_uri"].as_str().unwrap().to_string();
    assert_eq!(engine["robustness"], "healthy");
    assert_eq!(
        engine["replicas"][0]["local"], true,
        "the replica on the engine's node is reached in-process"
    );

    let data1 = root.path().join("data1");
    tools::random_file(&data1, 48 << 20, 1);
    tools::qemu_write(&data1, &uri);

    c.kill9();

    let data2 = root.path().join("data2");
    tools::random_file(&data2, 48 << 20, 2);
    tools::qemu_write(&data2, &uri);
    assert!(
        tools::qemu_equal(&data2, &uri),
        "data read back differs after losing a replica"
    );

    wait_until("replica on n3 marked ERR", Duration::from_secs(10), || {
        a.engine("vol")["replicas"][2]["mode"] == "ERR"
    });
    let shown = a.engine("vol");
    assert_eq!(shown["robustness"], "degraded");
    let fault = &shown["replicas"][2]["fault"];
    let reason = fault["reason"].as_str().unwrap();
    assert!(
        ["connection_lost", "timeout"].contains(&reason),
        "unexpected reason {reason}: {shown}"
    );
    assert!(!fault["last_error"].as_str().unwrap().is_empty());
    assert_eq!(shown["replicas"][0]["mode"], "RW");
    assert_eq!(shown["replicas"][1]["mode"], "RW");

    // The table form names the replica, its mode and reason.
    let (ok, table, _) = a.cli(&["engine", "show", "vol"]);
    assert!(ok);
    assert!(
        table.contains(&r3) && table.contains("ERR") && table.contains(reason),
        "{table}"
    );
}

#[test]
fn with_no_replica_left_the_client_gets_eio_and_show_says_why() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start(root.path(), "n1");
    let mut b = Agent::start(root.path(), "n2");
    let r = b.create_replica("lone-r", "16MiB");
    let engine = a.create_engine("lone", "16MiB", &[&r]);
    let uri = engine["nbd_uri"].as_str().unwrap().to_string();
    b.kill9();
    let (ok, out) = tools::try_run("qemu-io", &["-f", "raw", &uri, "-c", "write -P 0x5 0 64k"]);
    assert!(
        !ok || out.contains("error") || out.contains("Input/output"),
        "write should fail: {out}"
    );
    wait_until("engine faulted", Duration::from_secs(10), || {
        a.engine("lone")["robustness"] == "faulted"
    });
    let shown = a.engine("lone");
    let why = shown["unavailable_reason"].as_str().unwrap();
    assert!(why.contains(&r), "reason must name the replica: {why}");
    assert!(why.contains("ERR"), "{why}");
    assert!(!why.contains("no backend available"));
}
