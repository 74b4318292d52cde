//! Whether a disk has room for one more replica: the two capacity rules
//! (minimal available space and over-provisioning), with the numbers that
//! explain a refusal.

use vigil_engine::size::human;

use vigil_model::Disk;
use vigil_model::settings::Settings;

/// The capacity limits every disk is held to, read once per call from the
/// settings so a call sees one consistent set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// Percent of a disk's usable space (capacity − reserved) that may be
    /// promised to replicas.
    pub over_provisioning: u64,
    /// Percent of a disk's capacity that must stay free, beyond its reserve,
    /// for the disk to take any new replica.
    pub minimal_available: u64,
}

impl Limits {
    pub(super) fn from_settings(settings: &Settings) -> Limits {
        Limits {
            over_provisioning: settings.over_provisioning_percentage(),
            minimal_available: settings.minimal_available_percentage(),
        }
    }
}

/// `value × percent / 100` without overflow (u128 inside, clamped back).
fn percent_of(value: u64, percent: u64) -> u64 {
    let v = u128::from(value) * u128::from(percent) / 100;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Bytes that may be promised to replicas on `disk` in all:
/// (capacity − reserved) × over-provisioning%.
pub(super) fn schedulable_limit(disk: &Disk, limits: Limits) -> u64 {
    let usable = disk
        .status
        .capacity_bytes
        .saturating_sub(disk.spec.reserved_bytes);
    percent_of(usable, limits.over_provisioning)
}

/// `disk d1 (/data/d1)`: how every message names a disk, UUID and path, so
/// the operator can find it on the node.
pub(super) fn disk_label(disk: &Disk) -> String {
    format!("disk {} ({})", disk.uuid, disk.spec.path)
}

/// `Ok(room left before this replica)` when `disk` can take a replica of
/// `size` bytes on top of the `scheduled` bytes already promised there;
/// otherwise why not, with the numbers.
///
/// Two rules, as Longhorn applies them:
/// 1. free space beyond the reserve must exceed minimal-available% of the
///    capacity, or the disk takes nothing new. `available_bytes` is observed
///    free space; a new replica is sparse and does not lower it at once, so
///    placements in one call do not change this rule's outcome.
/// 2. everything promised, this replica included, must fit in
///    (capacity − reserved) × over-provisioning%.
pub(super) fn check_room(
    disk: &Disk,
    scheduled: u64,
    size: u64,
    limits: Limits,
) -> Result<u64, String> {
    check_minimal_available(disk, limits)?;
    let limit = schedulable_limit(disk, limits);
    let room = limit.saturating_sub(scheduled);
    if size <= room {
        return Ok(room);
    }
    Err(format!(
        "{} has {} free ({} of {} scheduled), needs {} at {}% over-provisioning",
        disk_label(disk),
        human(room),
        human(scheduled),
        human(limit),
        human(size),
        limits.over_provisioning,
    ))
}

/// Rule 1 of [`check_room`].
fn check_minimal_available(disk: &Disk, limits: Limits) -> Result<(), String> {
    let capacity = disk.status.capacity_bytes;
    let reserved = disk.spec.reserved_bytes;
    let free = disk.status.available_bytes.saturating_sub(reserved);
    let must_keep = percent_of(capacity, limits.minimal_available);
    if free > must_keep {
        return Ok(());
    }
    let beyond = if reserved > 0 {
        format!(" beyond its {} reserve", human(reserved))
    } else {
        String::new()
    };
    Err(format!(
        "{} has {} available{beyond}, not above the {}% of its {} ({}) that must stay free",
        disk_label(disk),
        human(free),
        limits.minimal_available,
        human(capacity),
        human(must_keep),
    ))
}
