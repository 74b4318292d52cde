#!/usr/bin/python3
"""A FUSE filesystem that loses everything not synced when the power goes.

    powercut_fs.py BACKING MOUNTPOINT CONTROL_DIR

Mounts BACKING at MOUNTPOINT (in the foreground; the process is the mount)
and keeps, until it is synced, everything a program changes:

- file data and sizes: writes and truncations live in memory, per inode,
  and reach BACKING only on fsync/fdatasync of that file (or at once for a
  file opened O_SYNC/O_DSYNC);
- names: create, mkdir, link, unlink, rmdir and rename are applied to BACKING
  (so the mount shows them) and logged; a name change is durable only once
  every directory it touched was fsynced.

A power cut: create CONTROL_DIR/cut. The filesystem then drops every
unsynced write and size change and undoes every name change not yet
durable, newest first, and removes the file to say it is done. Kill the
programs using the mount first: they would see their files change under
them. CONTROL_DIR/stats (rewritten after each cut) counts cuts, the bytes
and name changes dropped, and the syncs seen.

This is the strict reading of POSIX, stricter than ext4 or XFS (where an
fsync of a new file also makes its directory entry durable in practice):
a program that is safe here is safe there.

Mounted with direct_io and zero cache timeouts, so the kernel keeps no
copy of what the cut drops. Uses Debian's python3-fusepy (libfuse 2).
Like eio_fs.py: no fallocate (EOPNOTSUPP), no SEEK_DATA/SEEK_HOLE.
"""

import errno
import json
import os
import shutil
import sys
import threading
import time

from fusepy import FUSE, FuseOSError, Operations

BLOCK = 4096
TRASH = ".powercut-trash"


class Dirty:
    """Unsynced state of one inode: whole blocks and the logical size."""

    def __init__(self, size):
        self.blocks = {}
        self.size = size


class PowerCutFs(Operations):
    use_ns = True

    def __init__(self, backing, control):
        self.backing = os.path.realpath(backing)
        self.control = control
        self.lock = threading.RLock()
        self.dirty = {}  # inode -> Dirty
        self.fh_ino = {}  # fh -> inode
        self.fh_sync = set()  # fhs opened O_SYNC / O_DSYNC
        # Name changes not yet durable: [undo callable, set of dirs still to
        # fsync, description].
        self.log = []
        self.trash_seq = 0
        self.stats = {"cuts": 0, "bytes_dropped": 0, "names_undone": 0,
                      "fsyncs": 0, "fsyncdirs": 0}
        os.makedirs(os.path.join(self.backing, TRASH), exist_ok=True)
        threading.Thread(target=self._watch, daemon=True).start()

    # -- helpers -------------------------------------------------------
    def _p(self, path):
        return os.path.join(self.backing, path.lstrip("/"))

    def _parent(self, path):
        return os.path.dirname(self._p(path))

    def _trash(self, real):
        """Moves `real` aside (kept for an undo); returns where."""
        self.trash_seq += 1
        t = os.path.join(self.backing, TRASH, str(self.trash_seq))
        os.rename(real, t)
        return t

    def _logged(self, undo, dirs, what, trash=()):
        self.log.append([undo, set(dirs), what, list(trash)])

    def _forget(self, t):
        """Deletes a trash entry for good, with its unsynced data (its
        inode number may be reused by the next file created)."""
        try:
            st = os.lstat(t)
        except OSError:
            return
        if os.path.isdir(t):
            shutil.rmtree(t, ignore_errors=True)
            return
        if st.st_nlink <= 1:
            self.dirty.pop(st.st_ino, None)
        os.unlink(t)

    def _dirty_for(self, ino, fd):
        d = self.dirty.get(ino)
        if d is None:
            d = Dirty(os.fstat(fd).st_size)
            self.dirty[ino] = d
        return d

    def _block(self, d, fd, i):
        b = d.blocks.get(i)
        if b is None:
            b = os.pread(fd, BLOCK, i * BLOCK)
            b = bytearray(b.ljust(BLOCK, b"\0"))
            # Bytes past the logical size read as zeros (a truncation
            # that was not synced hides them).
            cut = d.size - i * BLOCK
            if cut < BLOCK:
                b[max(cut, 0):] = b"\0" * (BLOCK - max(cut, 0))
            d.blocks[i] = b
        return b

    def _sync_file(self, ino, fd):
        d = self.dirty.pop(ino, None)
        if d is None:
            os.fsync(fd)
            return
        for i, b in sorted(d.blocks.items()):
            start = i * BLOCK
            if start >= d.size:
                continue
            os.pwrite(fd, bytes(b[: min(BLOCK, d.size - start)]), start)
        os.ftruncate(fd, d.size)
        os.fsync(fd)

    # -- the cut -------------------------------------------------------
    def _watch(self):
        flag = os.path.join(self.control, "cut")
        while True:
            if os.path.exists(flag):
                with self.lock:
                    self._cut()
                os.unlink(flag)
            time.sleep(0.02)

    def _cut(self):
        for d in self.dirty.values():
            self.stats["bytes_dropped"] += len(d.blocks) * BLOCK
        self.dirty.clear()
        undone = []
        for undo, _dirs, what, _trash in reversed(self.log):
            try:
                undo()
            except OSError as e:
                what += " (undo failed: %s)" % e
            undone.append(what)
            self.stats["names_undone"] += 1
        self.stats["last_undone"] = undone
        self.log.clear()
        shutil.rmtree(os.path.join(self.backing, TRASH), ignore_errors=True)
        os.makedirs(os.path.join(self.backing, TRASH), exist_ok=True)
        self.stats["cuts"] += 1
        with open(os.path.join(self.control, "stats"), "w") as f:
            json.dump(self.stats, f)

    # -- metadata ------------------------------------------------------
    def access(self, path, mode):
        if not os.access(self._p(path), mode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        with self.lock:
            st = os.lstat(self._p(path)) if fh is None else os.fstat(fh)
            out = {k: getattr(st, k) for k in (
                "st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                "st_blocks", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
            d = self.dirty.get(st.st_ino)
            if d is not None:
                out["st_size"] = d.size
        out["st_atime"] = out.pop("st_atime_ns")
        out["st_mtime"] = out.pop("st_mtime_ns")
        out["st_ctime"] = out.pop("st_ctime_ns")
        return out

    def statfs(self, path):
        sv = os.statvfs(self._p(path))
        return {k: getattr(sv, k) for k in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
            "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

    def readdir(self, path, fh):
        names = os.listdir(self._p(path))
        if path == "/":
            names = [n for n in names if n != TRASH]
        return [".", ".."] + names

    def chmod(self, path, mode):
        os.chmod(self._p(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._p(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._p(path), ns=times)

    def mkdir(self, path, mode):
        with self.lock:
            real = self._p(path)
            os.mkdir(real, mode)
            self._logged(lambda: shutil.rmtree(real), [self._parent(path)],
                         "mkdir " + path)

    def rmdir(self, path):
        with self.lock:
            real = self._p(path)
            if os.listdir(real):
                raise FuseOSError(errno.ENOTEMPTY)
            t = self._trash(real)
            self._logged(lambda: os.rename(t, real), [self._parent(path)],
                         "rmdir " + path, [t])

    def unlink(self, path):
        with self.lock:
            real = self._p(path)
            t = self._trash(real)
            self._logged(lambda: os.rename(t, real), [self._parent(path)],
                         "unlink " + path, [t])

    def rename(self, old, new):
        with self.lock:
            ro, rn = self._p(old), self._p(new)
            replaced = self._trash(rn) if os.path.lexists(rn) else None
            os.rename(ro, rn)

            def undo():
                os.rename(rn, ro)
                if replaced is not None:
                    os.rename(replaced, rn)

            self._logged(undo, {self._parent(old), self._parent(new)},
                         "rename %s %s" % (old, new),
                         [replaced] if replaced else [])

    def link(self, target, name):
        # fusepy: make `target` a new name of the existing file `name`.
        with self.lock:
            new = self._p(target)
            os.link(self._p(name), new)
            self._logged(lambda: os.unlink(new), [self._parent(target)],
                         "link %s %s" % (name, target))

    def symlink(self, name, target):
        raise FuseOSError(errno.EOPNOTSUPP)

    def truncate(self, path, length, fh=None):
        with self.lock:
            fd = fh if fh is not None else os.open(self._p(path), os.O_RDONLY)
            try:
                ino = os.fstat(fd).st_ino
                d = self._dirty_for(ino, fd)
                # Blocks past the new end are gone; the one it cuts keeps
                # only its head.
                for i in [i for i in d.blocks if i * BLOCK >= length]:
                    del d.blocks[i]
                last = length // BLOCK
                if length % BLOCK:
                    b = self._block(d, fd, last)
                    b[length % BLOCK:] = b"\0" * (BLOCK - length % BLOCK)
                if length < d.size:
                    # Backing bytes between length and the old size must
                    # read as zeros if the file grows again before a sync.
                    for i in range(-(-length // BLOCK), -(-d.size // BLOCK)):
                        d.blocks[i] = bytearray(BLOCK)
                d.size = length
            finally:
                if fh is None:
                    os.close(fd)

    # -- files ---------------------------------------------------------
    def _open_flags(self, flags):
        strip = getattr(os, "O_DIRECT", 0) | os.O_TRUNC | os.O_CREAT | os.O_EXCL
        strip |= os.O_SYNC | getattr(os, "O_DSYNC", 0)
        acc = flags & os.O_ACCMODE
        # Written back on fsync: the backing fd must be writable.
        if acc == os.O_WRONLY:
            flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
        return flags & ~strip

    def _opened(self, fd, flags):
        ino = os.fstat(fd).st_ino
        self.fh_ino[fd] = ino
        if flags & (os.O_SYNC | getattr(os, "O_DSYNC", 0)):
            self.fh_sync.add(fd)
        return ino

    def open(self, path, flags):
        with self.lock:
            fd = os.open(self._p(path), self._open_flags(flags))
            ino = self._opened(fd, flags)
            if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
                self.truncate(path, 0, fd)
            return fd

    def create(self, path, mode, fi=None):
        with self.lock:
            real = self._p(path)
            existed = os.path.lexists(real)
            fd = os.open(real, os.O_RDWR | os.O_CREAT, mode)
            ino = self._opened(fd, 0)
            if not existed:
                # A new inode may reuse the number of one deleted for good
                # (its trash entry removed): nothing unsynced is its own.
                self.dirty.pop(ino, None)
            if existed:
                self.truncate(path, 0, fd)
            else:
                self._logged(lambda: os.unlink(real), [self._parent(path)],
                             "create " + path)
            return fd

    def read(self, path, size, offset, fh):
        with self.lock:
            d = self.dirty.get(self.fh_ino[fh])
            if d is None:
                return os.pread(fh, size, offset)
            end = min(offset + size, d.size)
            out = bytearray()
            pos = offset
            while pos < end:
                i = pos // BLOCK
                b = d.blocks.get(i)
                if b is None:
                    b = self._block(d, fh, i)
                n = min(BLOCK - pos % BLOCK, end - pos)
                out += b[pos % BLOCK: pos % BLOCK + n]
                pos += n
            return bytes(out)

    def write(self, path, data, offset, fh):
        with self.lock:
            ino = self.fh_ino[fh]
            d = self._dirty_for(ino, fh)
            pos = 0
            while pos < len(data):
                at = offset + pos
                i = at // BLOCK
                b = self._block(d, fh, i)
                n = min(BLOCK - at % BLOCK, len(data) - pos)
                b[at % BLOCK: at % BLOCK + n] = data[pos: pos + n]
                pos += n
            d.size = max(d.size, offset + len(data))
            if fh in self.fh_sync:
                self._sync_file(ino, fh)
            return len(data)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        with self.lock:
            self.fh_ino.pop(fh, None)
            self.fh_sync.discard(fh)
            os.close(fh)
        return 0

    def fsync(self, path, datasync, fh):
        with self.lock:
            self.stats["fsyncs"] += 1
            self._sync_file(self.fh_ino[fh], fh)
        return 0

    def fsyncdir(self, path, datasync, fh):
        with self.lock:
            self.stats["fsyncdirs"] += 1
            real = self._p(path).rstrip("/") or "/"
            fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            keep = []
            for entry in self.log:
                entry[1].discard(real)
                if entry[1]:
                    keep.append(entry)
                else:
                    for t in entry[3]:
                        self._forget(t)
            self.log = keep
        return 0


def main():
    if len(sys.argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    backing, mountpoint, control = sys.argv[1:]
    os.makedirs(control, exist_ok=True)
    FUSE(
        PowerCutFs(backing, control),
        mountpoint,
        foreground=True,
        nothreads=False,
        fsname="powercut_fs",
        direct_io=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
