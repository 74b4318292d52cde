//! Scenarios: arrange a cluster, place replicas, assert what the operator
//! would see (placements, notes, reasons).

#![allow(clippy::unwrap_used)]

use super::testkit::{Cluster, GIB, disk, node, pairs, replica, volume};
use vigil_model::disk::DiskState;
use vigil_model::volume::DataLocality;

/// n1..n3 in zones a, b, c with one 100 GiB disk each (d1..d3).
fn three_zones() -> Cluster {
    Cluster::new(
        vec![
            node("n1", Some("a")),
            node("n2", Some("b")),
            node("n3", Some("c")),
        ],
        vec![
            disk("d1", "n1", 100),
            disk("d2", "n2", 100),
            disk("d3", "n3", 100),
        ],
    )
}

fn reasons_text(out: &super::Outcome) -> String {
    out.reasons.join("\n")
}

#[test]
fn three_nodes_three_disks_get_one_replica_each() {
    let c = three_zones();
    let out = c.place(&volume("v1", 10 * GIB, 3), 3, None);
    assert_eq!(pairs(&out), [("n1", "d1"), ("n2", "d2"), ("n3", "d3")]);
    assert!(out.notes.is_empty(), "{:?}", out.notes);
    assert!(out.reasons.is_empty(), "{:?}", out.reasons);
}

#[test]
fn count_zero_places_nothing_and_explains_nothing() {
    let out = three_zones().place(&volume("v1", GIB, 3), 0, None);
    assert_eq!(out, super::Outcome::default());
}

#[test]
fn two_zones_for_three_replicas_places_all_with_a_zone_note() {
    let c = Cluster::new(
        vec![
            node("n1", Some("a")),
            node("n2", Some("a")),
            node("n3", Some("b")),
        ],
        vec![
            disk("d1", "n1", 100),
            disk("d2", "n2", 100),
            disk("d3", "n3", 100),
        ],
    );
    let out = c.place(&volume("v1", 10 * GIB, 3), 3, None);
    // zone b is new after n1 (zone a) is taken, so n3 comes second
    assert_eq!(pairs(&out), [("n1", "d1"), ("n3", "d3"), ("n2", "d2")]);
    assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
    let note = &out.notes[0];
    assert!(note.starts_with("zone anti-affinity relaxed"), "{note}");
    assert!(note.contains("shares zone a with n1"), "{note}");
    assert!(out.reasons.is_empty());
}

#[test]
fn hard_zone_anti_affinity_refuses_the_third_with_a_reason() {
    let c = Cluster::new(
        vec![
            node("n1", Some("a")),
            node("n2", Some("a")),
            node("n3", Some("b")),
        ],
        vec![
            disk("d1", "n1", 100),
            disk("d2", "n2", 100),
            disk("d3", "n3", 100),
        ],
    )
    .with_settings(&[("replica-zone-level-soft-anti-affinity", "false")]);
    let out = c.place(&volume("v1", 10 * GIB, 3), 3, None);
    assert_eq!(pairs(&out), [("n1", "d1"), ("n3", "d3")]);
    assert_eq!(
        out.reasons,
        [
            "n1: already holds a replica of v1 (node anti-affinity is hard)",
            "n2: zone a already holds a replica of v1 on n1 (zone anti-affinity is hard)",
            "n3: already holds a replica of v1 (node anti-affinity is hard)",
        ]
    );
}

#[test]
fn unlabeled_nodes_are_each_their_own_zone() {
    let c = Cluster::new(
        vec![node("n1", None), node("n2", None), node("n3", None)],
        vec![
            disk("d1", "n1", 100),
            disk("d2", "n2", 100),
            disk("d3", "n3", 100),
        ],
    )
    .with_settings(&[("replica-zone-level-soft-anti-affinity", "false")]);
    let out = c.place(&volume("v1", GIB, 3), 3, None);
    assert_eq!(out.placed.len(), 3);
    assert!(out.notes.is_empty(), "{:?}", out.notes);
}

#[test]
fn insufficient_capacity_reason_names_both_numbers() {
    let mut c = Cluster::new(vec![node("n1", None)], vec![disk("d1", "n1", 100)]);
    // 90 GiB of another volume already promised: 10 GiB left
    c.replicas.push(replica("other", "n1", "d1", 90 * GIB));
    let out = c.place(&volume("v1", 20 * GIB, 1), 1, None);
    assert!(out.placed.is_empty());
    assert_eq!(
        out.reasons,
        [
            "n1: disk d1 (/data/d1) has 10 GiB free (90 GiB of 100 GiB scheduled), needs 20 GiB at 100% over-provisioning"
        ]
    );
}

#[test]
fn scheduled_bytes_are_recomputed_from_replicas_not_read_from_status() {
    let mut c = Cluster::new(vec![node("n1", None)], vec![disk("d1", "n1", 100)]);
    // a stale status claims the disk is full; no replica is on it
    c.disk_mut("d1").status.scheduled_bytes = 100 * GIB;
    let out = c.place(&volume("v1", 50 * GIB, 1), 1, None);
    assert_eq!(pairs(&out), [("n1", "d1")]);
}

#[test]
fn over_provisioning_200_admits_what_100_refuses() {
    let mut c = Cluster::new(vec![node("n1", None)], vec![disk("d1", "n1", 100)]);
    c.replicas.push(replica("other", "n1", "d1", 80 * GIB));
    let v = volume("v1", 50 * GIB, 1);
    let out = c.place(&v, 1, None);
    assert!(out.placed.is_empty());
    assert!(
        reasons_text(&out).contains("at 100% over-provisioning"),
        "{out:?}"
    );

    let c = Cluster {
        settings: super::testkit::settings(&[("storage-over-provisioning-percentage", "200")]),
        ..c
    };
    assert_eq!(pairs(&c.place(&v, 1, None)), [("n1", "d1")]);
}

#[test]
fn minimal_available_refuses_a_nearly_full_disk() {
    let mut c = Cluster::new(vec![node("n1", None)], vec![disk("d1", "n1", 100)]);
    // the filesystem is shared: only 20 GiB are free, under the default 25%
    c.disk_mut("d1").status.available_bytes = 20 * GIB;
    let out = c.place(&volume("v1", GIB, 1), 1, None);
    assert!(out.placed.is_empty());
    assert_eq!(
        out.reasons,
        [
            "n1: disk d1 (/data/d1) has 20 GiB available, not above the 25% of its 100 GiB (25 GiB) that must stay free"
        ]
    );
}

#[test]
fn minimal_available_counts_the_reserve_as_used() {
    let mut c = Cluster::new(vec![node("n1", None)], vec![disk("d1", "n1", 100)]);
    c.disk_mut("d1").status.available_bytes = 40 * GIB;
    c.disk_mut("d1").spec.reserved_bytes = 20 * GIB;
    let out = c.place(&volume("v1", GIB, 1), 1, None);
    assert!(out.placed.is_empty());
    let text = reasons_text(&out);
    assert!(
        text.contains("20 GiB available beyond its 20 GiB reserve"),
        "{text}"
    );
}

#[test]
fn node_tags_are_required() {
    let mut c = three_zones();
    c.node_mut("n2").node.spec.tags = vec!["ssd".into()];
    let mut v = volume("v1", GIB, 2);
    v.spec.node_tags = vec!["ssd".into()];
    let out = c.place(&v, 2, None);
    assert_eq!(pairs(&out), [("n2", "d2")]);
    assert_eq!(
        out.reasons,
        [
            "n1: lacks node tag ssd",
            "n2: already holds a replica of v1 (node anti-affinity is hard)",
            "n3: lacks node tag ssd",
        ]
    );
}

#[test]
fn disk_tags_are_required() {
    let mut c = Cluster::new(
        vec![node("n1", None)],
        vec![disk("d1", "n1", 100), disk("d2", "n1", 100)],
    );
    c.disk_mut("d2").spec.tags = vec!["nvme".into()];
    let mut v = volume("v1", GIB, 1);
    v.spec.disk_tags = vec!["nvme".into(), "fast".into()];
    let out = c.place(&v, 1, None);
    assert!(out.placed.is_empty());
    assert_eq!(
        out.reasons,
        [
            "n1: disk d1 (/data/d1) lacks disk tags nvme, fast; disk d2 (/data/d2) lacks disk tag fast"
        ]
    );
    c.disk_mut("d2").spec.tags.push("fast".into());
    assert_eq!(pairs(&c.place(&v, 1, None)), [("n1", "d2")]);
}

#[test]
fn unready_evicting_and_disabled_nodes_are_skipped_with_reasons() {
    let mut c = Cluster::new(
        vec![
            node("n1", None),
            node("n2", None),
            node("n3", None),
            node("n4", None),
        ],
        vec![
            disk("d1", "n1", 100),
            disk("d2", "n2", 100),
            disk("d3", "n3", 100),
            disk("d4", "n4", 100),
        ],
    );
    c.node_mut("n2").ready = false;
    c.node_mut("n3").node.spec.allow_scheduling = false;
    c.node_mut("n4").node.spec.eviction_requested = true;
    let out = c.place(&volume("v1", GIB, 2), 2, None);
    assert_eq!(pairs(&out), [("n1", "d1")]);
    assert_eq!(
        out.reasons,
        [
            "n1: already holds a replica of v1 (node anti-affinity is hard)",
            "n2: not ready (lease expired)",
            "n3: scheduling disabled",
            "n4: eviction requested",
        ]
    );
}

#[test]
fn unusable_disks_are_skipped_with_reasons() {
    let mut c = Cluster::new(
        vec![node("n1", None), node("n2", None)],
        vec![
            disk("d1", "n1", 100),
            disk("d2", "n1", 100),
            disk("d3", "n1", 100),
        ],
    );
    c.disk_mut("d1").status.state = DiskState::Missing;
    c.disk_mut("d1").status.message = "no identity file at /data/d1".into();
    c.disk_mut("d2").spec.allow_scheduling = false;
    c.disk_mut("d3").status.state = DiskState::Replaced;
    let out = c.place(&volume("v1", GIB, 1), 1, None);
    assert!(out.placed.is_empty());
    assert_eq!(
        out.reasons,
        [
            "n1: disk d1 (/data/d1) is missing: no identity file at /data/d1; disk d2 (/data/d2) has scheduling disabled; disk d3 (/data/d3) is replaced by another disk",
            "n2: has no disks",
        ]
    );
}

#[test]
fn node_soft_lets_one_node_take_three_replicas_on_distinct_disks() {
    let c = Cluster::new(
        vec![node("n1", Some("a"))],
        vec![
            disk("d1", "n1", 100),
            disk("d2", "n1", 100),
            disk("d3", "n1", 100),
        ],
    )
    .with_settings(&[("replica-node-level-soft-anti-affinity", "true")]);
    let out = c.place(&volume("v1", 10 * GIB, 3), 3, None);
    // each disk in turn: a new disk beats the most room
    assert_eq!(pairs(&out), [("n1", "d1"), ("n1", "d2"), ("n1", "d3")]);
    let node_notes: Vec<_> = out
        .notes
        .iter()
        .filter(|n| n.starts_with("node anti-affinity relaxed"))
        .collect();
    assert_eq!(
        node_notes,
        [
            "node anti-affinity relaxed: no other node can take a replica of v1; n1 now holds 2 of them",
            "node anti-affinity relaxed: no other node can take a replica of v1; n1 now holds 3 of them",
        ]
    );
    // the one node is labeled, so its zone is shared too; no disk is shared
    assert_eq!(out.notes.len(), 4, "{:?}", out.notes);
    assert!(!out.notes.iter().any(|n| n.starts_with("disk")));
}

#[test]
fn node_and_disk_soft_stack_replicas_on_one_disk_with_notes() {
    let c = Cluster::new(vec![node("n1", None)], vec![disk("d1", "n1", 100)])
        .with_settings(&[("replica-node-level-soft-anti-affinity", "true")]);
    let out = c.place(&volume("v1", 10 * GIB, 3), 3, None);
    assert_eq!(pairs(&out), [("n1", "d1"), ("n1", "d1"), ("n1", "d1")]);
    assert!(out.notes.contains(
        &"disk anti-affinity relaxed: every disk that can take a replica of v1 already holds one; disk d1 (/data/d1) on n1 now holds 3 of them".to_string()
    ), "{:?}", out.notes);
    // unlabeled: no zone note beyond the node note
    assert_eq!(out.notes.len(), 4, "{:?}", out.notes);
}

#[test]
fn hard_disk_anti_affinity_refuses_a_second_replica_on_one_disk() {
    let c = Cluster::new(vec![node("n1", None)], vec![disk("d1", "n1", 100)]).with_settings(&[
        ("replica-node-level-soft-anti-affinity", "true"),
        ("replica-disk-level-soft-anti-affinity", "false"),
    ]);
    let out = c.place(&volume("v1", GIB, 2), 2, None);
    assert_eq!(pairs(&out), [("n1", "d1")]);
    assert_eq!(
        out.reasons,
        ["n1: disk d1 (/data/d1) already holds a replica of v1 (disk anti-affinity is hard)"]
    );
}

#[test]
fn soft_node_anti_affinity_still_prefers_another_node() {
    let mut c = three_zones().with_settings(&[("replica-node-level-soft-anti-affinity", "true")]);
    c.replicas.push(replica("v1", "n1", "d1", GIB));
    let out = c.place(&volume("v1", GIB, 3), 2, None);
    assert_eq!(pairs(&out), [("n2", "d2"), ("n3", "d3")]);
    assert!(out.notes.is_empty(), "{:?}", out.notes);
}

#[test]
fn existing_replicas_count_for_anti_affinity() {
    let mut c = three_zones();
    c.replicas.push(replica("v1", "n2", "d2", GIB));
    let out = c.place(&volume("v1", GIB, 3), 2, None);
    assert_eq!(pairs(&out), [("n1", "d1"), ("n3", "d3")]);
}

#[test]
fn the_disk_with_most_room_wins_then_names_break_ties() {
    let mut c = Cluster::new(
        vec![node("n1", None), node("n2", None), node("n3", None)],
        vec![
            disk("d1", "n1", 100),
            disk("d2", "n2", 200),
            disk("d3", "n3", 200),
        ],
    );
    let out = c.place(&volume("v1", GIB, 1), 1, None);
    assert_eq!(
        pairs(&out),
        [("n2", "d2")],
        "n2 and n3 tie on room; n2 sorts first"
    );
    c.replicas.push(replica("other", "n2", "d2", 50 * GIB));
    assert_eq!(
        pairs(&c.place(&volume("v1", GIB, 1), 1, None)),
        [("n3", "d3")]
    );
}

#[test]
fn placements_in_one_call_use_up_capacity() {
    // node soft, one 100 GiB disk: two 40 GiB replicas fit, a third does not
    let c = Cluster::new(vec![node("n1", None)], vec![disk("d1", "n1", 100)])
        .with_settings(&[("replica-node-level-soft-anti-affinity", "true")]);
    let out = c.place(&volume("v1", 40 * GIB, 3), 3, None);
    assert_eq!(out.placed.len(), 2);
    assert_eq!(
        out.reasons,
        [
            "n1: disk d1 (/data/d1) has 20 GiB free (80 GiB of 100 GiB scheduled), needs 40 GiB at 100% over-provisioning"
        ]
    );
}

#[test]
fn best_effort_puts_the_first_replica_on_the_local_node() {
    let c = three_zones();
    let mut v = volume("v1", GIB, 3);
    v.spec.data_locality = DataLocality::BestEffort;
    let out = c.place(&v, 3, Some("n3"));
    assert_eq!(pairs(&out), [("n3", "d3"), ("n1", "d1"), ("n2", "d2")]);
    assert!(out.notes.is_empty(), "{:?}", out.notes);
}

#[test]
fn best_effort_falls_back_with_a_note_when_the_local_node_is_full() {
    let mut c = three_zones();
    c.replicas.push(replica("other", "n3", "d3", 100 * GIB));
    let mut v = volume("v1", GIB, 1);
    v.spec.data_locality = DataLocality::BestEffort;
    let out = c.place(&v, 1, Some("n3"));
    assert_eq!(pairs(&out), [("n1", "d1")]);
    assert_eq!(
        out.notes,
        [
            "data locality best-effort relaxed: the local node cannot take a replica of v1 (n3: disk d3 (/data/d3) has 0 B free (100 GiB of 100 GiB scheduled), needs 1 GiB at 100% over-provisioning); placed on n1 instead"
        ]
    );
}

#[test]
fn disabled_data_locality_ignores_the_local_node() {
    let c = three_zones();
    let out = c.place(&volume("v1", GIB, 1), 1, Some("n3"));
    assert_eq!(pairs(&out), [("n1", "d1")]);
}

#[test]
fn strict_local_places_on_the_local_node() {
    let c = three_zones();
    let mut v = volume("v1", GIB, 1);
    v.spec.data_locality = DataLocality::StrictLocal;
    assert_eq!(pairs(&c.place(&v, 1, Some("n2"))), [("n2", "d2")]);
}

#[test]
fn strict_local_refuses_when_the_local_node_has_no_room() {
    let mut c = three_zones();
    c.replicas.push(replica("other", "n2", "d2", 95 * GIB));
    let mut v = volume("v1", 10 * GIB, 1);
    v.spec.data_locality = DataLocality::StrictLocal;
    let out = c.place(&v, 1, Some("n2"));
    assert!(out.placed.is_empty());
    assert_eq!(
        out.reasons,
        [
            "n2: disk d2 (/data/d2) has 5 GiB free (95 GiB of 100 GiB scheduled), needs 10 GiB at 100% over-provisioning",
            "n1: not n2, and v1 is strict-local to it",
            "n3: not n2, and v1 is strict-local to it",
        ]
    );
}

#[test]
fn strict_local_without_a_local_node_says_so() {
    let mut v = volume("v1", GIB, 1);
    v.spec.data_locality = DataLocality::StrictLocal;
    let out = three_zones().place(&v, 1, None);
    assert!(out.placed.is_empty());
    assert_eq!(
        out.reasons,
        ["v1 is strict-local but has no local node to place its replica on"]
    );
    let out = three_zones().place(&v, 1, Some("n9"));
    assert_eq!(out.reasons[0], "n9: not registered");
}

#[test]
fn an_empty_cluster_still_explains_itself() {
    let c = Cluster::new(Vec::new(), Vec::new());
    let out = c.place(&volume("v1", GIB, 1), 1, None);
    assert!(out.placed.is_empty());
    assert!(!out.reasons.is_empty());
}

fn trouble(since: u64) -> vigil_model::disk::DiskTrouble {
    vigil_model::disk::DiskTrouble {
        since_unix: since,
        last_unix: since + 5,
        errors: 4,
        message: "write layer file /data/d2/replicas/x/volume-head-001.img: Input/output error (os error 5)".into(),
    }
}

#[test]
fn a_failing_disk_gets_no_replica_and_the_reason_says_since_when() {
    let mut c = three_zones();
    c.disk_mut("d2").status.failing = Some(trouble(1_767_225_600));
    let out = c.place(&volume("v1", GIB, 3), 3, None);
    assert_eq!(pairs(&out), [("n1", "d1"), ("n3", "d3")]);
    let text = reasons_text(&out);
    assert!(
        text.contains("n2: disk d2 (/data/d2) returns I/O errors since 2026-01-01T00:00:00.000Z"),
        "{text}"
    );
    assert!(text.contains("Input/output error"), "{text}");
}

#[test]
fn a_disk_that_hit_enospc_gets_no_replica_even_when_statvfs_shows_room() {
    let mut c = three_zones();
    c.disk_mut("d3").status.no_space = Some(trouble(1_767_225_600));
    let out = c.place(&volume("v1", GIB, 3), 3, None);
    assert_eq!(pairs(&out), [("n1", "d1"), ("n2", "d2")]);
    let text = reasons_text(&out);
    assert!(text.contains("n3: disk d3 (/data/d3) is full"), "{text}");
}

#[test]
fn a_failing_disk_is_skipped_for_a_healthy_one_on_the_same_node() {
    let mut c = three_zones();
    c.disks.push(disk("d2b", "n2", 10));
    c.disk_mut("d2").status.failing = Some(trouble(1));
    let out = c.place(&volume("v1", GIB, 3), 3, None);
    // d2b is smaller, so n2 comes last (most room first).
    assert_eq!(pairs(&out), [("n1", "d1"), ("n3", "d3"), ("n2", "d2b")]);
}

#[test]
fn a_recovered_disk_is_schedulable_again() {
    let mut c = three_zones();
    c.disk_mut("d2").status.failing = Some(trouble(1));
    assert_eq!(c.place(&volume("v1", GIB, 3), 3, None).placed.len(), 2);
    c.disk_mut("d2").status.failing = None;
    let out = c.place(&volume("v1", GIB, 3), 3, None);
    assert_eq!(pairs(&out), [("n1", "d1"), ("n2", "d2"), ("n3", "d3")]);
}
