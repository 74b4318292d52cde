//! Support bundles from tests: make one with the real CLI, extract it
//! with the real `tar`, and look for a secret in every extracted file.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::Agent;

/// `vigil support-bundle -o FILE ARGS...` against `a`: (exit code, stderr).
pub fn make(a: &Agent, file: &Path, args: &[&str]) -> (i32, String) {
    let file = file.to_str().unwrap();
    let mut all = vec!["support-bundle", "-o", file];
    all.extend_from_slice(args);
    let (code, _, err) = a.cli_code(&all);
    (code, err)
}

/// Extracts a bundle with `tar xzf` into `dir`; returns the bundle's root.
pub fn extract(file: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("tar")
        .arg("xzf")
        .arg(file)
        .arg("-C")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar xzf {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("vigil-bundle")
}

/// Every regular file under `dir`.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Files under `dir` whose bytes contain `secret`.
pub fn files_containing(dir: &Path, secret: &str) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| {
            let data = std::fs::read(p).unwrap();
            data.windows(secret.len()).any(|w| w == secret.as_bytes())
        })
        .collect()
}

/// The extracted bundle's manifest.
pub fn manifest(root: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(root.join("manifest.json")).unwrap()).unwrap()
}

/// `vigil doctor -o json --bundle FILE` (no agent needed): (exit code,
/// report or Null, stderr).
pub fn doctor(file: &Path) -> (i32, Value, String) {
    let out = Command::new(crate::agent::vigil_bin())
        .args(["-o", "json", "doctor", "--bundle"])
        .arg(file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the CLI without an agent: (exit code, stdout, stderr).
pub fn offline(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(crate::agent::vigil_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `(code, root, objects)` of every failing check of a report, sorted:
/// what two diagnoses must agree on (messages may say "down for 12 s").
pub fn codes(report: &Value) -> Vec<(String, bool, Vec<String>)> {
    let mut c: Vec<(String, bool, Vec<String>)> = report["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["code"].as_str().unwrap_or("").to_string(),
                        c["root"] == true,
                        {
                            let mut o: Vec<String> = c["items"]
                                .as_array()
                                .map(|i| {
                                    i.iter()
                                        .map(|i| i["object"].as_str().unwrap_or("").to_string())
                                        .collect()
                                })
                                .unwrap_or_default();
                            o.sort();
                            o
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    c.sort();
    c
}
