//! A real filesystem on a volume, as a VM or a container would have it:
//! `nbdfuse` exposes the NBD export as a file, `losetup` makes that file a
//! block device, and ext4 goes on the device.
//!
//! Faults reach the filesystem the way they reach a guest: an engine that
//! hangs makes its I/O hang; killing `nbdfuse` fails every request still
//! waiting (FUSE aborts them), which the loop device hands to ext4 as I/O
//! errors — a crash of the "machine" from the filesystem's point of view.
//! Mounting again on a new attachment replays the journal.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools::{run, try_run};

/// One stack: nbdfuse on an export, a loop device on its file, and the
/// filesystem's mount point (mounted or not).
pub struct FsStack {
    fuse_dir: PathBuf,
    /// Mount point of the filesystem.
    pub mnt: PathBuf,
    /// `/dev/loopN`.
    pub loop_dev: String,
    nbdfuse: Option<Child>,
    mounted: bool,
}

impl FsStack {
    /// Exposes `uri` as a block device; `dir` holds the FUSE and the
    /// filesystem mount points (made here).
    pub fn attach(uri: &str, dir: &Path) -> FsStack {
        let fuse_dir = dir.join("fuse");
        let mnt = dir.join("fs");
        std::fs::create_dir_all(&fuse_dir).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let child = Command::new("nbdfuse")
            .arg(&fuse_dir)
            .arg(uri)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run nbdfuse (apt-get install libnbd-bin fuse3)");
        let file = fuse_dir.join("nbd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !file.exists() {
            assert!(
                Instant::now() < deadline,
                "nbdfuse did not expose {uri} in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let loop_dev = run("losetup", &["-f", "--show", file.to_str().unwrap()])
            .trim()
            .to_string();
        FsStack {
            fuse_dir,
            mnt,
            loop_dev,
            nbdfuse: Some(child),
            mounted: false,
        }
    }

    /// `mkfs.ext4` on the device.
    pub fn mkfs(&self) {
        run("mkfs.ext4", &["-q", "-F", &self.loop_dev]);
    }

    /// Mounts the filesystem (replaying its journal if it needs it).
    pub fn mount(&mut self) {
        run("mount", &[&self.loop_dev, self.mnt.to_str().unwrap()]);
        self.mounted = true;
    }

    /// Unmounts the filesystem cleanly.
    pub fn umount(&mut self) {
        run("umount", &[self.mnt.to_str().unwrap()]);
        self.mounted = false;
    }

    /// `e2fsck -fn` (forced, read-only): whether it found nothing to fix,
    /// and its output.
    pub fn fsck(&self) -> (bool, String) {
        assert!(!self.mounted, "fsck of a mounted filesystem");
        try_run("e2fsck", &["-fn", &self.loop_dev])
    }

    /// The machine dies: nbdfuse is killed (every request waiting on the
    /// export fails), the filesystem is unmounted lazily and the device
    /// detached. Nothing is flushed.
    pub fn crash(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        if let Some(mut c) = self.nbdfuse.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.mounted {
            let _ = try_run("umount", &["-l", self.mnt.to_str().unwrap()]);
            self.mounted = false;
        }
        let _ = try_run("losetup", &["-d", &self.loop_dev]);
        let _ = try_run(
            "fusermount3",
            &["-u", "-z", self.fuse_dir.to_str().unwrap()],
        );
    }

    /// A clean stop: unmount, detach, end nbdfuse.
    pub fn close(mut self) {
        if self.mounted {
            self.umount();
        }
        self.teardown();
    }
}

impl Drop for FsStack {
    fn drop(&mut self) {
        self.teardown();
    }
}
