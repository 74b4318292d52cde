//! One node's part of the bundle, collected by its own agent: recent log
//! lines, a metrics snapshot (eBPF series apart), each replica's chain
//! metadata and file check (names, sizes, checksums from metadata — no
//! volume data is read), the disks (identity file, usage, filesystem),
//! the agent's configuration, flags and environment (redacted), and
//! system facts with the node's clock.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Request;
use super::redact::{self, Redactor};
use crate::daemon::Agent;

/// What `GET /v1/support-bundle/node` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodePart {
    pub node: String,
    pub vigil_version: String,
    /// The node's clock when it answered (Unix seconds).
    pub unix_time: f64,
    /// Files, paths relative to `nodes/<node>/`.
    pub files: Vec<PartFile>,
}

/// One text file of a node's part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartFile {
    pub path: String,
    pub content: String,
}

/// The redactor an agent starts from: its cluster token and the secrets
/// in its environment.
pub fn redactor(agent: &Agent) -> Redactor {
    let mut r = Redactor::new([agent.token.expose().to_string()]);
    r.merge(&redact::from_environment());
    r
}

/// Collects this node's part. Never fails: a piece that cannot be read
/// says why in its place.
pub async fn collect(agent: &Arc<Agent>, req: &Request) -> NodePart {
    let mut red = redactor(agent);
    // The agent's own settings first: values it learns there (a flag's
    // credential) are then removed from every other file.
    let agent_json = agent_facts(agent, &mut red);
    let logs = logs(req);
    let metrics = crate::metrics::render(&agent.local).await;
    let (metrics, ebpf) = split_ebpf(&metrics);
    let replicas = {
        let agent = Arc::clone(agent);
        let req = req.clone();
        tokio::task::spawn_blocking(move || replicas(&agent, &req))
            .await
            .unwrap_or_else(|e| json!({"error": format!("collect replicas: {e}")}))
    };
    let disks = {
        let agent = Arc::clone(agent);
        tokio::task::spawn_blocking(move || disks(&agent))
            .await
            .unwrap_or_else(|e| json!({"error": format!("collect disks: {e}")}))
    };
    let system = system_facts();
    let mut files = vec![
        file("agent.json", &red.json(agent_json)),
        file("system.json", &red.json(system)),
        file("disks.json", &red.json(disks)),
        file("replicas.json", &red.json(replicas)),
        PartFile {
            path: "logs.jsonl".into(),
            content: logs,
        },
        PartFile {
            path: "metrics.prom".into(),
            content: metrics,
        },
    ];
    if !ebpf.is_empty() {
        files.push(PartFile {
            path: "ebpf.prom".into(),
            content: ebpf,
        });
    }
    if let Some(cfg) = &agent.config.log_file {
        let cfg = cfg.clone();
        let req = req.clone();
        let found = tokio::task::spawn_blocking(move || log_files(&cfg, &req))
            .await
            .unwrap_or_else(|e| {
                vec![(
                    "log-file.error".into(),
                    format!("collect the log file: {e}\n"),
                )]
            });
        files.extend(
            found
                .into_iter()
                .map(|(path, content)| PartFile { path, content }),
        );
    }
    // The central pass, here already (the coordinator runs it again).
    for f in &mut files {
        f.content = String::from_utf8_lossy(&red.file(&f.path, f.content.as_bytes())).into_owned();
    }
    NodePart {
        node: agent.config.node_name.clone(),
        vigil_version: super::VERSION.to_string(),
        unix_time: vigil_model::now_unix(),
        files,
    }
}

fn file(path: &str, v: &Value) -> PartFile {
    PartFile {
        path: path.to_string(),
        content: serde_json::to_string_pretty(v).unwrap_or_default(),
    }
}

/// The log ring's lines (JSON each) newer than the request's window.
fn logs(req: &Request) -> String {
    let lines = crate::telemetry::logs::recent(crate::telemetry::logs::MAX_LINES);
    let cutoff = cutoff(req);
    let mut out = String::new();
    for l in lines {
        if in_window(&l, cutoff.as_deref()) {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// The request's window start as the lines write times (RFC 3339 UTC,
/// which sorts by time as text).
fn cutoff(req: &Request) -> Option<String> {
    req.cutoff_unix(vigil_model::now_unix()).map(|t| {
        let t = t.max(0.0);
        vigil_model::time::rfc3339(t as u64, ((t.fract()) * 1000.0) as u32)
    })
}

/// Whether a log line (`{"time":"<rfc3339>",...}`) is in the window; a
/// line without a time is kept.
fn in_window(line: &str, cutoff: Option<&str>) -> bool {
    let Some(c) = cutoff else { return true };
    match serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v["time"].as_str().map(str::to_string))
    {
        Some(t) => t.as_str() >= c,
        None => true,
    }
}

/// Most bytes of log file lines one node's part carries (newest kept).
const LOG_FILE_BUDGET: usize = 32 << 20;

/// The log file and its rotated files (`log-file/current.jsonl`,
/// `log-file/rotated-N.jsonl`), with the
/// lines in the request's window, newest files first until
/// [`LOG_FILE_BUDGET`] is spent (then a note says what was left out).
fn log_files(cfg: &crate::telemetry::file::LogFile, req: &Request) -> Vec<(String, String)> {
    let cutoff = cutoff(req);
    let mut left = LOG_FILE_BUDGET;
    let mut out = Vec::new();
    for (i, path) in cfg.files() {
        // plain names whatever the operator called the file: the current
        // one, then the rotated ones, newest first
        let name = if i == 0 {
            "current.jsonl".to_string()
        } else {
            format!("rotated-{i}.jsonl")
        };
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                out.push((
                    format!("log-file/{name}.error"),
                    format!("read {}: {e}\n", path.display()),
                ));
                continue;
            }
        };
        let mut kept = String::new();
        for line in text.lines().filter(|l| in_window(l, cutoff.as_deref())) {
            kept.push_str(line);
            kept.push('\n');
        }
        if kept.is_empty() {
            continue;
        }
        if kept.len() > left {
            out.push((
                format!("log-file/{name}.omitted"),
                format!(
                    "{} ({} bytes in the window) and older files left out: the bundle carries at most {LOG_FILE_BUDGET} bytes of log file per node\n",
                    path.display(),
                    kept.len()
                ),
            ));
            break;
        }
        left -= kept.len();
        out.push((format!("log-file/{name}"), kept));
    }
    out
}

/// Splits a scrape into the `vigil_ebpf_*` families and the rest.
pub fn split_ebpf(page: &str) -> (String, String) {
    let mut rest = String::with_capacity(page.len());
    let mut ebpf = String::new();
    for line in page.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        let target = if name.starts_with("vigil_ebpf_") {
            &mut ebpf
        } else {
            &mut rest
        };
        target.push_str(line);
        target.push('\n');
    }
    (rest, ebpf)
}

/// Each replica's chain metadata, its files (name, size, allocated bytes)
/// and the file check (present, sized, metadata readable) — never its data.
fn replicas(agent: &Agent, req: &Request) -> Value {
    let mut out = Vec::new();
    for (name, held) in agent.local.replicas.all_held() {
        if !req.wants_volume(super::volume_of_replica(&name)) {
            continue;
        }
        let check = match held.replica.check_files() {
            Ok(r) => serde_json::to_value(&r).unwrap_or(Value::Null),
            Err(e) => json!({"error": e.to_string()}),
        };
        out.push(json!({
            "name": name,
            "volume": super::volume_of_replica(&name),
            "disk": held.disk,
            "dir": held.dir.display().to_string(),
            "info": held.replica.info(),
            "io_errors": held.replica.io_errors(),
            "files": dir_files(&held.dir),
            "check": check,
        }));
    }
    let damaged: Vec<Value> = agent
        .local
        .replicas
        .all_damaged()
        .into_iter()
        .filter(|(n, _)| req.wants_volume(super::volume_of_replica(n)))
        .map(|(name, d)| {
            json!({
                "name": name,
                "dir": d.dir.display().to_string(),
                "kind": format!("{:?}", d.kind),
                "file": d.file.display().to_string(),
                "message": d.message,
                "files": dir_files(&d.dir),
            })
        })
        .collect();
    json!({"open": out, "damaged_at_start": damaged})
}

/// Names, sizes and allocated bytes of the files in a directory (stat
/// only; nothing is read).
fn dir_files(dir: &Path) -> Value {
    use std::os::unix::fs::MetadataExt;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return json!({"error": format!("list {}: {e}", dir.display())}),
    };
    let mut files: Vec<Value> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match e.metadata() {
                Ok(m) => json!({
                    "name": name,
                    "size": m.len(),
                    "allocated_bytes": m.blocks() * 512,
                    "modified_unix": m.mtime(),
                }),
                Err(err) => json!({"name": name, "error": err.to_string()}),
            }
        })
        .collect();
    files.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Value::Array(files)
}

/// Each disk: identity file as it is on disk, usage, filesystem type.
fn disks(agent: &Agent) -> Value {
    let mut out = Vec::new();
    for d in agent.local.replicas.disks() {
        let identity_path = d.path.join(vigil_control::local::disks::IDENTITY_FILE);
        let identity = match std::fs::read(&identity_path) {
            Ok(b) => serde_json::from_slice::<Value>(&b)
                .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&b).into_owned())),
            Err(e) => json!({"error": format!("read {}: {e}", identity_path.display())}),
        };
        let usage = match d.usage() {
            Ok(u) => json!({"capacity_bytes": u.capacity, "available_bytes": u.available}),
            Err(e) => json!({"error": e.to_string()}),
        };
        let replicas = std::fs::read_dir(d.replica_dir())
            .map(|r| r.filter_map(Result::ok).count())
            .ok();
        out.push(json!({
            "uuid": d.uuid,
            "path": d.path.display().to_string(),
            "identity_file": identity,
            "identity_present": d.still_present(),
            "usage": usage,
            "filesystem": fs_type(&d.path),
            "replica_dirs": replicas,
        }));
    }
    Value::Array(out)
}

/// The filesystem type of `path` (statfs), by name when known.
fn fs_type(path: &Path) -> Value {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return Value::Null;
    };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to enough
    // writable memory for one `statfs`.
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return json!({"error": std::io::Error::last_os_error().to_string()});
    }
    // SAFETY: statfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    let magic = st.f_type as u64;
    let name = match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0x2FC1_2FC1 => "zfs",
        0x6573_5546 => "fuse",
        0xF2F5_2010 => "f2fs",
        _ => "other",
    };
    json!({"type": name, "magic": format!("0x{magic:x}"), "block_size": st.f_bsize})
}

/// The agent's configuration, its command line and vigil environment
/// variables — credentials replaced (and learnt by `red`).
fn agent_facts(agent: &Agent, red: &mut Redactor) -> Value {
    let c = &agent.config;
    let args = redact_args(std::env::args().collect(), red);
    let env: serde_json::Map<String, Value> = std::env::vars()
        .filter(|(k, _)| redact::is_vigil_env(k))
        .map(|(k, v)| {
            let v = red.pair(&k, &v);
            (k, Value::from(v))
        })
        .collect();
    let labels: serde_json::Map<String, Value> = c
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(red.pair(k, v))))
        .collect();
    let store = match &c.store {
        vigil_store::StoreUrl::Embedded => "embedded".to_string(),
        vigil_store::StoreUrl::Etcd(e) => e.join(","),
    };
    json!({
        "node": c.node_name,
        "vigil_version": super::VERSION,
        "pid": std::process::id(),
        "config": {
            "data_dir": c.data_dir.display().to_string(),
            "listen": c.listen.to_string(),
            "replica_listen": c.replica_listen.map(|a| a.to_string()),
            "nbd_listen": c.nbd_listen.map(|a| a.to_string()),
            "nbd_socket": c.nbd_socket.as_ref().map(|p| p.display().to_string()),
            "advertise": c.advertise.map(|a| a.to_string()),
            "disks": c.disks.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "labels": labels,
            "store": red.pair("store", &store),
            "engine": format!("{:?}", c.engine),
        },
        "addresses": {
            "api": agent.local.me.api_address,
            "replica": agent.local.me.replica_address,
            "nbd": agent.local.me.nbd_address,
            "nbd_socket": agent.local.me.nbd_socket.display().to_string(),
        },
        "store": {"kind": agent.local.cluster.store_kind(), "location": red.pair("store", &agent.local.cluster.store_location())},
        "args": args,
        "environment": env,
        "log_file": Value::Null,
        "notes": [
            "the agent logs to stderr only (there is no log file option); its recent lines are in logs.jsonl",
            if std::env::var_os("VIGIL_CLUSTER_TOKEN").is_some() {
                "the cluster token comes from the environment (VIGIL_CLUSTER_TOKEN); its value is never collected"
            } else {
                "the cluster token comes from <data-dir>/cluster-token; its value is never collected"
            },
        ],
    })
}

/// The command line with credentials replaced: the value of a flag whose
/// name looks like a credential's (`--token x`, `--api-key=x`), of a
/// `key=value` argument whose key does (`--label api-key=x`), and URL
/// passwords.
pub fn redact_args(args: Vec<String>, red: &mut Redactor) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut secret_next = false;
    for a in args {
        if secret_next {
            secret_next = false;
            red.learn(a.clone());
            out.push(redact::REDACTED.to_string());
            continue;
        }
        if let Some(flag) = a.strip_prefix("--") {
            match flag.split_once('=') {
                Some((name, value)) => out.push(format!("--{name}={}", red.pair(name, value))),
                None => {
                    secret_next = redact::is_secret_name(flag);
                    out.push(a);
                }
            }
            continue;
        }
        match a.split_once('=') {
            Some((k, v)) => out.push(format!("{k}={}", red.pair(k, v))),
            None => out.push(red.pair("", &a)),
        }
    }
    out
}

/// Kernel, memory, CPUs, load and the clock.
fn system_facts() -> Value {
    let uname = uname();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem: serde_json::Map<String, Value> = meminfo
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(
                k,
                "MemTotal"
                    | "MemFree"
                    | "MemAvailable"
                    | "Buffers"
                    | "Cached"
                    | "Dirty"
                    | "Writeback"
                    | "SwapTotal"
                    | "SwapFree"
            )
            .then(|| (k.to_string(), Value::from(v.trim())))
        })
        .collect();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_string())
        .ok();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .ok()
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let process: serde_json::Map<String, Value> = status
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "VmRSS" | "VmHWM" | "Threads")
                .then(|| (k.to_string(), Value::from(v.trim())))
        })
        .collect();
    json!({
        "kernel": uname,
        "memory": mem,
        "cpus_available": cpus,
        "cpus_online": online,
        "loadavg": read("/proc/loadavg"),
        "uptime": read("/proc/uptime"),
        "process": process,
        "unix_time": vigil_model::now_unix(),
    })
}

fn uname() -> Value {
    let mut u = std::mem::MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: `u` points to enough writable memory for one `utsname`.
    if unsafe { libc::uname(u.as_mut_ptr()) } != 0 {
        return json!({"error": std::io::Error::last_os_error().to_string()});
    }
    // SAFETY: uname returned 0, so it filled the struct.
    let u = unsafe { u.assume_init() };
    let s = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    json!({
        "sysname": s(&u.sysname),
        "nodename": s(&u.nodename),
        "release": s(&u.release),
        "version": s(&u.version),
        "machine": s(&u.machine),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_files_keep_the_window_and_name_files_plainly() {
        #![allow(clippy::unwrap_used)] // a failed step should fail the test loudly
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::telemetry::file::LogFile {
            path: dir.path().join("my agent.log"),
            max_bytes: 1 << 20,
            keep: 3,
        };
        let now = vigil_model::time::rfc3339_now();
        let old = r#"{"time":"2020-01-01T00:00:00.000Z","message":"old"}"#;
        let new = format!(r#"{{"time":"{now}","message":"new"}}"#);
        std::fs::write(&cfg.path, format!("{old}\n{new}\n")).unwrap();
        std::fs::write(dir.path().join("my agent.log.2"), format!("{old}\n")).unwrap();
        let req = Request {
            since_secs: Some(3600),
            ..Request::default()
        };
        let got = log_files(&cfg, &req);
        // the rotated file holds nothing in the window: left out
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "log-file/current.jsonl");
        assert_eq!(got[0].1, format!("{new}\n"));
        // without --since, both files, the rotated one named by its index
        let all = log_files(&cfg, &Request::default());
        let names: Vec<_> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["log-file/current.jsonl", "log-file/rotated-2.jsonl"]
        );
    }

    #[test]
    fn ebpf_families_go_apart() {
        let page = "# HELP vigil_up x\n# TYPE vigil_up gauge\nvigil_up 1\n# HELP vigil_ebpf_loaded y\n# TYPE vigil_ebpf_loaded gauge\nvigil_ebpf_loaded{node=\"n1\"} 1\n";
        let (rest, ebpf) = split_ebpf(page);
        assert!(!rest.contains("ebpf"), "{rest}");
        assert_eq!(ebpf.lines().count(), 3, "{ebpf}");
        assert!(rest.contains("vigil_up 1"));
    }

    #[test]
    fn credential_flags_are_replaced_and_learnt() {
        let mut red = Redactor::default();
        let args = redact_args(
            [
                "vigil",
                "agent",
                "--token",
                "tok-111111",
                "--api-key=k-222222",
                "--label",
                "db-password=p-333333",
                "--label",
                "zone=a",
                "--otlp-endpoint",
                "http://u:p-444444@h:4318",
            ]
            .map(String::from)
            .to_vec(),
            &mut red,
        );
        let joined = args.join(" ");
        for s in ["tok-111111", "k-222222", "p-333333", "p-444444"] {
            assert!(!joined.contains(s), "{s} in {joined}");
            assert!(!red.text(&format!("x {s} y")).contains(s), "{s} not learnt");
        }
        assert!(joined.contains("zone=a"), "{joined}");
    }
}
