//! min-replicas-to-write: below the minimum, writes fail (io-error) or are
//! held until a rebuild brings a replica back (suspend); a write that
//! reached too few RW replicas is not acknowledged.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::device::ExportDevice;
use crate::engine::{Backend, Engine, EngineConfig, FaultReason, OnSuspend, ReplicaSpec};
use crate::replica::{Replica, ReplicaOptions};
use crate::size::BLOCK_SIZE;

const SIZE: u64 = 64 * BLOCK_SIZE;

fn replica(tmp: &tempfile::TempDir, name: &str) -> Arc<Replica> {
    Arc::new(Replica::create(&tmp.path().join(name), SIZE, &ReplicaOptions::default()).unwrap())
}

fn address(name: &str) -> String {
    format!("tcp://127.0.0.1:1/{name}")
}

async fn two_replicas(tmp: &tempfile::TempDir) -> Arc<Engine> {
    let specs = ["a", "b"]
        .iter()
        .map(|n| ReplicaSpec {
            address: address(n),
            backend: Ok(Backend::local(replica(tmp, n), 1)),
        })
        .collect();
    Engine::start("v", SIZE, 1, specs, EngineConfig::default())
        .await
        .unwrap()
}

fn block(byte: u8) -> Bytes {
    Bytes::from(vec![byte; BLOCK_SIZE as usize])
}

#[tokio::test]
async fn below_the_minimum_writes_fail_with_io_error_and_reads_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let e = two_replicas(&tmp).await;
    e.set_min_rw(2, OnSuspend::IoError);
    e.write(0, block(1), false).await.unwrap();
    e.fail_replica(&address("b"), FaultReason::IoError, "test");
    let err = e.write(0, block(2), false).await.unwrap_err();
    assert!(
        err.to_string().contains("min-replicas-to-write is 2"),
        "{err}"
    );
    assert_eq!(e.read(0, 4096).await.unwrap()[0], 1);
    assert!(e.status().unavailable_reason.unwrap().contains("only 1 RW"));
    // the default (1) acknowledges with one RW replica, as always
    e.set_min_rw(1, OnSuspend::IoError);
    e.write(0, block(3), false).await.unwrap();
}

#[tokio::test]
async fn below_the_minimum_writes_are_held_until_a_rebuild_brings_a_replica_back() {
    let tmp = tempfile::tempdir().unwrap();
    let e = two_replicas(&tmp).await;
    e.set_min_rw(2, OnSuspend::Suspend);
    e.fail_replica(&address("b"), FaultReason::IoError, "test");
    let writer = {
        let e = Arc::clone(&e);
        tokio::spawn(async move { e.write(0, block(7), true).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!writer.is_finished(), "the write was not held");
    let c = replica(&tmp, "c");
    e.add_replica(address("c"), Backend::local(Arc::clone(&c), 1))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the held write went on once a second replica was RW")
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    c.read(0, &mut buf).unwrap();
    assert_eq!(buf[0], 7, "the held write reached the rebuilt replica too");
}
