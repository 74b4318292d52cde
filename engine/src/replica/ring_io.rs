//! Reads and writes from async code: through this worker thread's
//! io_uring ([`crate::ring`]) where it is available, on the blocking pool
//! where not.
//!
//! The ring path takes a gate pass ([`super::gate`]) instead of holding the
//! chain lock across the kernel's work, resolves what it needs under a
//! short read lock (the head's file, or which layer holds each range), and
//! updates the extent index and the revision only after the write
//! succeeded — also when the caller gave up waiting: an abandoned write's
//! completion finishes its bookkeeping (`WriteOp::abandoned`), so a range
//! the kernel wrote is never left out of the index.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use io_uring::{opcode, types};

use super::aligned::{ALIGN, AlignedBuf, MAX_LEN, is_aligned};
use super::alloc::Allocation;
use super::fsutil::{io_err, rlock, wlock};
use super::gate::Pass;
use super::state::RingWrite;
use super::{Replica, ReplicaError, Result};
use crate::ring::{self, InFlight, Ring};
use crate::size::BLOCK_SIZE;

impl Replica {
    /// Reads `len` bytes at `offset` for the engine of `epoch` (refused
    /// once a newer engine claimed the replica): never-written blocks read
    /// as zeros. The buffer is 4 KiB-aligned and becomes the returned
    /// `Bytes` without a copy.
    pub async fn read_async(
        self: &Arc<Self>,
        epoch: u64,
        offset: u64,
        len: usize,
    ) -> Result<Bytes> {
        match ring::current() {
            Some(ring) => {
                self.counted_async(self.read_ring(&ring, epoch, offset, len))
                    .await
            }
            None => {
                self.blocking_admitted(epoch, move |r| {
                    let mut buf = vec![0u8; len];
                    r.read(offset, &mut buf)?;
                    Ok(Bytes::from(buf))
                })
                .await
            }
        }
    }

    /// Writes `data` at `offset` into the head for the engine of `epoch`
    /// (refused once a newer engine claimed the replica).
    pub async fn write_async(self: &Arc<Self>, epoch: u64, offset: u64, data: Bytes) -> Result<()> {
        match ring::current() {
            Some(ring) => {
                self.counted_async(self.write_ring(&ring, epoch, offset, data))
                    .await
            }
            None => {
                self.blocking_admitted(epoch, move |r| r.write(offset, &data))
                    .await
            }
        }
    }

    /// Makes every write completed before the call durable and persists
    /// the revision, for the engine of `epoch`: the head's `fdatasync` and
    /// the state record's write and sync through the ring (the blocking
    /// [`Replica::flush`] where io_uring is unavailable, or where the
    /// filesystem keeps allocation maps, whose update is a metadata file).
    pub async fn flush_async(self: &Arc<Self>, epoch: u64) -> Result<()> {
        let holes = rlock(&self.chain).allocation == Allocation::Holes;
        match ring::current() {
            Some(ring) if holes => self.counted_async(self.flush_ring(&ring, epoch)).await,
            _ => self.blocking_admitted(epoch, |r| r.flush()).await,
        }
    }

    /// Awaits an operation of the ring path, counting its disk errors in
    /// `io_errors` (the blocking methods count their own).
    async fn counted_async<T>(
        &self,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let result = op.await;
        self.count_failure(&result);
        result
    }

    /// Runs a blocking replica call on the blocking pool, admitted under
    /// the engine's epoch: the fallback where io_uring is unavailable.
    async fn blocking_admitted<T: Send + 'static>(
        self: &Arc<Self>,
        epoch: u64,
        f: impl FnOnce(&Replica) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let r = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _admitted = r.admit(epoch)?;
            f(&r)
        })
        .await
        .unwrap_or_else(|e| {
            Err(io_err("run replica call", &self.dir)(io::Error::other(
                e.to_string(),
            )))
        })
    }

    /// Refuses a request of an engine older than the one that claimed the
    /// replica. Called with a pass held: a claim raises the epoch and then
    /// waits for the passes out, so an older request either finished
    /// before the claim returned or is refused here.
    fn check_epoch(&self, epoch: u64) -> Result<()> {
        let claimed = self.claimed.load(Ordering::SeqCst);
        if claimed > epoch {
            return Err(ReplicaError::StaleEpoch { epoch, claimed });
        }
        Ok(())
    }

    async fn read_ring(
        self: &Arc<Self>,
        ring: &Ring,
        epoch: u64,
        offset: u64,
        len: usize,
    ) -> Result<Bytes> {
        let _pass = self.gate.enter().await;
        self.check_epoch(epoch)?;
        let end = self.check_io(offset, len as u64)?;
        check_len(len)?;
        let (parts, zeros): (Vec<_>, _) = {
            let chain = rlock(&self.chain);
            let (found, zeros) = chain.resolve(offset, end);
            let parts = found
                .into_iter()
                .map(|(a, b, layer)| {
                    let f = &chain.layers[layer].file;
                    (a, b, f.shared(), f.direct(), f.path().to_path_buf())
                })
                .collect();
            (parts, zeros)
        };
        // Not zeroed up front (a megabyte of memset per large read): the
        // parts are read into it, the ranges no layer holds zeroed here,
        // and whatever a read finds past the end of its file is zeroed in
        // `read_part` — every byte is written before the `Bytes` exists.
        // SAFETY: see above; on an error the buffer is dropped unread.
        let mut buf = unsafe { AlignedBuf::uninit(len) };
        for (a, b) in zeros {
            buf.zero((a - offset) as usize, (b - offset) as usize);
        }
        for (a, b, file, direct, path) in parts {
            let at = (a - offset) as usize;
            buf = read_part(ring, buf, file, direct, path, at, (b - a) as usize, a).await?;
        }
        Ok(Bytes::from_owner(buf))
    }

    async fn write_ring(
        self: &Arc<Self>,
        ring: &Ring,
        epoch: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<()> {
        let pass = self.gate.enter().await;
        self.check_epoch(epoch)?;
        let end = self.check_io(offset, data.len() as u64)?;
        check_len(data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        // The head cannot change while the pass is out (chain operations
        // close the gate first).
        let (file, direct, path) = {
            let chain = rlock(&self.chain);
            let f = &chain.head().file;
            (f.shared(), f.direct(), f.path().to_path_buf())
        };
        let payload = if direct && !is_aligned(&data) {
            Payload::Aligned(AlignedBuf::copy_of(&data))
        } else {
            Payload::Shared(data)
        };
        let len = payload.len();
        let fd = types::Fd(file.as_raw_fd());
        let mut op = WriteOp {
            payload,
            _file: file,
            replica: Arc::clone(self),
            start: offset,
            at: offset,
            pass,
        };
        let mut done = 0usize;
        while done < len {
            let ptr = op.payload.ptr(done);
            let entry = opcode::Write::new(fd, ptr, chunk_len(len - done))
                .offset(offset + done as u64)
                .build();
            op.at = offset + done as u64;
            // SAFETY: `ptr` points into the payload `op` owns (heap memory
            // that stays put when `op` moves) and `fd` belongs to the file
            // `op` keeps open.
            let (back, res) = unsafe { ring.submit(entry, op) }.await;
            op = back;
            match res {
                r if r > 0 => done += r as usize,
                r if r == -libc::EINTR || r == -libc::EAGAIN => {}
                0 => {
                    return Err(io_err("write layer file", &path)(io::Error::from(
                        io::ErrorKind::WriteZero,
                    )));
                }
                r => {
                    return Err(io_err("write layer file", &path)(
                        io::Error::from_raw_os_error(-r),
                    ));
                }
            }
        }
        // Data first, index second, as in `Replica::write`.
        wlock(&rlock(&self.chain).head().extents).insert(offset, end);
        self.revision.fetch_add(1, Ordering::SeqCst);
        drop(op);
        Ok(())
    }
}

impl Replica {
    async fn flush_ring(self: &Arc<Self>, ring: &Ring, epoch: u64) -> Result<()> {
        let _pass = self.gate.enter().await;
        self.check_epoch(epoch)?;
        // Every write counted in `rev` finished before it was counted, so
        // the sync below covers it (as in `Replica::flush`).
        let rev = self.revision.load(Ordering::SeqCst);
        let (file, path) = {
            let chain = rlock(&self.chain);
            let f = &chain.head().file;
            (f.shared(), f.path().to_path_buf())
        };
        let fd = types::Fd(file.as_raw_fd());
        let entry = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: the entry names only the file the op keeps open.
        let (_, res) = unsafe { ring.submit(entry, SyncOp { _file: file }) }.await;
        if res < 0 {
            return Err(io_err("sync layer file", &path)(
                io::Error::from_raw_os_error(-res),
            ));
        }
        self.persist_revision_ring(ring, rev).await
    }

    /// Persists `rev` in the state file (unless it holds a newer one):
    /// the record's write and its sync through the ring, one at a time.
    async fn persist_revision_ring(self: &Arc<Self>, ring: &Ring, rev: u64) -> Result<()> {
        let path = self.dir.join(super::meta::REVISION_FILE);
        let (file, offset, encoded, record) = loop {
            let ended = self.revfile.ring_ended();
            tokio::pin!(ended);
            ended.as_mut().enable();
            match self.revfile.begin_ring(rev) {
                RingWrite::Done => return Ok(()),
                RingWrite::Busy => ended.await,
                RingWrite::Go {
                    file,
                    offset,
                    encoded,
                    record,
                } => break (file, offset, encoded, record),
            }
        };
        let fd = types::Fd(file.as_raw_fd());
        let len = encoded.len();
        let op = StateOp {
            buf: encoded,
            _file: Arc::clone(&file),
            replica: Arc::clone(self),
        };
        let entry = opcode::Write::new(fd, op.buf.as_ptr(), len as u32)
            .offset(offset)
            .build();
        // SAFETY: the entry points at the op's own heap buffer and file.
        let (op, res) = unsafe { ring.submit(entry, op) }.await;
        if res != len as i32 {
            self.revfile.end_ring(None);
            let e = if res < 0 {
                io::Error::from_raw_os_error(-res)
            } else {
                io::Error::from(io::ErrorKind::WriteZero)
            };
            return Err(io_err("write replica state file", &path)(e));
        }
        let entry = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: as above.
        let (_op, res) = unsafe { ring.submit(entry, op) }.await;
        if res < 0 {
            self.revfile.end_ring(None);
            return Err(io_err("sync replica state file", &path)(
                io::Error::from_raw_os_error(-res),
            ));
        }
        self.revfile.end_ring(Some(record));
        Ok(())
    }
}

/// A sync in flight: its file.
struct SyncOp {
    _file: Arc<File>,
}

impl InFlight for SyncOp {
    fn abandoned(self, _result: i32) {}
}

/// A state record's write or sync in flight. Abandoned, it ends the ring
/// write without adopting the record: the next write goes to the same
/// slot, after this one is done with it.
struct StateOp {
    buf: Vec<u8>,
    _file: Arc<File>,
    replica: Arc<Replica>,
}

impl InFlight for StateOp {
    fn abandoned(self, _result: i32) {
        self.replica.revfile.end_ring(None);
    }
}

/// The most one read or write submission asks for (`len` is a u32).
fn chunk_len(rest: usize) -> u32 {
    u32::try_from(rest).unwrap_or(!(ALIGN as u32 - 1))
}

fn check_len(len: usize) -> Result<()> {
    if len > MAX_LEN {
        return Err(ReplicaError::InvalidArgument(format!(
            "request of {len} bytes exceeds {MAX_LEN}"
        )));
    }
    Ok(())
}

/// Reads `len` bytes of `file` at `offset` into `buf[at..]`; bytes past
/// the end of the file are zeroed.
#[allow(clippy::too_many_arguments)]
async fn read_part(
    ring: &Ring,
    buf: AlignedBuf,
    file: Arc<File>,
    direct: bool,
    path: PathBuf,
    at: usize,
    len: usize,
    offset: u64,
) -> Result<AlignedBuf> {
    let fd = types::Fd(file.as_raw_fd());
    let mut op = ReadOp { buf, _file: file };
    let mut done = 0usize;
    while done < len {
        // SAFETY: `at + done < at + len <= buf.len()` (the caller's range
        // lies within the buffer), so the pointer stays inside the buffer.
        let ptr = unsafe { op.buf.as_mut_ptr().add(at + done) };
        let entry = opcode::Read::new(fd, ptr, chunk_len(len - done))
            .offset(offset + done as u64)
            .build();
        // SAFETY: `ptr` points into the buffer `op` owns (heap memory that
        // stays put when `op` moves), `fd` belongs to the file it keeps open.
        let (back, res) = unsafe { ring.submit(entry, op) }.await;
        op = back;
        match res {
            // End of file: the rest reads as zeros.
            0 => break,
            r if r > 0 => {
                done += r as usize;
                // A short O_DIRECT read ends at EOF; the next offset would
                // be unaligned, so the rest is past the end.
                if direct && !done.is_multiple_of(ALIGN) {
                    break;
                }
            }
            r if r == -libc::EINTR || r == -libc::EAGAIN => {}
            r => {
                return Err(io_err("read layer file", &path)(
                    io::Error::from_raw_os_error(-r),
                ));
            }
        }
    }
    let mut buf = op.buf;
    buf.zero(at + done.min(len), at + len);
    Ok(buf)
}

/// A read in flight: its buffer and file.
struct ReadOp {
    buf: AlignedBuf,
    _file: Arc<File>,
}

impl InFlight for ReadOp {
    fn abandoned(self, _result: i32) {}
}

/// What a write sends: the caller's bytes as they are (aligned, or a
/// buffered file), or an aligned copy for O_DIRECT.
enum Payload {
    Shared(Bytes),
    Aligned(AlignedBuf),
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Payload::Shared(b) => b.len(),
            Payload::Aligned(a) => a.as_slice().len(),
        }
    }

    /// The address of byte `at` (`at <= len`).
    fn ptr(&self, at: usize) -> *const u8 {
        let s = match self {
            Payload::Shared(b) => &b[..],
            Payload::Aligned(a) => a.as_slice(),
        };
        s[at..].as_ptr()
    }
}

/// A write in flight: its data, its file, and what finishing it needs if
/// its caller stops waiting (the replica, the range, the gate pass that
/// keeps chain operations out until the index is right).
struct WriteOp {
    payload: Payload,
    _file: Arc<File>,
    replica: Arc<Replica>,
    /// Where the whole write starts.
    start: u64,
    /// Where the submission in flight starts (after earlier short ones).
    at: u64,
    pass: Pass,
}

impl InFlight for WriteOp {
    /// The kernel wrote `result` bytes at `at` (and everything from `start`
    /// to `at` before): index the whole blocks written, so the index never
    /// misses data the file holds — a later trim would otherwise skip the
    /// range and leave that data to resurface.
    fn abandoned(self, result: i32) {
        let written = if result > 0 { result as u64 } else { 0 };
        let end = (self.at + written) / BLOCK_SIZE * BLOCK_SIZE;
        if end > self.start {
            let chain = rlock(&self.replica.chain);
            wlock(&chain.head().extents).insert(self.start, end);
            self.replica.revision.fetch_add(1, Ordering::SeqCst);
        }
        drop(self.pass);
    }
}
