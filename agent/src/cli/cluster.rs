//! CLI commands on the cluster: volumes, nodes, disks, settings, events.
//! Create and delete wait until the volume settles (unless `--no-wait`), so
//! a script can use the volume on the next line.

use std::time::Duration;

use serde_json::Value;

use super::args::{DiskCmd, NodeCmd, SettingsCmd, VolumeCmd};
use super::table::{columns, s, typed};
use super::{Render, json};
use vigil_client::{ApiClient, CallError, SnapshotOwner};
use vigil_engine::size::human as size;
use vigil_model::wire::*;

const SETTLE: Duration = Duration::from_secs(120);

pub async fn volume(api: &ApiClient, cmd: VolumeCmd) -> Result<(Value, Render), CallError> {
    Ok(match cmd {
        VolumeCmd::Create {
            name,
            size,
            replicas,
            data_locality,
            node_tags,
            disk_tags,
            no_wait,
        } => {
            let req = CreateVolume {
                name: name.clone(),
                size,
                replicas,
                data_locality,
                node_tags,
                disk_tags,
            };
            let mut v = json(api.create_volume(&req).await?);
            if !no_wait {
                v = settle(api, &name, |v| v["state"] != "creating").await?;
            }
            (v, |v| typed(v, volume_show))
        }
        VolumeCmd::Get { name } => (json(api.volume(&name).await?), |v| typed(v, volume_show)),
        VolumeCmd::List => (json(api.volumes().await?), |v| {
            typed(v, |x: &Vec<VolumeView>| volume_list(x))
        }),
        VolumeCmd::Attach { name, node } => (
            json(api.attach_volume(&name, &AttachVolume { node }).await?),
            |v| typed(v, volume_attached),
        ),
        VolumeCmd::Migrate {
            name,
            to,
            confirm,
            rollback,
        } => {
            let v = match (to, confirm, rollback) {
                (Some(to), _, _) => api.migrate_volume(&name, &MigrateVolume { to }).await?,
                (None, true, _) => api.confirm_migration(&name).await?,
                _ => api.roll_back_migration(&name).await?,
            };
            (json(v), |v| typed(v, volume_show))
        }
        VolumeCmd::Detach { name } => (json(api.detach_volume(&name).await?), |v| {
            typed(v, volume_show)
        }),
        VolumeCmd::Delete { name, no_wait } => {
            let v = json(api.delete_volume(&name).await?);
            if !no_wait {
                let deadline = tokio::time::Instant::now() + SETTLE;
                loop {
                    match api.volume(&name).await {
                        Err(CallError::Api { code, .. }) if code == "not_found" => break,
                        Err(e) => return Err(e),
                        Ok(_) if tokio::time::Instant::now() > deadline => {
                            return Err(CallError::Api {
                                code: "delete_timeout".into(),
                                message: format!(
                                    "volume {name} is still being deleted after {}s (a replica's node may be down); see `vigil volume get {name}`",
                                    SETTLE.as_secs()
                                ),
                                details: Vec::new(),
                            });
                        }
                        Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            (v, |v| typed(v, deleted))
        }
        VolumeCmd::Salvage {
            name,
            replica,
            accept_data_loss,
        } => (
            json(
                api.salvage_volume(
                    &name,
                    &SalvageVolume {
                        replica,
                        accept_data_loss,
                    },
                )
                .await?,
            ),
            |v| typed(v, volume_show),
        ),
        VolumeCmd::Expand { name, size } => (
            json(api.expand_volume(&name, &ExpandVolume { size }).await?),
            |v| typed(v, volume_show),
        ),
        VolumeCmd::Snapshot(cmd) => super::snapshot(api, SnapshotOwner::Volume, cmd).await?,
    })
}

/// Polls the volume until `done` holds.
async fn settle(
    api: &ApiClient,
    name: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value, CallError> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let v = json(api.volume(name).await?);
        if done(&v) {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(CallError::Api {
                code: "create_timeout".into(),
                message: format!(
                    "volume {name} is still {} after {}s: {}",
                    s(&v["state"]),
                    SETTLE.as_secs(),
                    s(&v["message"])
                ),
                details: Vec::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn node(api: &ApiClient, cmd: NodeCmd) -> Result<(Value, Render), CallError> {
    Ok(match cmd {
        NodeCmd::List => (json(api.nodes().await?), |v| {
            typed(v, |x: &Vec<ClusterNodeView>| node_list(x))
        }),
        NodeCmd::Get { name } => (json(api.cluster_node(&name).await?), |v| {
            typed(v, node_show)
        }),
        NodeCmd::Evict { name, cancel } => (
            json(
                api.update_node(
                    &name,
                    &UpdateNode {
                        eviction_requested: Some(!cancel),
                        ..UpdateNode::default()
                    },
                )
                .await?,
            ),
            |v| typed(v, node_show),
        ),
        NodeCmd::DrainCheck { .. } | NodeCmd::Drain { .. } => {
            unreachable!("handled by cli::run (own exit codes)")
        }
        NodeCmd::Update {
            name,
            allow_scheduling,
            tags,
        } => (
            json(
                api.update_node(
                    &name,
                    &UpdateNode {
                        allow_scheduling,
                        tags,
                        ..UpdateNode::default()
                    },
                )
                .await?,
            ),
            |v| typed(v, node_show),
        ),
    })
}

pub async fn disk(api: &ApiClient, cmd: DiskCmd) -> Result<(Value, Render), CallError> {
    match cmd {
        DiskCmd::List => Ok((json(api.disks().await?), |v| {
            typed(v, |x: &Vec<DiskView>| disk_list(x))
        })),
    }
}

pub async fn settings(api: &ApiClient, cmd: SettingsCmd) -> Result<(Value, Render), CallError> {
    Ok(match cmd {
        SettingsCmd::List => (json(api.settings().await?), |v| {
            typed(v, |x: &Vec<SettingView>| setting_list(x))
        }),
        SettingsCmd::Get { name } => (json(api.setting(&name).await?), |v| typed(v, setting_show)),
        SettingsCmd::Set { name, value } => (
            json(api.set_setting(&name, &SetSetting { value }).await?),
            |v| typed(v, setting_show),
        ),
    })
}

fn deleted(v: &VolumeView) -> String {
    format!("volume {} deleted\n", v.name)
}

fn volume_attached(v: &VolumeView) -> String {
    format!("{}\n", v.endpoint)
}

/// `-` for what is not there, as the tables always showed it.
fn or_dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_string()
}

pub fn volume_list(volumes: &[VolumeView]) -> String {
    let rows = volumes
        .iter()
        .map(|x| {
            vec![
                x.name.clone(),
                size(x.size),
                x.state.clone(),
                x.robustness.clone(),
                format!("{}/{}", x.replicas.len(), x.number_of_replicas),
                or_dash(x.attached_node.as_deref()),
                x.endpoint.clone(),
            ]
        })
        .collect();
    columns(
        &[
            "NAME",
            "SIZE",
            "STATE",
            "ROBUSTNESS",
            "REPLICAS",
            "NODE",
            "ENDPOINT",
        ],
        rows,
    )
}

pub fn volume_show(v: &VolumeView) -> String {
    let mut out = String::new();
    for (label, value) in [
        ("Name", v.name.clone()),
        ("State", v.state.clone()),
        ("Robustness", v.robustness.clone()),
        ("Attached to", or_dash(v.attached_node.as_deref())),
        ("Endpoint", v.endpoint.clone()),
        ("Data locality", v.data_locality.clone()),
        ("Size", size(v.size)),
        ("Replicas", v.number_of_replicas.to_string()),
    ] {
        out.push_str(&format!("{label:<15}{value}\n"));
    }
    if !v.message.is_empty() {
        out.push_str(&format!("{:<15}{}\n", "Message", v.message));
    }
    if let Some(m) = &v.migration {
        out.push_str(&format!(
            "{:<15}{} → {}: {}{}{}\n",
            "Migration",
            m.source,
            m.target,
            m.phase,
            Some(&m.target_endpoint)
                .filter(|e| !e.is_empty())
                .map(|e| format!(" (target serves {e})"))
                .unwrap_or_default(),
            Some(&m.message)
                .filter(|e| !e.is_empty())
                .map(|e| format!(" — {e}"))
                .unwrap_or_default(),
        ));
    }
    if !v.scheduling.is_empty() {
        out.push_str("Scheduling:\n");
        for n in &v.scheduling {
            out.push_str(&format!("  - {n}\n"));
        }
    }
    let rows = v
        .replicas
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.node.clone(),
                r.disk_path.clone(),
                r.state.clone(),
                r.mode.as_str().to_string(),
                r.message.clone(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&columns(
        &["REPLICA", "NODE", "DISK", "STATE", "MODE", "MESSAGE"],
        rows,
    ));
    out
}

pub fn node_list(nodes: &[ClusterNodeView]) -> String {
    columns(
        &["NAME", "STATUS", "DISKS", "LABELS", "FLAGS", "API"],
        nodes.iter().map(node_row).collect(),
    )
}

fn node_row(n: &ClusterNodeView) -> Vec<String> {
    let labels = n
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut flags = Vec::new();
    if n.eviction_requested {
        flags.push("evicting");
    }
    if !n.allow_scheduling {
        flags.push("unschedulable");
    }
    vec![
        n.name.clone(),
        if n.ready { "ready" } else { "down" }.into(),
        n.disks.len().to_string(),
        labels,
        flags.join(","),
        n.api_address.clone(),
    ]
}

fn node_show(n: &ClusterNodeView) -> String {
    let mut out = columns(
        &["NAME", "STATUS", "DISKS", "LABELS", "FLAGS", "API"],
        vec![node_row(n)],
    );
    out.push('\n');
    out.push_str(&disk_list(&n.disks));
    // The eviction table reads the JSON drain polls (cli/drain.rs).
    let eviction = serde_json::to_value(&n.eviction).unwrap_or_default();
    out.push_str(&super::drain::eviction_table(&eviction));
    out
}

fn disk_list(disks: &[DiskView]) -> String {
    let rows = disks
        .iter()
        .map(|d| {
            vec![
                d.uuid.clone(),
                d.node.clone(),
                d.path.clone(),
                d.state.clone(),
                size(d.capacity_bytes),
                size(d.available_bytes),
                size(d.scheduled_bytes),
                d.message.clone(),
            ]
        })
        .collect();
    columns(
        &[
            "DISK",
            "NODE",
            "PATH",
            "STATE",
            "CAPACITY",
            "FREE",
            "SCHEDULED",
            "MESSAGE",
        ],
        rows,
    )
}

fn setting_list(settings: &[SettingView]) -> String {
    let rows = settings
        .iter()
        .map(|x| {
            vec![
                x.name.clone(),
                x.value.clone(),
                if x.is_default { "default" } else { "set" }.into(),
                x.allowed.clone(),
            ]
        })
        .collect();
    columns(&["SETTING", "VALUE", "SOURCE", "ALLOWED"], rows)
}

fn setting_show(v: &SettingView) -> String {
    format!(
        "{} = {}\n  default: {}\n  allowed: {}\n  {}\n",
        v.name, v.value, v.default, v.allowed, v.description
    )
}
