//! The in-sync generation through the engine: members persist what the
//! control plane recorded (in-process and over the replica protocol), an
//! older engine cannot move it, and a rebuild never runs onto a replica of
//! a newer generation.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;

use crate::device::ExportDevice;
use crate::engine::{Backend, Engine, EngineConfig, EngineError, Mode, ReplicaSpec};
use crate::protocol::{ClusterToken, ReplicaClient, ReplicaSource, ServerConfig, serve};
use crate::replica::{ErrorKind, Replica, ReplicaOptions};
use crate::size::BLOCK_SIZE;

const SIZE: u64 = 64 * BLOCK_SIZE;

fn replica(tmp: &tempfile::TempDir, name: &str) -> Arc<Replica> {
    Arc::new(Replica::create(&tmp.path().join(name), SIZE, &ReplicaOptions::default()).unwrap())
}

fn address(name: &str) -> String {
    format!("tcp://127.0.0.1:1/{name}")
}

fn local(name: &str, r: &Arc<Replica>, epoch: u64) -> ReplicaSpec {
    ReplicaSpec {
        address: address(name),
        backend: Ok(Backend::local(Arc::clone(r), epoch)),
    }
}

fn read_all(r: &Replica) -> Vec<u8> {
    let mut buf = vec![0u8; r.size() as usize];
    r.read(0, &mut buf).unwrap();
    buf
}

#[tokio::test]
async fn members_persist_the_generation_and_others_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (replica(&tmp, "a"), replica(&tmp, "b"));
    let engine = Engine::start(
        "v",
        SIZE,
        1,
        vec![local("a", &a, 1), local("b", &b, 1)],
        EngineConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(engine.generation(), 0);
    engine
        .join_generation(4, &[address("a"), address("b")])
        .await
        .unwrap();
    // b is not in the next set (say it left RW and came back unrecorded)
    engine.join_generation(5, &[address("a")]).await.unwrap();
    assert_eq!(engine.generation(), 5);
    assert_eq!(a.in_sync_generation(), 5);
    assert_eq!(b.in_sync_generation(), 4);
    assert_eq!(a.info().in_sync_generation, 5);
    drop(engine);
    // persisted: a reopened replica reports it, and an engine started from
    // them starts at the newest
    let dir = a.dir().to_path_buf();
    drop(a);
    let a = Arc::new(Replica::open(&dir, &ReplicaOptions::default()).unwrap());
    assert_eq!(a.in_sync_generation(), 5);
    let engine = Engine::start(
        "v",
        SIZE,
        2,
        vec![local("a", &a, 2), local("b", &b, 2)],
        EngineConfig::default(),
    )
    .await
    .unwrap();
    assert_eq!(engine.generation(), 5);
    let gens: Vec<_> = engine
        .start_revisions()
        .iter()
        .map(|s| s.in_sync_generation)
        .collect();
    assert_eq!(gens, vec![Some(5), Some(4)]);
}

#[tokio::test]
async fn an_older_engine_cannot_move_the_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let a = replica(&tmp, "a");
    let old = Engine::start(
        "v",
        SIZE,
        1,
        vec![local("a", &a, 1)],
        EngineConfig::default(),
    )
    .await
    .unwrap();
    let new = Engine::start(
        "v",
        SIZE,
        2,
        vec![local("a", &a, 2)],
        EngineConfig::default(),
    )
    .await
    .unwrap();
    new.join_generation(7, &[address("a")]).await.unwrap();
    let err = old.join_generation(9, &[address("a")]).await.unwrap_err();
    assert!(
        matches!(err, EngineError::StaleEpoch { epoch: 1, .. }),
        "{err}"
    );
    assert_eq!(
        a.in_sync_generation(),
        7,
        "the stale engine's value never landed"
    );
    // and directly at the replica: a stale admission is refused
    assert_eq!(a.admit(1).err().unwrap().kind(), ErrorKind::StaleEpoch);
}

#[tokio::test]
async fn a_rebuild_never_runs_onto_a_replica_of_a_newer_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, newer) = (replica(&tmp, "a"), replica(&tmp, "newer"));
    // `newer` joined generation 9 elsewhere and holds data of its own.
    newer.write(0, &vec![0x5a; BLOCK_SIZE as usize]).unwrap();
    newer.flush().unwrap();
    newer.join_generation(9).unwrap();
    let before = (read_all(&newer), newer.info());
    let engine = Engine::start(
        "v",
        SIZE,
        3,
        vec![local("a", &a, 3)],
        EngineConfig::default(),
    )
    .await
    .unwrap();
    engine.join_generation(6, &[address("a")]).await.unwrap();
    engine
        .write(0, Bytes::from(vec![0x11; BLOCK_SIZE as usize]), true)
        .await
        .unwrap();
    let err = engine
        .add_replica(address("newer"), Backend::local(Arc::clone(&newer), 3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::NewerGeneration {
                replica_generation: 9,
                engine_generation: 6,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("restored from a backup"), "{err}");
    // untouched: same data, chain, revision, epoch, generation
    assert_eq!((read_all(&newer), newer.info()), before);
    assert_eq!(newer.epoch(), 0, "not even claimed");
    assert!(
        engine
            .status()
            .replicas
            .iter()
            .all(|r| r.mode == Mode::ReadWrite)
    );
    assert_eq!(engine.status().replicas.len(), 1);
    // once the engine knows a generation at least as new, it may rebuild
    engine.join_generation(9, &[address("a")]).await.unwrap();
    engine
        .add_replica(address("newer"), Backend::local(Arc::clone(&newer), 3))
        .await
        .unwrap();
}

struct Source(HashMap<String, Arc<Replica>>);

impl ReplicaSource for Source {
    fn replica(&self, name: &str) -> Option<Arc<Replica>> {
        self.0.get(name).cloned()
    }
}

#[tokio::test]
async fn the_generation_travels_over_the_protocol_and_a_stale_epoch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = replica(&tmp, "a");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let token = ClusterToken::new("t");
    let server = tokio::spawn(serve(
        listener,
        Arc::new(Source(HashMap::from([("a".to_string(), Arc::clone(&a))]))),
        ServerConfig {
            token: token.clone(),
            connections: Default::default(),
        },
    ));
    let addr = format!("tcp://127.0.0.1:{port}/a").parse().unwrap();
    let t = Duration::from_secs(5);
    let old = ReplicaClient::connect_claiming(&addr, &token, t, 1)
        .await
        .unwrap();
    old.join_generation(3).await.unwrap();
    assert_eq!(old.info().await.unwrap().in_sync_generation, 3);
    let new = ReplicaClient::connect_claiming(&addr, &token, t, 2)
        .await
        .unwrap();
    let err = old.join_generation(8).await.unwrap_err();
    assert!(err.to_string().contains("epoch"), "{err}");
    assert_eq!(a.in_sync_generation(), 3);
    // the newer engine lowers it (a salvage's new numbering would not, but
    // whatever it sets is what the replica keeps)
    new.join_generation(2).await.unwrap();
    assert_eq!(new.info().await.unwrap().in_sync_generation, 2);
    server.abort();
}
