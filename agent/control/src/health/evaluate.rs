//! `evaluate`: a pure function from a [`View`] to a [`Report`].
//!
//! Checks are found in causal order — store, nodes, disks, replica files,
//! network, replicas, rebuilds, volumes — so that when an item is added,
//! the items that may explain it already exist and its `caused_by` names
//! only present items. The rules are written down per code in
//! `docs/health-checks.md` ("Causality").

use std::collections::BTreeMap;

use super::codes::{self, *};
use super::report::{Check, Item, ItemRef, Report, Status};
use super::view::View;
use vigil_model::disk::DiskState;
use vigil_model::replica::ReplicaMode;
use vigil_model::volume::Robustness;
use vigil_model::{Disk, Replica, Volume, VolumeState};

/// Evaluates every check on `view`.
pub fn evaluate(view: &View) -> Report {
    let mut ev = Eval::new(view);
    if let Some(e) = &view.store_error {
        ev.add(
            STORE_UNREACHABLE,
            format!("node/{}", view.observer),
            format!("node {} cannot read the cluster store: {e}", view.observer),
            Vec::new(),
        );
    }
    ev.suspensions();
    ev.nodes();
    ev.disks();
    ev.kernel_io();
    ev.replica_files();
    ev.backends();
    ev.replicas_stopped();
    ev.unschedulable();
    ev.replica_errors();
    ev.rebuilds();
    ev.migrations();
    ev.fencing();
    ev.volumes();
    ev.uninstall();
    ev.evictions();
    ev.finish()
}

/// The evaluation in progress: the view and the items found so far.
pub(super) struct Eval<'a> {
    pub(super) view: &'a View,
    items: BTreeMap<&'static str, BTreeMap<String, Item>>,
}

impl<'a> Eval<'a> {
    fn new(view: &'a View) -> Eval<'a> {
        Eval {
            view,
            items: BTreeMap::new(),
        }
    }

    /// Adds an item to `code` (a second item for the same object is
    /// merged into the first).
    pub(super) fn add(
        &mut self,
        code: &'static str,
        object: String,
        message: String,
        mut caused_by: Vec<ItemRef>,
    ) {
        caused_by.sort();
        caused_by.dedup();
        let items = self.items.entry(code).or_default();
        match items.get_mut(&object) {
            Some(i) => {
                i.message = format!("{}; {message}", i.message);
                i.caused_by.extend(caused_by);
                i.caused_by.sort();
                i.caused_by.dedup();
            }
            None => {
                items.insert(
                    object.clone(),
                    Item {
                        object,
                        message,
                        caused_by,
                    },
                );
            }
        }
    }

    /// `code`'s item for `object`, as a reference, when it is present.
    pub(super) fn present(&self, code: &str, object: &str) -> Option<ItemRef> {
        self.items
            .get(code)
            .is_some_and(|m| m.contains_key(object))
            .then(|| ItemRef::new(code, object))
    }

    pub(super) fn is_live(&self, node: &str) -> bool {
        self.view.live.contains(node)
    }

    pub(super) fn disk(&self, uuid: &str) -> Option<&'a Disk> {
        self.view.disks.iter().find(|d| d.uuid == uuid)
    }

    pub(super) fn volume(&self, name: &str) -> Option<&'a Volume> {
        self.view.volumes.iter().find(|v| v.name == name)
    }

    pub(super) fn replicas_of(&self, volume: &str) -> impl Iterator<Item = &'a Replica> {
        self.view
            .replicas
            .iter()
            .filter(move |r| r.spec.volume == volume)
    }

    /// The item explaining that a replica's disk is gone, if it is.
    pub(super) fn disk_gone(&self, uuid: &str) -> Option<ItemRef> {
        let object = format!("disk/{uuid}");
        self.present(DISK_UNAVAILABLE, &object)
            .or_else(|| self.present(DISK_REPLACED, &object))
    }

    /// `NODE_DOWN` of `node`, when the node is down (and registered).
    pub(super) fn node_down(&self, node: &str) -> Option<ItemRef> {
        self.present(NODE_DOWN, &format!("node/{node}"))
    }

    fn nodes(&mut self) {
        for n in &self.view.nodes {
            if self.is_live(&n.name) {
                continue;
            }
            let replicas = self
                .view
                .replicas
                .iter()
                .filter(|r| r.spec.node == n.name)
                .count();
            let attached = self
                .view
                .volumes
                .iter()
                .filter(|v| v.status.attached_node.as_deref() == Some(n.name.as_str()))
                .count();
            self.add(
                NODE_DOWN,
                format!("node/{}", n.name),
                format!(
                    "node {} ({}) is not renewing its liveness lease; {replicas} replica(s) and {attached} attached volume(s) on it",
                    n.name, n.spec.api_address
                ),
                Vec::new(),
            );
        }
    }

    fn disks(&mut self) {
        for d in &self.view.disks {
            let object = format!("disk/{}", d.uuid);
            let at = format!("disk {} at {}:{}", d.uuid, d.spec.node, d.spec.path);
            let detail = if d.status.message.is_empty() {
                String::new()
            } else {
                format!(": {}", d.status.message)
            };
            match d.status.state {
                DiskState::Missing => self.add(
                    DISK_UNAVAILABLE,
                    object,
                    format!("{at} is missing{detail}"),
                    Vec::new(),
                ),
                DiskState::Replaced => {
                    let new = self
                        .view
                        .disks
                        .iter()
                        .find(|o| {
                            o.uuid != d.uuid
                                && o.spec.node == d.spec.node
                                && o.spec.path == d.spec.path
                                && o.status.state == DiskState::Ready
                        })
                        .map(|o| format!("disk {}", o.uuid))
                        .unwrap_or_else(|| "an unregistered disk".into());
                    self.add(
                        DISK_REPLACED,
                        object,
                        format!("{at} was replaced by {new}{detail}"),
                        Vec::new(),
                    );
                }
                DiskState::Ready => {
                    self.disk_failing(d, &object, &at);
                    self.disk_space(d, object, at);
                }
            }
        }
    }

    /// DISK_FAILING: the disk's agent saw I/O errors on it recently.
    fn disk_failing(&mut self, d: &Disk, object: &str, at: &str) {
        let Some(t) = &d.status.failing else { return };
        let when = |s: u64| vigil_model::time::rfc3339(s, 0);
        self.add(
            DISK_FAILING,
            object.to_string(),
            format!(
                "{at} returns I/O errors since {} ({} error(s), newest at {}: {}); no new replicas are placed on it",
                when(t.since_unix),
                t.errors,
                when(t.last_unix),
                t.message
            ),
            Vec::new(),
        );
    }

    /// DISK_FULL: free < max(reserved, 5% of capacity), or writes failed
    /// with ENOSPC recently (free space can look fine right after: the
    /// failed writes gave it back); DISK_NEARLY_FULL: free < 15% of
    /// capacity.
    fn disk_space(&mut self, d: &Disk, object: String, at: String) {
        let cap = d.status.capacity_bytes;
        if cap == 0 {
            return;
        }
        let free = d.status.available_bytes;
        let floor = d.spec.reserved_bytes.max(cap / 20);
        let human = vigil_engine::size::human;
        let usage = format!(
            "{at}: {} free of {} ({}%)",
            human(free),
            human(cap),
            free.saturating_mul(100) / cap
        );
        if let Some(t) = &d.status.no_space {
            self.add(
                DISK_FULL,
                object,
                format!(
                    "{usage}; writes failed with no space left since {} ({} error(s), newest: {})",
                    vigil_model::time::rfc3339(t.since_unix, 0),
                    t.errors,
                    t.message
                ),
                Vec::new(),
            );
        } else if free < floor {
            self.add(
                DISK_FULL,
                object,
                format!(
                    "{usage}, below its floor of {} (the larger of the reservation and 5%)",
                    human(floor)
                ),
                Vec::new(),
            );
        } else if free < cap.saturating_mul(15) / 100 {
            self.add(
                DISK_NEARLY_FULL,
                object,
                format!("{usage}, below 15%"),
                Vec::new(),
            );
        }
    }

    fn unschedulable(&mut self) {
        for v in &self.view.volumes {
            if matches!(
                v.status.state,
                VolumeState::Creating | VolumeState::Deleting
            ) {
                continue;
            }
            let have = self.replicas_of(&v.name).count();
            if have >= v.spec.replicas as usize {
                continue;
            }
            let mut notes: Vec<&str> = Vec::new();
            if !v.status.message.is_empty() {
                notes.push(&v.status.message);
            }
            notes.extend(v.status.scheduling.iter().map(String::as_str));
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(": {}", notes.join("; "))
            };
            self.add(
                REPLICA_UNSCHEDULABLE,
                format!("volume/{}", v.name),
                format!(
                    "volume {} has {have} of {} replicas{notes}",
                    v.name, v.spec.replicas
                ),
                Vec::new(),
            );
        }
    }

    fn finish(self) -> Report {
        let view = self.view;
        let mut checks: Vec<Check> = codes::all()
            .iter()
            .filter_map(|info| {
                let items = self.items.get(info.code)?;
                Some(Check {
                    code: info.code.into(),
                    severity: info.severity,
                    summary: info.summary.into(),
                    cause: info.cause.into(),
                    fix: info.fix.into(),
                    items: items.values().cloned().collect(),
                    root: false,
                    muted: view
                        .mutes
                        .iter()
                        .find(|m| m.code == info.code && m.active(view.now_unix))
                        .cloned(),
                })
            })
            .collect();
        checks.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(&b.code)));
        let mut mutes: Vec<_> = view
            .mutes
            .iter()
            .filter(|m| m.active(view.now_unix))
            .cloned()
            .collect();
        mutes.sort_by(|a, b| a.code.cmp(&b.code));
        let mut report = Report {
            status: Status::Ok,
            checks,
            mutes,
            evaluated_unix: view.now_unix,
        };
        report.settle();
        report
    }
}

/// Whether a volume's engine is serving it now, so that its robustness and
/// its replicas' modes are current: attached, to a live node.
pub(super) fn engine_current(ev: &Eval<'_>, v: &Volume) -> bool {
    v.status.state == VolumeState::Attached
        && v.status
            .attached_node
            .as_deref()
            .is_some_and(|n| ev.is_live(n))
}

/// A volume's robustness: the engine's when it is current — made worse
/// when a replica the engine still has RW has damaged files — else from
/// its replicas (see [`usable_replica`]).
pub(super) fn robustness(ev: &Eval<'_>, v: &Volume) -> Robustness {
    let of_count = |n: usize| {
        if n == 0 {
            Robustness::Faulted
        } else if n < v.spec.replicas as usize {
            Robustness::Degraded
        } else {
            Robustness::Healthy
        }
    };
    if engine_current(ev, v) {
        let engine = v.status.robustness;
        if engine == Robustness::Unknown
            || !ev
                .replicas_of(&v.name)
                .any(|r| r.status.mode == ReplicaMode::ReadWrite && r.status.integrity.is_some())
        {
            return engine;
        }
        let whole = ev
            .replicas_of(&v.name)
            .filter(|r| r.status.mode == ReplicaMode::ReadWrite && r.status.integrity.is_none())
            .count();
        return worse(engine, of_count(whole));
    }
    of_count(
        ev.replicas_of(&v.name)
            .filter(|r| usable_replica(ev, r))
            .count(),
    )
}

fn worse(a: Robustness, b: Robustness) -> Robustness {
    let rank = |r| match r {
        Robustness::Faulted => 0,
        Robustness::Degraded => 1,
        Robustness::Healthy | Robustness::Unknown => 2,
    };
    if rank(a) <= rank(b) { a } else { b }
}

/// Without a current engine, a replica counts when its instance runs on a
/// live node, on a disk that is there, with whole files.
pub(super) fn usable_replica(ev: &Eval<'_>, r: &Replica) -> bool {
    r.status.state == vigil_model::InstanceState::Running
        && ev.is_live(&r.spec.node)
        && ev
            .disk(&r.spec.disk)
            .is_none_or(|d| d.status.state == DiskState::Ready)
        && r.status.integrity.is_none()
}
