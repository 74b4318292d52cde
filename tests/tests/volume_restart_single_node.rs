//! The README walk on one node with the embedded store: create a volume,
//! attach it, write to it; the agent is stopped (SIGTERM) or crashes
//! (`kill -9`) and starts again: the volume is attached again with no
//! command, at the same endpoint, with the data intact.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::Duration;

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::{Agent, Cluster, tools};

const SIZE: usize = 64 << 20;

/// Waits until the volume is attached again and its endpoint serves NBD.
fn wait_served_again(a: &Agent, name: &str, endpoint: &str) -> Value {
    let mut last = Value::Null;
    wait_until(
        &format!("volume {name} attached and served at {endpoint}"),
        Duration::from_secs(30),
        || {
            last = a.json(&["volume", "get", name]);
            last["state"] == "attached"
                && last["endpoint"] == endpoint
                && tools::try_run("qemu-img", &["info", "-f", "raw", endpoint]).0
        },
    );
    last
}

#[test]
fn attached_volume_is_served_again_after_sigterm_and_after_kill9() {
    let mut c = Cluster::on_embedded("n1");

    let v = c.create_volume("v", "64MiB", 1);
    assert_eq!(v["replicas"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["replicas"][0]["node"], "n1", "{v}");

    // `volume attach` prints the NBD URI and nothing else.
    let (ok, out, err) = c["n1"].cli(&["volume", "attach", "v"]);
    assert!(ok, "attach failed: {err}");
    let endpoint = out.trim().to_string();
    assert!(
        endpoint.starts_with("nbd://127.0.0.1:") && endpoint.ends_with("/v"),
        "attach printed {out:?}"
    );
    let v = c["n1"].json(&["volume", "get", "v"]);
    assert_eq!(v["state"], "attached", "{v}");
    assert_eq!(v["robustness"], "healthy", "{v}");
    assert_eq!(v["attached_node"], "n1", "{v}");
    assert_eq!(v["endpoint"], endpoint.as_str(), "{v}");
    assert_eq!(v["replicas"][0]["mode"], "RW", "{v}");

    let data = c.root().join("data");
    tools::random_file(&data, SIZE, 7);
    tools::qemu_write(&data, &endpoint);
    assert!(
        tools::qemu_equal(&data, &endpoint),
        "data differs right after writing"
    );

    // A clean stop, then a start: no attach command is given.
    c.stop("n1");
    assert!(!c["n1"].is_running());
    c.start_again("n1");
    let v = wait_served_again(&c["n1"], "v", &endpoint);
    assert_eq!(v["attached_node"], "n1", "{v}");
    assert!(
        tools::qemu_equal(&data, &endpoint),
        "data lost across SIGTERM + start"
    );
    wait_until(
        "volume healthy after SIGTERM",
        Duration::from_secs(10),
        || c["n1"].json(&["volume", "get", "v"])["robustness"] == "healthy",
    );

    // A crash, then a start.
    c.kill9("n1");
    c.start_again("n1");
    let v = wait_served_again(&c["n1"], "v", &endpoint);
    assert_eq!(v["attached_node"], "n1", "{v}");
    assert!(
        tools::qemu_equal(&data, &endpoint),
        "data lost across kill -9 + start"
    );
    wait_until(
        "volume healthy after kill -9",
        Duration::from_secs(10),
        || c["n1"].json(&["volume", "get", "v"])["robustness"] == "healthy",
    );

    // Still an ordinary volume: it detaches and is deleted.
    let v = c["n1"].json(&["volume", "detach", "v"]);
    assert_eq!(v["state"], "detached", "{v}");
    let (ok, _, err) = c["n1"].cli(&["volume", "delete", "v"]);
    assert!(ok, "delete failed: {err}");
    assert_eq!(c["n1"].json(&["volume", "list"]), serde_json::json!([]));
}
