//! One node, embedded store: `vigil doctor` is healthy (exit 0) with an
//! attached volume; a mute is visible in `vigil doctor -o json` and in the
//! events, unmute removes it; bad mutes are refused with a clear error; an
//! agent that cannot be reached makes the doctor exit 2.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use vigil_tests::agent::{free_port, vigil_bin, wait_until};
use vigil_tests::{Agent, Cluster};

/// Runs `vigil --endpoint E doctor ARGS`; returns (exit code, stdout, stderr).
fn doctor(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(vigil_bin())
        .args(["--endpoint", endpoint, "doctor"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn doctor_json(a: &Agent) -> Value {
    let (code, out, err) = doctor(&a.endpoint, &["-o", "json"]);
    assert!(code == 0 || code == 1 || code == 2, "doctor -o json: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("doctor -o json ({e}): {out}"))
}

#[test]
fn doctor_is_healthy_and_a_mute_shows_until_unmuted() {
    let c = Cluster::on_embedded("n1");
    c.create_volume("v", "64MiB", 1);
    let (ok, _, err) = c["n1"].cli(&["volume", "attach", "v"]);
    assert!(ok, "attach failed: {err}");

    // healthy: exit 0, nothing failing
    let mut last = (0, String::new(), String::new());
    let healthy = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("doctor healthy", Duration::from_secs(20), || {
            last = doctor(&c["n1"].endpoint, &[]);
            last.0 == 0
        })
    }));
    assert!(healthy.is_ok(), "doctor never healthy: {last:?}");
    assert!(last.1.starts_with("HEALTH_OK"), "{last:?}");
    let report = doctor_json(&c["n1"]);
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["checks"], serde_json::json!([]), "{report}");
    let (ok, out, _) = c["n1"].cli(&["health", "list"]);
    assert!(ok && out.contains("no failing checks"), "{out}");

    // mute: visible in the report, in the human output and in the events
    let (ok, out, err) = c["n1"].cli(&[
        "health",
        "mute",
        "NODE_DOWN",
        "--for",
        "1h",
        "--reason",
        "test",
    ]);
    assert!(ok, "mute failed: {err}");
    assert!(out.starts_with("NODE_DOWN muted until"), "{out}");
    let report = doctor_json(&c["n1"]);
    let mutes = report["mutes"].as_array().unwrap();
    assert_eq!(mutes.len(), 1, "{report}");
    assert_eq!(mutes[0]["code"], "NODE_DOWN");
    assert_eq!(mutes[0]["reason"], "test");
    assert_eq!(mutes[0]["created_by"], "n1");
    let until = mutes[0]["until_unix"].as_u64().unwrap();
    let created = mutes[0]["created_unix"].as_u64().unwrap();
    assert_eq!(until - created, 3600);
    assert_eq!(report["status"], "ok", "a mute alone changes nothing");
    let (code, out, _) = doctor(&c["n1"].endpoint, &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("NODE_DOWN (muted until") && out.contains("test"),
        "{out}"
    );
    let events = c["n1"].json(&["events", "--limit", "500"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "HealthCheckMuted" && e["object"] == "NODE_DOWN"),
        "{events}"
    );

    // unmute removes it; a second unmute says there is none
    let (ok, out, err) = c["n1"].cli(&["health", "unmute", "NODE_DOWN"]);
    assert!(ok, "unmute failed: {err}");
    assert_eq!(out.trim(), "NODE_DOWN unmuted");
    assert_eq!(doctor_json(&c["n1"])["mutes"], serde_json::json!([]));
    let (ok, _, err) = c["n1"].cli(&["health", "unmute", "NODE_DOWN"]);
    assert!(!ok && err.contains("not found"), "{err}");
    let events = c["n1"].json(&["events", "--limit", "500"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "HealthCheckUnmuted"),
        "{events}"
    );

    // bad mutes are refused, saying why
    let (ok, _, err) = c["n1"].cli(&[
        "health", "mute", "NODE_SAD", "--for", "1h", "--reason", "test",
    ]);
    assert!(!ok, "an unknown code was accepted");
    assert!(
        err.contains("unknown health-check code \"NODE_SAD\"")
            && err.contains("NODE_DOWN")
            && err.contains("[unknown_code]"),
        "{err}"
    );
    let (ok, _, err) = c["n1"].cli(&[
        "health",
        "mute",
        "NODE_DOWN",
        "--for",
        "31d",
        "--reason",
        "test",
    ]);
    assert!(!ok && err.contains("[invalid_duration]"), "{err}");
    let (ok, _, err) = c["n1"].cli(&[
        "health",
        "mute",
        "NODE_DOWN",
        "--for",
        "1h",
        "--reason",
        " ",
    ]);
    assert!(!ok && err.contains("[invalid_reason]"), "{err}");
    let (ok, _, err) = c["n1"].cli(&[
        "health",
        "mute",
        "NODE_DOWN",
        "--for",
        "soon",
        "--reason",
        "test",
    ]);
    assert!(!ok && err.contains("not a duration"), "{err}");
    assert_eq!(doctor_json(&c["n1"])["mutes"], serde_json::json!([]));

    // an agent that cannot be reached: exit 2 with the error
    let (code, _, err) = doctor(&format!("http://127.0.0.1:{}", free_port()), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot reach the agent"), "{err}");
}
