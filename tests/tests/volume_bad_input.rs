//! Bad volume and settings requests get a clear error with a stable code,
//! and change nothing: `volume list` and the settings read the same after.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use serde_json::Value;
use vigil_tests::{Agent, Cluster};

/// Runs a CLI call that must fail; checks it printed `error: ... [code]`
/// on stderr and nothing on stdout; returns stderr.
fn refused(a: &Agent, args: &[&str], code: &str) -> String {
    let (ok, out, err) = a.cli(args);
    assert!(!ok, "vigil {args:?} should fail; it printed {out}");
    assert!(out.is_empty(), "vigil {args:?}: stdout on failure: {out}");
    assert!(
        err.starts_with("error: ") && err.contains(&format!("[{code}]")),
        "vigil {args:?}: expected code [{code}], got: {err}"
    );
    err
}

/// What `volume list` shows, reduced to what a refused call must not change.
fn volumes(a: &Agent) -> Vec<(String, String, usize)> {
    a.json(&["volume", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
                v["replicas"].as_array().unwrap().len(),
            )
        })
        .collect()
}

fn settings(a: &Agent) -> Value {
    a.json(&["settings", "list"])
}

#[test]
fn bad_volume_requests_are_refused_with_a_code_and_change_nothing() {
    let c = Cluster::on_embedded("n1");
    c.create_volume("keep", "16MiB", 1);
    let before = volumes(&c["n1"]);
    assert_eq!(
        before,
        vec![("keep".to_string(), "detached".to_string(), 1)]
    );

    let too_long = "a".repeat(53);
    let just_right = "b".repeat(52);
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        // names
        (
            vec!["volume", "create", "Upper", "--size", "16MiB"],
            "invalid_name",
            "Upper",
        ),
        (
            vec!["volume", "create", &too_long, "--size", "16MiB"],
            "invalid_name",
            "the limit is 52",
        ),
        (
            vec!["volume", "create", "", "--size", "16MiB"],
            "invalid_name",
            "empty",
        ),
        (
            vec!["volume", "create", "has space", "--size", "16MiB"],
            "invalid_name",
            "has space",
        ),
        (
            vec!["volume", "create", "a/b", "--size", "16MiB"],
            "invalid_name",
            "outside [a-z0-9._-]",
        ),
        // sizes
        (
            vec!["volume", "create", "s", "--size", "0"],
            "invalid_size",
            "greater than zero",
        ),
        (
            vec!["volume", "create", "s", "--size", "1000"],
            "invalid_size",
            "multiple of 4096",
        ),
        (
            vec!["volume", "create", "s", "--size", "lots"],
            "invalid_size",
            "lots",
        ),
        (
            vec!["volume", "create", "s", "--size", "65TiB"],
            "invalid_size",
            "64 TiB",
        ),
        (
            vec!["volume", "create", "s", "--size", "5XB"],
            "invalid_size",
            "unknown unit",
        ),
        // replicas and locality
        (
            vec![
                "volume",
                "create",
                "r",
                "--size",
                "16MiB",
                "--replicas",
                "0",
            ],
            "invalid_replicas",
            "1 to 20",
        ),
        (
            vec![
                "volume",
                "create",
                "r",
                "--size",
                "16MiB",
                "--replicas",
                "21",
            ],
            "invalid_replicas",
            "1 to 20",
        ),
        (
            vec![
                "volume",
                "create",
                "r",
                "--size",
                "16MiB",
                "--data-locality",
                "nearby",
            ],
            "invalid_data_locality",
            "disabled, best-effort, strict-local",
        ),
        (
            vec![
                "volume",
                "create",
                "r",
                "--size",
                "16MiB",
                "--replicas",
                "3",
                "--data-locality",
                "strict-local",
            ],
            "invalid_replicas",
            "exactly 1 replica",
        ),
        // a name taken
        (
            vec![
                "volume",
                "create",
                "keep",
                "--size",
                "16MiB",
                "--replicas",
                "1",
            ],
            "already_exists",
            "keep",
        ),
        // unknown volume or node
        (vec!["volume", "get", "ghost"], "not_found", "ghost"),
        (vec!["volume", "attach", "ghost"], "not_found", "ghost"),
        (vec!["volume", "detach", "ghost"], "not_found", "ghost"),
        (vec!["volume", "delete", "ghost"], "not_found", "ghost"),
        (
            vec!["volume", "expand", "ghost", "--size", "32MiB"],
            "not_found",
            "ghost",
        ),
        (
            vec!["volume", "attach", "keep", "--node", "nowhere"],
            "not_found",
            "nowhere",
        ),
        (vec!["node", "get", "nowhere"], "not_found", "nowhere"),
        (vec!["node", "evict", "nowhere"], "not_found", "nowhere"),
        // snapshots need an attached volume
        (
            vec!["volume", "snapshot", "create", "keep"],
            "volume_not_attached",
            "attach it first",
        ),
        (
            vec!["volume", "snapshot", "list", "keep"],
            "volume_not_attached",
            "attach it first",
        ),
        // volumes only grow
        (
            vec!["volume", "expand", "keep", "--size", "8MiB"],
            "invalid_size",
            "only grow",
        ),
    ];
    for (args, code, says) in &cases {
        let err = refused(&c["n1"], args, code);
        assert!(
            err.contains(says),
            "vigil {args:?}: expected {says:?} in: {err}"
        );
        assert_eq!(
            volumes(&c["n1"]),
            before,
            "vigil {args:?} changed the volumes"
        );
    }

    // The longest allowed name is fine.
    let v = c.create_volume(&just_right, "16MiB", 1);
    assert_eq!(v["name"], just_right.as_str(), "{v}");
    let (ok, _, err) = c["n1"].cli(&["volume", "delete", &just_right]);
    assert!(ok, "{err}");
    assert_eq!(volumes(&c["n1"]), before);

    // An attached volume is not deleted, expanded or attached elsewhere.
    let (ok, _, err) = c["n1"].cli(&["volume", "attach", "keep"]);
    assert!(ok, "{err}");
    let err = refused(&c["n1"], &["volume", "delete", "keep"], "volume_attached");
    assert!(err.contains("detach it before deleting"), "{err}");
    let err = refused(
        &c["n1"],
        &["volume", "expand", "keep", "--size", "32MiB"],
        "volume_not_detached",
    );
    assert!(err.contains("detach it first"), "{err}");
    let v = c["n1"].json(&["volume", "get", "keep"]);
    assert_eq!(v["state"], "attached", "{v}");
    assert_eq!(v["size"], 16 << 20, "{v}");
    // Attaching again where it is attached is a no-op that succeeds.
    let (ok, out, err) = c["n1"].cli(&["volume", "attach", "keep"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), v["endpoint"].as_str().unwrap());
}

#[test]
fn bad_settings_are_refused_with_what_is_allowed() {
    let mut c = Cluster::on_embedded("n1");
    let before = settings(&c["n1"]);

    let err = refused(
        &c["n1"],
        &["settings", "set", "default-replica-count", "0"],
        "invalid_setting",
    );
    assert!(err.contains("an integer from 1 to 20"), "{err}");
    let err = refused(
        &c["n1"],
        &["settings", "set", "default-replica-count", "three"],
        "invalid_setting",
    );
    assert!(err.contains("an integer from 1 to 20"), "{err}");
    let err = refused(
        &c["n1"],
        &["settings", "set", "nope", "1"],
        "unknown_setting",
    );
    assert!(
        err.contains("known settings:") && err.contains("default-replica-count"),
        "{err}"
    );
    let err = refused(&c["n1"], &["settings", "get", "nope"], "unknown_setting");
    assert!(err.contains("default-data-locality"), "{err}");
    let err = refused(
        &c["n1"],
        &["settings", "set", "default-data-locality", "nearby"],
        "invalid_setting",
    );
    assert!(
        err.contains("allowed: disabled, best-effort, strict-local"),
        "{err}"
    );
    let err = refused(
        &c["n1"],
        &["settings", "set", "auto-salvage", "yes"],
        "invalid_setting",
    );
    assert!(err.contains("true, false"), "{err}");
    assert_eq!(
        settings(&c["n1"]),
        before,
        "a refused set changed the settings"
    );

    // A valid set round-trips and shows as set, not default.
    let s = c["n1"].json(&["settings", "set", "default-replica-count", "2"]);
    assert_eq!(s["value"], "2", "{s}");
    assert_eq!(s["is_default"], false, "{s}");
    let s = c["n1"].json(&["settings", "get", "default-replica-count"]);
    assert_eq!(s["value"], "2", "{s}");
    assert_eq!(s["default"], "3", "{s}");
    let (ok, table, err) = c["n1"].cli(&["settings", "list"]);
    assert!(ok, "{err}");
    let row = table
        .lines()
        .find(|l| l.starts_with("default-replica-count "))
        .unwrap_or_else(|| panic!("no default-replica-count row in:\n{table}"));
    assert!(
        row.split_whitespace()
            .take(3)
            .eq(["default-replica-count", "2", "set"]),
        "{row}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("default-data-locality "))
        .unwrap();
    assert!(
        row.split_whitespace()
            .take(3)
            .eq(["default-data-locality", "disabled", "default"]),
        "{row}"
    );
    // ...and is used: a volume created without --replicas gets 2 replica
    // objects asked for (one node: created degraded with 1).
    let v = c["n1"].json(&["volume", "create", "d", "--size", "16MiB"]);
    assert_eq!(v["number_of_replicas"], 2, "{v}");
    // The value survives a restart of the agent.
    c.restart("n1");
    let s = c["n1"].json(&["settings", "get", "default-replica-count"]);
    assert_eq!(s["value"], "2", "{s}");
}

#[test]
fn attaching_a_volume_attached_to_another_node_is_refused() {
    let c = Cluster::on_etcd(&["n1", "n2"]);
    c.create_volume("v", "16MiB", 2);
    let (ok, _, err) = c["n1"].cli(&["volume", "attach", "v"]);
    assert!(ok, "{err}");

    // From n2 (attach defaults to the node answering), and naming n2.
    let err = refused(&c["n2"], &["volume", "attach", "v"], "attached_elsewhere");
    assert!(
        err.contains("attached to n1") && err.contains("detach it first"),
        "{err}"
    );
    let err = refused(
        &c["n1"],
        &["volume", "attach", "v", "--node", "n2"],
        "attached_elsewhere",
    );
    assert!(err.contains("attached to n1"), "{err}");
    for a in c.nodes() {
        let v = a.json(&["volume", "get", "v"]);
        assert_eq!(v["state"], "attached", "{v}");
        assert_eq!(v["attached_node"], "n1", "{v}");
    }
    let err = refused(&c["n2"], &["volume", "delete", "v"], "volume_attached");
    assert!(err.contains("detach it before deleting"), "{err}");
}
