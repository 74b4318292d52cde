//! The asynchronous (io_uring) read and write path against the blocking
//! one: same bytes, same index, same fencing; and a write whose caller
//! stopped waiting still ends up in the index.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::tests::{BS, new_replica, pattern, work_tmp};
use super::*;

fn sync_read(r: &Replica, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    r.read(offset, &mut buf).unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_reads_and_writes_match_the_blocking_path_through_a_chain() {
    assert!(
        crate::ring::probe().is_ok(),
        "io_uring works on the test machine"
    );
    let tmp = work_tmp();
    let r = Arc::new(new_replica(&tmp, 64));
    // Blocks 0..8 in a snapshot, 4..12 in the head over it, 20..24 written
    // unaligned in memory (the O_DIRECT bounce), the rest holes.
    r.write_async(0, 0, Bytes::from(pattern(1, 8)))
        .await
        .unwrap();
    let r2 = Arc::clone(&r);
    tokio::task::spawn_blocking(move || r2.snapshot("s1", true, BTreeMap::new()))
        .await
        .unwrap()
        .unwrap();
    r.write_async(0, 4 * BLOCK_SIZE, Bytes::from(pattern(50, 8)))
        .await
        .unwrap();
    let mut odd = vec![0u8; 4 * BS + 1];
    odd[1..].copy_from_slice(&pattern(90, 4));
    let unaligned = Bytes::from(odd).slice(1..);
    r.write_async(0, 20 * BLOCK_SIZE, unaligned).await.unwrap();

    let all = r.read_async(0, 0, 64 * BS).await.unwrap();
    assert_eq!(&all[..], &sync_read(&r, 0, 64 * BS)[..]);
    assert_eq!(&all[..4 * BS], &pattern(1, 4)[..], "from the snapshot");
    assert_eq!(&all[4 * BS..12 * BS], &pattern(50, 8)[..], "from the head");
    assert_eq!(&all[20 * BS..24 * BS], &pattern(90, 4)[..]);
    assert!(
        all[12 * BS..20 * BS].iter().all(|&b| b == 0),
        "holes read as zeros"
    );
    assert_eq!(
        (all.as_ptr() as usize) % 4096,
        0,
        "the read's buffer is the aligned one, not a copy"
    );
    // The index knows every write (the blocking path reads through it) and
    // the revision counted them.
    let head = r.info().chain.last().unwrap().allocated_bytes;
    assert_eq!(head, 12 * BLOCK_SIZE);
    r.flush().unwrap();
    assert_eq!(r.info().revision, 3);
    // Invalid requests are refused as on the blocking path.
    let e = r.read_async(0, 1, BS).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = r
        .write_async(0, 64 * BLOCK_SIZE, Bytes::from(pattern(1, 1)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_requests_of_an_engine_older_than_the_claim_are_refused() {
    let tmp = work_tmp();
    let r = Arc::new(new_replica(&tmp, 16));
    let r2 = Arc::clone(&r);
    tokio::task::spawn_blocking(move || r2.claim(5))
        .await
        .unwrap()
        .unwrap();
    r.write_async(5, 0, Bytes::from(pattern(3, 1)))
        .await
        .unwrap();
    let e = r
        .write_async(4, 0, Bytes::from(pattern(9, 1)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StaleEpoch);
    let e = r.read_async(0, 0, BS).await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::StaleEpoch,
        "epoch 0 only before any claim"
    );
    assert_eq!(
        &r.read_async(5, 0, BS).await.unwrap()[..],
        &pattern(3, 1)[..]
    );
}

/// Polls `fut` once and drops it; true if it was still pending (in flight).
fn poll_once_and_drop<F: Future>(fut: F) -> bool {
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(Waker::noop());
    let pending = matches!(Pin::new(&mut fut).poll(&mut cx), Poll::Pending);
    drop(fut);
    pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_gave_up_is_still_indexed_and_blocks_chain_operations_until_then() {
    let tmp = work_tmp();
    let r = Arc::new(new_replica(&tmp, 4096));
    // Large O_DIRECT writes take long enough to be dropped in flight.
    let mut abandoned = 0;
    for i in 0..16u64 {
        let offset = i * 256 * BLOCK_SIZE;
        let data = Bytes::from(vec![i as u8 + 1; 256 * BS]);
        if poll_once_and_drop(r.write_async(0, offset, data)) {
            abandoned += 1;
        }
    }
    assert!(abandoned > 0, "no write was still in flight when dropped");
    // A snapshot waits for the abandoned writes (the gate), and then every
    // one of them is in the index: none of the data the files hold is
    // invisible to reads, trims or the rebuild's extent list.
    let r2 = Arc::clone(&r);
    tokio::task::spawn_blocking(move || r2.snapshot("after", true, BTreeMap::new()))
        .await
        .unwrap()
        .unwrap();
    let extents = r.layer_extents("after").unwrap();
    let bytes: u64 = extents.iter().map(|e| e.len).sum();
    assert_eq!(bytes, 16 * 256 * BLOCK_SIZE, "extents {extents:?}");
    for i in 0..16u64 {
        let got = r.read_async(0, i * 256 * BLOCK_SIZE, BS).await.unwrap();
        assert!(got.iter().all(|&b| b == i as u8 + 1), "write {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_through_the_ring_persists_the_revision_and_survives_a_reopen() {
    let tmp = work_tmp();
    let dir = tmp.path().join("r");
    let r = Arc::new(new_replica(&tmp, 64));
    // Many writers and flushers at once: every flush returns, and the
    // record ends at the last revision (never goes back).
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let r = Arc::clone(&r);
        tasks.push(tokio::spawn(async move {
            r.write_async(0, i * BLOCK_SIZE, Bytes::from(pattern(i as u8, 1)))
                .await
                .unwrap();
            r.flush_async(0).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    r.flush_async(0).await.unwrap();
    assert_eq!(r.info().revision, 16);
    // A flush abandoned in flight leaves the state file usable: the
    // blocking writers after it (a claim, a generation) do not hang.
    r.write_async(0, 20 * BLOCK_SIZE, Bytes::from(pattern(7, 1)))
        .await
        .unwrap();
    let _ = poll_once_and_drop(r.flush_async(0));
    let r2 = Arc::clone(&r);
    let claimed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            r2.claim(3)?;
            r2.join_generation(2)
        }),
    )
    .await
    .expect("the state file is free again once the abandoned flush ended");
    claimed.unwrap().unwrap();
    r.flush_async(3).await.unwrap();
    drop(r);
    let back = Replica::open(&dir, &super::tests::opts()).unwrap();
    let info = back.info();
    assert_eq!(info.revision, 17);
    assert_eq!(info.epoch, 3);
    assert_eq!(info.in_sync_generation, 2);
    for i in 0..16u64 {
        assert_eq!(sync_read(&back, i * BLOCK_SIZE, BS), pattern(i as u8, 1));
    }
}
