//! The replica scheduler: given the cluster as seen now and a volume that
//! needs new replicas, decide on which node and disk each goes.
//!
//! A pure function: no I/O, no clock, no randomness. The caller reads the
//! view (linearizably, so the capacity it checks is current), calls
//! [`place`], and writes the replicas and disk usage in one transaction.
//!
//! Rules, in the order they are applied to each new replica:
//! 1. Hard: the node is ready (its liveness lease is held), allows
//!    scheduling, is not being evicted and carries every node tag of the
//!    volume; the disk is on that node, ready, allows scheduling, carries
//!    every disk tag and has room (see [`room`]).
//! 2. Anti-affinity against the volume's replicas (existing and placed in
//!    this call), at node, zone and disk level. Each is hard or soft per the
//!    `replica-*-level-soft-anti-affinity` settings. A soft rule is bent
//!    only when no choice keeps it, and every bend is reported in
//!    [`Outcome::notes`]. A node without a `zone` label is its own zone.
//! 3. Among what is left: a new node, then a new zone, then a new disk; then
//!    the disk with the most schedulable room; then node name and disk UUID,
//!    so equal inputs always give equal outputs.
//! 4. Data locality: `strict-local` places only on the local node;
//!    `best-effort` tries the local node first for the first replica of the
//!    call (when it holds none yet) and falls back to rule 3 with a note;
//!    `disabled` ignores the local node.

mod choice;
mod room;

#[cfg(test)]
mod proptests;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tests;

use choice::{Choice, Scope, Working, Zone};
use room::disk_label;

use vigil_model::settings::Settings;
use vigil_model::volume::DataLocality;
use vigil_model::{Disk, Node, Replica, Volume};

/// A registered node and whether its agent holds its liveness lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node: Node,
    pub ready: bool,
}

/// The cluster as the scheduler sees it: every registered node, disk and
/// replica (of every volume: all of them count for disk usage), and the
/// settings.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub nodes: &'a [Candidate],
    pub disks: &'a [Disk],
    pub replicas: &'a [Replica],
    pub settings: &'a Settings,
}

/// What to place.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Its size, tags and data locality apply to every new replica.
    pub volume: &'a Volume,
    /// How many new replicas to place now.
    pub count: usize,
    /// The node data locality refers to (where the volume is or will be
    /// attached); ignored when data locality is disabled.
    pub local_node: Option<&'a str>,
}

/// Where one new replica goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    /// The disk's UUID.
    pub disk: String,
}

/// The result of [`place`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// New replicas in order; at most `count`. Every one satisfies the hard
    /// rules, given the ones before it.
    pub placed: Vec<Placement>,
    /// Soft rules that were bent, one line per bend.
    pub notes: Vec<String>,
    /// Non-empty exactly when fewer than `count` were placed: why the next
    /// replica could not be, one line per node (`n2: not ready (lease
    /// expired)`).
    pub reasons: Vec<String>,
}

/// Places up to `req.count` new replicas of `req.volume` on the nodes and
/// disks of `view`, each placement seeing the ones before it. Stops at the
/// first replica that cannot be placed, since later ones would meet the same
/// or a fuller cluster.
pub fn place(req: &Request, view: &View) -> Outcome {
    let mut working = Working::new(view, req.volume);
    let mut out = Outcome::default();
    for i in 0..req.count {
        match next(req, &working, i == 0) {
            Ok(pick) => {
                out.notes.extend(pick.notes.iter().cloned());
                out.notes.extend(relaxation_notes(&working, &pick));
                out.placed.push(Placement {
                    node: pick.choice.node.node.name.clone(),
                    disk: pick.choice.disk.uuid.clone(),
                });
                working.record(&pick.choice);
            }
            Err(reasons) => {
                out.reasons = reasons;
                break;
            }
        }
    }
    out
}

/// The choice made for one replica and what it was chosen from.
struct Pick<'a> {
    choice: Choice<'a>,
    /// Every choice that was possible in the scope searched.
    alternatives: Vec<Choice<'a>>,
    /// True when data locality restricted the search to the local node, so
    /// a bent rule was bent for locality, not for lack of other room.
    local: bool,
    /// Data-locality notes.
    notes: Vec<String>,
}

impl<'a> Pick<'a> {
    fn new((choice, alternatives): (Choice<'a>, Vec<Choice<'a>>), local: bool) -> Pick<'a> {
        Pick {
            choice,
            alternatives,
            local,
            notes: Vec::new(),
        }
    }
}

/// The next replica's pick, or why it cannot be placed.
fn next<'a>(
    req: &Request<'a>,
    working: &Working<'a>,
    first: bool,
) -> Result<Pick<'a>, Vec<String>> {
    match (req.volume.spec.data_locality, req.local_node) {
        (DataLocality::StrictLocal, local) => strict_local(working, local),
        (DataLocality::BestEffort, Some(local)) if first && working.on_node(local) == 0 => {
            best_effort(working, local)
        }
        _ => working
            .best(Scope::Anywhere)
            .map(|found| Pick::new(found, false)),
    }
}

/// Only the local node will do; every other node is listed as out of scope
/// so the reasons still cover the whole cluster.
fn strict_local<'a>(working: &Working<'a>, local: Option<&str>) -> Result<Pick<'a>, Vec<String>> {
    let volume = working.volume_name();
    let Some(local) = local else {
        return Err(vec![format!(
            "{volume} is strict-local but has no local node to place its replica on"
        )]);
    };
    match working.best(Scope::Only(local)) {
        Ok(found) => Ok(Pick::new(found, true)),
        Err(mut reasons) => {
            reasons.extend(
                working
                    .node_names()
                    .filter(|n| *n != local)
                    .map(|n| format!("{n}: not {local}, and {volume} is strict-local to it")),
            );
            Err(reasons)
        }
    }
}

/// The local node if it can take the replica, otherwise the normal choice
/// with a note saying why the local node could not.
fn best_effort<'a>(working: &Working<'a>, local: &str) -> Result<Pick<'a>, Vec<String>> {
    match working.best(Scope::Only(local)) {
        Ok(found) => Ok(Pick::new(found, true)),
        Err(why) => {
            let mut pick = Pick::new(working.best(Scope::Anywhere)?, false);
            pick.notes.push(format!(
                "data locality best-effort relaxed: the local node cannot take a replica of {} ({}); placed on {} instead",
                working.volume_name(),
                why.join("; "),
                pick.choice.node.node.name,
            ));
            Ok(pick)
        }
    }
}

/// One note per soft anti-affinity rule the pick bends. Written before the
/// pick is recorded, so "now holds" counts add one.
fn relaxation_notes(working: &Working, pick: &Pick) -> Vec<String> {
    let volume = working.volume_name();
    let choice = &pick.choice;
    let node = choice.node.node.name.as_str();
    let mut notes = Vec::new();
    if choice.sharing.node {
        let why = if pick.local {
            format!("data locality puts it on the local node {node}")
        } else {
            format!("no other node can take a replica of {volume}")
        };
        notes.push(format!(
            "node anti-affinity relaxed: {why}; {node} now holds {} of them",
            working.on_node(node) + 1
        ));
    }
    if let (true, Zone::Labeled(zone)) = (choice.sharing.zone, choice.zone) {
        let why = if pick.local {
            format!("data locality puts it on the local node {node}")
        } else {
            format!(
                "{volume} already has replicas in every zone that can take one ({})",
                zones_of(&pick.alternatives)
            )
        };
        notes.push(format!(
            "zone anti-affinity relaxed: {why}; the new replica on {node} shares zone {zone} with {}",
            working.holders_in(choice.zone).join(", "),
        ));
    }
    if choice.sharing.disk {
        let scope = if pick.local { " on the local node" } else { "" };
        notes.push(format!(
            "disk anti-affinity relaxed: every disk{scope} that can take a replica of {volume} already holds one; {} on {node} now holds {} of them",
            disk_label(choice.disk),
            working.on_disk(&choice.disk.uuid) + 1
        ));
    }
    notes
}

/// The distinct zones of `choices`, sorted and comma-separated.
fn zones_of(choices: &[Choice]) -> String {
    let mut zones: Vec<String> = choices.iter().map(|c| c.zone.to_string()).collect();
    zones.sort();
    zones.dedup();
    zones.join(", ")
}
