//! One layer file on disk: positioned I/O with O_DIRECT (and an aligned
//! bounce buffer for unaligned caller memory), hole punching, and reading
//! the allocation map with `SEEK_DATA`/`SEEK_HOLE`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::aligned::{ALIGN, AlignedBuf, CHUNK, is_aligned};
use super::extent::ExtentSet;
use super::fault;
use super::fsutil::{Result, io_err, remove_file_if_exists};
use crate::size::BLOCK_SIZE;

/// An open layer file.
#[derive(Debug)]
pub(super) struct LayerFile {
    /// Shared with io_uring operations in flight, which keep the file open
    /// until the kernel is done with it (see `ring_io.rs`).
    file: Arc<File>,
    path: PathBuf,
    direct: bool,
}

impl LayerFile {
    /// Opens an existing layer file read-write.
    pub(super) fn open(path: &Path, direct: bool) -> Result<LayerFile> {
        Self::open_with(path, direct, false)
    }

    /// Creates (or truncates) a layer file as a sparse file of `size` bytes
    /// and makes it durable (the directory entry is the caller's job).
    pub(super) fn create(path: &Path, size: u64, direct: bool) -> Result<LayerFile> {
        fault::crash_point().map_err(io_err("create layer file", path))?;
        let f = Self::open_with(path, direct, true)?;
        f.file
            .set_len(size)
            .map_err(io_err("extend layer file", path))?;
        f.file.sync_all().map_err(io_err("sync layer file", path))?;
        Ok(f)
    }

    fn open_with(path: &Path, direct: bool, create: bool) -> Result<LayerFile> {
        let open = |flags: i32| {
            let mut o = OpenOptions::new();
            o.read(true).write(true).custom_flags(flags);
            if create {
                o.create(true).truncate(true);
            }
            o.open(path)
        };
        let op = if create {
            "create layer file"
        } else {
            "open layer file"
        };
        if direct {
            let attempt = if fault::refuse_direct() {
                Err(io::Error::from_raw_os_error(libc::EINVAL))
            } else {
                open(libc::O_DIRECT)
            };
            match attempt {
                Ok(file) => {
                    return Ok(LayerFile {
                        file: Arc::new(file),
                        path: path.to_path_buf(),
                        direct: true,
                    });
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(path = %path.display(), "O_DIRECT refused; using buffered I/O for this layer");
                }
                Err(e) => return Err(io_err(op, path)(e)),
            }
        }
        let file = open(0).map_err(io_err(op, path))?;
        Ok(LayerFile {
            file: Arc::new(file),
            path: path.to_path_buf(),
            direct: false,
        })
    }

    /// The same open file under a new name (after a rename or link).
    pub(super) fn renamed(self, path: PathBuf) -> LayerFile {
        LayerFile { path, ..self }
    }

    /// The open file, for an io_uring operation to keep open.
    pub(super) fn shared(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// The path, for error messages.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this file uses O_DIRECT.
    pub(super) fn direct(&self) -> bool {
        self.direct
    }

    /// Reads `buf.len()` bytes at `offset`; bytes past the end of the file
    /// read as zeros.
    pub(super) fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if !self.direct || is_aligned(buf) {
            return self.read_raw(offset, buf);
        }
        let mut bounce = AlignedBuf::new(buf.len());
        let mut off = offset;
        for chunk in buf.chunks_mut(CHUNK) {
            let b = &mut bounce.as_mut_slice()[..chunk.len()];
            self.read_raw(off, b)?;
            chunk.copy_from_slice(b);
            off += chunk.len() as u64;
        }
        Ok(())
    }

    fn read_raw(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => {
                    done += n;
                    // A short O_DIRECT read ends at EOF; the next offset
                    // would be unaligned, so the rest is past the end.
                    if self.direct && !done.is_multiple_of(ALIGN) {
                        buf[done..].fill(0);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("read layer file", &self.path)(e)),
            }
        }
        Ok(())
    }

    /// Writes all of `data` at `offset`.
    pub(super) fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.direct || is_aligned(data) {
            return self
                .file
                .write_all_at(data, offset)
                .map_err(io_err("write layer file", &self.path));
        }
        let mut bounce = AlignedBuf::new(data.len());
        let mut off = offset;
        for chunk in data.chunks(CHUNK) {
            let b = &mut bounce.as_mut_slice()[..chunk.len()];
            b.copy_from_slice(chunk);
            self.file
                .write_all_at(b, off)
                .map_err(io_err("write layer file", &self.path))?;
            off += chunk.len() as u64;
        }
        Ok(())
    }

    /// Writes real zero bytes over `[offset, offset + len)`.
    pub(super) fn write_zeros(&self, offset: u64, len: u64) -> Result<()> {
        let zeros = AlignedBuf::new(usize::try_from(len).unwrap_or(CHUNK));
        let mut off = offset;
        let end = offset + len;
        while off < end {
            let n = (end - off).min(zeros.as_slice().len() as u64) as usize;
            self.write_at(off, &zeros.as_slice()[..n])?;
            off += n as u64;
        }
        Ok(())
    }

    /// Deallocates `[offset, offset + len)` keeping the file size. Returns
    /// `false` if the filesystem cannot punch holes.
    pub(super) fn punch_hole(&self, offset: u64, len: u64) -> Result<bool> {
        let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Ok(false);
        };
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        loop {
            // SAFETY: the fd is open for as long as `self.file` lives;
            // fallocate only reads its integer arguments.
            let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, n) };
            if r == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EOPNOTSUPP | libc::ENOSYS) => return Ok(false),
                _ => return Err(io_err("punch hole in layer file", &self.path)(e)),
            }
        }
    }

    /// `fdatasync`: makes completed writes durable.
    pub(super) fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(io_err("sync layer file", &self.path))
    }

    /// Grows the file to `size` bytes (the new tail is a hole, so no data
    /// is written) and makes the new length durable. Never shrinks.
    pub(super) fn extend(&self, size: u64) -> Result<()> {
        fault::crash_point().map_err(io_err("extend layer file", &self.path))?;
        if self.len()? >= size {
            return Ok(());
        }
        self.file
            .set_len(size)
            .map_err(io_err("extend layer file", &self.path))?;
        // The new length must be durable before any metadata claims it;
        // sync_all states that plainly (expansion is rare, cost is moot).
        self.file
            .sync_all()
            .map_err(io_err("sync layer file", &self.path))
    }

    /// The file's current length.
    pub(super) fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(io_err("stat layer file", &self.path))
    }

    /// The allocated ranges below `limit`, rounded outwards to whole blocks,
    /// from `SEEK_DATA`/`SEEK_HOLE`. Where the filesystem cannot tell, the
    /// whole file counts as data: a superset, so the layer's own bytes are
    /// all found, but in a chain it would hide the layers below. Replicas on
    /// such a filesystem therefore keep allocation maps ([`probe_holes`],
    /// `LayerMeta::allocated`) and use this only on layers without one.
    pub(super) fn scan_extents(&self, limit: u64) -> Result<ExtentSet> {
        let mut set = ExtentSet::new();
        let end = self.len()?.min(limit);
        if fault::hide_holes() {
            set.insert(0, end.next_multiple_of(BLOCK_SIZE).min(limit));
            return Ok(set);
        }
        let fd = self.file.as_raw_fd();
        let seek = |pos: u64, whence: i32| -> io::Result<Option<u64>> {
            let Ok(p) = i64::try_from(pos) else {
                return Ok(None);
            };
            // SAFETY: lseek on an fd that `self.file` keeps open; it touches
            // no memory. We use pread/pwrite, so moving the offset is harmless.
            let r = unsafe { libc::lseek(fd, p, whence) };
            if r >= 0 {
                return Ok(Some(r as u64));
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                Ok(None)
            } else {
                Err(e)
            }
        };
        let mut pos = 0;
        while pos < end {
            let data = match seek(pos, libc::SEEK_DATA) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    set.insert(pos, end.next_multiple_of(BLOCK_SIZE).min(limit));
                    break;
                }
                Err(e) => return Err(io_err("seek data in layer file", &self.path)(e)),
            };
            if data >= end {
                break;
            }
            let hole = seek(data, libc::SEEK_HOLE)
                .map_err(io_err("seek hole in layer file", &self.path))?
                .unwrap_or(end);
            let s = data - data % BLOCK_SIZE;
            let e = hole.min(end).next_multiple_of(BLOCK_SIZE).min(limit);
            set.insert(s, e);
            if hole <= pos {
                break;
            }
            pos = hole;
        }
        Ok(set)
    }
}

/// Whether the filesystem of `dir` reports holes: creates a scratch file
/// with one block written far past its start and asks `SEEK_DATA` where
/// data begins. ext4, XFS, btrfs and tmpfs answer with the written block;
/// a filesystem that cannot tell (FUSE without an lseek handler, NFS
/// before 4.2) answers 0 (the kernel's generic lseek calls every byte
/// data) or refuses. Replicas there persist each layer's allocation.
pub(super) fn probe_holes(dir: &Path) -> Result<bool> {
    let path = dir.join(".holes-probe.tmp");
    let result = probe_holes_at(&path);
    remove_file_if_exists(&path)?;
    let ok = result?;
    if !ok {
        tracing::warn!(dir = %dir.display(), "filesystem does not report holes; replicas here persist each layer's allocation map (slower flushes)");
    }
    Ok(ok)
}

/// Past any allocation unit a filesystem rounds a hole to (ZFS records
/// reach 1 MiB, btrfs and XFS extent hints less).
const HOLE_PROBE_OFFSET: u64 = 16 << 20;

fn probe_holes_at(path: &Path) -> Result<bool> {
    if fault::hide_holes() {
        return Ok(false);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err("create hole probe file", path))?;
    file.write_all_at(&[1u8; BLOCK_SIZE as usize], HOLE_PROBE_OFFSET)
        .map_err(io_err("write hole probe file", path))?;
    // Some filesystems only know the allocation once data is on disk.
    file.sync_data()
        .map_err(io_err("sync hole probe file", path))?;
    // SAFETY: lseek on the fd `file` keeps open; it touches no memory.
    let r = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_DATA) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(libc::ENOSYS) => Ok(false),
            _ => Err(io_err("seek data in hole probe file", path)(e)),
        };
    }
    // Any hole reported before the written block will do.
    Ok(r > 0)
}

/// Whether O_DIRECT works in `dir`: creates a scratch file, writes and
/// reads one aligned block with O_DIRECT. Logs a warning when it does not.
pub(super) fn probe_direct(dir: &Path) -> Result<bool> {
    let path = dir.join(".direct-probe.tmp");
    let result = probe_at(&path);
    remove_file_if_exists(&path)?;
    let ok = result?;
    if !ok {
        tracing::warn!(dir = %dir.display(), "filesystem refuses O_DIRECT; layer files use buffered I/O");
    }
    Ok(ok)
}

fn probe_at(path: &Path) -> Result<bool> {
    if fault::refuse_direct() {
        return Ok(false);
    }
    let einval = |e: &io::Error| e.raw_os_error() == Some(libc::EINVAL);
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if einval(&e) => return Ok(false),
        Err(e) => return Err(io_err("create O_DIRECT probe file", path)(e)),
    };
    let mut buf = AlignedBuf::new(ALIGN);
    match file.write_all_at(buf.as_slice(), 0) {
        Ok(()) => {}
        Err(e) if einval(&e) => return Ok(false),
        Err(e) => return Err(io_err("write O_DIRECT probe file", path)(e)),
    }
    match file.read_exact_at(buf.as_mut_slice(), 0) {
        Ok(()) => Ok(true),
        Err(e) if einval(&e) => Ok(false),
        Err(e) => Err(io_err("read O_DIRECT probe file", path)(e)),
    }
}
