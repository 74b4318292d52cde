//! An in-memory [`ExportDevice`] and [`ExportCatalog`], for tests, examples
//! and benchmarking the frontend without a replica behind it.
//!
//! Byte-granular (unaligned requests are fine); every operation is durable as
//! soon as it completes, so `flush` only counts calls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::device::{DeviceError, ExportCatalog, ExportDevice};

/// A flat in-memory block device.
#[derive(Debug)]
pub struct MemoryDevice {
    size: u64,
    data: Mutex<Vec<u8>>,
    flushes: AtomicU64,
}

impl MemoryDevice {
    /// A zero-filled device of `size` bytes.
    pub fn new(size: u64) -> Self {
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        MemoryDevice {
            size,
            data: Mutex::new(vec![0; len]),
            flushes: AtomicU64::new(0),
        }
    }

    /// How many times `flush` was called.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// A copy of the device's contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means a panic elsewhere; the bytes are still bytes.
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn range(&self, offset: u64, len: u64) -> Result<std::ops::Range<usize>, DeviceError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(offset as usize..end as usize),
            _ => Err(DeviceError::InvalidArgument(format!(
                "range {offset}+{len} beyond device size {}",
                self.size
            ))),
        }
    }
}

impl ExportDevice for MemoryDevice {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read(&self, offset: u64, len: u32) -> Result<Bytes, DeviceError> {
        let r = self.range(offset, u64::from(len))?;
        Ok(Bytes::copy_from_slice(&self.lock()[r]))
    }

    async fn write(&self, offset: u64, data: Bytes, _fua: bool) -> Result<(), DeviceError> {
        let r = self.range(offset, data.len() as u64)?;
        self.lock()[r].copy_from_slice(&data);
        Ok(())
    }

    async fn flush(&self) -> Result<(), DeviceError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn trim(&self, offset: u64, len: u32) -> Result<(), DeviceError> {
        // Trimmed ranges read back as zeroes (allowed: contents are unspecified).
        let r = self.range(offset, u64::from(len))?;
        self.lock()[r].fill(0);
        Ok(())
    }

    async fn write_zeroes(&self, offset: u64, len: u32, _fua: bool) -> Result<(), DeviceError> {
        let r = self.range(offset, u64::from(len))?;
        self.lock()[r].fill(0);
        Ok(())
    }
}

/// A fixed set of named exports.
#[derive(Debug, Default)]
pub struct MemoryCatalog<D = MemoryDevice> {
    exports: BTreeMap<String, Arc<D>>,
}

impl<D: ExportDevice> MemoryCatalog<D> {
    /// An empty catalog.
    pub fn new() -> Self {
        MemoryCatalog {
            exports: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) an export.
    pub fn insert(&mut self, name: impl Into<String>, device: Arc<D>) {
        self.exports.insert(name.into(), device);
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, name: impl Into<String>, device: Arc<D>) -> Self {
        self.insert(name, device);
        self
    }
}

impl<D: ExportDevice> ExportCatalog for MemoryCatalog<D> {
    type Device = D;

    fn lookup(&self, name: &str) -> Option<Arc<D>> {
        self.exports.get(name).cloned()
    }

    fn names(&self) -> Vec<String> {
        self.exports.keys().cloned().collect()
    }
}
