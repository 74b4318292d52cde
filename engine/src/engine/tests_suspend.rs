//! Suspension: no replica I/O while suspended; clients held or failed as
//! chosen; a fence fails held requests.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::device::ExportDevice;
use crate::engine::{Backend, Engine, EngineConfig, OnSuspend, ReplicaSpec};
use crate::replica::{Replica, ReplicaOptions};
use crate::size::BLOCK_SIZE;

const SIZE: u64 = 64 * BLOCK_SIZE;

async fn engine(tmp: &tempfile::TempDir) -> (Arc<Engine>, Arc<Replica>) {
    let r =
        Arc::new(Replica::create(&tmp.path().join("a"), SIZE, &ReplicaOptions::default()).unwrap());
    let spec = ReplicaSpec {
        address: "tcp://127.0.0.1:1/a".into(),
        backend: Ok(Backend::local(Arc::clone(&r), 1)),
    };
    let e = Engine::start("v", SIZE, 1, vec![spec], EngineConfig::default())
        .await
        .unwrap();
    (e, r)
}

fn block(byte: u8) -> Bytes {
    Bytes::from(vec![byte; BLOCK_SIZE as usize])
}

fn first_byte(r: &Replica) -> u8 {
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    r.read(0, &mut buf).unwrap();
    buf[0]
}

#[tokio::test]
async fn a_suspended_engine_holds_writes_until_it_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (e, r) = engine(&tmp).await;
    e.suspend(OnSuspend::Suspend, "lease not renewed").await;
    assert_eq!(
        e.status().suspended.map(|s| s.on_suspend),
        Some(OnSuspend::Suspend)
    );
    let writer = {
        let e = Arc::clone(&e);
        tokio::spawn(async move { e.write(0, block(7), false).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "the write was not held");
    assert_eq!(
        first_byte(&r),
        0,
        "nothing reached the replica while suspended"
    );
    assert!(e.snapshot("s", Default::default()).await.is_err());
    e.resume();
    writer.await.unwrap().unwrap();
    assert_eq!(first_byte(&r), 7);
}

#[tokio::test]
async fn an_io_error_suspension_fails_requests_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (e, r) = engine(&tmp).await;
    e.suspend(OnSuspend::IoError, "lease not renewed").await;
    let err = e.write(0, block(7), false).await.unwrap_err();
    assert!(err.to_string().contains("suspended"), "{err}");
    assert!(e.read(0, 4096).await.is_err());
    assert_eq!(first_byte(&r), 0);
    e.resume();
    e.write(0, block(8), true).await.unwrap();
    assert_eq!(first_byte(&r), 8);
}

#[tokio::test]
async fn a_fence_fails_held_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let (e, r) = engine(&tmp).await;
    e.suspend(OnSuspend::Suspend, "lease not renewed").await;
    let writer = {
        let e = Arc::clone(&e);
        tokio::spawn(async move { e.write(0, block(9), false).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    e.fence().await.unwrap();
    let held = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("the held write ended with the fence")
        .unwrap();
    assert!(held.is_err());
    assert_eq!(first_byte(&r), 0);
}

/// A write waiting for the in-sync set to be recorded is acknowledged if
/// the record comes while a fence waits for it; without a record, the
/// fence gives up after the I/O timeout and the write fails.
#[tokio::test]
async fn a_fence_waits_for_a_pending_membership_record_then_gives_up() {
    use crate::engine::FaultReason;
    let tmp = tempfile::tempdir().unwrap();
    // fresh replicas per engine: the second must not start with b stale
    let replicas = |set: &str| -> Vec<Arc<Replica>> {
        ["a", "b"]
            .iter()
            .map(|n| {
                Arc::new(
                    Replica::create(
                        &tmp.path().join(format!("{set}-{n}")),
                        SIZE,
                        &ReplicaOptions::default(),
                    )
                    .unwrap(),
                )
            })
            .collect()
    };
    let start = |replicas: &[Arc<Replica>], config: EngineConfig| {
        let specs = ["a", "b"]
            .iter()
            .zip(replicas)
            .map(|(n, r)| ReplicaSpec {
                address: format!("tcp://127.0.0.1:1/{n}"),
                backend: Ok(Backend::local(Arc::clone(r), 1)),
            })
            .collect();
        Engine::start("v", SIZE, 1, specs, config)
    };
    let config = EngineConfig {
        io_timeout: Duration::from_millis(600),
        ..EngineConfig::default()
    };

    // recorded while the fence waits: acknowledged
    let first = replicas("first");
    let e = start(&first, config.clone()).await.unwrap();
    e.require_recorded_membership();
    e.fail_replica("tcp://127.0.0.1:1/b", FaultReason::IoError, "test");
    let writer = {
        let e = Arc::clone(&e);
        tokio::spawn(async move { e.write(0, block(5), false).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!writer.is_finished(), "the write waits for the record");
    let fencer = {
        let e = Arc::clone(&e);
        tokio::spawn(async move { e.fence().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (shrinks, _) = e.membership();
    e.membership_recorded(shrinks);
    writer.await.unwrap().unwrap();
    let _ = fencer.await.unwrap();
    assert!(e.is_fenced());
    assert_eq!(first_byte(&first[0]), 5);

    // never recorded: the fence goes ahead after the I/O timeout
    let second = replicas("second");
    let e = start(&second, config).await.unwrap();
    e.require_recorded_membership();
    e.fail_replica("tcp://127.0.0.1:1/b", FaultReason::IoError, "test");
    let writer = {
        let e = Arc::clone(&e);
        tokio::spawn(async move { e.write(0, block(6), false).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), e.fence())
        .await
        .expect("the fence does not wait forever");
    let result = writer.await.unwrap();
    assert!(result.is_err(), "not acknowledged without the record");
}

/// A write waiting for the record of a smaller in-sync set fails, never
/// acknowledged, when the last replica it reached leaves RW too: no record
/// can name a replica that holds it (the model checker's "empty record"
/// finding: the recorder records nothing for an empty set, and used to
/// release the write anyway).
#[tokio::test]
async fn a_write_waiting_for_the_record_fails_when_no_replica_is_rw_any_more() {
    use crate::engine::FaultReason;
    let tmp = tempfile::tempdir().unwrap();
    let replicas: Vec<Arc<Replica>> = ["a", "b"]
        .iter()
        .map(|n| {
            Arc::new(
                Replica::create(&tmp.path().join(n), SIZE, &ReplicaOptions::default()).unwrap(),
            )
        })
        .collect();
    let specs = ["a", "b"]
        .iter()
        .zip(&replicas)
        .map(|(n, r)| ReplicaSpec {
            address: format!("tcp://127.0.0.1:1/{n}"),
            backend: Ok(Backend::local(Arc::clone(r), 1)),
        })
        .collect();
    let e = Engine::start("v", SIZE, 1, specs, EngineConfig::default())
        .await
        .unwrap();
    e.require_recorded_membership();
    e.fail_replica("tcp://127.0.0.1:1/b", FaultReason::IoError, "test");
    let writer = {
        let e = Arc::clone(&e);
        tokio::spawn(async move { e.write(0, block(7), false).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!writer.is_finished(), "the write waits for the record");
    // The last RW replica goes before anything is recorded.
    e.fail_replica("tcp://127.0.0.1:1/a", FaultReason::IoError, "test");
    let result = tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("the write is answered")
        .unwrap();
    assert!(
        result.is_err(),
        "acknowledged with no RW replica left: {result:?}"
    );
    // A record written now (the recorder records nothing for an empty
    // set) releases nothing that was acknowledged: the answer above stands.
    let (shrinks, rw) = e.membership();
    assert!(rw.is_empty(), "{rw:?}");
    e.membership_recorded(shrinks);
}
