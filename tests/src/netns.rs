//! Network namespaces a test makes for itself, so that it can cut links
//! between nodes without touching the machine's own network.
//!
//! A [`Lab`] is one private Ethernet segment: a `hub` namespace holding a
//! bridge, and one namespace per member joined to it by a veth pair —
//! `ctl` (10.77.0.1: the test's own clients and etcd) and one per node
//! (10.77.0.11, .12, ...). Every address lives only inside these
//! namespaces; nothing is routed to or from the host. Each namespace has
//! its own nftables ruleset, so a partition is a table of drop rules in
//! the cut node's namespace ([`Lab::cut`]) and healing deletes it
//! ([`Lab::heal`]). Dropped, not rejected: a partitioned peer is silent,
//! as a pulled cable or a dead switch port is, and TCP only finds out by
//! timing out.
//!
//! The test thread enters `ctl` ([`Lab::enter_ctl`]) before it starts any
//! thread or process: both inherit the namespace of the thread that makes
//! them. Agents run under `ip netns exec` ([`Lab::wrap`]), which execs the
//! agent in place (its pid is the agent's, so signals reach it).
//!
//! Namespaces are named `vgl<pid>-*`; creating a lab first deletes those
//! left by test processes that no longer run (a test killed by a timeout
//! cannot clean up).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Subnet of every lab (each lab is its own segment, so labs of tests
/// running at once do not meet).
const NET: &str = "10.77.0";

/// One side of a cut: a peer address, or one port of it.
#[derive(Debug, Clone)]
pub enum Peer {
    /// Everything to and from this address.
    Host(String),
    /// TCP to and from this address and port only.
    Port(String, u16),
}

/// The namespaces of one test; deleted on drop.
pub struct Lab {
    prefix: String,
    nodes: usize,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the namespaces of labs whose test process is gone.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("vgl")
            .and_then(|r| r.split_once('-'))
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

impl Lab {
    /// Makes the hub, `ctl` and `nodes` node namespaces, all up and
    /// addressed. Needs root (as the eBPF and fault tests do).
    pub fn create(nodes: usize) -> Lab {
        remove_stale();
        let prefix = format!("vgl{}-", std::process::id());
        let lab = Lab { prefix, nodes };
        let hub = lab.ns("hub");
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "add", "name", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        let members: Vec<(String, String)> = std::iter::once(("ctl".to_string(), lab.ctl_ip()))
            .chain((0..nodes).map(|i| (format!("n{}", i + 1), lab.node_ip(i))))
            .collect();
        for (member, addr) in members {
            let ns = lab.ns(&member);
            let port = format!("v-{member}");
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n", &hub, "link", "add", "name", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    fn ns(&self, member: &str) -> String {
        format!("{}{member}", self.prefix)
    }

    fn node_ns(&self, node: usize) -> String {
        assert!(node < self.nodes, "node {node} of {}", self.nodes);
        self.ns(&format!("n{}", node + 1))
    }

    /// The test's own address (its clients, and etcd).
    pub fn ctl_ip(&self) -> String {
        format!("{NET}.1")
    }

    /// Node `node`'s address (0-based).
    pub fn node_ip(&self, node: usize) -> String {
        format!("{NET}.{}", 11 + node)
    }

    /// Moves the calling thread into `ctl`. Call it before starting any
    /// thread or process that should live there.
    pub fn enter_ctl(&self) {
        let path = format!("/run/netns/{}", self.ns("ctl"));
        let f = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns(2) on a namespace file we hold open; it changes
        // only the calling thread's network namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
    }

    /// The command prefix that runs a program in node `node`'s namespace.
    pub fn wrap(&self, node: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.node_ns(node),
        ]
    }

    /// Cuts node `node` from `peers` (both directions), replacing any cut
    /// it had. Connections in place stay open and go silent.
    pub fn cut(&self, node: usize, peers: &[Peer]) {
        let mut input = String::new();
        let mut output = String::new();
        for p in peers {
            match p {
                Peer::Host(a) => {
                    input.push_str(&format!("    ip saddr {a} drop\n"));
                    output.push_str(&format!("    ip daddr {a} drop\n"));
                }
                Peer::Port(a, port) => {
                    input.push_str(&format!("    ip saddr {a} tcp sport {port} drop\n"));
                    output.push_str(&format!("    ip daddr {a} tcp dport {port} drop\n"));
                }
            }
        }
        let rules = format!(
            "table inet nemesis {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{input}  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{output}  }}\n}}\n"
        );
        self.heal(node);
        nft(&self.node_ns(node), &["-f", "-"], Some(&rules));
    }

    /// Removes node `node`'s cut, if any.
    pub fn heal(&self, node: usize) {
        let ns = self.node_ns(node);
        let listed = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "list", "tables"])
            .output()
            .expect("run nft");
        if String::from_utf8_lossy(&listed.stdout).contains("inet nemesis") {
            nft(&ns, &["delete", "table", "inet", "nemesis"], None);
        }
    }
}

fn nft(ns: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run nft (apt-get install nftables)");
    if let Some(text) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft {} in {ns}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        stdin.unwrap_or("")
    );
}

impl Drop for Lab {
    fn drop(&mut self) {
        let members = std::iter::once("hub".to_string())
            .chain(std::iter::once("ctl".to_string()))
            .chain((0..self.nodes).map(|i| format!("n{}", i + 1)));
        for m in members {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(&m)])
                .status();
        }
    }
}

/// A lab of `nodes` agents (n1, n2, ... at [`Lab::node_ip`], cluster token
/// `tok`) on a real etcd in `ctl`, the calling thread moved into `ctl`
/// first. Drop the agents and etcd before the lab.
pub fn lab_cluster(root: &std::path::Path, nodes: usize) -> (Lab, crate::Etcd, Vec<crate::Agent>) {
    let lab = Lab::create(nodes);
    // Before any thread or process: they inherit the namespace.
    lab.enter_ctl();
    let etcd = crate::Etcd::start_at(root, &lab.ctl_ip(), crate::agent::free_port());
    let store = etcd.store_url();
    let agents: Vec<crate::Agent> = (0..nodes)
        .map(|i| {
            let wrap = lab.wrap(i);
            let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
            crate::Agent::start_in(
                root,
                &format!("n{}", i + 1),
                "tok",
                &["--store", &store],
                &lab.node_ip(i),
                &wrap,
            )
        })
        .collect();
    for a in &agents {
        a.wait_live();
    }
    (lab, etcd, agents)
}
