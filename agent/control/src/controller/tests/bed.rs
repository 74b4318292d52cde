//! A cluster of agents in one test process, for the controllers' unit
//! tests: one embedded store in a temp dir, and per node a real disk
//! directory, its `ReplicaSet`, a replica server and an NBD server on
//! loopback, and the node's liveness kept by the real registration code.
//! Only the controller loop is not running: a test runs rounds itself
//! ([`Bed::round`], [`Bed::settle`]) or calls one controller, so what
//! happens between two steps is under its control.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokio::task::JoinHandle;
use vigil_engine::device::ExportDevice;
use vigil_engine::engine::EngineConfig;
use vigil_engine::protocol::{self, ClusterToken};
use vigil_model::settings::StoredSetting;
use vigil_model::{Disk, Replica, Volume, VolumeState};
use vigil_store::embedded::EmbeddedStore;
use vigil_store::{Expect, SharedStore};

use crate::cluster::{Cluster, placement, put_op};
use crate::controller::{Snapshot, registration};
use crate::local::backends::Backends;
use crate::local::engines::EngineSet;
use crate::local::frontend::{Frontend, Handovers};
use crate::local::names::NameSet;
use crate::local::replicas::ReplicaSet;
use crate::local::{Identity, Local, disks};
use crate::scheduler;

/// One agent of the bed: its handles and the tasks that serve it.
pub struct Agent {
    pub local: Arc<Local>,
    tasks: Vec<JoinHandle<()>>,
    round: u64,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for e in self.local.all_engines() {
            e.shutdown();
        }
    }
}

/// The cluster: a store and the agents on it, by node name.
pub struct Bed {
    pub dir: TempDir,
    pub store: SharedStore,
    token: ClusterToken,
    pub agents: BTreeMap<String, Agent>,
}

impl Bed {
    /// A store and one live agent per name, each with one disk.
    pub async fn new(nodes: &[&str]) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore =
            Arc::new(EmbeddedStore::open(&dir.path().join("store.redb")).unwrap());
        let mut bed = Bed {
            dir,
            store,
            token: ClusterToken::new("test-cluster-token"),
            agents: BTreeMap::new(),
        };
        for n in nodes {
            bed.start(n).await;
        }
        // the temp dirs share the machine's disk, whatever it holds
        bed.set("storage-minimal-available-percentage", "0").await;
        bed
    }

    /// Starts (or restarts) the agent of `node` on its data directory:
    /// opens its disk and replicas, serves them, registers and goes live.
    pub async fn start(&mut self, node: &str) {
        self.start_with(node, &["disk"]).await;
    }

    /// Starts the agent of `node` with the disks in these directories of
    /// its data directory.
    pub async fn start_with(&mut self, node: &str, disk_dirs: &[&str]) {
        let data = self.dir.path().join(node);
        let disks: Vec<_> = disk_dirs
            .iter()
            .map(|d| disks::LocalDisk::open(&data.join(d), node).unwrap())
            .collect();
        let replicas = Arc::new(ReplicaSet::open_all(&disks).unwrap());
        let engines = Arc::new(EngineSet::default());
        let handovers = Arc::new(Handovers::default());
        let replica_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nbd_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let replica_address = replica_listener.local_addr().unwrap().to_string();
        let local = Arc::new(Local {
            me: Identity {
                name: node.to_string(),
                replica_address: replica_address.clone(),
                nbd_address: nbd_listener.local_addr().unwrap().to_string(),
                nbd_socket: data.join("nbd.sock"),
                api_address: "http://127.0.0.1:9".into(),
                labels: BTreeMap::new(),
            },
            cluster: Cluster::new(Arc::clone(&self.store), node),
            replicas: Arc::clone(&replicas),
            engines: Arc::clone(&engines),
            managed_engines: NameSet::default(),
            handovers: Arc::clone(&handovers),
            maintenance: Default::default(),
            backends: Backends::new(self.token.clone(), replica_address, Arc::clone(&replicas)),
            lease_clock: Default::default(),
            engine: EngineConfig::default(),
            quiet: Default::default(),
        });
        let replica_server = tokio::spawn({
            let source = Arc::clone(&replicas) as Arc<dyn protocol::ReplicaSource>;
            let config = protocol::ServerConfig {
                token: self.token.clone(),
                connections: Default::default(),
            };
            async move {
                let _ = protocol::serve(replica_listener, source, config).await;
            }
        });
        let nbd_server = tokio::spawn(async move {
            let frontend = Arc::new(Frontend { engines, handovers });
            let _ = vigil_engine::nbd::serve_tcp(nbd_listener, frontend).await;
        });
        assert!(
            crate::controller::uninstall::at_start(&local)
                .await
                .unwrap()
        );
        registration::register_node(&local).await.unwrap();
        registration::register_disks(&local).await.unwrap();
        let lease = registration::go_live(&local).await.unwrap();
        let liveness = tokio::spawn(registration::keep_live(Arc::clone(&local), lease));
        self.agents.insert(
            node.to_string(),
            Agent {
                local,
                tasks: vec![replica_server, nbd_server, liveness],
                round: 0,
            },
        );
    }

    /// Kills `node`'s agent as `kill -9` would: its servers and engines
    /// stop, and its liveness record goes with its lease (at once, as
    /// if the lease had run out).
    pub async fn kill(&mut self, node: &str) {
        let agent = self.agents.remove(node).unwrap();
        let local = Arc::clone(&agent.local);
        drop(agent);
        registration::go_offline(&local).await;
    }

    /// The handles of `node`.
    pub fn local(&self, node: &str) -> &Arc<Local> {
        &self.agents[node].local
    }

    /// The cluster as `node` sees it.
    pub fn cluster(&self, node: &str) -> &Cluster {
        &self.local(node).cluster
    }

    /// One controller round on `node`, as its agent's loop runs it.
    pub async fn round(&mut self, node: &str) {
        let agent = self.agents.get_mut(node).unwrap();
        agent.round += 1;
        crate::controller::round::run_round(&agent.local, agent.round)
            .await
            .unwrap();
    }

    /// Rounds on every agent, in name order, until `done` holds for the
    /// cluster (checked after each pass) or `passes` passes ran: returns
    /// whether it held.
    pub async fn settle<F, Fut>(&mut self, passes: usize, mut done: F) -> bool
    where
        F: FnMut(Cluster) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let any = self.any();
        for _ in 0..passes {
            let nodes: Vec<String> = self.agents.keys().cloned().collect();
            for n in nodes {
                self.round(&n).await;
            }
            if done(self.cluster(&any).clone()).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The first live agent's name (any agent sees the whole cluster).
    pub fn any(&self) -> String {
        self.agents.keys().next().unwrap().clone()
    }

    /// Sets a cluster setting (created or overwritten).
    pub async fn set(&self, name: &str, value: &str) {
        let setting = StoredSetting {
            name: name.into(),
            value: value.into(),
        };
        self.cluster(&self.any())
            .txn(vec![put_op(&setting, Expect::Any)])
            .await
            .unwrap();
    }

    /// Creates a volume of `size` bytes with `count` replicas placed by
    /// the scheduler, as `vigil volume create` does (one transaction).
    pub async fn create_volume(&self, name: &str, size: u64, count: u32) {
        let any = self.agents.keys().next().unwrap();
        let c = self.cluster(any);
        let snap = Snapshot::read(c).await.unwrap();
        let volume = scheduler::testkit::volume(name, size, count);
        let nodes: Vec<scheduler::Candidate> = snap
            .nodes
            .values()
            .map(|n| scheduler::Candidate {
                ready: snap.ready.contains(&n.object.name),
                node: n.object.clone(),
            })
            .collect();
        let disks: Vec<Disk> = snap.disks.values().map(|d| d.object.clone()).collect();
        let replicas: Vec<Replica> = snap.replicas.iter().map(|r| r.object.clone()).collect();
        let out = scheduler::place(
            &scheduler::Request {
                volume: &volume,
                count: count as usize,
                local_node: None,
            },
            &scheduler::View {
                nodes: &nodes,
                disks: &disks,
                replicas: &replicas,
                settings: &snap.settings,
            },
        );
        assert_eq!(out.placed.len(), count as usize, "{:?}", out.reasons);
        let all_disks: Vec<_> = snap.disks.values().cloned().collect();
        let (placing, _) = placement::ops(&volume, &out.placed, &all_disks, &replicas);
        let mut ops = vec![put_op(&volume, Expect::Absent)];
        ops.extend(placing);
        c.txn(ops).await.unwrap();
    }

    /// Asks for `volume` to be attached on `node`, as `vigil volume
    /// attach` does.
    pub async fn attach(&self, volume: &str, node: &str) {
        self.cluster(node)
            .modify::<Volume, _>(volume, |v| {
                v.spec.node = Some(node.to_string());
                v.status.attached_node = Some(node.to_string());
                v.set_state(VolumeState::Attaching)?;
                Ok(true)
            })
            .await
            .unwrap();
    }

    /// The volume as the store holds it.
    pub async fn volume(&self, name: &str) -> Volume {
        let any = self.agents.keys().next().unwrap();
        self.cluster(any)
            .must_get::<Volume>(name)
            .await
            .unwrap()
            .object
    }

    /// The replicas of `volume` as the store holds them.
    pub async fn replicas_of(&self, volume: &str) -> Vec<Replica> {
        let any = self.agents.keys().next().unwrap();
        self.cluster(any)
            .list::<Replica>()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.object)
            .filter(|r| r.spec.volume == volume)
            .collect()
    }
}

/// Whether `volume` is in `state` in `c`.
pub async fn in_state(c: &Cluster, volume: &str, state: VolumeState) -> bool {
    matches!(c.get::<Volume>(volume).await, Ok(Some(v)) if v.object.status.state == state)
}

impl Bed {
    /// Attaches `volume` on `node`, writes 4 KiB of `byte` at `offset`
    /// (durably), and detaches it again.
    pub async fn write_while_attached(&mut self, volume: &str, node: &str, offset: u64, byte: u8) {
        self.attach(volume, node).await;
        let v = volume.to_string();
        assert!(
            self.settle(10, |c| {
                let v = v.clone();
                async move { in_state(&c, &v, VolumeState::Attached).await }
            })
            .await,
            "{volume} never attached on {node}"
        );
        let engine = self.local(node).engines.get(volume).unwrap();
        engine
            .write(offset, bytes::Bytes::from(vec![byte; 4096]), true)
            .await
            .unwrap();
        drop(engine);
        self.detach(volume).await;
        let v = volume.to_string();
        assert!(
            self.settle(10, |c| {
                let v = v.clone();
                async move { in_state(&c, &v, VolumeState::Detached).await }
            })
            .await,
            "{volume} never detached"
        );
    }

    /// Asks for `volume` to be detached, as `vigil volume detach` does.
    pub async fn detach(&self, volume: &str) {
        self.cluster(&self.any())
            .modify::<Volume, _>(volume, |v| {
                v.set_state(VolumeState::Detaching)?;
                v.spec.node = None;
                Ok(true)
            })
            .await
            .unwrap();
    }

    /// Asks for `node` to be evicted (`vigil node evict`'s flag).
    pub async fn evict(&self, node: &str) {
        self.cluster(&self.any())
            .modify::<vigil_model::Node, _>(node, |n| {
                n.spec.eviction_requested = true;
                Ok(true)
            })
            .await
            .unwrap();
    }

    /// 4 KiB at `offset` of replica `name` on `node`, read from its files.
    pub async fn read_replica(&self, node: &str, name: &str, offset: u64) -> Vec<u8> {
        let replica = self.local(node).replicas.get(name).unwrap();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 4096];
            replica.read(offset, &mut buf).map(|()| buf)
        })
        .await
        .unwrap()
        .unwrap()
    }

    /// How many engines serve `volume` across the cluster now, maintenance
    /// engines included.
    pub fn engines_of(&self, volume: &str) -> Vec<String> {
        self.agents
            .iter()
            .flat_map(|(n, a)| {
                a.local
                    .all_engines()
                    .into_iter()
                    .filter(|e| e.name() == volume)
                    .map(move |_| n.clone())
            })
            .collect()
    }
}
