//! The persisted revision counter: two 16-byte slots (revision LE u64 +
//! CRC-64/NVME of those 8 bytes) written alternately with pwrite +
//! fdatasync. A torn write can only damage the slot being written; open
//! takes the highest valid slot.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::fsutil::{Result, corrupt, io_err, lock};

const SLOT: usize = 16;

fn encode(rev: u64) -> [u8; SLOT] {
    let mut rec = [0u8; SLOT];
    rec[..8].copy_from_slice(&rev.to_le_bytes());
    let sum = crc(&rec[..8]);
    rec[8..].copy_from_slice(&sum.to_le_bytes());
    rec
}

fn decode(rec: &[u8]) -> Option<u64> {
    let r: [u8; 8] = rec.get(..8)?.try_into().ok()?;
    let c: [u8; 8] = rec.get(8..16)?.try_into().ok()?;
    (crc(&r) == u64::from_le_bytes(c)).then(|| u64::from_le_bytes(r))
}

fn crc(bytes: &[u8]) -> u64 {
    let mut d = crc64fast_nvme::Digest::new();
    d.write(bytes);
    d.sum64()
}

struct State {
    file: File,
    persisted: u64,
    next_slot: u64,
}

/// The open `revision` file.
pub(super) struct RevisionFile {
    path: PathBuf,
    state: Mutex<State>,
}

impl RevisionFile {
    /// Creates the file with revision 0 in both slots and syncs it.
    pub(super) fn create(path: &Path) -> Result<RevisionFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_err("create revision file", path))?;
        let mut both = [0u8; 2 * SLOT];
        both[..SLOT].copy_from_slice(&encode(0));
        both[SLOT..].copy_from_slice(&encode(0));
        file.write_all_at(&both, 0)
            .map_err(io_err("write revision file", path))?;
        file.sync_all()
            .map_err(io_err("sync revision file", path))?;
        Ok(RevisionFile {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                file,
                persisted: 0,
                next_slot: 0,
            }),
        })
    }

    /// Opens the file and reads the highest valid revision.
    pub(super) fn open(path: &Path) -> Result<(RevisionFile, u64)> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt(path, "revision file is missing"));
            }
            Err(e) => return Err(io_err("open revision file", path)(e)),
        };
        let mut buf = [0u8; 2 * SLOT];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("read revision file", path)(e)),
            }
        }
        let a = decode(&buf[..got.min(SLOT)]);
        let b = if got >= 2 * SLOT {
            decode(&buf[SLOT..])
        } else {
            None
        };
        let (rev, slot) = match (a, b) {
            (Some(x), Some(y)) if y > x => (y, 1),
            (Some(x), _) => (x, 0),
            (None, Some(y)) => (y, 1),
            (None, None) => return Err(corrupt(path, "no valid revision record")),
        };
        let rf = RevisionFile {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                file,
                persisted: rev,
                next_slot: 1 - slot,
            }),
        };
        Ok((rf, rev))
    }

    /// The last persisted revision.
    pub(super) fn persisted(&self) -> u64 {
        lock(&self.state).persisted
    }

    /// Persists `rev` if it is newer than what the file holds. Never goes
    /// backwards, so concurrent flushes may call it in any order.
    pub(super) fn persist(&self, rev: u64) -> Result<()> {
        let mut st = lock(&self.state);
        if rev <= st.persisted {
            return Ok(());
        }
        Self::write_slot(&mut st, &self.path, rev)
    }

    /// Persists `rev` even if it is lower than what the file holds (a
    /// rebuilt replica adopting its source's revision).
    pub(super) fn force(&self, rev: u64) -> Result<()> {
        let mut st = lock(&self.state);
        Self::write_slot(&mut st, &self.path, rev)
    }

    fn write_slot(st: &mut State, path: &std::path::Path, rev: u64) -> Result<()> {
        let off = st.next_slot * SLOT as u64;
        st.file
            .write_all_at(&encode(rev), off)
            .map_err(io_err("write revision file", path))?;
        st.file
            .sync_data()
            .map_err(io_err("sync revision file", path))?;
        st.persisted = rev;
        st.next_slot = 1 - st.next_slot;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_torn_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revision");
        let rf = RevisionFile::create(&path).unwrap();
        rf.persist(5).unwrap();
        rf.persist(9).unwrap();
        rf.persist(7).unwrap(); // never backwards
        drop(rf);
        let (rf, rev) = RevisionFile::open(&path).unwrap();
        assert_eq!(rev, 9);
        assert_eq!(rf.persisted(), 9);
        drop(rf);
        // Damage the newest slot: the other one still holds a valid record.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xff; 4], 16).unwrap();
        let (_, rev) = RevisionFile::open(&path).unwrap();
        assert_eq!(rev, 5);
        f.write_all_at(&[0xff; 4], 0).unwrap();
        assert!(matches!(
            RevisionFile::open(&path),
            Err(crate::replica::ReplicaError::Corrupt { .. })
        ));
    }
}
