//! Taking a volume's next engine epoch: a compare-and-swap on
//! `epochs/<volume>`, so two engine starts anywhere in the cluster never
//! get the same epoch, and a later start always gets a higher one.

use super::{Cluster, Result, replace_op};
use vigil_model::epoch::EngineEpoch;

impl Cluster {
    /// Takes the next epoch for an engine of `volume` on this node. Every
    /// engine start calls this before it claims any replica.
    pub async fn next_epoch(&self, volume: &str) -> Result<u64> {
        self.retry(|| async {
            let current = self.get::<EngineEpoch>(volume).await?;
            let last = current.as_ref().map_or(0, |v| v.object.epoch);
            let next = EngineEpoch {
                volume: volume.to_string(),
                // 2^64 engine starts do not happen; saturating keeps the
                // arithmetic panic-free.
                epoch: last.saturating_add(1),
                node: self.node().to_string(),
                claimed_unix: vigil_model::now_unix() as u64,
            };
            self.txn(vec![replace_op(current.as_ref(), &next)]).await?;
            Ok(next.epoch)
        })
        .await
    }
}
