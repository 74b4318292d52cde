//! The revision counter tells the newest replica apart: a replica that
//! missed writes (its agent was down) is left out as `stale` when the engine
//! starts again, and comes back in sync after a rebuild.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::Duration;

use vigil_tests::agent::wait_until;
use vigil_tests::{Agent, tools};

#[test]
fn a_replica_that_missed_writes_is_stale_until_rebuilt() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start(root.path(), "n1");
    let mut b = Agent::start(root.path(), "n2");
    let r1 = a.create_replica("st-r1", "16MiB");
    let r2 = b.create_replica("st-r2", "16MiB");
    let e = a.create_engine("st", "16MiB", &[&r1, &r2]);
    let uri = e["nbd_uri"].as_str().unwrap().to_string();
    let old = root.path().join("old");
    tools::random_file(&old, 16 << 20, 41);
    tools::qemu_write(&old, &uri);

    b.kill9(); // r2 misses what follows
    let new = root.path().join("new");
    tools::random_file(&new, 16 << 20, 42);
    tools::qemu_write(&new, &uri);
    b.restart();

    a.json(&["engine", "delete", "st"]);
    let e = a.create_engine("st", "16MiB", &[&r1, &r2]);
    assert_eq!(e["robustness"], "degraded", "{e}");
    assert_eq!(e["replicas"][1]["mode"], "ERR");
    assert_eq!(e["replicas"][1]["fault"]["reason"], "stale", "{e}");
    assert!(
        tools::qemu_equal(&new, &uri),
        "the engine must serve the newest data"
    );

    a.json(&["engine", "add-replica", "st", &r2]);
    wait_until("r2 rebuilt", Duration::from_secs(30), || {
        a.engine("st")["replicas"][1]["mode"] == "RW"
    });
    // After the rebuild both carry the same revision: a restart keeps both RW.
    a.json(&["engine", "delete", "st"]);
    let e = a.create_engine("st", "16MiB", &[&r1, &r2]);
    assert_eq!(e["robustness"], "healthy", "{e}");
    a.json(&["engine", "delete", "st"]);
    let e = a.create_engine("st", "16MiB", &[&r2]);
    assert!(
        tools::qemu_equal(&new, e["nbd_uri"].as_str().unwrap()),
        "rebuilt replica alone holds the newest data"
    );
}
