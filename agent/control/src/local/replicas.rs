//! The replicas this agent holds: one directory each under
//! `<disk>/replicas/<name>` on one of the node's disks, opened at start and
//! served to engines in-process or over the replica protocol.
//!
//! A replica whose directory does not open, or opens with a layer file
//! missing, short or unreadable, is not served: it would hand an engine
//! wrong data or fail at the first read of the lost layer. It is kept
//! aside as damaged (naming the file) for the integrity controller to
//! report and reset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use vigil_engine::protocol::ReplicaSource;
use vigil_engine::replica::{Replica, ReplicaError, ReplicaOptions};

use super::disks::LocalDisk;
use vigil_model::replica::IntegrityKind;

/// An open replica and the disk it is on.
#[derive(Clone)]
pub struct HeldReplica {
    pub replica: Arc<Replica>,
    pub disk: String,
    pub dir: PathBuf,
}

/// A replica found damaged when the agent started, and not served.
#[derive(Debug, Clone)]
pub struct DamagedReplica {
    pub dir: PathBuf,
    /// What is wrong, for the replica object's `integrity`.
    pub kind: IntegrityKind,
    /// The file concerned.
    pub file: PathBuf,
    pub message: String,
}

/// The open replicas of this agent, by name.
pub struct ReplicaSet {
    disks: Vec<LocalDisk>,
    open: Mutex<BTreeMap<String, HeldReplica>>,
    damaged: Mutex<BTreeMap<String, DamagedReplica>>,
}

/// Why a replica could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("a replica named {0:?} already exists on this node")]
    Exists(String),
    #[error("disk {0} is not on this node")]
    NoDisk(String),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

impl ReplicaSet {
    /// Opens every replica on every disk and checks its files. A replica
    /// that fails to open or whose files are damaged is logged with the
    /// reason, left on disk and kept aside as damaged (not served).
    pub fn open_all(disks: &[LocalDisk]) -> std::io::Result<ReplicaSet> {
        let mut open = BTreeMap::new();
        let mut damaged = BTreeMap::new();
        for disk in disks {
            let dir = disk.replica_dir();
            std::fs::create_dir_all(&dir)?;
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if !entry.file_type()?.is_dir() || vigil_engine::name::check_name(&name).is_err() {
                    continue;
                }
                match open_checked(&entry.path()) {
                    Ok(r) => {
                        tracing::info!(replica = %name, disk = %disk.uuid, "replica opened");
                        open.insert(
                            name,
                            HeldReplica {
                                replica: Arc::new(r),
                                disk: disk.uuid.clone(),
                                dir: entry.path(),
                            },
                        );
                    }
                    Err((kind, file, message)) => {
                        tracing::error!(replica = %name, file = %file.display(), kind = kind.as_str(), error = %message, "replica damaged; not served, left on disk");
                        damaged.insert(
                            name,
                            DamagedReplica {
                                dir: entry.path(),
                                kind,
                                file,
                                message,
                            },
                        );
                    }
                }
            }
        }
        Ok(ReplicaSet {
            disks: disks.to_vec(),
            open: Mutex::new(open),
            damaged: Mutex::new(damaged),
        })
    }

    /// The replica named `name` if it was found damaged at start.
    pub fn damaged(&self, name: &str) -> Option<DamagedReplica> {
        lock_map(&self.damaged).get(name).cloned()
    }

    /// The replicas found damaged at start (not served), by name.
    pub fn all_damaged(&self) -> Vec<(String, DamagedReplica)> {
        lock_map(&self.damaged)
            .iter()
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect()
    }

    /// Deletes replica `name`'s directory on disk `disk` — open, damaged or
    /// neither — and creates it again empty with `size`: the reset of a
    /// damaged replica before a full rebuild. The old `Replica` (if an
    /// engine still holds it) keeps its unlinked files until dropped.
    pub fn reset(&self, name: &str, size: u64, disk: &str) -> Result<Arc<Replica>, CreateError> {
        let disk = self
            .disks
            .iter()
            .find(|d| d.uuid == disk)
            .ok_or_else(|| CreateError::NoDisk(disk.to_string()))?;
        let mut open = self.lock();
        let dir = disk.replica_dir().join(name);
        open.remove(name);
        lock_map(&self.damaged).remove(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CreateError::Replica(ReplicaError::Io {
                    op: "delete damaged replica directory",
                    path: dir,
                    source,
                }));
            }
        }
        let r = Arc::new(Replica::create(&dir, size, &ReplicaOptions::default())?);
        open.insert(
            name.to_string(),
            HeldReplica {
                replica: Arc::clone(&r),
                disk: disk.uuid.clone(),
                dir,
            },
        );
        Ok(r)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, HeldReplica>> {
        lock_map(&self.open)
    }

    /// This node's disks.
    pub fn disks(&self) -> &[LocalDisk] {
        &self.disks
    }

    /// The replica named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Replica>> {
        self.lock().get(name).map(|h| Arc::clone(&h.replica))
    }

    /// The replica named `name` with its disk.
    pub fn held(&self, name: &str) -> Option<HeldReplica> {
        self.lock().get(name).cloned()
    }

    /// Every replica, by name.
    pub fn all_held(&self) -> Vec<(String, HeldReplica)> {
        self.lock()
            .iter()
            .map(|(n, h)| (n.clone(), h.clone()))
            .collect()
    }

    /// Every open replica, by name.
    pub fn all(&self) -> Vec<(String, Arc<Replica>)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(&v.replica)))
            .collect()
    }

    /// Creates a replica on the disk with UUID `disk` (the first disk when
    /// `None`).
    pub fn create(
        &self,
        name: &str,
        size: u64,
        disk: Option<&str>,
    ) -> Result<Arc<Replica>, CreateError> {
        let disk = match disk {
            Some(uuid) => self.disks.iter().find(|d| d.uuid == uuid),
            None => self.disks.first(),
        }
        .ok_or_else(|| CreateError::NoDisk(disk.unwrap_or("(none)").to_string()))?;
        let mut open = self.lock();
        let dir = disk.replica_dir().join(name);
        if open.contains_key(name) || dir.exists() {
            return Err(CreateError::Exists(name.to_string()));
        }
        let r = Arc::new(Replica::create(&dir, size, &ReplicaOptions::default())?);
        open.insert(
            name.to_string(),
            HeldReplica {
                replica: Arc::clone(&r),
                disk: disk.uuid.clone(),
                dir,
            },
        );
        Ok(r)
    }

    /// Forgets and deletes a replica's directory; false when there is no
    /// such replica.
    pub fn delete(&self, name: &str) -> std::io::Result<bool> {
        let held = self.lock().remove(name);
        let dir = match held {
            Some(h) => h.dir,
            None => match lock_map(&self.damaged).remove(name) {
                Some(d) => d.dir,
                None => return Ok(false),
            },
        };
        std::fs::remove_dir_all(&dir)?;
        Ok(true)
    }
}

fn lock_map<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Opens the replica in `dir` and checks its files (present, sized,
/// metadata consistent; no data read). On failure: what is wrong, the
/// file, and the message.
fn open_checked(dir: &Path) -> Result<Replica, (IntegrityKind, PathBuf, String)> {
    let r = Replica::open(dir, &ReplicaOptions::default()).map_err(|e| {
        let (kind, file) = match &e {
            ReplicaError::Io { path, source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                (IntegrityKind::Missing, path.clone())
            }
            ReplicaError::Io { path, .. } => (IntegrityKind::Unreadable, path.clone()),
            // The chain names a file that is not there.
            ReplicaError::Corrupt { path, .. } if !path.exists() => {
                (IntegrityKind::Missing, path.clone())
            }
            ReplicaError::Corrupt { path, .. } => (IntegrityKind::Corrupt, path.clone()),
            _ => (IntegrityKind::Unreadable, dir.to_path_buf()),
        };
        (kind, file, format!("cannot open: {e}"))
    })?;
    let report = r
        .check_files()
        .map_err(|e| (IntegrityKind::Unreadable, dir.to_path_buf(), e.to_string()))?;
    match report.problems.into_iter().next() {
        None => Ok(r),
        Some(p) => Err((
            problem_kind(&p.kind),
            p.file,
            format!("layer {}: {}", p.layer, p.detail),
        )),
    }
}

/// The integrity kind of a chain problem kind (`missing`, `size`, ...).
pub fn problem_kind(kind: &str) -> IntegrityKind {
    match kind {
        "missing" => IntegrityKind::Missing,
        "size" => IntegrityKind::Truncated,
        _ => IntegrityKind::Corrupt,
    }
}

impl ReplicaSource for ReplicaSet {
    fn replica(&self, name: &str) -> Option<Arc<Replica>> {
        self.get(name)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;

    fn disk(root: &Path) -> LocalDisk {
        LocalDisk {
            uuid: "d1".into(),
            path: root.to_path_buf(),
            fresh: false,
        }
    }

    /// A replica `r` with snapshot s1 holding data, closed again.
    fn make(d: &LocalDisk) -> PathBuf {
        let set = ReplicaSet::open_all(std::slice::from_ref(d)).unwrap();
        let r = set.create("r", 1 << 20, Some("d1")).unwrap();
        r.write(0, &vec![7u8; 8192]).unwrap();
        r.snapshot("s1", true, BTreeMap::new()).unwrap();
        r.flush().unwrap();
        d.replica_dir().join("r").join("volume-snap-s1.img")
    }

    #[test]
    fn a_replica_with_a_missing_layer_is_not_served_and_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let d = disk(tmp.path());
        let s1 = make(&d);
        std::fs::remove_file(&s1).unwrap();
        let set = ReplicaSet::open_all(std::slice::from_ref(&d)).unwrap();
        assert!(set.get("r").is_none(), "a damaged replica is served");
        assert!(set.replica("r").is_none());
        let dmg = set.damaged("r").unwrap();
        assert_eq!(dmg.kind, IntegrityKind::Missing);
        assert_eq!(dmg.file, s1);

        // Reset: empty again, served, no longer damaged.
        let r = set.reset("r", 1 << 20, "d1").unwrap();
        assert_eq!(r.info().chain.len(), 1);
        assert!(set.get("r").is_some());
        assert!(set.damaged("r").is_none());
    }

    #[test]
    fn a_truncated_layer_is_found_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        let d = disk(tmp.path());
        let s1 = make(&d);
        let f = std::fs::OpenOptions::new().write(true).open(&s1).unwrap();
        f.set_len(4096).unwrap();
        let set = ReplicaSet::open_all(std::slice::from_ref(&d)).unwrap();
        assert!(set.get("r").is_none());
        let dmg = set.damaged("r").unwrap();
        assert_eq!(dmg.kind, IntegrityKind::Truncated, "{dmg:?}");
        assert_eq!(dmg.file, s1);
        assert!(set.delete("r").unwrap());
        assert!(!s1.parent().unwrap().exists());
    }
}
