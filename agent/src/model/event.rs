//! Events: what happened to which object, and why. Written by controllers
//! and API handlers; the newest are kept, the oldest pruned.

use serde::{Deserialize, Serialize};

use super::Object;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `<unix micros, zero-padded>-<node>-<seq>`: sorts by time.
    pub id: String,
    /// Unix seconds.
    pub time: f64,
    /// `normal` or `warning`.
    pub severity: String,
    /// Kind of the object (`volume`, `node`, ...).
    pub kind: String,
    /// Its name.
    pub object: String,
    /// A stable CamelCase reason (`Scheduled`, `SchedulingFailed`, ...).
    pub reason: String,
    pub message: String,
    /// Node whose agent recorded it.
    pub node: String,
}

impl Object for Event {
    const PREFIX: &'static str = "events/";
    const KIND: &'static str = "event";
    fn name(&self) -> &str {
        &self.id
    }
}
