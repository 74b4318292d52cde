//! The state machines of the model, written down in one place. Every write
//! of a volume or instance state goes through [`VolumeState::check`] or
//! [`InstanceState::check`], so a transition the table does not list is
//! refused instead of stored.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Lifecycle of a volume.
///
/// ```text
///            create                    attach                 engine running
///  (none) ─────────► Creating ─► Detached ──────► Attaching ───────────────► Attached
///                       │  replicas   ▲  ▲            │ detach                   │ detach
///                       │  running    │  │            ▼                          ▼
///                       │             │  └──────── Detaching ◄───────────────────┘
///                       │             │   engine stopped
///                delete ▼             │ delete
///                    Deleting ◄───────┘   (then the object is removed once its
///                                          replicas are gone)
/// ```
///
/// When the attached node is down, Attaching and Attached also go straight
/// to Detached (nothing runs there to stop), and Attached goes back to
/// Attaching on another node (see `controller::recovery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeState {
    /// Replicas are scheduled and being created on their nodes.
    Creating,
    /// Every replica exists; no engine runs. Can be attached, expanded or
    /// deleted.
    Detached,
    /// An engine is being started on the requested node.
    Attaching,
    /// The engine runs on the attached node and serves the frontend.
    Attached,
    /// The engine is being stopped (flushed first).
    Detaching,
    /// Replicas are being deleted; the object goes when they are gone.
    Deleting,
}

/// Lifecycle of a replica or engine instance on its node.
///
/// ```text
///  Starting ──► Running ──► Stopping ──► Stopped ──► Starting
///     │            │           │
///     └──► Error ◄─┴───────────┘      Error ──► Starting | Stopping
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Asked for; the node has not brought it up yet.
    Starting,
    /// Up and serving.
    Running,
    /// Being shut down.
    Stopping,
    /// Down on purpose; can be started again.
    Stopped,
    /// Down because something failed; the status message says what.
    Error,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{what} cannot go from {from} to {to}")]
pub struct TransitionError {
    pub what: &'static str,
    pub from: String,
    pub to: String,
}

impl VolumeState {
    /// Every allowed `(from, to)` pair. Staying in a state is always allowed
    /// (status updates that do not change the state).
    pub const TRANSITIONS: &'static [(VolumeState, VolumeState)] = {
        use VolumeState::*;
        &[
            (Creating, Detached),
            (Creating, Deleting),
            (Detached, Attaching),
            (Detached, Deleting),
            (Attaching, Attached),
            (Attaching, Detaching),
            (Attached, Detaching),
            (Detaching, Detached),
            // The attached node is down (not renewing its lease), so no
            // engine to stop there: detached at once by the operator or by
            // volume-attachment-recovery-policy `wait`. The node stops its
            // engine when it returns, as the volume is no longer its own.
            (Attached, Detached),
            (Attaching, Detached),
            // Moved to another node while the attached one is down (policy
            // `immediate`, or `wait` past node-down-timeout); the new node
            // starts the engine as for any attach.
            (Attached, Attaching),
        ]
    };

    /// Whether `self → to` is allowed.
    pub fn allows(self, to: VolumeState) -> bool {
        self == to || Self::TRANSITIONS.contains(&(self, to))
    }

    /// `Ok` when `self → to` is allowed.
    pub fn check(self, to: VolumeState) -> Result<(), TransitionError> {
        if self.allows(to) {
            Ok(())
        } else {
            Err(TransitionError {
                what: "volume",
                from: self.to_string(),
                to: to.to_string(),
            })
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Creating => "creating",
            VolumeState::Detached => "detached",
            VolumeState::Attaching => "attaching",
            VolumeState::Attached => "attached",
            VolumeState::Detaching => "detaching",
            VolumeState::Deleting => "deleting",
        }
    }

    pub const ALL: [VolumeState; 6] = [
        VolumeState::Creating,
        VolumeState::Detached,
        VolumeState::Attaching,
        VolumeState::Attached,
        VolumeState::Detaching,
        VolumeState::Deleting,
    ];
}

impl InstanceState {
    /// Every allowed `(from, to)` pair besides staying put.
    pub const TRANSITIONS: &'static [(InstanceState, InstanceState)] = {
        use InstanceState::*;
        &[
            (Starting, Running),
            (Starting, Error),
            (Starting, Stopping),
            (Running, Stopping),
            (Running, Error),
            (Stopping, Stopped),
            (Stopping, Error),
            (Stopped, Starting),
            (Error, Starting),
            (Error, Stopping),
        ]
    };

    pub fn allows(self, to: InstanceState) -> bool {
        self == to || Self::TRANSITIONS.contains(&(self, to))
    }

    pub fn check(self, to: InstanceState) -> Result<(), TransitionError> {
        if self.allows(to) {
            Ok(())
        } else {
            Err(TransitionError {
                what: "instance",
                from: self.to_string(),
                to: to.to_string(),
            })
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Error => "error",
        }
    }

    pub const ALL: [InstanceState; 5] = [
        InstanceState::Starting,
        InstanceState::Running,
        InstanceState::Stopping,
        InstanceState::Stopped,
        InstanceState::Error,
    ];
}

impl std::fmt::Display for VolumeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_transitions_follow_the_table() {
        use VolumeState::*;
        assert!(Detached.allows(Attaching));
        assert!(Attached.allows(Detaching));
        assert!(
            Attached.allows(Detached) && Attaching.allows(Detached),
            "a volume on a down node is detached at once"
        );
        assert!(Attached.allows(Attaching), "moved off a down node");
        assert!(
            !Detaching.allows(Attaching),
            "a detach finishes before another attach"
        );
        assert!(
            !Attached.allows(Deleting),
            "an attached volume is never deleted"
        );
        assert!(!Deleting.allows(Detached), "deletion is final");
        assert!(Creating.check(Attached).is_err());
        // every state can reach detached or deleting (no dead ends)
        for s in VolumeState::ALL {
            let mut seen = vec![s];
            let mut i = 0;
            while i < seen.len() {
                for (a, b) in VolumeState::TRANSITIONS {
                    if *a == seen[i] && !seen.contains(b) {
                        seen.push(*b);
                    }
                }
                i += 1;
            }
            assert!(seen.contains(&Deleting), "{s} cannot reach deleting");
        }
    }

    #[test]
    fn instance_transitions_follow_the_table() {
        use InstanceState::*;
        assert!(Starting.allows(Running));
        assert!(Error.allows(Starting));
        assert!(!Stopped.allows(Running), "a stopped instance starts first");
        assert!(Running.check(Starting).is_err());
    }
}
