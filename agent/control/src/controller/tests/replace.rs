//! The replace controller: a replica whose node is down past
//! `node-down-timeout` is marked failed, replaced elsewhere, rebuilt by
//! the engine and retired only once the engine has the desired count RW
//! without it; a short outage builds nothing.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::Duration;

use bytes::Bytes;
use vigil_engine::device::ExportDevice;
use vigil_engine::engine::Mode;
use vigil_model::{InstanceState, VolumeState};

use super::bed::{Bed, in_state};
use crate::controller::Snapshot;
use crate::controller::replace::{Standing, standing};

const MIB: u64 = 1 << 20;

/// Four nodes, `v1` with 3 replicas attached on a node holding one of
/// them, 4 KiB of 0x5A written at 1 MiB; returns the bed, the attached
/// node and a node holding a replica that is not the attached one.
async fn attached_volume() -> (Bed, String, String) {
    let mut bed = Bed::new(&["n1", "n2", "n3", "n4"]).await;
    bed.set("node-down-timeout", "1").await;
    bed.set("replica-replenishment-wait-interval", "0").await;
    bed.create_volume("v1", 8 * MIB, 3).await;
    assert!(
        bed.settle(5, |c| async move {
            in_state(&c, "v1", VolumeState::Detached).await
        })
        .await
    );
    let mut holders: Vec<String> = bed
        .replicas_of("v1")
        .await
        .into_iter()
        .map(|r| r.spec.node)
        .collect();
    holders.sort();
    let (at, victim) = (holders[0].clone(), holders[1].clone());
    bed.attach("v1", &at).await;
    assert!(
        bed.settle(10, |c| async move {
            in_state(&c, "v1", VolumeState::Attached).await
        })
        .await
    );
    let engine = bed.local(&at).engines.get("v1").unwrap();
    engine
        .write(MIB, Bytes::from(vec![0x5Au8; 4096]), true)
        .await
        .unwrap();
    (bed, at, victim)
}

#[tokio::test]
async fn a_replica_on_a_node_down_past_the_timeout_is_replaced_rebuilt_and_retired() {
    let (mut bed, at, victim) = attached_volume().await;
    let holders: Vec<String> = bed
        .replicas_of("v1")
        .await
        .into_iter()
        .map(|r| r.spec.node)
        .collect();
    let spare = ["n1", "n2", "n3", "n4"]
        .into_iter()
        .find(|n| !holders.iter().any(|h| h == n))
        .unwrap()
        .to_string();
    bed.kill(&victim).await;

    // marked down, failed after the timeout, replaced on the spare node,
    // rebuilt, and the failed one retired: 3 replicas, none on the victim
    let done = bed
        .settle(200, |c| {
            let victim = victim.clone();
            async move {
                let replicas = c.list::<vigil_model::Replica>().await.unwrap();
                replicas.len() == 3
                    && replicas.iter().all(|r| r.object.spec.node != victim)
                    && replicas
                        .iter()
                        .all(|r| r.object.status.state == InstanceState::Running)
            }
        })
        .await;
    let replicas = bed.replicas_of("v1").await;
    assert!(done, "not replaced: {replicas:#?}");
    let new = replicas.iter().find(|r| r.spec.node == spare).unwrap();

    // the engine has all three RW, the new one holding the data written
    // before the failure
    let engine = bed.local(&at).engines.get("v1").unwrap();
    let status = engine.status();
    assert_eq!(status.replicas.len(), 3, "{status:#?}");
    assert!(status.replicas.iter().all(|r| r.mode == Mode::ReadWrite));
    let file = bed.local(&spare).replicas.get(&new.name).unwrap();
    let got = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 4096];
        file.read(MIB, &mut buf).map(|()| buf)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        got.iter().all(|b| *b == 0x5A),
        "the rebuilt replica lacks the data"
    );

    // the events say why
    let events = bed.cluster(&at).list::<vigil_model::Event>().await.unwrap();
    assert!(
        events.iter().any(|e| e.object.message.contains(&victim)),
        "no event names the down node {victim}"
    );
}

#[tokio::test]
async fn a_short_outage_builds_nothing_new() {
    let (mut bed, _at, victim) = attached_volume().await;
    bed.set("node-down-timeout", "3600").await;
    bed.kill(&victim).await;
    for _ in 0..10 {
        let nodes: Vec<String> = bed.agents.keys().cloned().collect();
        for n in nodes {
            bed.round(&n).await;
        }
    }
    let replicas = bed.replicas_of("v1").await;
    assert_eq!(replicas.len(), 3, "{replicas:#?}");
    assert!(replicas.iter().any(|r| r.spec.node == victim));
    let snap = Snapshot::read(bed.cluster(&bed.any())).await.unwrap();
    let r = replicas.iter().find(|r| r.spec.node == victim).unwrap();
    assert_eq!(standing(&snap, r, None), Standing::Waiting);
}

#[tokio::test]
async fn standing_follows_the_node_and_the_disk() {
    let (mut bed, _at, victim) = attached_volume().await;
    let r = bed
        .replicas_of("v1")
        .await
        .into_iter()
        .find(|r| r.spec.node == victim)
        .unwrap();
    let snap = Snapshot::read(bed.cluster("n1")).await.unwrap();
    assert_eq!(standing(&snap, &r, None), Standing::Healthy);

    // a node being evicted: moving
    let mut evicting = Snapshot::read(bed.cluster("n1")).await.unwrap();
    evicting
        .nodes
        .get_mut(&victim)
        .unwrap()
        .object
        .spec
        .eviction_requested = true;
    assert!(matches!(standing(&evicting, &r, None), Standing::Moving(_)));

    // its disk no longer registered: lost
    let mut no_disk = Snapshot::read(bed.cluster("n1")).await.unwrap();
    no_disk.disks.remove(&r.spec.disk);
    assert!(matches!(standing(&no_disk, &r, None), Standing::Lost(_)));

    // down, then down past node-down-timeout (1 s): waiting, then failed
    bed.kill(&victim).await;
    let n1 = bed.agents.keys().next().unwrap().clone();
    bed.round(&n1).await;
    let snap = Snapshot::read(bed.cluster(&n1)).await.unwrap();
    assert_eq!(standing(&snap, &r, None), Standing::Waiting);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let snap = Snapshot::read(bed.cluster(&n1)).await.unwrap();
    assert!(
        matches!(standing(&snap, &r, None), Standing::Failed { .. }),
        "{:?}",
        standing(&snap, &r, None)
    );
}
