//! The uninstall record: one per cluster (`uninstall/cluster`). Its
//! creation *is* the decision to uninstall (see
//! the cluster layer's uninstall transaction: one transaction that also checks the
//! `deleting-confirmation-flag` setting at the revision read as true), and
//! every agent's controllers work from it (`controller::uninstall`) until
//! its phase is [`UninstallPhase::Done`].

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Object;

/// The name of the one record (its key is `uninstall/cluster`).
pub const RECORD: &str = "cluster";

/// Most lines kept in [`Uninstall::history`].
pub const HISTORY_LINES: usize = 50;

/// Where an uninstall is.
///
/// ```text
///  (no record) ──claim──► Deleting ──no volume, replica or engine left──► Cleaning ──► Done
/// ```
///
/// There is no way back: an uninstall cannot be cancelled once claimed (the
/// confirmation flag is checked at the claim only). A Done record is
/// deleted by an agent that starts and finds it (a fresh install).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UninstallPhase {
    /// Every volume is detached (engines stopped and flushed) and deleted
    /// through the volume's own delete path; replicas are deleted by their
    /// nodes (or abandoned when their node has been down past
    /// `node-down-timeout`).
    Deleting,
    /// No volume, replica or engine object is left: events, mutes,
    /// settings (the confirmation flag with them), disks and nodes are
    /// being deleted. Controllers of every agent stand still.
    Cleaning,
    /// Nothing of the cluster is left but this record and the agents'
    /// liveness keys; agents are idle.
    Done,
}

impl UninstallPhase {
    /// Every allowed `(from, to)` pair besides staying put.
    pub const TRANSITIONS: &'static [(UninstallPhase, UninstallPhase)] = &[
        (UninstallPhase::Deleting, UninstallPhase::Cleaning),
        (UninstallPhase::Cleaning, UninstallPhase::Done),
    ];

    pub fn allows(self, to: UninstallPhase) -> bool {
        self == to || Self::TRANSITIONS.contains(&(self, to))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UninstallPhase::Deleting => "deleting",
            UninstallPhase::Cleaning => "cleaning",
            UninstallPhase::Done => "done",
        }
    }
}

impl std::fmt::Display for UninstallPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phase change the machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("uninstall cannot go from {from} to {to}")]
pub struct PhaseError {
    pub from: UninstallPhase,
    pub to: UninstallPhase,
}

/// The uninstall of the cluster, as claimed and then driven.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uninstall {
    /// Always [`RECORD`].
    pub name: String,
    /// Unique id of this uninstall (node and time of the claim).
    pub id: String,
    /// Node whose agent won the claim.
    pub by_node: String,
    /// When it was claimed (Unix seconds).
    pub started_at: f64,
    /// `mod_revision` of the stored `deleting-confirmation-flag` (value
    /// `true`) that the claim transaction checked.
    pub flag_revision: i64,
    pub phase: UninstallPhase,
    /// Node whose agent wrote the last progress (the claimer while it is
    /// ready, else one ready node by rendezvous hashing).
    #[serde(default)]
    pub driven_by: String,
    /// What it waits for now, or how it ended.
    #[serde(default)]
    pub message: String,
    /// Objects left at the last progress write.
    #[serde(default)]
    pub volumes_left: u64,
    #[serde(default)]
    pub replicas_left: u64,
    #[serde(default)]
    pub engines_left: u64,
    /// Last time something was deleted or the phase changed (Unix
    /// seconds); UNINSTALL_STUCK measures from here.
    #[serde(default)]
    pub progressed_at: f64,
    /// When it reached Done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    /// What happened, one line each, oldest first (at most
    /// [`HISTORY_LINES`]): events are deleted by the uninstall itself, so
    /// the record keeps its own account, UninstallCompleted included.
    #[serde(default)]
    pub history: Vec<String>,
}

impl Uninstall {
    /// A new record in phase Deleting, claimed by `node` at `now`.
    pub fn claimed(node: &str, now: f64, flag_revision: i64) -> Uninstall {
        Uninstall {
            name: RECORD.to_string(),
            id: format!("{node}-{}", (now * 1000.0) as u64),
            by_node: node.to_string(),
            started_at: now,
            flag_revision,
            phase: UninstallPhase::Deleting,
            driven_by: node.to_string(),
            message: "claimed; deleting volumes".into(),
            volumes_left: 0,
            replicas_left: 0,
            engines_left: 0,
            progressed_at: now,
            finished_at: None,
            history: vec![format!(
                "{} UninstallStarted: claimed by {node} (deleting-confirmation-flag true at revision {flag_revision})",
                stamp(now)
            )],
        }
    }

    /// Moves to `to`, checking the transition table.
    pub fn set_phase(&mut self, to: UninstallPhase, now: f64) -> Result<(), PhaseError> {
        if !self.phase.allows(to) {
            return Err(PhaseError {
                from: self.phase,
                to,
            });
        }
        if self.phase != to {
            self.phase = to;
            self.progressed_at = now;
            if to == UninstallPhase::Done {
                self.finished_at = Some(now);
            }
        }
        Ok(())
    }

    /// Appends a line to the history (dropping the oldest beyond
    /// [`HISTORY_LINES`]).
    pub fn note(&mut self, now: f64, line: impl AsRef<str>) {
        self.history
            .push(format!("{} {}", stamp(now), line.as_ref()));
        let excess = self.history.len().saturating_sub(HISTORY_LINES);
        self.history.drain(..excess);
    }

    pub fn is_done(&self) -> bool {
        self.phase == UninstallPhase::Done
    }
}

/// Unix seconds as text for history lines (whole seconds).
fn stamp(now: f64) -> String {
    format!("{}", now as u64)
}

impl Object for Uninstall {
    const PREFIX: &'static str = "uninstall/";
    const KIND: &'static str = "uninstall";
    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward() {
        use UninstallPhase::*;
        let mut u = Uninstall::claimed("n1", 10.0, 7);
        assert_eq!(u.phase, Deleting);
        assert!(u.set_phase(Done, 11.0).is_err(), "cleaning comes first");
        u.set_phase(Cleaning, 12.0).unwrap();
        assert_eq!(u.progressed_at, 12.0);
        assert!(u.set_phase(Deleting, 13.0).is_err(), "no way back");
        u.set_phase(Done, 14.0).unwrap();
        assert_eq!(u.finished_at, Some(14.0));
        assert!(!Done.allows(Deleting) && !Done.allows(Cleaning));
    }

    #[test]
    fn history_is_bounded() {
        let mut u = Uninstall::claimed("n1", 1.0, 1);
        for i in 0..(HISTORY_LINES * 2) {
            u.note(2.0, format!("line {i}"));
        }
        assert_eq!(u.history.len(), HISTORY_LINES);
        assert!(
            u.history
                .last()
                .unwrap()
                .ends_with(&format!("line {}", HISTORY_LINES * 2 - 1))
        );
    }
}
