//! Health checks: stable codes (`codes`), the cluster as read for them
//! (`view`), and `evaluate`, a pure function from a view to a report in
//! which each item names the items that cause it, so one root cause is
//! shown once with its consequences under it. `docs/health-checks.md`
//! documents every code and the causality rules.
//!
//! Used by the binary's `GET /v1/health`, `vigil doctor`, the
//! `vigil_health_check` series and the support bundle (it reads the view
//! with this agent's suspended engines added: the binary's `health.rs`).

pub mod codes;
mod evaluate;
mod eviction;
mod fencing;
pub mod kernel_io;
pub mod local;
mod migrations;
mod replicas;
pub mod report;
mod suspension;
mod uninstall;
pub mod view;
mod volumes;

pub use evaluate::evaluate;
pub use report::{Check, Item, ItemRef, Report, Status};
pub use view::View;

/// Longest mute: 30 days.
pub const MAX_MUTE_SECONDS: u64 = 30 * 86_400;

/// Body of `POST /v1/health/mutes`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MuteRequest {
    pub code: String,
    /// 1 s to 30 days.
    pub for_seconds: u64,
    /// Why (shown with the muted check).
    pub reason: String,
}

#[cfg(test)]
mod docs_test;
#[cfg(test)]
mod kernel_io_tests;
#[cfg(test)]
mod tests;
