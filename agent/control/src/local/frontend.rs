//! What the NBD listeners serve: each volume's engine on this node, or,
//! while this node is a live migration's target, the handover export that
//! forwards to the source's engine until the switch (see
//! `vigil_engine::handover`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use vigil_engine::device::{DeviceError, ExportCatalog, ExportDevice};
use vigil_engine::engine::Engine;
use vigil_engine::handover::HandoverDevice;

use super::engines::EngineSet;

/// Migration target exports by volume name.
#[derive(Default)]
pub struct Handovers {
    by_volume: Mutex<BTreeMap<String, Arc<HandoverDevice>>>,
}

impl Handovers {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<HandoverDevice>>> {
        match self.by_volume.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
    pub fn get(&self, volume: &str) -> Option<Arc<HandoverDevice>> {
        self.lock().get(volume).cloned()
    }
    pub fn insert(&self, volume: &str, device: Arc<HandoverDevice>) {
        self.lock().insert(volume.to_string(), device);
    }
    /// Forgets the export; connections that hold it keep it.
    pub fn remove(&self, volume: &str) -> Option<Arc<HandoverDevice>> {
        self.lock().remove(volume)
    }
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

/// The NBD catalog: engines first, then migration target exports.
pub struct Frontend {
    pub engines: Arc<EngineSet>,
    pub handovers: Arc<Handovers>,
}

/// One export as a connection holds it.
pub enum Served {
    Engine(Arc<Engine>),
    Handover(Arc<HandoverDevice>),
}

impl ExportCatalog for Frontend {
    type Device = Served;
    fn lookup(&self, name: &str) -> Option<Arc<Served>> {
        if let Some(e) = self.engines.get(name) {
            return Some(Arc::new(Served::Engine(e)));
        }
        self.handovers
            .get(name)
            .map(|h| Arc::new(Served::Handover(h)))
    }
    fn names(&self) -> Vec<String> {
        let mut names = self.engines.names();
        names.extend(self.handovers.names());
        names.sort();
        names.dedup();
        names
    }
}

impl ExportDevice for Served {
    fn size(&self) -> u64 {
        match self {
            Served::Engine(e) => e.size(),
            Served::Handover(h) => h.size(),
        }
    }
    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, DeviceError> {
        match self {
            Served::Engine(e) => e.read(offset, len).await,
            Served::Handover(h) => h.read(offset, len).await,
        }
    }
    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<(), DeviceError> {
        match self {
            Served::Engine(e) => e.write(offset, data, fua).await,
            Served::Handover(h) => h.write(offset, data, fua).await,
        }
    }
    async fn flush(&self) -> Result<(), DeviceError> {
        match self {
            Served::Engine(e) => e.flush().await,
            Served::Handover(h) => h.flush().await,
        }
    }
    async fn trim(&self, offset: u64, len: u32) -> Result<(), DeviceError> {
        match self {
            Served::Engine(e) => e.trim(offset, len).await,
            Served::Handover(h) => h.trim(offset, len).await,
        }
    }
    async fn write_zeroes(&self, offset: u64, len: u32, fua: bool) -> Result<(), DeviceError> {
        match self {
            Served::Engine(e) => e.write_zeroes(offset, len, fua).await,
            Served::Handover(h) => h.write_zeroes(offset, len, fua).await,
        }
    }
}
