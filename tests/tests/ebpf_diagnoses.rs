//! The eBPF-fed diagnoses beyond DISK_SLOW (which has its own test), each
//! from a real fault seen by the kernel programs:
//!
//! * AGENT_CPU_STARVED: the agent, kept busy by an NBD writer, is moved
//!   into a cpu cgroup (v1) allowed 30 ms of CPU per second — what a
//!   container CPU limit set too low does. Its threads then wait most of a
//!   second in the run queue each time the quota runs out; the run-queue
//!   probe (sched_switch with the scheduler's wait accounting) sees it and `vigil doctor`
//!   reports AGENT_CPU_STARVED for the node. Unthrottled, with the same
//!   writer, it does not.
//! * DISK_IO_ERRORS: a 1-replica volume on a disk that is a FUSE
//!   passthrough failing writes with EIO on demand. The syscall probe
//!   sees the agent's pwrite/fdatasync on the replica file return -EIO:
//!   `vigil_ebpf_syscall_errors_total` grows for that disk and `vigil
//!   doctor` reports DISK_IO_ERRORS naming it. Before the fault it does
//!   not.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::Agent;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::faults::{CgroupV1, EioFs};
use vigil_tests::tools::Writer;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(euid == 0, "needs root (eBPF, cgroups, FUSE)");
}

/// An agent on `disk` with eBPF required (and `extra` arguments) and a
/// 1-replica volume `v`
/// attached: (agent, NBD endpoint, the replica's disk UUID).
fn agent_with_volume(
    root: &std::path::Path,
    disk: &str,
    extra: &[&str],
) -> (Agent, String, String) {
    let mut args = vec!["--disk", disk, "--ebpf", "required"];
    args.extend_from_slice(extra);
    let a = Agent::start_with(root, "n1", "tok", &args);
    a.wait_live();
    a.json(&[
        "volume",
        "create",
        "v",
        "--size",
        "32MiB",
        "--replicas",
        "1",
    ]);
    let (ok, out, err) = a.cli(&["volume", "attach", "v"]);
    assert!(ok, "attach: {err}");
    let disk = a.json(&["volume", "get", "v"])["replicas"][0]["disk"]
        .as_str()
        .unwrap()
        .to_string();
    (a, out.trim().to_string(), disk)
}

fn kernel_window(a: &Agent) -> Value {
    a.json(&["node", "get", "n1"])["kernel_io"].clone()
}

/// Asserts `code` stays away for `secs` seconds of doctor runs.
fn stays_away(a: &Agent, code: &str, secs: u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        let (_, report) = doctor(a);
        assert!(
            check(&report, code).is_none(),
            "{code} before the fault: {report}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn a_cpu_starved_agent_raises_agent_cpu_starved() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let disk_dir = root.path().join("disk");
    let (mut a, endpoint, _) = agent_with_volume(root.path(), disk_dir.to_str().unwrap(), &[]);
    let w = Writer::start(&endpoint);

    // --- unthrottled: run-queue waits are measured, no AGENT_CPU_STARVED ----
    let mut window = Value::Null;
    wait_until(
        "a kernel window with run-queue waits",
        Duration::from_secs(40),
        || {
            window = kernel_window(&a);
            window["runqueue_waits"].as_u64() > Some(0)
        },
    );
    eprintln!("unthrottled window: {window}");
    let probes = window["probes"].as_array().unwrap();
    assert!(probes.iter().any(|p| p == "runqueue"), "{window}");
    stays_away(&a, "AGENT_CPU_STARVED", 10);

    // --- 30 ms of CPU per second: AGENT_CPU_STARVED -------------------------
    let cpu = CgroupV1::new("cpu", a.pid());
    cpu.set("cpu.cfs_period_us", "1000000");
    cpu.set("cpu.cfs_quota_us", "30000");
    let mut report = Value::Null;
    wait_until("AGENT_CPU_STARVED", Duration::from_secs(120), || {
        report = doctor(&a).1;
        check(&report, "AGENT_CPU_STARVED").is_some()
    });
    let window = kernel_window(&a);
    eprintln!("throttled window: {window}");
    drop(cpu);
    w.stop();
    let c = check(&report, "AGENT_CPU_STARVED").unwrap();
    let item = &c["items"][0];
    assert_eq!(item["object"], "node/n1", "{report}");
    let msg = item["message"].as_str().unwrap();
    assert!(
        msg.contains("kept off a CPU") || msg.contains("waited up to"),
        "{msg}"
    );
    assert!(
        !c["cause"].as_str().unwrap_or_default().is_empty()
            && !c["fix"].as_str().unwrap_or_default().is_empty(),
        "cause and fix are given: {c}"
    );
    eprintln!("AGENT_CPU_STARVED: {msg}");
    let (_, human, _) = a.cli_code(&["doctor"]);
    assert!(human.contains("AGENT_CPU_STARVED"), "{human}");
    a.stop();
}

/// `vigil_ebpf_syscall_errors_total` summed over `disk`'s series.
fn syscall_errors(a: &Agent, disk: &str) -> f64 {
    let page = a.get("/metrics").unwrap();
    page.lines()
        .filter(|l| {
            l.starts_with("vigil_ebpf_syscall_errors_total{")
                && l.contains(&format!("disk=\"{disk}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_disk_returning_eio_raises_disk_io_errors() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let fs = EioFs::mount(root.path(), "disk");
    // Every call traced: the engine stops writing to a replica after its
    // first error, which a sampled probe could miss (the block probe sees
    // nothing here: a FUSE disk has no block device).
    let (mut a, endpoint, disk) = agent_with_volume(
        root.path(),
        fs.path.to_str().unwrap(),
        &["--ebpf-syscall-duty", "100"],
    );

    // --- healthy disk: writes are traced, no errors, no DISK_IO_ERRORS ------
    let w = Writer::start(&endpoint);
    let mut window = Value::Null;
    wait_until(
        "a kernel window with writes on the disk",
        Duration::from_secs(40),
        || {
            window = kernel_window(&a);
            window["disks"].as_array().is_some_and(|d| {
                d.iter()
                    .any(|d| d["disk"] == disk.as_str() && d["writes"].as_u64() >= Some(10))
            })
        },
    );
    eprintln!("healthy window: {window}");
    assert_eq!(syscall_errors(&a, &disk), 0.0);
    stays_away(&a, "DISK_IO_ERRORS", 6);

    // --- EIO on writes and syncs: DISK_IO_ERRORS -------------------------------
    fs.fail_writes(true);
    wait_until(
        "vigil_ebpf_syscall_errors_total grows",
        Duration::from_secs(30),
        || syscall_errors(&a, &disk) > 0.0,
    );
    let mut report = Value::Null;
    wait_until("DISK_IO_ERRORS", Duration::from_secs(60), || {
        report = doctor(&a).1;
        check(&report, "DISK_IO_ERRORS").is_some()
    });
    w.stop();
    fs.fail_writes(false);
    let item = check(&report, "DISK_IO_ERRORS").unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["object"] == format!("disk/{disk}"))
        .unwrap_or_else(|| panic!("DISK_IO_ERRORS names disk/{disk}: {report}"))
        .clone();
    let msg = item["message"].as_str().unwrap();
    eprintln!(
        "DISK_IO_ERRORS: {msg} ({} syscall errors)",
        syscall_errors(&a, &disk)
    );
    let (_, human, _) = a.cli_code(&["doctor"]);
    assert!(human.contains("DISK_IO_ERRORS"), "{human}");
    a.stop();
}
