//! Loading, attaching, filtering and reading the programs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues};
use aya::programs::BtfTracePoint;
use aya::programs::tp_btf::BtfTracePointLinkId;
use aya::{Btf, Ebpf, EbpfLoader};

use crate::OBJECT;
use crate::layout::*;
use crate::snapshot::*;
use crate::unavailable::{Reason, Unavailable};

/// `BPF_NOEXIST` (linux/bpf.h): insert only when the key is absent.
const BPF_NOEXIST: u64 = 1;

/// A group of programs that can be switched on or off as a whole
/// (`vigil agent --ebpf-probes`): the machine-wide ones (syscalls, run
/// queue) cost the most, so an operator can keep only what they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Probe {
    /// Latency and errors of the agent's syscalls on replica files.
    Syscalls,
    /// Block requests on the devices holding vigil disks.
    Block,
    /// Retransmits and RTT of the connections to replica servers.
    Tcp,
    /// Run-queue delay of the agent's threads.
    RunQueue,
}

impl Probe {
    pub const ALL: [Probe; 4] = [Probe::Syscalls, Probe::Block, Probe::Tcp, Probe::RunQueue];

    pub fn as_str(self) -> &'static str {
        match self {
            Probe::Syscalls => "syscalls",
            Probe::Block => "block",
            Probe::Tcp => "tcp",
            Probe::RunQueue => "runqueue",
        }
    }
}

/// Program name → the kernel tracepoint it is attached to, as a BTF
/// tracepoint (tp_btf: no tracefs, no trace record formatted per event),
/// and the probe it belongs to.
pub const ATTACHMENTS: &[(&str, &str, Probe)] = &[
    ("sys_enter", "sys_enter", Probe::Syscalls),
    ("sys_exit", "sys_exit", Probe::Syscalls),
    ("uring_submit", "io_uring_submit_req", Probe::Syscalls),
    ("uring_complete", "io_uring_complete", Probe::Syscalls),
    ("block_rq_issue", "block_rq_issue", Probe::Block),
    ("block_rq_complete", "block_rq_complete", Probe::Block),
    ("tcp_retransmit", "tcp_retransmit_skb", Probe::Tcp),
    ("tcp_probe", "tcp_probe", Probe::Tcp),
    ("sched_switch", "sched_switch", Probe::RunQueue),
];

/// Whether a program is switched on and off by [`Tracer::attach_syscalls`]:
/// the raw syscall tracepoints, which slow every syscall on the machine
/// while attached. The io_uring ones (the same `syscalls` probe: the
/// agent's replica reads, writes and syncs when they go through io_uring)
/// fire only for io_uring requests and stay attached, so a request's
/// submission and completion are never split by a switch.
fn sampled(prog: &str) -> bool {
    prog.starts_with("sys_")
}

/// Where the running kernel describes its types (CO-RE and tp_btf need it).
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A map operation failed after loading (the programs keep running).
#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    #[error("eBPF map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("eBPF program {prog}: {source}")]
    Program {
        prog: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> TracerError {
    move |source| TracerError::Map { map, source }
}

/// What [`Tracer::set_peers`] did beyond the plain change.
#[derive(Debug, Default)]
pub struct PeerUpdate {
    /// The last figures of the ends removed.
    pub gone: Vec<PeerSeries>,
    /// Ends that could not be added (the map is full), and why.
    pub not_traced: usize,
    pub last_error: Option<String>,
}

/// The loaded and attached programs. Dropping it detaches them.
pub struct Tracer {
    ebpf: Mutex<Ebpf>,
    probes: BTreeSet<Probe>,
    /// The syscall programs' links while attached (see [`Tracer::attach_syscalls`]).
    /// Locked after `ebpf` when both are needed.
    syscall_links: Mutex<Vec<(&'static str, BtfTracePointLinkId)>>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracer")
    }
}

/// The whole error chain in one line (aya's top-level messages are terse).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Whether an error chain holds EPERM/EACCES from the kernel.
fn denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
        {
            return true;
        }
        cur = c.source();
    }
    false
}

impl Tracer {
    /// Loads the programs with the agent's process id and this
    /// architecture's syscall numbers as constants, and attaches every
    /// tracepoint. Nothing is traced per disk, device or peer until the
    /// `set_*` calls say what is vigil's. Only the programs of `probes`
    /// are loaded and attached.
    pub fn load(tgid: u32, probes: &BTreeSet<Probe>) -> Result<Tracer, Unavailable> {
        let btf = Btf::from_sys_fs().map_err(|e| {
            Unavailable::new(
                Reason::NoBtf,
                format!(
                    "the kernel has no readable BTF at {KERNEL_BTF} (build it with \
                     CONFIG_DEBUG_INFO_BTF=y): {}",
                    chain(&e)
                ),
            )
        })?;
        let syscalls: [(&str, i64); 8] = [
            ("nr_pread64", libc::SYS_pread64),
            ("nr_preadv", libc::SYS_preadv),
            ("nr_preadv2", libc::SYS_preadv2),
            ("nr_pwrite64", libc::SYS_pwrite64),
            ("nr_pwritev", libc::SYS_pwritev),
            ("nr_pwritev2", libc::SYS_pwritev2),
            ("nr_fsync", libc::SYS_fsync),
            ("nr_fdatasync", libc::SYS_fdatasync),
        ];
        let mut loader = EbpfLoader::new();
        // Task storage (per-thread state) has no user-space API in aya; the
        // programs alone use it, so the loader may create it anyway.
        loader
            .btf(Some(&btf))
            .allow_unsupported_maps()
            .override_global("agent_tgid", &tgid, true);
        for (name, nr) in &syscalls {
            loader.override_global(name, nr, true);
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| {
            if denied(&e) {
                Unavailable::new(
                    Reason::NotPermitted,
                    format!(
                        "loading eBPF programs needs root or CAP_BPF and CAP_PERFMON: {}",
                        chain(&e)
                    ),
                )
            } else {
                Unavailable::new(Reason::LoadFailed, chain(&e))
            }
        })?;
        let mut syscall_links = Vec::new();
        for (prog, point, probe) in ATTACHMENTS {
            if !probes.contains(probe) {
                continue;
            }
            let p: &mut BtfTracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| {
                    Unavailable::new(
                        Reason::LoadFailed,
                        format!("no program {prog} in the object"),
                    )
                })?
                .try_into()
                .map_err(|e| Unavailable::new(Reason::LoadFailed, chain(&e)))?;
            p.load(point, &btf).map_err(|e| {
                let reason = if denied(&e) {
                    Reason::NotPermitted
                } else {
                    Reason::LoadFailed
                };
                Unavailable::new(reason, format!("load {prog}: {}", chain(&e)))
            })?;
            let link = p.attach().map_err(|e| {
                let reason = if denied(&e) {
                    Reason::NotPermitted
                } else {
                    Reason::AttachFailed
                };
                Unavailable::new(reason, format!("attach {prog} to {point}: {}", chain(&e)))
            })?;
            if sampled(prog) {
                syscall_links.push((*prog, link));
            }
        }
        Ok(Tracer {
            ebpf: Mutex::new(ebpf),
            probes: probes.clone(),
            syscall_links: Mutex::new(syscall_links),
        })
    }

    /// Whether the syscall programs are attached now.
    pub fn syscalls_attached(&self) -> bool {
        !self
            .syscall_links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Attaches or detaches the syscall programs (a no-op when they are
    /// already so, or when the probe was not chosen). Any syscall
    /// tracepoint in use makes every syscall of every task on the machine
    /// take the kernel's slow path, which costs far more than the
    /// programs themselves, so the agent attaches them only part of the
    /// time (see `agent/src/ebpf`).
    pub fn attach_syscalls(&self, on: bool) -> Result<(), TracerError> {
        if !self.probes.contains(&Probe::Syscalls) {
            return Ok(());
        }
        let mut ebpf = self.lock();
        let mut links = self.syscall_links.lock().unwrap_or_else(|p| p.into_inner());
        if on != links.is_empty() {
            return Ok(());
        }
        if on {
            for (prog, _, probe) in ATTACHMENTS {
                if *probe != Probe::Syscalls || !sampled(prog) {
                    continue;
                }
                let p: &mut BtfTracePoint = ebpf
                    .program_mut(prog)
                    .ok_or(TracerError::MissingProgram(prog))?
                    .try_into()
                    .map_err(|source| TracerError::Program { prog, source })?;
                let link = p
                    .attach()
                    .map_err(|source| TracerError::Program { prog, source })?;
                links.push((*prog, link));
            }
        } else {
            for (prog, link) in links.drain(..) {
                let p: &mut BtfTracePoint = ebpf
                    .program_mut(prog)
                    .ok_or(TracerError::MissingProgram(prog))?
                    .try_into()
                    .map_err(|source| TracerError::Program { prog, source })?;
                p.detach(link)
                    .map_err(|source| TracerError::Program { prog, source })?;
            }
        }
        Ok(())
    }

    /// The probes loaded and attached.
    pub fn probes(&self) -> &BTreeSet<Probe> {
        &self.probes
    }

    fn lock(&self) -> MutexGuard<'_, Ebpf> {
        // A panic while holding the lock leaves maps consistent (each
        // update is one syscall), so a poisoned lock is still usable.
        self.ebpf.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent's replica files: fd → disk index. Replaces what was set.
    pub fn set_files(&self, files: &BTreeMap<u32, u32>) -> Result<(), TracerError> {
        let mut ebpf = self.lock();
        let map = ebpf
            .map_mut("fd_disk")
            .ok_or(TracerError::MissingMap("fd_disk"))?;
        let mut m: HashMap<&mut MapData, u32, u32> =
            HashMap::try_from(map).map_err(map_err("fd_disk"))?;
        let have: BTreeMap<u32, u32> = m.iter().filter_map(Result::ok).collect();
        for fd in have.keys().filter(|fd| !files.contains_key(fd)) {
            m.remove(fd).map_err(map_err("fd_disk"))?;
        }
        for (fd, disk) in files {
            if have.get(fd) != Some(disk) {
                m.insert(fd, disk, 0).map_err(map_err("fd_disk"))?;
            }
        }
        Ok(())
    }

    /// The block devices to trace (kernel dev_t). A device newly added
    /// starts with zero counters; one removed loses them.
    pub fn set_devices(&self, devs: &BTreeSet<u32>) -> Result<(), TracerError> {
        let mut ebpf = self.lock();
        let map = ebpf
            .map_mut("blk_devs")
            .ok_or(TracerError::MissingMap("blk_devs"))?;
        let mut m: HashMap<&mut MapData, u32, DevStats> =
            HashMap::try_from(map).map_err(map_err("blk_devs"))?;
        let have: BTreeSet<u32> = m.keys().filter_map(Result::ok).collect();
        for dev in have.difference(devs) {
            m.remove(dev).map_err(map_err("blk_devs"))?;
        }
        for dev in devs.difference(&have) {
            m.insert(dev, DevStats::default(), BPF_NOEXIST)
                .map_err(map_err("blk_devs"))?;
        }
        Ok(())
    }

    /// The remote ends of the replica connections to trace (IPv4 address,
    /// port): replica servers this agent connects to, and clients of its
    /// own replica server. Returns the last figures of the ends no longer
    /// traced, so that the caller's totals do not go back when an entry
    /// goes, and the ends the map had no room for (they are tried again
    /// at the next change).
    pub fn set_peers(&self, peers: &BTreeSet<(Ipv4Addr, u16)>) -> Result<PeerUpdate, TracerError> {
        let mut ebpf = self.lock();
        let map = ebpf
            .map_mut("tcp_peers")
            .ok_or(TracerError::MissingMap("tcp_peers"))?;
        let mut m: HashMap<&mut MapData, PeerKey, PeerStats> =
            HashMap::try_from(map).map_err(map_err("tcp_peers"))?;
        let key = |(a, p): &(Ipv4Addr, u16)| PeerKey {
            addr: a.octets(),
            port: *p,
            pad: 0,
        };
        let want: BTreeSet<PeerKey> = peers.iter().map(key).collect();
        let have: BTreeSet<PeerKey> = m.keys().filter_map(Result::ok).collect();
        let mut update = PeerUpdate::default();
        for k in have.difference(&want) {
            // Read before the removal: the figures after it are lost.
            let last = m.get(k, 0).ok();
            match m.remove(k) {
                Ok(()) => update.gone.extend(last.map(|s| PeerSeries {
                    addr: Ipv4Addr::from(k.addr),
                    port: k.port,
                    rtt: Hist::from(&s.rtt),
                    retransmits: s.retransmits,
                })),
                Err(e) => update.last_error = Some(e.to_string()),
            }
        }
        let zero = PeerStats {
            rtt: RawHist {
                slots: [0; HIST_SLOTS],
                count: 0,
                sum_ns: 0,
                errors: 0,
            },
            retransmits: 0,
        };
        for k in want.difference(&have) {
            if let Err(e) = m.insert(k, zero, BPF_NOEXIST) {
                update.not_traced += 1;
                update.last_error = Some(e.to_string());
            }
        }
        Ok(update)
    }

    /// Reads every histogram and counter.
    pub fn read(&self) -> Result<Snapshot, TracerError> {
        let ebpf = self.lock();
        let get = |name: &'static str| ebpf.map(name).ok_or(TracerError::MissingMap(name));
        let mut snap = Snapshot::default();

        let m: PerCpuHashMap<&MapData, SysKey, RawHist> =
            PerCpuHashMap::try_from(get("sys_hist")?).map_err(map_err("sys_hist"))?;
        for (k, h) in m.iter().filter_map(Result::ok) {
            if let Some(op) = SysOp::from_raw(k.op) {
                snap.syscalls.push(SyscallSeries {
                    disk: k.disk,
                    op,
                    hist: sum(&h),
                });
            }
        }
        let m: PerCpuHashMap<&MapData, BlkKey, RawHist> =
            PerCpuHashMap::try_from(get("blk_hist")?).map_err(map_err("blk_hist"))?;
        for (k, h) in m.iter().filter_map(Result::ok) {
            snap.block.push(BlockSeries {
                dev: k.dev,
                op: BlkOp::from_raw(k.op),
                hist: sum(&h),
            });
        }
        let m: HashMap<&MapData, u32, DevStats> =
            HashMap::try_from(get("blk_devs")?).map_err(map_err("blk_devs"))?;
        for (dev, s) in m.iter().filter_map(Result::ok) {
            snap.devices.push(DeviceCounters {
                dev,
                issued: s.issued,
                completed: s.completed,
                errors: s.errors,
            });
        }
        let m: HashMap<&MapData, PeerKey, PeerStats> =
            HashMap::try_from(get("tcp_peers")?).map_err(map_err("tcp_peers"))?;
        for (k, s) in m.iter().filter_map(Result::ok) {
            snap.peers.push(PeerSeries {
                addr: Ipv4Addr::from(k.addr),
                port: k.port,
                rtt: Hist::from(&s.rtt),
                retransmits: s.retransmits,
            });
        }
        let a: PerCpuArray<&MapData, RawHist> =
            PerCpuArray::try_from(get("runq_hist")?).map_err(map_err("runq_hist"))?;
        if let Ok(h) = a.get(&0, 0) {
            snap.runqueue = sum(&h);
        }
        snap.syscalls.sort_by_key(|s| (s.disk, s.op));
        snap.block.sort_by_key(|s| (s.dev, s.op));
        snap.devices.sort_by_key(|d| d.dev);
        snap.peers.sort_by_key(|p| (p.addr, p.port));
        Ok(snap)
    }
}

/// One histogram from the CPUs' copies of it.
fn sum(per_cpu: &PerCpuValues<RawHist>) -> Hist {
    let mut total = Hist::default();
    for h in per_cpu.iter() {
        total.merge(&Hist::from(h));
    }
    total
}
