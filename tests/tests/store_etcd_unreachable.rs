//! An agent whose etcd is not up yet does not exit: it says the store is
//! unreachable and that it retries, and becomes ready once etcd answers.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::Duration;

use vigil_tests::agent::free_port;
use vigil_tests::{Agent, Etcd};

#[test]
fn agent_waits_for_an_unreachable_etcd_and_serves_once_it_answers() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let store = format!("etcd://127.0.0.1:{port}");
    let mut a = Agent::start_unready(
        root.path(),
        "n1",
        "tok",
        &["--store", &store, "--label", "zone=a"],
    );

    std::thread::sleep(Duration::from_secs(3));
    assert!(
        a.is_running(),
        "agent exited while etcd was unreachable:\n{}",
        a.log_text()
    );
    let log = a.log_text();
    assert!(
        log.lines().any(|l| l.starts_with("vigil agent: store ")
            && l.contains(&format!("127.0.0.1:{port} unavailable"))
            && l.contains("Connection refused")
            && l.contains("; retrying in ")),
        "the agent does not say the store is unreachable and it retries:\n{log}"
    );

    // Meanwhile the API port is closed: a client is told at once, it does
    // not hang.
    let asked = std::time::Instant::now();
    let (ok, _, err) = a.cli(&["volume", "list"]);
    assert!(!ok && err.contains("cannot reach the agent"), "{err}");
    assert!(asked.elapsed() < Duration::from_secs(5), "the CLI hung");

    let _etcd = Etcd::start_on(root.path(), port);
    a.wait_ready();
    a.wait_live();
    let nodes = a.json(&["node", "list"]);
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(nodes[0]["name"], "n1", "{nodes}");
    assert_eq!(nodes[0]["labels"]["zone"], "a", "{nodes}");
    assert_eq!(nodes[0]["store"], "etcd", "{nodes}");

    let v = a.json(&[
        "volume",
        "create",
        "v",
        "--size",
        "16MiB",
        "--replicas",
        "1",
    ]);
    assert_eq!(v["state"], "detached", "{v}");
    assert_eq!(v["replicas"][0]["node"], "n1", "{v}");
    let (ok, out, err) = a.cli(&["volume", "attach", "v"]);
    assert!(ok, "{err}");
    assert!(out.trim().starts_with("nbd://127.0.0.1:"), "{out}");
}
