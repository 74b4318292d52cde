//! Reading and writing a volume's in-sync set (compare-and-swap).

use super::{Cluster, Result, replace_op};
use crate::model::insync::InSync;

impl Cluster {
    /// The volume's in-sync set, if one was recorded.
    pub async fn in_sync(&self, volume: &str) -> Result<Option<InSync>> {
        Ok(self.get::<InSync>(volume).await?.map(|v| v.object))
    }

    /// Records `members` as the volume's in-sync set (sorted; a change
    /// bumps the generation, the same set is a no-op). An empty set is
    /// never recorded. Returns the set as stored.
    pub async fn record_in_sync(
        &self,
        volume: &str,
        members: &[String],
        reason: &str,
    ) -> Result<Option<InSync>> {
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        self.retry(|| async {
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
                updated_unix: crate::model::now_unix() as u64,
            };
            self.txn(vec![replace_op(current.as_ref(), &next)]).await?;
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
                updated_unix: crate::model::now_unix() as u64,
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
                updated_unix: crate::model::now_unix() as u64,
            };
            self.txn(vec![replace_op(current.as_ref(), &next)]).await?;
            Ok(next)
        })
        .await
    }
}
