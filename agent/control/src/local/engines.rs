//! The engines running on this agent, by volume name (served over NBD
//! through `frontend::Frontend`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use vigil_engine::engine::Engine;

/// Engines by volume name.
#[derive(Default)]
pub struct EngineSet {
    running: Mutex<BTreeMap<String, Arc<Engine>>>,
}

impl EngineSet {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Engine>>> {
        match self.running.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The engine of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Engine>> {
        self.lock().get(name).cloned()
    }

    /// Every engine.
    pub fn all(&self) -> Vec<Arc<Engine>> {
        self.lock().values().cloned().collect()
    }

    /// Registers an engine; false when the name is taken.
    pub fn insert(&self, engine: Arc<Engine>) -> bool {
        let mut running = self.lock();
        if running.contains_key(engine.name()) {
            return false;
        }
        running.insert(engine.name().to_string(), engine);
        true
    }

    /// Every volume name with an engine here.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Removes an engine and stops its background tasks.
    pub fn remove(&self, name: &str) -> Option<Arc<Engine>> {
        let e = self.lock().remove(name)?;
        e.shutdown();
        Some(e)
    }
}
