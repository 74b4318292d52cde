//! Human-readable renderings of API answers.

use comfy_table::{Table, presets};
use serde::de::DeserializeOwned;
use serde_json::Value;
use vigil_engine::replica::LayerInfo;
use vigil_engine::size::human;
use vigil_model::wire::{ReplicaView, SnapshotList};

pub(super) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub(super) fn size(v: &Value) -> String {
    v.as_u64().map(human).unwrap_or_else(|| s(v))
}

/// Lays out rows in aligned columns: the header first, every column as
/// wide as its widest cell, two spaces between columns, no borders and no
/// trailing whitespace. Scripts and the integration tests read this shape.
pub(super) fn columns(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    // No borders or separators; a column's right padding is the gap.
    table.load_style(presets::NOTHING);
    table.set_header(header.iter().copied());
    table.add_rows(rows);
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    // Padding and empty last cells leave blanks at the end of lines.
    table.trim_fmt() + "\n"
}

/// Renders an API answer as the route's wire type `T`. An answer that does
/// not decode as `T` (an agent of another version) is shown as the JSON it
/// is, with why on stderr, rather than as a table of guesses.
pub(super) fn typed<T: DeserializeOwned>(v: &Value, render: fn(&T) -> String) -> String {
    match T::deserialize(v) {
        Ok(answer) => render(&answer),
        Err(e) => {
            eprintln!("warning: cannot read the agent's answer as a table ({e}); showing its JSON");
            format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
        }
    }
}

pub fn done(_: &Value) -> String {
    "ok\n".into()
}

pub fn replica_created(v: &Value) -> String {
    format!("{}\n", s(&v["url"]))
}

pub fn replica_list(replicas: &[ReplicaView]) -> String {
    let rows = replicas
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                human(r.info.size),
                r.info.chain.len().to_string(),
                r.info.revision.to_string(),
                r.url.clone(),
            ]
        })
        .collect();
    columns(&["NAME", "SIZE", "LAYERS", "REVISION", "URL"], rows)
}

fn chain_rows(chain: &[LayerInfo]) -> Vec<Vec<String>> {
    chain
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                if l.read_only { "snapshot" } else { "head" }.into(),
                l.parent.clone().unwrap_or_else(|| "-".into()),
                human(l.allocated_bytes),
                if l.user_created { "user" } else { "system" }.into(),
                l.checksum
                    .as_ref()
                    .map_or_else(|| "-".into(), |c| c.value.clone()),
            ]
        })
        .collect()
}

const CHAIN_HEADER: [&str; 6] = [
    "LAYER",
    "KIND",
    "PARENT",
    "ALLOCATED",
    "CREATED-BY",
    "CHECKSUM",
];

pub fn replica_show(r: &ReplicaView) -> String {
    let mut out = format!(
        "Replica:    {}\nURL:        {}\nDirectory:  {}\nSize:       {}\nRevision:   {}\nGeneration: {}\nDirect I/O: {}\n\n",
        r.name,
        r.url,
        r.dir,
        human(r.info.size),
        r.info.revision,
        r.info.generation,
        r.info.direct_io,
    );
    out.push_str(&columns(&CHAIN_HEADER, chain_rows(&r.info.chain)));
    out
}

pub fn verify(v: &Value) -> String {
    let mut out = format!(
        "Replica {}: {} layers checked, {}\n",
        s(&v["name"]),
        s(&v["layers_checked"]),
        if v["ok"].as_bool() == Some(true) {
            "OK"
        } else {
            "PROBLEMS FOUND"
        }
    );
    if let Some(problems) = v["problems"].as_array() {
        for p in problems {
            out.push_str(&format!(
                "  {} [{}] {}: {}\n",
                s(&p["layer"]),
                s(&p["kind"]),
                s(&p["file"]),
                s(&p["detail"])
            ));
        }
    }
    out
}

pub fn engine_created(v: &Value) -> String {
    format!("{}\n{}\n", s(&v["nbd_uri"]), s(&v["nbd_unix_uri"]))
}

pub fn engine_list(v: &Value) -> String {
    let rows = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let reps = e["replicas"].as_array();
                    let rw = reps
                        .map(|r| r.iter().filter(|x| x["mode"] == "RW").count())
                        .unwrap_or(0);
                    vec![
                        s(&e["name"]),
                        size(&e["size"]),
                        s(&e["robustness"]),
                        format!("{rw}/{}", reps.map(|r| r.len()).unwrap_or(0)),
                        s(&e["nbd_uri"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    columns(&["NAME", "SIZE", "ROBUSTNESS", "RW", "NBD"], rows)
}

pub fn engine_show(v: &Value) -> String {
    let mut out = format!(
        "Volume:     {}\nSize:       {}\nRobustness: {}\nNBD:        {}\n            {}\n",
        s(&v["name"]),
        size(&v["size"]),
        s(&v["robustness"]),
        s(&v["nbd_uri"]),
        s(&v["nbd_unix_uri"]),
    );
    if let Some(why) = v["unavailable_reason"].as_str() {
        out.push_str(&format!("Unavailable: {why}\n"));
    }
    out.push_str(&suspended_line(&v["suspended"]));
    out.push('\n');
    let rows = v["replicas"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let fault = &r["fault"];
                    let reason = if fault.is_null() {
                        "-".to_string()
                    } else {
                        format!(
                            "{} at {}: {}",
                            s(&fault["reason"]),
                            s(&fault["at_unix"]),
                            s(&fault["last_error"])
                        )
                    };
                    let rebuild = &r["rebuild"];
                    let progress = if rebuild.is_null() {
                        "-".to_string()
                    } else {
                        format!(
                            "{}/{}{}",
                            size(&rebuild["bytes_done"]),
                            size(&rebuild["bytes_total"]),
                            if rebuild["finished_unix"].is_null() {
                                " (running)"
                            } else {
                                " (done)"
                            }
                        )
                    };
                    vec![
                        s(&r["address"]),
                        s(&r["mode"]),
                        if r["local"].as_bool() == Some(true) {
                            "local"
                        } else {
                            "remote"
                        }
                        .into(),
                        progress,
                        reason,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&columns(
        &["REPLICA", "MODE", "PATH", "REBUILD", "REASON"],
        rows,
    ));
    out
}

/// `Suspended:  since TIME (N s), clients' requests held: REASON`, or
/// nothing when the engine is not suspended.
fn suspended_line(sus: &Value) -> String {
    let Some(since) = sus["since_unix"].as_u64() else {
        return String::new();
    };
    let clients = match sus["on_suspend"].as_str() {
        Some("io-error") => "clients' requests fail with EIO",
        _ => "clients' requests are held",
    };
    format!(
        "Suspended:  since {} ({} s), {clients}: {}\n",
        vigil_model::time::rfc3339(since, 0),
        vigil_control::health::view::now_secs().saturating_sub(since),
        s(&sus["reason"])
    )
}

pub fn snapshot_created(v: &Value) -> String {
    format!("{}\n", s(&v["name"]))
}

pub fn snapshot_list(list: &SnapshotList) -> String {
    columns(&CHAIN_HEADER, chain_rows(&list.chain))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn columns_are_aligned_two_spaces_apart_without_trailing_blanks() {
        let rows = vec![
            vec!["v1".into(), "64 MiB".into(), "attached".into(), "n1".into()],
            vec!["volume-two".into(), "1 GiB".into(), "".into(), "".into()],
            vec!["v3".into(), "".into(), "detached".into(), "n12".into()],
        ];
        assert_eq!(
            super::columns(&["NAME", "SIZE", "STATE", "NODE"], rows),
            "NAME        SIZE    STATE     NODE\n\
             v1          64 MiB  attached  n1\n\
             volume-two  1 GiB\n\
             v3                  detached  n12\n"
        );
    }

    #[test]
    fn a_table_without_rows_is_its_header() {
        assert_eq!(super::columns(&["NAME", "STATE"], vec![]), "NAME  STATE\n");
    }

    #[test]
    fn engine_show_says_since_when_an_engine_is_suspended() {
        let mut v = json!({"name": "v", "size": 4096, "robustness": "healthy", "replicas": []});
        assert!(!super::engine_show(&v).contains("Suspended"));
        v["suspended"] = json!({
            "on_suspend": "suspend",
            "reason": "node n1 could not renew its liveness lease",
            "since_unix": 1_000_000_000u64,
        });
        let out = super::engine_show(&v);
        assert!(
            out.contains("Suspended:  since 2001-09-09T01:46:40")
                && out.contains("clients' requests are held: node n1 could not renew"),
            "{out}"
        );
    }
}
