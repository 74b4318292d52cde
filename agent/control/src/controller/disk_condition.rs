//! Whether a disk is failing (I/O errors) or out of space (ENOSPC), as its
//! own agent judges it from what it sees: disk errors counted on the
//! replicas it holds there, the faults engines reported for those replicas,
//! and — when there is reason to doubt the disk — a probe write.
//!
//! A pure function of the disk's last status and the evidence, so the
//! rules are tested without a disk. A condition starts at the first error,
//! lasts while errors keep coming, and clears once the disk has gone
//! [`RECOVERY_SECS`] without one and a probe write works again: long
//! enough that a disk failing every few seconds stays marked (the
//! scheduler keeps off it), short enough that a recovered disk takes
//! replicas again within a minute or two.

use std::collections::BTreeMap;

use vigil_model::disk::{DiskStatus, DiskTrouble};

/// Seconds without a new error before a condition clears.
pub const RECOVERY_SECS: u64 = 60;

/// What a probe write (write, fdatasync, remove a small file at the disk's
/// root) gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Not run: nothing suggested the disk was in trouble.
    Skipped,
    Ok,
    /// EIO or any other failure but ENOSPC (or no answer in time).
    Io(String),
    NoSpace(String),
}

/// An engine's fault on a replica of this disk (reasons `io_error` and
/// `no_space` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub no_space: bool,
    pub at_unix: u64,
    pub replica: String,
    pub message: String,
}

/// What the agent sees now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub now: u64,
    /// Disk errors counted so far by each replica open on the disk.
    pub io_errors: BTreeMap<String, u64>,
    pub faults: Vec<Fault>,
    pub probe: Probe,
    /// Free space is below what the scheduler needs, so errors counted
    /// without a reason are taken as ENOSPC rather than EIO.
    pub low_space: bool,
}

/// The disk's conditions after this look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub failing: Option<DiskTrouble>,
    pub no_space: Option<DiskTrouble>,
    pub io_errors_seen: BTreeMap<String, u64>,
}

/// Errors counted since the last look: per replica, what its counter grew
/// by; a counter below what was seen restarted (the replica was reopened),
/// so all of it is new. Replicas gone since do not count.
pub fn new_errors(seen: &BTreeMap<String, u64>, now: &BTreeMap<String, u64>) -> u64 {
    now.iter()
        .map(|(name, &n)| match seen.get(name) {
            Some(&s) if n >= s => n - s,
            _ => n,
        })
        .sum()
}

/// Whether a probe is worth running: new errors were counted, or a
/// condition is set and may have cleared.
pub fn wants_probe(prev: &DiskStatus, io_errors: &BTreeMap<String, u64>) -> bool {
    prev.failing.is_some()
        || prev.no_space.is_some()
        || new_errors(&prev.io_errors_seen, io_errors) > 0
}

/// One piece of evidence for a condition: when, how many errors, what.
struct Seen {
    at: u64,
    errors: u64,
    message: String,
}

/// Applies the evidence to the disk's last status.
pub fn assess(prev: &DiskStatus, ev: &Evidence) -> Assessment {
    let fresh = |at: u64| ev.now.saturating_sub(at) < RECOVERY_SECS;
    let counted = new_errors(&prev.io_errors_seen, &ev.io_errors);
    let mut io: Vec<Seen> = Vec::new();
    let mut full: Vec<Seen> = Vec::new();
    // Pushed first: of evidence at one time the last pushed names the
    // error, and a fault or the probe says more than a count.
    if counted > 0 {
        // The counter does not say which errno it was: ENOSPC when anything
        // else says the disk is full, EIO otherwise.
        let as_full = matches!(ev.probe, Probe::NoSpace(_))
            || ev.low_space
            || ev.faults.iter().any(|f| f.no_space && fresh(f.at_unix));
        let seen = Seen {
            at: ev.now,
            errors: counted,
            message: format!("{counted} disk error(s) on its replicas since the last look"),
        };
        if as_full { &mut full } else { &mut io }.push(seen);
    }
    for f in ev.faults.iter().filter(|f| fresh(f.at_unix)) {
        let seen = Seen {
            at: f.at_unix,
            errors: 0,
            message: format!("replica {}: {}", f.replica, f.message),
        };
        if f.no_space { &mut full } else { &mut io }.push(seen);
    }
    match &ev.probe {
        Probe::Io(m) => io.push(Seen {
            at: ev.now,
            errors: 1,
            message: m.clone(),
        }),
        Probe::NoSpace(m) => full.push(Seen {
            at: ev.now,
            errors: 1,
            message: m.clone(),
        }),
        Probe::Skipped | Probe::Ok => {}
    }
    Assessment {
        failing: next(prev.failing.as_ref(), io, &ev.probe, ev.now),
        no_space: next(prev.no_space.as_ref(), full, &ev.probe, ev.now),
        io_errors_seen: ev
            .io_errors
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| (k.clone(), *n))
            .collect(),
    }
}

/// A condition after new evidence `seen`: started or extended by it, kept
/// while within the recovery window or while the probe still fails,
/// cleared otherwise.
fn next(
    prev: Option<&DiskTrouble>,
    seen: Vec<Seen>,
    probe: &Probe,
    now: u64,
) -> Option<DiskTrouble> {
    // max_by_key keeps the last of equals: the most specific evidence.
    let newest = seen.iter().max_by_key(|s| s.at);
    let Some(newest) = newest else {
        let p = prev?;
        let quiet = now.saturating_sub(p.last_unix) >= RECOVERY_SECS;
        // Clearing needs proof the disk works: a probe that succeeded.
        return (!quiet || *probe != Probe::Ok).then(|| p.clone());
    };
    let errors: u64 = seen.iter().map(|s| s.errors).sum::<u64>().max(1);
    let first = seen.iter().map(|s| s.at).min().unwrap_or(now);
    Some(match prev {
        Some(p) => DiskTrouble {
            since_unix: p.since_unix.min(first),
            last_unix: p.last_unix.max(newest.at),
            errors: p.errors.saturating_add(errors),
            message: if newest.at >= p.last_unix {
                newest.message.clone()
            } else {
                p.message.clone()
            },
        },
        None => DiskTrouble {
            since_unix: first,
            last_unix: newest.at,
            errors,
            message: newest.message.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(now: u64) -> Evidence {
        Evidence {
            now,
            io_errors: BTreeMap::new(),
            faults: Vec::new(),
            probe: Probe::Skipped,
            low_space: false,
        }
    }

    fn apply(prev: &DiskStatus, a: Assessment) -> DiskStatus {
        DiskStatus {
            failing: a.failing,
            no_space: a.no_space,
            io_errors_seen: a.io_errors_seen,
            ..prev.clone()
        }
    }

    #[test]
    fn a_healthy_disk_stays_healthy() {
        let a = assess(&DiskStatus::default(), &ev(100));
        assert_eq!(a.failing, None);
        assert_eq!(a.no_space, None);
    }

    #[test]
    fn counted_errors_mark_it_failing_then_it_clears_after_the_window_with_a_good_probe() {
        let mut e = ev(100);
        e.io_errors.insert("r1".into(), 3);
        assert!(wants_probe(&DiskStatus::default(), &e.io_errors));
        e.probe = Probe::Io("write probe: Input/output error".into());
        let s = apply(&DiskStatus::default(), assess(&DiskStatus::default(), &e));
        let f = s.failing.clone().unwrap();
        assert_eq!((f.since_unix, f.last_unix, f.errors), (100, 100, 4));
        assert_eq!(s.no_space, None);

        // No new errors, but the probe still fails: still failing.
        let mut e = ev(200);
        e.io_errors.insert("r1".into(), 3);
        e.probe = Probe::Io("write probe: Input/output error".into());
        let s = apply(&s, assess(&s, &e));
        assert_eq!(s.failing.as_ref().unwrap().last_unix, 200);

        // Quiet, good probe, but within the window: kept.
        let mut e = ev(230);
        e.io_errors.insert("r1".into(), 3);
        e.probe = Probe::Ok;
        let s = apply(&s, assess(&s, &e));
        assert!(s.failing.is_some());

        // Quiet for the window and the probe works: cleared.
        let mut e = ev(260);
        e.io_errors.insert("r1".into(), 3);
        e.probe = Probe::Ok;
        let s = apply(&s, assess(&s, &e));
        assert_eq!(s.failing, None);
        assert!(!wants_probe(&s, &e.io_errors));
    }

    #[test]
    fn an_engine_fault_marks_it_at_the_fault_time_and_old_faults_do_not() {
        let mut e = ev(110);
        e.faults.push(Fault {
            no_space: false,
            at_unix: 105,
            replica: "v-r-1".into(),
            message: "write layer file: EIO".into(),
        });
        let a = assess(&DiskStatus::default(), &e);
        let f = a.failing.unwrap();
        assert_eq!(f.since_unix, 105);
        assert!(f.message.contains("v-r-1"), "{}", f.message);

        e.now = 105 + RECOVERY_SECS;
        assert_eq!(assess(&DiskStatus::default(), &e).failing, None);
    }

    #[test]
    fn enospc_marks_no_space_not_failing() {
        let mut e = ev(100);
        e.io_errors.insert("r1".into(), 2);
        e.probe = Probe::NoSpace("write probe: No space left on device".into());
        let a = assess(&DiskStatus::default(), &e);
        assert_eq!(a.failing, None);
        assert_eq!(a.no_space.unwrap().errors, 3);

        // Counted errors on a disk that is low on space are ENOSPC.
        let mut e = ev(100);
        e.io_errors.insert("r1".into(), 2);
        e.low_space = true;
        let a = assess(&DiskStatus::default(), &e);
        assert_eq!(a.failing, None);
        assert!(a.no_space.is_some());
    }

    #[test]
    fn a_no_space_condition_stays_while_writes_still_fail() {
        let mut s = DiskStatus::default();
        let mut e = ev(100);
        e.probe = Probe::NoSpace("full".into());
        s = apply(&s, assess(&s, &e));
        let mut e = ev(100 + 10 * RECOVERY_SECS);
        e.probe = Probe::NoSpace("full".into());
        s = apply(&s, assess(&s, &e));
        let n = s.no_space.clone().unwrap();
        assert_eq!(n.since_unix, 100);
        // Space freed: the next quiet look past the window clears it.
        let mut e = ev(100 + 12 * RECOVERY_SECS);
        e.probe = Probe::Ok;
        s = apply(&s, assess(&s, &e));
        assert_eq!(s.no_space, None);
    }

    #[test]
    fn a_reopened_replica_counts_from_zero_and_a_removed_one_is_forgotten() {
        let seen: BTreeMap<String, u64> = [("a".to_string(), 5), ("b".to_string(), 3)].into();
        let now: BTreeMap<String, u64> = [("a".to_string(), 5)].into();
        assert_eq!(new_errors(&seen, &now), 0, "b removed: not an error");
        let now: BTreeMap<String, u64> = [("a".to_string(), 2)].into();
        assert_eq!(new_errors(&seen, &now), 2, "a reopened: its 2 are new");
    }

    #[test]
    fn a_quiet_disk_without_a_probe_keeps_its_condition() {
        let s = DiskStatus {
            failing: Some(DiskTrouble {
                since_unix: 1,
                last_unix: 1,
                errors: 1,
                message: "x".into(),
            }),
            ..DiskStatus::default()
        };
        assert!(assess(&s, &ev(1000)).failing.is_some());
    }

    #[test]
    fn a_disk_object_written_before_these_fields_reads_with_no_condition() {
        let old = r#"{"state":"ready","capacity_bytes":1,"available_bytes":1,"scheduled_bytes":0,"updated_at":0.0}"#;
        let s: DiskStatus = serde_json::from_str(old).unwrap();
        assert!(s.failing.is_none() && s.no_space.is_none() && s.io_errors_seen.is_empty());
        let back = serde_json::to_string(&s).unwrap();
        assert!(
            !back.contains("failing") && !back.contains("io_errors_seen"),
            "{back}"
        );
    }
}
