//! What the eBPF tests share: an agent with eBPF required and a 1-replica
//! volume attached on it, and its node's kernel window.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::Agent;
use crate::agent::wait_until;

/// Whether this process runs as root (eBPF, cgroups and loop devices need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// An agent `n1` on the disk `disk_dir` with eBPF required (and `extra`
/// arguments), and a 1-replica volume `v` of `size` attached on it.
pub struct TracedVolume {
    pub agent: Agent,
    /// The volume's NBD URI.
    pub endpoint: String,
    /// The replica's disk UUID.
    pub disk: String,
}

impl TracedVolume {
    pub fn start(root: &Path, disk_dir: &Path, size: &str, extra: &[&str]) -> TracedVolume {
        let disk_dir = disk_dir.to_str().unwrap();
        let mut args = vec!["--disk", disk_dir, "--ebpf", "required"];
        args.extend_from_slice(extra);
        let agent = Agent::start_with(root, "n1", "tok", &args);
        agent.wait_live();
        agent.json(&["volume", "create", "v", "--size", size, "--replicas", "1"]);
        let (ok, out, err) = agent.cli(&["volume", "attach", "v"]);
        assert!(ok, "attach: {err}");
        let disk = agent.json(&["volume", "get", "v"])["replicas"][0]["disk"]
            .as_str()
            .unwrap()
            .to_string();
        TracedVolume {
            agent,
            endpoint: out.trim().to_string(),
            disk,
        }
    }

    /// The node's kernel window (`node get n1` → `kernel_io`).
    pub fn window(&self) -> Value {
        self.agent.json(&["node", "get", "n1"])["kernel_io"].clone()
    }

    /// Waits (up to 40 s) for a kernel window counting at least `writes`
    /// pwrite calls on the replica's disk, and returns it.
    pub fn wait_window_with_writes(&self, writes: u64) -> Value {
        let mut window = Value::Null;
        wait_until(
            "a kernel window with writes on the disk",
            Duration::from_secs(40),
            || {
                window = self.window();
                window["disks"].as_array().is_some_and(|d| {
                    d.iter().any(|d| {
                        d["disk"] == self.disk.as_str() && d["writes"].as_u64() >= Some(writes)
                    })
                })
            },
        );
        window
    }
}
