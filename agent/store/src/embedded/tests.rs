//! The embedded store against the conformance suite, and its own cases
//! (restart, damage, history limits).

use super::*;
use crate::conformance;

fn fresh() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("store.redb")).expect("open store");
    (dir, store)
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, store) = fresh();
            conformance::$name(Arc::new(store)).await;
        }
    )*};
}

conformance_tests!(
    create_if_absent_conflicts,
    stale_revision_conflicts_and_applies_nothing,
    delete_checks_expectations,
    revisions_increase,
    list_is_ordered_by_key_under_prefix,
    watch_delivers_changes_in_order,
    lease_expiry_deletes_keys_unless_kept_alive,
    revoke_deletes_keys,
    concurrent_increments_are_atomic,
    invalid_ops_are_rejected,
);

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let store = EmbeddedStore::open(&path).expect("open");
    store
        .txn(vec![Op::put("a", b"1".to_vec(), Expect::Absent)])
        .await
        .expect("put a");
    let last = store
        .txn(vec![Op::put("b", b"2".to_vec(), Expect::Absent)])
        .await
        .expect("put b");
    store.close().await.expect("close");

    let store = EmbeddedStore::open(&path).expect("reopen");
    let listing = store.list("").await.expect("list");
    let keys: Vec<_> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(listing.revision, last);
    let next = store
        .txn(vec![Op::put("c", b"3".to_vec(), Expect::Absent)])
        .await
        .expect("put c");
    assert_eq!(next, last + 1);
    // History before the reopen is gone; from the reopen on it is there.
    assert!(matches!(
        store.watch("", last - 1).await,
        Err(StoreError::Compacted { .. })
    ));
    let mut w = store.watch("", last).await.expect("watch");
    let e = w.recv().await.expect("event").expect("not an error");
    assert_eq!(e.key(), "c");
}

#[tokio::test]
async fn leases_that_expired_while_closed_are_reaped_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let store = EmbeddedStore::open(&path).expect("open");
    let lease = store
        .grant_lease(Duration::from_millis(300))
        .await
        .expect("grant");
    store
        .txn(vec![Op::Put {
            key: "leased".into(),
            value: vec![],
            expect: Expect::Absent,
            lease: Some(lease),
        }])
        .await
        .expect("put");
    store.close().await.expect("close");
    std::thread::sleep(Duration::from_millis(400));

    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(store.get("leased").await.expect("get"), None);
    assert_eq!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseExpired(lease))
    );
}

#[tokio::test]
async fn garbage_file_is_reported_corrupt_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &garbage).expect("write garbage");

    let err = EmbeddedStore::open(&path).err().expect("open must fail");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("store.redb"), "{err}");
    assert_eq!(std::fs::read(&path).expect("read back"), garbage);
}

#[tokio::test]
async fn damaged_pages_are_reported_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let store = EmbeddedStore::open(&path).expect("open");
    for i in 0..50 {
        store
            .txn(vec![Op::put(format!("k{i}"), vec![i; 100], Expect::Any)])
            .await
            .expect("put");
    }
    store.close().await.expect("close");
    // Keep redb's header page; scribble over every page after it.
    let mut bytes = std::fs::read(&path).expect("read");
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i * 31 % 253) as u8;
    }
    std::fs::write(&path, &bytes).expect("write damaged file");

    let err = EmbeddedStore::open(&path).err().expect("open must fail");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test]
async fn second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let _first = EmbeddedStore::open(&path).expect("open");
    let err = EmbeddedStore::open(&path)
        .err()
        .expect("second open must fail");
    assert!(err.to_string().contains("already open"), "{err}");
    assert!(err.to_string().contains("store.redb"), "{err}");
}

#[tokio::test]
async fn watch_behind_the_history_is_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open_with_history(&dir.path().join("s.redb"), 4).expect("open");
    let mut last = 0;
    for i in 0..6 {
        last = store
            .txn(vec![Op::put(format!("k{i}"), vec![], Expect::Any)])
            .await
            .expect("put");
    }
    // Revisions 3..=6 are kept; a watch must start after 2 or later.
    assert_eq!(
        store.watch("", 1).await.err(),
        Some(StoreError::Compacted {
            requested: 2,
            oldest: 3
        })
    );
    let mut w = store.watch("", 2).await.expect("watch after 2");
    for rev in 3..=last {
        let e = w.recv().await.expect("event").expect("not an error");
        assert_eq!(e.revision(), rev);
    }
}

#[test]
fn damaged_records_are_corrupt_not_panics() {
    assert!(matches!(
        Record::decode("k", &[]),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        Record::decode("k", &[RECORD_V1, 1, 2]),
        Err(StoreError::Corrupt(_))
    ));
    let ok = Record {
        value: b"v".to_vec(),
        create_revision: 2,
        mod_revision: 5,
        lease: Some(7),
    };
    let back = Record::decode("k", &ok.encode()).expect("round trip");
    assert_eq!(back.into_kv("k".into()), ok.into_kv("k".into()));
    assert!(LeaseRecord::decode(1, &[0; 15]).is_err());
    assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_end(b"\xff"), None);
}
