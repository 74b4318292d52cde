//! A volume's engine epoch: the counter every engine start takes its epoch
//! from (`epochs/<volume>`). Replicas persist the highest epoch that
//! claimed them and refuse every request of a lower one, so of two engines
//! for one volume only the newer can write (ARCHITECTURE.md, "One writer").

use serde::{Deserialize, Serialize};

use super::Object;

/// The last epoch taken for a volume, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineEpoch {
    /// The volume (or low-level engine) name.
    pub volume: String,
    /// The last epoch taken; the next engine start takes `epoch + 1`.
    /// Never decreases, never reused.
    pub epoch: u64,
    /// The node whose engine took it.
    pub node: String,
    /// When, seconds since the Unix epoch.
    pub claimed_unix: u64,
}

impl Object for EngineEpoch {
    const PREFIX: &'static str = "epochs/";
    const KIND: &'static str = "epoch";
    fn name(&self) -> &str {
        &self.volume
    }
}
