//! A frozen engine wakes up after its volume moved: its queued write must
//! not land (issue 17, sequence 1 — "two writers").
//!
//! Two agents on a real etcd, a 2-replica volume attached on n1 with
//! `volume-attachment-recovery-policy=immediate`. A qemu-io session keeps
//! one NBD connection to n1. n1's agent is frozen (SIGSTOP) and, while it
//! is, the session sends a write: it waits in n1's socket. Once n1's lease
//! is gone the volume is attached on n2, whose engine takes a newer epoch
//! and claims n2's replica, and a different pattern is written and flushed
//! through n2. Then n1 is thawed (SIGCONT): its engine processes the queued
//! write at once, before its controllers read the store.
//!
//! Before engine epochs, n2's replica accepted that write from n1's engine
//! and the session reported it written: the newer engine's acknowledged
//! data was overwritten by the older one. Now the replica refuses it (stale
//! epoch), n1's engine fences itself, the session gets an error, n2's data
//! is intact, and the `EngineFenced` event and the ENGINE_FENCED health
//! check name both epochs.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::{Duration, Instant};

use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::{Cluster, tools};

const OLD: u8 = 0xaa;
const QUEUED: u8 = 0xcc;
const NEW: u8 = 0xbb;

fn reads_as(uri: &str, byte: u8, len: &str) -> (bool, String) {
    tools::try_run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("read -P {byte:#x} 0 {len}"),
            uri,
        ],
    )
}

#[test]
fn a_frozen_engines_queued_write_is_refused_after_the_volume_moved() {
    let mut c = Cluster::on_etcd(&["n1", "n2"]);
    for (name, value) in [
        ("volume-attachment-recovery-policy", "immediate"),
        ("node-down-timeout", "30"),
    ] {
        let (ok, _, err) = c["n2"].cli(&["settings", "set", name, value]);
        assert!(ok, "settings set {name} {value}: {err}");
    }
    let on_n1 = c.create_attached("v", "16MiB", 2, "n1");
    tools::run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("write -P {OLD:#x} 0 64k"),
            "-c",
            "flush",
            &on_n1,
        ],
    );
    wait_until("both replicas RW", Duration::from_secs(30), || {
        doctor(&c["n2"]).0 == 0
    });

    // One connection to n1's engine, open before the freeze.
    let mut session = tools::QemuIoSession::open(&on_n1);
    session.send(&format!("read -P {OLD:#x} 0 64k"));

    c.freeze("n1");
    let frozen = Instant::now();
    // Queued in n1's socket while its agent is frozen.
    session.send(&format!("write -P {QUEUED:#x} 0 64k"));

    wait_until("NODE_DOWN for n1", Duration::from_secs(40), || {
        check(&doctor(&c["n2"]).1, "NODE_DOWN").is_some()
    });
    let on_n2 = c.attach("v", "n2");
    eprintln!(
        "attached on n2 {:.1} s after the freeze",
        frozen.elapsed().as_secs_f64()
    );
    tools::run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            &format!("write -P {NEW:#x} 0 64k"),
            "-c",
            "flush",
            &on_n2,
        ],
    );

    // n1 wakes: its engine handles the queued write before anything else.
    c.thaw("n1");
    let thawed = Instant::now();
    session.send("flush");
    let printed = session.finish();
    eprintln!(
        "qemu-io on n1 after the thaw ({:.1} s):\n{printed}",
        thawed.elapsed().as_secs_f64()
    );
    assert!(
        printed.contains("write failed"),
        "the frozen engine's queued write must fail, not be acknowledged:\n{printed}"
    );
    assert!(
        !printed.contains("wrote 65536/65536 bytes"),
        "the queued write was acknowledged:\n{printed}"
    );

    // The newer engine's data is intact, now and once n1 is back for good.
    let (same, out) = reads_as(&on_n2, NEW, "64k");
    assert!(same, "n2's acknowledged data was overwritten:\n{out}");
    wait_until(
        "EngineFenced recorded by n1",
        Duration::from_secs(30),
        || c["n2"].event("volume/v", "EngineFenced").is_some(),
    );
    let event = c["n2"].event("volume/v", "EngineFenced").unwrap();
    let message = event["message"].as_str().unwrap_or_default().to_string();
    eprintln!("event: {message}");
    // Two paths fence the woken engine, whichever comes first: a replica
    // refusing its request ("claimed by epoch 2"), or the store refusing
    // the in-sync record its failed leg asked for ("superseded by epoch
    // 2"). Under load either can win; both name the node and both epochs.
    assert!(
        message.contains("on n1")
            && message.contains("epoch 1")
            && (message.contains("claimed by epoch 2")
                || message.contains("superseded by epoch 2")),
        "{event}"
    );
    wait_until("n1 runs no engine for v", Duration::from_secs(30), || {
        c["n1"].get("/v1/engines/v").is_none()
    });
    // The incident is a health check for a while, naming node and epoch.
    let report = doctor(&c["n2"]).1;
    let fenced = check(&report, "ENGINE_FENCED").expect("ENGINE_FENCED in doctor");
    assert!(
        fenced
            .to_string()
            .contains("the engine on n1 (epoch 1) was fenced"),
        "{fenced}"
    );
    let (ok, _, err) = c["n2"].cli(&[
        "health",
        "mute",
        "ENGINE_FENCED",
        "--for",
        "1h",
        "--reason",
        "seen: the test froze n1",
    ]);
    assert!(ok, "mute: {err}");
    wait_until("v healthy on n2", Duration::from_secs(60), || {
        doctor(&c["n2"]).0 == 0
    });
    let (same, out) = reads_as(&on_n2, NEW, "64k");
    assert!(same, "after n1's replica was rebuilt:\n{out}");
}
