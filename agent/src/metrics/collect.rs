//! The scraped families: what this agent reports at each scrape.
//!
//! Who reports what (so a series comes from exactly one agent, except the
//! cluster-wide ones every agent reports alike):
//! * cluster counts, every node's readiness, health checks: every agent;
//! * a volume's state, robustness, sizes and its replicas' states: the
//!   volume's reporter — the node it is attached to while that node is
//!   live, else the live node chosen by rendezvous hashing (the same rule
//!   as controller ownership), so a volume on a dead node is still seen;
//! * replica modes, rebuild progress and engine suspension: the agent
//!   running the engine;
//! * disks, replica sizes and disk I/O errors: the disk's own agent.

use std::collections::{BTreeMap, BTreeSet};

use vigil_engine::engine::metrics::replica_label;

use super::names::*;
use super::process;
use super::scrape::Scrape;
use vigil_control::controller::rendezvous;
use vigil_control::health;
use vigil_control::local::Local;
use vigil_model::replica::ReplicaMode;
use vigil_model::{Replica, Volume};

pub async fn collect(local: &Local, page: &Scrape) {
    let me = local.me.name.as_str();
    page.gauge(
        BUILD_INFO,
        vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("node", me.to_string()),
        ],
        1.0,
    );
    let p = process::facts();
    if let Some(v) = p.rss_bytes {
        page.gauge(PROCESS_RESIDENT_MEMORY, vec![], v as f64);
    }
    if let Some(v) = p.threads {
        page.gauge(PROCESS_THREADS, vec![], v as f64);
    }
    if let Some(v) = p.open_fds {
        page.gauge(PROCESS_OPEN_FDS, vec![], v as f64);
    }
    if let Some(v) = process::start_time() {
        page.gauge(PROCESS_START_TIME, vec![], v);
    }
    disk_errors(local, page);
    // One read of the cluster feeds both the state series and the health
    // checks, so they agree with each other within a scrape.
    let view = health::local::view(local).await;
    let up = view.store_error.is_none();
    page.gauge(STORE_UP, vec![], if up { 1.0 } else { 0.0 });
    engines(local, &view, page);
    if up {
        cluster(me, &view, page);
        replica_sizes(local, &view, page);
    }
    health_series(&health::evaluate(&view), page);
}

/// `vigil_health_check` and friends: the same report as `vigil doctor`.
fn health_series(report: &health::Report, page: &Scrape) {
    for c in &report.checks {
        if c.muted.is_some() {
            continue;
        }
        page.gauge(
            HEALTH_CHECK,
            vec![
                ("code", c.code.clone()),
                ("severity", c.severity.as_str().to_string()),
            ],
            1.0,
        );
        page.gauge(
            HEALTH_CHECK_OBJECTS,
            vec![("code", c.code.clone())],
            c.items.len() as f64,
        );
    }
    for m in &report.mutes {
        page.gauge(HEALTH_CHECK_MUTED, vec![("code", m.code.clone())], 1.0);
    }
}

/// Disk I/O errors, summed over this agent's open replicas per disk.
fn disk_errors(local: &Local, page: &Scrape) {
    let me = &local.me.name;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for (_, held) in local.replicas.all_held() {
        *errors.entry(held.disk.clone()).or_default() += held.replica.io_errors();
    }
    for disk in local.replicas.disks() {
        let total = errors.get(&disk.uuid).copied().unwrap_or(0);
        page.counter(
            DISK_IO_ERRORS,
            vec![
                ("node", me.clone()),
                ("disk", disk.uuid.clone()),
                ("path", disk.path.display().to_string()),
            ],
            total,
        );
    }
}

/// Allocated bytes of this node's replicas (their objects name the volume).
fn replica_sizes(local: &Local, view: &health::View, page: &Scrape) {
    let me = &local.me.name;
    for r in view.replicas.iter().filter(|r| &r.spec.node == me) {
        let Some(held) = local.replicas.held(&r.name) else {
            continue;
        };
        page.gauge(
            REPLICA_ACTUAL_SIZE,
            vec![
                ("volume", r.spec.volume.clone()),
                ("replica", r.name.clone()),
                ("node", me.clone()),
            ],
            held.replica.info().allocated_bytes() as f64,
        );
    }
}

/// Modes and rebuild progress of the engines running here. The `node`
/// label is the replica's node (as in `vigil_replica_state`), found through
/// its object; empty while the store cannot be read.
fn engines(local: &Local, view: &health::View, page: &Scrape) {
    suspensions(local, page);
    for engine in local.engines.all() {
        let status = engine.status();
        for r in &status.replicas {
            let replica = replica_label(&r.address);
            let node = view
                .replicas
                .iter()
                .find(|o| o.status.address == r.address)
                .map(|o| o.spec.node.clone())
                .unwrap_or_default();
            page.gauge(
                REPLICA_MODE,
                vec![
                    ("volume", status.name.clone()),
                    ("replica", replica.clone()),
                    ("node", node),
                    ("mode", r.mode.as_str().to_string()),
                ],
                1.0,
            );
            if let Some(rb) = r.rebuild.as_ref().filter(|rb| rb.finished_unix.is_none()) {
                let labels = vec![
                    ("volume", status.name.clone()),
                    ("replica", replica.clone()),
                ];
                page.gauge(REPLICA_REBUILD_COPIED, labels.clone(), rb.bytes_done as f64);
                page.gauge(REPLICA_REBUILD_SIZE, labels, rb.bytes_total as f64);
            }
        }
    }
}

/// `vigil_engine_suspended`: from the engines themselves, so it is right
/// while the store is unreachable (the usual reason for a suspension). A
/// volume with both a volume and a maintenance engine here has one series.
fn suspensions(local: &Local, page: &Scrape) {
    let mut suspended: BTreeMap<String, bool> = BTreeMap::new();
    for e in local.all_engines() {
        *suspended.entry(e.name().to_string()).or_default() |= e.suspended().is_some();
    }
    for (volume, on) in suspended {
        page.gauge(
            ENGINE_SUSPENDED,
            vec![("volume", volume)],
            if on { 1.0 } else { 0.0 },
        );
    }
}

fn cluster(me: &str, view: &health::View, page: &Scrape) {
    page.gauge(CLUSTER_NODES_EXPECTED, vec![], view.nodes.len() as f64);
    let ready = view
        .nodes
        .iter()
        .filter(|n| view.live.contains(&n.name))
        .count();
    page.gauge(CLUSTER_NODES_READY, vec![], ready as f64);
    for n in &view.nodes {
        let up = view.live.contains(&n.name);
        page.gauge(
            NODE_READY,
            vec![("node", n.name.clone())],
            if up { 1.0 } else { 0.0 },
        );
        if let Some(e) = &n.status.eviction {
            page.gauge(
                NODE_EVICTION_REPLICAS_LEFT,
                vec![
                    ("node", n.name.clone()),
                    ("phase", e.phase.as_str().to_string()),
                ],
                e.replicas_left as f64,
            );
        }
    }
    for d in view.disks.iter().filter(|d| d.spec.node == me) {
        let labels = || {
            vec![
                ("node", d.spec.node.clone()),
                ("disk", d.uuid.clone()),
                ("path", d.spec.path.clone()),
            ]
        };
        let mut state = labels();
        state.push(("state", d.status.state.as_str().to_string()));
        page.gauge(DISK_STATE, state, 1.0);
        let st = &d.status;
        page.gauge(DISK_CAPACITY, labels(), st.capacity_bytes as f64);
        page.gauge(DISK_AVAILABLE, labels(), st.available_bytes as f64);
        page.gauge(
            DISK_USED,
            labels(),
            st.capacity_bytes.saturating_sub(st.available_bytes) as f64,
        );
        page.gauge(DISK_SCHEDULED, labels(), st.scheduled_bytes as f64);
        page.gauge(DISK_RESERVED, labels(), d.spec.reserved_bytes as f64);
    }
    let mut replicas_of: BTreeMap<&str, Vec<&Replica>> = BTreeMap::new();
    for r in &view.replicas {
        replicas_of
            .entry(r.spec.volume.as_str())
            .or_default()
            .push(r);
    }
    for v in &view.volumes {
        if reporter(v, &view.live).as_deref() != Some(me) {
            continue;
        }
        let reps = replicas_of.get(v.name.as_str()).map_or(&[][..], |r| &r[..]);
        volume(v, reps, page);
        if let Some(m) = &v.status.migration {
            page.gauge(
                VOLUME_MIGRATION_PHASE_SECONDS,
                vec![
                    ("volume", v.name.clone()),
                    ("phase", m.phase.as_str().to_string()),
                    ("source", m.source.clone()),
                    ("target", m.target.clone()),
                ],
                view.now_unix.saturating_sub(m.phase_since) as f64,
            );
        }
    }
}

/// The agent that reports `v` (see the module docs).
fn reporter(v: &Volume, live: &BTreeSet<String>) -> Option<String> {
    match &v.status.attached_node {
        Some(n) if live.contains(n) => Some(n.clone()),
        _ => rendezvous(&v.name, live),
    }
}

fn volume(v: &Volume, replicas: &[&Replica], page: &Scrape) {
    let name = || vec![("volume", v.name.clone())];
    let mut l = name();
    l.push(("state", v.status.state.as_str().to_string()));
    page.gauge(VOLUME_STATE, l, 1.0);
    let mut l = name();
    l.push(("robustness", v.status.robustness.as_str().to_string()));
    page.gauge(VOLUME_ROBUSTNESS, l, 1.0);
    page.gauge(VOLUME_SIZE, name(), v.spec.size as f64);
    let actual = replicas
        .iter()
        .map(|r| r.status.actual_size_bytes)
        .max()
        .unwrap_or(0);
    page.gauge(VOLUME_ACTUAL_SIZE, name(), actual as f64);
    page.gauge(VOLUME_REPLICAS_DESIRED, name(), f64::from(v.spec.replicas));
    let attached = v.status.attached_node.is_some();
    let healthy = replicas
        .iter()
        .filter(|r| {
            if attached {
                r.status.mode == ReplicaMode::ReadWrite
            } else {
                r.status.state == vigil_model::InstanceState::Running
            }
        })
        .count();
    page.gauge(VOLUME_REPLICAS_HEALTHY, name(), healthy as f64);
    for r in replicas {
        page.gauge(
            REPLICA_STATE,
            vec![
                ("volume", v.name.clone()),
                ("replica", r.name.clone()),
                ("node", r.spec.node.clone()),
                ("state", r.status.state.as_str().to_string()),
            ],
            1.0,
        );
    }
}
