//! The replicas this agent holds: one directory each under
//! `<data-dir>/replicas/<name>`, opened at start and served to engines
//! in-process or over the replica protocol.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use vigil_engine::protocol::ReplicaSource;
use vigil_engine::replica::{Replica, ReplicaError, ReplicaOptions};

/// The open replicas of this agent, by name.
pub struct ReplicaSet {
    dir: PathBuf,
    open: Mutex<BTreeMap<String, Arc<Replica>>>,
}

impl ReplicaSet {
    /// Opens every replica under `dir` (creating `dir` if needed). A replica
    /// that fails to open is logged with the reason and left on disk.
    pub fn open_all(dir: &Path) -> std::io::Result<ReplicaSet> {
        std::fs::create_dir_all(dir)?;
        let mut open = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !entry.file_type()?.is_dir() || vigil_engine::name::check_name(&name).is_err() {
                continue;
            }
            match Replica::open(&entry.path(), &ReplicaOptions::default()) {
                Ok(r) => {
                    tracing::info!(replica = %name, "replica opened");
                    open.insert(name, Arc::new(r));
                }
                Err(e) => {
                    tracing::error!(replica = %name, error = %e, "cannot open replica; left on disk")
                }
            }
        }
        Ok(ReplicaSet {
            dir: dir.to_path_buf(),
            open: Mutex::new(open),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Replica>>> {
        match self.open.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The replica named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Replica>> {
        self.lock().get(name).cloned()
    }

    /// Every replica, by name.
    pub fn all(&self) -> Vec<(String, Arc<Replica>)> {
        self.lock()
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// The directory `name` lives in.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates a replica. `Ok(None)` when the name is taken.
    pub fn create(&self, name: &str, size: u64) -> Result<Option<Arc<Replica>>, ReplicaError> {
        let mut open = self.lock();
        if open.contains_key(name) || self.path_of(name).exists() {
            return Ok(None);
        }
        let r = Arc::new(Replica::create(
            &self.path_of(name),
            size,
            &ReplicaOptions::default(),
        )?);
        open.insert(name.to_string(), Arc::clone(&r));
        Ok(Some(r))
    }

    /// Forgets and deletes a replica's directory.
    pub fn delete(&self, name: &str) -> std::io::Result<bool> {
        let Some(_r) = self.lock().remove(name) else {
            return Ok(false);
        };
        std::fs::remove_dir_all(self.path_of(name))?;
        Ok(true)
    }
}

impl ReplicaSource for ReplicaSet {
    fn replica(&self, name: &str) -> Option<Arc<Replica>> {
        self.get(name)
    }
}
