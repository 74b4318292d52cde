//! Property test: on random clusters every placement keeps the hard rules,
//! soft rules are bent only when nothing keeps them, and a short outcome
//! always says why. The rules are re-derived here independently of the
//! scheduler's code, from the model and settings alone.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::testkit::{Cluster, GIB, disk, node, replica, volume};
use super::{Outcome, Placement};
use vigil_model::disk::{DiskState, DiskTrouble};
use vigil_model::volume::DataLocality;
use vigil_model::{Disk, Volume};

/// One generated node: (ready, allow scheduling, evicting, zone 0..=3 with 3
/// meaning none, has the ssd tag, its disks).
type NodeGen = (bool, bool, bool, u8, bool, Vec<DiskGen>);
/// One generated disk: (capacity GiB, available %, reserved GiB, ready,
/// allow scheduling, has the nvme tag, trouble: 0 none, 1 failing (I/O
/// errors), 2 no space, 3 both).
type DiskGen = (u64, u64, u64, bool, bool, bool, u8);

fn disk_gen() -> impl Strategy<Value = DiskGen> {
    (
        1u64..=200,
        0u64..=100,
        0u64..=5,
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.7),
        prop::sample::select(vec![0u8, 0, 0, 0, 0, 1, 2, 3]),
    )
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.1),
        0u8..=3,
        prop::bool::weighted(0.7),
        prop::collection::vec(disk_gen(), 1..=3),
    )
}

fn build(nodes: &[NodeGen]) -> Cluster {
    let mut c = Cluster::new(Vec::new(), Vec::new());
    for (i, (ready, allow, evict, zone, ssd, disks)) in nodes.iter().enumerate() {
        let name = format!("n{i}");
        let zone = ["a", "b", "c"].get(usize::from(*zone)).copied();
        let mut n = node(&name, zone);
        n.ready = *ready;
        n.node.spec.allow_scheduling = *allow;
        n.node.spec.eviction_requested = *evict;
        if *ssd {
            n.node.spec.tags.push("ssd".into());
        }
        c.nodes.push(n);
        for (j, (cap, avail, reserved, ready, allow, nvme, trouble)) in disks.iter().enumerate() {
            let mut d = disk(&format!("d{i}{j}"), &name, *cap);
            d.status.available_bytes = cap * GIB * avail / 100;
            d.spec.reserved_bytes = reserved * GIB;
            d.status.state = if *ready {
                DiskState::Ready
            } else {
                DiskState::Missing
            };
            d.spec.allow_scheduling = *allow;
            if *nvme {
                d.spec.tags.push("nvme".into());
            }
            let t = DiskTrouble {
                since_unix: 1_700_000_000,
                last_unix: 1_700_000_010,
                errors: 3,
                message: "write layer file: Input/output error".into(),
            };
            if trouble & 1 != 0 {
                d.status.failing = Some(t.clone());
            }
            if trouble & 2 != 0 {
                d.status.no_space = Some(t);
            }
            c.disks.push(d);
        }
    }
    c
}

/// The scheduler's inputs re-derived: everything needed to judge one
/// (node, disk) as the next replica's home.
struct Oracle<'a> {
    c: &'a Cluster,
    v: &'a Volume,
    /// (node, disk, size) of every replica, existing and placed so far.
    all: Vec<(String, String, u64)>,
}

impl Oracle<'_> {
    /// How many of the volume's replicas match `f(node, disk)`.
    fn holds(&self, f: impl Fn(&str, &str) -> bool) -> usize {
        self.volume_replicas().filter(|(n, d)| f(n, d)).count()
    }

    /// (node, disk) of the volume's replicas.
    fn volume_replicas(&self) -> impl Iterator<Item = (&str, &str)> {
        self.all
            .iter()
            .zip(self.owners())
            .filter(|(_, owned)| *owned)
            .map(|((n, d, _), _)| (n.as_str(), d.as_str()))
    }

    /// Whether each entry of `all` belongs to the volume.
    fn owners(&self) -> Vec<bool> {
        let existing = self.c.replicas.iter().map(|r| r.spec.volume == self.v.name);
        let placed = self.all.len() - self.c.replicas.len();
        existing.chain(std::iter::repeat_n(true, placed)).collect()
    }

    fn zone(&self, node: &str) -> String {
        let n = self.c.nodes.iter().find(|c| c.node.name == node);
        match n.and_then(|c| c.node.zone()) {
            Some(z) => format!("zone {z}"),
            None => format!("node {node}"),
        }
    }

    /// `Some((shares node, shares zone, shares disk))` when the hard rules
    /// let the next replica go on `disk`.
    fn admits(&self, d: &Disk) -> Option<(bool, bool, bool)> {
        let s = &self.c.settings;
        let c = self.c.nodes.iter().find(|c| c.node.name == d.spec.node)?;
        let n = &c.node;
        let node_ok = c.ready
            && n.spec.allow_scheduling
            && !n.spec.eviction_requested
            && self
                .v
                .spec
                .node_tags
                .iter()
                .all(|t| n.spec.tags.contains(t));
        let disk_ok = d.status.state == DiskState::Ready
            && d.spec.allow_scheduling
            && d.status.failing.is_none()
            && d.status.no_space.is_none()
            && self
                .v
                .spec
                .disk_tags
                .iter()
                .all(|t| d.spec.tags.contains(t));
        let used: u64 = self.all.iter().filter(|r| r.1 == d.uuid).map(|r| r.2).sum();
        let cap = u128::from(d.status.capacity_bytes);
        let usable = cap - u128::from(d.spec.reserved_bytes).min(cap);
        let free = d
            .status
            .available_bytes
            .saturating_sub(d.spec.reserved_bytes);
        let room_ok = u128::from(free) > cap * u128::from(s.minimal_available_percentage()) / 100
            && u128::from(used + self.v.spec.size)
                <= usable * u128::from(s.over_provisioning_percentage()) / 100;
        let zone = self.zone(&n.name);
        let share = (
            self.holds(|rn, _| rn == n.name) > 0,
            self.holds(|rn, _| self.zone(rn) == zone) > 0,
            self.holds(|_, rd| rd == d.uuid) > 0,
        );
        let affinity_ok = (!share.0 || s.node_soft_anti_affinity())
            && (!share.1 || s.zone_soft_anti_affinity())
            && (!share.2 || s.disk_soft_anti_affinity());
        (node_ok && disk_ok && room_ok && affinity_ok).then_some(share)
    }

    fn record(&mut self, p: &Placement) {
        self.all
            .push((p.node.clone(), p.disk.clone(), self.v.spec.size));
    }
}

/// Checks `out` against the rules, replaying its placements in order.
fn check(c: &Cluster, v: &Volume, count: usize, local: Option<&str>, out: &Outcome) {
    let mut o = Oracle {
        c,
        v,
        all: c
            .replicas
            .iter()
            .map(|r| (r.spec.node.clone(), r.spec.disk.clone(), r.spec.size))
            .collect(),
    };
    assert!(out.placed.len() <= count);
    for p in &out.placed {
        let d = c.disks.iter().find(|d| d.uuid == p.disk).unwrap();
        assert_eq!(d.spec.node, p.node, "disk on another node: {p:?}");
        let share = o.admits(d);
        assert!(share.is_some(), "hard rule broken by {p:?}: {out:#?}");
        if v.spec.data_locality == DataLocality::StrictLocal {
            assert_eq!(Some(p.node.as_str()), local);
        }
        if v.spec.data_locality == DataLocality::Disabled {
            // soft rules are bent only when every admissible disk bends them
            let best = c.disks.iter().filter_map(|d| o.admits(d)).min();
            assert_eq!(share, best, "{p:?} bends more than needed: {out:#?}");
        }
        o.record(p);
    }
    if out.placed.len() < count {
        assert!(!out.reasons.is_empty(), "short without reasons: {out:#?}");
        let scope = |d: &&Disk| match (v.spec.data_locality, local) {
            (DataLocality::StrictLocal, Some(l)) => d.spec.node == l,
            (DataLocality::StrictLocal, None) => false,
            _ => true,
        };
        let left = c.disks.iter().filter(scope).find(|d| o.admits(d).is_some());
        assert!(
            left.is_none(),
            "stopped while {left:?} could take one: {out:#?}"
        );
    } else {
        assert!(
            out.reasons.is_empty(),
            "reasons with nothing missing: {out:#?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn placements_keep_the_hard_rules_and_short_outcomes_explain_themselves(
        nodes in prop::collection::vec(node_gen(), 1..=6),
        soft in (any::<bool>(), any::<bool>(), any::<bool>()),
        over in prop::sample::select(vec!["50", "100", "200", "500"]),
        minimal in prop::sample::select(vec!["0", "10", "25", "50"]),
        size_gib in 1u64..=60,
        tags in (prop::bool::weighted(0.3), prop::bool::weighted(0.3)),
        locality in 0u8..3,
        local in any::<prop::sample::Index>(),
        existing in prop::collection::vec((any::<prop::sample::Index>(), 1u64..=80, any::<bool>()), 0..=6),
        count in 0usize..=5,
    ) {
        let mut c = build(&nodes);
        c = c.with_settings(&[
            ("replica-node-level-soft-anti-affinity", if soft.0 { "true" } else { "false" }),
            ("replica-zone-level-soft-anti-affinity", if soft.1 { "true" } else { "false" }),
            ("replica-disk-level-soft-anti-affinity", if soft.2 { "true" } else { "false" }),
            ("storage-over-provisioning-percentage", over),
            ("storage-minimal-available-percentage", minimal),
        ]);
        for (at, gib, mine) in &existing {
            let d = at.get(&c.disks).clone();
            let owner = if *mine { "v1" } else { "other" };
            c.replicas.push(replica(owner, &d.spec.node, &d.uuid, gib * GIB));
        }
        let mut v = volume("v1", size_gib * GIB, 3);
        if tags.0 {
            v.spec.node_tags.push("ssd".into());
        }
        if tags.1 {
            v.spec.disk_tags.push("nvme".into());
        }
        v.spec.data_locality =
            [DataLocality::Disabled, DataLocality::BestEffort, DataLocality::StrictLocal][usize::from(locality)];
        let local = local.get(&c.nodes).node.name.clone();
        let out = c.place(&v, count, Some(&local));
        check(&c, &v, count, Some(&local), &out);
        // the same input always gives the same output
        prop_assert_eq!(&out, &c.place(&v, count, Some(&local)));
    }
}
