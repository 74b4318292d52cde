//! An in-memory replica for server tests, with a gate that holds requests
//! and per-offset delays to make responses complete out of order.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::replica::{Checksum, Extent, LayerInfo, ReplicaError, ReplicaInfo, VerifyReport};

use super::super::server::{OpsSource, ReplicaOps};

pub(super) const FAKE_SIZE: u64 = 1 << 20;

pub(super) struct FakeReplica {
    data: Mutex<Vec<u8>>,
    generation: AtomicU64,
    in_sync_generation: AtomicU64,
    /// Requests wait here while the gate is closed.
    gate: Mutex<bool>,
    gate_cv: Condvar,
    /// Requests currently waiting at (or past) the gate.
    pub entered: AtomicUsize,
    /// Delay reads and writes by (offset / 4096) % 8 milliseconds.
    jitter: bool,
}

impl FakeReplica {
    pub(super) fn new() -> FakeReplica {
        FakeReplica {
            data: Mutex::new(vec![0; FAKE_SIZE as usize]),
            generation: AtomicU64::new(0),
            in_sync_generation: AtomicU64::new(0),
            gate: Mutex::new(true),
            gate_cv: Condvar::new(),
            entered: AtomicUsize::new(0),
            jitter: false,
        }
    }

    pub(super) fn jittery() -> FakeReplica {
        FakeReplica {
            jitter: true,
            ..FakeReplica::new()
        }
    }

    pub(super) fn set_gate(&self, open: bool) {
        *self.gate.lock().unwrap() = open;
        self.gate_cv.notify_all();
    }

    fn enter(&self, offset: u64) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut open = self.gate.lock().unwrap();
        while !*open {
            open = self.gate_cv.wait(open).unwrap();
        }
        drop(open);
        if self.jitter {
            std::thread::sleep(Duration::from_millis(7 - (offset / 4096) % 8));
        }
    }

    fn range(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, ReplicaError> {
        if !offset.is_multiple_of(4096)
            || !len.is_multiple_of(4096)
            || offset.checked_add(len).is_none_or(|e| e > FAKE_SIZE)
        {
            return Err(ReplicaError::InvalidArgument(format!(
                "bad range {offset}+{len}"
            )));
        }
        Ok(offset as usize..(offset + len) as usize)
    }
}

fn layer(name: &str) -> LayerInfo {
    LayerInfo {
        name: name.to_string(),
        parent: None,
        size: FAKE_SIZE,
        created_unix: 1_700_000_000,
        user_created: true,
        labels: BTreeMap::new(),
        read_only: true,
        checksum: None,
        allocated_bytes: 0,
    }
}

impl ReplicaOps for FakeReplica {
    fn claim(&self, _epoch: u64) -> Result<(), ReplicaError> {
        Ok(())
    }
    fn admit(&self, _epoch: u64) -> Result<crate::replica::Admission<'_>, ReplicaError> {
        Ok(crate::replica::Admission::unfenced())
    }
    fn epoch(&self) -> u64 {
        0
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReplicaError> {
        self.enter(offset);
        let r = self.range(offset, buf.len() as u64)?;
        buf.copy_from_slice(&self.data.lock().unwrap()[r]);
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), ReplicaError> {
        self.enter(offset);
        let r = self.range(offset, data.len() as u64)?;
        self.data.lock().unwrap()[r].copy_from_slice(data);
        Ok(())
    }
    fn trim(&self, offset: u64, len: u64) -> Result<(), ReplicaError> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), ReplicaError> {
        let r = self.range(offset, len)?;
        self.data.lock().unwrap()[r].fill(0);
        Ok(())
    }
    fn flush(&self) -> Result<(), ReplicaError> {
        self.enter(0);
        Ok(())
    }
    fn bump_generation(&self) -> Result<u64, ReplicaError> {
        Ok(self.generation.fetch_add(1, Ordering::SeqCst) + 1)
    }
    fn snapshot(
        &self,
        name: &str,
        user_created: bool,
        labels: BTreeMap<String, String>,
    ) -> Result<LayerInfo, ReplicaError> {
        if name == "exists" {
            return Err(ReplicaError::AlreadyExists(name.into()));
        }
        Ok(LayerInfo {
            user_created,
            labels,
            ..layer(name)
        })
    }
    fn remove_snapshot(&self, name: &str) -> Result<(), ReplicaError> {
        Err(ReplicaError::NotFound(format!("snapshot {name}")))
    }
    fn revert(&self, _name: &str) -> Result<(), ReplicaError> {
        Ok(())
    }
    fn info(&self) -> ReplicaInfo {
        ReplicaInfo {
            size: FAKE_SIZE,
            revision: 3,
            epoch: 0,
            generation: self.generation.load(Ordering::SeqCst),
            in_sync_generation: self.in_sync_generation.load(Ordering::SeqCst),
            chain: vec![
                layer("s1"),
                LayerInfo {
                    parent: Some("s1".into()),
                    read_only: false,
                    ..layer("head")
                },
            ],
            direct_io: false,
        }
    }
    fn verify(&self) -> Result<VerifyReport, ReplicaError> {
        Ok(VerifyReport {
            layers_checked: 2,
            problems: vec![],
        })
    }
    fn layer_extents(&self, _layer: &str) -> Result<Vec<Extent>, ReplicaError> {
        Ok(vec![Extent {
            offset: 0,
            len: 8192,
        }])
    }
    fn read_layer(&self, _layer: &str, offset: u64, buf: &mut [u8]) -> Result<(), ReplicaError> {
        self.read(offset, buf)
    }
    fn layer_checksum(&self, layer: &str) -> Result<Checksum, ReplicaError> {
        Ok(Checksum {
            method: "fake-v1".into(),
            value: format!("{:x}", layer.len()),
        })
    }
    fn stage_layer(&self, _info: &LayerInfo) -> Result<(), ReplicaError> {
        Ok(())
    }
    fn write_staged(&self, layer: &str, _offset: u64, _data: &[u8]) -> Result<(), ReplicaError> {
        if layer == "panic" {
            panic!("fake replica asked to panic");
        }
        Ok(())
    }
    fn set_revision(&self, _revision: u64) -> Result<(), ReplicaError> {
        Ok(())
    }
    fn join_generation(&self, generation: u64) -> Result<(), ReplicaError> {
        self.in_sync_generation.store(generation, Ordering::SeqCst);
        Ok(())
    }
    fn install_chain(&self, layers: &[LayerInfo]) -> Result<(), ReplicaError> {
        if layers.is_empty() {
            return Err(ReplicaError::InvalidArgument("empty chain".into()));
        }
        Ok(())
    }
}

/// Replicas by name; tests may remove or replace them while serving.
#[derive(Default)]
pub(super) struct FakeSource {
    pub replicas: Mutex<HashMap<String, Arc<dyn ReplicaOps>>>,
}

impl FakeSource {
    pub(super) fn with(name: &str, replica: Arc<FakeReplica>) -> Arc<FakeSource> {
        let s = FakeSource::default();
        s.replicas
            .lock()
            .unwrap()
            .insert(name.to_string(), replica as Arc<dyn ReplicaOps>);
        Arc::new(s)
    }
}

impl OpsSource for FakeSource {
    fn lookup(&self, name: &str) -> Option<Arc<dyn ReplicaOps>> {
        self.replicas.lock().unwrap().get(name).cloned()
    }
}
