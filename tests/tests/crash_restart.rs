//! Flushed writes survive `kill -9` of every agent and a restart.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use vigil_tests::{Agent, tools};

#[test]
fn flushed_writes_survive_kill9_of_every_agent() {
    let root = tempfile::tempdir().unwrap();
    let mut agents: Vec<Agent> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Agent::start(root.path(), n))
        .collect();
    let urls: Vec<String> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| a.create_replica(&format!("crash-r{i}"), "32MiB"))
        .collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let e = agents[0].create_engine("crash", "32MiB", &refs);
    let data = root.path().join("data");
    tools::random_file(&data, 32 << 20, 31);
    // qemu-img convert flushes before it exits successfully.
    tools::qemu_write(&data, e["nbd_uri"].as_str().unwrap());

    for a in agents.iter_mut() {
        a.kill9();
    }
    for a in agents.iter_mut() {
        a.restart();
    }
    // Replica addresses are stable across restarts (remembered ports).
    for (i, a) in agents.iter().enumerate() {
        let v = a.json(&["replica", "show", &format!("crash-r{i}")]);
        assert_eq!(v["url"], urls[i]);
    }
    let e = agents[0].create_engine("crash", "32MiB", &refs);
    assert_eq!(e["robustness"], "healthy", "{e}");
    assert!(
        tools::qemu_equal(&data, e["nbd_uri"].as_str().unwrap()),
        "flushed data lost"
    );
    // Each replica on its own holds the data.
    for (i, url) in urls.iter().enumerate() {
        agents[0].json(&["engine", "delete", "crash"]);
        let e = agents[0].create_engine("crash", "32MiB", &[url]);
        assert!(
            tools::qemu_equal(&data, e["nbd_uri"].as_str().unwrap()),
            "replica {i} lost flushed data"
        );
    }
}
