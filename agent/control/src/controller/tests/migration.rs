//! The migration controller: a live migration's steps on source and
//! target — the target's forwarding export, the confirm that fences the
//! source before the target starts its engine, the rollback — with at most
//! one engine taking writes at any moment and nothing acknowledged lost.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::time::Duration;

use bytes::Bytes;
use vigil_engine::device::ExportDevice;
use vigil_model::migration::{Migration, MigrationPhase};
use vigil_model::{Volume, VolumeState};

use super::bed::{Bed, in_state};

const MIB: u64 = 1 << 20;

/// Three nodes; `v1` with 2 replicas attached on n1, 0x11 at 0.
async fn attached_on_n1() -> Bed {
    let mut bed = Bed::new(&["n1", "n2", "n3"]).await;
    bed.create_volume("v1", 8 * MIB, 2).await;
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
    let e = bed.local("n1").engines.get("v1").unwrap();
    e.write(0, Bytes::from(vec![0x11u8; 4096]), true)
        .await
        .unwrap();
    bed
}

/// Asks for `v1` to move to `to`, as `vigil volume migrate` does.
async fn migrate(bed: &Bed, to: &str) {
    let now = vigil_model::now_unix() as u64;
    bed.cluster("n1")
        .modify::<Volume, _>("v1", |v| {
            v.status.migration = Some(Migration {
                target: to.into(),
                source: "n1".into(),
                phase: MigrationPhase::Starting,
                started_at: now,
                phase_since: now,
                target_endpoint: String::new(),
                message: String::new(),
                target_stopped: false,
                source_stopped: false,
            });
            Ok(true)
        })
        .await
        .unwrap();
}

/// Moves the migration of `v1` to `phase` (confirm or roll back).
async fn ask(bed: &Bed, phase: MigrationPhase) {
    let now = vigil_model::now_unix() as u64;
    bed.cluster("n1")
        .modify::<Volume, _>("v1", |v| {
            let m = v.status.migration.as_mut().unwrap();
            m.set_phase(phase, now)?;
            Ok(true)
        })
        .await
        .unwrap();
}

async fn phase(bed: &Bed) -> Option<MigrationPhase> {
    bed.volume("v1").await.status.migration.map(|m| m.phase)
}

/// Engines of `v1` that still take writes (not fenced).
fn writable_engines(bed: &Bed) -> Vec<String> {
    bed.agents
        .iter()
        .filter(|(_, a)| a.local.engines.get("v1").is_some_and(|e| !e.is_fenced()))
        .map(|(n, _)| n.clone())
        .collect()
}

/// Rounds on every agent until `until` holds for the phase, checking
/// after each round that at most one engine takes writes.
async fn run_until(bed: &mut Bed, until: impl Fn(Option<MigrationPhase>) -> bool) -> bool {
    for _ in 0..100 {
        let nodes: Vec<String> = bed.agents.keys().cloned().collect();
        for n in nodes {
            bed.round(&n).await;
            let w = writable_engines(bed);
            assert!(w.len() <= 1, "two engines take writes: {w:?}");
        }
        if until(phase(bed).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn read(d: &impl ExportDevice, offset: u64) -> Vec<u8> {
    d.read(offset, 4096).await.unwrap().to_vec()
}

#[tokio::test]
async fn a_confirmed_migration_moves_the_engine_and_keeps_every_write() {
    let mut bed = attached_on_n1().await;
    migrate(&bed, "n2").await;
    assert!(run_until(&mut bed, |p| p == Some(MigrationPhase::Ready)).await);
    let m = bed.volume("v1").await.status.migration.unwrap();
    assert!(!m.target_endpoint.is_empty());
    // the target's export forwards to the source's engine
    let handover = bed.local("n2").handovers.get("v1").expect("export on n2");
    assert_eq!(read(handover.as_ref(), 0).await, vec![0x11u8; 4096]);
    handover
        .write(4096, Bytes::from(vec![0x22u8; 4096]), true)
        .await
        .unwrap();
    let source = bed.local("n1").engines.get("v1").unwrap();
    assert_eq!(read(source.as_ref(), 4096).await, vec![0x22u8; 4096]);
    assert!(bed.local("n2").engines.get("v1").is_none());

    ask(&bed, MigrationPhase::Confirming).await;
    assert!(run_until(&mut bed, |p| p.is_none()).await);
    let vol = bed.volume("v1").await;
    assert_eq!(vol.status.state, VolumeState::Attached);
    assert_eq!(vol.status.attached_node.as_deref(), Some("n2"));
    assert_eq!(vol.spec.node.as_deref(), Some("n2"));
    // the source was fenced before the target's engine took over, and is
    // gone now
    assert!(source.is_fenced());
    assert!(source.read(0, 4096).await.is_err());
    assert!(bed.local("n1").engines.get("v1").is_none());
    let target = bed.local("n2").engines.get("v1").unwrap();
    assert_eq!(read(target.as_ref(), 0).await, vec![0x11u8; 4096]);
    assert_eq!(read(target.as_ref(), 4096).await, vec![0x22u8; 4096]);
    // the export held by a client keeps working: it serves the new engine
    handover
        .write(8192, Bytes::from(vec![0x33u8; 4096]), true)
        .await
        .unwrap();
    assert_eq!(read(target.as_ref(), 8192).await, vec![0x33u8; 4096]);
}

#[tokio::test]
async fn a_rollback_leaves_the_source_serving_and_closes_the_target_export() {
    let mut bed = attached_on_n1().await;
    migrate(&bed, "n2").await;
    assert!(run_until(&mut bed, |p| p == Some(MigrationPhase::Ready)).await);
    let handover = bed.local("n2").handovers.get("v1").unwrap();
    handover
        .write(4096, Bytes::from(vec![0x44u8; 4096]), true)
        .await
        .unwrap();
    ask(&bed, MigrationPhase::RollingBack).await;
    assert!(run_until(&mut bed, |p| p.is_none()).await);
    let vol = bed.volume("v1").await;
    assert_eq!(vol.status.attached_node.as_deref(), Some("n1"));
    assert!(bed.local("n2").handovers.get("v1").is_none());
    assert!(bed.local("n2").engines.get("v1").is_none());
    // the closed export refuses; the source has every write
    assert!(handover.read(0, 4096).await.is_err());
    let source = bed.local("n1").engines.get("v1").unwrap();
    assert!(!source.is_fenced());
    assert_eq!(read(source.as_ref(), 4096).await, vec![0x44u8; 4096]);
}

#[tokio::test]
async fn a_target_that_dies_before_the_switch_is_rolled_back_by_the_source() {
    let mut bed = attached_on_n1().await;
    migrate(&bed, "n2").await;
    assert!(run_until(&mut bed, |p| p == Some(MigrationPhase::Ready)).await);
    bed.kill("n2").await;
    assert!(run_until(&mut bed, |p| p.is_none()).await);
    let vol = bed.volume("v1").await;
    assert_eq!(vol.status.attached_node.as_deref(), Some("n1"));
    let source = bed.local("n1").engines.get("v1").unwrap();
    assert!(!source.is_fenced());
    source
        .write(0, Bytes::from(vec![0x55u8; 4096]), true)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_step_computed_from_a_stale_read_loses_to_a_rollback() {
    let mut bed = attached_on_n1().await;
    migrate(&bed, "n2").await;
    // the target reads the cluster while the migration is Starting…
    let stale = crate::controller::Snapshot::read(bed.cluster("n2"))
        .await
        .unwrap();
    // …the operator rolls back meanwhile…
    ask(&bed, MigrationPhase::RollingBack).await;
    // …and the target's step from its read (export up, phase Ready) must
    // not overwrite the rollback
    crate::controller::migration::reconcile(bed.local("n2"), &stale).await;
    assert_eq!(phase(&bed).await, Some(MigrationPhase::RollingBack));
    assert!(run_until(&mut bed, |p| p.is_none()).await);
    assert!(bed.local("n2").handovers.get("v1").is_none());
    assert_eq!(
        bed.volume("v1").await.status.attached_node.as_deref(),
        Some("n1")
    );
}
