//! The shipped dashboards and alert rules (dashboards/), checked with the
//! real tools: `promtool check rules` and `promtool test rules` on the
//! rules and their unit tests, every alert with a firing and a quiet unit
//! test, the committed dashboard JSON equal to what its source generates,
//! every dashboard loaded by Grafana's foundation SDK (its models follow
//! Grafana's schema) and the provisioning examples valid. The dashboards
//! against a real Prometheus scraping a real cluster are in
//! dashboards_prometheus.rs.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `tool args` in the repository; (success, stdout+stderr).
fn run(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {tool}: {e} (tests/run.sh installs prometheus and the Python packages)"
            )
        });
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn alert_test_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("dashboards/alerts/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no alert unit tests");
    files
}

#[test]
fn alert_rules_pass_promtool_check() {
    let (ok, text) = run(
        "promtool",
        &["check", "rules", "dashboards/alerts/vigil.rules.yml"],
    );
    assert!(ok, "promtool check rules:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn alert_unit_tests_pass() {
    let files = alert_test_files();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let (ok, text) = run("promtool", &args);
    assert!(ok, "promtool test rules:\n{text}");
    assert_eq!(
        text.matches("SUCCESS").count(),
        files.len(),
        "every test file should succeed:\n{text}"
    );
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let (ok, text) = run("python3", &["dashboards/alerts/check_coverage.py"]);
    assert!(ok, "alerts without unit tests:\n{text}");
    // The check can fail: without one test file, the alerts only it covers
    // are reported.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("dashboards/alerts/vigil.rules.yml"),
        tmp.path().join("vigil.rules.yml"),
    )
    .unwrap();
    std::fs::create_dir(tmp.path().join("tests")).unwrap();
    for f in alert_test_files() {
        if !f.ends_with("nodes_store.yml") {
            let name = Path::new(&f).file_name().unwrap().to_owned();
            std::fs::copy(&f, tmp.path().join("tests").join(name)).unwrap();
        }
    }
    let (ok, text) = run(
        "python3",
        &[
            "dashboards/alerts/check_coverage.py",
            tmp.path().to_str().unwrap(),
        ],
    );
    assert!(
        !ok,
        "coverage check passed without nodes_store.yml:\n{text}"
    );
    assert!(
        text.contains("VigilNodeDown: no unit test where it fires"),
        "{text}"
    );
}

#[test]
fn committed_dashboards_equal_their_generated_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, text) = run(
        "python3",
        &["dashboards/generate.py", tmp.path().to_str().unwrap()],
    );
    assert!(ok, "generate.py:\n{text}");
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        v.sort();
        v
    };
    let committed = repo().join("dashboards/grafana");
    assert_eq!(
        names(tmp.path()),
        names(&committed),
        "generated and committed dashboards differ in files"
    );
    assert!(names(&committed).len() >= 4, "{:?}", names(&committed));
    for n in names(&committed) {
        let want = std::fs::read_to_string(tmp.path().join(&n)).unwrap();
        let have = std::fs::read_to_string(committed.join(&n)).unwrap();
        assert!(
            want == have,
            "dashboards/grafana/{n} is not what dashboards/generate.py writes: run it and commit the result"
        );
    }
}

#[test]
fn dashboards_load_with_the_grafana_sdk() {
    let (ok, text) = run("python3", &["dashboards/validate.py"]);
    assert!(ok, "dashboards/validate.py:\n{text}");
    // The validator can fail: an unknown field is reported.
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(repo().join("dashboards/grafana")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, tmp.path().join(p.file_name().unwrap())).unwrap();
    }
    let f = tmp.path().join("vigil-volume.json");
    let mut j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    j["panels"][1]["targets"][0]["exprr"] = "up".into();
    std::fs::write(&f, j.to_string()).unwrap();
    let (ok, text) = run(
        "python3",
        &["dashboards/validate.py", tmp.path().to_str().unwrap()],
    );
    assert!(!ok && text.contains("exprr"), "{text}");
}

#[test]
fn prometheus_example_config_is_valid() {
    // The example names the rules where an operator installs them; point it
    // at the shipped file to check both together.
    let tmp = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(repo().join("dashboards/provisioning/prometheus/prometheus.yml"))
            .unwrap();
    let rules = repo().join("dashboards/alerts/vigil.rules.yml");
    assert!(text.contains("/etc/prometheus/rules/vigil.rules.yml"));
    let text = text.replace(
        "/etc/prometheus/rules/vigil.rules.yml",
        rules.to_str().unwrap(),
    );
    let cfg = tmp.path().join("prometheus.yml");
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = run("promtool", &["check", "config", cfg.to_str().unwrap()]);
    assert!(ok, "promtool check config:\n{out}");
}
