//! What is vigil's, told to the kernel's filter maps:
//!
//! * **replica files** — the kernel sees only an fd at `sys_enter`, so the
//!   agent lists its own open fds (`/proc/self/fd`) every second and
//!   registers those under a disk's `replicas/` directory as fd → disk.
//!   Layer files stay open for the replica's life, so the gap (an fd
//!   opened less than a second ago is not yet traced; a closed one reused
//!   within that second may be counted against the disk) is small;
//!   resolving the file in the kernel instead needs BTF/CO-RE access to
//!   the task's file table, which we avoid for portability.
//! * **block devices** — each disk's filesystem device (`st_dev`), or the
//!   whole disk when it is a partition (block tracepoints report the
//!   disk); a disk on a filesystem with no block device (tmpfs, overlay)
//!   has no block figures.
//! * **peers** — the remote ends of replica connections (`peers.rs`):
//!   other nodes' replica servers and the clients of this one (IPv4).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use vigil_ebpf::Tracer;

use super::Observed;

/// A block device: kernel dev_t and name (`loop3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub dev: u32,
    pub name: String,
}

/// Names the renderer and the summary need for kernel keys.
#[derive(Debug, Default)]
pub struct Names {
    /// Disk index (as registered in `fd_disk`) → disk UUID, path, device.
    pub disks: Vec<(String, PathBuf, Option<Device>)>,
    /// Kernel dev_t → device name.
    pub devices: BTreeMap<u32, String>,
    /// Traced remote end of a replica connection → node name.
    pub peers: BTreeMap<(Ipv4Addr, u16), String>,
    /// Per node, the last figures of ends no longer traced.
    pub retired_peers: BTreeMap<String, super::peers::PeerTotals>,
}

static NAMES: Mutex<Names> = Mutex::new(Names {
    disks: Vec::new(),
    devices: BTreeMap::new(),
    peers: BTreeMap::new(),
    retired_peers: BTreeMap::new(),
});

/// The current names (a poisoned lock still holds consistent data: every
/// update replaces whole fields).
pub fn names() -> MutexGuard<'static, Names> {
    NAMES.lock().unwrap_or_else(|p| p.into_inner())
}

/// The block device holding `path`, as block tracepoints name it.
pub fn device_of(path: &Path) -> Option<Device> {
    let md = std::fs::metadata(path).ok()?;
    let st = md.dev();
    let (major, minor) = (libc::major(st), libc::minor(st));
    if major == 0 {
        return None;
    }
    let sys = Path::new("/sys/dev/block").join(format!("{major}:{minor}"));
    let real = std::fs::canonicalize(&sys).ok()?;
    let disk = if real.join("partition").exists() {
        real.parent()?.to_path_buf()
    } else {
        real
    };
    let dev = std::fs::read_to_string(disk.join("dev")).ok()?;
    let (ma, mi) = dev.trim().split_once(':')?;
    Some(Device {
        dev: vigil_ebpf::kernel_dev(ma.parse().ok()?, mi.parse().ok()?),
        name: disk.file_name()?.to_string_lossy().into_owned(),
    })
}

pub struct Targets {
    /// `<disk>/replicas` per disk index.
    replica_dirs: Vec<PathBuf>,
    files: BTreeMap<u32, u32>,
    peers: BTreeSet<(Ipv4Addr, u16)>,
}

impl Targets {
    /// Registers the disks' devices (fixed for the agent's life: disks are
    /// opened at start).
    pub fn new(h: &Observed) -> Targets {
        let mut disks = Vec::new();
        let mut devices = BTreeMap::new();
        for d in h.replicas.disks() {
            let dev = device_of(&d.path);
            if let Some(dv) = &dev {
                devices.insert(dv.dev, dv.name.clone());
            }
            disks.push((d.uuid.clone(), d.path.clone(), dev));
        }
        if let Some(t) = super::tracer()
            && let Err(e) = t.set_devices(&devices.keys().copied().collect())
        {
            tracing::warn!(error = %e, "eBPF: register block devices");
        }
        let replica_dirs = disks.iter().map(|(_, p, _)| p.join("replicas")).collect();
        let mut n = names();
        n.disks = disks;
        n.devices = devices;
        Targets {
            replica_dirs,
            files: BTreeMap::new(),
            peers: BTreeSet::new(),
        }
    }

    /// Registers the agent's open replica files.
    pub fn refresh_files(&mut self, tracer: &Tracer) {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        let mut files = BTreeMap::new();
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(target) = std::fs::read_link(entry.path()) else {
                continue;
            };
            if let Some(i) = self.replica_dirs.iter().position(|d| target.starts_with(d)) {
                files.insert(fd, i as u32);
            }
        }
        if files != self.files {
            match tracer.set_files(&files) {
                Ok(()) => self.files = files,
                Err(e) => tracing::warn!(error = %e, "eBPF: register replica files"),
            }
        }
    }

    /// Registers the remote ends of replica connections (`peers.rs`).
    pub async fn refresh_peers(&mut self, h: &Observed, tracer: &Tracer) {
        let Some(ends) = super::peers::ends(h).await else {
            return;
        };
        let set: BTreeSet<_> = ends.keys().copied().collect();
        if set == self.peers {
            names().peers = ends;
            return;
        }
        // The names stay locked across the map change, so a reader sees an
        // end's figures either in the map or in the retired totals, never
        // in neither (a counter would go back).
        let mut n = names();
        match tracer.set_peers(&set) {
            Ok(update) => {
                if update.not_traced > 0 {
                    tracing::warn!(
                        ends = update.not_traced,
                        error = update.last_error.as_deref().unwrap_or(""),
                        "eBPF: replica connections not traced (tcp_peers map full); tried again when they change"
                    );
                }
                self.peers = set;
                let before = std::mem::take(&mut n.peers);
                super::peers::retire(&mut n, &update.gone, &before);
                n.peers = ends;
            }
            Err(e) => tracing::warn!(error = %e, "eBPF: register replica peers"),
        }
    }
}
