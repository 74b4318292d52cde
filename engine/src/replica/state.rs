//! The persisted replica state record: the revision (writes made durable),
//! the **epoch** (the highest engine epoch that claimed the replica) and
//! the **in-sync generation** the replica last joined.
//!
//! Two 48-byte slots, written alternately with pwrite + fdatasync:
//!
//! ```text
//! magic "vgstate2" (8) | seq u64 LE | epoch u64 LE | revision u64 LE | generation u64 LE | CRC-64/NVME of the first 40 bytes
//! ```
//!
//! Every write goes to the slot not holding the newest record and carries
//! `seq + 1`; open takes the valid slot with the highest `seq`. So a torn
//! write can only damage the slot being written, and a value that goes
//! *down* (a rebuilt replica adopting its source's lower revision, a
//! generation set lower by a salvage) survives a reopen — choosing by the
//! highest value would bring the old one back.
//!
//! Older files are converted once on open, crash-safely (temp file, fsync,
//! rename, fsync directory) — until the rename the old file is intact and
//! opens as before:
//! * version 1 (`vgstate1`): two 40-byte slots without the generation;
//!   the newest valid slot is kept, with generation 0;
//! * before epochs: two 16-byte slots (the revision and its CRC; the
//!   highest revision wins), with epoch 0 and generation 0.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::fsutil::{Result, corrupt, io_err, lock, write_atomic};

const MAGIC: &[u8; 8] = b"vgstate2";
const SLOT: usize = 48;
/// Offset of the CRC in a slot (it covers everything before it).
const CRC_AT: usize = SLOT - 8;
const V1_MAGIC: &[u8; 8] = b"vgstate1";
const V1_SLOT: usize = 40;
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
    /// The in-sync generation the replica last joined (0: none yet): the
    /// control plane's generation when it recorded the replica as a member
    /// (or ran a chain operation on it as one).
    pub generation: u64,
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
    b[32..40].copy_from_slice(&r.generation.to_le_bytes());
    let sum = crc(&b[..CRC_AT]);
    b[CRC_AT..].copy_from_slice(&sum.to_le_bytes());
    b
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn decode(b: &[u8]) -> Option<Record> {
    if b.len() < SLOT || &b[..8] != MAGIC || crc(&b[..CRC_AT]) != u64_at(b, CRC_AT)? {
        return None;
    }
    Some(Record {
        seq: u64_at(b, 8)?,
        epoch: u64_at(b, 16)?,
        revision: u64_at(b, 24)?,
        generation: u64_at(b, 32)?,
    })
}

/// A slot of version 1 (`vgstate1`: no generation; CRC of the first 32 bytes).
fn decode_v1(b: &[u8]) -> Option<Record> {
    if b.len() < V1_SLOT || &b[..8] != V1_MAGIC || crc(&b[..32]) != u64_at(b, 32)? {
        return None;
    }
    Some(Record {
        seq: u64_at(b, 8)?,
        epoch: u64_at(b, 16)?,
        revision: u64_at(b, 24)?,
        generation: 0,
    })
}

/// The newest of two decoded slots (highest `seq`) and its index.
fn newest(a: Option<Record>, b: Option<Record>) -> Option<(Record, u64)> {
    match (a, b) {
        (Some(x), Some(y)) if y.seq > x.seq => Some((y, 1)),
        (Some(x), _) => Some((x, 0)),
        (None, Some(y)) => Some((y, 1)),
        (None, None) => None,
    }
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
    /// Shared with a ring write in flight (see [`StateFile::begin_ring`]).
    file: Arc<File>,
    current: Record,
    next_slot: u64,
    /// A record is being written through the ring: nobody else writes
    /// until it ends ([`StateFile::end_ring`]).
    busy: bool,
}

/// The open state file.
pub(super) struct StateFile {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// Signalled when a ring write ends: blocking writers wait on it…
    idle: Condvar,
    /// …and asynchronous ones on this.
    idle_async: tokio::sync::Notify,
}

/// What a ring write of the revision should do ([`StateFile::begin_ring`]).
pub(super) enum RingWrite {
    /// The file already holds this revision or a newer one.
    Done,
    /// Another ring write is in flight: wait for `idle_async`, try again.
    Busy,
    /// Write `encoded` at `offset` of `file`, sync it, then call
    /// [`StateFile::end_ring`] with `record`.
    Go {
        file: Arc<File>,
        offset: u64,
        encoded: Vec<u8>,
        record: Record,
    },
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
                file: Arc::new(file),
                current: record,
                next_slot: 0,
                busy: false,
            }),
            idle: Condvar::new(),
            idle_async: tokio::sync::Notify::new(),
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
                revision: rev,
                ..Record::default()
            };
            write_atomic(path, &both_slots(&record))?;
            tracing::info!(path = %path.display(), revision = rev, "converted the revision file to the state record with epochs and generations");
            (record, 1)
        } else if buf.len() == 2 * V1_SLOT {
            let Some((v1, _)) = newest(
                buf.get(..V1_SLOT).and_then(decode_v1),
                buf.get(V1_SLOT..).and_then(decode_v1),
            ) else {
                return Err(corrupt(path, "no valid replica state record (version 1)"));
            };
            // Both slots hold the record converted, so either can be the
            // next one overwritten.
            write_atomic(path, &both_slots(&v1))?;
            tracing::info!(path = %path.display(), revision = v1.revision, epoch = v1.epoch, "converted the replica state record to version 2 (with the in-sync generation)");
            (v1, 1)
        } else {
            newest(
                buf.get(..SLOT).and_then(decode),
                buf.get(SLOT..2 * SLOT).and_then(decode),
            )
            .ok_or_else(|| corrupt(path, "no valid replica state record"))?
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
                    file: Arc::new(file),
                    current: record,
                    next_slot: 1 - slot,
                    busy: false,
                }),
                idle: Condvar::new(),
                idle_async: tokio::sync::Notify::new(),
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
        let mut st = self.lock_idle();
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
        let mut st = self.lock_idle();
        let next = Record {
            revision: rev,
            ..st.current
        };
        Self::write(&mut st, &self.path, next)
    }

    /// Persists `epoch` as the highest that claimed the replica. The caller
    /// checked it is higher than the current one.
    pub(super) fn persist_epoch(&self, epoch: u64) -> Result<()> {
        let mut st = self.lock_idle();
        let next = Record {
            epoch,
            ..st.current
        };
        Self::write(&mut st, &self.path, next)
    }

    /// Persists `generation` as the in-sync generation the replica last
    /// joined, lower or higher than the one it holds: the newest record
    /// wins on reopen, so a lowered value stays lowered.
    pub(super) fn persist_generation(&self, generation: u64) -> Result<()> {
        let mut st = self.lock_idle();
        if st.current.generation == generation {
            return Ok(());
        }
        let next = Record {
            generation,
            ..st.current
        };
        Self::write(&mut st, &self.path, next)
    }

    /// The state, once no ring write is in flight (blocking).
    fn lock_idle(&self) -> MutexGuard<'_, Inner> {
        let mut st = lock(&self.inner);
        while st.busy {
            st = self.idle.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st
    }

    /// Starts persisting `rev` through the ring (asynchronous flushes): as
    /// [`StateFile::persist_revision`], but the write and its sync are the
    /// caller's, and nobody else writes the file until [`StateFile::end_ring`].
    pub(super) fn begin_ring(&self, rev: u64) -> RingWrite {
        let mut st = lock(&self.inner);
        if rev <= st.current.revision {
            return RingWrite::Done;
        }
        if st.busy {
            return RingWrite::Busy;
        }
        st.busy = true;
        let record = Record {
            revision: rev,
            seq: st.current.seq.wrapping_add(1),
            ..st.current
        };
        RingWrite::Go {
            file: Arc::clone(&st.file),
            offset: st.next_slot * SLOT as u64,
            encoded: encode(&record).to_vec(),
            record,
        }
    }

    /// Ends a ring write: `Some(record)` once it is written and synced (it
    /// becomes the current record, and the next write goes to the other
    /// slot), `None` when it failed or was abandoned (the next write goes
    /// to the same slot again, so the newest durable record stays put).
    pub(super) fn end_ring(&self, written: Option<Record>) {
        let mut st = lock(&self.inner);
        st.busy = false;
        if let Some(record) = written {
            st.current = record;
            st.next_slot = 1 - st.next_slot;
        }
        drop(st);
        self.idle.notify_all();
        self.idle_async.notify_waiters();
    }

    /// A future that completes at the next [`StateFile::end_ring`]; enable
    /// it before calling [`StateFile::begin_ring`] so none is missed.
    pub(super) fn ring_ended(&self) -> tokio::sync::futures::Notified<'_> {
        self.idle_async.notified()
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
#[path = "tests_state.rs"]
mod tests;
