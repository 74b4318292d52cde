//! Issue 17, item 4, with real agents: WRITE_ZEROES and TRIM sent while a
//! replica is being rebuilt read as zeros from the rebuilt replica alone.
//!
//! Three agents on etcd. A 2-replica volume lives on n1 (its engine, the
//! rebuild source) and n2; n3 takes no replicas at first. Data is written
//! over the whole volume. n3 is opened for scheduling, its agent's writes
//! to its disk (a loop-mounted ext4) are throttled with the blkio cgroup so
//! a rebuild into it takes tens of seconds, and n2 is killed: its replica
//! is replaced on n3 and rebuilt from n1. While n3's replica is WO, the
//! guest sends `write -z` and `discard` over ranges full of data (and new
//! data into part of one). After the rebuild, n3's agent is stopped and its
//! replica directory is read with the engine's replica reader: the zeroed
//! and discarded ranges must be zeros, everything else what was written.
//!
//! Before the fix, the rebuilt replica's head kept those ranges as holes
//! (nothing lay below it yet), and once the source's chain was installed
//! under it the old data showed through them.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use vigil_engine::replica::{Replica, ReplicaOptions};
use vigil_tests::agent::wait_until;
use vigil_tests::ebpf::is_root;
use vigil_tests::faults::{CgroupV1, LoopExt4};
use vigil_tests::{Agent, Cluster, tools};

const MIB: usize = 1 << 20;
const SIZE: usize = 64 * MIB;
/// n3's disk writes per second during the rebuild: 64 MiB take ~16 s.
const WRITE_BPS: u64 = 4 << 20;

/// What the guest does while n3's replica is rebuilt, and where.
const ZEROES: [(usize, usize); 2] = [(4 * MIB, MIB), (40 * MIB, 3 * MIB)];
const DISCARDS: [(usize, usize); 2] = [(20 * MIB, 2 * MIB), (60 * MIB, MIB)];
/// New data written into a zeroed range afterwards (it must win).
const REWRITE: (usize, usize, u8) = (41 * MIB, 64 << 10, 0x5a);

/// `maj:min` of a block device, as the blkio controller wants it.
fn dev_numbers(device: &str) -> String {
    let out = Command::new("stat")
        .args(["-L", "-c", "%t:%T", device])
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (ma, mi) = hex.split_once(':').unwrap();
    format!(
        "{}:{}",
        u32::from_str_radix(ma, 16).unwrap(),
        u32::from_str_radix(mi, 16).unwrap()
    )
}

/// The whole content of a replica directory, read with the engine's own
/// replica reader (the agent that held it is stopped).
fn read_replica(dir: &Path) -> Vec<u8> {
    let r = Replica::open(dir, &ReplicaOptions { direct_io: false })
        .unwrap_or_else(|e| panic!("open replica {}: {e}", dir.display()));
    let mut image = vec![0u8; r.size() as usize];
    for (i, chunk) in image.chunks_mut(MIB).enumerate() {
        r.read((i * MIB) as u64, chunk)
            .unwrap_or_else(|e| panic!("read replica {}: {e}", dir.display()));
    }
    image
}

/// The engine's replica that is not on n1 and not ERR: n3's, once added.
fn rebuilding(n1: &Agent) -> Option<Value> {
    n1.engine("v")["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["local"] == false && r["mode"] != "ERR")
        .cloned()
}

/// 1 MiB regions where `got` differs from `want`, each saying how.
fn differing(got: &[u8], want: &[u8]) -> Vec<String> {
    let zeros = |b: &[u8]| b.iter().all(|&x| x == 0);
    got.chunks(MIB)
        .zip(want.chunks(MIB))
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .map(|(i, (g, w))| {
            let how = if zeros(w) {
                "data where the guest zeroed or discarded"
            } else if zeros(g) {
                "zeros where data was written"
            } else {
                "other data"
            };
            format!("at {i} MiB: {how}")
        })
        .collect()
}

#[test]
fn zeroes_and_trims_during_a_rebuild_read_as_zeros_from_the_rebuilt_replica() {
    assert!(is_root(), "needs root (loop device, blkio cgroup)");
    let root = tempfile::tempdir().unwrap();
    let fs = LoopExt4::create(root.path(), "n3-ext4", 256);
    let n3_disk = fs.path.join("vigil");
    let mut c = Cluster::builder()
        .in_dir(root.path())
        .node_args("n3", &["--disk", n3_disk.to_str().unwrap()])
        .on_etcd(&["n1", "n2", "n3"]);
    c["n1"].set("node-down-timeout", "5");
    c["n1"].set("replica-replenishment-wait-interval", "5");
    let (ok, _, err) = c["n1"].cli(&["node", "update", "n3", "--allow-scheduling", "false"]);
    assert!(ok, "{err}");

    let uri = c.create_attached("v", "64MiB", 2, "n1");
    let data = c.root().join("data");
    tools::random_file(&data, SIZE, 17);
    tools::qemu_write(&data, &uri);
    let mut nodes: Vec<String> = c["n1"]
        .replicas("v")
        .iter()
        .map(|r| r["node"].as_str().unwrap().to_string())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2"], "replicas placed on {nodes:?}");

    // n3 takes the replacement, slowly: its agent's disk writes throttled.
    let (ok, _, err) = c["n1"].cli(&["node", "update", "n3", "--allow-scheduling", "true"]);
    assert!(ok, "{err}");
    let throttle = CgroupV1::new("blkio", c["n3"].pid());
    throttle.set(
        "blkio.throttle.write_bps_device",
        &format!("{} {WRITE_BPS}", dev_numbers(fs.device())),
    );
    c.kill9("n2");

    wait_until(
        "n3's replica added to the engine (WO)",
        Duration::from_secs(90),
        || rebuilding(&c["n1"]).is_some_and(|r| r["mode"] == "WO"),
    );
    let mut cmds: Vec<String> = Vec::new();
    for (off, len) in ZEROES {
        cmds.push(format!("write -z {off} {len}"));
    }
    for (off, len) in DISCARDS {
        cmds.push(format!("discard {off} {len}"));
    }
    let (off, len, pattern) = REWRITE;
    cmds.push(format!("write -P {pattern} {off} {len}"));
    cmds.push("flush".into());
    let mut args = vec!["-f", "raw"];
    for c in &cmds {
        args.extend(["-c", c.as_str()]);
    }
    args.push(&uri);
    let printed = tools::run("qemu-io", &args);
    eprintln!("qemu-io during the rebuild:\n{printed}");
    let target = rebuilding(&c["n1"]).unwrap();
    assert_eq!(
        target["mode"], "WO",
        "the rebuild ended before the zeroes were sent, so this proves nothing (throttle too weak?): {target}"
    );
    eprintln!(
        "rebuild still running after the zeroes: {}",
        target["rebuild"]
    );

    let mut want = std::fs::read(&data).unwrap();
    for (off, len) in ZEROES.iter().chain(DISCARDS.iter()) {
        want[*off..off + len].fill(0);
    }
    want[off..off + len].fill(pattern);

    wait_until(
        "n3's replica rebuilt (RW)",
        Duration::from_secs(180),
        || rebuilding(&c["n1"]).is_some_and(|r| r["mode"] == "RW"),
    );
    drop(throttle);
    let expected = c.root().join("expected");
    std::fs::write(&expected, &want).unwrap();
    assert!(
        tools::qemu_equal(&expected, &uri),
        "the volume does not read what was written and zeroed"
    );

    // The rebuilt replica alone: n3 stopped, its directory read directly.
    let name = c["n1"]
        .replicas("v")
        .into_iter()
        .find(|r| r["node"] == "n3")
        .map(|r| r["name"].as_str().unwrap().to_string())
        .unwrap();
    c.stop("n3");
    let got = read_replica(&n3_disk.join("replicas").join(&name));
    assert_eq!(got.len(), want.len());
    let bad = differing(&got, &want);
    assert!(
        bad.is_empty(),
        "the rebuilt replica {name} alone differs from what the guest wrote, zeroed and discarded, in: {bad:?}"
    );
}
