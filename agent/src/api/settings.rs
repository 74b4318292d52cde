//! Settings and events handlers.

use hyper::StatusCode;

use super::error::ApiError;
use super::to_json;
use crate::daemon::Agent;
use vigil_control::cluster::events::Severity;
use vigil_model::Event;
use vigil_model::EventReason;
use vigil_model::settings::{self, StoredSetting};
use vigil_model::wire::{SetSetting, SettingView};
use vigil_store::Expect;

type Reply = Result<(StatusCode, Vec<u8>), ApiError>;

fn bad_setting(e: settings::SettingError) -> ApiError {
    match e {
        settings::SettingError::Unknown { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_setting", e.to_string())
        }
        settings::SettingError::Invalid { .. } => {
            ApiError::bad_request("invalid_setting", e.to_string())
        }
    }
}

async fn views(agent: &Agent) -> Result<Vec<SettingView>, ApiError> {
    let s = agent.local.cluster.settings().await?;
    Ok(s.all()
        .into_iter()
        .map(|(d, value, is_default)| SettingView {
            name: d.name.into(),
            value,
            default: d.default.into(),
            is_default,
            allowed: d.kind.allowed(),
            description: d.doc.into(),
        })
        .collect())
}

pub async fn list(agent: &Agent) -> Reply {
    Ok((StatusCode::OK, to_json(&views(agent).await?)))
}

pub async fn get(agent: &Agent, name: &str) -> Reply {
    settings::definition(name).map_err(bad_setting)?;
    let v = views(agent)
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiError::not_found("setting", name))?;
    Ok((StatusCode::OK, to_json(&v)))
}

pub async fn set(agent: &Agent, name: &str, req: SetSetting) -> Reply {
    let value = settings::validate(name, &req.value).map_err(bad_setting)?;
    let c = &agent.local.cluster;
    let old = c
        .retry(|| async {
            match c.get::<StoredSetting>(name).await? {
                Some(mut v) => {
                    let old = v.object.value.clone();
                    v.object.value = value.clone();
                    c.update(&v).await?;
                    Ok(Some(old))
                }
                None => {
                    let s = StoredSetting {
                        name: name.into(),
                        value: value.clone(),
                    };
                    c.txn(vec![vigil_control::cluster::put_op(&s, Expect::Absent)])
                        .await?;
                    Ok(None)
                }
            }
        })
        .await?;
    let old = old.unwrap_or_else(|| {
        settings::definition(name)
            .map(|d| d.default.to_string())
            .unwrap_or_default()
    });
    if old != value {
        c.event(
            Severity::Normal,
            "setting",
            name,
            EventReason::SettingChanged,
            format!("{name}: {old} -> {value}"),
        )
        .await;
    }
    get(agent, name).await
}

/// `GET /v1/events[?kind=K][&object=O][&since=UNIX][&after=ID][&limit=N]`:
/// newest last. `since` keeps events at or after a time; `after` keeps
/// those recorded after the event with that id (ids sort by time), which
/// is how `vigil events -f` follows.
pub async fn events(agent: &Agent, query: &str) -> Reply {
    let mut kind = None;
    let mut object = None;
    let mut since = None::<f64>;
    let mut after = None::<String>;
    let mut limit = 200usize;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "kind" => kind = Some(v.to_string()),
            "object" => object = Some(v.to_string()),
            "after" => after = Some(v.to_string()),
            "since" => {
                since = Some(v.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("since {v:?} is not a Unix time in seconds"),
                    )
                })?)
            }
            "limit" => {
                limit = v.parse().map_err(|_| {
                    ApiError::bad_request("invalid_query", format!("limit {v:?} is not a number"))
                })?
            }
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "unknown query parameter {k:?}; known: kind, object, since, after, limit"
                    ),
                ));
            }
        }
    }
    let all = agent.local.cluster.list::<Event>().await?;
    let matching: Vec<Event> = all
        .into_iter()
        .map(|v| v.object)
        .filter(|e| kind.as_deref().is_none_or(|k| e.kind == k))
        .filter(|e| object.as_deref().is_none_or(|o| e.object == o))
        .filter(|e| since.is_none_or(|s| e.time >= s))
        .filter(|e| after.as_deref().is_none_or(|a| e.id.as_str() > a))
        .collect();
    let skip = matching.len().saturating_sub(limit);
    Ok((StatusCode::OK, to_json(&matching[skip..].to_vec())))
}
