//! What an evaluation returns: the failing checks, each with its items and
//! what causes them. Serialised as `GET /v1/health` and `vigil doctor -o
//! json`; the CLI decodes it back.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::codes::Severity;
use vigil_model::Mute;

/// The cluster's overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
        }
    }
}

impl From<Severity> for Status {
    fn from(s: Severity) -> Status {
        match s {
            Severity::Warning => Status::Warning,
            Severity::Error => Status::Error,
        }
    }
}

/// The result of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The highest severity among unmuted checks (`ok` when none).
    pub status: Status,
    /// Failing checks, errors first, then by code.
    pub checks: Vec<Check>,
    /// Every active mute, by code (also of codes that do not fail now).
    #[serde(default)]
    pub mutes: Vec<Mute>,
    pub evaluated_unix: u64,
}

/// One failing code with the objects it concerns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub code: String,
    pub severity: Severity,
    pub summary: String,
    pub cause: String,
    pub fix: String,
    /// Sorted by object.
    pub items: Vec<Item>,
    /// True when at least one item is not explained by another present,
    /// unmuted item: this check is a root cause to act on.
    pub root: bool,
    /// The active mute of this code, if any.
    #[serde(default)]
    pub muted: Option<Mute>,
}

/// One object a check concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// `volume/v1`, `replica/<name>`, `node/<n>`, `disk/<uuid>`.
    pub object: String,
    pub message: String,
    /// The items (of other checks) that explain this one.
    #[serde(default)]
    pub caused_by: Vec<ItemRef>,
}

/// Points at one item of one check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemRef {
    pub code: String,
    pub object: String,
}

impl ItemRef {
    pub fn new(code: &str, object: impl Into<String>) -> ItemRef {
        ItemRef {
            code: code.to_string(),
            object: object.into(),
        }
    }
}

impl Report {
    /// The check of `code`, if it fails.
    pub fn check(&self, code: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.code == code)
    }

    /// `(code, severity)` of every failing, unmuted check: what the
    /// `vigil_health_check` series report.
    pub fn firing(&self) -> impl Iterator<Item = (&str, Severity)> {
        self.checks
            .iter()
            .filter(|c| c.muted.is_none())
            .map(|c| (c.code.as_str(), c.severity))
    }

    /// Items of unmuted checks: causes that count.
    fn live_refs(&self) -> BTreeSet<ItemRef> {
        self.checks
            .iter()
            .filter(|c| c.muted.is_none())
            .flat_map(|c| c.items.iter().map(|i| ItemRef::new(&c.code, &i.object)))
            .collect()
    }

    /// Whether `item` is explained by no present, unmuted item.
    pub fn is_root_item(&self, item: &Item) -> bool {
        let live = self.live_refs();
        !item.caused_by.iter().any(|r| live.contains(r))
    }

    /// The items directly caused by `cause` (code and object), as
    /// `(code, item)`, in report order.
    pub fn consequences_of(&self, cause: &ItemRef) -> Vec<(&str, &Item)> {
        self.checks
            .iter()
            .flat_map(|c| c.items.iter().map(move |i| (c.code.as_str(), i)))
            .filter(|(_, i)| i.caused_by.contains(cause))
            .collect()
    }

    /// Fills `root` of every check and the overall `status` from the items
    /// and mutes.
    pub fn settle(&mut self) {
        let live = self.live_refs();
        for c in &mut self.checks {
            c.root = c
                .items
                .iter()
                .any(|i| !i.caused_by.iter().any(|r| live.contains(r)));
        }
        self.status = self
            .firing()
            .map(|(_, s)| Status::from(s))
            .max()
            .unwrap_or(Status::Ok);
    }
}
