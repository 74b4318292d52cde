//! Snapshot → overwrite → revert reads the old data back; deleting a
//! snapshot merges it and leaves the data unchanged.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use vigil_tests::{Agent, tools};

#[test]
fn snapshot_overwrite_revert_and_merge() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start(root.path(), "n1");
    let b = Agent::start(root.path(), "n2");
    let r1 = a.create_replica("snap-r1", "16MiB");
    let r2 = b.create_replica("snap-r2", "16MiB");
    let e = a.create_engine("snapvol", "16MiB", &[&r1, &r2]);
    let uri = e["nbd_uri"].as_str().unwrap().to_string();

    let old = root.path().join("old");
    tools::random_file(&old, 16 << 20, 11);
    tools::qemu_write(&old, &uri);
    let snap = a.json(&["snapshot", "create", "snapvol", "before"]);
    assert_eq!(snap["name"], "before");

    let new = root.path().join("new");
    tools::random_file(&new, 4 << 20, 12);
    tools::qemu_write(&new, &uri);
    assert!(!tools::qemu_equal(&old, &uri));

    let list = a.json(&["snapshot", "list", "snapvol"]);
    let names: Vec<&str> = list["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"before"), "{names:?}");

    a.json(&["snapshot", "revert", "snapvol", "before"]);
    assert!(
        tools::qemu_equal(&old, &uri),
        "revert did not restore the snapshot's data"
    );

    // Overwrite part again, snapshot twice, delete the older: data unchanged.
    tools::qemu_write(&new, &uri);
    a.json(&["snapshot", "create", "snapvol", "mid"]);
    let expect = root.path().join("expect");
    let mut bytes = std::fs::read(&old).unwrap();
    bytes[..4 << 20].copy_from_slice(&std::fs::read(&new).unwrap());
    std::fs::write(&expect, &bytes).unwrap();
    assert!(tools::qemu_equal(&expect, &uri));
    a.json(&["snapshot", "delete", "snapvol", "before"]);
    assert!(tools::qemu_equal(&expect, &uri), "merge changed the data");
    a.json(&["snapshot", "delete", "snapvol", "mid"]);
    assert!(
        tools::qemu_equal(&expect, &uri),
        "merge into head changed the data"
    );
    let list = a.json(&["snapshot", "list", "snapvol"]);
    assert_eq!(
        list["chain"].as_array().unwrap().len(),
        1,
        "only the head is left: {list}"
    );

    // Both replicas agree and verify clean.
    for (agent, r) in [(&a, "snap-r1"), (&b, "snap-r2")] {
        let v = agent.json(&["replica", "verify", r]);
        assert_eq!(v["ok"], true, "{v}");
    }
}
