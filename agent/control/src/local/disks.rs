//! This node's disks: directories given with `--disk`, each identified by
//! the UUID in `vigil-disk.json` at its root. A directory without the file
//! (new, wiped or reformatted) gets a fresh UUID, so the cluster sees a
//! different disk; replicas live under `<disk>/replicas/<name>`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Name of the identity file at a disk's root.
pub const IDENTITY_FILE: &str = "vigil-disk.json";

/// What the identity file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskIdentity {
    pub uuid: String,
    /// Node that first claimed the disk.
    pub node: String,
    /// Unix seconds.
    pub created_at: f64,
}

/// A disk of this node, as opened at start.
#[derive(Debug, Clone)]
pub struct LocalDisk {
    pub uuid: String,
    pub path: PathBuf,
    /// True when the identity file was written now (new or wiped disk).
    pub fresh: bool,
}

#[derive(Debug, Error)]
pub enum DiskError {
    #[error("disk {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "disk {path}: identity file {IDENTITY_FILE} is unreadable ({message}); move it away to re-register the disk as new"
    )]
    BadIdentity { path: PathBuf, message: String },
    #[error("disks {a} and {b} have the same UUID {uuid} (one was copied from the other)")]
    Duplicate {
        a: PathBuf,
        b: PathBuf,
        uuid: String,
    },
}

/// Space on a disk's filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub capacity: u64,
    pub available: u64,
}

impl LocalDisk {
    /// Opens (or initialises) the disk at `path`.
    pub fn open(path: &Path, node: &str) -> Result<LocalDisk, DiskError> {
        let io = |what| {
            let path = path.to_path_buf();
            move |source| DiskError::Io { path, what, source }
        };
        std::fs::create_dir_all(path.join("replicas")).map_err(io("create directory"))?;
        let id_path = path.join(IDENTITY_FILE);
        match std::fs::read(&id_path) {
            Ok(bytes) => {
                let id: DiskIdentity =
                    serde_json::from_slice(&bytes).map_err(|e| DiskError::BadIdentity {
                        path: path.to_path_buf(),
                        message: e.to_string(),
                    })?;
                if uuid::Uuid::parse_str(&id.uuid).is_err() {
                    return Err(DiskError::BadIdentity {
                        path: path.to_path_buf(),
                        message: format!("{:?} is not a UUID", id.uuid),
                    });
                }
                Ok(LocalDisk {
                    uuid: id.uuid,
                    path: path.to_path_buf(),
                    fresh: false,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = DiskIdentity {
                    uuid: uuid::Uuid::new_v4().to_string(),
                    node: node.to_string(),
                    created_at: vigil_model::now_unix(),
                };
                let bytes = serde_json::to_vec_pretty(&id).unwrap_or_default();
                write_durably(&id_path, &bytes).map_err(io("write identity file"))?;
                Ok(LocalDisk {
                    uuid: id.uuid,
                    path: path.to_path_buf(),
                    fresh: true,
                })
            }
            Err(e) => Err(io("read identity file")(e)),
        }
    }

    /// Where this disk keeps replicas.
    pub fn replica_dir(&self) -> PathBuf {
        self.path.join("replicas")
    }

    /// Whether the identity file is still there with our UUID (a disk
    /// swapped or wiped under a running agent is no longer ours).
    pub fn still_present(&self) -> bool {
        std::fs::read(self.path.join(IDENTITY_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<DiskIdentity>(&b).ok())
            .is_some_and(|id| id.uuid == self.uuid)
    }

    /// Capacity and free space of the disk's filesystem.
    pub fn usage(&self) -> std::io::Result<Usage> {
        statvfs(&self.path)
    }
}

/// Opens every disk, refusing two paths with one UUID.
pub fn open_all(paths: &[PathBuf], node: &str) -> Result<Vec<LocalDisk>, DiskError> {
    let mut disks: Vec<LocalDisk> = Vec::new();
    for p in paths {
        let d = LocalDisk::open(p, node)?;
        if let Some(other) = disks.iter().find(|o| o.uuid == d.uuid) {
            return Err(DiskError::Duplicate {
                a: other.path.clone(),
                b: d.path.clone(),
                uuid: d.uuid,
            });
        }
        disks.push(d);
    }
    Ok(disks)
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn statvfs(path: &Path) -> std::io::Result<Usage> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to enough
    // writable memory for one `statvfs`.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize;
    Ok(Usage {
        capacity: st.f_blocks * frsize,
        available: st.f_bavail * frsize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_reopen_and_a_wiped_disk_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalDisk::open(dir.path(), "n1").unwrap();
        assert!(a.fresh);
        let b = LocalDisk::open(dir.path(), "n1").unwrap();
        assert_eq!(a.uuid, b.uuid);
        assert!(!b.fresh);
        std::fs::remove_dir_all(dir.path()).unwrap();
        let c = LocalDisk::open(dir.path(), "n1").unwrap();
        assert_ne!(a.uuid, c.uuid);
        assert!(!a.still_present());
        assert!(c.usage().unwrap().capacity > 0);
    }

    #[test]
    fn a_garbled_identity_is_an_error_not_a_new_disk() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(IDENTITY_FILE), b"{nope").unwrap();
        let e = LocalDisk::open(dir.path(), "n1").unwrap_err().to_string();
        assert!(e.contains("unreadable"), "{e}");
        assert_eq!(
            std::fs::read(dir.path().join(IDENTITY_FILE)).unwrap(),
            b"{nope"
        );
    }

    #[test]
    fn copied_disks_are_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        LocalDisk::open(a.path(), "n1").unwrap();
        std::fs::copy(a.path().join(IDENTITY_FILE), b.path().join(IDENTITY_FILE)).unwrap();
        let e = open_all(&[a.path().into(), b.path().into()], "n1").unwrap_err();
        assert!(matches!(e, DiskError::Duplicate { .. }));
    }
}
