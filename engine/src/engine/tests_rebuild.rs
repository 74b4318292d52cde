//! Rebuilds through the engine with in-process replicas: what the guest
//! does while a replica is rebuilt must hold on that replica alone, and a
//! fenced engine's rebuild stops at its next step. The copy is held between
//! its steps ([`super::rebuild::hold`]) so each test acts at a known point.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::rebuild::hold;
use super::{Backend, Engine, EngineConfig, FaultReason, Mode, ReplicaSpec, ReplicaStatus};
use crate::device::ExportDevice;
use crate::replica::{Replica, ReplicaOptions};
use crate::size::BLOCK_SIZE;

const BS: usize = BLOCK_SIZE as usize;
const BLOCKS: u64 = 32;

/// `n` blocks, block `i` filled with `fill + i`.
fn pattern(fill: u8, n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| std::iter::repeat_n(fill.wrapping_add(i as u8), BS))
        .collect()
}

fn read_all(r: &Replica) -> Vec<u8> {
    let mut buf = vec![0u8; r.size() as usize];
    r.read(0, &mut buf).unwrap();
    buf
}

fn replica(tmp: &tempfile::TempDir, name: &str) -> Arc<Replica> {
    let r = Replica::create(
        &tmp.path().join(name),
        BLOCKS * BLOCK_SIZE,
        &ReplicaOptions::default(),
    )
    .unwrap();
    Arc::new(r)
}

fn address(name: &str) -> String {
    format!("tcp://127.0.0.1:1/{name}")
}

/// An engine for `volume` over the one replica `source`.
async fn engine_over(volume: &str, source: &Arc<Replica>) -> Arc<Engine> {
    let spec = ReplicaSpec {
        address: address("source"),
        backend: Ok(Backend::local(Arc::clone(source), 1)),
    };
    Engine::start(
        volume,
        BLOCKS * BLOCK_SIZE,
        1,
        vec![spec],
        EngineConfig::default(),
    )
    .await
    .unwrap()
}

/// A user snapshot `name` of `r`.
fn snapshot(r: &Replica, name: &str) {
    r.snapshot(name, true, Default::default())
        .map(|_| ())
        .unwrap();
}

/// A new replica "target", added to `engine` (its rebuild starts).
async fn add_target(engine: &Arc<Engine>, tmp: &tempfile::TempDir) -> Arc<Replica> {
    let target = replica(tmp, "target");
    engine
        .add_replica(address("target"), Backend::local(Arc::clone(&target), 1))
        .await
        .unwrap();
    target
}

/// Waits until the rebuild into `addr` has finished, however it ended.
async fn rebuild_finished(engine: &Engine, addr: &str) -> ReplicaStatus {
    for _ in 0..6000 {
        let st = engine.status();
        let r = st.replicas.into_iter().find(|r| r.address == addr).unwrap();
        if r.rebuild
            .as_ref()
            .is_some_and(|p| p.finished_unix.is_some())
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the rebuild into {addr} never finished");
}

#[tokio::test]
async fn zeroes_sent_during_a_rebuild_read_as_zeros_on_the_rebuilt_replica() {
    let volume = "zeroes-during-rebuild";
    let tmp = tempfile::tempdir().unwrap();
    let source = replica(&tmp, "source");
    source.write(0, &pattern(1, 16)).unwrap();
    snapshot(&source, "s1");
    // In the source's head: frozen by the rebuild's own snapshot.
    source.write(20 * BLOCK_SIZE, &pattern(60, 8)).unwrap();
    let engine = engine_over(volume, &source).await;

    let target = replica(&tmp, "target");
    let held = hold::install(volume);
    engine
        .add_replica(address("target"), Backend::local(Arc::clone(&target), 1))
        .await
        .unwrap();
    // The copy waits before its first step; the target is WO, its head new.
    held.reached(1).await;
    engine
        .write_zeroes(2 * BLOCK_SIZE, 3 * BS as u32, false)
        .await
        .unwrap();
    engine.trim(10 * BLOCK_SIZE, 2 * BS as u32).await.unwrap();
    engine.trim(22 * BLOCK_SIZE, 4 * BS as u32).await.unwrap();
    engine
        .write(30 * BLOCK_SIZE, Bytes::from(pattern(200, 1)), false)
        .await
        .unwrap();
    held.allow(usize::MAX >> 4);
    let st = rebuild_finished(&engine, &address("target")).await;
    assert_eq!(st.mode, Mode::ReadWrite, "rebuild failed: {:?}", st.fault);

    let mut want = pattern(1, 16);
    want.resize(20 * BS, 0);
    want.extend(pattern(60, 8));
    want.resize(BLOCKS as usize * BS, 0);
    want[2 * BS..5 * BS].fill(0);
    want[10 * BS..12 * BS].fill(0);
    want[22 * BS..26 * BS].fill(0);
    want[30 * BS..31 * BS].copy_from_slice(&pattern(200, 1));
    assert!(read_all(&source) == want, "the source is wrong");
    let got = read_all(&target);
    for (block, (g, w)) in got.chunks(BS).zip(want.chunks(BS)).enumerate() {
        assert!(
            g == w,
            "block {block} of the rebuilt replica differs (old data under zeroes?)"
        );
    }
    // And from disk alone.
    let dir = target.dir().to_path_buf();
    let reopened = Replica::open(&dir, &ReplicaOptions::default()).unwrap();
    assert!(read_all(&reopened) == want, "differs after a reopen");
}

#[tokio::test]
async fn a_fenced_engine_stops_its_rebuild_at_the_next_step() {
    let volume = "fenced-during-rebuild";
    let tmp = tempfile::tempdir().unwrap();
    let source = replica(&tmp, "source");
    // Three extents in s1: staging it and copying them are four steps.
    for block in [0, 8, 16] {
        source.write(block * BLOCK_SIZE, &pattern(7, 2)).unwrap();
    }
    snapshot(&source, "s1");
    let engine = engine_over(volume, &source).await;

    let target = replica(&tmp, "target");
    let held = hold::install(volume);
    engine
        .add_replica(address("target"), Backend::local(Arc::clone(&target), 1))
        .await
        .unwrap();
    // Stage s1 and copy its first extent; the copy then waits before the
    // second, and the engine is fenced there.
    held.allow(2);
    held.reached(3).await;
    engine.fence().await.unwrap();
    held.allow(usize::MAX >> 4);
    let st = rebuild_finished(&engine, &address("target")).await;

    assert_eq!(st.mode, Mode::Error);
    let fault = st.fault.unwrap();
    assert_eq!(fault.reason, FaultReason::RebuildFailed);
    assert!(fault.last_error.contains("fenced"), "{}", fault.last_error);
    // Nothing reached the target after the fence: no second extent in the
    // staged file, no installed chain.
    let progress = st.rebuild.unwrap();
    assert_eq!(progress.bytes_done, 2 * BLOCK_SIZE);
    let names: Vec<String> = target.info().chain.into_iter().map(|l| l.name).collect();
    assert!(
        !names.iter().any(|n| n == "s1"),
        "chain installed: {names:?}"
    );
    let partial = std::fs::File::open(target.dir().join("volume-snap-s1.img.partial")).unwrap();
    let mut buf = vec![0u8; 2 * BS];
    partial.read_exact_at(&mut buf, 0).unwrap();
    assert!(
        buf == pattern(7, 2),
        "the extent before the fence is missing"
    );
    partial.read_exact_at(&mut buf, 8 * BLOCK_SIZE).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0),
        "an extent was copied after the fence"
    );
}

#[tokio::test]
async fn a_rebuilt_layer_carries_the_checksum_of_the_data_copied() {
    // The copy hashes what it sends (no second read of the source): the
    // checksum the target installs must be the one the source computes from
    // its own file, over several extents.
    let volume = "checksum-from-copy";
    let tmp = tempfile::tempdir().unwrap();
    let source = replica(&tmp, "source");
    for (block, n) in [(0, 3), (5, 1), (9, 7), (31, 1)] {
        source
            .write(block * BLOCK_SIZE, &pattern(block as u8, n))
            .unwrap();
    }
    snapshot(&source, "s1");
    let engine = engine_over(volume, &source).await;
    let target = add_target(&engine, &tmp).await;
    let st = rebuild_finished(&engine, &address("target")).await;
    assert_eq!(st.mode, Mode::ReadWrite, "rebuild failed: {:?}", st.fault);
    let want = source.layer_checksum("s1").unwrap();
    assert_eq!(target.layer_checksum("s1").unwrap(), want);
    let (fresh, _) = target.fresh_layer_checksum("s1").unwrap();
    assert_eq!(
        fresh, want,
        "the installed checksum is not what the target holds"
    );
}

#[tokio::test]
async fn a_source_layer_that_changed_on_disk_is_not_copied() {
    // s1's checksum is stored, then its file is damaged behind the
    // replica's back: the rebuild must fail and install nothing, rather
    // than spread the damage to a new replica.
    let volume = "rotted-source";
    let tmp = tempfile::tempdir().unwrap();
    let source = replica(&tmp, "source");
    source.write(0, &pattern(3, 4)).unwrap();
    snapshot(&source, "s1");
    source.layer_checksum("s1").unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(source.dir().join("volume-snap-s1.img"))
        .unwrap();
    file.write_all_at(&[0xEE; 512], BLOCK_SIZE).unwrap();
    file.sync_all().unwrap();
    let engine = engine_over(volume, &source).await;
    let target = add_target(&engine, &tmp).await;
    let st = rebuild_finished(&engine, &address("target")).await;
    assert_eq!(st.mode, Mode::Error);
    let fault = st.fault.unwrap();
    assert_eq!(fault.reason, FaultReason::RebuildFailed);
    assert!(
        fault.last_error.contains("changed on disk"),
        "{}",
        fault.last_error
    );
    let names: Vec<String> = target.info().chain.into_iter().map(|l| l.name).collect();
    assert!(
        !names.iter().any(|n| n == "s1"),
        "chain installed: {names:?}"
    );
}
