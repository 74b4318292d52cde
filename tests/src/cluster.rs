//! One cluster fixture for the integration tests (TiKV's
//! `new_server_cluster` is the model): a store (a real etcd, or one agent's
//! embedded store), named agents on it, and the few volume and process
//! steps most scenarios begin with. A test builds one, acts on its nodes by
//! name and asserts; everything is torn down when it drops.
//!
//! ```no_run
//! # use vigil_tests::Cluster;
//! let mut c = Cluster::on_etcd(&["n1", "n2", "n3"]);
//! c["n1"].set("node-down-timeout", "5");
//! let uri = c.create_attached("v", "32MiB", 2, "n1");
//! let victim = c.replica_nodes("v").into_iter().find(|n| n != "n1").unwrap();
//! c.kill9(&victim);
//! c["n1"].json(&["volume", "get", "v"]);
//! # let _ = uri;
//! ```

use std::collections::BTreeSet;
use std::ops::{Index, IndexMut};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::agent::Agent;
use crate::etcd::Etcd;
use crate::keep_logs::LogsOnPanic;

/// The directory the cluster's data dirs, logs and etcd live in.
enum Root {
    /// Removed when the cluster drops.
    Temp(tempfile::TempDir),
    /// Removed when the cluster drops; `*.log` kept in /tmp on a panic.
    KeepLogs(LogsOnPanic),
    /// The caller's: it outlives the cluster (something mounted under it
    /// must be unmounted after the agents stop and before it is removed).
    Caller(PathBuf),
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Temp(d) => d.path(),
            Root::KeepLogs(d) => d.path(),
            Root::Caller(p) => p,
        }
    }
}

/// Running agents on one store, addressed by node name (`c["n1"]`). The
/// volume helpers ask the first node, in start order, that the fixture
/// has neither stopped nor frozen; a test that must ask a given node
/// calls its agent (`c["n2"].cli(…)`).
///
/// Fields drop in order: the agents (`kill -9`), then etcd, then the
/// directory — a store never goes away under a live agent.
pub struct Cluster {
    agents: Vec<Agent>,
    frozen: BTreeSet<String>,
    etcd: Option<Etcd>,
    root: Root,
    /// How agents start (the store's address included), for
    /// [`Cluster::add`].
    spec: ClusterBuilder,
}

/// How the cluster's agents start: token, arguments (for every node or
/// for one) and environment. Finished by [`ClusterBuilder::on_etcd`] or
/// [`ClusterBuilder::on_embedded`].
pub struct ClusterBuilder {
    /// None: a new temporary directory.
    root: Option<Root>,
    token: String,
    args: Vec<String>,
    node_args: Vec<(String, String)>,
    node_env: Vec<(String, String, String)>,
}

impl Cluster {
    /// A real etcd and one agent per name on it (cluster token `tok`),
    /// started in order; returns once every node is ready in the store
    /// ([`Agent::wait_live`]), so volumes can be placed on all of them.
    pub fn on_etcd(names: &[&str]) -> Cluster {
        Cluster::builder().on_etcd(names)
    }

    /// One agent on its embedded store (cluster token `tok`), ready in the
    /// store.
    pub fn on_embedded(name: &str) -> Cluster {
        Cluster::builder().on_embedded(name)
    }

    /// A builder for agents that need more: a token, arguments (`--label`,
    /// `--disk`, `--ebpf`), environment (`VIGIL_FAILPOINTS`), or a directory
    /// the test owns.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            root: None,
            token: "tok".to_string(),
            args: Vec::new(),
            node_args: Vec::new(),
            node_env: Vec::new(),
        }
    }

    /// The directory holding the agents' data dirs and logs (`NAME.log`);
    /// test files (data to write, expected contents) can go there too.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The etcd under the cluster (panics for an embedded cluster).
    pub fn etcd(&self) -> &Etcd {
        self.etcd.as_ref().expect("an etcd cluster")
    }

    /// The etcd, to kill or freeze it (panics for an embedded cluster).
    pub fn etcd_mut(&mut self) -> &mut Etcd {
        self.etcd.as_mut().expect("an etcd cluster")
    }

    /// The agents in start order.
    pub fn nodes(&self) -> impl Iterator<Item = &Agent> {
        self.agents.iter()
    }

    /// The agent the volume helpers ask: the first in start order that
    /// this fixture has neither stopped nor frozen (panics if none).
    fn asker(&self) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.is_started() && !self.frozen.contains(&a.name))
            .expect("a running node to ask")
    }

    /// Creates volume `name` (`--size`, `--replicas`) and returns the
    /// answer; panics unless the create succeeds and the volume is
    /// detached.
    pub fn create_volume(&self, name: &str, size: &str, replicas: usize) -> Value {
        let replicas = replicas.to_string();
        let v = self.asker().json(&[
            "volume",
            "create",
            name,
            "--size",
            size,
            "--replicas",
            &replicas,
        ]);
        assert_eq!(v["state"], "detached", "{v}");
        v
    }

    /// Attaches `volume` on `node`; returns its `nbd://` URI (panics if
    /// the attach is refused).
    pub fn attach(&self, volume: &str, node: &str) -> String {
        let (ok, out, err) = self
            .asker()
            .cli(&["volume", "attach", volume, "--node", node]);
        assert!(ok, "attach {volume} on {node}: {err}");
        out.trim().to_string()
    }

    /// [`Cluster::create_volume`] then [`Cluster::attach`]: the volume
    /// attached on `node`, its URI.
    pub fn create_attached(&self, name: &str, size: &str, replicas: usize, node: &str) -> String {
        self.create_volume(name, size, replicas);
        self.attach(name, node)
    }

    /// The nodes holding `volume`'s replicas, in the order `volume get`
    /// lists them.
    pub fn replica_nodes(&self, volume: &str) -> Vec<String> {
        self.asker()
            .replicas(volume)
            .iter()
            .map(|r| r["node"].as_str().unwrap().to_string())
            .collect()
    }

    /// The name of `volume`'s replica on `node` (panics if it has none).
    pub fn replica_on(&self, volume: &str, node: &str) -> String {
        self.asker()
            .replicas(volume)
            .iter()
            .find(|r| r["node"] == node)
            .map(|r| r["name"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no replica of {volume} on {node}"))
    }

    /// Starts one more agent, `name`, on the cluster's etcd with the
    /// arguments and environment of the builder; returns once it is ready
    /// in the store (capacity arriving, a replacement node).
    pub fn add(&mut self, name: &str) -> &Agent {
        assert!(self.etcd.is_some(), "an embedded store has one node");
        assert!(
            self.agents.iter().all(|a| a.name != name),
            "node {name} is already in the cluster"
        );
        let agent = self.spec.start_agent(self.root.path(), name);
        agent.wait_live();
        self.agents.push(agent);
        &self.agents[self.agents.len() - 1]
    }

    /// `kill -9` of `node`'s agent: a crash. Its data dir stays.
    pub fn kill9(&mut self, node: &str) {
        self.frozen.remove(node);
        self[node].kill9();
    }

    /// SIGTERM to `node`'s agent and wait: a clean stop.
    pub fn stop(&mut self, node: &str) {
        self.frozen.remove(node);
        self[node].stop();
    }

    /// Starts `node`'s agent again after [`Cluster::kill9`] or
    /// [`Cluster::stop`] (same data dir, port, arguments); returns once
    /// its API answers, not once it is live.
    pub fn start_again(&mut self, node: &str) {
        self[node].start_again();
    }

    /// `kill -9` and start again at once (same data dir, port, arguments);
    /// returns once its API answers.
    pub fn restart(&mut self, node: &str) {
        self.frozen.remove(node);
        self[node].restart();
    }

    /// SIGSTOP: `node`'s agent stops answering without closing anything
    /// (a hung process or a paused VM). The volume helpers skip it.
    pub fn freeze(&mut self, node: &str) {
        self[node].signal(libc::SIGSTOP);
        self.frozen.insert(node.to_string());
    }

    /// SIGCONT: `node`'s agent runs again after [`Cluster::freeze`].
    pub fn thaw(&mut self, node: &str) {
        self[node].signal(libc::SIGCONT);
        self.frozen.remove(node);
    }

    fn position(&self, node: &str) -> usize {
        self.agents
            .iter()
            .position(|a| a.name == node)
            .unwrap_or_else(|| {
                let names: Vec<&str> = self.agents.iter().map(|a| a.name.as_str()).collect();
                panic!("no node {node} in the cluster {names:?}")
            })
    }
}

/// `c["n1"]`: the agent of node `n1` (panics naming the nodes if absent).
impl Index<&str> for Cluster {
    type Output = Agent;
    fn index(&self, node: &str) -> &Agent {
        &self.agents[self.position(node)]
    }
}

/// `c["n2"].start_again()`: the agent of a node, to change its process.
impl IndexMut<&str> for Cluster {
    fn index_mut(&mut self, node: &str) -> &mut Agent {
        let i = self.position(node);
        &mut self.agents[i]
    }
}

impl ClusterBuilder {
    /// Uses the caller's directory `dir`, which must outlive the cluster
    /// (e.g. a loop-mounted disk under it that is unmounted after the
    /// agents stop).
    pub fn in_dir(mut self, dir: &Path) -> ClusterBuilder {
        self.root = Some(Root::Caller(dir.to_path_buf()));
        self
    }

    /// On a panic, the cluster's `*.log` files (agents, etcd) are copied
    /// to `/tmp/<name>` before the directory is removed.
    pub fn keep_logs(mut self, name: &'static str) -> ClusterBuilder {
        self.root = Some(Root::KeepLogs(LogsOnPanic::new(name)));
        self
    }

    /// The cluster token every agent starts with (default `tok`).
    pub fn token(mut self, token: &str) -> ClusterBuilder {
        self.token = token.to_string();
        self
    }

    /// Extra `vigil agent` arguments for every node (kept for restarts).
    pub fn args(mut self, args: &[&str]) -> ClusterBuilder {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Extra `vigil agent` arguments for `node` only, after the common ones.
    pub fn node_args(mut self, node: &str, args: &[&str]) -> ClusterBuilder {
        self.node_args
            .extend(args.iter().map(|a| (node.to_string(), a.to_string())));
        self
    }

    /// An environment variable of `node`'s agent process only.
    pub fn node_env(mut self, node: &str, key: &str, value: &str) -> ClusterBuilder {
        self.node_env
            .push((node.to_string(), key.to_string(), value.to_string()));
        self
    }

    /// Starts a real etcd, then the agents in order, each with
    /// `--store etcd://…`; returns once every node is ready in the store.
    pub fn on_etcd(mut self, names: &[&str]) -> Cluster {
        let root = self.take_root();
        let etcd = Etcd::start(root.path());
        self.args
            .splice(0..0, ["--store".to_string(), etcd.store_url()]);
        self.start(root, Some(etcd), names)
    }

    /// Starts one agent on its own embedded store; returns once it is
    /// ready in the store.
    pub fn on_embedded(mut self, name: &str) -> Cluster {
        let root = self.take_root();
        self.start(root, None, &[name])
    }

    fn take_root(&mut self) -> Root {
        self.root
            .take()
            .unwrap_or_else(|| Root::Temp(tempfile::tempdir().unwrap()))
    }

    fn start(self, root: Root, etcd: Option<Etcd>, names: &[&str]) -> Cluster {
        let agents: Vec<Agent> = names
            .iter()
            .map(|name| self.start_agent(root.path(), name))
            .collect();
        for a in &agents {
            a.wait_live();
        }
        Cluster {
            agents,
            frozen: BTreeSet::new(),
            etcd,
            root,
            spec: self,
        }
    }

    /// Starts `name`'s agent (common then per-node arguments and
    /// environment) and waits for its API.
    fn start_agent(&self, root: &Path, name: &str) -> Agent {
        let args: Vec<&str> = self
            .args
            .iter()
            .map(String::as_str)
            .chain(
                self.node_args
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, a)| a.as_str()),
            )
            .collect();
        let env: Vec<(&str, &str)> = self
            .node_env
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, k, v)| (k.as_str(), v.as_str()))
            .collect();
        Agent::start_with_env(root, name, &self.token, &args, &env)
    }
}
