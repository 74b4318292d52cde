//! Claiming the uninstall: the decision to remove the cluster is one store
//! transaction that
//!
//! 1. creates the uninstall record (`Expect::Absent`): at most one claim
//!    ever succeeds, however many agents are asked at once; and
//! 2. checks the stored `deleting-confirmation-flag` at the exact
//!    `mod_revision` at which it was just read (linearizably) as `true`.
//!
//! So the claim commits only while the flag is true *at that very
//! revision*: a flag switched off between the read and the commit fails
//! the transaction (the claim reads again and decides again), and no
//! cached or stale value is ever consulted. A refusal is only given on a
//! linearizable read that saw the flag false or unset, which therefore
//! reflects every `settings set` that returned before the uninstall was
//! asked for.

use super::{Cluster, ClusterError, Result, put_op};
use vigil_model::settings::StoredSetting;
use vigil_model::uninstall::{RECORD, Uninstall};
use vigil_model::{Object, Versioned, key_of, now_unix};
use vigil_store::{Expect, Op, StoreError};

/// The setting that must be true for an uninstall to be claimed.
pub const FLAG: &str = "deleting-confirmation-flag";

/// How many times a claim decides again after the flag changed under it.
const CLAIM_ATTEMPTS: usize = 16;

/// What a claim found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// This call created the record: it performs the uninstall.
    Started(Versioned<Uninstall>),
    /// Another call claimed it first; it is still running.
    AlreadyRunning(Uninstall),
    /// Another call claimed it and it has finished.
    AlreadyDone(Uninstall),
    /// The flag is not true: nothing was done. `stored` is the stored
    /// value (`None`: never set, so the default `false`).
    Refused { stored: Option<String> },
}

impl Claim {
    fn existing(u: Uninstall) -> Claim {
        if u.is_done() {
            Claim::AlreadyDone(u)
        } else {
            Claim::AlreadyRunning(u)
        }
    }
}

/// Keys the cleaning keeps: the agents' liveness (they are still running)
/// and the record itself.
const KEPT_PREFIXES: [&str; 2] = [vigil_model::node::LIVENESS_PREFIX, Uninstall::PREFIX];

/// Kinds that must be gone before cleaning starts (their deletion removes
/// data, which only the Deleting phase does).
const DATA_PREFIXES: [&str; 3] = [
    vigil_model::Volume::PREFIX,
    vigil_model::Replica::PREFIX,
    vigil_model::Engine::PREFIX,
];

/// Deletes per cleaning transaction (etcd allows 128 operations).
const CHUNK: usize = 64;

/// What one cleaning pass did.
#[derive(Debug, PartialEq, Eq)]
pub enum Cleaning {
    /// A volume, replica or engine object is still there: nothing deleted.
    DataObjectFound(String),
    /// `keys` deleted; `complete` when nothing but the kept keys is left
    /// after them (something may be written meanwhile).
    Deleted { keys: usize, complete: bool },
}

/// The condition a volume creation adds to its transaction: no uninstall
/// record, so no volume is created once an uninstall is claimed.
pub fn absent_check() -> Op {
    Op::Check {
        key: key_of::<Uninstall>(RECORD),
        expect: Expect::Absent,
    }
}

fn kept(key: &str) -> bool {
    KEPT_PREFIXES.iter().any(|p| key.starts_with(p))
}

impl Cluster {
    /// The uninstall record, if one exists (linearizable read).
    pub async fn uninstall_record(&self) -> Result<Option<Versioned<Uninstall>>> {
        self.get::<Uninstall>(RECORD).await
    }

    /// Whether any volume, replica or engine object exists (linearizable).
    pub async fn any_data_objects(&self) -> Result<bool> {
        for prefix in DATA_PREFIXES {
            if !self.store.list(prefix).await?.kvs.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The uninstall's cleaning: deletes every key but the liveness keys
    /// and the record, in chunks, each checked against the record's
    /// revision (a record changed meanwhile stops it), never a data object.
    pub async fn clean_for_uninstall(&self, record: &Versioned<Uninstall>) -> Result<Cleaning> {
        let record_key = record.object.key();
        let listing = self.store.list("").await?;
        let doomed: Vec<_> = listing.kvs.iter().filter(|kv| !kept(&kv.key)).collect();
        if let Some(kv) = doomed
            .iter()
            .find(|kv| DATA_PREFIXES.iter().any(|p| kv.key.starts_with(p)))
        {
            return Ok(Cleaning::DataObjectFound(kv.key.clone()));
        }
        for chunk in doomed.chunks(CHUNK) {
            let mut ops: Vec<Op> = chunk
                .iter()
                .map(|kv| Op::delete(kv.key.clone(), Expect::Revision(kv.mod_revision)))
                .collect();
            ops.push(Op::Check {
                key: record_key.clone(),
                expect: Expect::Revision(record.revision),
            });
            self.txn(ops).await?;
        }
        let again = self.store.list("").await?;
        Ok(Cleaning::Deleted {
            keys: doomed.len(),
            complete: again.kvs.iter().all(|kv| kept(&kv.key)),
        })
    }

    /// Claims the uninstall for this node, or says why not (module docs).
    pub async fn claim_uninstall(&self) -> Result<Claim> {
        let record_key = key_of::<Uninstall>(RECORD);
        for _ in 0..CLAIM_ATTEMPTS {
            let flag = self.get::<StoredSetting>(FLAG).await?;
            let Some(flag) = flag.filter(|f| f.object.value == "true") else {
                // Read after the flag: a finished uninstall deletes the
                // flag, so a record seen now explains a false flag.
                return Ok(match self.uninstall_record().await? {
                    Some(r) => Claim::existing(r.object),
                    None => Claim::Refused {
                        stored: self
                            .get::<StoredSetting>(FLAG)
                            .await?
                            .map(|f| f.object.value),
                    },
                });
            };
            let record = Uninstall::claimed(self.node(), now_unix(), flag.revision);
            let ops = vec![
                put_op(&record, Expect::Absent),
                Op::Check {
                    key: flag.object.key(),
                    expect: Expect::Revision(flag.revision),
                },
            ];
            match self.txn(ops).await {
                Ok(revision) => {
                    return Ok(Claim::Started(Versioned {
                        object: record,
                        revision,
                    }));
                }
                Err(ClusterError::Store(StoreError::Conflict { key })) if key == record_key => {
                    if let Some(r) = self.uninstall_record().await? {
                        return Ok(Claim::existing(r.object));
                    }
                    // deleted in between (a fresh install): decide again
                }
                Err(ClusterError::Store(StoreError::Conflict { .. })) => {
                    // the flag changed since it was read: decide again
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict { key: record_key }.into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use vigil_model::uninstall::UninstallPhase;
    use vigil_store::SharedStore;
    use vigil_store::embedded::EmbeddedStore;

    fn store(dir: &tempfile::TempDir) -> SharedStore {
        Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).expect("open store"))
    }

    async fn set_flag(c: &Cluster, value: &str) {
        c.retry(|| async {
            match c.get::<StoredSetting>(FLAG).await? {
                Some(mut v) => {
                    v.object.value = value.into();
                    c.update(&v).await.map(drop)
                }
                None => c
                    .create(&StoredSetting {
                        name: FLAG.into(),
                        value: value.into(),
                    })
                    .await
                    .map(drop),
            }
        })
        .await
        .expect("set flag");
    }

    #[tokio::test]
    async fn refused_while_the_flag_is_unset_or_false() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster::new(store(&dir), "n1");
        assert!(matches!(
            c.claim_uninstall().await.unwrap(),
            Claim::Refused { stored: None }
        ));
        set_flag(&c, "false").await;
        assert!(matches!(
            c.claim_uninstall().await.unwrap(),
            Claim::Refused { stored: Some(v) } if v == "false"
        ));
        assert!(c.uninstall_record().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_claim_right_after_the_flag_is_set_succeeds_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&dir);
        let a = Cluster::new(Arc::clone(&s), "n1");
        let b = Cluster::new(s, "n2");
        set_flag(&a, "true").await;
        // asked of another "agent" right after, no pause
        let Claim::Started(r) = b.claim_uninstall().await.unwrap() else {
            panic!("refused right after the flag was set")
        };
        assert_eq!(r.object.by_node, "n2");
        assert_eq!(r.object.phase, UninstallPhase::Deleting);
        match a.claim_uninstall().await.unwrap() {
            Claim::AlreadyRunning(u) => assert_eq!(u.by_node, "n2"),
            other => panic!("second claim: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_done_uninstall_is_reported_even_after_the_flag_was_reset() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cluster::new(store(&dir), "n1");
        set_flag(&c, "true").await;
        let Claim::Started(mut r) = c.claim_uninstall().await.unwrap() else {
            panic!("not started")
        };
        r.object.set_phase(UninstallPhase::Cleaning, 1.0).unwrap();
        r.object.set_phase(UninstallPhase::Done, 2.0).unwrap();
        c.update(&r).await.unwrap();
        let flag = c.get::<StoredSetting>(FLAG).await.unwrap().unwrap();
        c.delete(&flag).await.unwrap();
        assert!(matches!(
            c.claim_uninstall().await.unwrap(),
            Claim::AlreadyDone(_)
        ));
    }

    /// Many claims race while another writer toggles the flag: at most one
    /// claim ever starts, and at the revision its transaction committed the
    /// flag's latest write was `true` — the very write it read (so a flag
    /// switched off between a claim's read and its commit never lets the
    /// claim through).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_start_exactly_once_and_only_on_a_true_flag() {
        let seed: u64 = std::env::var("VIGIL_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        eprintln!("seed {seed} (replay with VIGIL_TEST_SEED={seed})");
        for round in 0..20u64 {
            let dir = tempfile::tempdir().unwrap();
            let s = store(&dir);
            let toggler = Cluster::new(Arc::clone(&s), "op");
            // every write of the flag: (revision, value)
            let writes = Arc::new(std::sync::Mutex::new(Vec::new()));
            let write = |c: Cluster,
                         writes: Arc<std::sync::Mutex<Vec<(i64, String)>>>,
                         value: &'static str| async move {
                set_flag(&c, value).await;
                let rev = c
                    .get::<StoredSetting>(FLAG)
                    .await
                    .unwrap()
                    .unwrap()
                    .revision;
                writes.lock().unwrap().push((rev, value.to_string()));
            };
            write(toggler.clone(), Arc::clone(&writes), "false").await;
            let toggles = {
                let writes = Arc::clone(&writes);
                let c = toggler.clone();
                tokio::spawn(async move {
                    let mut bits = seed.rotate_left(round as u32);
                    for _ in 0..12 {
                        let value = if bits & 1 == 0 { "true" } else { "false" };
                        bits >>= 1;
                        write(c.clone(), Arc::clone(&writes), value).await;
                        tokio::task::yield_now().await;
                    }
                    write(c, writes, "true").await;
                })
            };
            let mut claims = Vec::new();
            for n in 0..5 {
                let c = Cluster::new(Arc::clone(&s), &format!("n{n}"));
                claims.push(tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for _ in 0..8 {
                        outcomes.push(c.claim_uninstall().await.unwrap());
                        tokio::task::yield_now().await;
                    }
                    outcomes
                }));
            }
            toggles.await.unwrap();
            let mut started = Vec::new();
            for h in claims {
                for o in h.await.unwrap() {
                    if let Claim::Started(r) = o {
                        started.push(r);
                    }
                }
            }
            assert!(started.len() <= 1, "round {round}: {started:?}");
            // once the flag is true for good, a claim can no longer be refused
            let last = Cluster::new(s, "last");
            match last.claim_uninstall().await.unwrap() {
                Claim::Refused { .. } => panic!("round {round}: refused with the flag true"),
                Claim::Started(r) => started.push(r),
                Claim::AlreadyRunning(_) | Claim::AlreadyDone(_) => {}
            }
            assert_eq!(started.len(), 1, "round {round}");
            let won = &started[0];
            let writes = writes.lock().unwrap();
            let before = writes
                .iter()
                .filter(|(rev, _)| *rev < won.revision)
                .max_by_key(|(rev, _)| *rev)
                .expect("the flag was written before any claim");
            assert_eq!(
                before,
                &(won.object.flag_revision, "true".to_string()),
                "round {round}: committed at {} over flag writes {writes:?}",
                won.revision
            );
        }
    }
}
