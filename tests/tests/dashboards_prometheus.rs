//! The shipped dashboards and alert rules against a real Prometheus
//! (Debian's) scraping a real cluster: three agents on etcd, three volumes
//! (two attached, under fio load), scraped twice a second with the example
//! configuration of dashboards/provisioning (targets and intervals
//! rewritten) and the shipped rules, plus a copy of them whose `for:` is
//! shortened to 3 s (generated here; the shipped file is not changed).
//!
//! First, on the healthy cluster, every count or state panel (stat, gauge,
//! bar gauge, table) shows a value or its own no-value text, never "No
//! data". Then the cluster is driven through the states some series exist
//! only in: a
//! health check muted, a live migration held in `ready` and rolled back,
//! a replica's node killed (faults, degraded volumes, NODE_DOWN) and
//! brought back (rebuilds), a node eviction blocked by anti-affinity, the
//! store killed and restarted.
//!
//! Then every PromQL expression of every panel and annotation of every
//! dashboard, with the template variables set to real values, is run
//! through the Prometheus HTTP API: as an instant query now, and, if that
//! is empty, over the test's time range as Grafana draws a panel — a
//! state's series (a rebuild's progress) is on the dashboard for as long
//! as the time range holds it. An expression that returns nothing fails
//! the test naming its dashboard and panel.
//!
//! And the alerts: killing the node of a replica makes the replica-error
//! (or stopped-replica), volume-degraded, node-down and agent-down alerts
//! fire in that Prometheus, and they resolve once the volume is healed;
//! killing etcd makes the store-unreachable alert fire.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::prometheus::Prometheus;
use vigil_tests::{Agent, Cluster, Etcd, tools};

/// Template variables as an operator would set them: two nodes and two
/// volumes selected (Grafana writes a multi-selection as a regex), the
/// rate interval Grafana would use for a sub-second scrape, rounded up.
const NODES: &str = "n1|n3";
const VOLUMES: &str = "v1|v2";
const RATE_INTERVAL: &str = "10s";

/// Panels allowed to show nothing in this test, each with the reason; kept
/// minimal. (dashboard file, panel title, why)
const MAY_BE_EMPTY: &[(&str, &str, &str)] = &[];

/// eBPF panels whose series only appear on the first such event, allowed
/// empty when eBPF is loaded: loopback links rarely retransmit, and a
/// healthy disk returns no errors.
const EBPF_EVENT_ONLY: &[&str] = &["TCP retransmits", "Syscall errors", "Block errors"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One PromQL expression of a dashboard.
struct PanelQuery {
    file: String,
    panel: String,
    expr: String,
    /// The panel's type (`stat`, `timeseries`, …; `annotation`).
    kind: String,
    /// Whether the panel says something of its own when the query is
    /// empty (`fieldConfig.defaults.noValue`).
    has_no_value: bool,
}

/// Every panel target and annotation expression of dashboards/grafana.
fn panel_queries() -> Vec<PanelQuery> {
    let dir = repo().join("dashboards/grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let mut panels: Vec<Value> = Vec::new();
        for p in d["panels"].as_array().unwrap() {
            panels.push(p.clone());
            // panels folded into a collapsed row
            panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
        }
        for p in panels {
            for t in p["targets"].as_array().cloned().unwrap_or_default() {
                out.push(PanelQuery {
                    file: name.clone(),
                    panel: p["title"].as_str().unwrap().to_string(),
                    expr: t["expr"].as_str().unwrap().to_string(),
                    kind: p["type"].as_str().unwrap_or("").to_string(),
                    has_no_value: p["fieldConfig"]["defaults"]["noValue"].is_string(),
                });
            }
        }
        for a in d["annotations"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if let Some(e) = a["expr"].as_str() {
                out.push(PanelQuery {
                    file: name.clone(),
                    panel: format!("annotation {}", a["name"].as_str().unwrap()),
                    expr: e.to_string(),
                    kind: "annotation".into(),
                    has_no_value: false,
                });
            }
        }
    }
    assert!(out.len() > 40, "only {} dashboard queries found", out.len());
    out
}

/// The expression as Grafana sends it with the variables above.
fn substitute(expr: &str) -> String {
    let e = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$node", NODES)
        .replace("$volume", VOLUMES);
    assert!(!e.contains('$'), "unknown variable left in {e}");
    e
}

/// The Prometheus configuration: the shipped example with this cluster's
/// agents as targets, 500 ms intervals, the shipped rules and the fast copy.
fn prometheus_config(root: &Path, agents: &[&Agent]) -> PathBuf {
    let shipped = repo().join("dashboards/alerts/vigil.rules.yml");
    let rules = std::fs::read_to_string(&shipped).unwrap();
    let alerts = rules.matches("- alert: ").count();
    let mut fors = 0;
    let fast: String = rules
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for: ") {
                fors += 1;
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}for: 3s\n")
            } else {
                format!(
                    "{}\n",
                    l.replace("- name: vigil-", "- name: test-fast-vigil-")
                )
            }
        })
        .collect();
    assert_eq!(fors, alerts, "every alert should have a for: to shorten");
    let fast_path = root.join("vigil-fast.rules.yml");
    std::fs::write(&fast_path, fast).unwrap();

    let example =
        std::fs::read_to_string(repo().join("dashboards/provisioning/prometheus/prometheus.yml"))
            .unwrap();
    let targets: String = agents
        .iter()
        .map(|a| format!("          - {}\n", a.endpoint.trim_start_matches("http://")))
        .collect();
    let mut cfg = example.clone();
    for (from, to) in [
        ("scrape_interval: 15s", "scrape_interval: 1s".to_string()),
        (
            "evaluation_interval: 15s",
            "evaluation_interval: 1s".to_string(),
        ),
        (
            "  - /etc/prometheus/rules/vigil.rules.yml\n",
            format!("  - {}\n  - {}\n", shipped.display(), fast_path.display()),
        ),
        (
            "          - node1.example:9500\n          - node2.example:9500\n          - node3.example:9500\n",
            targets,
        ),
        // no Alertmanager here: Prometheus's own alert API is checked
        (
            "        - targets: [\"localhost:9093\"]",
            "        - targets: []".to_string(),
        ),
    ] {
        assert!(cfg.contains(from), "example config lacks {from:?}");
        cfg = cfg.replace(from, &to);
    }
    let path = root.join("prometheus.yml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// fio on a volume, stopped when dropped (at the end of the test or when
/// it fails): mixed 4 KiB reads and writes with flushes, rate-limited so
/// the shared machine keeps up. `--thread` keeps the job in the process
/// that is killed: a forked job process outlives a killed parent, and with
/// its NBD server gone it spins on a CPU long after the test.
struct FioLoad(Child);

impl Drop for FioLoad {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fio_load(uri: &str, name: &str) -> FioLoad {
    let child = Command::new("fio")
        .args([
            &format!("--name={name}"),
            "--thread",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--rw=randrw",
            "--bs=4k",
            "--iodepth=4",
            "--size=32M",
            "--fsync=16",
            "--rate_iops=150",
            "--time_based",
            "--runtime=900",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start fio (apt-get install fio)");
    FioLoad(child)
}

/// Alerts now firing named `name` whose labels include every `(k, v)`.
fn firing(p: &Prometheus, name: &str, labels: &[(&str, &str)]) -> bool {
    p.alerts().iter().any(|a| {
        a["state"] == "firing"
            && a["labels"]["alertname"] == name
            && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
    })
}

/// Alerts (pending or firing) that concern `volume` or `node`.
fn alerts_about(p: &Prometheus, volume: &str, node: &str) -> Vec<String> {
    p.alerts()
        .iter()
        .filter(|a| a["labels"]["volume"] == volume || a["labels"]["node"] == node)
        .map(|a| {
            format!(
                "{} {} {}",
                a["labels"]["alertname"], a["state"], a["labels"]
            )
        })
        .collect()
}

#[test]
fn every_dashboard_query_returns_data_and_alerts_fire_and_resolve() {
    let started = Instant::now();
    let mut c = Cluster::builder()
        .args(&["--ebpf", "auto"])
        .on_etcd(&["n1", "n2", "n3"]);

    // v1: 3 replicas, attached on n1; v2: 2 replicas, attached on n3;
    // v3: 2 replicas, detached.
    for (v, size, replicas) in [
        ("v1", "256MiB", "3"),
        ("v2", "64MiB", "2"),
        ("v3", "64MiB", "2"),
    ] {
        c["n1"].json(&[
            "volume",
            "create",
            v,
            "--size",
            size,
            "--replicas",
            replicas,
        ]);
    }
    let uri1 = c.attach("v1", "n1");
    let uri2 = c.attach("v2", "n3");
    // data for a rebuild to copy
    tools::run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x5a 0 160M", &uri1],
    );
    let load = [fio_load(&uri1, "v1"), fio_load(&uri2, "v2")];

    let config = prometheus_config(c.root(), &[&c["n1"], &c["n2"], &c["n3"]]);
    let prom = Prometheus::start(c.root(), &config);
    let t0 = now();
    wait_until(
        "Prometheus scrapes the three agents",
        Duration::from_secs(20),
        || {
            prom.query(r#"up{job="vigil"} == 1"#)
                .is_ok_and(|r| r.len() == 3)
                && prom
                    .query(r#"rate(vigil_volume_io_ops_total{volume="v1"}[10s]) > 0"#)
                    .is_ok_and(|r| !r.is_empty())
        },
    );

    // A healthy cluster shows no "No data" on a count or state panel:
    // each has a value, or says something of its own (noValue).
    let mut no_data = BTreeMap::<String, bool>::new();
    for q in panel_queries() {
        if !matches!(
            q.kind.as_str(),
            "stat" | "gauge" | "bargauge" | "table" | "piechart"
        ) {
            continue;
        }
        let key = format!("{} / {}", q.file, q.panel);
        let answered = q.has_no_value
            || prom
                .query(&substitute(&q.expr))
                .is_ok_and(|r| !r.is_empty());
        *no_data.entry(key).or_insert(false) |= answered;
    }
    assert!(
        no_data.len() >= 20,
        "only {} count or state panels found",
        no_data.len()
    );
    let blank: Vec<&String> = no_data
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(k, _)| k)
        .collect();
    assert!(
        blank.is_empty(),
        "count or state panels showing \"No data\" on a healthy cluster (give the query a 0 or the panel a noValue):\n{}",
        blank
            .iter()
            .map(|k| format!("  {k}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // A muted check (its series), then a live migration held in `ready`.
    let (ok, _, err) = c["n1"].cli(&[
        "health",
        "mute",
        "UNINSTALL_STUCK",
        "--for",
        "1h",
        "--reason",
        "dashboards test",
    ]);
    assert!(ok, "mute: {err}");
    let (code, _, err) = c["n1"].cli_code(&["volume", "migrate", "v2", "--to", "n1"]);
    assert_eq!(code, 0, "migrate v2 --to n1: {err}");
    wait_until(
        "Prometheus sees the migration",
        Duration::from_secs(15),
        || {
            prom.query(r#"vigil_volume_migration_phase_seconds{volume="v2"}"#)
                .is_ok_and(|r| !r.is_empty())
        },
    );
    let (code, _, err) = c["n1"].cli_code(&["volume", "migrate", "v2", "--rollback"]);
    assert_eq!(code, 0, "migrate v2 --rollback: {err}");

    // n2 dies: its replicas fault, v1 and v2 degrade, n2 is down.
    let n2_addr = c["n2"].endpoint.trim_start_matches("http://").to_string();
    let replica_on_n2 = c["n1"]
        .replicas("v1")
        .into_iter()
        .find(|r| r["node"] == "n2")
        .map(|r| r["name"].as_str().unwrap().to_string())
        .expect("a replica of v1 on n2");
    c.kill9("n2");
    let killed = Instant::now();
    wait_until(
        "replica, volume, node and agent alerts firing",
        Duration::from_secs(60),
        || {
            let replica = [("volume", "v1"), ("replica", replica_on_n2.as_str())];
            (firing(&prom, "VigilReplicaError", &replica)
                || firing(&prom, "VigilReplicaStopped", &replica))
                && firing(&prom, "VigilVolumeDegraded", &[("volume", "v1")])
                && firing(&prom, "VigilNodeDown", &[("node", "n2")])
                && firing(&prom, "VigilNodesNotReady", &[])
                && firing(&prom, "VigilAgentDown", &[("instance", n2_addr.as_str())])
        },
    );
    let mut names: Vec<String> = prom
        .alerts()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| a["labels"]["alertname"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names.dedup();
    eprintln!(
        "alerts firing {:.1} s after kill -9 (for: 3 s in the fast copy): {names:?}",
        killed.elapsed().as_secs_f64()
    );
    // The same alerts from the shipped rules, with their real `for:`, are
    // only pending: a short outage does not page.
    let states: Vec<String> = prom
        .alerts()
        .iter()
        .filter(|a| {
            a["labels"]["alertname"] == "VigilVolumeDegraded" && a["labels"]["volume"] == "v1"
        })
        .map(|a| a["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        states.contains(&"pending".to_string()) && states.contains(&"firing".to_string()),
        "VigilVolumeDegraded{{volume=v1}}: shipped rule pending and fast copy firing expected, got {states:?}"
    );

    // n2 returns: its replicas are rebuilt, the alerts resolve.
    c.start_again("n2");
    c["n2"].wait_live();
    let back = Instant::now();
    wait_until("v1 and v2 healthy again", Duration::from_secs(120), || {
        ["v1", "v2"]
            .iter()
            .all(|v| c["n1"].json(&["volume", "get", v])["robustness"] == "healthy")
    });
    wait_until(
        "the alerts about v1 and n2 resolve",
        Duration::from_secs(30),
        || alerts_about(&prom, "v1", "n2").is_empty(),
    );
    eprintln!(
        "healed and resolved {:.1} s after n2 returned",
        back.elapsed().as_secs_f64()
    );
    let samples: usize = prom
        .query_range("vigil_replica_rebuild_size_bytes", t0, now(), 1.0)
        .unwrap()
        .iter()
        .map(|s| s["values"].as_array().map_or(0, Vec::len))
        .sum();
    eprintln!("rebuild series samples: {samples}");

    // An eviction that cannot finish: v1's three replicas need three nodes.
    let (ok, _, err) = c["n1"].cli(&["node", "evict", "n3"]);
    assert!(ok, "evict n3: {err}");
    wait_until(
        "Prometheus sees the eviction",
        Duration::from_secs(20),
        || {
            prom.query(r#"vigil_node_eviction_replicas_left{node="n3"}"#)
                .is_ok_and(|r| !r.is_empty())
        },
    );
    // The store goes away: the agents report it unreachable (and count
    // failed requests); it comes back on the same port and data.
    let etcd_port = c.etcd().client_port;
    c.etcd_mut().kill9();
    wait_until(
        "VigilStoreUnreachable firing",
        Duration::from_secs(30),
        || firing(&prom, "VigilStoreUnreachable", &[]),
    );
    // held (not `_`) so it runs until the test ends
    let _etcd_again = Etcd::start_on(c.root(), etcd_port);
    wait_until(
        "every agent reads the store again",
        Duration::from_secs(30),
        || {
            prom.query(r#"count(vigil_store_up == 1) == 3"#)
                .is_ok_and(|r| !r.is_empty())
        },
    );
    // a few more scrapes with load on every series
    std::thread::sleep(Duration::from_secs(3));

    // Every dashboard expression returns data. The agent has eBPF once its
    // metric catalogue lists the eBPF families (a unit test keeps
    // docs/metrics.md and the code's catalogue equal).
    let ebpf_built = std::fs::read_to_string(repo().join("docs/metrics.md"))
        .unwrap()
        .contains("`vigil_ebpf_loaded`");
    let ebpf_loaded = prom
        .query("vigil_ebpf_loaded == 1")
        .is_ok_and(|r| !r.is_empty());
    // As root (CI) the agents load eBPF (`--ebpf auto`), so its dashboard
    // is checked panel by panel, not just its "unavailable" status.
    // SAFETY: geteuid has no preconditions and cannot fail.
    if ebpf_built && unsafe { libc::geteuid() } == 0 {
        assert!(
            ebpf_loaded,
            "running as root, yet no agent loaded eBPF: {}",
            c["n1"]
                .get("/metrics")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("vigil_ebpf_unavailable"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if !ebpf_built {
        let any = prom.query(r#"{__name__=~"vigil_ebpf_.+"}"#).unwrap();
        assert!(
            any.is_empty(),
            "eBPF series from an agent without eBPF: {any:?}"
        );
    }
    let t1 = now();
    let mut empty = Vec::new();
    let mut over_range = Vec::new();
    let mut checked = 0;
    for q in panel_queries() {
        if q.file == "vigil-ebpf.json" {
            let status = q.panel == "eBPF status";
            if !ebpf_built {
                continue; // the agents have no eBPF yet: nothing to show
            }
            if !status && !ebpf_loaded {
                continue; // unavailable: only the status panel has data
            }
            if !status && EBPF_EVENT_ONLY.contains(&q.panel.as_str()) {
                continue;
            }
            // the status panel's "unavailable" query is empty while loaded
            // (and its "loaded" one reads 0 while not)
            if status && ebpf_loaded && q.expr.contains("vigil_ebpf_unavailable") {
                continue;
            }
        }
        if MAY_BE_EMPTY
            .iter()
            .any(|(f, p, _)| *f == q.file && *p == q.panel)
        {
            continue;
        }
        checked += 1;
        let expr = substitute(&q.expr);
        let now_result = prom.query(&expr);
        match now_result {
            Err(e) => empty.push(format!(
                "{} / {}: query failed: {e}\n    {expr}",
                q.file, q.panel
            )),
            Ok(r) if !r.is_empty() => {}
            Ok(_) => match prom.query_range(&expr, t0, t1, 1.0) {
                Ok(r) if !r.is_empty() => over_range.push(format!("{} / {}", q.file, q.panel)),
                Ok(_) => empty.push(format!("{} / {}: no data\n    {expr}", q.file, q.panel)),
                Err(e) => empty.push(format!(
                    "{} / {}: range query failed: {e}\n    {expr}",
                    q.file, q.panel
                )),
            },
        }
    }
    eprintln!(
        "{checked} dashboard expressions checked ({}); {} had data only earlier in the range: {over_range:#?}",
        if !ebpf_built {
            "eBPF dashboard skipped: the agents have no eBPF"
        } else if ebpf_loaded {
            "eBPF loaded: its panels checked"
        } else {
            "eBPF unavailable: its status panel checked"
        },
        over_range.len()
    );
    assert!(
        empty.is_empty(),
        "{} dashboard expressions return nothing:\n{}\nPrometheus log:\n{}",
        empty.len(),
        empty.join("\n"),
        prom.log_text()
    );

    drop(load);
    eprintln!("test took {:.1} s", started.elapsed().as_secs_f64());
}
