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
//! * REPLICA_LINK_RETRANSMITS, both ways: two agents with eBPF on a real
//!   etcd, all inside a network namespace of the test's own (only its
//!   loopback), a 2-replica volume attached on n1 and written
//!   continuously. On the clean link both nodes measure its RTT and no
//!   check is raised. An nftables rule then drops 10 % of the packets
//!   arriving at n2's replica server (the engine's writes: n1
//!   retransmits, `link/n1->n2`) or, in the other test, 10 % of its
//!   answers arriving at n1 (n2's replica server retransmits,
//!   `link/n2->n1`); the sender's tcp probe counts it for its peer and
//!   `vigil doctor` reports REPLICA_LINK_RETRANSMITS for that link.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::Agent;
use vigil_tests::Cluster;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::ebpf::{TracedVolume, is_root};
use vigil_tests::faults::{CgroupV1, EioFs};
use vigil_tests::tools::{Writer, run};

fn require_root() {
    assert!(is_root(), "needs root (eBPF, cgroups, FUSE)");
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
    let v = TracedVolume::start(root.path(), &disk_dir, "32MiB", &[]);
    let w = Writer::start(&v.endpoint);

    // --- unthrottled: run-queue waits are measured, no AGENT_CPU_STARVED ----
    let mut window = Value::Null;
    wait_until(
        "a kernel window with run-queue waits",
        Duration::from_secs(40),
        || {
            window = v.window();
            window["runqueue_waits"].as_u64() > Some(0)
        },
    );
    eprintln!("unthrottled window: {window}");
    let probes = window["probes"].as_array().unwrap();
    assert!(probes.iter().any(|p| p == "runqueue"), "{window}");
    let mut a = v.agent;
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
    let window = a.json(&["node", "get", "n1"])["kernel_io"].clone();
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
    let v = TracedVolume::start(
        root.path(),
        &fs.path,
        "32MiB",
        &["--ebpf-syscall-duty", "100"],
    );

    // --- healthy disk: writes are traced, no errors, no DISK_IO_ERRORS ------
    let w = Writer::start(&v.endpoint);
    let window = v.wait_window_with_writes(10);
    let (mut a, disk) = (v.agent, v.disk);
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

/// Moves this test thread — and every process and thread it starts from
/// now on — into a new network namespace with only its loopback up, so
/// the packet loss the test adds touches nothing else on the machine.
fn private_network() {
    // SAFETY: unshare has no memory-safety preconditions; it changes the
    // namespaces of the calling thread only.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    run("ip", &["link", "set", "lo", "up"]);
}

/// Which packets of a replica link the test loses.
#[derive(Clone, Copy)]
enum Lose {
    /// Those sent to the replica server's port: the engine's writes.
    ToServer,
    /// Those sent from it: the replica server's answers.
    FromServer,
}

/// Drops `percent` % of the TCP packets to or from `port` as they arrive
/// (nftables input hook, in the test's own network namespace). Not on
/// output: a packet dropped there is refused to the sending socket at once
/// (EPERM), which sends it again as new data, not as a retransmit; dropped
/// on arrival it is lost on the wire as far as the sender knows.
fn lose_packets(which: Lose, port: u16, percent: u32) {
    run("nft", &["add", "table", "inet", "vigiltest"]);
    run(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "vigiltest",
            "in",
            "{ type filter hook input priority 0 ; }",
        ],
    );
    let field = match which {
        Lose::ToServer => "dport",
        Lose::FromServer => "sport",
    };
    let rule = format!("tcp {field} {port} numgen random mod 100 < {percent} drop");
    let mut args = vec!["add", "rule", "inet", "vigiltest", "in"];
    args.extend(rule.split(' '));
    run("nft", &args);
}

/// The first string under a key named `key` anywhere in `v`.
fn find_str(v: &Value, key: &str) -> Option<String> {
    match v {
        Value::Object(m) => m
            .get(key)
            .and_then(|x| x.as_str().map(str::to_string))
            .or_else(|| m.values().find_map(|x| find_str(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_str(x, key)),
        _ => None,
    }
}

/// `vigil_ebpf_tcp_retransmits_total` for `peer` on `a`.
fn retransmits(a: &Agent, peer: &str) -> f64 {
    let page = a.get("/metrics").unwrap();
    page.lines()
        .filter(|l| {
            l.starts_with("vigil_ebpf_tcp_retransmits_total{")
                && l.contains(&format!("peer_node=\"{peer}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether `a`'s kernel window has RTT samples of its replica link to
/// `peer`.
fn rtt_measured(a: &Agent, peer: &str) -> bool {
    let window = a.json(&["node", "get", &a.name])["kernel_io"].clone();
    window["peers"].as_array().is_some_and(|p| {
        p.iter()
            .any(|p| p["node"] == peer && p["rtt_mean_seconds"].as_f64().is_some_and(|r| r > 0.0))
    })
}

/// Two agents with eBPF on a real etcd, in a network namespace of the
/// test's own, and a 2-replica volume attached on n1 written continuously
/// (its second replica on n2). On the clean link both measure its RTT and
/// neither raises REPLICA_LINK_RETRANSMITS; then `which` packets of the
/// link to n2's replica server are lost, and the node sending them — n1
/// for the writes, n2 for the answers — must count its retransmits for
/// the other and raise REPLICA_LINK_RETRANSMITS for `link/SENDER->OTHER`.
fn lossy_link(which: Lose) {
    require_root();
    private_network();
    let mut c = Cluster::builder()
        .args(&["--ebpf", "required"])
        .on_etcd(&["n1", "n2"]);
    let endpoint = c.create_attached("v", "32MiB", 2, "n1");
    let n2_node = c["n2"].json(&["node", "get", "n2"]);
    let address = find_str(&n2_node, "replica_address")
        .unwrap_or_else(|| panic!("no replica_address in {n2_node}"));
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let (sender, other) = match which {
        Lose::ToServer => (&c["n1"], "n2"),
        Lose::FromServer => (&c["n2"], "n1"),
    };

    // --- a clean link: RTT measured both ways, no retransmit check -------
    let w = Writer::start(&endpoint);
    wait_until(
        "n1's and n2's kernel windows have RTT samples of their link",
        Duration::from_secs(40),
        || rtt_measured(&c["n1"], "n2") && rtt_measured(&c["n2"], "n1"),
    );
    stays_away(&c["n1"], "REPLICA_LINK_RETRANSMITS", 6);

    // --- 10 % of the chosen packets lost ----------------------------------
    lose_packets(which, port, 10);
    wait_until(
        &format!(
            "vigil_ebpf_tcp_retransmits_total{{peer_node={other}}} grows on {}",
            sender.name
        ),
        Duration::from_secs(60),
        || retransmits(sender, other) > 0.0,
    );
    let link = format!("link/{}->{other}", sender.name);
    let mut report = Value::Null;
    wait_until(
        &format!("REPLICA_LINK_RETRANSMITS for {link}"),
        Duration::from_secs(90),
        || {
            report = doctor(&c["n1"]).1;
            check(&report, "REPLICA_LINK_RETRANSMITS")
                .is_some_and(|c| c["items"].to_string().contains(&link))
        },
    );
    w.stop();
    let found = check(&report, "REPLICA_LINK_RETRANSMITS").unwrap();
    let items = found["items"].as_array().unwrap();
    let item = items.iter().find(|i| i["object"] == link.as_str()).unwrap();
    let msg = item["message"].as_str().unwrap();
    eprintln!(
        "REPLICA_LINK_RETRANSMITS: {msg} ({} retransmits counted)",
        retransmits(sender, other)
    );
    let (_, human, _) = c["n1"].cli_code(&["doctor"]);
    assert!(human.contains("REPLICA_LINK_RETRANSMITS"), "{human}");
    c.stop("n1");
    c.stop("n2");
}

#[test]
fn losing_an_engines_writes_raises_replica_link_retransmits_on_its_node() {
    lossy_link(Lose::ToServer);
}

#[test]
fn losing_a_replica_servers_answers_raises_replica_link_retransmits_on_its_node() {
    lossy_link(Lose::FromServer);
}
