//! The persisted replica state record: the revision (writes made durable)
//! and the **epoch** (the highest engine epoch that claimed the replica).
//!
//! Two 40-byte slots, written alternately with pwrite + fdatasync:
//!
//! ```text
//! magic "vgstate1" (8) | seq u64 LE | epoch u64 LE | revision u64 LE | CRC-64/NVME of the first 32 bytes
//! ```
//!
//! Every write goes to the slot not holding the newest record and carries
//! `seq + 1`; open takes the valid slot with the highest `seq`. So a torn
//! write can only damage the slot being written, and a value that goes
//! *down* (a rebuilt replica adopting its source's lower revision) survives
//! a reopen — choosing by the highest revision would bring the old one back.
//!
//! Files written before the epoch existed hold two 16-byte slots (the
//! revision and its CRC; the highest revision wins); open converts them
//! once, crash-safely (temp file, fsync, rename, fsync directory), with
//! epoch 0.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::fsutil::{Result, corrupt, io_err, lock, write_atomic};

const MAGIC: &[u8; 8] = b"vgstate1";
const SLOT: usize = 40;
const LEGACY_SLOT: usize = 16;

/// One record: what the replica persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Record {
    /// Write sequence of the record itself: the newer slot wins.
    seq: u64,
    /// The highest engine epoch that claimed the replica (0: never claimed).
    pub epoch: u64,
    /// Count of writes made durable.
    pub revision: u64,
}

fn crc(bytes: &[u8]) -> u64 {
    let mut d = crc64fast_nvme::Digest::new();
    d.write(bytes);
    d.sum64()
}

fn encode(r: &Record) -> [u8; SLOT] {
    let mut b = [0u8; SLOT];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&r.seq.to_le_bytes());
    b[16..24].copy_from_slice(&r.epoch.to_le_bytes());
    b[24..32].copy_from_slice(&r.revision.to_le_bytes());
    let sum = crc(&b[..32]);
    b[32..].copy_from_slice(&sum.to_le_bytes());
    b
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn decode(b: &[u8]) -> Option<Record> {
    if b.len() < SLOT || &b[..8] != MAGIC || crc(&b[..32]) != u64_at(b, 32)? {
        return None;
    }
    Some(Record {
        seq: u64_at(b, 8)?,
        epoch: u64_at(b, 16)?,
        revision: u64_at(b, 24)?,
    })
}

/// A slot of the format before epochs: revision LE u64 + CRC of it.
fn decode_legacy(b: &[u8]) -> Option<u64> {
    let rev = u64_at(b, 0)?;
    let sum = u64_at(b, 8)?;
    (crc(b.get(..8)?) == sum).then_some(rev)
}

fn both_slots(r: &Record) -> [u8; 2 * SLOT] {
    let mut both = [0u8; 2 * SLOT];
    both[..SLOT].copy_from_slice(&encode(r));
    both[SLOT..].copy_from_slice(&encode(r));
    both
}

struct Inner {
    file: File,
    current: Record,
    next_slot: u64,
}

/// The open state file.
pub(super) struct StateFile {
    path: PathBuf,
    inner: Mutex<Inner>,
}

impl StateFile {
    /// Creates the file with revision 0 and epoch 0 in both slots, synced.
    pub(super) fn create(path: &Path) -> Result<StateFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_err("create replica state file", path))?;
        let record = Record::default();
        file.write_all_at(&both_slots(&record), 0)
            .map_err(io_err("write replica state file", path))?;
        file.sync_all()
            .map_err(io_err("sync replica state file", path))?;
        Ok(StateFile {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file,
                current: record,
                next_slot: 0,
            }),
        })
    }

    /// Opens the file and reads the newest valid record (converting a file
    /// of the format before epochs).
    pub(super) fn open(path: &Path) -> Result<(StateFile, Record)> {
        let buf = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt(path, "replica state file is missing"));
            }
            Err(e) => return Err(io_err("read replica state file", path)(e)),
        };
        let (record, slot) = if buf.len() == 2 * LEGACY_SLOT {
            let rev = match (decode_legacy(&buf[..16]), decode_legacy(&buf[16..])) {
                (Some(x), Some(y)) => x.max(y),
                (Some(x), None) | (None, Some(x)) => x,
                (None, None) => return Err(corrupt(path, "no valid revision record")),
            };
            let record = Record {
                seq: 0,
                epoch: 0,
                revision: rev,
            };
            write_atomic(path, &both_slots(&record))?;
            tracing::info!(path = %path.display(), revision = rev, "converted the revision file to the state record with epochs");
            (record, 1)
        } else {
            let a = buf.get(..SLOT).and_then(decode);
            let b = buf.get(SLOT..2 * SLOT).and_then(decode);
            match (a, b) {
                (Some(x), Some(y)) if y.seq > x.seq => (y, 1),
                (Some(x), _) => (x, 0),
                (None, Some(y)) => (y, 1),
                (None, None) => return Err(corrupt(path, "no valid replica state record")),
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err("open replica state file", path))?;
        Ok((
            StateFile {
                path: path.to_path_buf(),
                inner: Mutex::new(Inner {
                    file,
                    current: record,
                    next_slot: 1 - slot,
                }),
            },
            record,
        ))
    }

    /// The last persisted record.
    pub(super) fn current(&self) -> Record {
        lock(&self.inner).current
    }

    /// Persists `rev` if it is newer than what the file holds. Never goes
    /// backwards, so concurrent flushes may call it in any order.
    pub(super) fn persist_revision(&self, rev: u64) -> Result<()> {
        let mut st = lock(&self.inner);
        if rev <= st.current.revision {
            return Ok(());
        }
        let next = Record {
            revision: rev,
            ..st.current
        };
        Self::write(&mut st, &self.path, next)
    }

    /// Persists `rev` even if it is lower than what the file holds (a
    /// rebuilt replica adopting its source's revision).
    pub(super) fn force_revision(&self, rev: u64) -> Result<()> {
        let mut st = lock(&self.inner);
        let next = Record {
            revision: rev,
            ..st.current
        };
        Self::write(&mut st, &self.path, next)
    }

    /// Persists `epoch` as the highest that claimed the replica. The caller
    /// checked it is higher than the current one.
    pub(super) fn persist_epoch(&self, epoch: u64) -> Result<()> {
        let mut st = lock(&self.inner);
        let next = Record {
            epoch,
            ..st.current
        };
        Self::write(&mut st, &self.path, next)
    }

    fn write(st: &mut Inner, path: &Path, mut next: Record) -> Result<()> {
        next.seq = st.current.seq.wrapping_add(1);
        let off = st.next_slot * SLOT as u64;
        st.file
            .write_all_at(&encode(&next), off)
            .map_err(io_err("write replica state file", path))?;
        st.file
            .sync_data()
            .map_err(io_err("sync replica state file", path))?;
        st.current = next;
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
        let sf = StateFile::create(&path).unwrap();
        sf.persist_revision(5).unwrap();
        sf.persist_revision(9).unwrap();
        sf.persist_revision(7).unwrap(); // never backwards
        drop(sf);
        let (sf, rec) = StateFile::open(&path).unwrap();
        assert_eq!(rec.revision, 9);
        assert_eq!(sf.current().revision, 9);
        drop(sf);
        // Damage the newest slot (the second write went to slot 1): the
        // other one still holds a valid, older record.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xff; 4], SLOT as u64 + 20).unwrap();
        let (_, rec) = StateFile::open(&path).unwrap();
        assert_eq!(rec.revision, 5);
        f.write_all_at(&[0xff; 4], 20).unwrap();
        assert!(matches!(
            StateFile::open(&path),
            Err(crate::replica::ReplicaError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_lowered_revision_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revision");
        let sf = StateFile::create(&path).unwrap();
        sf.persist_revision(100).unwrap();
        sf.force_revision(40).unwrap();
        drop(sf);
        let (_, rec) = StateFile::open(&path).unwrap();
        assert_eq!(
            rec.revision, 40,
            "the newest record wins, not the highest revision"
        );
    }

    #[test]
    fn the_epoch_persists_with_the_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revision");
        let sf = StateFile::create(&path).unwrap();
        sf.persist_revision(3).unwrap();
        sf.persist_epoch(7).unwrap();
        sf.persist_revision(4).unwrap();
        drop(sf);
        let (_, rec) = StateFile::open(&path).unwrap();
        assert_eq!((rec.epoch, rec.revision), (7, 4));
    }

    #[test]
    fn a_file_from_before_epochs_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revision");
        let legacy = |rev: u64| {
            let mut s = [0u8; 16];
            s[..8].copy_from_slice(&rev.to_le_bytes());
            let sum = crc(&s[..8]);
            s[8..].copy_from_slice(&sum.to_le_bytes());
            s
        };
        let mut old = Vec::new();
        old.extend_from_slice(&legacy(12));
        old.extend_from_slice(&legacy(11));
        std::fs::write(&path, &old).unwrap();
        let (sf, rec) = StateFile::open(&path).unwrap();
        assert_eq!((rec.epoch, rec.revision), (0, 12));
        sf.persist_epoch(2).unwrap();
        drop(sf);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT as u64);
        let (_, rec) = StateFile::open(&path).unwrap();
        assert_eq!((rec.epoch, rec.revision), (2, 12));
    }
}
