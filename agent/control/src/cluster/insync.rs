//! Reading and writing a volume's in-sync set (compare-and-swap).

use super::{Cluster, ClusterError, Result, replace_op};
use vigil_model::epoch::EngineEpoch;
use vigil_model::insync::InSync;
use vigil_model::{Object, key_of};
use vigil_store::{Expect, Op};

/// Deletes `volume`'s in-sync set, whatever it holds (in the volume's
/// own deletion: a volume created again under the name has new replicas).
pub fn delete_op(volume: &str) -> Op {
    Op::delete(key_of::<InSync>(volume), Expect::Any)
}

impl Cluster {
    /// The volume's in-sync set, if one was recorded.
    pub async fn in_sync(&self, volume: &str) -> Result<Option<InSync>> {
        Ok(self.get::<InSync>(volume).await?.map(|v| v.object))
    }

    /// Records `members` as the volume's in-sync set (sorted; a change
    /// bumps the generation, the same set is a no-op). An empty set is
    /// never recorded. Returns the set as stored. Only while `epoch` is the
    /// volume's newest engine epoch: otherwise [`ClusterError::Superseded`]
    /// and nothing is written.
    pub async fn record_in_sync(
        &self,
        volume: &str,
        members: &[String],
        reason: &str,
        epoch: u64,
    ) -> Result<Option<InSync>> {
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        self.retry(|| async {
            // Only the volume's newest engine keeps its set. A superseded
            // one (suspended on lease loss while a newer engine started,
            // its recorder still running) would otherwise overwrite the
            // newer engine's set with its own view of the replicas — a set
            // naming replicas that lack what the newer engine acknowledged
            // (found by the model checker, `model/`: "superseded
            // recorder"). The epoch is compared in the same transaction.
            let owner = self.get::<EngineEpoch>(volume).await?;
            let newest = owner.as_ref().map_or(0, |v| v.object.epoch);
            if newest != epoch {
                return Err(ClusterError::Superseded {
                    volume: volume.to_string(),
                    epoch,
                    newest,
                });
            }
            let current = self.get::<InSync>(volume).await?;
            if members.is_empty() {
                return Ok(current.map(|v| v.object));
            }
            if current
                .as_ref()
                .is_some_and(|v| v.object.members == members)
            {
                return Ok(current.map(|v| v.object));
            }
            let next = InSync {
                volume: volume.to_string(),
                generation: current.as_ref().map_or(0, |v| v.object.generation) + 1,
                members: members.clone(),
                reason: reason.to_string(),
                updated_unix: vigil_model::now_unix() as u64,
            };
            let still_owner = match owner.as_ref() {
                Some(v) => Op::Check {
                    key: v.object.key(),
                    expect: Expect::Revision(v.revision),
                },
                None => Op::Check {
                    key: key_of::<EngineEpoch>(volume),
                    expect: Expect::Absent,
                },
            };
            self.txn(vec![replace_op(current.as_ref(), &next), still_owner])
                .await?;
            Ok(Some(next))
        })
        .await
    }

    /// Bumps the generation of the volume's in-sync set without changing
    /// its members: done **before** every chain operation (snapshot,
    /// snapshot removal, revert, expand), whose members persist the new
    /// generation after it. `None` when no set was recorded yet.
    pub async fn bump_in_sync_generation(
        &self,
        volume: &str,
        reason: &str,
    ) -> Result<Option<InSync>> {
        self.retry(|| async {
            let Some(current) = self.get::<InSync>(volume).await? else {
                return Ok(None);
            };
            let next = InSync {
                generation: current.object.generation + 1,
                reason: reason.to_string(),
                updated_unix: vigil_model::now_unix() as u64,
                ..current.object.clone()
            };
            self.txn(vec![replace_op(Some(&current), &next)]).await?;
            Ok(Some(next))
        })
        .await
    }

    /// Records `members` as the in-sync set with a generation of at least
    /// `at_least` (and above the current one): the operator's salvage,
    /// which must number the new set above every generation a replica
    /// reported, or the volume would still refuse to start.
    pub async fn record_in_sync_above(
        &self,
        volume: &str,
        members: &[String],
        at_least: u64,
        reason: &str,
    ) -> Result<InSync> {
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        self.retry(|| async {
            let current = self.get::<InSync>(volume).await?;
            let next = InSync {
                volume: volume.to_string(),
                generation: (current.as_ref().map_or(0, |v| v.object.generation) + 1).max(at_least),
                members: members.clone(),
                reason: reason.to_string(),
                updated_unix: vigil_model::now_unix() as u64,
            };
            self.txn(vec![replace_op(current.as_ref(), &next)]).await?;
            Ok(next)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use vigil_store::embedded::EmbeddedStore;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The model checker's "superseded recorder": an engine that lost the
    /// volume to a newer epoch (suspended while a newer engine started)
    /// must not overwrite the newer engine's set.
    #[tokio::test]
    async fn only_the_newest_engine_epoch_records_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).unwrap());
        let old_node = Cluster::new(Arc::clone(&store) as vigil_store::SharedStore, "n1");
        let new_node = Cluster::new(store, "n2");
        let old = old_node.next_epoch("v").await.unwrap();
        let set = old_node
            .record_in_sync("v", &names(&["r1", "r2", "r3"]), "old", old)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(set.generation, 1);
        // A newer engine starts and records its own view.
        let new = new_node.next_epoch("v").await.unwrap();
        assert!(new > old);
        new_node
            .record_in_sync("v", &names(&["r2", "r3"]), "new", new)
            .await
            .unwrap();
        // The old engine's recorder wakes up with its stale view: refused,
        // nothing written.
        let err = old_node
            .record_in_sync("v", &names(&["r1", "r3"]), "old again", old)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClusterError::Superseded { epoch, newest, .. } if epoch == old && newest == new),
            "{err}"
        );
        let now = new_node.in_sync("v").await.unwrap().unwrap();
        assert_eq!(now.members, names(&["r2", "r3"]));
        assert_eq!(now.generation, 2);
        // An engine whose epoch was never taken records nothing either.
        assert!(matches!(
            new_node
                .record_in_sync("w", &names(&["r1"]), "none", 3)
                .await,
            Err(ClusterError::Superseded { newest: 0, .. })
        ));
    }
}
