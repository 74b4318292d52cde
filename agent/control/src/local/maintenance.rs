//! The maintenance engines of detached volumes running on this node
//! (`controller::maintenance` starts and stops them).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use vigil_engine::engine::Engine;

/// The maintenance engines running on this agent, by volume name. Never in
/// the NBD catalog (`Agent::engines`).
#[derive(Default)]
pub struct MaintenanceEngines(Mutex<BTreeMap<String, Arc<Engine>>>);

impl MaintenanceEngines {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Engine>>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
    pub fn get(&self, name: &str) -> Option<Arc<Engine>> {
        self.lock().get(name).cloned()
    }
    pub fn insert(&self, engine: Arc<Engine>) {
        self.lock().insert(engine.name().to_string(), engine);
    }
    pub fn remove(&self, name: &str) -> Option<Arc<Engine>> {
        self.lock().remove(name)
    }
    /// Every maintenance engine running here.
    pub fn all(&self) -> Vec<Arc<Engine>> {
        self.lock().values().cloned().collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}
