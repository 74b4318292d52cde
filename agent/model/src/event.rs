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
    /// A stable CamelCase reason: an [`EventReason`]'s name.
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

/// Why an event was recorded: the stable CamelCase names scripts and
/// tests filter on (`vigil events --reason`, `docs`), one per kind of
/// happening. Stored in [`Event::reason`] as its name, so events written
/// by an older or newer agent still read.
macro_rules! reasons {
    ($($name:ident,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventReason {
            $($name,)*
        }

        impl EventReason {
            /// Every reason, in name order.
            pub const ALL: &'static [EventReason] = &[$(EventReason::$name,)*];

            /// The stored name, e.g. `ReplicaFaulted`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventReason::$name => stringify!($name),)*
                }
            }
        }
    };
}

reasons! {
    AttachFailed,
    Attached,
    Attaching,
    Created,
    DamagedReplicaFailed,
    DataLossAccepted,
    Deleted,
    Deleting,
    Detached,
    DetachedFromDownNode,
    Detaching,
    DiskFailing,
    DiskForgotten,
    DiskMissing,
    DiskNoSpace,
    DiskRecovered,
    DiskRegistered,
    DiskReplaced,
    DiskSpaceRecovered,
    EngineFenced,
    EngineResumed,
    EvictionBlocked,
    EvictionCancelRequested,
    EvictionCancelled,
    EvictionCompleted,
    EvictionRequested,
    EvictionStarted,
    Expanded,
    HealthCheckMuted,
    HealthCheckUnmuted,
    LayerChecksumMismatch,
    MaintenanceAbandoned,
    MaintenanceStarted,
    MaintenanceStopped,
    MigrationCompleted,
    MigrationConfirming,
    MigrationRolledBack,
    MigrationRollingBack,
    MigrationSourceFenced,
    MigrationStarted,
    MigrationTargetReady,
    MovedFromDownNode,
    NodeDown,
    RebuildRefused,
    RebuildStarted,
    ReplenishFailed,
    ReplicaAbandoned,
    ReplicaDeleted,
    ReplicaDiscarded,
    ReplicaEvicted,
    ReplicaFailed,
    ReplicaFaulted,
    ReplicaFilesDamaged,
    ReplicaFilesWhole,
    ReplicaRebuilt,
    ReplicaReset,
    ReplicaRetired,
    ReplicaScheduled,
    ReplicaVerified,
    ReplicaVerifyFailed,
    RobustnessChanged,
    Salvaged,
    Scheduled,
    SchedulingFailed,
    SettingChanged,
    UninstallAlreadyRunning,
    UninstallRefused,
    UninstallStarted,
}

impl std::fmt::Display for EventReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::EventReason;

    #[test]
    fn reason_names_are_unique_camel_case() {
        let mut seen = std::collections::BTreeSet::new();
        for r in EventReason::ALL {
            let name = r.as_str();
            assert!(name.starts_with(|c: char| c.is_ascii_uppercase()), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()), "{name}");
            assert!(seen.insert(name), "{name} twice");
        }
        assert_eq!(EventReason::ReplicaFaulted.to_string(), "ReplicaFaulted");
    }
}
