//! The eBPF-fed checks on hand-built views: a node's kernel window says
//! what the kernel saw; the checks fire on it and only on fresh evidence.

use super::codes::*;
use super::{View, evaluate};
use vigil_model::Node;
use vigil_model::kernel_io::{DiskKernelIo, KernelIo, PeerKernelIo};
use vigil_model::node::{NodeSpec, NodeStatus};

const NOW: u64 = 1_000_000;

fn view(k: KernelIo) -> View {
    let node = |name: &str, kernel_io| Node {
        name: name.into(),
        spec: NodeSpec::default(),
        status: NodeStatus {
            kernel_io,
            ..NodeStatus::default()
        },
    };
    View {
        observer: "n1".into(),
        now_unix: NOW,
        nodes: vec![node("n1", Some(k)), node("n2", None)],
        live: ["n1", "n2"].map(String::from).into(),
        rebuild_stuck_secs: 300,
        ..View::default()
    }
}

fn disk(writes: u64, write_s: f64, engine_s: Option<f64>) -> DiskKernelIo {
    DiskKernelIo {
        disk: "d1".into(),
        path: "/srv/d1".into(),
        device: Some("loop3".into()),
        writes,
        write_mean_seconds: write_s,
        fsyncs: 2,
        fsync_mean_seconds: write_s,
        engine_write_mean_seconds: engine_s,
        engine_writes: writes,
        ..DiskKernelIo::default()
    }
}

fn window(disks: Vec<DiskKernelIo>) -> KernelIo {
    KernelIo {
        at: NOW - 3,
        window_secs: 10,
        disks,
        ..KernelIo::default()
    }
}

fn codes(v: &View) -> Vec<String> {
    evaluate(v).checks.into_iter().map(|c| c.code).collect()
}

#[test]
fn slow_writes_that_the_engine_also_sees_are_disk_slow() {
    let v = view(window(vec![disk(40, 0.2, Some(0.21))]));
    let r = evaluate(&v);
    let c = r
        .checks
        .iter()
        .find(|c| c.code == DISK_SLOW)
        .expect("DISK_SLOW");
    assert_eq!(c.items[0].object, "disk/d1");
    assert!(
        c.items[0].message.contains("loop3"),
        "{}",
        c.items[0].message
    );
    assert!(
        c.items[0].message.contains("210.0 ms"),
        "{}",
        c.items[0].message
    );
}

#[test]
fn fast_writes_or_a_disagreeing_engine_or_few_calls_are_not_disk_slow() {
    assert!(codes(&view(window(vec![disk(40, 0.002, Some(0.003))]))).is_empty());
    // The engine sees fast writes: the kernel figure is not what users feel.
    assert!(codes(&view(window(vec![disk(40, 0.2, Some(0.01))]))).is_empty());
    // Too few calls to judge (2 fsyncs + 3 writes < 10).
    assert!(codes(&view(window(vec![disk(3, 0.2, None)]))).is_empty());
}

#[test]
fn a_stale_window_or_a_node_without_its_lease_says_nothing() {
    let mut k = window(vec![disk(40, 0.2, None)]);
    k.at = NOW - 120;
    assert!(codes(&view(k)).is_empty());
    let mut v = view(window(vec![disk(40, 0.2, None)]));
    v.live.remove("n1");
    assert!(!codes(&v).contains(&DISK_SLOW.to_string()));
}

#[test]
fn errors_retransmits_and_starvation_each_have_their_check() {
    let mut d = disk(5, 0.001, None);
    d.syscall_errors = 3;
    let mut k = window(vec![d]);
    k.peers = vec![PeerKernelIo {
        node: "n2".into(),
        retransmits: 25,
        rtt_mean_seconds: 0.004,
    }];
    k.runqueue_waits = 400;
    k.runqueue_p99_seconds = 0.524;
    let got = codes(&view(k.clone()));
    for want in [DISK_IO_ERRORS, REPLICA_LINK_RETRANSMITS, AGENT_CPU_STARVED] {
        assert!(
            got.contains(&want.to_string()),
            "{want} missing from {got:?}"
        );
    }
}

#[test]
fn an_unavailable_note_raises_nothing() {
    let k = KernelIo {
        at: NOW,
        unavailable: Some("not_permitted: no CAP_BPF".into()),
        ..KernelIo::default()
    };
    assert!(codes(&view(k)).is_empty());
}

#[test]
fn a_few_long_waits_among_many_short_ones_are_starvation() {
    // A CPU quota: thousands of short waits, and the agent held off the
    // CPU for most of a second a few times; the 99th percentile is small.
    let mut k = window(vec![]);
    k.runqueue_waits = 60_000;
    k.runqueue_p99_seconds = 0.000_256;
    k.runqueue_long_waits = 2;
    assert!(!codes(&view(k.clone())).contains(&AGENT_CPU_STARVED.to_string()));
    k.runqueue_long_waits = 3;
    assert!(codes(&view(k)).contains(&AGENT_CPU_STARVED.to_string()));
}
