//! The registry of health-check codes. A code is stable: dashboards,
//! alerts (`vigil_health_check{code,severity}`), mutes and
//! `docs/health-checks.md` key on it, so a code is never renamed or reused.

use serde::{Deserialize, Serialize};

/// How bad a failing check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Redundancy or headroom is reduced; data is served.
    Warning,
    /// Data is unavailable, at risk right now, or the cluster cannot act.
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One code: what it means and what to do, written for an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeInfo {
    pub code: &'static str,
    pub severity: Severity,
    /// One line: what is wrong.
    pub summary: &'static str,
    /// The probable cause.
    pub cause: &'static str,
    /// What to do, with commands.
    pub fix: &'static str,
}

pub const STORE_UNREACHABLE: &str = "STORE_UNREACHABLE";
pub const NODE_DOWN: &str = "NODE_DOWN";
pub const DISK_UNAVAILABLE: &str = "DISK_UNAVAILABLE";
pub const DISK_REPLACED: &str = "DISK_REPLACED";
pub const DISK_FULL: &str = "DISK_FULL";
pub const DISK_FAILING: &str = "DISK_FAILING";
pub const DISK_NEARLY_FULL: &str = "DISK_NEARLY_FULL";
pub const SNAPSHOT_FILE_MISSING: &str = "SNAPSHOT_FILE_MISSING";
pub const SNAPSHOT_FILE_CORRUPT: &str = "SNAPSHOT_FILE_CORRUPT";
pub const BACKEND_UNREACHABLE: &str = "BACKEND_UNREACHABLE";
pub const REPLICA_ERROR: &str = "REPLICA_ERROR";
pub const REPLICA_STOPPED: &str = "REPLICA_STOPPED";
pub const REPLICA_UNSCHEDULABLE: &str = "REPLICA_UNSCHEDULABLE";
pub const REBUILD_STUCK: &str = "REBUILD_STUCK";
pub const VOLUME_DEGRADED: &str = "VOLUME_DEGRADED";
pub const VOLUME_FAULTED: &str = "VOLUME_FAULTED";
pub const MIGRATION_STUCK: &str = "MIGRATION_STUCK";
pub const ENGINE_FENCED: &str = "ENGINE_FENCED";
pub const VOLUME_WRITES_BLOCKED: &str = "VOLUME_WRITES_BLOCKED";
pub const ENGINE_SUSPENDED: &str = "ENGINE_SUSPENDED";
pub const UNINSTALL_STUCK: &str = "UNINSTALL_STUCK";
pub const EVICTION_BLOCKED: &str = "EVICTION_BLOCKED";
pub const DISK_SLOW: &str = "DISK_SLOW";
pub const DISK_IO_ERRORS: &str = "DISK_IO_ERRORS";
pub const REPLICA_LINK_RETRANSMITS: &str = "REPLICA_LINK_RETRANSMITS";
pub const AGENT_CPU_STARVED: &str = "AGENT_CPU_STARVED";

const CODES: &[CodeInfo] = &[
    CodeInfo {
        code: STORE_UNREACHABLE,
        severity: Severity::Error,
        summary: "The agent cannot read the cluster store",
        cause: "etcd is down, has lost quorum, or is unreachable from this node (network, TLS, wrong --store address); with the embedded store, its database file cannot be read. No other check can be evaluated meanwhile and controllers cannot act.",
        fix: "Check etcd: `etcdctl --endpoints=URL endpoint health`, `journalctl -u etcd`; check the agent's --store flag and its log (`journalctl -u vigil`). Volumes already attached keep serving I/O; nothing changes until the store answers.",
    },
    CodeInfo {
        code: NODE_DOWN,
        severity: Severity::Error,
        summary: "A node's agent is not renewing its liveness lease",
        cause: "The agent on the node stopped or crashed, the machine is down, or it is cut off from the store by the network. Its replicas are unreachable and volumes attached there are not served.",
        fix: "On the node: `systemctl status vigil`, `journalctl -u vigil -n 200`; restart the agent. From here: `vigil node get NODE`. If the node is gone for good, `vigil node evict NODE` so its replicas are rebuilt elsewhere.",
    },
    CodeInfo {
        code: DISK_UNAVAILABLE,
        severity: Severity::Error,
        summary: "A registered disk is missing from its node",
        cause: "The disk's directory (and the vigil-disk.json identity file at its root) is not at its path: the filesystem is not mounted, the device failed, or the directory was removed. Replicas on it are lost until it returns.",
        fix: "On the node: `findmnt PATH`, `ls PATH/vigil-disk.json`, `dmesg | tail`; mount the filesystem again and the agent picks the disk up. If it is gone for good, the replicas on it are rebuilt elsewhere after replica-replenishment-wait-interval (`vigil settings get replica-replenishment-wait-interval`).",
    },
    CodeInfo {
        code: DISK_REPLACED,
        severity: Severity::Warning,
        summary: "Another disk (another UUID) is now at a registered disk's path",
        cause: "The filesystem at the path was reformatted, swapped or mounted from another device: the identity file holds a new UUID. The old disk's replicas are not on the new one.",
        fix: "If the swap was intended, nothing is needed: the old replicas are rebuilt on other disks and the new disk takes new replicas. If not, mount the original device at the path again (`findmnt PATH`) and check with `vigil disk list`.",
    },
    CodeInfo {
        code: DISK_FULL,
        severity: Severity::Error,
        summary: "A disk's free space is below its reservation (or 5% of its capacity), or writes to it failed with no space left",
        cause: "Replicas (sparse files growing as volumes are written) or other users of the filesystem filled it. Writes to replicas here fail with no_space (ENOSPC) and the replicas go ERR; vigil places no new replica on the disk until writes work again.",
        fix: "Free space on the filesystem (`df -h PATH`, `du -sh PATH/*`), delete unneeded volumes or snapshots (`vigil volume snapshot delete V S`), or move replicas away: `vigil node update NODE --allow-scheduling false` and evict. Lower storage-over-provisioning-percentage to avoid over-commit.",
    },
    CodeInfo {
        code: DISK_FAILING,
        severity: Severity::Error,
        summary: "A disk returns I/O errors",
        cause: "Reads, writes or syncs of files on the disk failed with an I/O error (EIO) or hung: a failing drive or controller, a bad cable, a filesystem that went read-only after an error, or a network/FUSE filesystem that lost its backend. Replicas on it went ERR with reason io_error; the volumes keep serving from their other replicas.",
        fix: "On the disk's node: `dmesg -T | grep -iE 'error|I/O|ext4|xfs'`, `smartctl -a DEVICE` (find DEVICE with `findmnt -T PATH`), `journalctl -u vigil | grep DISK`. vigil places no new replica on the disk meanwhile (`vigil volume create` names it in its reasons) and rebuilds the ERR replicas from healthy ones once the disk works again; the check clears 60 s after the last error. Replace the drive if errors recur: `vigil node update NODE --allow-scheduling false`, evict, swap the disk.",
    },
    CodeInfo {
        code: DISK_NEARLY_FULL,
        severity: Severity::Warning,
        summary: "A disk's free space is below 15% of its capacity",
        cause: "Replicas are filling the disk as their volumes are written (they are sparse, so scheduled space is used only as data arrives), or something else uses the filesystem.",
        fix: "Plan space before it is full: `df -h PATH`, `vigil disk list`; delete unneeded snapshots or volumes, add a disk (`vigil agent --disk`), or stop scheduling there (`vigil node update NODE --allow-scheduling false`).",
    },
    CodeInfo {
        code: SNAPSHOT_FILE_MISSING,
        severity: Severity::Error,
        summary: "A layer file of a replica's chain is missing",
        cause: "A file named by the replica's chain metadata is not in its directory: deleted by hand or by a cleanup job, or lost with the filesystem. The replica cannot serve its data and is taken out of service.",
        fix: "Do not edit replica directories by hand. Check `vigil replica verify R` on the replica's node. The replica is rebuilt from a healthy one; if it was the last healthy replica, restore the file from a backup and verify again.",
    },
    CodeInfo {
        code: SNAPSHOT_FILE_CORRUPT,
        severity: Severity::Error,
        summary: "A layer file of a replica's chain is truncated, corrupt or unreadable",
        cause: "The file is shorter than its metadata says, its checksum or metadata does not match, or reading it fails: a disk fault, a filesystem error, or a file modified outside vigil.",
        fix: "Check the disk: `dmesg | grep -i error`, `smartctl -a DEVICE`; run `vigil replica verify R` on the replica's node. The replica is rebuilt from a healthy one; replace the disk if errors repeat.",
    },
    CodeInfo {
        code: BACKEND_UNREACHABLE,
        severity: Severity::Warning,
        summary: "A volume's engine lost a replica over the network while the replica's node is up",
        cause: "The engine's connection to the replica server timed out, was refused or dropped while that node's agent still renews its lease: a network problem between the two nodes (firewall, MTU, packet loss), or the replica server is overloaded or stuck.",
        fix: "From the engine's node, test the replica's address (`vigil volume get V` shows it): `nc -vz HOST PORT`; check both agents' logs (`journalctl -u vigil`) for the connection errors and the network (`ss -tin`, `ip -s link`). The replica is rebuilt once it is reachable again.",
    },
    CodeInfo {
        code: REPLICA_ERROR,
        severity: Severity::Warning,
        summary: "A replica is out of service (ERR in its engine, or failed on its node)",
        cause: "The engine marked it ERR with a reason (io_error, no_space, timeout, connection_lost, unreachable, refused, checksum_mismatch, invalid, rebuild_failed, stale), or its node could not create or open it, or its node or disk is gone. The item names the reason and the last error.",
        fix: "Read the reason in the item; `vigil volume get V` and the replica's node log (`journalctl -u vigil | grep R`). A replica on a node or disk that is back is rebuilt automatically; otherwise a new replica is placed after replica-replenishment-wait-interval.",
    },
    CodeInfo {
        code: REPLICA_STOPPED,
        severity: Severity::Warning,
        summary: "A replica of a volume is stopped on a live node",
        cause: "The replica instance was stopped (by an operator, or a controller that has not started it again), so it cannot serve its volume.",
        fix: "Check `vigil volume get V` and `vigil events --volume V` for who stopped it; the replica controller starts replicas of live volumes again — if it stays stopped, look at the node's log (`journalctl -u vigil`).",
    },
    CodeInfo {
        code: REPLICA_UNSCHEDULABLE,
        severity: Severity::Warning,
        summary: "A volume has fewer replicas than it asks for and the rest cannot be placed",
        cause: "Not enough nodes or disks satisfy the volume's rules: anti-affinity (one replica per node by default), node or disk tags, free space (storage-minimal-available-percentage, over-provisioning), or nodes disabled for scheduling.",
        fix: "Read the scheduling notes in the item and `vigil volume get V`; add a node or disk, free space, relax the rules (`vigil settings set replica-node-level-soft-anti-affinity true`), or lower the volume's replica count.",
    },
    CodeInfo {
        code: REBUILD_STUCK,
        severity: Severity::Warning,
        summary: "A replica rebuild has made no progress for longer than rebuild-stuck-timeout",
        cause: "The rebuild's source or target stopped answering (node or network trouble), the disks are saturated, or the rebuild task hangs.",
        fix: "Check `vigil volume get V` (rebuild source and progress), both nodes' logs (`journalctl -u vigil`) and disk latency (`iostat -x 1`). Detaching and attaching the volume again restarts the rebuild.",
    },
    CodeInfo {
        code: VOLUME_DEGRADED,
        severity: Severity::Warning,
        summary: "A volume has fewer healthy replicas than desired",
        cause: "One or more of its replicas failed, are rebuilding, or could not be placed: data is served but with less redundancy. The item lists the checks that explain each missing replica.",
        fix: "Fix the causes listed under the root checks; rebuilds then restore redundancy. Follow with `vigil volume get V`.",
    },
    CodeInfo {
        code: VOLUME_FAULTED,
        severity: Severity::Error,
        summary: "A volume has no healthy replica, or its engine's node is down",
        cause: "Every replica failed or is unreachable, or the node serving the volume is down: I/O to the volume fails.",
        fix: "Fix the root causes listed (a node or disk back usually brings its replicas back); `vigil volume get V`. With auto-salvage true, once every replica answers again the engine restarts over the in-sync replicas and rebuilds the others (event Salvaged); with it false the volume stays faulted: `vigil settings set auto-salvage true` to do so. If the volume's message says no in-sync replica can be reached and none will come back, `vigil volume salvage V --replica R --accept-data-loss` starts it from R, giving up what only the in-sync replicas held.",
    },
    CodeInfo {
        code: ENGINE_FENCED,
        severity: Severity::Warning,
        summary: "An engine lost its volume to a newer one and was fenced (in the last 15 minutes)",
        cause: "A replica refused the engine because a newer engine of the volume claimed it (a higher epoch): the engine's node was frozen, paused or cut off from the store long enough for the volume to be attached elsewhere, or two starts raced. The old engine wrote nothing after the claim; its NBD clients got I/O errors from then on.",
        fix: "Reconnect the old engine's clients to the volume's current endpoint (`vigil volume get V`); find why the node stalled or lost the store (`vigil events --object volume/V`, the node's log, `vigil doctor` for NODE_DOWN or STORE_UNREACHABLE). The item clears by itself after 15 minutes; `vigil health mute ENGINE_FENCED` hides it sooner.",
    },
    CodeInfo {
        code: VOLUME_WRITES_BLOCKED,
        severity: Severity::Error,
        summary: "A volume's writes wait or fail: fewer replicas are RW than min-replicas-to-write requires",
        cause: "Replicas of the volume failed or are being rebuilt, and fewer RW replicas are left than the min-replicas-to-write setting requires for a write to be acknowledged. Reads go on; writes are held (engine-on-lease-loss=suspend) or fail with EIO (io-error) until a rebuild brings enough replicas back.",
        fix: "Fix what took the replicas out (the root causes listed under VOLUME_DEGRADED, `vigil volume get V`); rebuilds bring them back by themselves. To trade durability for availability now, lower the minimum: `vigil settings set min-replicas-to-write 1`.",
    },
    CodeInfo {
        code: ENGINE_SUSPENDED,
        severity: Severity::Error,
        summary: "An engine on this node is suspended: the node cannot renew its liveness lease, so no client I/O reaches the replicas",
        cause: "The agent could not renew its node's liveness lease for nearly a TTL: the store (etcd) is down or unreachable from this node (network, firewall, a store that lost quorum). Another node may take the volume over once the lease expires, so the engine stopped replica I/O first (self-fencing): its clients' requests are held (engine-on-lease-loss=suspend) or fail with EIO (io-error). Only the suspended node's own agent can report this: it cannot write to the store.",
        fix: "Restore this node's path to the store: `etcdctl --endpoints=URL endpoint health` from this node, `journalctl -u etcd`, the agent's --store flag and log (`journalctl -u vigil`). Once a renewal succeeds the engine resumes by itself if no newer engine took the volume over (event EngineResumed), else it stays fenced (ENGINE_FENCED): reconnect its clients to the volume's current endpoint (`vigil volume get V`). `vigil engine show V` on this node shows since when.",
    },
    CodeInfo {
        code: MIGRATION_STUCK,
        severity: Severity::Error,
        summary: "A live migration neither finishes nor rolls back",
        cause: "An automatic step of a migration (target starting, pausing, source fencing, switching, rolling back) has lasted longer than migration-timeout: the agent that must take the step is down or cannot reach the store, or the target went down while switching and has not been down for node-down-timeout yet (only then may the source serve again). Until it moves on, the volume is served by at most one of the two nodes and possibly by neither.",
        fix: "`vigil volume get VOLUME -o json` shows the phase, both nodes and the last message; `vigil doctor` shows whether either node is down. Bring the down agent back (`systemctl start vigil` on it), or wait node-down-timeout for the rollback. `vigil volume migrate VOLUME --rollback` works in every phase but switching. `vigil events --volume VOLUME` lists each step taken.",
    },
    CodeInfo {
        code: UNINSTALL_STUCK,
        severity: Severity::Error,
        summary: "An uninstall has made no progress for longer than uninstall-stuck-timeout",
        cause: "What is left cannot be deleted yet: a volume detaching from a node whose agent does not act, replicas on a node that is down (they are abandoned once it has been down for node-down-timeout), or the store refusing writes. The item says what is left and why.",
        fix: "`vigil uninstall status` (what is left), `vigil doctor` (the root causes under which it is listed); bring the down node back or wait for node-down-timeout (`vigil settings get node-down-timeout`); check the agents' logs (`journalctl -u vigil`). The uninstall carries on by itself once the cause is gone; it cannot be cancelled.",
    },
    CodeInfo {
        code: EVICTION_BLOCKED,
        severity: Severity::Warning,
        summary: "A node eviction cannot move some volume's replica off the node",
        cause: "No other node and disk can take a replacement (anti-affinity: every other node already holds a replica of the volume; tags; free space; scheduling disabled), or the only healthy replicas are on the evicted node and it is down, so there is nothing to copy from. The replica stays on the node; the volume keeps its desired count.",
        fix: "Read the reasons per node in the item or `vigil node get NODE` (eviction section). Add a node or disk (`vigil agent` on a new machine), free space, relax anti-affinity (`vigil settings set replica-node-level-soft-anti-affinity true`), lower the volume's replica count, or bring the node back up if it holds the only copy. `vigil node evict NODE --cancel` stops the eviction.",
    },
    CodeInfo {
        code: DISK_SLOW,
        severity: Severity::Warning,
        summary: "The kernel measures slow writes on a disk's replica files",
        cause: "The agent's pwrite/fdatasync calls on the disk's replica files take longer than 100 ms on average (eBPF, over ~10 s) and the engine's own timing of its writes to replicas there agrees: an overloaded or failing drive, a throttled device (cgroup blkio/io.max, cloud IOPS limits), a slow network or FUSE filesystem, or another process saturating the same device. Volumes with a replica there are as slow as the slowest replica.",
        fix: "Compare syscall and block latency: `vigil doctor` shows both; `vigil_ebpf_syscall_latency_seconds` vs `vigil_ebpf_block_latency_seconds` for the disk and its device. Block latency as high as syscall latency: the device itself is slow (`iostat -x 1`, `smartctl -a DEVICE`). Block latency low: the wait is above the block layer (a cgroup throttle, the filesystem, a FUSE/NFS backend). Move replicas off it (`vigil node evict NODE`) if it stays slow.",
    },
    CodeInfo {
        code: DISK_IO_ERRORS,
        severity: Severity::Error,
        summary: "The kernel saw failing syscalls or block requests on a disk",
        cause: "Syscalls of the agent on the disk's replica files returned an error, or block requests on its device completed with an error, in the last ~10 s (eBPF): a failing drive, a filesystem that went read-only, or a network/FUSE filesystem that lost its backend.",
        fix: "On the node: `dmesg -T | grep -iE 'error|I/O'`, `smartctl -a DEVICE`, `findmnt -T PATH`. DISK_FAILING (user-space evidence) usually follows and takes the disk out of scheduling; replicas hit by the errors go ERR and are rebuilt elsewhere. Replace the drive if errors recur.",
    },
    CodeInfo {
        code: REPLICA_LINK_RETRANSMITS,
        severity: Severity::Warning,
        summary: "TCP retransmits on the replica connections from a node to a peer",
        cause: "At least 10 TCP segments were retransmitted in ~10 s by a node to another on their replica connections — its engines writing to the peer's replicas, or its replica server answering the peer's engines — (eBPF, tcp_retransmit_skb): packet loss on the path from the node to the peer, a congested or flapping link, an overloaded peer. Writes between the two slow down and may time out.",
        fix: "Check the path between the two nodes: `mtr PEER`, `ip -s link`, switch port counters; `ss -ti dst PEER` shows retransmits per connection. Look at `vigil_ebpf_tcp_rtt_seconds` for the peer.",
    },
    CodeInfo {
        code: AGENT_CPU_STARVED,
        severity: Severity::Warning,
        summary: "The agent's threads wait long for a CPU",
        cause: "The agent's threads spent 250 ms or more at a time runnable but not running (at least 3 such waits, or a 99th percentile above 250 ms, over ~10 s; eBPF on sched_switch with the scheduler's own wait accounting): the node's CPUs are saturated by other work, the agent's cgroup CPU quota is too low, or its priority is too low. I/O, pings and lease renewals are delayed; replicas may be marked ERR by timeouts and the node may look down.",
        fix: "`top`, `pidstat -u 1` on the node; check the agent's cgroup quota (`systemctl show vigil -p CPUQuota`) and nice level; give the agent a CPU reservation (systemd `CPUWeight=`) or move other work off the node.",
    },
];

/// Every code, in a fixed order (roots of causality first).
pub fn all() -> &'static [CodeInfo] {
    CODES
}

/// The definition of `code`, if it is one.
pub fn info(code: &str) -> Option<&'static CodeInfo> {
    CODES.iter().find(|c| c.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_upper_snake_and_documented() {
        let mut seen = std::collections::BTreeSet::new();
        for c in all() {
            assert!(seen.insert(c.code), "{} twice", c.code);
            assert!(
                c.code
                    .chars()
                    .all(|ch| ch.is_ascii_uppercase() || ch == '_'),
                "{}",
                c.code
            );
            assert!(!c.summary.is_empty() && !c.summary.contains('\n'));
            assert!(!c.cause.is_empty() && !c.fix.is_empty(), "{}", c.code);
        }
        assert_eq!(info(NODE_DOWN).map(|c| c.severity), Some(Severity::Error));
        assert!(info("NOPE").is_none());
    }
}
