//! Taking a replica out of an engine for good (the control plane retires a
//! failed replica once a replacement is RW, or moves a replica to another
//! node). Adding one is a rebuild ([`super::rebuild`]).

use super::{Engine, EngineError, Mode};

impl Engine {
    /// Removes the replica at `address` from the replica set; its backend
    /// (connection or open files) is released once in-flight requests that
    /// hold it finish. Refused for the last RW replica (the volume would
    /// lose its data path) and for a replica being rebuilt (WO: stop the
    /// rebuild by failing it first). Returns false if the address is not in
    /// the engine.
    pub fn remove_replica(&self, address: &str) -> Result<bool, EngineError> {
        let slots = self.slots();
        let Some(slot) = slots.iter().find(|s| s.address == address) else {
            return Ok(false);
        };
        match slot.mode() {
            Mode::WriteOnly => {
                return Err(EngineError::Busy {
                    volume: self.name.clone(),
                    what: format!("replica {address} is being rebuilt"),
                });
            }
            Mode::ReadWrite
                if !slots
                    .iter()
                    .any(|s| s.address != address && s.mode() == Mode::ReadWrite) =>
            {
                return Err(EngineError::NoUsableReplica {
                    volume: self.name.clone(),
                    detail: format!("{address} is the last RW replica; it cannot be removed"),
                });
            }
            _ => {}
        }
        let mode = slot.mode();
        self.replace_slots(|v| v.retain(|s| s.address != address));
        tracing::info!(volume = %self.name, replica = %address, %mode, "replica removed from the engine");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use crate::engine::{Backend, Engine, EngineConfig, FaultReason, ReplicaSpec};
    use crate::replica::{Replica, ReplicaOptions};
    use crate::size::BLOCK_SIZE;

    fn spec(tmp: &tempfile::TempDir, name: &str) -> ReplicaSpec {
        let r = Replica::create(
            &tmp.path().join(name),
            64 * BLOCK_SIZE,
            &ReplicaOptions::default(),
        )
        .unwrap();
        ReplicaSpec {
            address: format!("tcp://127.0.0.1:1/{name}"),
            backend: Ok(Backend::local(Arc::new(r), 1)),
        }
    }

    #[tokio::test]
    async fn failed_replicas_go_and_the_last_rw_one_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let specs = vec![spec(&tmp, "a"), spec(&tmp, "b")];
        let engine = Engine::start("v", 64 * BLOCK_SIZE, 1, specs, EngineConfig::default())
            .await
            .unwrap();
        let (a, b) = ("tcp://127.0.0.1:1/a", "tcp://127.0.0.1:1/b");
        assert!(!engine.remove_replica("tcp://127.0.0.1:1/zz").unwrap());
        assert!(engine.fail_replica(a, FaultReason::IoError, "boom"));
        assert!(engine.remove_replica(a).unwrap());
        assert_eq!(engine.status().replicas.len(), 1);
        let e = engine.remove_replica(b).unwrap_err().to_string();
        assert!(e.contains("last RW replica"), "{e}");
        assert_eq!(engine.status().replicas.len(), 1);
    }
}
