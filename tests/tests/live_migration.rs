//! Live migration of an attached volume between two agents on a real etcd
//! (`vigil volume migrate NAME --to N2 | --confirm | --rollback`).
//!
//! Every test checks the same end state after each flow: the migration is
//! gone from the volume, exactly one node runs an engine for it (the one
//! it is attached to), the volume is served there (`qemu-img compare`
//! equal to what was written and flushed, and a new write reads back),
//! and the doctor is healthy once rebuilds are done.
//!
//! - confirm: the target serves (forwarding) before the confirm, a qemu-io
//!   session connected to the target keeps working across the switch, a
//!   session still connected to the source gets EIO after it (fenced), and
//!   every step is an event;
//! - rollback by the operator;
//! - an injected I/O error at every step (failpoints, `VIGIL_FAILPOINTS`)
//!   rolls back by itself, with the step named;
//! - the target agent killed (kill -9) at every step, and the source
//!   killed while the target serves: rolled back, never two engines;
//! - a step slower than `migration-timeout` rolls back; a target frozen
//!   (SIGSTOP) while switching is reported MIGRATION_STUCK and the
//!   migration completes once it runs again;
//! - `--confirm` and `--rollback` racing from two clients on two agents
//!   (seeded order and delay), 8 rounds back and forth: at most one wins
//!   and the volume ends where the winner said.
//!
//! After each flow, once rebuilds are done, `vigil node drain-check` passes
//! on both nodes: nothing the migration left blocks a drain.
//!
//! The data is random from a seed printed at the start; `VIGIL_SEED`
//! replays one.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::{Agent, Cluster, tools};

const SIZE: usize = 8 << 20;

/// n1 and n2 on etcd and the seed of the data written to volumes.
struct Pair {
    cluster: Cluster,
    seed: u64,
}

impl std::ops::Deref for Pair {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl std::ops::DerefMut for Pair {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

fn seed() -> u64 {
    let seed = std::env::var("VIGIL_SEED")
        .ok()
        .map(|s| s.trim().parse().expect("VIGIL_SEED is a u64"))
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (replay with VIGIL_SEED={seed})");
    seed
}

/// n1 and n2 on etcd, with `VIGIL_FAILPOINTS` for each (empty: none) and
/// `settings`.
fn cluster(fp1: &str, fp2: &str, settings: &[(&str, &str)]) -> Pair {
    let cluster = Cluster::builder()
        .node_env("n1", "VIGIL_FAILPOINTS", fp1)
        .node_env("n2", "VIGIL_FAILPOINTS", fp2)
        .on_etcd(&["n1", "n2"]);
    for (k, v) in settings {
        cluster["n1"].set(k, v);
    }
    Pair {
        cluster,
        seed: seed(),
    }
}

impl Pair {
    fn volume(&self, name: &str) -> Value {
        self["n1"].json(&["volume", "get", name])
    }

    /// A 2-replica volume attached on n1 holding seeded data; returns the
    /// file with what it holds.
    fn attached_volume(&self, name: &str) -> PathBuf {
        let uri = self.create_attached(name, "8MiB", 2, "n1");
        let data = self.root().join(format!("{name}.data"));
        tools::random_file(&data, SIZE, self.seed ^ name.len() as u64);
        tools::qemu_write(&data, &uri);
        wait_until(&format!("{name} healthy"), Duration::from_secs(30), || {
            self.volume(name)["robustness"] == "healthy"
        });
        data
    }

    /// The end state of every flow: no migration, attached to `on`, one
    /// engine (there), served with `data`, and a new write reads back.
    fn assert_settled(&self, name: &str, on: &str, data: &Path) {
        let v = self.volume(name);
        assert!(v.get("migration").is_none(), "migration left: {v}");
        assert_eq!(v["state"], "attached", "{v}");
        assert_eq!(v["attached_node"], on, "{v}");
        for a in self.nodes() {
            if !a.is_live() {
                continue;
            }
            let runs = a
                .json(&["engine", "list"])
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == name);
            assert_eq!(
                runs,
                a.name == on,
                "{} {} an engine for {name} (attached to {on})",
                a.name,
                if runs { "runs" } else { "does not run" }
            );
        }
        let endpoint = v["endpoint"].as_str().unwrap().to_string();
        assert!(
            tools::qemu_equal(data, &endpoint),
            "{name} on {on} differs from what was written"
        );
        // and it takes writes: a new pattern at 1 MiB reads back
        write_pattern(&endpoint, 0x5c, 1 << 20, 64 << 10);
        patch(data, 0x5c, 1 << 20, 64 << 10);
        assert!(tools::qemu_equal(data, &endpoint), "{name}: new write lost");
    }

    fn events(&self, name: &str) -> Vec<String> {
        self["n1"]
            .events_of(&format!("volume/{name}"))
            .iter()
            .map(|e| format!("{}: {}", e["reason"].as_str().unwrap(), e["message"]))
            .collect()
    }

    /// The doctor is healthy and both nodes pass the drain check: nothing
    /// a migration left behind (a second engine, a migration record) keeps
    /// either node from going down.
    fn wait_healthy(&self) {
        wait_until("doctor healthy", Duration::from_secs(60), || {
            doctor(&self["n1"]).0 == 0
        });
        for node in ["n1", "n2"] {
            let (code, out, err) = self["n1"].cli_code(&["node", "drain-check", node]);
            assert_eq!(code, 0, "drain-check {node}: {out}{err}");
        }
    }
}

trait Live {
    fn is_live(&self) -> bool;
}

impl Live for Agent {
    fn is_live(&self) -> bool {
        self.get("/healthz").is_some()
    }
}

fn write_pattern(uri: &str, byte: u8, offset: u64, len: u64) {
    tools::run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("write -P {byte:#x} {offset} {len}"),
            "-c",
            "flush",
            uri,
        ],
    );
}

fn patch(file: &Path, byte: u8, offset: u64, len: u64) {
    let mut d = std::fs::read(file).unwrap();
    d[offset as usize..(offset + len) as usize].fill(byte);
    std::fs::write(file, d).unwrap();
}

/// `vigil volume migrate …` on `a`: (exit code, stdout json or stderr).
fn migrate(a: &Agent, args: &[&str]) -> (i32, String) {
    let mut full = vec!["-o", "json", "volume", "migrate"];
    full.extend_from_slice(args);
    let (code, out, err) = a.cli_code(&full);
    (code, if code == 0 { out } else { err })
}

#[test]
fn confirm_moves_the_engine_and_keeps_target_clients() {
    let c = cluster("", "", &[]);
    let data = c.attached_volume("v");
    let source_endpoint = c.volume("v")["endpoint"].as_str().unwrap().to_string();

    let t = Instant::now();
    let (code, out) = migrate(&c["n1"], &["v", "--to", "n2"]);
    assert_eq!(code, 0, "migrate --to n2: {out}");
    eprintln!("target ready in {:.2} s", t.elapsed().as_secs_f64());
    let v: Value = serde_json::from_str(&out).unwrap();
    let m = &v["migration"];
    assert_eq!(m["phase"], "ready", "{v}");
    assert_eq!(
        (m["source"].as_str(), m["target"].as_str()),
        (Some("n1"), Some("n2"))
    );
    let target_endpoint = m["target_endpoint"].as_str().unwrap().to_string();
    assert!(target_endpoint.contains("/v"), "{v}");
    // the migration is a series on the volume's reporter (n1, attached)
    let page = c["n1"].get("/metrics").unwrap();
    let phase = vigil_tests::prom::sample(
        &page,
        "vigil_volume_migration_phase_seconds",
        &[
            ("volume", "v"),
            ("phase", "ready"),
            ("source", "n1"),
            ("target", "n2"),
        ],
    );
    assert!(phase.is_some(), "no migration series on n1's /metrics");
    // n2 serves through n1's engine: one engine, two exports
    assert!(
        !c["n2"]
            .json(&["engine", "list"])
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "v")
    );
    assert!(
        tools::qemu_equal(&data, &target_endpoint),
        "the target serves other data"
    );
    // a write through the target is seen through the source: one writer
    write_pattern(&target_endpoint, 0x71, 0, 64 << 10);
    patch(&data, 0x71, 0, 64 << 10);
    assert!(
        tools::qemu_equal(&data, &source_endpoint),
        "target write not seen at the source"
    );
    // a second migration or a detach while this one runs is refused
    let (code, err) = migrate(&c["n1"], &["v", "--to", "n1"]);
    assert_ne!(code, 0);
    assert!(err.contains("migrating from n1 to n2"), "{err}");
    let (ok, _, err) = c["n1"].cli(&["volume", "detach", "v"]);
    assert!(!ok && err.contains("--rollback"), "{err}");

    // clients on both sides, connected before the confirm
    let mut on_target = tools::QemuIoSession::open(&target_endpoint);
    on_target.send("write -P 0x72 65536 65536");
    let mut on_source = tools::QemuIoSession::open(&source_endpoint);
    on_source.send("read -P 0x71 0 65536");

    let t = Instant::now();
    let (code, out) = migrate(&c["n2"], &["v", "--confirm"]);
    assert_eq!(code, 0, "migrate --confirm: {out}");
    eprintln!("confirmed in {:.2} s", t.elapsed().as_secs_f64());
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["attached_node"], "n2", "{v}");
    assert!(v.get("migration").is_none(), "{v}");

    // the target's client carries on over its engine
    on_target.send("write -P 0x73 131072 65536");
    on_target.send("read -P 0x72 65536 65536");
    // the source's client is fenced: nothing it sends reaches a replica
    on_source.send("write -P 0x74 196608 65536");
    let target_text = on_target.finish();
    let source_text = on_source.finish();
    eprintln!("target session:\n{target_text}\nsource session:\n{source_text}");
    assert!(
        !target_text.contains("failed") && target_text.matches("wrote 65536/65536").count() == 2,
        "the target's client lost writes across the switch:\n{target_text}"
    );
    assert!(target_text.contains("read 65536/65536"), "{target_text}");
    assert!(
        source_text.contains("write failed"),
        "the source's client could still write after the switch:\n{source_text}"
    );
    patch(&data, 0x72, 65536, 65536);
    patch(&data, 0x73, 131072, 65536);

    c.assert_settled("v", "n2", &data);
    let page = c["n2"].get("/metrics").unwrap();
    assert!(
        !page.contains("vigil_volume_migration_phase_seconds{"),
        "a finished migration left its series"
    );
    let events = c.events("v");
    for reason in [
        "MigrationStarted",
        "MigrationTargetReady",
        "MigrationConfirming",
        "MigrationSourceFenced",
        "MigrationCompleted",
    ] {
        assert!(
            events.iter().any(|e| e.starts_with(reason)),
            "no {reason} event: {events:#?}"
        );
    }
    c.wait_healthy();
}

#[test]
fn rollback_by_the_operator_keeps_the_source() {
    let c = cluster("", "", &[]);
    let data = c.attached_volume("v");
    let (code, out) = migrate(&c["n1"], &["v", "--to", "n2"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let target_endpoint = v["migration"]["target_endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    write_pattern(&target_endpoint, 0x42, 0, 4096);
    patch(&data, 0x42, 0, 4096);
    let (code, out) = migrate(&c["n2"], &["v", "--rollback"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["attached_node"], "n1", "{v}");
    // the target's export is gone
    let (ok, text) = tools::try_run("nbdinfo", &[&target_endpoint]);
    assert!(!ok, "n2 still serves v after the rollback: {text}");
    c.assert_settled("v", "n1", &data);
    let events = c.events("v");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("MigrationRolledBack") && e.contains("operator")),
        "{events:#?}"
    );
    c.wait_healthy();
}

/// Migrates `name` to n2 and confirms (when the start succeeded); expects
/// the flow to end rolled back with `why` in the error.
fn expect_rollback(c: &Cluster, name: &str, why: &str) {
    let (code, out) = migrate(&c["n1"], &[name, "--to", "n2"]);
    let err = if code == 0 {
        let (code, err) = migrate(&c["n1"], &[name, "--confirm"]);
        assert_ne!(
            code, 0,
            "{name}: confirm succeeded despite the fault: {err}"
        );
        err
    } else {
        out
    };
    assert!(
        err.contains(why),
        "{name}: the error does not say {why:?}: {err}"
    );
    eprintln!("{name}: {}", err.trim());
}

#[test]
fn an_injected_error_at_every_step_rolls_back() {
    let c = cluster(
        "migration.source.fence@ve=error",
        "migration.target.forward@va=error,migration.target.pause@vb=error,migration.target.switch@vc=error,migration.target.commit@vd=error",
        &[],
    );
    for (name, step) in [
        ("va", "opening the forward failed"),
        ("vb", "pausing the target failed"),
        ("vc", "starting the target's engine failed"),
        ("vd", "committing the move failed"),
        ("ve", "fencing the source failed"),
    ] {
        let data = c.attached_volume(name);
        let t = Instant::now();
        expect_rollback(&c, name, step);
        eprintln!("{name} rolled back in {:.2} s", t.elapsed().as_secs_f64());
        assert!(
            c.events(name)
                .iter()
                .any(|e| e.starts_with("MigrationRolledBack") && e.contains("injected")),
            "{name}: {:#?}",
            c.events(name)
        );
        c.assert_settled(name, "n1", &data);
    }
    c.wait_healthy();
}

#[test]
fn target_killed_at_every_step_rolls_back() {
    let mut c = cluster(
        "",
        "migration.target.forward@ka=delay:3000,migration.target.pause@kb=delay:3000,migration.target.switch@kc=delay:3000,migration.target.commit@kd=delay:3000",
        &[("node-down-timeout", "5")],
    );
    for (name, phase) in [
        ("ka", "starting"),
        ("kr", "ready"),
        ("kb", "confirming"),
        ("kc", "switching"),
        ("kd", "switching"),
    ] {
        let data = c.attached_volume(name);
        // the CLI call blocks while the step is delayed: run it aside
        let n1 = c["n1"].endpoint.clone();
        let args: Vec<String> = if phase == "starting" || phase == "ready" {
            vec!["--to".into(), "n2".into()]
        } else {
            let (code, out) = migrate(&c["n1"], &[name, "--to", "n2"]);
            assert_eq!(code, 0, "{out}");
            vec!["--confirm".into()]
        };
        let name_s = name.to_string();
        let call = std::thread::spawn(move || {
            let out = Command::new(vigil_tests::agent::vigil_bin())
                .args([
                    "--endpoint",
                    &n1,
                    "-o",
                    "json",
                    "volume",
                    "migrate",
                    &name_s,
                ])
                .args(&args)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        });
        wait_until(
            &format!("{name} in {phase}"),
            Duration::from_secs(20),
            || c.volume(name)["migration"]["phase"] == phase,
        );
        let t = Instant::now();
        c.kill9("n2");
        let (code, err) = call.join().unwrap();
        if phase != "ready" {
            assert_ne!(
                code,
                Some(0),
                "{name}: the flow succeeded with its target killed"
            );
            assert!(err.contains("n2"), "{name}: {err}");
        }
        wait_until(
            &format!("{name} rolled back"),
            Duration::from_secs(60),
            || c.volume(name).get("migration").is_none(),
        );
        eprintln!(
            "{name}: target killed in {phase}, rolled back {:.1} s later",
            t.elapsed().as_secs_f64()
        );
        c.assert_settled(name, "n1", &data);
        c.start_again("n2");
        c["n2"].wait_live();
        wait_until("n2 serves no engine", Duration::from_secs(30), || {
            c["n2"]
                .json(&["engine", "list"])
                .as_array()
                .unwrap()
                .is_empty()
        });
        c.assert_settled(name, "n1", &data);
        c.wait_healthy();
    }

    // the source dies while the target serves: the target rolls back and
    // closes its export; the volume is then handled like any volume on a
    // dead node (policy wait: detached after node-down-timeout)
    let data = c.attached_volume("ks");
    let (code, out) = migrate(&c["n1"], &["ks", "--to", "n2"]);
    assert_eq!(code, 0, "{out}");
    c.kill9("n1");
    wait_until(
        "ks rolled back by the target",
        Duration::from_secs(40),
        || {
            c["n2"]
                .json(&["volume", "get", "ks"])
                .get("migration")
                .is_none()
        },
    );
    assert!(
        c["n2"]
            .json(&["engine", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let events: Vec<String> = c["n2"]
        .events_of("volume/ks")
        .iter()
        .map(|e| format!("{}: {}", e["reason"].as_str().unwrap(), e["message"]))
        .collect();
    assert!(
        // the forward breaks at once; the lease lapses within 10 s:
        // whichever the target notices first names the source
        events.iter().any(|e| e.starts_with("MigrationRolledBack")
            && (e.contains("source node n1 is down") || e.contains("forward to the source broke"))),
        "{events:#?}"
    );
    c.start_again("n1");
    c["n1"].wait_live();
    wait_until("ks attached again", Duration::from_secs(60), || {
        let v = c.volume("ks");
        v["state"] == "attached" || v["state"] == "detached"
    });
    let v = c.volume("ks");
    if v["state"] == "detached" {
        let (ok, _, err) = c["n1"].cli(&["volume", "attach", "ks", "--node", "n1"]);
        assert!(ok, "{err}");
    }
    wait_until("n1 serves ks again", Duration::from_secs(30), || {
        c["n1"]
            .json(&["engine", "list"])
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "ks")
    });
    c.assert_settled("ks", "n1", &data);
}

#[test]
fn a_slow_step_rolls_back_and_a_frozen_switch_is_stuck_until_it_runs() {
    let mut c = cluster(
        "",
        "migration.target.pause@slow=delay:9000,migration.target.commit@frozen=delay:2000",
        &[("migration-timeout", "5"), ("node-down-timeout", "120")],
    );
    // a pause that outlasts migration-timeout: the source rolls back
    let data = c.attached_volume("slow");
    let t = Instant::now();
    expect_rollback(&c, "slow", "longer than migration-timeout");
    eprintln!(
        "slow step rolled back after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    c.assert_settled("slow", "n1", &data);

    // the target freezes while switching (its engine may already run): the
    // source must not serve again before node-down-timeout, so the volume
    // waits and the doctor says why
    let data = c.attached_volume("frozen");
    let (code, out) = migrate(&c["n1"], &["frozen", "--to", "n2"]);
    assert_eq!(code, 0, "{out}");
    let n1 = c["n1"].endpoint.clone();
    let call = std::thread::spawn(move || {
        Command::new(vigil_tests::agent::vigil_bin())
            .args([
                "--endpoint",
                &n1,
                "volume",
                "migrate",
                "frozen",
                "--confirm",
            ])
            .output()
            .unwrap()
    });
    wait_until("frozen switching", Duration::from_secs(20), || {
        c.volume("frozen")["migration"]["phase"] == "switching"
    });
    c.freeze("n2");
    let t = Instant::now();
    wait_until("MIGRATION_STUCK", Duration::from_secs(90), || {
        let (_, report) = doctor(&c["n1"]);
        check(&report, "MIGRATION_STUCK").is_some()
    });
    eprintln!("MIGRATION_STUCK after {:.1} s", t.elapsed().as_secs_f64());
    let (code, report) = doctor(&c["n1"]);
    assert_eq!(code, 2, "{report}");
    let stuck = check(&report, "MIGRATION_STUCK").unwrap();
    let text = stuck.to_string();
    assert!(
        text.contains("volume/frozen") && text.contains("switching"),
        "{text}"
    );
    assert!(
        stuck["fix"].as_str().unwrap().contains("--rollback"),
        "{text}"
    );
    assert!(
        text.contains("NODE_DOWN"),
        "not tied to n2 being down: {text}"
    );
    // nothing serves meanwhile on n1: its engine is fenced
    assert!(
        !c["n1"]
            .json(&["engine", "list"])
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "frozen")
    );
    c.thaw("n2");
    let out = call.join().unwrap();
    eprintln!(
        "confirm after the freeze: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("frozen moved to n2", Duration::from_secs(60), || {
        c.volume("frozen").get("migration").is_none()
    });
    c.assert_settled("frozen", "n2", &data);
    c.wait_healthy();
}

#[test]
fn an_uninstall_during_a_migration_rolls_it_back_and_removes_everything() {
    let c = cluster("", "", &[]);
    c.attached_volume("v");
    let (code, out) = migrate(&c["n1"], &["v", "--to", "n2"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let target_endpoint = v["migration"]["target_endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    c["n1"].set("deleting-confirmation-flag", "true");
    let (ok, out, err) = c["n2"].cli(&["uninstall"]);
    assert!(ok, "uninstall: {out} {err}");
    for a in [&c["n1"], &c["n2"]] {
        assert!(
            a.json(&["engine", "list"]).as_array().unwrap().is_empty(),
            "{} runs an engine",
            a.name
        );
    }
    let (served, text) = tools::try_run("nbdinfo", &[&target_endpoint]);
    assert!(
        !served,
        "the target's export outlived the uninstall: {text}"
    );
}

/// Racing requests: in each round a migration is started to the other
/// node, then `--confirm` and `--rollback` are sent at once from two
/// clients to different agents (seeded order and delay). Exactly one of
/// them may succeed, and the volume must end where the winner said: on
/// the target after a confirm, on the source after a rollback — with one
/// engine and the data written through both exports before the race.
#[test]
fn racing_confirm_and_rollback_leave_one_outcome() {
    use rand::{Rng, SeedableRng};
    let c = cluster("", "", &[]);
    let data = c.attached_volume("v");
    let mut rng = rand::rngs::StdRng::seed_from_u64(c.seed);
    let mut on = "n1".to_string();
    let (mut confirms, mut rollbacks) = (0, 0);
    for round in 0..8u64 {
        let to = if on == "n1" { "n2" } else { "n1" };
        let (code, out) = migrate(&c["n1"], &["v", "--to", to]);
        assert_eq!(code, 0, "round {round}: migrate --to {to}: {out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let target_endpoint = v["migration"]["target_endpoint"]
            .as_str()
            .unwrap()
            .to_string();
        // a write through the target before the race must survive either way
        let byte = 0x10 + round as u8;
        write_pattern(&target_endpoint, byte, round * 65536, 65536);
        patch(&data, byte, round * 65536, 65536);
        let delay = Duration::from_millis(rng.random_range(0..30));
        let (first, second) = if rng.random_bool(0.5) {
            ("--confirm", "--rollback")
        } else {
            ("--rollback", "--confirm")
        };
        let spawn = |agent: &Agent, step: &'static str, wait: Duration| {
            let endpoint = agent.endpoint.clone();
            std::thread::spawn(move || {
                std::thread::sleep(wait);
                let out = Command::new(vigil_tests::agent::vigil_bin())
                    .args(["--endpoint", &endpoint, "volume", "migrate", "v", step])
                    .output()
                    .unwrap();
                (
                    step,
                    out.status.success(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
        };
        let a = spawn(&c["n1"], first, Duration::ZERO);
        let b = spawn(&c["n2"], second, delay);
        let results = [a.join().unwrap(), b.join().unwrap()];
        let won: Vec<&str> = results.iter().filter(|r| r.1).map(|r| r.0).collect();
        eprintln!("round {round}: {first} then {second} after {delay:?}: {results:?}");
        assert!(won.len() <= 1, "round {round}: both succeeded: {results:?}");
        wait_until("migration over", Duration::from_secs(30), || {
            c.volume("v").get("migration").is_none()
        });
        let now_on = c.volume("v")["attached_node"].as_str().unwrap().to_string();
        match won.first() {
            Some(&"--confirm") => {
                assert_eq!(now_on, to, "round {round}: confirm won, volume on {now_on}");
                confirms += 1;
            }
            Some(_) => {
                assert_eq!(
                    now_on, on,
                    "round {round}: rollback won, volume on {now_on}"
                );
                rollbacks += 1;
            }
            // neither returned success: the loser's error named the
            // winner's outcome; whatever it is, it must be consistent
            None => {}
        }
        on = now_on;
        c.assert_settled("v", &on, &data);
    }
    eprintln!("{confirms} confirms and {rollbacks} rollbacks won");
    c.wait_healthy();
}
