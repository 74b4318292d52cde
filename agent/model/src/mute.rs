//! A health-check mute: the operator's "I know; stop telling me" for one
//! code, until a time, with a reason. Muted checks are still evaluated and
//! listed (marked muted), but do not count towards the doctor's exit code
//! nor the `vigil_health_check` series.

use serde::{Deserialize, Serialize};

use super::Object;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mute {
    /// The health-check code, e.g. `NODE_DOWN`.
    pub code: String,
    /// Muted until (Unix seconds); an expired mute is ignored and pruned.
    pub until_unix: u64,
    /// Why, as the operator wrote it.
    pub reason: String,
    /// When the mute was set (Unix seconds).
    pub created_unix: u64,
    /// Node whose API recorded it.
    pub created_by: String,
}

impl Mute {
    /// Whether the mute still applies at `now_unix`.
    pub fn active(&self, now_unix: u64) -> bool {
        now_unix < self.until_unix
    }
}

impl Object for Mute {
    const PREFIX: &'static str = "mutes/";
    const KIND: &'static str = "mute";
    fn name(&self) -> &str {
        &self.code
    }
}
