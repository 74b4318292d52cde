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
