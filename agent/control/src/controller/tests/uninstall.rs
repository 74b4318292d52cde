//! The uninstall controller: a claimed uninstall drives every volume
//! through its own state machine to deletion (an attached one detaches
//! first), then cleans the cluster's keys and stands every agent still;
//! a node down for good has its replicas abandoned; a restart after Done
//! is a fresh install.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::sync::atomic::Ordering;

use vigil_model::uninstall::{Uninstall, UninstallPhase};
use vigil_model::{Disk, Node, Replica, Volume, VolumeState};

use super::bed::{Bed, in_state};
use crate::cluster::uninstall::{Claim, FLAG};

const MIB: u64 = 1 << 20;

async fn phase(bed: &Bed) -> Option<UninstallPhase> {
    bed.cluster(&bed.any())
        .uninstall_record()
        .await
        .unwrap()
        .map(|r| r.object.phase)
}

/// Three nodes, `a` attached on n1 with data, `d` detached.
async fn cluster_with_volumes() -> Bed {
    let mut bed = Bed::new(&["n1", "n2", "n3"]).await;
    bed.create_volume("a", 8 * MIB, 2).await;
    bed.create_volume("d", 8 * MIB, 3).await;
    assert!(
        bed.settle(5, |c| async move {
            in_state(&c, "a", VolumeState::Detached).await
                && in_state(&c, "d", VolumeState::Detached).await
        })
        .await
    );
    bed.attach("a", "n1").await;
    assert!(
        bed.settle(10, |c| async move {
            in_state(&c, "a", VolumeState::Attached).await
        })
        .await
    );
    bed
}

#[tokio::test]
async fn an_uninstall_deletes_every_volume_then_the_cluster_state_and_stands_still() {
    let mut bed = cluster_with_volumes().await;
    let replica_files: Vec<(String, String)> = bed
        .cluster("n1")
        .list::<Replica>()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.object.spec.node, r.object.name))
        .collect();
    assert_eq!(replica_files.len(), 5);

    // refused without the confirmation flag
    assert!(matches!(
        bed.cluster("n2").claim_uninstall().await.unwrap(),
        Claim::Refused { .. }
    ));
    bed.set(FLAG, "true").await;
    assert!(matches!(
        bed.cluster("n2").claim_uninstall().await.unwrap(),
        Claim::Started(_)
    ));
    // a second claim sees the first
    assert!(matches!(
        bed.cluster("n3").claim_uninstall().await.unwrap(),
        Claim::AlreadyRunning(_)
    ));

    let mut saw_detaching = false;
    for _ in 0..50 {
        let nodes: Vec<String> = bed.agents.keys().cloned().collect();
        for n in nodes {
            bed.round(&n).await;
            if let Ok(Some(v)) = bed.cluster("n1").get::<Volume>("a").await {
                saw_detaching |= v.object.status.state == VolumeState::Detaching;
            }
        }
        if phase(&bed).await == Some(UninstallPhase::Done) {
            break;
        }
    }
    assert_eq!(phase(&bed).await, Some(UninstallPhase::Done));
    assert!(saw_detaching, "the attached volume was not detached first");

    // nothing of the cluster is left but the record and the liveness keys
    let c = bed.cluster("n1");
    assert!(c.list::<Volume>().await.unwrap().is_empty());
    assert!(c.list::<Replica>().await.unwrap().is_empty());
    assert!(c.list::<Node>().await.unwrap().is_empty());
    assert!(c.list::<Disk>().await.unwrap().is_empty());
    assert!(
        c.get::<vigil_model::settings::StoredSetting>(FLAG)
            .await
            .unwrap()
            .is_none()
    );
    // every replica's files are gone, no engine runs, every agent is quiet
    for (node, name) in &replica_files {
        assert!(
            bed.local(node).replicas.get(name).is_none(),
            "{name} still open on {node}"
        );
    }
    for a in bed.agents.values() {
        assert!(a.local.all_engines().is_empty());
        assert!(
            a.local.quiet.load(Ordering::SeqCst),
            "{} is not quiet",
            a.local.me.name
        );
    }
    // further rounds change nothing (no registration while Done)
    bed.round("n2").await;
    assert!(bed.cluster("n2").list::<Node>().await.unwrap().is_empty());

    // a restarted agent finds Done: a fresh install, the record deleted
    bed.kill("n3").await;
    bed.start("n3").await;
    assert_eq!(phase(&bed).await, None);
    let nodes: Vec<String> = bed
        .cluster("n3")
        .list::<Node>()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.object.name)
        .collect();
    assert_eq!(nodes, vec!["n3".to_string()]);
    // the idle agents register again when they see the record gone
    bed.round("n1").await;
    assert!(bed.cluster("n1").get::<Node>("n1").await.unwrap().is_some());
    assert!(!bed.local("n1").quiet.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_node_down_for_good_has_its_replicas_abandoned_by_the_driver() {
    let mut bed = Bed::new(&["n1", "n2", "n3"]).await;
    bed.set("node-down-timeout", "1").await;
    bed.create_volume("d", 8 * MIB, 3).await;
    assert!(
        bed.settle(5, |c| async move {
            in_state(&c, "d", VolumeState::Detached).await
        })
        .await
    );
    bed.kill("n3").await;
    bed.set(FLAG, "true").await;
    assert!(matches!(
        bed.cluster("n1").claim_uninstall().await.unwrap(),
        Claim::Started(_)
    ));
    // n3's replica cannot be deleted by its agent: once n3 is down past
    // the timeout the driver abandons it, and the uninstall completes
    let done = bed
        .settle(200, |c| async move {
            matches!(c.uninstall_record().await, Ok(Some(r)) if r.object.phase == UninstallPhase::Done)
        })
        .await;
    let record: Option<Uninstall> = bed
        .cluster("n1")
        .uninstall_record()
        .await
        .unwrap()
        .map(|r| r.object);
    assert!(done, "{record:#?}");
}
