//! Builders for scheduler tests: a small cluster described in a few lines.

use super::{Candidate, Outcome, Request, View, place};
use vigil_model::disk::{DiskSpec, DiskState, DiskStatus};
use vigil_model::node::NodeSpec;
use vigil_model::replica::ReplicaSpec;
use vigil_model::settings::{Settings, StoredSetting};
use vigil_model::volume::{DataLocality, Robustness, VolumeSpec, VolumeStatus};
use vigil_model::{Disk, Node, Replica, Volume, VolumeState};

pub const GIB: u64 = 1 << 30;

/// A ready, schedulable node, in `zone` when given.
pub fn node(name: &str, zone: Option<&str>) -> Candidate {
    let mut spec = NodeSpec {
        allow_scheduling: true,
        ..NodeSpec::default()
    };
    if let Some(z) = zone {
        spec.labels.insert("zone".into(), z.into());
    }
    Candidate {
        node: Node {
            name: name.into(),
            spec,
            status: Default::default(),
        },
        ready: true,
    }
}

/// A ready, schedulable, empty disk of `gib` GiB on `node` at `/data/<uuid>`.
pub fn disk(uuid: &str, node: &str, gib: u64) -> Disk {
    Disk {
        uuid: uuid.into(),
        spec: DiskSpec {
            node: node.into(),
            path: format!("/data/{uuid}"),
            tags: Vec::new(),
            allow_scheduling: true,
            reserved_bytes: 0,
        },
        status: DiskStatus {
            state: DiskState::Ready,
            capacity_bytes: gib * GIB,
            available_bytes: gib * GIB,
            scheduled_bytes: 0,
            updated_at: 0.0,
            message: String::new(),
            ..DiskStatus::default()
        },
    }
}

/// A replica of `volume` of `size` bytes on `node`/`disk`.
pub fn replica(volume: &str, node: &str, disk: &str, size: u64) -> Replica {
    Replica::new(
        format!("{volume}-r-{node}-{disk}"),
        ReplicaSpec {
            volume: volume.into(),
            node: node.into(),
            disk: disk.into(),
            size,
        },
    )
}

/// A volume of `size` bytes wanting `replicas` replicas.
pub fn volume(name: &str, size: u64, replicas: u32) -> Volume {
    Volume {
        name: name.into(),
        spec: VolumeSpec {
            size,
            replicas,
            data_locality: DataLocality::Disabled,
            node: None,
            node_tags: Vec::new(),
            disk_tags: Vec::new(),
            created_at: 0.0,
        },
        status: VolumeStatus {
            state: VolumeState::Creating,
            robustness: Robustness::Unknown,
            attached_node: None,
            endpoint: String::new(),
            message: String::new(),
            scheduling: Vec::new(),
            transitions: 0,
            migration: None,
            maintenance: None,
            fenced: None,
            writes_blocked: String::new(),
        },
    }
}

/// Default settings with `pairs` overridden.
pub fn settings(pairs: &[(&str, &str)]) -> Settings {
    Settings::from_stored(pairs.iter().map(|(n, v)| StoredSetting {
        name: (*n).into(),
        value: (*v).into(),
    }))
}

/// Everything a test cluster holds.
pub struct Cluster {
    pub nodes: Vec<Candidate>,
    pub disks: Vec<Disk>,
    pub replicas: Vec<Replica>,
    pub settings: Settings,
}

impl Cluster {
    pub fn new(nodes: Vec<Candidate>, disks: Vec<Disk>) -> Cluster {
        Cluster {
            nodes,
            disks,
            replicas: Vec::new(),
            settings: Settings::default(),
        }
    }

    pub fn with_settings(mut self, pairs: &[(&str, &str)]) -> Cluster {
        self.settings = settings(pairs);
        self
    }

    pub fn view(&self) -> View<'_> {
        View {
            nodes: &self.nodes,
            disks: &self.disks,
            replicas: &self.replicas,
            settings: &self.settings,
        }
    }

    /// Places `count` replicas of `volume`, data locality pointing at `local`.
    pub fn place(&self, volume: &Volume, count: usize, local: Option<&str>) -> Outcome {
        let req = Request {
            volume,
            count,
            local_node: local,
        };
        place(&req, &self.view())
    }

    pub fn node_mut(&mut self, name: &str) -> &mut Candidate {
        self.nodes
            .iter_mut()
            .find(|c| c.node.name == name)
            .expect("a node the test built")
    }

    pub fn disk_mut(&mut self, uuid: &str) -> &mut Disk {
        self.disks
            .iter_mut()
            .find(|d| d.uuid == uuid)
            .expect("a disk the test built")
    }
}

/// `(node, disk)` of each placement, for compact assertions.
pub fn pairs(out: &Outcome) -> Vec<(&str, &str)> {
    out.placed
        .iter()
        .map(|p| (p.node.as_str(), p.disk.as_str()))
        .collect()
}
