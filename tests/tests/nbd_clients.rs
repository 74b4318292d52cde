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

#[test]
fn fio_nbd_engine_with_crc32c_verify() {
    let root = tempfile::tempdir().unwrap();
    let (_a, _b, e) = two_replica_volume(root.path(), "fio", "32MiB");
    let uri = e["nbd_uri"].as_str().unwrap();
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
