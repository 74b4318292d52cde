//! Small filesystem helpers: error context, crash-safe file replacement,
//! directory fsync, lock helpers that shrug off poisoning.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{ReplicaError, fault};

pub(super) type Result<T> = std::result::Result<T, ReplicaError>;

/// Maps an `io::Error` to [`ReplicaError::Io`] with an operation and a path.
pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ReplicaError {
    let path = path.to_path_buf();
    move |source| ReplicaError::Io { op, path, source }
}

/// A [`ReplicaError::Corrupt`] naming `path`.
pub(super) fn corrupt(path: &Path, detail: impl Into<String>) -> ReplicaError {
    ReplicaError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// `<path>.tmp`: where [`write_atomic`] stages the new content.
pub(super) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(OsString::from).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `data` crash-safely: write `<path>.tmp`, fsync it,
/// rename it over `path`, fsync the directory. After a crash the file holds
/// either the old or the new content, never a mix.
pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    fault::crash_point().map_err(io_err("create temp file", &tmp))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err("create temp file", &tmp))?;
    f.write_all(data).map_err(io_err("write temp file", &tmp))?;
    f.sync_all().map_err(io_err("sync temp file", &tmp))?;
    drop(f);
    fault::crash_point().map_err(io_err("rename temp file", path))?;
    fs::rename(&tmp, path).map_err(io_err("rename temp file", path))?;
    sync_parent(path)
}

/// Fsyncs a directory so renames, creations and unlinks in it are durable.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Fsyncs the directory holding `path`.
pub(super) fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
        _ => sync_dir(Path::new(".")),
    }
}

/// Removes a file; a file that is already gone is fine.
pub(super) fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove file", path)(e)),
    }
}

/// Removes files after a commit: they are unreferenced already, so a
/// failure only leaves a leftover that the next open cleans up.
pub(super) fn remove_leftovers(paths: &[PathBuf]) {
    if fault::crash_point().is_err() {
        return;
    }
    for p in paths {
        if let Err(e) = remove_file_if_exists(p) {
            tracing::warn!(error = %e, "could not remove an unreferenced file; open will retry");
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(super) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Locks a mutex, ignoring poisoning: every critical section leaves the
/// protected state consistent before anything that can panic.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks an `RwLock`, ignoring poisoning.
pub(super) fn rlock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks an `RwLock`, ignoring poisoning.
pub(super) fn wlock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Exclusive access to an `RwLock` owned mutably, ignoring poisoning.
pub(super) fn get_mut<T>(l: &mut RwLock<T>) -> &mut T {
    l.get_mut().unwrap_or_else(PoisonError::into_inner)
}

/// Exclusive access to a `Mutex` owned mutably, ignoring poisoning.
pub(super) fn get_mut_m<T>(m: &mut Mutex<T>) -> &mut T {
    m.get_mut().unwrap_or_else(PoisonError::into_inner)
}
