//! `evaluate` on hand-built views: each scenario arranges the cluster,
//! injects one fault and asserts the checks, their roots and causality.

use super::codes::*;
use super::report::{ItemRef, Report, Status};
use super::{View, evaluate};
use vigil_model::disk::{DiskSpec, DiskState, DiskStatus};
use vigil_model::node::{NodeSpec, NodeStatus};
use vigil_model::replica::ReplicaMode;
use vigil_model::replica::{
    IntegrityKind, IntegrityProblem, ReplicaFault, ReplicaRebuild, ReplicaSpec,
};
use vigil_model::volume::{DataLocality, Robustness, VolumeSpec, VolumeStatus};
use vigil_model::{Disk, InstanceState, Mute, Node, Replica, Volume, VolumeState};

const NOW: u64 = 1_000_000;
const GIB: u64 = 1 << 30;

fn node(name: &str) -> Node {
    Node {
        name: name.into(),
        spec: NodeSpec {
            api_address: format!("http://{name}:9500"),
            ..NodeSpec::default()
        },
        status: NodeStatus::default(),
    }
}

fn disk(uuid: &str, node: &str) -> Disk {
    Disk {
        uuid: uuid.into(),
        spec: DiskSpec {
            node: node.into(),
            path: format!("/srv/{node}/disk"),
            ..DiskSpec::default()
        },
        status: DiskStatus {
            state: DiskState::Ready,
            capacity_bytes: 100 * GIB,
            available_bytes: 80 * GIB,
            ..DiskStatus::default()
        },
    }
}

fn volume(name: &str, replicas: u32, attached: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        spec: VolumeSpec {
            size: GIB,
            replicas,
            data_locality: DataLocality::Disabled,
            node: attached.map(str::to_string),
            node_tags: vec![],
            disk_tags: vec![],
            created_at: 0.0,
        },
        status: VolumeStatus {
            state: if attached.is_some() {
                VolumeState::Attached
            } else {
                VolumeState::Detached
            },
            robustness: if attached.is_some() {
                Robustness::Healthy
            } else {
                Robustness::Unknown
            },
            attached_node: attached.map(str::to_string),
            endpoint: String::new(),
            message: String::new(),
            scheduling: vec![],
            transitions: 0,
            migration: None,
            maintenance: None,
            fenced: None,
            writes_blocked: String::new(),
        },
    }
}

fn replica(name: &str, volume: &str, node: &str, mode: ReplicaMode) -> Replica {
    let mut r = Replica::new(
        name.into(),
        ReplicaSpec {
            volume: volume.into(),
            node: node.into(),
            disk: format!("d-{node}"),
            size: GIB,
        },
    );
    r.status.state = InstanceState::Running;
    r.status.address = format!("tcp://{node}:9501/{name}");
    r.status.mode = mode;
    r
}

fn fault(reason: &str, message: &str) -> Option<ReplicaFault> {
    Some(ReplicaFault {
        reason: reason.into(),
        message: message.into(),
        at_unix: NOW - 5,
    })
}

/// Three live nodes with a disk each; no volumes.
fn cluster() -> View {
    View {
        observer: "n1".into(),
        now_unix: NOW,
        nodes: ["n1", "n2", "n3"].map(node).to_vec(),
        live: ["n1", "n2", "n3"].map(String::from).into(),
        disks: ["n1", "n2", "n3"]
            .map(|n| disk(&format!("d-{n}"), n))
            .to_vec(),
        rebuild_stuck_secs: 300,
        ..View::default()
    }
}

/// `cluster()` with volume v1 (2 replicas, attached on n1): r1 on n1 and
/// r2 on n2, both RW.
fn attached_pair() -> View {
    let mut v = cluster();
    v.volumes.push(volume("v1", 2, Some("n1")));
    v.replicas
        .push(replica("r1", "v1", "n1", ReplicaMode::ReadWrite));
    v.replicas
        .push(replica("r2", "v1", "n2", ReplicaMode::ReadWrite));
    v
}

/// r2 taken out by its engine with `reason`; v1 degraded.
fn r2_err(v: &mut View, reason: &str, message: &str) {
    let r2 = v.replicas.iter_mut().find(|r| r.name == "r2").unwrap();
    r2.status.mode = ReplicaMode::Error;
    r2.status.fault = fault(reason, message);
    v.volumes[0].status.robustness = Robustness::Degraded;
}

fn r(code: &str, object: &str) -> ItemRef {
    ItemRef::new(code, object)
}

fn codes_of(report: &Report) -> Vec<&str> {
    report.checks.iter().map(|c| c.code.as_str()).collect()
}

fn roots(report: &Report) -> Vec<&str> {
    report
        .checks
        .iter()
        .filter(|c| c.root)
        .map(|c| c.code.as_str())
        .collect()
}

fn item<'a>(report: &'a Report, code: &str, object: &str) -> &'a super::Item {
    report
        .check(code)
        .unwrap_or_else(|| panic!("{code} missing: {report:#?}"))
        .items
        .iter()
        .find(|i| i.object == object)
        .unwrap_or_else(|| panic!("{code} {object} missing: {report:#?}"))
}

#[test]
fn a_healthy_cluster_has_no_checks() {
    let report = evaluate(&attached_pair());
    assert_eq!(report.status, Status::Ok);
    assert!(report.checks.is_empty(), "{report:#?}");
    assert_eq!(report.evaluated_unix, NOW);
}

#[test]
fn an_unreadable_store_is_the_only_check() {
    let view = View::unreachable("n1".into(), "read the cluster store: refused".into());
    let report = evaluate(&view);
    assert_eq!(codes_of(&report), [STORE_UNREACHABLE]);
    assert_eq!(report.status, Status::Error);
    let i = item(&report, STORE_UNREACHABLE, "node/n1");
    assert!(i.message.contains("refused"), "{}", i.message);
}

#[test]
fn a_down_node_explains_its_replicas_and_the_volume() {
    let mut v = attached_pair();
    v.live.remove("n2");
    r2_err(&mut v, "connection_lost", "connection reset by peer");
    let report = evaluate(&v);
    assert_eq!(
        codes_of(&report),
        [NODE_DOWN, REPLICA_ERROR, VOLUME_DEGRADED],
        "{report:#?}"
    );
    assert_eq!(roots(&report), [NODE_DOWN]);
    assert_eq!(report.status, Status::Error);
    let e = item(&report, REPLICA_ERROR, "replica/r2");
    assert_eq!(e.caused_by, [r(NODE_DOWN, "node/n2")]);
    assert!(
        e.message.contains("node n2 is down") && e.message.contains("connection_lost"),
        "{}",
        e.message
    );
    let d = item(&report, VOLUME_DEGRADED, "volume/v1");
    assert_eq!(d.caused_by, [r(REPLICA_ERROR, "replica/r2")]);
    let under = report.consequences_of(&r(NODE_DOWN, "node/n2"));
    assert_eq!(under.len(), 1);
    assert_eq!(under[0].0, REPLICA_ERROR);
}

#[test]
fn a_lost_connection_to_a_live_node_is_backend_unreachable() {
    // the lease has not expired yet: the network (or the replica server) is to blame
    let mut v = attached_pair();
    r2_err(&mut v, "timeout", "no answer in 8 s");
    let report = evaluate(&v);
    assert_eq!(roots(&report), [BACKEND_UNREACHABLE]);
    assert_eq!(report.status, Status::Warning);
    assert_eq!(
        item(&report, REPLICA_ERROR, "replica/r2").caused_by,
        [r(BACKEND_UNREACHABLE, "replica/r2")]
    );
    assert_eq!(
        item(&report, VOLUME_DEGRADED, "volume/v1").caused_by,
        [r(REPLICA_ERROR, "replica/r2")]
    );
}

#[test]
fn a_missing_snapshot_file_is_the_only_root() {
    let mut v = attached_pair();
    r2_err(&mut v, "io_error", "open layer: No such file or directory");
    v.replicas[1].status.integrity = Some(IntegrityProblem {
        kind: IntegrityKind::Missing,
        file: "/srv/n2/disk/replicas/r2/snap-1.img".into(),
        message: "not found".into(),
        found_unix: NOW,
    });
    let report = evaluate(&v);
    assert_eq!(roots(&report), [SNAPSHOT_FILE_MISSING], "{report:#?}");
    assert!(
        item(&report, SNAPSHOT_FILE_MISSING, "replica/r2")
            .message
            .contains("snap-1.img")
    );
    assert_eq!(
        item(&report, REPLICA_ERROR, "replica/r2").caused_by,
        [r(SNAPSHOT_FILE_MISSING, "replica/r2")]
    );
    assert_eq!(
        item(&report, VOLUME_DEGRADED, "volume/v1").caused_by,
        [r(REPLICA_ERROR, "replica/r2")]
    );
    assert_eq!(report.status, Status::Error);
}

#[test]
fn damaged_files_degrade_the_volume_even_before_the_engine_notices() {
    let mut v = attached_pair();
    v.replicas[1].status.integrity = Some(IntegrityProblem {
        kind: IntegrityKind::Missing,
        file: "/srv/n2/disk/replicas/r2/snap-1.img".into(),
        message: "not found".into(),
        found_unix: NOW,
    });
    let report = evaluate(&v);
    assert_eq!(roots(&report), [SNAPSHOT_FILE_MISSING], "{report:#?}");
    let d = item(&report, VOLUME_DEGRADED, "volume/v1");
    assert_eq!(d.caused_by, [r(SNAPSHOT_FILE_MISSING, "replica/r2")]);
    assert!(
        d.message.contains("r2 (RW, files damaged)"),
        "{}",
        d.message
    );
}

#[test]
fn truncated_corrupt_and_unreadable_files_are_snapshot_file_corrupt() {
    for kind in [
        IntegrityKind::Truncated,
        IntegrityKind::Corrupt,
        IntegrityKind::Unreadable,
    ] {
        let mut v = attached_pair();
        v.replicas[1].status.integrity = Some(IntegrityProblem {
            kind,
            file: "/d/r2/head.img".into(),
            message: "checksum".into(),
            found_unix: NOW,
        });
        let report = evaluate(&v);
        assert_eq!(roots(&report), [SNAPSHOT_FILE_CORRUPT], "{kind:?}");
        let m = &item(&report, SNAPSHOT_FILE_CORRUPT, "replica/r2").message;
        assert!(m.contains("head.img") && m.contains(kind.as_str()), "{m}");
    }
}

#[test]
fn disk_space_thresholds() {
    let full = |avail: u64, reserved: u64| {
        let mut v = cluster();
        v.disks[1].status.available_bytes = avail;
        v.disks[1].spec.reserved_bytes = reserved;
        codes_of(&evaluate(&v))
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(full(4 * GIB, 0), [DISK_FULL], "below 5%");
    assert_eq!(
        full(10 * GIB, 20 * GIB),
        [DISK_FULL],
        "below the reservation"
    );
    assert_eq!(full(10 * GIB, 0), [DISK_NEARLY_FULL], "below 15%");
    assert!(full(16 * GIB, 0).is_empty());
}

#[test]
fn no_space_is_caused_by_a_full_disk() {
    let mut v = attached_pair();
    v.disks[1].status.available_bytes = GIB;
    r2_err(&mut v, "no_space", "write: No space left on device");
    let report = evaluate(&v);
    assert_eq!(roots(&report), [DISK_FULL]);
    assert_eq!(
        item(&report, REPLICA_ERROR, "replica/r2").caused_by,
        [r(DISK_FULL, "disk/d-n2")]
    );
}

#[test]
fn a_missing_disk_explains_its_replicas_of_a_detached_volume() {
    let mut v = cluster();
    v.volumes.push(volume("v1", 2, None));
    v.replicas
        .push(replica("r1", "v1", "n1", ReplicaMode::Unreported));
    v.replicas
        .push(replica("r2", "v1", "n2", ReplicaMode::Unreported));
    v.disks[1].status.state = DiskState::Missing;
    v.disks[1].status.message = "vigil-disk.json not found".into();
    let report = evaluate(&v);
    assert_eq!(roots(&report), [DISK_UNAVAILABLE], "{report:#?}");
    assert_eq!(
        item(&report, REPLICA_ERROR, "replica/r2").caused_by,
        [r(DISK_UNAVAILABLE, "disk/d-n2")]
    );
    assert_eq!(
        item(&report, VOLUME_DEGRADED, "volume/v1").caused_by,
        [r(REPLICA_ERROR, "replica/r2")]
    );
}

#[test]
fn a_replaced_disk_names_old_and_new_uuid_and_the_path() {
    let mut v = cluster();
    v.disks[1].status.state = DiskState::Replaced;
    let mut new = disk("d-new", "n2");
    new.spec.path = v.disks[1].spec.path.clone();
    v.disks.push(new);
    let report = evaluate(&v);
    let m = &item(&report, DISK_REPLACED, "disk/d-n2").message;
    assert!(
        m.contains("d-n2") && m.contains("d-new") && m.contains("/srv/n2/disk"),
        "{m}"
    );
    assert_eq!(report.status, Status::Warning);
}

#[test]
fn a_stopped_replica_degrades_its_detached_volume() {
    let mut v = cluster();
    v.volumes.push(volume("v1", 2, None));
    v.replicas
        .push(replica("r1", "v1", "n1", ReplicaMode::Unreported));
    v.replicas
        .push(replica("r2", "v1", "n2", ReplicaMode::Unreported));
    v.replicas[1].status.state = InstanceState::Stopped;
    let report = evaluate(&v);
    assert_eq!(roots(&report), [REPLICA_STOPPED]);
    assert_eq!(
        item(&report, VOLUME_DEGRADED, "volume/v1").caused_by,
        [r(REPLICA_STOPPED, "replica/r2")]
    );
}

#[test]
fn a_replica_failed_on_its_node_is_a_root_replica_error() {
    let mut v = cluster();
    v.volumes.push(volume("v1", 1, None));
    v.replicas
        .push(replica("r1", "v1", "n1", ReplicaMode::Unreported));
    v.replicas[0].status.state = InstanceState::Error;
    v.replicas[0].status.message = "create replica: permission denied".into();
    let report = evaluate(&v);
    assert_eq!(roots(&report), [REPLICA_ERROR]);
    assert!(
        item(&report, REPLICA_ERROR, "replica/r1")
            .message
            .contains("permission denied")
    );
    // its only replica is gone: the volume is faulted, under the replica
    assert_eq!(
        item(&report, VOLUME_FAULTED, "volume/v1").caused_by,
        [r(REPLICA_ERROR, "replica/r1")]
    );
    assert_eq!(report.status, Status::Error);
}

#[test]
fn missing_replicas_are_unschedulable_and_degrade_the_volume() {
    let mut v = attached_pair();
    v.volumes[0].spec.replicas = 3;
    v.volumes[0].status.robustness = Robustness::Degraded;
    v.volumes[0].status.scheduling = vec!["n3: no disk with room".into()];
    let report = evaluate(&v);
    assert_eq!(roots(&report), [REPLICA_UNSCHEDULABLE]);
    assert!(
        item(&report, REPLICA_UNSCHEDULABLE, "volume/v1")
            .message
            .contains("2 of 3 replicas: n3: no disk with room")
    );
    let d = item(&report, VOLUME_DEGRADED, "volume/v1");
    assert_eq!(d.caused_by, [r(REPLICA_UNSCHEDULABLE, "volume/v1")]);
    assert!(
        d.message
            .contains("2 of 3 desired replicas RW; 1 not placed"),
        "{}",
        d.message
    );
}

#[test]
fn a_rebuild_without_progress_is_stuck() {
    let mut v = attached_pair();
    v.volumes[0].status.robustness = Robustness::Degraded;
    v.replicas[1].status.mode = ReplicaMode::WriteOnly;
    let rebuild = |progressed: u64| ReplicaRebuild {
        source: "tcp://n1:9501/r1".into(),
        bytes_done: GIB / 4,
        bytes_total: GIB,
        started_unix: NOW - 2000,
        finished_unix: None,
        progressed_unix: progressed,
    };
    v.replicas[1].status.rebuild = Some(rebuild(NOW - 100));
    let report = evaluate(&v);
    assert_eq!(
        codes_of(&report),
        [VOLUME_DEGRADED],
        "a rebuild in progress"
    );
    assert!(report.check(VOLUME_DEGRADED).unwrap().root);
    assert!(
        report.checks[0].items[0].message.contains("rebuilding 25%"),
        "{report:#?}"
    );

    v.replicas[1].status.rebuild = Some(rebuild(NOW - 301));
    let report = evaluate(&v);
    assert_eq!(roots(&report), [REBUILD_STUCK]);
    let m = &item(&report, REBUILD_STUCK, "replica/r2").message;
    assert!(
        m.contains("replica r1 on node n1") && m.contains("301 s"),
        "{m}"
    );
    assert_eq!(
        item(&report, VOLUME_DEGRADED, "volume/v1").caused_by,
        [r(REBUILD_STUCK, "replica/r2")]
    );

    // its source's node went down: that is the root
    v.live.remove("n1");
    v.volumes[0].status.attached_node = Some("n3".into());
    let report = evaluate(&v);
    assert_eq!(roots(&report), [NODE_DOWN], "{report:#?}");
    assert!(
        item(&report, REBUILD_STUCK, "replica/r2")
            .caused_by
            .contains(&r(NODE_DOWN, "node/n1"))
    );
}

#[test]
fn a_volume_with_no_rw_replica_is_faulted() {
    let mut v = attached_pair();
    r2_err(&mut v, "io_error", "EIO");
    let r1 = &mut v.replicas[0];
    r1.status.mode = ReplicaMode::Error;
    r1.status.fault = fault("io_error", "EIO");
    v.volumes[0].status.robustness = Robustness::Faulted;
    let report = evaluate(&v);
    assert_eq!(roots(&report), [REPLICA_ERROR], "{report:#?}");
    let f = item(&report, VOLUME_FAULTED, "volume/v1");
    assert_eq!(
        f.caused_by,
        [
            r(REPLICA_ERROR, "replica/r1"),
            r(REPLICA_ERROR, "replica/r2")
        ]
    );
    assert_eq!(
        report.check(VOLUME_FAULTED).unwrap().severity,
        Severity::Error
    );
}

#[test]
fn a_volume_whose_engine_node_is_down_is_faulted_under_node_down() {
    let mut v = attached_pair();
    v.live.remove("n1");
    let report = evaluate(&v);
    assert_eq!(roots(&report), [NODE_DOWN]);
    assert_eq!(
        item(&report, VOLUME_FAULTED, "volume/v1").caused_by,
        [r(NODE_DOWN, "node/n1")]
    );
    // r1 is on the down node; r2's mode is stale (no engine) and not judged
    assert_eq!(
        report.check(REPLICA_ERROR).unwrap().items.len(),
        1,
        "{report:#?}"
    );
}

#[test]
fn a_muted_check_does_not_count_and_its_consequences_surface() {
    let mut v = attached_pair();
    v.live.remove("n2");
    r2_err(&mut v, "connection_lost", "reset");
    v.mutes.push(Mute {
        code: NODE_DOWN.into(),
        until_unix: NOW + 3600,
        reason: "n2 in maintenance".into(),
        created_unix: NOW - 10,
        created_by: "n1".into(),
    });
    let report = evaluate(&v);
    assert_eq!(report.mutes.len(), 1);
    let nd = report.check(NODE_DOWN).unwrap();
    assert_eq!(nd.muted.as_ref().unwrap().reason, "n2 in maintenance");
    assert_eq!(report.status, Status::Warning, "muted errors do not count");
    assert!(report.check(REPLICA_ERROR).unwrap().root);
    assert_eq!(report.firing().count(), 2);
}

#[test]
fn an_expired_mute_is_ignored() {
    let mut v = attached_pair();
    v.live.remove("n2");
    v.mutes.push(Mute {
        code: NODE_DOWN.into(),
        until_unix: NOW,
        reason: "old".into(),
        created_unix: NOW - 3600,
        created_by: "n1".into(),
    });
    let report = evaluate(&v);
    assert!(report.check(NODE_DOWN).unwrap().muted.is_none());
    assert!(report.mutes.is_empty());
    assert_eq!(report.status, Status::Error);
}

#[test]
fn checks_and_items_are_sorted_and_the_view_survives_json() {
    let mut v = cluster();
    for n in ["n3", "n2"] {
        v.live.remove(n);
    }
    v.disks[0].status.available_bytes = 10 * GIB;
    let report = evaluate(&v);
    assert_eq!(codes_of(&report), [NODE_DOWN, DISK_NEARLY_FULL]);
    let objects: Vec<_> = report.checks[0].items.iter().map(|i| &i.object).collect();
    assert_eq!(objects, ["node/n2", "node/n3"]);

    let json = serde_json::to_string(&v).unwrap();
    let back: View = serde_json::from_str(&json).unwrap();
    assert_eq!(evaluate(&back), report);
    let rjson = serde_json::to_string(&report).unwrap();
    assert_eq!(serde_json::from_str::<Report>(&rjson).unwrap(), report);
}

#[test]
fn a_deleting_volume_is_not_judged() {
    let mut v = attached_pair();
    v.volumes[0].status.state = VolumeState::Deleting;
    v.volumes[0].status.attached_node = None;
    v.replicas[1].status.state = InstanceState::Error;
    assert!(evaluate(&v).checks.is_empty());
}

fn trouble(message: &str) -> Option<vigil_model::disk::DiskTrouble> {
    Some(vigil_model::disk::DiskTrouble {
        since_unix: 1_767_225_600,
        last_unix: 1_767_225_610,
        errors: 7,
        message: message.into(),
    })
}

#[test]
fn io_error_is_caused_by_a_failing_disk_named_in_the_item() {
    let mut v = attached_pair();
    v.disks[1].status.failing = trouble("write layer file: Input/output error (os error 5)");
    r2_err(
        &mut v,
        "io_error",
        "write layer file: Input/output error (os error 5)",
    );
    let report = evaluate(&v);
    assert_eq!(roots(&report), [DISK_FAILING]);
    assert_eq!(
        item(&report, REPLICA_ERROR, "replica/r2").caused_by,
        [r(DISK_FAILING, "disk/d-n2")]
    );
    let m = &item(&report, DISK_FAILING, "disk/d-n2").message;
    assert!(
        m.contains("d-n2") && m.contains("/srv/n2/disk") && m.contains("2026-01-01T00:00:00"),
        "{m}"
    );
    assert_eq!(report.status, super::Status::Error);
}

#[test]
fn an_io_error_on_a_disk_not_known_to_fail_is_its_own_root() {
    let mut v = attached_pair();
    r2_err(&mut v, "io_error", "read: Input/output error");
    let report = evaluate(&v);
    assert!(
        item(&report, REPLICA_ERROR, "replica/r2")
            .caused_by
            .is_empty()
    );
    assert!(!codes_of(&report).contains(&DISK_FAILING));
}

#[test]
fn enospc_seen_is_disk_full_even_when_free_space_looks_fine() {
    let mut v = attached_pair();
    v.disks[1].status.no_space = trouble("write layer file: No space left on device (os error 28)");
    r2_err(&mut v, "no_space", "write: No space left on device");
    let report = evaluate(&v);
    assert_eq!(roots(&report), [DISK_FULL]);
    assert_eq!(
        item(&report, REPLICA_ERROR, "replica/r2").caused_by,
        [r(DISK_FULL, "disk/d-n2")]
    );
    assert!(
        item(&report, DISK_FULL, "disk/d-n2")
            .message
            .contains("No space left"),
    );
}

#[test]
fn a_failed_rebuild_on_a_failing_disk_is_the_disk_s_doing() {
    let mut v = attached_pair();
    v.disks[1].status.failing = trouble("EIO");
    r2_err(&mut v, "rebuild_failed", "stage layer: Input/output error");
    let report = evaluate(&v);
    assert_eq!(
        item(&report, REPLICA_ERROR, "replica/r2").caused_by,
        [r(DISK_FAILING, "disk/d-n2")]
    );
}

/// An uninstall waiting for the replica of a volume on a down node: quiet
/// until uninstall-stuck-timeout has passed without progress, then
/// UNINSTALL_STUCK caused by NODE_DOWN of that node; never once Done.
#[test]
fn an_uninstall_without_progress_is_stuck_because_of_the_down_node() {
    use vigil_model::uninstall::{Uninstall, UninstallPhase};
    let mut v = cluster();
    v.live.remove("n3");
    let mut vol = volume("v1", 1, None);
    vol.status.state = VolumeState::Deleting;
    v.volumes.push(vol);
    v.replicas
        .push(replica("r3", "v1", "n3", ReplicaMode::Unreported));
    let mut u = Uninstall::claimed("n1", (NOW - 60) as f64, 5);
    u.message = "1 volume(s), 1 replica(s), 0 engine(s) left".into();
    v.uninstall = Some(u.clone());
    v.uninstall_stuck_secs = 120;
    assert!(
        !codes_of(&evaluate(&v)).contains(&UNINSTALL_STUCK),
        "60 s without progress is not stuck yet"
    );
    u.progressed_at = (NOW - 200) as f64;
    v.uninstall = Some(u.clone());
    let report = evaluate(&v);
    let i = item(&report, UNINSTALL_STUCK, "uninstall/cluster");
    assert!(i.message.contains("no progress for 200 s"), "{}", i.message);
    assert!(i.message.contains("n3"), "{}", i.message);
    assert_eq!(i.caused_by, vec![r(NODE_DOWN, "node/n3")]);
    u.set_phase(UninstallPhase::Cleaning, (NOW - 150) as f64)
        .unwrap();
    u.set_phase(UninstallPhase::Done, (NOW - 150) as f64)
        .unwrap();
    u.progressed_at = 0.0;
    v.uninstall = Some(u);
    assert!(!codes_of(&evaluate(&v)).contains(&UNINSTALL_STUCK));
}

/// An eviction of n2 recorded as blocked for v1: EVICTION_BLOCKED names
/// the volume and the reason; a blocked volume whose only copy is on the
/// down evicted node is caused by NODE_DOWN; cancelling (request off)
/// clears it.
#[test]
fn a_blocked_eviction_names_the_volume_and_why() {
    use vigil_model::eviction::{Eviction, EvictionPhase, VolumeEviction, VolumeEvictionState};
    let mut v = attached_pair();
    let blocked = |reason: &str| Eviction {
        phase: EvictionPhase::Blocked,
        started_at: NOW - 60,
        phase_since: NOW - 60,
        replicas_left: 1,
        replicas_moved: 0,
        volumes: vec![VolumeEviction {
            volume: "v1".into(),
            replicas: vec!["r2".into()],
            state: VolumeEvictionState::Blocked,
            replacements: Vec::new(),
            reason: reason.into(),
        }],
    };
    let n2 = v.nodes.iter_mut().find(|n| n.name == "n2").unwrap();
    n2.spec.eviction_requested = true;
    n2.status.eviction = Some(blocked("no node can take a replacement: n3: full"));
    let report = evaluate(&v);
    let i = item(&report, EVICTION_BLOCKED, "node/n2");
    assert!(
        i.message.contains("volume v1") && i.message.contains("n3: full"),
        "{}",
        i.message
    );
    assert!(i.caused_by.is_empty());
    assert_eq!(report.status, Status::Warning);

    let n2 = v.nodes.iter_mut().find(|n| n.name == "n2").unwrap();
    n2.status.eviction = Some(blocked("no healthy replica to copy from"));
    v.live.remove("n2");
    let report = evaluate(&v);
    assert_eq!(
        item(&report, EVICTION_BLOCKED, "node/n2").caused_by,
        vec![r(NODE_DOWN, "node/n2")]
    );

    let n2 = v.nodes.iter_mut().find(|n| n.name == "n2").unwrap();
    n2.spec.eviction_requested = false;
    assert!(evaluate(&v).check(EVICTION_BLOCKED).is_none());
}

#[test]
fn a_recently_fenced_engine_and_blocked_writes_are_reported() {
    use vigil_model::volume::FencedEngine;
    let mut v = attached_pair();
    v.volumes[0].status.fenced = Some(FencedEngine {
        node: "n3".into(),
        epoch: 4,
        message: "stale engine epoch 4: the replica was claimed by epoch 5".into(),
        at_unix: NOW - 60,
    });
    v.volumes[0].status.writes_blocked =
        "only 1 RW replica(s), and min-replicas-to-write is 2".into();
    let report = evaluate(&v);
    let fenced = report
        .checks
        .iter()
        .find(|c| c.code == ENGINE_FENCED)
        .expect("ENGINE_FENCED");
    assert!(
        fenced.items[0].message.contains("on n3 (epoch 4)"),
        "{fenced:?}"
    );
    let blocked = report
        .checks
        .iter()
        .find(|c| c.code == VOLUME_WRITES_BLOCKED)
        .expect("VOLUME_WRITES_BLOCKED");
    assert!(
        blocked.items[0]
            .message
            .contains("min-replicas-to-write is 2")
    );
    // an old fence is no longer reported
    v.volumes[0].status.fenced.as_mut().unwrap().at_unix = NOW - 16 * 60;
    v.volumes[0].status.writes_blocked.clear();
    let report = evaluate(&v);
    assert!(
        !report
            .checks
            .iter()
            .any(|c| c.code == ENGINE_FENCED || c.code == VOLUME_WRITES_BLOCKED)
    );
}
