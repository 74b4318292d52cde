//! The block-device interface between a frontend (NBD) and what it serves
//! (an [`crate::engine::Engine`]). Offsets and lengths are in bytes and may
//! be unaligned; the device handles alignment itself.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;

/// What went wrong with a device request; maps onto an NBD error code.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum DeviceError {
    /// The data could not be read or written (e.g. no RW replica left).
    #[error("I/O error: {0}")]
    Io(String),
    /// The request itself is invalid (out of range, bad length).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The backing store is full.
    #[error("no space left: {0}")]
    NoSpace(String),
    /// The device is read-only or not writable right now.
    #[error("not permitted: {0}")]
    NotPermitted(String),
}

impl DeviceError {
    /// The errno a frontend sends to its client.
    pub fn errno(&self) -> i32 {
        match self {
            DeviceError::Io(_) => libc::EIO,
            DeviceError::InvalidArgument(_) => libc::EINVAL,
            DeviceError::NoSpace(_) => libc::ENOSPC,
            DeviceError::NotPermitted(_) => libc::EPERM,
        }
    }
}

/// A block device that a frontend exports. Requests may arrive concurrently
/// from several connections; the device serialises what must be serialised.
pub trait ExportDevice: Send + Sync + 'static {
    /// Size in bytes (a multiple of 4096).
    fn size(&self) -> u64;
    /// Reads `len` bytes at `offset`.
    fn read(
        &self,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<Bytes, DeviceError>> + Send;
    /// Writes `data` at `offset`; with `fua`, durable before returning.
    fn write(
        &self,
        offset: u64,
        data: Bytes,
        fua: bool,
    ) -> impl Future<Output = Result<(), DeviceError>> + Send;
    /// Makes every completed write durable.
    fn flush(&self) -> impl Future<Output = Result<(), DeviceError>> + Send;
    /// Discards a range; its contents are unspecified until written again.
    fn trim(&self, offset: u64, len: u32) -> impl Future<Output = Result<(), DeviceError>> + Send;
    /// Writes zeroes to a range (may deallocate); with `fua`, durable before returning.
    fn write_zeroes(
        &self,
        offset: u64,
        len: u32,
        fua: bool,
    ) -> impl Future<Output = Result<(), DeviceError>> + Send;
}

/// The set of devices a frontend serves, looked up by export name.
pub trait ExportCatalog: Send + Sync + 'static {
    /// The device type served.
    type Device: ExportDevice;
    /// The device exported under `name`, if any.
    fn lookup(&self, name: &str) -> Option<Arc<Self::Device>>;
    /// Every export name, for NBD_OPT_LIST.
    fn names(&self) -> Vec<String>;
}
