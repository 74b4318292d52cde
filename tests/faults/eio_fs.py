#!/usr/bin/python3
"""A FUSE passthrough that returns EIO on demand, for fault-injection tests.

    eio_fs.py BACKING MOUNTPOINT CONTROL_DIR

Mounts BACKING at MOUNTPOINT (in the foreground: the process is the mount;
kill it or `fusermount3 -u MOUNTPOINT` to end it) and passes every call
through, except while a control file exists in CONTROL_DIR (outside the
mount, so a test can flip it whatever the mount does):

    fail-writes   write, fsync/fdatasync, fsyncdir, create, mkdir, rename,
                  unlink, truncate, fallocate-free setattr calls -> EIO
    fail-reads    read -> EIO
    delay-ms      (contents: a number) sleep that long before each read,
                  write and fsync

Uses Debian's python3-fusepy (module `fusepy`, libfuse 2). What replicas
need works through it: pread/pwrite at any offset, fsync (files and
directories), rename, O_DIRECT (the kernel's FUSE direct I/O path; the flag
is stripped on the backing file, where Python's buffers are not aligned).
Two things FUSE (libfuse 2) lacks and the replica layer copes with:
`fallocate` (punch hole) answers EOPNOTSUPP, so trims write zeros, and
`lseek SEEK_DATA/SEEK_HOLE` reports the whole file as data, so opening a
replica reads its files in full.
"""

import errno
import os
import sys
import time

from fusepy import FUSE, FuseOSError, Operations


class EioFs(Operations):
    use_ns = True

    def __init__(self, backing, control):
        self.backing = os.path.realpath(backing)
        self.control = control

    # -- fault control -------------------------------------------------
    def _flag(self, name):
        return os.path.exists(os.path.join(self.control, name))

    def _delay(self):
        p = os.path.join(self.control, "delay-ms")
        try:
            with open(p) as f:
                ms = float(f.read().strip() or 0)
        except (OSError, ValueError):
            return
        if ms > 0:
            time.sleep(ms / 1000.0)

    def _write_gate(self):
        self._delay()
        if self._flag("fail-writes"):
            raise FuseOSError(errno.EIO)

    def _read_gate(self):
        self._delay()
        if self._flag("fail-reads"):
            raise FuseOSError(errno.EIO)

    def _p(self, path):
        return os.path.join(self.backing, path.lstrip("/"))

    # -- metadata ------------------------------------------------------
    def access(self, path, mode):
        if not os.access(self._p(path), mode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        st = os.lstat(self._p(path)) if fh is None else os.fstat(fh)
        out = {
            k: getattr(st, k)
            for k in (
                "st_mode",
                "st_nlink",
                "st_uid",
                "st_gid",
                "st_size",
                "st_blocks",
                "st_atime_ns",
                "st_mtime_ns",
                "st_ctime_ns",
            )
        }
        # fusepy with use_ns takes st_atime etc. in nanoseconds
        out["st_atime"] = out.pop("st_atime_ns")
        out["st_mtime"] = out.pop("st_mtime_ns")
        out["st_ctime"] = out.pop("st_ctime_ns")
        return out

    def statfs(self, path):
        sv = os.statvfs(self._p(path))
        return {
            k: getattr(sv, k)
            for k in (
                "f_bavail",
                "f_bfree",
                "f_blocks",
                "f_bsize",
                "f_favail",
                "f_ffree",
                "f_files",
                "f_flag",
                "f_frsize",
                "f_namemax",
            )
        }

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._p(path))

    def readlink(self, path):
        return os.readlink(self._p(path))

    def chmod(self, path, mode):
        self._write_gate()
        os.chmod(self._p(path), mode)

    def chown(self, path, uid, gid):
        self._write_gate()
        os.chown(self._p(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._p(path), ns=times)

    def mkdir(self, path, mode):
        self._write_gate()
        os.mkdir(self._p(path), mode)

    def rmdir(self, path):
        self._write_gate()
        os.rmdir(self._p(path))

    def unlink(self, path):
        self._write_gate()
        os.unlink(self._p(path))

    def rename(self, old, new):
        self._write_gate()
        os.rename(self._p(old), self._p(new))

    def link(self, target, name):
        self._write_gate()
        os.link(self._p(name), self._p(target))

    def symlink(self, name, target):
        self._write_gate()
        os.symlink(target, self._p(name))

    def truncate(self, path, length, fh=None):
        self._write_gate()
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._p(path), length)

    # -- files ---------------------------------------------------------
    @staticmethod
    def _flags(flags):
        return flags & ~getattr(os, "O_DIRECT", 0)

    def open(self, path, flags):
        if flags & (os.O_WRONLY | os.O_RDWR) and flags & os.O_TRUNC:
            self._write_gate()
        return os.open(self._p(path), self._flags(flags))

    def create(self, path, mode, fi=None):
        self._write_gate()
        return os.open(self._p(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)

    def read(self, path, size, offset, fh):
        self._read_gate()
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        self._write_gate()
        return os.pwrite(fh, data, offset)

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        os.close(fh)
        return 0

    def fsync(self, path, datasync, fh):
        self._write_gate()
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def fsyncdir(self, path, datasync, fh):
        self._write_gate()
        fd = os.open(self._p(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0


def main():
    if len(sys.argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    backing, mountpoint, control = sys.argv[1:]
    os.makedirs(control, exist_ok=True)
    FUSE(
        EioFs(backing, control),
        mountpoint,
        foreground=True,
        nothreads=False,
        # The agent runs as the same user; allow_other is not needed.
        fsname="eio_fs",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
