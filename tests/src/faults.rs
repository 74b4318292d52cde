//! Real disk faults for tests: a FUSE passthrough that returns EIO on
//! demand (`tests/faults/eio_fs.py`), a FUSE filesystem that loses what
//! was not synced on a power cut (`tests/faults/powercut_fs.py`) and a
//! small loop-mounted ext4 that fills up. Both are torn down on drop, also when the test fails: declare
//! them after the temp dir and before the agents, so agents (holding files
//! open) die first and the temp dir goes last.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `path` is a mount point now (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m) == want)
}

/// Unmounts `path`: normally, then lazily if it is busy.
fn unmount(path: &Path, fuse: bool) {
    if !is_mounted(path) {
        return;
    }
    let first = if fuse { "fusermount3" } else { "umount" };
    let args: &[&str] = if fuse { &["-u"] } else { &[] };
    let ok = Command::new(first)
        .args(args)
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (tests/run.sh installs it)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `tests/faults/<name>`.
fn fault_tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("faults")
        .join(name)
}

/// Starts the FUSE tool `tests/faults/<script>` with `base/backing`
/// mounted at `base/mnt` and its control files in `base/control`; waits
/// until it is mounted (panics after 15 s with the tool's output).
fn mount_fuse(script: &str, base: &Path) -> (PathBuf, PathBuf, PathBuf, Child) {
    let (backing, path, control) = (base.join("backing"), base.join("mnt"), base.join("control"));
    for d in [&backing, &path, &control] {
        std::fs::create_dir_all(d).unwrap();
    }
    let log = base.join(format!("{script}.log"));
    let mut child = Command::new("/usr/bin/python3")
        .arg(fault_tool(script))
        .args([&backing, &path, &control])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("start tests/faults/{script}: {e} (apt-get install fuse3 python3-fusepy)")
        });
    let deadline = Instant::now() + Duration::from_secs(15);
    while !is_mounted(&path) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{script} exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{script} did not mount in 15 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (path, backing, control, child)
}

/// Unmounts a FUSE tool's mount and ends its process.
fn end_fuse(path: &Path, child: Option<Child>) {
    unmount(path, true);
    if let Some(mut c) = child {
        // fusermount ends the process; kill it if the unmount was lazy
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A FUSE passthrough mounted at `path` over `backing`; EIO on demand.
pub struct EioFs {
    /// The mount point: give it to an agent as `--disk`.
    pub path: PathBuf,
    /// Where the files really are.
    pub backing: PathBuf,
    control: PathBuf,
    child: Option<Child>,
}

impl EioFs {
    /// Mounts a new passthrough under `root/<name>` and waits until it is
    /// mounted (panics after 15 s with the tool's output).
    pub fn mount(root: &Path, name: &str) -> EioFs {
        let (path, backing, control, child) = mount_fuse("eio_fs.py", &root.join(name));
        EioFs {
            path,
            backing,
            control,
            child: Some(child),
        }
    }

    fn set(&self, flag: &str, on: bool) {
        let p = self.control.join(flag);
        if on {
            std::fs::write(&p, b"").unwrap();
        } else if p.exists() {
            std::fs::remove_file(&p).unwrap();
        }
    }

    /// Writes, fsyncs and metadata changes fail with EIO while on.
    pub fn fail_writes(&self, on: bool) {
        self.set("fail-writes", on);
    }

    /// Reads fail with EIO while on.
    pub fn fail_reads(&self, on: bool) {
        self.set("fail-reads", on);
    }
}

impl Drop for EioFs {
    fn drop(&mut self) {
        self.set("fail-writes", false);
        self.set("fail-reads", false);
        end_fuse(&self.path, self.child.take());
    }
}

/// A FUSE filesystem (`tests/faults/powercut_fs.py`) that keeps every
/// unsynced write and name change in memory and drops them on a power
/// cut: fsync of a file makes its data durable, fsync of a directory its
/// creates, renames and unlinks.
pub struct PowerCutFs {
    /// The mount point: give it to an agent as `--disk`.
    pub path: PathBuf,
    /// Where the synced files are.
    pub backing: PathBuf,
    control: PathBuf,
    child: Option<Child>,
}

impl PowerCutFs {
    /// Mounts a new one under `root/<name>`.
    pub fn mount(root: &Path, name: &str) -> PowerCutFs {
        let (path, backing, control, child) = mount_fuse("powercut_fs.py", &root.join(name));
        PowerCutFs {
            path,
            backing,
            control,
            child: Some(child),
        }
    }

    /// The power goes: everything not synced is lost. Kill the processes
    /// using the mount first. Returns when the filesystem has dropped it.
    pub fn cut(&self) {
        let flag = self.control.join("cut");
        std::fs::write(&flag, b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while flag.exists() {
            assert!(
                Instant::now() < deadline,
                "powercut_fs.py did not cut in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The tool's counters after the last cut (JSON: cuts, bytes_dropped,
    /// names_undone, fsyncs, fsyncdirs).
    pub fn stats(&self) -> String {
        std::fs::read_to_string(self.control.join("stats")).unwrap_or_default()
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        end_fuse(&self.path, self.child.take());
    }
}

/// A small ext4 filesystem in an image file on a loop device, mounted.
pub struct LoopExt4 {
    /// The mount point: give it (or a directory in it) to an agent.
    pub path: PathBuf,
    image: PathBuf,
    device: String,
}

impl LoopExt4 {
    /// Makes a `mib` MiB ext4 (no root-reserved blocks, so root — the
    /// agent — sees ENOSPC exactly when `df` shows 0 free) under
    /// `root/<name>` and mounts it.
    pub fn create(root: &Path, name: &str, mib: u64) -> LoopExt4 {
        let base = root.join(name);
        let (image, path) = (base.join("disk.img"), base.join("mnt"));
        std::fs::create_dir_all(&path).unwrap();
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(mib << 20).unwrap();
        drop(f);
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                "nodiscard",
                image.to_str().unwrap(),
            ],
        );
        let device = run("losetup", &["-f", "--show", image.to_str().unwrap()]);
        let fs = LoopExt4 {
            path,
            image,
            device,
        };
        run("mount", &[&fs.device, fs.path.to_str().unwrap()]);
        fs
    }

    /// Free bytes as an unprivileged user would see them (`f_bavail`).
    pub fn free_bytes(&self) -> u64 {
        let out = run("stat", &["-f", "-c", "%a %S", self.path.to_str().unwrap()]);
        let mut it = out.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        let (blocks, size) = (it.next().unwrap(), it.next().unwrap());
        blocks * size
    }

    /// Fills the filesystem with `name`, leaving about `leave` bytes free
    /// (written, not fallocated, and synced).
    pub fn fill(&self, name: &str, leave: u64) {
        use std::io::Write;
        let file = self.path.join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        loop {
            let free = self.free_bytes();
            if free <= leave {
                break;
            }
            let n = ((free - leave) as usize).min(chunk.len());
            match f.write_all(&chunk[..n.max(4096)]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill {}: {e}", file.display()),
            }
            f.sync_data().unwrap();
        }
    }

    /// Removes a file made by [`LoopExt4::fill`].
    pub fn unfill(&self, name: &str) {
        std::fs::remove_file(self.path.join(name)).unwrap();
        run("sync", &["-f", self.path.to_str().unwrap()]);
    }

    /// The loop device (`/dev/loop3`).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The image file (for logs).
    pub fn image(&self) -> &Path {
        &self.image
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        unmount(&self.path, false);
        let _ = Command::new("losetup")
            .args(["-d", &self.device])
            .stderr(Stdio::null())
            .status();
    }
}

/// A cgroup (v1) of one controller holding one process, for throttling it
/// (blkio for a slow disk, cpu for a starved agent). Moves the process
/// back to the controller's root cgroup and removes itself on drop.
pub struct CgroupV1 {
    root: PathBuf,
    dir: PathBuf,
    pid: u32,
}

impl CgroupV1 {
    /// Creates `/sys/fs/cgroup/<controller>/vigil-test-<test pid>-<pid>`
    /// and moves `pid` (every thread) into it. Needs root and the v1
    /// controller mounted there.
    pub fn new(controller: &str, pid: u32) -> CgroupV1 {
        let root = Path::new("/sys/fs/cgroup").join(controller);
        assert!(
            root.join("cgroup.procs").exists(),
            "the {controller} cgroup (v1) is not mounted at {}",
            root.display()
        );
        let dir = root.join(format!("vigil-test-{}-{pid}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = CgroupV1 { root, dir, pid };
        g.set("cgroup.procs", &pid.to_string());
        g
    }

    /// Writes `value` into the cgroup's control file `file`.
    pub fn set(&self, file: &str, value: &str) {
        std::fs::write(self.dir.join(file), value).unwrap_or_else(|e| {
            panic!("write {value:?} to {}: {e}", self.dir.join(file).display())
        });
    }
}

impl Drop for CgroupV1 {
    fn drop(&mut self) {
        let _ = std::fs::write(self.root.join("cgroup.procs"), self.pid.to_string());
        let _ = std::fs::remove_dir(&self.dir);
    }
}
