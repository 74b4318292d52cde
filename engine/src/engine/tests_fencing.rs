//! Epoch fencing: a newer engine's claim makes every replica refuse the
//! older engine, in-process and over the replica protocol, and the older
//! engine fails every request from then on instead of writing over the
//! newer one's data.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;

use crate::address::ReplicaAddress;
use crate::device::ExportDevice;
use crate::engine::{Backend, Engine, EngineConfig, EngineError, FaultReason, ReplicaSpec};
use crate::protocol::{
    ClientError, ClusterToken, ReplicaClient, ReplicaSource, ServerConfig, serve,
};
use crate::replica::{ErrorKind, Replica, ReplicaError, ReplicaOptions};
use crate::size::BLOCK_SIZE;

const SIZE: u64 = 64 * BLOCK_SIZE;

fn replica(tmp: &tempfile::TempDir, name: &str) -> Arc<Replica> {
    Arc::new(Replica::create(&tmp.path().join(name), SIZE, &ReplicaOptions::default()).unwrap())
}

fn local(name: &str, r: &Arc<Replica>, epoch: u64) -> ReplicaSpec {
    ReplicaSpec {
        address: format!("tcp://127.0.0.1:1/{name}"),
        backend: Ok(Backend::local(Arc::clone(r), epoch)),
    }
}

fn block(byte: u8) -> Bytes {
    Bytes::from(vec![byte; BLOCK_SIZE as usize])
}

fn read_block(r: &Replica, offset: u64) -> Vec<u8> {
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    r.read(offset, &mut buf).unwrap();
    buf
}

#[test]
fn a_claim_refuses_older_epochs_and_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r");
    let r = Replica::create(&dir, SIZE, &ReplicaOptions::default()).unwrap();
    assert_eq!(r.epoch(), 0);
    r.claim(3).unwrap();
    r.claim(3).unwrap(); // the same engine again: a no-op
    assert!(r.admit(3).is_ok());
    assert!(
        r.admit(4).is_ok(),
        "a newer engine is admitted before it claims"
    );
    let stale = r.admit(2).err().unwrap();
    assert_eq!(stale.kind(), ErrorKind::StaleEpoch);
    assert!(matches!(
        r.claim(2),
        Err(ReplicaError::StaleEpoch {
            epoch: 2,
            claimed: 3
        })
    ));
    drop(r);
    let r = Replica::open(&dir, &ReplicaOptions::default()).unwrap();
    assert_eq!(r.epoch(), 3, "the claim was persisted");
    assert_eq!(r.info().epoch, 3);
    assert!(r.admit(2).is_err());
}

#[tokio::test]
async fn a_newer_engine_fences_the_older_one_in_process() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (replica(&tmp, "a"), replica(&tmp, "b"));
    let old = Engine::start(
        "v",
        SIZE,
        1,
        vec![local("a", &a, 1), local("b", &b, 1)],
        EngineConfig::default(),
    )
    .await
    .unwrap();
    old.write(0, block(0xaa), false).await.unwrap();

    // The volume moves: a newer engine claims the same replicas and writes.
    let new = Engine::start(
        "v",
        SIZE,
        2,
        vec![local("a", &a, 2), local("b", &b, 2)],
        EngineConfig::default(),
    )
    .await
    .unwrap();
    new.write(0, block(0xbb), false).await.unwrap();

    // The old engine wakes up with a queued write: refused, not written.
    let err = old.write(0, block(0xcc), false).await.unwrap_err();
    assert!(err.to_string().contains("fenced"), "{err}");
    let fenced = old
        .status()
        .fenced_by_newer
        .expect("fenced by the newer engine");
    assert!(fenced.message.contains("claimed by epoch 2"), "{fenced:?}");
    assert!(old.is_fenced());
    assert!(old.read(0, BLOCK_SIZE as u32).await.is_err());
    assert!(old.flush().await.is_err());
    // The replicas were not blamed: the old engine's view keeps them RW,
    // and the data is the newer engine's on both.
    assert!(old.status().replicas.iter().all(|r| r.fault.is_none()));
    assert_eq!(read_block(&a, 0), vec![0xbb; BLOCK_SIZE as usize]);
    assert_eq!(read_block(&b, 0), vec![0xbb; BLOCK_SIZE as usize]);
    new.write(BLOCK_SIZE, block(0xdd), true).await.unwrap();
}

#[tokio::test]
async fn an_older_engine_does_not_start_over_claimed_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let a = replica(&tmp, "a");
    a.claim(5).unwrap();
    let err = Engine::start(
        "v",
        SIZE,
        4,
        vec![local("a", &a, 4)],
        EngineConfig::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(err, EngineError::StaleEpoch { epoch: 4, .. }),
        "{err}"
    );
}

struct Source(HashMap<String, Arc<Replica>>);

impl ReplicaSource for Source {
    fn replica(&self, name: &str) -> Option<Arc<Replica>> {
        self.0.get(name).cloned()
    }
}

#[tokio::test]
async fn a_newer_engine_fences_the_older_one_over_the_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (replica(&tmp, "a"), replica(&tmp, "b"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let token = ClusterToken::new("t");
    let source = Source(HashMap::from([
        ("a".to_string(), Arc::clone(&a)),
        ("b".to_string(), Arc::clone(&b)),
    ]));
    let server = tokio::spawn(serve(
        listener,
        Arc::new(source),
        ServerConfig {
            token: token.clone(),
            connections: Default::default(),
        },
    ));
    let addr = |name: &str| -> ReplicaAddress {
        format!("tcp://127.0.0.1:{port}/{name}").parse().unwrap()
    };
    let remote = |name: &str, epoch: u64| {
        let token = token.clone();
        let address = addr(name);
        async move {
            ReplicaSpec {
                address: address.to_string(),
                backend: ReplicaClient::connect_claiming(
                    &address,
                    &token,
                    Duration::from_secs(5),
                    epoch,
                )
                .await
                .map(Backend::Remote)
                .map_err(|e| {
                    crate::engine::Fault::now(FaultReason::of_client_error(&e), e.to_string())
                }),
            }
        }
    };
    let config = EngineConfig {
        // no ping in the way: the refusal must come from the write itself
        ping_interval: Duration::from_secs(3600),
        ..EngineConfig::default()
    };
    let old = Engine::start(
        "v",
        SIZE,
        7,
        vec![remote("a", 7).await, remote("b", 7).await],
        config.clone(),
    )
    .await
    .unwrap();
    old.write(0, block(1), false).await.unwrap();
    assert_eq!(a.epoch(), 7, "the handshake claimed the replica");

    let new = Engine::start(
        "v",
        SIZE,
        8,
        vec![remote("a", 8).await, remote("b", 8).await],
        config.clone(),
    )
    .await
    .unwrap();
    new.write(0, block(2), true).await.unwrap();

    // The old engine's open connections are refused request by request.
    let err = old.write(0, block(3), false).await.unwrap_err();
    assert!(err.to_string().contains("claimed by epoch 8"), "{err}");
    assert_eq!(read_block(&a, 0), vec![2; BLOCK_SIZE as usize]);
    assert_eq!(read_block(&b, 0), vec![2; BLOCK_SIZE as usize]);

    // A new connection of the old epoch is refused in the handshake.
    let refused = ReplicaClient::connect_claiming(&addr("a"), &token, Duration::from_secs(5), 7)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ClientError::Remote {
                kind: ErrorKind::StaleEpoch,
                ..
            }
        ),
        "{refused}"
    );
    // A connection for no engine (epoch 0: a probe, or a peer without
    // epochs) is accepted but cannot read or write a claimed replica.
    let probe = ReplicaClient::connect(&addr("b"), &token, Duration::from_secs(5))
        .await
        .unwrap();
    let refused = probe.write(0, block(4)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ClientError::Remote {
                kind: ErrorKind::StaleEpoch,
                ..
            }
        ),
        "{refused}"
    );
    assert!(probe.read(0, BLOCK_SIZE as u32).await.is_err());
    assert_eq!(read_block(&b, 0), vec![2; BLOCK_SIZE as usize]);
    server.abort();
}
