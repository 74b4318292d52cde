//! The working view of one call and the choice of the next disk: which
//! (node, disk) pairs can take a replica, which soft rule each would bend,
//! and which is best.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::room::{Limits, check_room, disk_label};
use super::{Candidate, View};
use vigil_model::disk::DiskState;
use vigil_model::{Disk, Volume};

/// A failure domain for zone anti-affinity. A node without a `zone` label is
/// its own zone: we know nothing about what it shares with other nodes, and
/// lumping every unlabeled node into one zone "" would make every volume on
/// an unlabeled cluster look zone-crowded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Zone<'a> {
    Labeled(&'a str),
    /// Unlabeled; holds the node's name.
    Unlabeled(&'a str),
}

impl std::fmt::Display for Zone<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Zone::Labeled(z) => f.write_str(z),
            Zone::Unlabeled(n) => write!(f, "{n} (no zone label)"),
        }
    }
}

/// Which soft anti-affinity rules a choice bends. Field order is preference
/// order, so the derived `Ord` ranks a new node first, then a new zone, then
/// a new disk (a shared disk implies a shared node and zone).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Sharing {
    pub node: bool,
    pub zone: bool,
    pub disk: bool,
}

/// One (node, disk) that can take the next replica.
#[derive(Debug, Clone, Copy)]
pub(super) struct Choice<'a> {
    pub node: &'a Candidate,
    pub disk: &'a Disk,
    pub zone: Zone<'a>,
    /// Schedulable bytes left on the disk before this replica.
    pub room: u64,
    pub sharing: Sharing,
}

impl Choice<'_> {
    /// Lower is better: share as little as possible, then most room, then
    /// names so equal choices always resolve the same way.
    fn rank(&self) -> (Sharing, Reverse<u64>, &str, &str) {
        (
            self.sharing,
            Reverse(self.room),
            &self.node.node.name,
            &self.disk.uuid,
        )
    }
}

/// Which nodes a placement may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope<'a> {
    Anywhere,
    Only(&'a str),
}

/// The view as it stands during one call: bytes promised per disk and the
/// volume's replicas, both updated after every placement so later placements
/// see earlier ones.
pub(super) struct Working<'a> {
    view: &'a View<'a>,
    volume: &'a Volume,
    limits: Limits,
    /// Disk UUID → sum of the sizes of the replicas on it (recomputed from
    /// the replicas, never read from `status.scheduled_bytes`, which may be
    /// stale).
    scheduled: BTreeMap<&'a str, u64>,
    /// (node, disk) of every replica of the volume, existing or placed now.
    holders: Vec<(&'a str, &'a str)>,
}

impl<'a> Working<'a> {
    pub(super) fn new(view: &'a View<'a>, volume: &'a Volume) -> Working<'a> {
        let mut scheduled: BTreeMap<&str, u64> = BTreeMap::new();
        let mut holders = Vec::new();
        for r in view.replicas {
            let used = scheduled.entry(r.spec.disk.as_str()).or_default();
            *used = used.saturating_add(r.spec.size);
            if r.spec.volume == volume.name {
                holders.push((r.spec.node.as_str(), r.spec.disk.as_str()));
            }
        }
        Working {
            view,
            volume,
            limits: Limits::from_settings(view.settings),
            scheduled,
            holders,
        }
    }

    /// Takes `choice` into account for the placements that follow.
    pub(super) fn record(&mut self, choice: &Choice<'a>) {
        let used = self.scheduled.entry(choice.disk.uuid.as_str()).or_default();
        *used = used.saturating_add(self.volume.spec.size);
        self.holders
            .push((choice.node.node.name.as_str(), choice.disk.uuid.as_str()));
    }

    pub(super) fn volume_name(&self) -> &str {
        &self.volume.name
    }

    /// Replicas of the volume on `node`.
    pub(super) fn on_node(&self, node: &str) -> usize {
        self.holders.iter().filter(|(n, _)| *n == node).count()
    }

    /// Replicas of the volume on the disk `uuid`.
    pub(super) fn on_disk(&self, uuid: &str) -> usize {
        self.holders.iter().filter(|(_, d)| *d == uuid).count()
    }

    /// The zone of `node`; a node that is not registered (a replica left on
    /// a removed node) is treated as unlabeled.
    pub(super) fn zone_of(&self, node: &'a str) -> Zone<'a> {
        self.view
            .nodes
            .iter()
            .find(|c| c.node.name == node)
            .and_then(|c| c.node.zone())
            .map_or(Zone::Unlabeled(node), Zone::Labeled)
    }

    /// Nodes holding a replica of the volume in `zone`, sorted, once each.
    pub(super) fn holders_in(&self, zone: Zone<'a>) -> Vec<&'a str> {
        let mut nodes: Vec<&str> = self
            .holders
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| self.zone_of(n) == zone)
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Names of the registered nodes, sorted.
    pub(super) fn node_names(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.nodes().into_iter().map(|c| c.node.name.as_str())
    }

    /// Registered nodes sorted by name, so reasons come out in a stable order.
    fn nodes(&self) -> Vec<&'a Candidate> {
        let mut nodes: Vec<&Candidate> = self.view.nodes.iter().collect();
        nodes.sort_by(|a, b| a.node.name.cmp(&b.node.name));
        nodes
    }

    /// The best choice within `scope`, and every choice that was possible
    /// (for notes); or one line per node in scope saying why it cannot take
    /// the replica.
    pub(super) fn best(
        &self,
        scope: Scope<'_>,
    ) -> Result<(Choice<'a>, Vec<Choice<'a>>), Vec<String>> {
        let mut choices = Vec::new();
        let mut reasons = Vec::new();
        let in_scope = |c: &&Candidate| match scope {
            Scope::Anywhere => true,
            Scope::Only(name) => c.node.name == name,
        };
        let nodes: Vec<&Candidate> = self.nodes().into_iter().filter(in_scope).collect();
        if nodes.is_empty() {
            reasons.push(match scope {
                Scope::Only(name) => format!("{name}: not registered"),
                Scope::Anywhere => "no nodes are registered".into(),
            });
        }
        for c in nodes {
            match self.choices_on(c) {
                Ok(mut found) => choices.append(&mut found),
                Err(why) => reasons.push(format!("{}: {why}", c.node.name)),
            }
        }
        match choices.iter().min_by(|a, b| a.rank().cmp(&b.rank())) {
            Some(best) => Ok((*best, choices)),
            None => Err(reasons),
        }
    }

    /// Every disk of `c` that can take the next replica, or why none can.
    fn choices_on(&self, c: &'a Candidate) -> Result<Vec<Choice<'a>>, String> {
        self.node_refusal(c).map_or(Ok(()), Err)?;
        let name = c.node.name.as_str();
        let zone = self.zone_of(name);
        let base = Sharing {
            node: self.on_node(name) > 0,
            zone: !self.holders_in(zone).is_empty(),
            disk: false,
        };
        let mut disks: Vec<&Disk> = self
            .view
            .disks
            .iter()
            .filter(|d| d.spec.node == name)
            .collect();
        if disks.is_empty() {
            return Err("has no disks".into());
        }
        disks.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        let mut choices = Vec::new();
        let mut refusals = Vec::new();
        for disk in disks {
            match self.disk_room(disk) {
                Ok(room) => choices.push(Choice {
                    node: c,
                    disk,
                    zone,
                    room,
                    sharing: Sharing {
                        disk: self.on_disk(&disk.uuid) > 0,
                        ..base
                    },
                }),
                Err(why) => refusals.push(why),
            }
        }
        if choices.is_empty() {
            Err(refusals.join("; "))
        } else {
            Ok(choices)
        }
    }

    /// Why no disk of `c` can be used whatever its room, if so: the node's
    /// state, its tags, and the hard anti-affinity rules.
    fn node_refusal(&self, c: &'a Candidate) -> Option<String> {
        let node = &c.node;
        if !c.ready {
            return Some("not ready (lease expired)".into());
        }
        if !node.spec.allow_scheduling {
            return Some("scheduling disabled".into());
        }
        if node.spec.eviction_requested {
            return Some("eviction requested".into());
        }
        if let Some(missing) = missing_tags("node", &self.volume.spec.node_tags, &node.spec.tags) {
            return Some(missing);
        }
        self.anti_affinity_refusal(c)
    }

    /// Why hard node or zone anti-affinity keeps the replica off `c`, if it
    /// does.
    fn anti_affinity_refusal(&self, c: &'a Candidate) -> Option<String> {
        let settings = self.view.settings;
        let name = c.node.name.as_str();
        let volume = &self.volume.name;
        if self.on_node(name) > 0 && !settings.node_soft_anti_affinity() {
            return Some(format!(
                "already holds a replica of {volume} (node anti-affinity is hard)"
            ));
        }
        if settings.zone_soft_anti_affinity() {
            return None;
        }
        let zone = self.zone_of(name);
        let holders = self.holders_in(zone);
        if holders.is_empty() {
            return None;
        }
        Some(match zone {
            Zone::Labeled(z) => format!(
                "zone {z} already holds a replica of {volume} on {} (zone anti-affinity is hard)",
                holders.join(", ")
            ),
            Zone::Unlabeled(_) => format!(
                "already holds a replica of {volume} and, having no zone label, is its own zone (zone anti-affinity is hard)"
            ),
        })
    }

    /// `Ok(schedulable room)` when `disk` can take the replica, else why
    /// not: its state, scheduling flag, tags, hard disk anti-affinity, room.
    fn disk_room(&self, disk: &Disk) -> Result<u64, String> {
        let label = disk_label(disk);
        if disk.status.state != DiskState::Ready {
            return Err(format!("{label} is {}", disk_state_text(disk)));
        }
        if !disk.spec.allow_scheduling {
            return Err(format!("{label} has scheduling disabled"));
        }
        if let Some(why) = disk_trouble(disk) {
            return Err(format!("{label} {why}"));
        }
        if let Some(missing) = missing_tags("disk", &self.volume.spec.disk_tags, &disk.spec.tags) {
            return Err(format!("{label} {missing}"));
        }
        if self.on_disk(&disk.uuid) > 0 && !self.view.settings.disk_soft_anti_affinity() {
            return Err(format!(
                "{label} already holds a replica of {} (disk anti-affinity is hard)",
                self.volume.name
            ));
        }
        let scheduled = self.scheduled.get(disk.uuid.as_str()).copied().unwrap_or(0);
        check_room(disk, scheduled, self.volume.spec.size, self.limits)
    }
}

/// `lacks node tag ssd` / `lacks disk tags a, b` when `have` misses any of
/// `want`.
fn missing_tags(kind: &str, want: &[String], have: &[String]) -> Option<String> {
    let missing: Vec<&str> = want
        .iter()
        .filter(|t| !have.contains(t))
        .map(String::as_str)
        .collect();
    match missing.len() {
        0 => None,
        1 => Some(format!("lacks {kind} tag {}", missing.join(""))),
        _ => Some(format!("lacks {kind} tags {}", missing.join(", "))),
    }
}

/// Why a disk its agent found failing or out of space takes nothing new,
/// with since when and the newest error; `None` when it is neither. Its
/// agent clears the condition once the disk works again.
fn disk_trouble(disk: &Disk) -> Option<String> {
    let when = |t: u64| vigil_model::time::rfc3339(t, 0);
    if let Some(t) = &disk.status.failing {
        return Some(format!(
            "returns I/O errors since {} ({} error(s), last: {})",
            when(t.since_unix),
            t.errors,
            t.message
        ));
    }
    let t = disk.status.no_space.as_ref()?;
    Some(format!(
        "is full: writes fail with no space left since {} (last: {})",
        when(t.since_unix),
        t.message
    ))
}

/// `missing` / `replaced`, with the agent's message when it gave one.
fn disk_state_text(disk: &Disk) -> String {
    let state = match disk.status.state {
        DiskState::Ready => "ready",
        DiskState::Missing => "missing",
        DiskState::Replaced => "replaced by another disk",
    };
    if disk.status.message.is_empty() {
        state.to_string()
    } else {
        format!("{state}: {}", disk.status.message)
    }
}
