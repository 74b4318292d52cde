//! Comparing replicas' layer checksums: which replicas take part, and on
//! which layer a replica differs from a strict majority. Pure: a cluster
//! snapshot in, disagreements out. The periodic computation and what is
//! done about a disagreement are the integrity controller's.

use std::collections::BTreeMap;

use vigil_model::replica::{IntegrityKind, IntegrityProblem, LayerSum, ReplicaMode};
use vigil_model::{InstanceState, Replica, Volume, VolumeState};

/// How the message of a problem found by comparison starts: the file check
/// cannot see it, so it does not clear it (only a reset does).
pub const MISMATCH: &str = "checksum differs from the majority";

/// True for a problem recorded by the comparison.
pub fn found_by_checksums(p: &IntegrityProblem) -> bool {
    p.kind == IntegrityKind::Corrupt && p.message.starts_with(MISMATCH)
}

/// Whether `r`'s recorded checksums take part in the comparison: it runs,
/// no damage is known, it holds the data (not an empty reset copy waiting
/// for its rebuild) and the engine has it RW (the last engine, while the
/// volume is detached; never attached counts too).
pub fn participates(r: &Replica, vol: &Volume) -> bool {
    let st = &r.status;
    st.layer_checksums.is_some()
        && st.state == InstanceState::Running
        && st.integrity.is_none()
        && (st.reset_unix == 0 || st.verified_unix >= st.reset_unix)
        && match vol.status.state {
            VolumeState::Attached => st.mode == ReplicaMode::ReadWrite,
            VolumeState::Detached => st.mode.is_rw_or_unreported(),
            _ => false,
        }
}

/// One layer on which the reporting replicas disagree.
pub struct Disagreement<'a> {
    pub layer: String,
    /// The checksum a strict majority gave, if there is one.
    pub majority: Option<String>,
    /// Replicas that gave it.
    pub agreeing: usize,
    /// Every replica's checksum of the layer.
    pub sums: Vec<(&'a Replica, &'a LayerSum)>,
}

/// Compares the layers of the replicas of `vol` that take part. Only
/// reports with the same set of layers are compared: a snapshot taken,
/// removed (merged into its child) or reverted between two computations
/// legitimately changes a layer.
pub fn compare<'a>(
    replicas: impl Iterator<Item = &'a Replica>,
    vol: &Volume,
) -> Vec<Disagreement<'a>> {
    let mut groups: BTreeMap<Vec<&'a str>, Vec<&'a Replica>> = BTreeMap::new();
    for r in replicas.filter(|r| participates(r, vol)) {
        let Some(lc) = &r.status.layer_checksums else {
            continue;
        };
        groups
            .entry(lc.layers.keys().map(String::as_str).collect())
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for (layers, members) in groups.into_iter().filter(|(_, m)| m.len() >= 2) {
        for layer in layers {
            let sums: Vec<(&Replica, &LayerSum)> = members
                .iter()
                .filter_map(|r| {
                    let s = r.status.layer_checksums.as_ref()?.layers.get(layer)?;
                    Some((*r, s))
                })
                .collect();
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for (_, s) in &sums {
                *counts.entry(s.checksum.as_str()).or_default() += 1;
            }
            if counts.len() < 2 {
                continue;
            }
            let (top, n) = counts
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(c, n)| (c.to_string(), *n))
                .unwrap_or_default();
            out.push(Disagreement {
                layer: layer.to_string(),
                majority: (n * 2 > sums.len()).then_some(top),
                agreeing: n,
                sums,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use vigil_model::replica::{LayerChecksums, ReplicaSpec};
    use vigil_model::volume::{DataLocality, Robustness, VolumeSpec, VolumeStatus};

    fn volume() -> Volume {
        Volume {
            name: "v".into(),
            spec: VolumeSpec {
                size: 1 << 30,
                replicas: 3,
                data_locality: DataLocality::Disabled,
                node: Some("n1".into()),
                node_tags: vec![],
                disk_tags: vec![],
                created_at: 0.0,
            },
            status: VolumeStatus {
                state: VolumeState::Attached,
                robustness: Robustness::Healthy,
                attached_node: Some("n1".into()),
                endpoint: String::new(),
                message: String::new(),
                scheduling: vec![],
                transitions: 0,
                migration: None,
                maintenance: None,
                fenced: None,
                writes_blocked: String::new(),
            },
        }
    }

    /// A RW replica reporting `layers` as (name, checksum).
    fn reporting(name: &str, layers: &[(&str, &str)]) -> Replica {
        let mut r = Replica::new(
            name.into(),
            ReplicaSpec {
                volume: "v".into(),
                node: name.into(),
                disk: "d".into(),
                size: 1 << 30,
            },
        );
        r.status.state = InstanceState::Running;
        r.status.mode = ReplicaMode::ReadWrite;
        r.status.layer_checksums = Some(LayerChecksums {
            computed_unix: 1,
            layers: layers
                .iter()
                .map(|(l, c)| {
                    (
                        l.to_string(),
                        LayerSum {
                            checksum: c.to_string(),
                            file: format!("/d/{name}/volume-snap-{l}.img"),
                        },
                    )
                })
                .collect(),
        });
        r
    }

    #[test]
    fn the_replica_that_differs_from_a_strict_majority_is_named() {
        let rs = [
            reporting("a", &[("s1", "x"), ("s2", "y")]),
            reporting("b", &[("s1", "x"), ("s2", "y")]),
            reporting("c", &[("s1", "x"), ("s2", "BAD")]),
        ];
        let d = compare(rs.iter(), &volume());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].layer, "s2");
        assert_eq!(d[0].majority.as_deref(), Some("y"));
        assert_eq!(d[0].agreeing, 2);
        let odd: Vec<&str> = d[0]
            .sums
            .iter()
            .filter(|(_, s)| s.checksum != "y")
            .map(|(r, s)| {
                assert_eq!(s.file, "/d/c/volume-snap-s2.img");
                r.name.as_str()
            })
            .collect();
        assert_eq!(odd, ["c"]);
    }

    #[test]
    fn two_that_disagree_have_no_majority() {
        let rs = [
            reporting("a", &[("s1", "x")]),
            reporting("b", &[("s1", "z")]),
        ];
        let d = compare(rs.iter(), &volume());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].majority, None);
    }

    #[test]
    fn only_sound_rw_replicas_with_the_same_layers_are_compared() {
        let mut err = reporting("c", &[("s1", "BAD")]);
        err.status.mode = ReplicaMode::Error;
        let mut damaged = reporting("d", &[("s1", "BAD")]);
        damaged.status.integrity = Some(IntegrityProblem {
            kind: IntegrityKind::Missing,
            file: "f".into(),
            message: "m".into(),
            found_unix: 1,
        });
        let mut unverified = reporting("e", &[("s1", "BAD")]);
        unverified.status.reset_unix = 5;
        let rs = [
            reporting("a", &[("s1", "x")]),
            reporting("b", &[("s1", "x")]),
            err,
            damaged,
            unverified,
            // Computed before s1 was merged into s2: not comparable.
            reporting("f", &[("s1", "OLD"), ("s2", "q")]),
        ];
        assert!(compare(rs.iter(), &volume()).is_empty());
    }

    #[test]
    fn a_mismatch_survives_the_file_check_but_not_other_problems() {
        let p = |kind, message: &str| IntegrityProblem {
            kind,
            file: "f".into(),
            message: message.into(),
            found_unix: 1,
        };
        assert!(found_by_checksums(&p(
            IntegrityKind::Corrupt,
            &format!("{MISMATCH}: layer s1 gives a, 2 of 3 replicas give b")
        )));
        assert!(!found_by_checksums(&p(
            IntegrityKind::Corrupt,
            "layer s1: metadata"
        )));
        assert!(!found_by_checksums(&p(IntegrityKind::Missing, MISMATCH)));
    }
}
