//! The contract of [`Store`], as tests both implementations must pass.
//!
//! Each function checks one property against a store that holds no keys
//! and is not written by anyone else while it runs; the embedded and etcd
//! test modules call every function here. Timing: lease tests take a few
//! seconds (TTLs of 1–2 s, and etcd rounds TTLs up to whole seconds).

use std::collections::BTreeSet;
use std::time::Duration;

use super::{Expect, Kv, MAX_VALUE, Op, SharedStore, StoreError, WatchEvent, WatchStream};

/// Longest wait for an event or a lease expiry before a test fails.
const PATIENCE: Duration = Duration::from_secs(15);

async fn next_event(w: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(PATIENCE, w.recv()).await {
        Ok(Some(Ok(e))) => e,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {PATIENCE:?}"),
    }
}

fn put_event(key: &str, value: &[u8], create_revision: i64, mod_revision: i64) -> WatchEvent {
    WatchEvent::Put(Kv {
        key: key.into(),
        value: value.to_vec(),
        create_revision,
        mod_revision,
        lease: None,
    })
}

fn leased_put(key: &str, lease: i64) -> Op {
    Op::Put {
        key: key.into(),
        value: b"leased".to_vec(),
        expect: Expect::Absent,
        lease: Some(lease),
    }
}

fn conflict(key: &str) -> Result<i64, StoreError> {
    Err(StoreError::Conflict { key: key.into() })
}

async fn revision(store: &SharedStore) -> i64 {
    store.list("").await.expect("list").revision
}

/// `Expect::Absent` on an existing key is a conflict and changes nothing.
pub async fn create_if_absent_conflicts(store: SharedStore) {
    let rev = store
        .txn(vec![Op::put("a", b"1".to_vec(), Expect::Absent)])
        .await
        .expect("create a");
    assert_eq!(
        store
            .txn(vec![Op::put("a", b"2".to_vec(), Expect::Absent)])
            .await,
        conflict("a")
    );
    let kv = store.get("a").await.expect("get a").expect("a exists");
    assert_eq!(
        kv,
        Kv {
            key: "a".into(),
            value: b"1".to_vec(),
            create_revision: rev,
            mod_revision: rev,
            lease: None,
        }
    );
    assert_eq!(store.get("missing").await.expect("get missing"), None);
    assert_eq!(revision(&store).await, rev);
}

/// A transaction whose expectations do not all hold applies none of its
/// ops and names the first key that failed.
pub async fn stale_revision_conflicts_and_applies_nothing(store: SharedStore) {
    let r1 = store
        .txn(vec![
            Op::put("x", b"x1".to_vec(), Expect::Absent),
            Op::put("y", b"y1".to_vec(), Expect::Absent),
        ])
        .await
        .expect("create x and y");
    let r2 = store
        .txn(vec![Op::put("y", b"y2".to_vec(), Expect::Revision(r1))])
        .await
        .expect("update y");

    // y's revision is stale: neither x, y nor the new key may change.
    let stale = store
        .txn(vec![
            Op::put("x", b"x2".to_vec(), Expect::Revision(r1)),
            Op::put("new", b"n".to_vec(), Expect::Absent),
            Op::put("y", b"y3".to_vec(), Expect::Revision(r1)),
        ])
        .await;
    assert_eq!(stale, conflict("y"));
    let x = store.get("x").await.expect("get x").expect("x exists");
    assert_eq!((x.value.as_slice(), x.mod_revision), (&b"x1"[..], r1));
    assert_eq!(store.get("new").await.expect("get new"), None);
    assert_eq!(revision(&store).await, r2);

    // The first failing op is named, even when a later one fails too.
    let both = store
        .txn(vec![
            Op::Check {
                key: "x".into(),
                expect: Expect::Revision(r2),
            },
            Op::put("y", b"y3".to_vec(), Expect::Revision(r1)),
        ])
        .await;
    assert_eq!(both, conflict("x"));
    // A revision expectation on an absent key fails.
    assert_eq!(
        store
            .txn(vec![Op::put("nope", vec![], Expect::Revision(r1))])
            .await,
        conflict("nope")
    );

    // With current revisions, all ops apply at one revision.
    let r3 = store
        .txn(vec![
            Op::put("x", b"x2".to_vec(), Expect::Revision(r1)),
            Op::put("y", b"y3".to_vec(), Expect::Revision(r2)),
        ])
        .await
        .expect("update both");
    let x = store.get("x").await.expect("get x").expect("x exists");
    let y = store.get("y").await.expect("get y").expect("y exists");
    assert_eq!((x.mod_revision, y.mod_revision), (r3, r3));
    assert_eq!((x.create_revision, y.create_revision), (r1, r1));
}

/// Deletes honour their expectations; deleting an absent key with
/// `Expect::Any` is a no-op that does not bump the revision.
pub async fn delete_checks_expectations(store: SharedStore) {
    let r = store
        .txn(vec![Op::put("k", b"v".to_vec(), Expect::Absent)])
        .await
        .expect("create k");
    assert_eq!(
        store
            .txn(vec![Op::delete("k", Expect::Revision(r + 1))])
            .await,
        conflict("k")
    );
    assert_eq!(
        store.txn(vec![Op::delete("k", Expect::Absent)]).await,
        conflict("k")
    );
    assert!(store.get("k").await.expect("get k").is_some());

    let d = store
        .txn(vec![Op::delete("k", Expect::Revision(r))])
        .await
        .expect("delete k");
    assert!(d > r);
    assert_eq!(store.get("k").await.expect("get k"), None);

    assert_eq!(store.txn(vec![Op::delete("k", Expect::Any)]).await, Ok(d));
    assert_eq!(
        store.txn(vec![Op::delete("k", Expect::Absent)]).await,
        Ok(d)
    );
    assert_eq!(
        store
            .txn(vec![Op::Check {
                key: "k".into(),
                expect: Expect::Absent
            }])
            .await,
        Ok(d)
    );
    assert_eq!(
        store.txn(vec![Op::delete("k", Expect::Revision(r))]).await,
        conflict("k")
    );
    assert_eq!(revision(&store).await, d);
}

/// Each committed change takes the next revision; keys record the revision
/// that created them and the one that last changed them.
pub async fn revisions_increase(store: SharedStore) {
    let start = revision(&store).await;
    let r1 = store
        .txn(vec![Op::put("a", b"1".to_vec(), Expect::Absent)])
        .await
        .expect("create a");
    let r2 = store
        .txn(vec![Op::put("a", b"2".to_vec(), Expect::Any)])
        .await
        .expect("update a");
    let r3 = store
        .txn(vec![
            Op::put("b", b"1".to_vec(), Expect::Absent),
            Op::delete("a", Expect::Revision(r2)),
        ])
        .await
        .expect("create b, delete a");
    assert_eq!([r1, r2, r3], [start + 1, start + 2, start + 3]);

    let b = store.get("b").await.expect("get b").expect("b exists");
    assert_eq!((b.create_revision, b.mod_revision), (r3, r3));
    let r4 = store
        .txn(vec![Op::put("b", b"2".to_vec(), Expect::Revision(r3))])
        .await
        .expect("update b");
    let b = store.get("b").await.expect("get b").expect("b exists");
    assert_eq!((b.create_revision, b.mod_revision), (r3, r4));
    assert_eq!(revision(&store).await, r4);
}

/// A listing holds exactly the keys under the prefix, in byte order, and the
/// revision it was taken at.
pub async fn list_is_ordered_by_key_under_prefix(store: SharedStore) {
    let mut last = 0;
    for key in ["b/2", "b/1", "b/10", "a/1", "c", "b"] {
        last = store
            .txn(vec![Op::put(key, key.as_bytes().to_vec(), Expect::Absent)])
            .await
            .expect("put");
    }
    let listing = store.list("b/").await.expect("list b/");
    let keys: Vec<_> = listing.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["b/1", "b/10", "b/2"]);
    assert!(listing.kvs.iter().all(|kv| kv.value == kv.key.as_bytes()));
    assert_eq!(listing.revision, last);

    let all = store.list("").await.expect("list all");
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["a/1", "b", "b/1", "b/10", "b/2", "c"]);

    let none = store.list("zz").await.expect("list zz");
    assert!(none.kvs.is_empty());
    assert_eq!(none.revision, last);
}

/// A watch delivers every change under its prefix after its revision, in
/// order, whether the changes happened before it started (replay) or after.
pub async fn watch_delivers_changes_in_order(store: SharedStore) {
    store
        .txn(vec![Op::put("other/x", vec![], Expect::Absent)])
        .await
        .expect("put other/x");
    let after = revision(&store).await;
    let mut live = store.watch("w/", after).await.expect("watch");

    let r1 = store
        .txn(vec![Op::put("w/a", b"1".to_vec(), Expect::Absent)])
        .await
        .expect("create w/a");
    store
        .txn(vec![Op::put("other/y", vec![], Expect::Absent)])
        .await
        .expect("put other/y");
    let r3 = store
        .txn(vec![Op::put("w/a", b"2".to_vec(), Expect::Revision(r1))])
        .await
        .expect("update w/a");
    let r4 = store
        .txn(vec![Op::delete("w/a", Expect::Revision(r3))])
        .await
        .expect("delete w/a");
    let r5 = store
        .txn(vec![Op::put("w/b", b"b".to_vec(), Expect::Absent)])
        .await
        .expect("create w/b");
    let expected = [
        put_event("w/a", b"1", r1, r1),
        put_event("w/a", b"2", r1, r3),
        WatchEvent::Delete {
            key: "w/a".into(),
            revision: r4,
        },
        put_event("w/b", b"b", r5, r5),
    ];

    for e in &expected {
        assert_eq!(&next_event(&mut live).await, e);
    }
    // Replay of the same history on a new watch.
    let mut replay = store.watch("w/", after).await.expect("watch again");
    for e in &expected {
        assert_eq!(&next_event(&mut replay).await, e);
    }
    // From the middle: only what came after.
    let mut middle = store.watch("w/", r3).await.expect("watch from r3");
    for e in &expected[2..] {
        assert_eq!(&next_event(&mut middle).await, e);
    }
    // All three continue live, with nothing repeated or skipped.
    let r6 = store
        .txn(vec![Op::put("w/c", b"c".to_vec(), Expect::Absent)])
        .await
        .expect("create w/c");
    for w in [&mut live, &mut replay, &mut middle] {
        assert_eq!(next_event(w).await, put_event("w/c", b"c", r6, r6));
    }
}

/// A lease not kept alive expires and its keys are deleted (seen by
/// watches); a lease kept alive keeps its keys; a gone lease can be neither
/// renewed nor used.
pub async fn lease_expiry_deletes_keys_unless_kept_alive(store: SharedStore) {
    let short = store
        .grant_lease(Duration::from_secs(1))
        .await
        .expect("grant short lease");
    let kept = store
        .grant_lease(Duration::from_secs(2))
        .await
        .expect("grant kept lease");
    let r = store
        .txn(vec![
            leased_put("l/short", short),
            leased_put("l/kept", kept),
        ])
        .await
        .expect("put leased keys");
    let kv = store.get("l/short").await.expect("get").expect("exists");
    assert_eq!(kv.lease, Some(short));
    let mut w = store.watch("l/", r).await.expect("watch");

    let deadline = tokio::time::Instant::now() + PATIENCE;
    while store.get("l/short").await.expect("get l/short").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "l/short outlived its lease"
        );
        store.keep_alive(kept).await.expect("keep alive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.keep_alive(kept).await.expect("keep alive");
    assert!(store.get("l/kept").await.expect("get l/kept").is_some());
    match next_event(&mut w).await {
        WatchEvent::Delete { key, revision } => {
            assert_eq!(key, "l/short");
            assert!(revision > r);
        }
        other => panic!("expected the deletion of l/short, got {other:?}"),
    }
    assert_eq!(
        store.keep_alive(short).await,
        Err(StoreError::LeaseExpired(short))
    );
    assert_eq!(
        store.txn(vec![leased_put("l/again", short)]).await,
        Err(StoreError::LeaseExpired(short))
    );

    // Once nobody renews it, the other lease goes too.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while store.get("l/kept").await.expect("get l/kept").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "l/kept never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        store.keep_alive(kept).await,
        Err(StoreError::LeaseExpired(kept))
    );
}

/// Revoking a lease deletes its keys at once, and only its keys.
pub async fn revoke_deletes_keys(store: SharedStore) {
    let lease = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant");
    let r = store
        .txn(vec![
            leased_put("r/1", lease),
            leased_put("r/2", lease),
            Op::put("r/3", vec![], Expect::Absent),
        ])
        .await
        .expect("put");
    let mut w = store.watch("r/", r).await.expect("watch");
    store.revoke_lease(lease).await.expect("revoke");

    let keys: Vec<_> = store
        .list("r/")
        .await
        .expect("list")
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["r/3"]);
    let mut deleted = BTreeSet::new();
    for _ in 0..2 {
        match next_event(&mut w).await {
            WatchEvent::Delete { key, revision } => {
                assert_eq!(revision, r + 1);
                deleted.insert(key);
            }
            other => panic!("expected a deletion, got {other:?}"),
        }
    }
    assert_eq!(deleted, BTreeSet::from(["r/1".into(), "r/2".into()]));
    assert_eq!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseExpired(lease))
    );
    assert_eq!(
        store.revoke_lease(lease).await,
        Err(StoreError::LeaseExpired(lease))
    );
}

/// 8 tasks each increment a counter 25 times with compare-and-swap, retrying
/// on conflict: the counter must end at exactly 200.
pub async fn concurrent_increments_are_atomic(store: SharedStore) {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 25;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            for _ in 0..INCREMENTS {
                loop {
                    let (n, expect) = match store.get("counter").await.expect("get counter") {
                        None => (0, Expect::Absent),
                        Some(kv) => {
                            let n: u64 = String::from_utf8(kv.value)
                                .expect("utf-8 counter")
                                .parse()
                                .expect("numeric counter");
                            (n, Expect::Revision(kv.mod_revision))
                        }
                    };
                    let next = (n + 1).to_string().into_bytes();
                    match store.txn(vec![Op::put("counter", next, expect)]).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { key }) => assert_eq!(key, "counter"),
                        Err(e) => panic!("increment failed: {e}"),
                    }
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("increment task");
    }
    let kv = store.get("counter").await.expect("get").expect("counter");
    assert_eq!(kv.value, (TASKS * INCREMENTS).to_string().into_bytes());
}

/// Malformed transactions are refused whole; the largest allowed value is
/// accepted.
pub async fn invalid_ops_are_rejected(store: SharedStore) {
    let before = revision(&store).await;
    let ok = || Op::put("inv/ok", b"v".to_vec(), Expect::Any);
    let bad = [
        vec![ok(), Op::put("", vec![], Expect::Any)],
        vec![ok(), Op::delete("inv/ok", Expect::Any)],
        vec![
            ok(),
            Op::put("inv/big", vec![0; MAX_VALUE + 1], Expect::Any),
        ],
    ];
    for ops in bad {
        let result = store.txn(ops.clone()).await;
        assert!(
            matches!(result, Err(StoreError::Invalid(_))),
            "{ops:?} gave {result:?}"
        );
    }
    assert_eq!(store.get("inv/ok").await.expect("get"), None);
    assert_eq!(revision(&store).await, before);
    assert!(matches!(
        store.grant_lease(Duration::ZERO).await,
        Err(StoreError::Invalid(_))
    ));

    let big = vec![7; MAX_VALUE];
    store
        .txn(vec![Op::put("inv/max", big.clone(), Expect::Absent)])
        .await
        .expect("a value of exactly MAX_VALUE");
    let kv = store.get("inv/max").await.expect("get").expect("inv/max");
    assert_eq!(kv.value, big);
}
