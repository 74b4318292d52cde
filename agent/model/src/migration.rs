//! A live migration: a second engine for an attached volume on another
//! node, confirmed (the target becomes the only engine) or rolled back
//! (the source stays the only engine). Kept in `VolumeStatus::migration`;
//! every phase change is a compare-and-swap on the volume object.
//!
//! ```text
//!   migrate --to N2        target forwards           --confirm
//!  ─────────────────► Starting ─────────► Ready ─────────────► Confirming
//!                        │                  │                      │ target paused new I/O
//!                        │                  │                      ▼ and flushed through the source
//!                        │                  │               SourceStopping
//!                        │                  │                      │ source flushed and stopped
//!                        │                  │                      ▼ its engine (fenced)
//!                        │                  │                  Switching ──► done: attached to N2,
//!                        ▼                  ▼                      │         migration cleared
//!                     RollingBack ◄─────────┴──────────────────────┘
//!                        │ target stopped its export (or is down);
//!                        ▼ source serves again
//!                      cleared: attached to N1
//! ```
//!
//! Only one engine ever writes to the replicas: until `SourceStopping`
//! completes, the target's export forwards every request to the source's
//! engine over NBD; the target starts its own engine only in `Switching`,
//! after the source's is stopped. See ARCHITECTURE.md ("Live migration").

use serde::{Deserialize, Serialize};

/// One migration in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// The node the volume moves to.
    pub target: String,
    /// The node it moves from (the attached node when it started).
    pub source: String,
    pub phase: MigrationPhase,
    /// Unix seconds when the migration was asked for.
    pub started_at: u64,
    /// Unix seconds when the current phase began; the automatic phases
    /// roll back once they last longer than `migration-timeout`.
    pub phase_since: u64,
    /// NBD URI of the target's export once it serves (phase Ready on).
    #[serde(default)]
    pub target_endpoint: String,
    /// Why it is rolling back, or what it waits for.
    #[serde(default)]
    pub message: String,
    /// Set by the target's agent once its export and engine are gone
    /// (during RollingBack): the source may serve again.
    #[serde(default)]
    pub target_stopped: bool,
    /// Set by the source's agent once its engine is flushed and stopped.
    #[serde(default)]
    pub source_stopped: bool,
}

/// Where a migration is; see the module diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationPhase {
    /// Asked for; the target's agent is bringing up its forwarding export.
    Starting,
    /// The target serves (forwarding to the source); waiting for the user
    /// to confirm or roll back.
    Ready,
    /// Confirm asked; the target pauses new I/O and flushes.
    Confirming,
    /// The target is paused; the source flushes and stops its engine.
    SourceStopping,
    /// The source's engine is stopped; the target starts its own.
    Switching,
    /// Undoing: the target stops its export, the source serves again.
    RollingBack,
}

/// A phase change the table does not list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("migration cannot go from {from} to {to}")]
pub struct PhaseError {
    pub from: &'static str,
    pub to: &'static str,
}

impl MigrationPhase {
    /// Every allowed `(from, to)` pair besides staying put. Leaving the
    /// state machine (done or rolled back) clears the migration.
    pub const TRANSITIONS: &'static [(MigrationPhase, MigrationPhase)] = {
        use MigrationPhase::*;
        &[
            (Starting, Ready),
            (Starting, RollingBack),
            (Ready, Confirming),
            (Ready, RollingBack),
            (Confirming, SourceStopping),
            (Confirming, RollingBack),
            (SourceStopping, Switching),
            (SourceStopping, RollingBack),
            (Switching, RollingBack),
        ]
    };

    pub fn allows(self, to: MigrationPhase) -> bool {
        self == to || Self::TRANSITIONS.contains(&(self, to))
    }

    pub fn check(self, to: MigrationPhase) -> Result<(), PhaseError> {
        if self.allows(to) {
            Ok(())
        } else {
            Err(PhaseError {
                from: self.as_str(),
                to: to.as_str(),
            })
        }
    }

    /// Phases the agents drive on their own (all but Ready, which waits
    /// for the user): these are bounded by `migration-timeout`.
    pub fn is_automatic(self) -> bool {
        self != MigrationPhase::Ready
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MigrationPhase::Starting => "starting",
            MigrationPhase::Ready => "ready",
            MigrationPhase::Confirming => "confirming",
            MigrationPhase::SourceStopping => "source-stopping",
            MigrationPhase::Switching => "switching",
            MigrationPhase::RollingBack => "rolling-back",
        }
    }
}

impl std::fmt::Display for MigrationPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Migration {
    /// Moves to `to` at `now`, checking the table.
    pub fn set_phase(&mut self, to: MigrationPhase, now: u64) -> Result<(), PhaseError> {
        self.phase.check(to)?;
        if self.phase != to {
            self.phase = to;
            self.phase_since = now;
        }
        Ok(())
    }

    /// Both nodes the migration involves.
    pub fn involves(&self, node: &str) -> bool {
        self.source == node || self.target == node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_can_roll_back_or_finish() {
        use MigrationPhase::*;
        for p in [Starting, Ready, Confirming, SourceStopping, Switching] {
            assert!(p.allows(RollingBack), "{p} cannot roll back");
        }
        assert!(
            !Ready.allows(Switching),
            "the source is fenced before the switch"
        );
        assert!(!RollingBack.allows(Ready), "a rollback is final");
        assert!(Starting.check(Confirming).is_err());
    }
}
