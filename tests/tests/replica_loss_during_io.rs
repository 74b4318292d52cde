//! A replica lost *while* a client is writing: fio keeps going with no
//! error and verifies every block; `engine show` names the lost replica.
//! Also a frozen (SIGSTOP) replica: marked ERR by timeout, I/O continues.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_tests::Agent;
use vigil_tests::agent::wait_until;

fn fio_verify(uri: &str) -> std::process::Child {
    Command::new("fio")
        .args([
            "--name=load",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--rw=randwrite",
            "--bs=64k",
            "--iodepth=8",
            "--size=64M",
            "--loops=4",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
            "--output-format=json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fio (apt-get install fio)")
}

fn fio_ok(child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fio failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    assert_eq!(v["jobs"][0]["error"], 0, "{}", v["jobs"][0]);
}

#[test]
fn kill9_of_a_replica_agent_during_fio_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start(root.path(), "n1");
    let b = Agent::start(root.path(), "n2");
    let mut c = Agent::start(root.path(), "n3");
    let r1 = a.create_replica("l-r1", "64MiB");
    let r2 = b.create_replica("l-r2", "64MiB");
    let r3 = c.create_replica("l-r3", "64MiB");
    let e = a.create_engine("l", "64MiB", &[&r1, &r2, &r3]);
    let fio = fio_verify(e["nbd_uri"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(700));
    let killed = Instant::now();
    c.kill9();
    wait_until("n3's replica ERR", Duration::from_secs(10), || {
        a.engine("l")["replicas"][2]["mode"] == "ERR"
    });
    eprintln!(
        "replica marked ERR {:?} after kill -9 under load",
        killed.elapsed()
    );
    fio_ok(fio);
    let shown = a.engine("l");
    assert_eq!(shown["robustness"], "degraded");
    assert_eq!(
        shown["replicas"][2]["fault"]["reason"], "connection_lost",
        "{shown}"
    );
}

#[test]
fn a_frozen_replica_is_marked_err_by_timeout_and_io_continues() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start(root.path(), "n1");
    let b = Agent::start(root.path(), "n2");
    let r1 = a.create_replica("f-r1", "64MiB");
    let r2 = b.create_replica("f-r2", "64MiB");
    let e = a.create_engine("f", "64MiB", &[&r1, &r2]);
    let frozen = Instant::now();
    b.signal(libc::SIGSTOP);
    wait_until("frozen replica ERR", Duration::from_secs(10), || {
        a.engine("f")["replicas"][1]["mode"] == "ERR"
    });
    eprintln!(
        "idle frozen replica marked ERR {:?} after SIGSTOP",
        frozen.elapsed()
    );
    let shown = a.engine("f");
    assert_eq!(
        shown["replicas"][1]["fault"]["reason"], "timeout",
        "{shown}"
    );
    fio_ok(fio_verify(e["nbd_uri"].as_str().unwrap()));
    b.signal(libc::SIGCONT);
}
