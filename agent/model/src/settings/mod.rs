//! Cluster settings: a typed registry with defaults, documentation and
//! validation. Values live in the store under `settings/<name>` (only those
//! an operator set); everything else is the default. Readers that make
//! safety-critical decisions load them with a linearizable read
//! (the cluster layer's `Cluster::settings`), never from a cache.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::volume::DataLocality;

mod drain_policy;
pub use drain_policy::DrainPolicy;

/// The type and range of a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// An integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    /// Whole seconds in `min..=max`.
    Seconds {
        min: i64,
        max: i64,
    },
    /// One of the listed words.
    Choice(&'static [&'static str]),
}

/// One setting's definition.
#[derive(Debug, Clone, Copy)]
pub struct Definition {
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every setting vigil knows, in the order `vigil settings list` shows.
pub const DEFINITIONS: &[Definition] = &[
    Definition {
        name: "default-replica-count",
        kind: Kind::Int { min: 1, max: 20 },
        default: "3",
        doc: "Replicas of a new volume when `--replicas` is not given.",
    },
    Definition {
        name: "default-data-locality",
        kind: Kind::Choice(&DataLocality::ALL),
        default: "disabled",
        doc: "Data locality of a new volume when `--data-locality` is not given: disabled, best-effort (keep a replica on the attached node when there is room) or strict-local (one replica, on the attached node).",
    },
    Definition {
        name: "allow-volume-creation-with-degraded-availability",
        kind: Kind::Bool,
        default: "true",
        doc: "Create a volume even when fewer than its desired replicas can be placed (at least one must be); the rest are placed when capacity returns. When false such a create is refused.",
    },
    Definition {
        name: "replica-replenishment-wait-interval",
        kind: Kind::Seconds {
            min: 0,
            max: 86_400,
        },
        default: "600",
        doc: "Seconds to wait for a failed replica's node or disk to come back before building a new replica elsewhere.",
    },
    Definition {
        name: "replica-node-level-soft-anti-affinity",
        kind: Kind::Bool,
        default: "false",
        doc: "Allow two replicas of a volume on one node when no other node has room (false: never).",
    },
    Definition {
        name: "replica-zone-level-soft-anti-affinity",
        kind: Kind::Bool,
        default: "true",
        doc: "Allow two replicas of a volume in one zone (node label `zone`) when no other zone has room (false: never).",
    },
    Definition {
        name: "replica-disk-level-soft-anti-affinity",
        kind: Kind::Bool,
        default: "true",
        doc: "Allow two replicas of a volume on one disk when no other disk has room (false: never).",
    },
    Definition {
        name: "storage-over-provisioning-percentage",
        kind: Kind::Int {
            min: 0,
            max: 10_000,
        },
        default: "100",
        doc: "How much of a disk's usable space (capacity minus reserved) may be promised to replicas, in percent; over 100 over-commits sparse replicas.",
    },
    Definition {
        name: "storage-minimal-available-percentage",
        kind: Kind::Int { min: 0, max: 100 },
        default: "25",
        doc: "No new replica is placed on a disk whose free space is below this percentage of its capacity.",
    },
    Definition {
        name: "concurrent-replica-rebuild-per-node-limit",
        kind: Kind::Int { min: 0, max: 100 },
        default: "5",
        doc: "Most replica rebuilds a node runs at once (0 disables rebuilds).",
    },
    Definition {
        name: "volume-attachment-recovery-policy",
        kind: Kind::Choice(&["never", "wait", "immediate"]),
        default: "wait",
        doc: "When an attached volume's node goes down: never (leave it to the operator), wait (re-attach elsewhere after node-down-timeout) or immediate.",
    },
    Definition {
        name: "node-down-timeout",
        kind: Kind::Seconds {
            min: 1,
            max: 86_400,
        },
        default: "30",
        doc: "Seconds a node must have been down (lease expired) before controllers act on it.",
    },
    Definition {
        name: "rebuild-stuck-timeout",
        kind: Kind::Seconds {
            min: 10,
            max: 86_400,
        },
        default: "300",
        doc: "Seconds a replica rebuild may go without progress before the REBUILD_STUCK health check reports it.",
    },
    Definition {
        name: "integrity-check-interval",
        kind: Kind::Seconds {
            min: 0,
            max: 604_800,
        },
        default: "3600",
        doc: "Seconds between two checksum comparisons of every volume's snapshot layers across its replicas (a layer that differs from the majority marks its replica damaged; 0 disables the periodic check).",
    },
    Definition {
        name: "auto-salvage",
        kind: Kind::Bool,
        default: "true",
        doc: "When every replica of a volume failed, bring back the newest one (highest revision) automatically.",
    },
    Definition {
        name: "migration-timeout",
        kind: Kind::Seconds { min: 5, max: 3600 },
        default: "60",
        doc: "Seconds each automatic step of a live migration (starting the target, pausing it, fencing the source, switching, rolling back) may take before the migration is rolled back; waiting for --confirm is not bounded.",
    },
    Definition {
        name: "deleting-confirmation-flag",
        kind: Kind::Bool,
        default: "false",
        doc: "Must be true before `vigil uninstall` removes anything; read linearizably by the job that acts on it.",
    },
    Definition {
        name: "uninstall-stuck-timeout",
        kind: Kind::Seconds {
            min: 5,
            max: 86_400,
        },
        default: "120",
        doc: "Seconds an uninstall may go without progress (nothing deleted, no phase change) before the UNINSTALL_STUCK health check reports it.",
    },
    Definition {
        name: "engine-on-lease-loss",
        kind: Kind::Choice(&["suspend", "io-error"]),
        default: "suspend",
        doc: "What an engine's clients see while its node cannot renew its liveness lease (its I/O to replicas stops 3 s before the lease could expire, so no other node can take the volume over while it still writes): suspend (requests are held until the lease is renewed and no newer engine exists — a VM sees a pause, as with a lost path) or io-error (requests fail at once). Read while the store answers and kept for when it does not.",
    },
    Definition {
        name: "min-replicas-to-write",
        kind: Kind::Int { min: 1, max: 20 },
        default: "1",
        doc: "How many RW replicas must hold a write (or flush) before it is acknowledged (Ceph's min_size; at most the volume's replica count). Below it, new writes are held or fail as engine-on-lease-loss says, and a write that reached too few is not acknowledged; reads go on. 1 keeps a volume writable on its last replica.",
    },
    Definition {
        name: "node-drain-policy",
        kind: Kind::Choice(&DrainPolicy::ALL),
        default: "block-if-contains-last-replica",
        doc: "What keeps `vigil node drain-check`/`drain` from letting a node go down: block-if-contains-last-replica (a volume whose last healthy replica is on the node blocks, attached or not), allow-if-replica-is-stopped (only if the volume is attached, so its replica runs for an engine; a detached volume's replicas are stopped and may go down) or always-allow (nothing blocks). Under the first two a migration involving the node also blocks; a volume attached there is listed as a note, not a blocker.",
    },
];

/// Why a setting could not be read or set.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingError {
    #[error("unknown setting {name:?}; known settings: {known}")]
    Unknown { name: String, known: String },
    #[error("invalid value {value:?} for {name}: {reason}; allowed: {allowed}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
        allowed: String,
    },
}

/// The definition of `name`.
pub fn definition(name: &str) -> Result<&'static Definition, SettingError> {
    DEFINITIONS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| SettingError::Unknown {
            name: name.to_string(),
            known: DEFINITIONS
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl Kind {
    /// What values are allowed, for error messages and `settings list`.
    pub fn allowed(&self) -> String {
        match self {
            Kind::Bool => "true, false".into(),
            Kind::Int { min, max } => format!("an integer from {min} to {max}"),
            Kind::Seconds { min, max } => format!("whole seconds from {min} to {max}"),
            Kind::Choice(words) => words.join(", "),
        }
    }
}

/// Checks `value` against `name`'s definition and returns it normalised.
pub fn validate(name: &str, value: &str) -> Result<String, SettingError> {
    let def = definition(name)?;
    let v = value.trim();
    let invalid = |reason: &str| SettingError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
        allowed: def.kind.allowed(),
    };
    match def.kind {
        Kind::Bool => match v {
            "true" | "false" => Ok(v.to_string()),
            _ => Err(invalid("not a boolean")),
        },
        Kind::Int { min, max } | Kind::Seconds { min, max } => {
            let n: i64 = v.parse().map_err(|_| invalid("not a whole number"))?;
            if n < min || n > max {
                return Err(invalid("out of range"));
            }
            Ok(n.to_string())
        }
        Kind::Choice(words) => {
            if words.contains(&v) {
                Ok(v.to_string())
            } else {
                Err(invalid("not one of the choices"))
            }
        }
    }
}

/// A stored setting value (`settings/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSetting {
    pub name: String,
    pub value: String,
}

impl crate::Object for StoredSetting {
    const PREFIX: &'static str = "settings/";
    const KIND: &'static str = "setting";
    fn name(&self) -> &str {
        &self.name
    }
}

/// Every setting's effective value at one point in time, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    values: BTreeMap<&'static str, String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            values: DEFINITIONS
                .iter()
                .map(|d| (d.name, d.default.into()))
                .collect(),
        }
    }
}

impl Settings {
    /// Effective settings from the stored values; a stored value that no
    /// longer validates (written by another version) falls back to the
    /// default with a warning, so a bad record never stops the cluster.
    pub fn from_stored(stored: impl IntoIterator<Item = StoredSetting>) -> Settings {
        let mut s = Settings::default();
        for st in stored {
            match (definition(&st.name), validate(&st.name, &st.value)) {
                (Ok(def), Ok(v)) => {
                    s.values.insert(def.name, v);
                }
                (_, Err(e)) => tracing::warn!(error = %e, "ignoring stored setting"),
                (Err(_), _) => {}
            }
        }
        s
    }

    /// The value of `name` as text.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `(definition, effective value, is default)` for every setting.
    pub fn all(&self) -> Vec<(&'static Definition, String, bool)> {
        DEFINITIONS
            .iter()
            .map(|d| {
                let v = self.raw(d.name).unwrap_or(d.default).to_string();
                let is_default = v == d.default;
                (d, v, is_default)
            })
            .collect()
    }

    fn int(&self, name: &str) -> i64 {
        self.raw(name)
            .and_then(|v| v.parse().ok())
            .or_else(|| definition(name).ok().and_then(|d| d.default.parse().ok()))
            .unwrap_or(0)
    }

    fn flag(&self, name: &str) -> bool {
        self.raw(name) == Some("true")
    }

    pub fn default_replica_count(&self) -> u32 {
        u32::try_from(self.int("default-replica-count")).unwrap_or(3)
    }
    pub fn default_data_locality(&self) -> DataLocality {
        self.raw("default-data-locality")
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }
    pub fn allow_degraded_creation(&self) -> bool {
        self.flag("allow-volume-creation-with-degraded-availability")
    }
    pub fn node_soft_anti_affinity(&self) -> bool {
        self.flag("replica-node-level-soft-anti-affinity")
    }
    pub fn zone_soft_anti_affinity(&self) -> bool {
        self.flag("replica-zone-level-soft-anti-affinity")
    }
    pub fn disk_soft_anti_affinity(&self) -> bool {
        self.flag("replica-disk-level-soft-anti-affinity")
    }
    pub fn over_provisioning_percentage(&self) -> u64 {
        u64::try_from(self.int("storage-over-provisioning-percentage")).unwrap_or(100)
    }
    pub fn minimal_available_percentage(&self) -> u64 {
        u64::try_from(self.int("storage-minimal-available-percentage")).unwrap_or(25)
    }
    pub fn rebuild_limit_per_node(&self) -> u32 {
        u32::try_from(self.int("concurrent-replica-rebuild-per-node-limit")).unwrap_or(5)
    }
    pub fn replenishment_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            u64::try_from(self.int("replica-replenishment-wait-interval")).unwrap_or(600),
        )
    }
    pub fn node_down_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::try_from(self.int("node-down-timeout")).unwrap_or(30))
    }
    pub fn attachment_recovery_policy(&self) -> &str {
        self.raw("volume-attachment-recovery-policy")
            .unwrap_or("wait")
    }
    pub fn rebuild_stuck_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            u64::try_from(self.int("rebuild-stuck-timeout")).unwrap_or(300),
        )
    }
    pub fn integrity_check_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            u64::try_from(self.int("integrity-check-interval")).unwrap_or(3600),
        )
    }
    pub fn auto_salvage(&self) -> bool {
        self.flag("auto-salvage")
    }
    pub fn migration_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::try_from(self.int("migration-timeout")).unwrap_or(60))
    }
    pub fn min_replicas_to_write(&self) -> usize {
        usize::try_from(self.int("min-replicas-to-write")).unwrap_or(1)
    }
    pub fn engine_on_lease_loss(&self) -> vigil_engine::engine::OnSuspend {
        match self.raw("engine-on-lease-loss") {
            Some("io-error") => vigil_engine::engine::OnSuspend::IoError,
            _ => vigil_engine::engine::OnSuspend::Suspend,
        }
    }
    pub fn drain_policy(&self) -> DrainPolicy {
        DrainPolicy::parse(
            self.raw("node-drain-policy")
                .unwrap_or("block-if-contains-last-replica"),
        )
    }
    pub fn deleting_confirmation(&self) -> bool {
        self.flag("deleting-confirmation-flag")
    }
    pub fn uninstall_stuck_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            u64::try_from(self.int("uninstall-stuck-timeout")).unwrap_or(120),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_validates() {
        for d in DEFINITIONS {
            assert_eq!(
                validate(d.name, d.default).as_deref(),
                Ok(d.default),
                "{}",
                d.name
            );
            assert!(!d.doc.is_empty());
        }
    }

    #[test]
    fn bad_values_say_what_is_allowed() {
        let e = validate("default-replica-count", "0")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("out of range") && e.contains("from 1 to 20"),
            "{e}"
        );
        let e = validate("default-data-locality", "nearby")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("best-effort") && e.contains("strict-local"),
            "{e}"
        );
        let e = validate("auto-salvage", "yes").unwrap_err().to_string();
        assert!(e.contains("true, false"), "{e}");
        let e = validate("no-such-thing", "1").unwrap_err().to_string();
        assert!(e.contains("default-replica-count"), "{e}");
    }

    #[test]
    fn stored_values_override_defaults_and_bad_ones_are_ignored() {
        let s = Settings::from_stored([
            StoredSetting {
                name: "default-replica-count".into(),
                value: "2".into(),
            },
            StoredSetting {
                name: "storage-over-provisioning-percentage".into(),
                value: "-5".into(),
            },
        ]);
        assert_eq!(s.default_replica_count(), 2);
        assert_eq!(s.over_provisioning_percentage(), 100);
        assert!(!s.deleting_confirmation());
    }
}
