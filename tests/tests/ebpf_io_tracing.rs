//! eBPF I/O tracing with the real kernel (root). The agent's disk is an
//! ext4 on loop device A; another process writes with O_DIRECT to a file
//! on loop device B at the same time. After 32 MiB written through a
//! 1-replica volume, the agent's `vigil_ebpf_*` syscall and block series
//! have grown — for its disk and device A only: no series names device B,
//! and the syscall series name only the vigil disk. The page passes
//! `promtool check metrics`.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::process::Command;

use vigil_tests::ebpf::{TracedVolume, is_root};
use vigil_tests::faults::LoopExt4;
use vigil_tests::prom::{promtool_check, sample};
use vigil_tests::tools;

fn dev_name(dev: &str) -> String {
    dev.trim_start_matches("/dev/").to_string()
}

/// Sum of `name` samples whose labels include all of `labels`.
fn sum(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            let rest = rest.trim_end_matches('}');
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

#[test]
fn kernel_counts_grow_for_vigils_files_and_device_only() {
    assert!(
        is_root(),
        "this test loads eBPF programs: run it as root (tests/run.sh does)"
    );
    let root = tempfile::tempdir().unwrap();
    let vigil_fs = LoopExt4::create(root.path(), "vigil-ext4", 192);
    let other_fs = LoopExt4::create(root.path(), "other-ext4", 96);
    // The syscall probe is sampled by default; this test counts every
    // call, so it keeps the probe attached.
    let v = TracedVolume::start(
        root.path(),
        &vigil_fs.path.join("vigil"),
        "64MiB",
        &["--ebpf-syscall-duty", "100"],
    );
    let (a, endpoint, disk) = (v.agent, v.endpoint, v.disk);
    // The agent registers its open replica files with the kernel every
    // second (docs/ebpf.md): give it that second after the replica opened.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let dev_a = dev_name(vigil_fs.device());
    let dev_b = dev_name(other_fs.device());

    let before = a.get("/metrics").unwrap();
    assert_eq!(
        sample(&before, "vigil_ebpf_loaded", &[("node", "n1")]),
        Some(1.0),
        "{before}"
    );
    let sys_write = |p: &str| {
        sum(
            p,
            "vigil_ebpf_syscall_latency_seconds_count",
            &[("disk", &disk), ("op", "write")],
        )
    };
    let blk_write = |p: &str| {
        sum(
            p,
            "vigil_ebpf_block_latency_seconds_count",
            &[("device", &dev_a), ("op", "write")],
        )
    };

    // Another process writes to another file on another device meanwhile.
    let other_file = other_fs.path.join("other.bin");
    let mut dd = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", other_file.display()),
            "bs=64k",
            "count=512",
            "oflag=direct",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let data = root.path().join("data");
    tools::random_file(&data, 32 << 20, 7);
    tools::qemu_write(&data, &endpoint);
    assert!(
        dd.wait().unwrap().success(),
        "dd to {}",
        other_file.display()
    );
    assert!(
        tools::qemu_equal(&data, &endpoint),
        "volume content differs"
    );

    let after = a.get("/metrics").unwrap();
    let (w0, w1) = (sys_write(&before), sys_write(&after));
    let (b0, b1) = (blk_write(&before), blk_write(&after));
    eprintln!("syscall writes {w0} -> {w1}; block writes on {dev_a} {b0} -> {b1}");
    // 32 MiB in requests of at most 32 MiB each, split by the engine and
    // the filesystem: at least a few writes, and at least 32 MiB divided by
    // the device's largest request (`max_sectors_kb`) block requests.
    assert!(w1 > w0, "syscall write count did not grow: {w0} -> {w1}");
    let max_kb: f64 = std::fs::read_to_string(format!("/sys/block/{dev_a}/queue/max_sectors_kb"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(512.0);
    let least = ((32u64 << 10) as f64 / max_kb).floor();
    assert!(
        b1 >= b0 + least,
        "block write count on {dev_a}: {b0} -> {b1} (at least {least} requests of at most {max_kb} KiB expected)"
    );
    let syscall_sum_after = sum(
        &after,
        "vigil_ebpf_syscall_latency_seconds_sum",
        &[("disk", &disk), ("op", "write")],
    );
    assert!(syscall_sum_after > 0.0, "no write time recorded");

    // Only vigil's device and disk: nothing about device B, and every
    // syscall series names the vigil disk.
    for l in after.lines().filter(|l| l.starts_with("vigil_ebpf_")) {
        assert!(
            !l.contains(&format!("device=\"{dev_b}\"")),
            "a series names the other device {dev_b}: {l}"
        );
        if l.starts_with("vigil_ebpf_syscall_") {
            assert!(l.contains(&format!("disk=\"{disk}\"")), "{l}");
        }
    }
    assert_eq!(
        sample(&after, "vigil_ebpf_block_inflight", &[("device", &dev_a)]).map(|v| v >= 0.0),
        Some(true),
        "{after}"
    );
    let complaints = promtool_check(&after);
    assert!(complaints.is_empty(), "promtool: {complaints}");
}
