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
