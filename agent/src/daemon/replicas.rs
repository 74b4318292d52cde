//! The replicas this agent holds: one directory each under
//! `<disk>/replicas/<name>` on one of the node's disks, opened at start and
//! served to engines in-process or over the replica protocol.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use vigil_engine::protocol::ReplicaSource;
use vigil_engine::replica::{Replica, ReplicaError, ReplicaOptions};

use super::disks::LocalDisk;

/// An open replica and the disk it is on.
#[derive(Clone)]
pub struct HeldReplica {
    pub replica: Arc<Replica>,
    pub disk: String,
    pub dir: PathBuf,
}

/// The open replicas of this agent, by name.
pub struct ReplicaSet {
    disks: Vec<LocalDisk>,
    open: Mutex<BTreeMap<String, HeldReplica>>,
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
    /// Opens every replica on every disk. A replica that fails to open is
    /// logged with the reason and left on disk.
    pub fn open_all(disks: &[LocalDisk]) -> std::io::Result<ReplicaSet> {
        let mut open = BTreeMap::new();
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
                match Replica::open(&entry.path(), &ReplicaOptions::default()) {
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
                    Err(e) => {
                        tracing::error!(replica = %name, error = %e, "cannot open replica; left on disk")
                    }
                }
            }
        }
        Ok(ReplicaSet {
            disks: disks.to_vec(),
            open: Mutex::new(open),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, HeldReplica>> {
        match self.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
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
        let Some(held) = self.lock().remove(name) else {
            return Ok(false);
        };
        std::fs::remove_dir_all(&held.dir)?;
        Ok(true)
    }
}

impl ReplicaSource for ReplicaSet {
    fn replica(&self, name: &str) -> Option<Arc<Replica>> {
        self.get(name)
    }
}
