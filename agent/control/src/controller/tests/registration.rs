//! Registration: the node object keeps what the operator set across
//! restarts while addresses and status come from the agent; a disk that
//! is gone is marked missing, one whose directory now holds another disk
//! replaced; liveness follows the lease.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use vigil_model::disk::DiskState;
use vigil_model::{Disk, Event, Node};

use super::bed::Bed;
use crate::controller::registration;
use crate::local::disks::IDENTITY_FILE;

async fn disks_of(bed: &Bed, node: &str) -> Vec<Disk> {
    bed.cluster(&bed.any())
        .list::<Disk>()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.object)
        .filter(|d| d.spec.node == node)
        .collect()
}

async fn reasons(bed: &Bed) -> Vec<String> {
    bed.cluster(&bed.any())
        .list::<Event>()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.object.reason)
        .collect()
}

#[tokio::test]
async fn a_restart_keeps_what_the_operator_set_and_takes_the_new_addresses() {
    let mut bed = Bed::new(&["n1", "n2"]).await;
    let first = bed
        .cluster("n1")
        .must_get::<Node>("n2")
        .await
        .unwrap()
        .object;
    assert!(first.spec.allow_scheduling);
    assert_eq!(
        first.spec.replica_address,
        bed.local("n2").me.replica_address
    );
    assert!(
        bed.cluster("n1")
            .ready_nodes()
            .await
            .unwrap()
            .contains("n2")
    );

    // the operator cordons n2, tags it and asks for its eviction
    bed.cluster("n1")
        .modify::<Node, _>("n2", |n| {
            n.spec.allow_scheduling = false;
            n.spec.tags = vec!["ssd".into()];
            n.spec.eviction_requested = true;
            Ok(true)
        })
        .await
        .unwrap();
    // n2 restarts on new ports
    bed.kill("n2").await;
    assert!(
        !bed.cluster("n1")
            .ready_nodes()
            .await
            .unwrap()
            .contains("n2")
    );
    bed.start("n2").await;
    let again = bed
        .cluster("n1")
        .must_get::<Node>("n2")
        .await
        .unwrap()
        .object;
    assert!(!again.spec.allow_scheduling);
    assert_eq!(again.spec.tags, vec!["ssd".to_string()]);
    assert!(again.spec.eviction_requested);
    assert_eq!(
        again.spec.replica_address,
        bed.local("n2").me.replica_address
    );
    assert_ne!(again.spec.replica_address, first.spec.replica_address);
    assert!(again.status.started_at >= first.status.started_at);
    assert!(
        bed.cluster("n1")
            .ready_nodes()
            .await
            .unwrap()
            .contains("n2")
    );
    // still one disk, the same one
    let disks = disks_of(&bed, "n2").await;
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].status.state, DiskState::Ready);
}

#[tokio::test]
async fn a_wiped_disk_is_replaced_and_a_disk_no_longer_given_is_missing() {
    let mut bed = Bed::new(&["n1", "n2"]).await;
    bed.kill("n2").await;
    bed.start_with("n2", &["disk", "disk2"]).await;
    let before = disks_of(&bed, "n2").await;
    assert_eq!(before.len(), 2);
    let old_uuid = before
        .iter()
        .find(|d| d.spec.path.ends_with("/disk"))
        .unwrap()
        .uuid
        .clone();
    let second = before
        .iter()
        .find(|d| d.spec.path.ends_with("/disk2"))
        .unwrap()
        .uuid
        .clone();

    // `disk` is wiped (its identity file gone: a new UUID at the path),
    // `disk2` is no longer given to the agent
    bed.kill("n2").await;
    std::fs::remove_file(bed.dir.path().join("n2/disk").join(IDENTITY_FILE)).unwrap();
    bed.start_with("n2", &["disk"]).await;

    let after = disks_of(&bed, "n2").await;
    assert_eq!(after.len(), 3, "{after:#?}");
    let old = after.iter().find(|d| d.uuid == old_uuid).unwrap();
    assert_eq!(old.status.state, DiskState::Replaced, "{old:#?}");
    assert!(
        old.status.message.contains("now has UUID"),
        "{}",
        old.status.message
    );
    let gone = after.iter().find(|d| d.uuid == second).unwrap();
    assert_eq!(gone.status.state, DiskState::Missing);
    let new = after
        .iter()
        .find(|d| d.uuid != old_uuid && d.uuid != second)
        .unwrap();
    assert_eq!(new.status.state, DiskState::Ready);
    assert_eq!(new.spec.path, old.spec.path);
    let seen = reasons(&bed).await;
    for r in ["DiskRegistered", "DiskReplaced", "DiskMissing"] {
        assert!(seen.iter().any(|x| x == r), "no {r} event: {seen:?}");
    }

    // registering again changes nothing and raises no second event
    let count = seen.len();
    registration::register_disks(bed.local("n2")).await.unwrap();
    assert_eq!(disks_of(&bed, "n2").await.len(), 3);
    let again = reasons(&bed).await;
    assert_eq!(again.len(), count, "{again:?}");
}

#[tokio::test]
async fn a_node_that_goes_offline_is_not_ready_and_keep_live_brings_it_back() {
    let bed = Bed::new(&["n1", "n2"]).await;
    assert!(
        bed.cluster("n1")
            .ready_nodes()
            .await
            .unwrap()
            .contains("n2")
    );
    // the lease revoked under the agent (as when the store lost it): the
    // keep-alive fails, and the agent takes a new lease and registers
    registration::go_offline(bed.local("n2")).await;
    assert!(
        !bed.cluster("n1")
            .ready_nodes()
            .await
            .unwrap()
            .contains("n2")
    );
    let mut back = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if bed
            .cluster("n1")
            .ready_nodes()
            .await
            .unwrap()
            .contains("n2")
        {
            back = true;
            break;
        }
    }
    assert!(back, "n2 never became ready again");
}
