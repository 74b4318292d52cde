//! A volume's in-sync set (`insync/<volume>`): the replicas that hold every
//! write the volume acknowledged, and a generation bumped each time the set
//! changes. Written by the engine's agent: a smaller set before the engine
//! acknowledges anything more (`vigil_engine::engine` waits for it), a
//! larger one after a rebuild. An engine starts only from members; anything
//! else needs the operator's `vigil volume salvage V --replica R
//! --accept-data-loss`, which makes R the only member.

use serde::{Deserialize, Serialize};

use super::Object;

/// The replicas of a volume known to hold every acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InSync {
    /// The volume.
    pub volume: String,
    /// Bumped on every change of `members`; never decreases.
    pub generation: u64,
    /// Replica names. Never empty: when the last member fails, nothing
    /// more was acknowledged, so it stays the member.
    pub members: Vec<String>,
    /// Who wrote it and why (an engine's node, or the operator's
    /// accept-loss salvage).
    pub reason: String,
    /// When, seconds since the Unix epoch.
    pub updated_unix: u64,
}

impl Object for InSync {
    const PREFIX: &'static str = "insync/";
    const KIND: &'static str = "in-sync set";
    fn name(&self) -> &str {
        &self.volume
    }
}
