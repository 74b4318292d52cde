//! The cluster-only controllers driven against the embedded store in a
//! temp dir: each test arranges the objects, runs one round as a given
//! node, and checks what the store holds afterwards.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use vigil_model::settings::StoredSetting;
use vigil_model::{Engine, Event, Node, Volume, VolumeState};
use vigil_store::embedded::EmbeddedStore;

use crate::cluster::Cluster;
use crate::controller::{Snapshot, nodes, recovery};
use crate::scheduler::testkit;

/// A store in a temp dir and the cluster as `node` sees it.
fn cluster(dir: &TempDir, node: &str) -> Cluster {
    let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
    Cluster::new(Arc::new(store), node)
}

/// Registers `name` (a node object with no liveness record: down).
async fn register(c: &Cluster, name: &str) {
    c.create(&testkit::node(name, None).node).await.unwrap();
}

/// Makes `c`'s own node live (a lease-bound liveness record).
async fn go_live(c: &Cluster) {
    let lease = c
        .grant_liveness_lease(Duration::from_secs(30))
        .await
        .unwrap();
    c.set_live(lease).await.unwrap();
}

async fn set(c: &Cluster, name: &str, value: &str) {
    c.create(&StoredSetting {
        name: name.into(),
        value: value.into(),
    })
    .await
    .unwrap();
}

/// A 1 GiB volume attached to `node`, with its engine object.
async fn attached_to(c: &Cluster, name: &str, node: &str) {
    let mut v = testkit::volume(name, 1 << 30, 2);
    v.status.state = VolumeState::Attached;
    v.spec.node = Some(node.into());
    v.status.attached_node = Some(node.into());
    v.status.endpoint = format!("nbd://{node}/{name}");
    c.create(&v).await.unwrap();
    c.create(&Engine::new(name, node)).await.unwrap();
}

async fn events(c: &Cluster, reason: &str) -> Vec<Event> {
    c.list::<Event>()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.object)
        .filter(|e| e.reason == reason)
        .collect()
}

#[tokio::test]
async fn a_node_without_liveness_is_marked_down_once_and_cleared_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = cluster(&dir, "n1");
    register(&n1, "n1").await;
    register(&n1, "n2").await;
    go_live(&n1).await;

    let snap = Snapshot::read(&n1).await.unwrap();
    nodes::mark_down(&n1, &snap).await;
    let n2 = n1.must_get::<Node>("n2").await.unwrap();
    assert_eq!(n2.object.status.down_since, Some(snap.now));
    assert_eq!(
        n1.must_get::<Node>("n1")
            .await
            .unwrap()
            .object
            .status
            .down_since,
        None
    );
    assert_eq!(events(&n1, "NodeDown").await.len(), 1);

    // A second round (another agent, a later time) keeps the first time:
    // every agent measures the same down time.
    let mut later = Snapshot::read(&n1).await.unwrap();
    later.now += 100;
    nodes::mark_down(&n1, &later).await;
    let n2 = n1.must_get::<Node>("n2").await.unwrap();
    assert_eq!(n2.object.status.down_since, Some(snap.now));
    assert_eq!(events(&n1, "NodeDown").await.len(), 1, "no second event");

    // n2 renews its lease again: the mark goes.
    go_live(&n1.as_node("n2")).await;
    let snap = Snapshot::read(&n1).await.unwrap();
    assert!(snap.ready.contains("n2"));
    nodes::mark_down(&n1, &snap).await;
    let n2 = n1.must_get::<Node>("n2").await.unwrap();
    assert_eq!(n2.object.status.down_since, None);
}

#[tokio::test]
async fn policy_wait_detaches_from_a_node_down_past_the_timeout_only() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = cluster(&dir, "n1");
    register(&n1, "n1").await;
    register(&n1, "n2").await;
    go_live(&n1).await;
    set(&n1, "volume-attachment-recovery-policy", "wait").await;
    set(&n1, "node-down-timeout", "60").await;
    attached_to(&n1, "v1", "n2").await;
    let snap = Snapshot::read(&n1).await.unwrap();
    nodes::mark_down(&n1, &snap).await;

    // Down for less than the timeout: nothing moves, the message says why.
    let snap = Snapshot::read(&n1).await.unwrap();
    recovery::reconcile(&n1, "n1", &snap).await;
    let v = n1.must_get::<Volume>("v1").await.unwrap().object;
    assert_eq!(v.status.state, VolumeState::Attached);
    assert!(v.status.message.contains("n2"), "{}", v.status.message);
    assert!(n1.get::<Engine>("v1").await.unwrap().is_some());

    // Past the timeout: one transaction detaches it and drops its engine.
    let mut snap = Snapshot::read(&n1).await.unwrap();
    snap.now += 61;
    // (the round judges "gone" from the snapshot's clock)
    assert!(snap.node_gone("n2"));
    recovery::reconcile(&n1, "n1", &snap).await;
    let v = n1.must_get::<Volume>("v1").await.unwrap().object;
    assert_eq!(v.status.state, VolumeState::Detached);
    assert_eq!(v.status.attached_node, None);
    assert_eq!(v.spec.node, None);
    assert!(v.status.endpoint.is_empty());
    assert!(n1.get::<Engine>("v1").await.unwrap().is_none());
    let detached = events(&n1, "DetachedFromDownNode").await;
    assert_eq!(detached.len(), 1);
    assert!(
        detached[0]
            .message
            .contains("volume-attachment-recovery-policy wait")
    );
}

#[tokio::test]
async fn policy_never_leaves_the_volume_and_only_the_chosen_agent_acts() {
    let dir = tempfile::tempdir().unwrap();
    let n1 = cluster(&dir, "n1");
    for n in ["n1", "n2", "n3"] {
        register(&n1, n).await;
    }
    go_live(&n1).await;
    let n3 = n1.as_node("n3");
    go_live(&n3).await;
    set(&n1, "volume-attachment-recovery-policy", "never").await;
    attached_to(&n1, "v1", "n2").await;
    nodes::mark_down(&n1, &Snapshot::read(&n1).await.unwrap()).await;

    let mut snap = Snapshot::read(&n1).await.unwrap();
    snap.now += 100_000;
    let chosen = crate::controller::rendezvous("v1", &snap.ready).unwrap();
    let other = if chosen == "n1" { "n3" } else { "n1" };
    let before = n1.must_get::<Volume>("v1").await.unwrap();

    // The agent not chosen by rendezvous hashing does nothing at all.
    recovery::reconcile(&n1, other, &snap).await;
    assert_eq!(
        n1.must_get::<Volume>("v1").await.unwrap().revision,
        before.revision
    );

    // The chosen one only explains: never means an operator decides.
    recovery::reconcile(&n1, &chosen, &snap).await;
    let v = n1.must_get::<Volume>("v1").await.unwrap().object;
    assert_eq!(v.status.state, VolumeState::Attached);
    assert!(v.status.message.contains("never"), "{}", v.status.message);
    assert!(events(&n1, "DetachedFromDownNode").await.is_empty());

    // The operator's detach completes at once while n2 is down.
    let done = recovery::detach_from_down_node(&n1, "v1", recovery::DetachCause::Operator)
        .await
        .unwrap();
    assert_eq!(done.map(|(node, _)| node).as_deref(), Some("n2"));
    let v = n1.must_get::<Volume>("v1").await.unwrap().object;
    assert_eq!(v.status.state, VolumeState::Detached);
    // And a second detach finds nothing to do.
    let again = recovery::detach_from_down_node(&n1, "v1", recovery::DetachCause::Operator)
        .await
        .unwrap();
    assert!(again.is_none());
}
