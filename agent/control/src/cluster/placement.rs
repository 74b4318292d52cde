//! Turning the scheduler's placements into one transaction: the new
//! replica objects (each `Expect::Absent`) and every chosen disk rewritten
//! with its new scheduled bytes (compare-and-swap on the version read), so
//! two agents that placed on the same disk from the same reading cannot
//! both commit — one loses and schedules again. Used by volume create and
//! by the controller that replaces failed replicas.

use std::collections::BTreeMap;

use super::{put_op, update_op};
use crate::scheduler::Placement;
use vigil_model::disk::Disk;
use vigil_model::replica::ReplicaSpec;
use vigil_model::{Replica, Versioned, Volume};
use vigil_store::{Expect, Op};

/// A new replica's name: `<volume>-r-<8 hex>` (also its directory name).
pub fn replica_name(volume: &str) -> String {
    format!("{volume}-r-{:08x}", rand::random::<u32>())
}

/// True for names [`replica_name`] makes: only directories with such names
/// are ever discarded as orphans (replicas made with the low-level
/// `vigil replica create` have no object and are never touched).
pub fn is_managed_name(name: &str) -> bool {
    name.rsplit_once("-r-").is_some_and(|(volume, hex)| {
        !volume.is_empty()
            && hex.len() == 8
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The operations that create replicas of `volume` at `placed`, given the
/// disks and every replica as read.
pub fn ops(
    volume: &Volume,
    placed: &[Placement],
    disks: &[Versioned<Disk>],
    replicas: &[Replica],
) -> (Vec<Op>, Vec<Replica>) {
    let mut ops = Vec::new();
    let mut new_replicas = Vec::new();
    let mut added: BTreeMap<&str, u64> = BTreeMap::new();
    for p in placed {
        let r = Replica::new(
            replica_name(&volume.name),
            ReplicaSpec {
                volume: volume.name.clone(),
                node: p.node.clone(),
                disk: p.disk.clone(),
                size: volume.spec.size,
            },
        );
        ops.push(put_op(&r, Expect::Absent));
        *added.entry(p.disk.as_str()).or_default() += volume.spec.size;
        new_replicas.push(r);
    }
    for (uuid, add) in added {
        if let Some(d) = disks.iter().find(|d| d.object.uuid == uuid) {
            let mut nd = d.clone();
            nd.object.status.scheduled_bytes = replicas
                .iter()
                .filter(|r| r.spec.disk == uuid)
                .map(|r| r.spec.size)
                .sum::<u64>()
                + add;
            ops.push(update_op(&nd));
        }
    }
    (ops, new_replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_generated_names_are_managed() {
        assert!(is_managed_name(&replica_name("vol-1")));
        assert!(is_managed_name("a-r-0123abcd"));
        for n in [
            "rb-r1",
            "a-r-0123abcg",
            "a-r-0123abc",
            "-r-01234567",
            "plain",
        ] {
            assert!(!is_managed_name(n), "{n}");
        }
    }
}
