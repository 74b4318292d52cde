//! Real NBD clients against a replicated vigil volume: nbdinfo, nbdcopy,
//! qemu-io patterns and fio with verification.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use vigil_tests::{Agent, tools};

fn two_replica_volume(
    root: &std::path::Path,
    name: &str,
    size: &str,
) -> (Agent, Agent, serde_json::Value) {
    let a = Agent::start(root, "n1");
    let b = Agent::start(root, "n2");
    let r1 = a.create_replica(&format!("{name}-r1"), size);
    let r2 = b.create_replica(&format!("{name}-r2"), size);
    let e = a.create_engine(name, size, &[&r1, &r2]);
    (a, b, e)
}

#[test]
fn nbdinfo_reports_size_and_block_sizes() {
    let root = tempfile::tempdir().unwrap();
    let (_a, _b, e) = two_replica_volume(root.path(), "info", "32MiB");
    let out = tools::run("nbdinfo", &["--json", e["nbd_uri"].as_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let export = &v["exports"][0];
    assert_eq!(export["export-size"], 32u64 << 20);
    assert_eq!(export["export-name"], "info");
    let preferred = export["block_size_preferred"].as_u64().unwrap();
    assert_eq!(preferred, 4096, "{export}");
    assert!(
        export["block_size_maximum"].as_u64().unwrap() >= 4 << 20,
        "{export}"
    );
}

#[test]
fn nbdcopy_round_trip_over_tcp_and_unix_socket() {
    let root = tempfile::tempdir().unwrap();
    let (_a, _b, e) = two_replica_volume(root.path(), "copy", "16MiB");
    let src = root.path().join("src");
    tools::random_file(&src, 16 << 20, 7);
    tools::run(
        "nbdcopy",
        &[src.to_str().unwrap(), e["nbd_uri"].as_str().unwrap()],
    );
    let back = root.path().join("back");
    tools::run(
        "nbdcopy",
        &[e["nbd_unix_uri"].as_str().unwrap(), back.to_str().unwrap()],
    );
    assert!(
        std::fs::read(&src).unwrap() == std::fs::read(&back).unwrap(),
        "bytes differ after nbdcopy round trip"
    );
}

#[test]
fn qemu_io_patterns_discard_zero_and_flush() {
    let root = tempfile::tempdir().unwrap();
    let (_a, _b, e) = two_replica_volume(root.path(), "qio", "16MiB");
    let uri = e["nbd_uri"].as_str().unwrap();
    let out = tools::run(
        "qemu-io",
        &[
            "-f",
            "raw",
            uri,
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "read -P 0xab 0 1M",
            "-c",
            "discard 0 64k",
            "-c",
            "read -P 0 0 64k",
            "-c",
            "write -z 64k 64k",
            "-c",
            "read -P 0 64k 64k",
            "-c",
            "read -P 0xab 128k 896k",
            "-c",
            "write -P 0x11 513 1000",
            "-c",
            "read -P 0x11 513 1000",
            "-c",
            "read -P 0 0 513",
            "-c",
            "flush",
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert!(!out.to_lowercase().contains("error"), "{out}");
}

/// fio's nbd engine writes 16 MiB of random 4 KiB blocks at QD16 with
/// crc32c checksums, then reads all of it back and verifies every block.
fn fio_verify(uri: &str) {
    let out = tools::run(
        "fio",
        &[
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--size=16M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
            "--output-format=json",
        ],
    );
    let start = out.find('{').unwrap();
    let v: serde_json::Value = serde_json::from_str(&out[start..]).unwrap();
    let job = &v["jobs"][0];
    assert_eq!(job["error"], 0, "{job}");
    assert!(job["write"]["io_bytes"].as_u64().unwrap() >= 16 << 20);
    assert!(
        job["read"]["io_bytes"].as_u64().unwrap() >= 16 << 20,
        "verify pass must read everything back"
    );
}

/// The value of the unlabelled gauge `vigil_io_uring_active` on `a`.
fn io_uring_active(a: &Agent) -> Option<f64> {
    let text = a.get("/metrics").unwrap();
    text.lines()
        .find(|l| l.starts_with("vigil_io_uring_active"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn fio_nbd_engine_with_crc32c_verify() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, e) = two_replica_volume(root.path(), "fio", "32MiB");
    fio_verify(e["nbd_uri"].as_str().unwrap());
    // Both legs went through io_uring: the local one in n1's engine, the
    // remote one in n2's replica server.
    assert_eq!(io_uring_active(&a), Some(1.0));
    assert_eq!(io_uring_active(&b), Some(1.0));
}

#[test]
fn fio_crc32c_verify_through_one_and_three_replicas() {
    let root = tempfile::tempdir().unwrap();
    let agents: Vec<Agent> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Agent::start(root.path(), n))
        .collect();
    let one = agents[0].create_replica("one-r1", "32MiB");
    let e1 = agents[0].create_engine("one", "32MiB", &[&one]);
    fio_verify(e1["nbd_uri"].as_str().unwrap());
    let rs: Vec<String> = agents
        .iter()
        .enumerate()
        .map(|(i, a)| a.create_replica(&format!("three-r{i}"), "32MiB"))
        .collect();
    let refs: Vec<&str> = rs.iter().map(String::as_str).collect();
    let e3 = agents[0].create_engine("three", "32MiB", &refs);
    fio_verify(e3["nbd_uri"].as_str().unwrap());
}

#[test]
fn the_blocking_io_engine_serves_the_same_and_says_so() {
    // `--io-engine blocking` is the fallback where io_uring is unavailable:
    // the same data path on tokio's blocking pool, and a gauge saying so.
    let root = tempfile::tempdir().unwrap();
    let blocking = ["--io-engine", "blocking"];
    let a = Agent::start_with(root.path(), "n1", "test-cluster-token", &blocking);
    let b = Agent::start_with(root.path(), "n2", "test-cluster-token", &blocking);
    let r1 = a.create_replica("blk-r1", "32MiB");
    let r2 = b.create_replica("blk-r2", "32MiB");
    let e = a.create_engine("blk", "32MiB", &[&r1, &r2]);
    fio_verify(e["nbd_uri"].as_str().unwrap());
    assert_eq!(io_uring_active(&a), Some(0.0));
    assert_eq!(io_uring_active(&b), Some(0.0));
}
