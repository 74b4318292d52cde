//! The volumes controller: creating → detached → attaching → attached →
//! detaching → detached → deleting → gone, each transition taken by the
//! owner only, and the engine it starts serving real replicas.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use bytes::Bytes;
use vigil_engine::device::ExportDevice;
use vigil_model::{Engine, Replica, Volume, VolumeState};

use super::bed::{Bed, in_state};
use crate::controller::{Snapshot, owner_of};

const MIB: u64 = 1 << 20;

#[tokio::test]
async fn a_volume_goes_through_its_lifecycle_and_its_engine_serves_three_replicas() {
    let mut bed = Bed::new(&["n1", "n2", "n3"]).await;
    bed.create_volume("v1", 16 * MIB, 3).await;
    assert_eq!(bed.volume("v1").await.status.state, VolumeState::Creating);

    // creating → detached once every replica runs (replica files created
    // by the replicas controller of each node)
    assert!(
        bed.settle(5, |c| async move {
            in_state(&c, "v1", VolumeState::Detached).await
        })
        .await,
        "volume never became detached: {:?}",
        bed.volume("v1").await.status
    );
    let replicas = bed.replicas_of("v1").await;
    assert_eq!(replicas.len(), 3);
    for r in &replicas {
        assert!(
            bed.local(&r.spec.node).replicas.get(&r.name).is_some(),
            "replica {} has no file on {}",
            r.name,
            r.spec.node
        );
    }

    // attaching → attached on n2: the engine runs there, nowhere else
    bed.attach("v1", "n2").await;
    assert!(
        bed.settle(10, |c| async move {
            in_state(&c, "v1", VolumeState::Attached).await
        })
        .await,
        "never attached: {:?}",
        bed.volume("v1").await.status
    );
    let v = bed.volume("v1").await;
    assert!(v.status.endpoint.contains("v1"), "{}", v.status.endpoint);
    let engine = bed.local("n2").engines.get("v1").expect("engine on n2");
    assert!(bed.local("n1").engines.get("v1").is_none());
    assert!(bed.local("n2").managed_engines.contains("v1"));
    let record = bed.cluster("n1").must_get::<Engine>("v1").await.unwrap();
    assert_eq!(record.object.spec.node, "n2");

    // a write through the engine reaches every replica file
    let data = Bytes::from(vec![0xA5u8; 4096]);
    engine.write(8192, data.clone(), true).await.unwrap();
    assert_eq!(engine.read(8192, 4096).await.unwrap(), data);
    for r in &replicas {
        let replica = bed.local(&r.spec.node).replicas.get(&r.name).unwrap();
        let got = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 4096];
            replica.read(8192, &mut buf).map(|()| buf)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(&got[..], &data[..], "replica {} on {}", r.name, r.spec.node);
    }
    drop(engine);

    // detaching → detached: the engine stops
    bed.cluster("n2")
        .modify::<Volume, _>("v1", |v| {
            v.set_state(VolumeState::Detaching)?;
            Ok(true)
        })
        .await
        .unwrap();
    assert!(
        bed.settle(5, |c| async move {
            in_state(&c, "v1", VolumeState::Detached).await
        })
        .await
    );
    assert!(bed.local("n2").engines.get("v1").is_none());
    assert!(!bed.local("n2").managed_engines.contains("v1"));
    assert_eq!(bed.volume("v1").await.status.attached_node, None);

    // deleting → gone: replicas first (their files too), then the volume
    bed.cluster("n1")
        .modify::<Volume, _>("v1", |v| {
            v.set_state(VolumeState::Deleting)?;
            Ok(true)
        })
        .await
        .unwrap();
    assert!(
        bed.settle(5, |c| async move {
            c.get::<Volume>("v1").await.unwrap().is_none()
        })
        .await,
        "volume never deleted"
    );
    assert!(bed.replicas_of("v1").await.is_empty());
    for r in &replicas {
        assert!(bed.local(&r.spec.node).replicas.get(&r.name).is_none());
    }
    assert!(
        bed.cluster("n1")
            .get::<Engine>("v1")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn only_the_owner_moves_a_volume_and_a_stale_engine_elsewhere_is_stopped() {
    let mut bed = Bed::new(&["n1", "n2"]).await;
    bed.create_volume("v1", 8 * MIB, 2).await;
    // replicas run, but only the rendezvous owner may finish creating
    bed.round("n1").await;
    bed.round("n2").await;
    let snap = Snapshot::read(bed.cluster("n1")).await.unwrap();
    let vol = bed.volume("v1").await;
    let owner = owner_of(&vol, &snap.ready).unwrap();
    let other = if owner == "n1" { "n2" } else { "n1" };
    // the other agent's round leaves the volume as it is
    for _ in 0..3 {
        bed.round(other).await;
    }
    assert_eq!(bed.volume("v1").await.status.state, VolumeState::Creating);
    bed.round(&owner).await;
    assert_eq!(bed.volume("v1").await.status.state, VolumeState::Detached);

    // attached on n1; an engine for it that n2 still runs (as after a
    // move it missed) is stopped by n2's own round
    bed.attach("v1", "n1").await;
    assert!(
        bed.settle(10, |c| async move {
            in_state(&c, "v1", VolumeState::Attached).await
        })
        .await
    );
    let engine = bed.local("n1").engines.get("v1").unwrap();
    bed.local("n2").engines.insert(engine);
    bed.round("n2").await;
    assert!(
        bed.local("n2").engines.get("v1").is_none(),
        "n2 still serves a volume attached to n1"
    );
    let replicas: Vec<Replica> = bed.replicas_of("v1").await;
    assert_eq!(replicas.len(), 2);
}

#[tokio::test]
async fn an_engine_whose_in_sync_record_is_superseded_is_fenced_and_reported() {
    // A newer engine took the volume's epoch (as a start elsewhere does)
    // while this one still serves: its next in-sync record is refused by
    // the store. It must be fenced, and the volume must record it, so
    // ENGINE_FENCED reports it — a fenced engine sends its replicas
    // nothing more, so no replica's refusal will record it later.
    let mut bed = Bed::new(&["n1", "n2"]).await;
    bed.create_volume("v1", 16 * MIB, 2).await;
    assert!(
        bed.settle(5, |c| async move {
            in_state(&c, "v1", VolumeState::Detached).await
        })
        .await
    );
    bed.attach("v1", "n1").await;
    assert!(
        bed.settle(10, |c| async move {
            in_state(&c, "v1", VolumeState::Attached).await
        })
        .await
    );
    let engine = bed.local("n1").engines.get("v1").expect("engine on n1");
    let newer = bed.cluster("n2").next_epoch("v1").await.unwrap();
    assert!(newer > engine.epoch());

    let err = crate::controller::in_sync::record_now(bed.cluster("n1"), "v1", &engine)
        .await
        .unwrap_err();
    assert!(err.contains("superseded"), "{err}");
    assert!(engine.is_fenced());
    let fenced = bed
        .volume("v1")
        .await
        .status
        .fenced
        .expect("fenced engine recorded");
    assert_eq!(fenced.node, "n1");
    assert_eq!(fenced.epoch, engine.epoch());
    assert!(fenced.message.contains("superseded"), "{}", fenced.message);
}
