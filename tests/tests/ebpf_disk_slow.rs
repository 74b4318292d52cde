//! DISK_SLOW from kernel-measured latency. One agent, its disk an ext4 on a
//! loop device, a 1-replica volume written continuously (4 KiB writes and
//! flushes through NBD). First unthrottled: the kernel's window shows the
//! writes and DISK_SLOW stays away. Then the agent is moved into a blkio
//! cgroup (v1) that throttles its writes to the loop device to 5 IOPS:
//! each O_DIRECT pwrite/fdatasync waits ~200 ms, the engine's own timing
//! agrees, and `vigil doctor` reports DISK_SLOW naming the disk and device.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::ebpf::{TracedVolume, is_root};
use vigil_tests::faults::{CgroupV1, LoopExt4};
use vigil_tests::tools::Writer;

/// Limits `cgroup`'s writes to `device` to `iops` per second.
fn write_iops(cgroup: &CgroupV1, device: &str, iops: u32) {
    let out = Command::new("stat")
        .args(["-L", "-c", "%t:%T", device])
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (ma, mi) = hex.split_once(':').unwrap();
    let (ma, mi) = (
        u32::from_str_radix(ma, 16).unwrap(),
        u32::from_str_radix(mi, 16).unwrap(),
    );
    cgroup.set(
        "blkio.throttle.write_iops_device",
        &format!("{ma}:{mi} {iops}"),
    );
}

#[test]
fn a_throttled_disk_raises_disk_slow_and_an_unthrottled_one_does_not() {
    assert!(is_root(), "needs root (eBPF, cgroups, loop devices)");
    let root = tempfile::tempdir().unwrap();
    let fs = LoopExt4::create(root.path(), "ext4", 128);
    let v = TracedVolume::start(root.path(), &fs.path.join("vigil"), "32MiB", &[]);
    let throttle = CgroupV1::new("blkio", v.agent.pid());

    // --- unthrottled: the window shows writes, no DISK_SLOW -----------------
    let w = Writer::start(&v.endpoint);
    let window = v.wait_window_with_writes(10);
    let (mut a, disk) = (v.agent, v.disk);
    eprintln!("unthrottled window: {window}");
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let (_, report) = doctor(&a);
        assert!(
            check(&report, "DISK_SLOW").is_none(),
            "DISK_SLOW without a throttle: {report}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // --- throttled to 5 write IOPS: DISK_SLOW ---------------------------------
    write_iops(&throttle, fs.device(), 5);
    let mut report = Value::Null;
    wait_until("DISK_SLOW", Duration::from_secs(60), || {
        report = doctor(&a).1;
        check(&report, "DISK_SLOW").is_some()
    });
    let item = &check(&report, "DISK_SLOW").unwrap()["items"][0];
    assert_eq!(item["object"], format!("disk/{disk}"), "{report}");
    let msg = item["message"].as_str().unwrap();
    let dev = fs.device().trim_start_matches("/dev/");
    assert!(msg.contains(dev), "names the device {dev}: {msg}");
    assert!(
        msg.contains("the engine's writes"),
        "user-space timing next to it: {msg}"
    );
    eprintln!("DISK_SLOW: {msg}");
    let (_, human, _) = a.cli_code(&["doctor"]);
    assert!(human.contains("DISK_SLOW"), "{human}");
    drop(throttle);
    w.stop();
    a.stop();
}
