//! `vigil events`: list recent events, or follow new ones (`-f`).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::Render;
use super::table::columns;
use vigil_client::{ApiClient, CallError};

/// What to show.
pub struct Filter {
    pub volume: Option<String>,
    pub node: Option<String>,
    pub object: Option<String>,
    pub since: Option<Duration>,
    pub limit: usize,
}

impl Filter {
    fn query(&self, after: Option<&str>) -> String {
        let mut q = format!("limit={}", self.limit);
        let target = match (&self.volume, &self.node, &self.object) {
            (Some(v), _, _) => Some(("volume".to_string(), v.clone())),
            (_, Some(n), _) => Some(("node".to_string(), n.clone())),
            (_, _, Some(o)) => Some(match o.split_once('/') {
                Some((k, n)) => (k.to_string(), n.to_string()),
                None => (String::new(), o.clone()),
            }),
            _ => None,
        };
        if let Some((kind, name)) = target {
            if !kind.is_empty() {
                q.push_str(&format!("&kind={kind}"));
            }
            q.push_str(&format!("&object={name}"));
        }
        if let Some(d) = self.since {
            let since = vigil_model::now_unix() - d.as_secs_f64();
            q.push_str(&format!("&since={since:.6}"));
        }
        if let Some(a) = after {
            q.push_str(&format!("&after={a}"));
        }
        q
    }
}

/// One listing.
pub async fn list(api: &ApiClient, f: &Filter) -> Result<(Value, Render), CallError> {
    let v = super::json(api.events(&f.query(None)).await?);
    Ok((v, table))
}

/// Prints the matching events, then every new one as it is recorded, until
/// interrupted. With `json`, one JSON object per line.
pub async fn follow(api: &ApiClient, f: &Filter, json: bool) -> ExitCode {
    let mut last: Option<String> = None;
    let mut first = true;
    loop {
        match api.events(&f.query(last.as_deref())).await {
            Ok(events) => {
                if first && !json {
                    println!("{}", header());
                }
                first = false;
                for e in events.iter().map(super::json) {
                    let e = &e;
                    if json {
                        println!("{e}");
                    } else {
                        println!("{}", line(e));
                    }
                    if let Some(id) = e["id"].as_str() {
                        last = Some(id.to_string());
                    }
                }
            }
            Err(e) => eprintln!("warning: {e}; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_default()
}

fn cells(e: &Value) -> Vec<String> {
    vec![
        vigil_model::time::utc_millis(e["time"].as_f64().unwrap_or(0.0)),
        text(&e["severity"]),
        format!("{}/{}", text(&e["kind"]), text(&e["object"])),
        text(&e["reason"]),
        text(&e["message"]),
    ]
}

const HEADER: [&str; 5] = ["TIME (UTC)", "TYPE", "OBJECT", "REASON", "MESSAGE"];

fn header() -> String {
    HEADER.join("  ")
}

fn line(e: &Value) -> String {
    cells(e).join("  ")
}

fn table(v: &Value) -> String {
    let rows = v
        .as_array()
        .map(|a| a.iter().map(cells).collect())
        .unwrap_or_default();
    columns(&HEADER, rows)
}
