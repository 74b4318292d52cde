//! CLI commands on the cluster: volumes, nodes, disks, settings, events.
//! Create and delete wait until the volume settles (unless `--no-wait`), so
//! a script can use the volume on the next line.

use std::time::Duration;

use hyper::Method;
use serde_json::Value;

use super::Render;
use super::args::{DiskCmd, NodeCmd, SettingsCmd, SnapshotCmd, VolumeCmd};
use super::http::{ApiClient, CallError};
use super::table::{columns, s, size};
use vigil_model::wire::*;

const SETTLE: Duration = Duration::from_secs(120);

pub async fn volume(api: &ApiClient, cmd: VolumeCmd) -> Result<(Value, Render), CallError> {
    let none: Option<&()> = None;
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
            let mut v: Value = api.call(Method::POST, "/v1/volumes", Some(&req)).await?;
            if !no_wait {
                v = settle(api, &name, |v| v["state"] != "creating").await?;
            }
            (v, volume_show)
        }
        VolumeCmd::Get { name } => (
            api.call(Method::GET, &format!("/v1/volumes/{name}"), none)
                .await?,
            volume_show,
        ),
        VolumeCmd::List => (
            api.call(Method::GET, "/v1/volumes", none).await?,
            volume_list,
        ),
        VolumeCmd::Attach { name, node } => (
            api.call(
                Method::POST,
                &format!("/v1/volumes/{name}/attach"),
                Some(&AttachVolume { node }),
            )
            .await?,
            volume_attached,
        ),
        VolumeCmd::Migrate {
            name,
            to,
            confirm,
            rollback,
        } => {
            let path = format!("/v1/volumes/{name}/migrate");
            let v: Value = match (to, confirm, rollback) {
                (Some(to), _, _) => {
                    api.call(Method::POST, &path, Some(&MigrateVolume { to }))
                        .await?
                }
                (None, true, _) => {
                    api.call(Method::POST, &format!("{path}/confirm"), none)
                        .await?
                }
                _ => {
                    api.call(Method::POST, &format!("{path}/rollback"), none)
                        .await?
                }
            };
            (v, volume_show)
        }
        VolumeCmd::Detach { name } => (
            api.call(Method::POST, &format!("/v1/volumes/{name}/detach"), none)
                .await?,
            volume_show,
        ),
        VolumeCmd::Delete { name, no_wait } => {
            let v: Value = api
                .call(Method::DELETE, &format!("/v1/volumes/{name}"), none)
                .await?;
            if !no_wait {
                let deadline = tokio::time::Instant::now() + SETTLE;
                loop {
                    match api
                        .call::<(), Value>(Method::GET, &format!("/v1/volumes/{name}"), None)
                        .await
                    {
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
            (v, deleted)
        }
        VolumeCmd::Salvage {
            name,
            replica,
            accept_data_loss,
        } => (
            api.call(
                Method::POST,
                &format!("/v1/volumes/{name}/salvage"),
                Some(&SalvageVolume {
                    replica,
                    accept_data_loss,
                }),
            )
            .await?,
            volume_show,
        ),
        VolumeCmd::Expand { name, size } => (
            api.call(
                Method::POST,
                &format!("/v1/volumes/{name}/expand"),
                Some(&ExpandVolume { size }),
            )
            .await?,
            volume_show,
        ),
        VolumeCmd::Snapshot(cmd) => super::snapshot(api, "/v1/volumes", cmd).await?,
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
        let v: Value = api
            .call(Method::GET, &format!("/v1/volumes/{name}"), None::<&()>)
            .await?;
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
    let none: Option<&()> = None;
    Ok(match cmd {
        NodeCmd::List => (api.call(Method::GET, "/v1/nodes", none).await?, node_list),
        NodeCmd::Get { name } => (
            api.call(Method::GET, &format!("/v1/nodes/{name}"), none)
                .await?,
            node_show,
        ),
        NodeCmd::Evict { name, cancel } => (
            api.call(
                Method::POST,
                &format!("/v1/nodes/{name}"),
                Some(&UpdateNode {
                    eviction_requested: Some(!cancel),
                    ..UpdateNode::default()
                }),
            )
            .await?,
            node_show,
        ),
        NodeCmd::DrainCheck { .. } | NodeCmd::Drain { .. } => {
            unreachable!("handled by cli::run (own exit codes)")
        }
        NodeCmd::Update {
            name,
            allow_scheduling,
            tags,
        } => (
            api.call(
                Method::POST,
                &format!("/v1/nodes/{name}"),
                Some(&UpdateNode {
                    allow_scheduling,
                    tags,
                    ..UpdateNode::default()
                }),
            )
            .await?,
            node_show,
        ),
    })
}

pub async fn disk(api: &ApiClient, cmd: DiskCmd) -> Result<(Value, Render), CallError> {
    match cmd {
        DiskCmd::List => Ok((
            api.call(Method::GET, "/v1/disks", None::<&()>).await?,
            disk_list,
        )),
    }
}

pub async fn settings(api: &ApiClient, cmd: SettingsCmd) -> Result<(Value, Render), CallError> {
    Ok(match cmd {
        SettingsCmd::List => (
            api.call(Method::GET, "/v1/settings", None::<&()>).await?,
            setting_list,
        ),
        SettingsCmd::Get { name } => (
            api.call(Method::GET, &format!("/v1/settings/{name}"), None::<&()>)
                .await?,
            setting_show,
        ),
        SettingsCmd::Set { name, value } => (
            api.call(
                Method::PUT,
                &format!("/v1/settings/{name}"),
                Some(&SetSetting { value }),
            )
            .await?,
            setting_show,
        ),
    })
}

/// Snapshot subcommands under `prefix` (`/v1/volumes` or `/v1/engines`).
pub fn snapshot_path(prefix: &str, cmd: &SnapshotCmd) -> (Method, String) {
    match cmd {
        SnapshotCmd::Create { volume, .. } => {
            (Method::POST, format!("{prefix}/{volume}/snapshots"))
        }
        SnapshotCmd::List { volume } => (Method::GET, format!("{prefix}/{volume}/snapshots")),
        SnapshotCmd::Delete { volume, snapshot } => (
            Method::DELETE,
            format!("{prefix}/{volume}/snapshots/{snapshot}"),
        ),
        SnapshotCmd::Revert { volume, snapshot } => (
            Method::POST,
            format!("{prefix}/{volume}/snapshots/{snapshot}/revert"),
        ),
    }
}

fn deleted(v: &Value) -> String {
    format!("volume {} deleted\n", s(&v["name"]))
}

fn volume_attached(v: &Value) -> String {
    format!("{}\n", s(&v["endpoint"]))
}

pub fn volume_list(v: &Value) -> String {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let reps = x["replicas"].as_array().map(Vec::len).unwrap_or(0);
                    vec![
                        s(&x["name"]),
                        size(&x["size"]),
                        s(&x["state"]),
                        s(&x["robustness"]),
                        format!("{reps}/{}", s(&x["number_of_replicas"])),
                        s(&x["attached_node"]),
                        s(&x["endpoint"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
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

pub fn volume_show(v: &Value) -> String {
    let mut out = String::new();
    for (k, label) in [
        ("name", "Name"),
        ("state", "State"),
        ("robustness", "Robustness"),
        ("attached_node", "Attached to"),
        ("endpoint", "Endpoint"),
        ("data_locality", "Data locality"),
    ] {
        out.push_str(&format!("{label:<15}{}\n", s(&v[k])));
    }
    out.push_str(&format!("{:<15}{}\n", "Size", size(&v["size"])));
    out.push_str(&format!(
        "{:<15}{}\n",
        "Replicas",
        s(&v["number_of_replicas"])
    ));
    if v["message"].as_str().is_some_and(|m| !m.is_empty()) {
        out.push_str(&format!("{:<15}{}\n", "Message", s(&v["message"])));
    }
    if let Some(m) = v["migration"].as_object() {
        out.push_str(&format!(
            "{:<15}{} → {}: {}{}{}\n",
            "Migration",
            s(&m["source"]),
            s(&m["target"]),
            s(&m["phase"]),
            m.get("target_endpoint")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty())
                .map(|e| format!(" (target serves {e})"))
                .unwrap_or_default(),
            m.get("message")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty())
                .map(|e| format!(" — {e}"))
                .unwrap_or_default(),
        ));
    }
    if let Some(notes) = v["scheduling"].as_array().filter(|n| !n.is_empty()) {
        out.push_str("Scheduling:\n");
        for n in notes {
            out.push_str(&format!("  - {}\n", s(n)));
        }
    }
    let rows = v["replicas"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    vec![
                        s(&r["name"]),
                        s(&r["node"]),
                        s(&r["disk_path"]),
                        s(&r["state"]),
                        s(&r["mode"]),
                        s(&r["message"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push('\n');
    out.push_str(&columns(
        &["REPLICA", "NODE", "DISK", "STATE", "MODE", "MESSAGE"],
        rows,
    ));
    out
}

pub fn node_list(v: &Value) -> String {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    let labels = n["labels"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}={}", s(v)))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    let mut flags = Vec::new();
                    if n["eviction_requested"] == true {
                        flags.push("evicting");
                    }
                    if n["allow_scheduling"] == false {
                        flags.push("unschedulable");
                    }
                    vec![
                        s(&n["name"]),
                        if n["ready"] == true { "ready" } else { "down" }.into(),
                        n["disks"].as_array().map(Vec::len).unwrap_or(0).to_string(),
                        labels,
                        flags.join(","),
                        s(&n["api_address"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    columns(&["NAME", "STATUS", "DISKS", "LABELS", "FLAGS", "API"], rows)
}

fn node_show(v: &Value) -> String {
    let mut out = node_list(&Value::Array(vec![v.clone()]));
    out.push('\n');
    out.push_str(&disk_list(&v["disks"]));
    out.push_str(&super::drain::eviction_table(&v["eviction"]));
    out
}

fn disk_list(v: &Value) -> String {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    vec![
                        s(&d["uuid"]),
                        s(&d["node"]),
                        s(&d["path"]),
                        s(&d["state"]),
                        size(&d["capacity_bytes"]),
                        size(&d["available_bytes"]),
                        size(&d["scheduled_bytes"]),
                        s(&d["message"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
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

fn setting_list(v: &Value) -> String {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    vec![
                        s(&x["name"]),
                        s(&x["value"]),
                        if x["is_default"] == true {
                            "default"
                        } else {
                            "set"
                        }
                        .into(),
                        s(&x["allowed"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    columns(&["SETTING", "VALUE", "SOURCE", "ALLOWED"], rows)
}

fn setting_show(v: &Value) -> String {
    format!(
        "{} = {}\n  default: {}\n  allowed: {}\n  {}\n",
        s(&v["name"]),
        s(&v["value"]),
        s(&v["default"]),
        s(&v["allowed"]),
        s(&v["description"])
    )
}
