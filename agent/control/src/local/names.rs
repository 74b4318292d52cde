//! A set of names shared between tasks (engines the controllers started).

/// A set of names shared between tasks.
#[derive(Default)]
pub struct NameSet(std::sync::Mutex<std::collections::BTreeSet<String>>);

impl NameSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
    pub fn insert(&self, name: &str) {
        self.lock().insert(name.to_string());
    }
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }
    pub fn contains(&self, name: &str) -> bool {
        self.lock().contains(name)
    }
}
