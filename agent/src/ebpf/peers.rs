//! The remote ends of replica connections, and which node each one is.
//!
//! An agent's replica traffic runs over two kinds of sockets, and the tcp
//! probe counts what *this* node sends on either:
//!
//! * **to replica servers** — this node's engines writing to replicas on
//!   other nodes: the remote end is that node's `replica_address`;
//! * **from engines** — other nodes' engines writing to the replicas this
//!   agent serves: the remote end is the client's address and port, listed
//!   by the replica server ([`vigil_engine::protocol::ServedConnections`]).
//!   The client is the node whose address it is when exactly one node has
//!   it; when several share it (agents on one host), the node that runs the
//!   engine of the replica's volume.
//!
//! Each end is registered in the kernel's `tcp_peers` map. Connections come
//! and go (an engine restarts, a rebuild ends), so the figures of ends no
//! longer traced are kept per node ([`Names::retired_peers`]) and the
//! per-node totals never go back.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use vigil_ebpf::{Hist, PeerSeries, Snapshot};

use super::Observed;
use super::targets::Names;
use vigil_model::{Engine, Node, Replica};

/// What this node sent to one peer node over its replica connections.
#[derive(Debug, Clone, Default)]
pub struct PeerTotals {
    pub retransmits: u64,
    /// RTT samples (one per segment received).
    pub rtt: Hist,
}

impl PeerTotals {
    fn add(&mut self, p: &PeerSeries) {
        self.retransmits += p.retransmits;
        self.rtt.merge(&p.rtt);
    }

    /// What happened between `older` and `self`.
    pub fn since(&self, older: &PeerTotals) -> PeerTotals {
        PeerTotals {
            retransmits: self.retransmits.saturating_sub(older.retransmits),
            rtt: self.rtt.since(&older.rtt),
        }
    }
}

/// Per peer node: the traced ends' figures in `snap` plus the retired ones.
pub fn totals(snap: &Snapshot, names: &Names) -> BTreeMap<String, PeerTotals> {
    let mut out: BTreeMap<String, PeerTotals> = names.retired_peers.clone();
    for p in &snap.peers {
        if let Some(node) = names.peers.get(&(p.addr, p.port)) {
            out.entry(node.clone()).or_default().add(p);
        }
    }
    out
}

/// Adds the last figures of ends no longer traced to their nodes' retired
/// totals (`ends`: the names as they were while those ends were traced).
pub fn retire(names: &mut Names, gone: &[PeerSeries], ends: &BTreeMap<(Ipv4Addr, u16), String>) {
    for p in gone {
        if let Some(node) = ends.get(&(p.addr, p.port)) {
            names.retired_peers.entry(node.clone()).or_default().add(p);
        }
    }
}

/// Every remote end to trace now, with its node.
pub async fn ends(h: &Observed) -> Option<BTreeMap<(Ipv4Addr, u16), String>> {
    let nodes = h.cluster.list::<Node>().await.ok()?;
    let me = &h.node;
    let mut ends = BTreeMap::new();
    let mut by_ip: BTreeMap<Ipv4Addr, Vec<String>> = BTreeMap::new();
    for n in nodes.iter().map(|v| &v.object).filter(|n| &n.name != me) {
        if let Ok(SocketAddr::V4(a)) = n.spec.replica_address.parse::<SocketAddr>() {
            ends.insert((*a.ip(), a.port()), n.name.clone());
            by_ip.entry(*a.ip()).or_default().push(n.name.clone());
        }
    }
    let served = h.served.list();
    if served.is_empty() {
        return Some(ends);
    }
    // Who runs the engine of each replica's volume; read only when some
    // client's address alone does not tell.
    let mut engine_node: Option<BTreeMap<String, String>> = None;
    for c in served {
        let SocketAddr::V4(peer) = c.peer else {
            continue;
        };
        let candidates = by_ip.get(peer.ip()).map(Vec::as_slice).unwrap_or_default();
        let node = if let [only] = candidates {
            Some(only.clone())
        } else {
            if engine_node.is_none() {
                engine_node = Some(engine_nodes(h).await);
            }
            engine_node
                .as_ref()
                .and_then(|m| m.get(&c.replica))
                .filter(|n| *n != me && (candidates.is_empty() || candidates.contains(n)))
                .cloned()
        };
        if let Some(node) = node {
            ends.insert((*peer.ip(), peer.port()), node);
        }
    }
    Some(ends)
}

/// Replica name → the node running its volume's engine.
async fn engine_nodes(h: &Observed) -> BTreeMap<String, String> {
    let (Ok(replicas), Ok(engines)) = (
        h.cluster.list::<Replica>().await,
        h.cluster.list::<Engine>().await,
    ) else {
        return BTreeMap::new();
    };
    let by_volume: BTreeMap<&str, &str> = engines
        .iter()
        .map(|e| (e.object.name.as_str(), e.object.spec.node.as_str()))
        .collect();
    replicas
        .iter()
        .filter_map(|r| {
            let node = by_volume.get(r.object.spec.volume.as_str())?;
            Some((r.object.name.clone(), node.to_string()))
        })
        .collect()
}
