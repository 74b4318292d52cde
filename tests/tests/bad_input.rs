//! Bad input gets a clear error and changes nothing; an unauthenticated
//! replica peer is refused and logged.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use vigil_tests::Agent;

#[test]
fn invalid_names_and_sizes_are_refused_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start(root.path(), "n1");
    let cases: [(&[&str], &str); 6] = [
        (
            &["replica", "create", "Bad/Name", "--size", "64MiB"],
            "invalid_name",
        ),
        (
            &["replica", "create", "ok", "--size", "4097"],
            "multiple of 4096",
        ),
        (
            &["replica", "create", "ok", "--size", "0"],
            "greater than zero",
        ),
        (
            &["replica", "create", "ok", "--size", "12XB"],
            "unknown unit",
        ),
        (&["replica", "create", "ok", "--size", "64TiB"], "too_large"),
        (
            &[
                "engine",
                "create",
                "e",
                "--size",
                "64MiB",
                "--replica",
                "tcp://nowhere/x",
            ],
            "invalid_address",
        ),
    ];
    for (args, expect) in cases {
        let (ok, _, err) = a.cli(args);
        assert!(!ok, "{args:?} should fail");
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in {err:?}"
        );
    }
    assert_eq!(a.json(&["replica", "list"]).as_array().unwrap().len(), 0);
    assert_eq!(a.json(&["engine", "list"]).as_array().unwrap().len(), 0);
    let (ok, _, err) = a.cli(&["engine", "show", "nope"]);
    assert!(!ok && err.contains("not_found"), "{err}");
    let (ok, _, err) = a.cli(&["snapshot", "create", "nope"]);
    assert!(!ok && err.contains("not_found"), "{err}");
    a.create_replica("dup", "4MiB");
    let (ok, _, err) = a.cli(&["replica", "create", "dup", "--size", "4MiB"]);
    assert!(!ok && err.contains("already_exists"), "{err}");
    let (ok, _, err) = a.cli(&[
        "engine",
        "create",
        "e",
        "--size",
        "8MiB",
        "--replica",
        &a.create_replica("small", "4MiB"),
    ]);
    assert!(!ok && err.contains("size"), "{err}");
}

#[test]
fn a_peer_without_the_cluster_token_is_refused_and_logged() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start_with_token(root.path(), "n1", "token-one");
    let b = Agent::start_with_token(root.path(), "n2", "token-two");
    let r = b.create_replica("secret-r", "4MiB");
    let (ok, _, err) = a.cli(&["engine", "create", "x", "--size", "4MiB", "--replica", &r]);
    assert!(!ok, "engine over an unauthenticated replica must fail");
    assert!(err.contains("refused"), "{err}");
    let log = b.log_text();
    assert!(
        log.contains("refused") || log.contains("authentication"),
        "replica server must log the refusal:\n{log}"
    );
}
