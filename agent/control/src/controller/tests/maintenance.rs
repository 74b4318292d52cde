//! The maintenance controller: a detached volume with a replica on an
//! evicted node gets an engine no client can reach, on its owner, for as
//! long as the move takes; the volume stays detached throughout, an attach
//! wins over it, a dead holder's record is cleared, and never do two
//! engines serve one volume.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use vigil_model::{Event, Volume, VolumeState};

use super::bed::{Bed, in_state};
use crate::controller::maintenance;
use crate::controller::{Snapshot, owner_of};

const MIB: u64 = 1 << 20;

/// Four nodes; `v1` with 2 replicas, detached, 0x77 written at 2 MiB;
/// returns the bed and a node holding a replica.
async fn detached_volume() -> Bed {
    let mut bed = Bed::new(&["n1", "n2", "n3", "n4"]).await;
    bed.create_volume("v1", 8 * MIB, 2).await;
    assert!(
        bed.settle(5, |c| async move {
            in_state(&c, "v1", VolumeState::Detached).await
        })
        .await
    );
    let holder = bed.replicas_of("v1").await[0].spec.node.clone();
    bed.write_while_attached("v1", &holder, 2 * MIB, 0x77).await;
    bed
}

/// One round on every agent, checking after each that at most one engine
/// serves `v1` and that none of them is reachable over NBD unless the
/// volume is attached.
async fn pass(bed: &mut Bed) {
    let nodes: Vec<String> = bed.agents.keys().cloned().collect();
    for n in nodes {
        bed.round(&n).await;
        let engines = bed.engines_of("v1");
        assert!(engines.len() <= 1, "two engines serve v1: {engines:?}");
        let vol = bed.volume("v1").await;
        if vol.status.state == VolumeState::Detached {
            for a in bed.agents.values() {
                assert!(
                    a.local.engines.get("v1").is_none(),
                    "a detached volume is in {}'s NBD catalog",
                    a.local.me.name
                );
            }
            assert_eq!(vol.spec.node, None);
        }
    }
}

#[tokio::test]
async fn an_eviction_moves_a_detached_volumes_replica_through_a_maintenance_engine() {
    let mut bed = detached_volume().await;
    let evicted = bed.replicas_of("v1").await[1].spec.node.clone();
    bed.evict(&evicted).await;

    let mut saw_holder = None;
    // the new replica is refused as stale at the engine's start and
    // rebuilt at its next retry, 3 s later: up to 30 s
    for _ in 0..600 {
        pass(&mut bed).await;
        let vol = bed.volume("v1").await;
        assert_eq!(vol.status.state, VolumeState::Detached);
        if let Some(m) = &vol.status.maintenance {
            saw_holder = Some(m.node.clone());
            assert!(m.reason.contains("eviction"), "{}", m.reason);
        }
        let replicas = bed.replicas_of("v1").await;
        if saw_holder.is_some()
            && vol.status.maintenance.is_none()
            && replicas.len() == 2
            && replicas.iter().all(|r| r.spec.node != evicted)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let holder = saw_holder.expect("no maintenance engine was ever recorded");
    let vol = bed.volume("v1").await;
    let replicas = bed.replicas_of("v1").await;
    let status = bed.local(&holder).maintenance.get("v1").map(|e| e.status());
    assert_eq!(
        vol.status.maintenance, None,
        "{vol:#?}\n{replicas:#?}\n{status:#?}"
    );
    assert_eq!(replicas.len(), 2, "{replicas:#?}");
    assert!(replicas.iter().all(|r| r.spec.node != evicted));
    // the holder was the volume's owner, and its engine is gone
    let snap = Snapshot::read(bed.cluster("n1")).await.unwrap();
    assert_eq!(owner_of(&vol, &snap.ready), Some(holder.clone()));
    assert!(bed.engines_of("v1").is_empty());
    // both replicas hold the data written before
    for r in &replicas {
        let got = bed.read_replica(&r.spec.node, &r.name, 2 * MIB).await;
        assert!(
            got.iter().all(|b| *b == 0x77),
            "replica {} lacks the data",
            r.name
        );
    }
    let events: Vec<String> = bed
        .cluster("n1")
        .list::<Event>()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.object.reason)
        .collect();
    assert!(
        events.iter().any(|r| r == "MaintenanceStarted"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|r| r == "MaintenanceStopped"),
        "{events:?}"
    );
}

#[tokio::test]
async fn an_attach_wins_over_a_maintenance_engine() {
    let mut bed = detached_volume().await;
    let evicted = bed.replicas_of("v1").await[1].spec.node.clone();
    bed.evict(&evicted).await;
    // run until the maintenance engine runs
    let mut holder = None;
    for _ in 0..20 {
        pass(&mut bed).await;
        if let Some(m) = bed.volume("v1").await.status.maintenance
            && bed.engines_of("v1") == vec![m.node.clone()]
        {
            holder = Some(m.node);
            break;
        }
    }
    let holder = holder.expect("the maintenance engine never started");
    // attach on another node: the holder stops its engine and clears the
    // record first; only then does the attaching node start its engine
    let target = ["n1", "n2", "n3", "n4"]
        .into_iter()
        .find(|n| *n != holder && *n != evicted)
        .unwrap();
    bed.attach("v1", target).await;
    let mut attached = false;
    for _ in 0..30 {
        pass(&mut bed).await;
        if in_state(bed.cluster(target), "v1", VolumeState::Attached).await {
            attached = true;
            break;
        }
    }
    assert!(attached, "{:#?}", bed.volume("v1").await.status);
    assert_eq!(bed.engines_of("v1"), vec![target.to_string()]);
    assert!(bed.local(&holder).maintenance.get("v1").is_none());
    let vol: Volume = bed.volume("v1").await;
    assert_eq!(vol.status.maintenance, None);
}

#[tokio::test]
async fn a_dead_holders_record_is_cleared_by_the_owner_and_never_by_others() {
    let mut bed = Bed::new(&["n1", "n2", "n3"]).await;
    bed.create_volume("v1", 8 * MIB, 2).await;
    assert!(
        bed.settle(5, |c| async move {
            in_state(&c, "v1", VolumeState::Detached).await
        })
        .await
    );
    // a record held by a node that then dies
    bed.cluster("n1")
        .modify::<Volume, _>("v1", |v| {
            v.status.maintenance = Some(vigil_model::maintenance::Maintenance {
                node: "n3".into(),
                reason: "test".into(),
                since: 0,
            });
            Ok(true)
        })
        .await
        .unwrap();
    bed.kill("n3").await;
    let snap = Snapshot::read(bed.cluster("n1")).await.unwrap();
    let vol = bed.volume("v1").await;
    let owner = owner_of(&vol, &snap.ready).unwrap();
    let other = if owner == "n1" { "n2" } else { "n1" };
    maintenance::reconcile(bed.local(other), &snap).await;
    assert!(
        bed.volume("v1").await.status.maintenance.is_some(),
        "a non-owner cleared the record"
    );
    maintenance::reconcile(bed.local(&owner), &snap).await;
    assert_eq!(bed.volume("v1").await.status.maintenance, None);
    // and a stale read loses: the record set again, the old snapshot's
    // version no longer matches, nothing is cleared
    bed.cluster("n1")
        .modify::<Volume, _>("v1", |v| {
            v.status.maintenance = Some(vigil_model::maintenance::Maintenance {
                node: "n3".into(),
                reason: "again".into(),
                since: 1,
            });
            Ok(true)
        })
        .await
        .unwrap();
    maintenance::reconcile(bed.local(&owner), &snap).await;
    let m = bed.volume("v1").await.status.maintenance.unwrap();
    assert_eq!(m.reason, "again");
}
