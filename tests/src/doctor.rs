//! `vigil doctor -o json` from tests: the exit code and the report, and a
//! check by code.

use serde_json::Value;

use crate::Agent;

/// Runs `vigil doctor -o json` against `a`: (exit code, report).
pub fn doctor(a: &Agent) -> (i32, Value) {
    let (code, out, err) = a.cli_code(&["-o", "json", "doctor"]);
    let v =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("doctor -o json ({e}): {out} {err}"));
    (code, v)
}

/// The check with `code` in a report, if it is failing.
pub fn check<'a>(report: &'a Value, code: &str) -> Option<&'a Value> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == code)
}

/// Waits until `doctor` asked of `asker` reports NODE_DOWN for the node
/// `node` (panics after `timeout`).
pub fn wait_node_down(asker: &Agent, node: &str, timeout: std::time::Duration) {
    let object = format!("node/{node}");
    crate::agent::wait_until(&format!("NODE_DOWN for {object}"), timeout, || {
        check(&doctor(asker).1, "NODE_DOWN").is_some_and(|c| {
            c["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i["object"] == object))
        })
    });
}
