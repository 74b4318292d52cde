//! Issue 6, flow 1 under concurrency: a node's eviction (requested and
//! cancelled at random) interleaved with attach/detach requests from
//! concurrent clients — CLI processes against different agents — and
//! `kill -9` + restart of agents that are not evicted.
//!
//! Four agents on etcd; one 2-replica volume `vc` with data, replicas on
//! n1 and n2. Threads:
//! * two clients: `vigil volume attach vc --node N` / `volume detach vc`
//!   against a random live agent, at random;
//! * the evictor: evicts a node holding a replica of `vc` (so the replica
//!   moves — through the attached engine or a maintenance engine,
//!   whichever the clients' requests leave running), then cancels after a
//!   while (maybe mid-move) and picks again;
//! * chaos: kill -9 a node that is not being evicted, restart it a moment
//!   later;
//! * the sampler: reads the volume and every live agent's engine list.
//!
//! Invariants, checked at every sample:
//! * exactly one engine at a time: at most one agent lists an engine for
//!   `vc`, and only the node it is attached to;
//! * an attached volume has no maintenance engine record (an attach waits
//!   for the maintenance engine to stop; the attach clears the record);
//! * the state never disagrees with the last completed request: while the
//!   last request to complete was a detach (and none is in flight or has
//!   started since), the volume is `detached`, has no desired node and no
//!   agent lists an engine for it — never `attached` after a detach.
//!
//! At the end: chaos stops, the volume is detached and a node holding one
//! of its replicas is evicted (so a maintenance engine moves it), the
//! eviction completes, every maintenance engine started was stopped, and
//! the volume is attached once more and its data compared with qemu-img.
//!
//! The seed is printed; `VIGIL_TEST_SEED=N` (or `VIGIL_SEED`) replays it.
//! `VIGIL_TEST_SECONDS` sets how long the chaos lasts (default 45).

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use vigil_tests::agent::{vigil_bin, wait_until};
use vigil_tests::{Agent, Etcd, tools};

const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];
const VOLUME: &str = "vc";

/// `vigil ARGS` against `endpoint` with a deadline: (ok, stdout, stderr).
fn vigil(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("timeout")
        .arg("60")
        .arg(vigil_bin())
        .args(["--endpoint", endpoint])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn vjson(endpoint: &str, args: &[&str]) -> Option<Value> {
    let mut full = vec!["-o", "json"];
    full.extend_from_slice(args);
    let (ok, out, _) = vigil(endpoint, &full);
    if !ok {
        return None;
    }
    serde_json::from_str(&out).ok()
}

#[derive(Debug, Clone, PartialEq)]
enum Request {
    Attach(String),
    Detach,
}

/// What the clients asked and got, as the sampler needs it.
#[derive(Default)]
struct Requests {
    /// Bumped when a request starts.
    generation: u64,
    in_flight: usize,
    /// The last request that completed OK with no other request started
    /// while it ran (`None` when the order is ambiguous).
    last: Option<Request>,
    completed: u64,
}

struct Shared {
    seed: u64,
    endpoints: Vec<String>,
    requests: Mutex<Requests>,
    /// Agents currently killed (their endpoints are not asked).
    down: Mutex<Vec<String>>,
    /// The node being evicted now, if any (chaos leaves it alone).
    evicted: Mutex<Option<String>>,
    stop: AtomicBool,
    violations: Mutex<Vec<String>>,
}

impl Shared {
    fn violation(&self, what: String) {
        eprintln!("[seed {}] VIOLATION: {what}", self.seed);
        self.violations.lock().unwrap().push(what);
    }
    fn live_endpoints(&self) -> Vec<String> {
        let down = self.down.lock().unwrap().clone();
        self.endpoints
            .iter()
            .filter(|e| !down.contains(e))
            .cloned()
            .collect()
    }
}

fn client(sh: &Shared, id: u64) {
    let mut rng = StdRng::seed_from_u64(sh.seed ^ (0x51ed_0000 + id));
    while !sh.stop.load(Ordering::Relaxed) {
        let live = sh.live_endpoints();
        let endpoint = live[rng.random_range(0..live.len())].clone();
        let req = if rng.random_bool(0.5) {
            Request::Attach(NODES[rng.random_range(1..NODES.len())].to_string())
        } else {
            Request::Detach
        };
        let mine = {
            let mut r = sh.requests.lock().unwrap();
            r.generation += 1;
            r.in_flight += 1;
            r.generation
        };
        let (ok, _, err) = match &req {
            Request::Attach(n) => vigil(&endpoint, &["volume", "attach", VOLUME, "--node", n]),
            Request::Detach => vigil(&endpoint, &["volume", "detach", VOLUME]),
        };
        {
            let mut r = sh.requests.lock().unwrap();
            r.in_flight -= 1;
            if ok && r.generation == mine {
                r.last = Some(req.clone());
                r.completed += 1;
            } else {
                r.last = None;
            }
        }
        if !ok {
            eprintln!("client {id}: {req:?} via {endpoint} failed: {}", err.trim());
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1500)));
    }
}

/// A node holding a replica of the volume (the first listed).
fn holder(endpoint: &str, rng: &mut StdRng) -> Option<String> {
    let vol = vjson(endpoint, &["volume", "get", VOLUME])?;
    let nodes: Vec<String> = vol["replicas"]
        .as_array()?
        .iter()
        .filter_map(|r| r["node"].as_str().map(str::to_string))
        .collect();
    (!nodes.is_empty()).then(|| nodes[rng.random_range(0..nodes.len())].clone())
}

fn evictor(sh: &Shared) {
    let mut rng = StdRng::seed_from_u64(sh.seed ^ 0xe71c_7000);
    while !sh.stop.load(Ordering::Relaxed) {
        let live = sh.live_endpoints();
        let endpoint = live[rng.random_range(0..live.len())].clone();
        let Some(node) = holder(&endpoint, &mut rng) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        {
            // chaos decides under this lock too: it never kills the node
            // being evicted, and a node that is down is not picked
            let mut evicted = sh.evicted.lock().unwrap();
            let i = NODES.iter().position(|n| *n == node).unwrap();
            if sh.down.lock().unwrap().contains(&sh.endpoints[i]) {
                drop(evicted);
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            *evicted = Some(node.clone());
        }
        let (ok, _, err) = vigil(&endpoint, &["node", "evict", &node]);
        eprintln!(
            "evictor: evict {node}: {}",
            if ok { "ok" } else { err.trim() }
        );
        std::thread::sleep(Duration::from_millis(rng.random_range(1000..8000)));
        let live = sh.live_endpoints();
        let endpoint = live[rng.random_range(0..live.len())].clone();
        let (ok, _, err) = vigil(&endpoint, &["node", "evict", &node, "--cancel"]);
        eprintln!(
            "evictor: cancel {node}: {}",
            if ok { "ok" } else { err.trim() }
        );
        if ok {
            *sh.evicted.lock().unwrap() = None;
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(200..2000)));
    }
}

fn chaos(sh: &Shared, agents: &[Mutex<Agent>]) {
    let mut rng = StdRng::seed_from_u64(sh.seed ^ 0xc4a0_5eed);
    while !sh.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.random_range(2000..6000)));
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        // never the node being evicted, nor n1 (the sampler's agent)
        let i = rng.random_range(1..NODES.len());
        let mut a = agents[i].lock().unwrap();
        {
            let evicted = sh.evicted.lock().unwrap();
            if evicted.as_deref() == Some(NODES[i]) {
                continue;
            }
            eprintln!("chaos: kill -9 {}", a.name);
            sh.down.lock().unwrap().push(a.endpoint.clone());
            a.kill9();
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(300..3000)));
        a.start_again();
        sh.down.lock().unwrap().retain(|e| *e != a.endpoint);
        eprintln!("chaos: {} restarted", a.name);
    }
}

fn sampler(sh: &Shared, endpoint: &str) -> u64 {
    let mut exact = 0;
    while !sh.stop.load(Ordering::Relaxed) {
        let (gen0, quiet0, last) = {
            let r = sh.requests.lock().unwrap();
            (r.generation, r.in_flight == 0, r.last.clone())
        };
        let Some(vol) = vjson(endpoint, &["volume", "get", VOLUME]) else {
            continue;
        };
        let mut engines = Vec::new();
        for (i, ep) in sh.endpoints.iter().enumerate() {
            if sh.down.lock().unwrap().contains(ep) {
                continue;
            }
            if let Some(list) = vjson(ep, &["engine", "list"])
                && list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["name"] == VOLUME)
            {
                engines.push(NODES[i]);
            }
        }
        let (gen1, quiet1) = {
            let r = sh.requests.lock().unwrap();
            (r.generation, r.in_flight == 0)
        };
        let state = vol["state"].as_str().unwrap_or("").to_string();
        if engines.len() > 1 {
            sh.violation(format!("engines for {VOLUME} on {engines:?}: {vol}"));
        }
        if let Some(n) = engines.first()
            && vol["attached_node"].as_str() != Some(n)
            && state == "attached"
        {
            sh.violation(format!(
                "engine on {n} but attached to {}",
                vol["attached_node"]
            ));
        }
        if state == "attached" && !vol["maintenance"].is_null() {
            sh.violation(format!("attached with a maintenance engine record: {vol}"));
        }
        if gen0 == gen1 && quiet0 && quiet1 && last == Some(Request::Detach) {
            exact += 1;
            if state != "detached" || !vol["desired_node"].is_null() || !engines.is_empty() {
                sh.violation(format!(
                    "last completed request was a detach, but: state {state}, desired node {}, engines {engines:?}: {vol}",
                    vol["desired_node"]
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    exact
}

fn seed() -> u64 {
    std::env::var("VIGIL_TEST_SEED")
        .or_else(|_| std::env::var("VIGIL_SEED"))
        .ok()
        .map(|s| s.trim().parse().expect("VIGIL_TEST_SEED is a u64"))
        .unwrap_or_else(rand::random)
}

#[test]
fn eviction_interleaved_with_attach_detach_and_agent_kills_keeps_one_engine_and_the_last_request() {
    let seed = seed();
    eprintln!("seed = {seed} (replay with VIGIL_TEST_SEED={seed})");
    let seconds: u64 = std::env::var("VIGIL_TEST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45);
    let root = tempfile::Builder::new()
        .disable_cleanup(std::env::var("VIGIL_TEST_KEEP").is_ok())
        .tempdir()
        .unwrap();
    eprintln!("root {:?}", root.path());
    let etcd = Etcd::start(root.path());
    let store = etcd.store_url();
    let args = ["--store", store.as_str()];
    let agents: Vec<Mutex<Agent>> = NODES
        .iter()
        .map(|n| Mutex::new(Agent::start_with(root.path(), n, "tok", &args)))
        .collect();
    for a in &agents {
        a.lock().unwrap().wait_live();
    }
    let endpoints: Vec<String> = agents
        .iter()
        .map(|a| a.lock().unwrap().endpoint.clone())
        .collect();
    let n1 = agents[0].lock().unwrap();
    // Leave an attachment on a killed node alone (no automatic move): the
    // requests decide where the volume is.
    n1.set("volume-attachment-recovery-policy", "never");
    for n in ["n3", "n4"] {
        let (ok, _, err) = n1.cli(&["node", "update", n, "--allow-scheduling", "false"]);
        assert!(ok, "{err}");
    }
    n1.json(&[
        "volume",
        "create",
        VOLUME,
        "--size",
        "32MiB",
        "--replicas",
        "2",
    ]);
    let (ok, out, err) = n1.cli(&["volume", "attach", VOLUME, "--node", "n2"]);
    assert!(ok, "{err}");
    let data = root.path().join("data");
    tools::random_file(&data, 16 << 20, seed);
    tools::qemu_write(&data, out.trim());
    let (ok, _, err) = n1.cli(&["volume", "detach", VOLUME]);
    assert!(ok, "{err}");
    for n in ["n3", "n4"] {
        let (ok, _, err) = n1.cli(&["node", "update", n, "--allow-scheduling", "true"]);
        assert!(ok, "{err}");
    }
    drop(n1);
    // the sampler asks n1, which chaos never kills
    let n1_endpoint = endpoints[0].clone();

    let sh = Arc::new(Shared {
        seed,
        endpoints,
        requests: Mutex::new(Requests::default()),
        down: Mutex::new(Vec::new()),
        evicted: Mutex::new(None),
        stop: AtomicBool::new(false),
        violations: Mutex::new(Vec::new()),
    });
    let started = Instant::now();
    let (exact, completed) = std::thread::scope(|s| {
        let sampled = s.spawn(|| sampler(&sh, &n1_endpoint));
        for id in 0..2 {
            let sh = &sh;
            s.spawn(move || client(sh, id));
        }
        s.spawn(|| evictor(&sh));
        s.spawn(|| chaos(&sh, &agents));
        std::thread::sleep(Duration::from_secs(seconds));
        sh.stop.store(true, Ordering::Relaxed);
        let exact = sampled.join().unwrap();
        (exact, sh.requests.lock().unwrap().completed)
    });
    eprintln!(
        "chaos over after {:?}: {completed} requests completed alone, {exact} exact detach checks",
        started.elapsed()
    );
    let violations = sh.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations (replay with VIGIL_TEST_SEED={seed}); first: {}",
        violations.len(),
        violations[0]
    );
    assert!(completed > 3, "seed {seed}: too few requests completed");

    // Settle: every agent up, no eviction, the volume detached and whole.
    for a in &agents {
        let a = a.lock().unwrap();
        a.wait_live();
    }
    let n1 = agents[0].lock().unwrap();
    for n in NODES {
        let (ok, _, err) = n1.cli(&["node", "evict", n, "--cancel"]);
        assert!(ok, "{err}");
    }
    wait_until("detach settles", Duration::from_secs(60), || {
        n1.cli(&["volume", "detach", VOLUME]).0
            && n1.json(&["volume", "get", VOLUME])["state"] == "detached"
    });
    // (a replacement placed before a cancel is finished by a maintenance
    // engine and the extra replica dropped)
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = n1.json(&["volume", "get", VOLUME]);
        let rs = v["replicas"].as_array().unwrap();
        if rs.len() == 2 && rs.iter().all(|r| r["state"] == "running") && v["maintenance"].is_null()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "[seed {seed}] {VOLUME} not back at 2 running replicas: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Evict a node holding a replica of the detached volume: a maintenance
    // engine moves it, and the volume stays detached.
    let from = n1.replicas(VOLUME)[0]["node"].as_str().unwrap().to_string();
    let (ok, _, err) = n1.cli(&["node", "evict", &from]);
    assert!(ok, "{err}");
    wait_until(
        &format!("[seed {seed}] eviction of {from} completed"),
        Duration::from_secs(120),
        || n1.json(&["node", "get", &from])["eviction"]["phase"] == "completed",
    );
    wait_until("maintenance over", Duration::from_secs(30), || {
        n1.json(&["volume", "get", VOLUME])["maintenance"].is_null()
    });
    let doc = n1.json(&["volume", "get", VOLUME]);
    assert_eq!(doc["state"], "detached", "{doc}");
    let rs = doc["replicas"].as_array().unwrap();
    assert!(
        rs.len() == 2 && rs.iter().all(|r| r["node"] != from),
        "{doc}"
    );
    let events = n1
        .json(&[
            "events",
            "--object",
            &format!("volume/{VOLUME}"),
            "--limit",
            "2000",
        ])
        .as_array()
        .cloned()
        .unwrap_or_default();
    let count = |reason: &str| events.iter().filter(|e| e["reason"] == reason).count();
    let by_attach = events
        .iter()
        .filter(|e| {
            e["reason"] == "MaintenanceStopped"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("attach wins"))
        })
        .count();
    let waited = events
        .iter()
        .filter(|e| {
            e["reason"] == "AttachFailed"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("maintenance engine"))
        })
        .count();
    eprintln!(
        "maintenance engines: {} started, {} stopped ({by_attach} because of an attach), {waited} attach(es) waited for one",
        count("MaintenanceStarted"),
        count("MaintenanceStopped"),
    );
    assert!(
        count("MaintenanceStarted") >= 1
            && count("MaintenanceStarted") == count("MaintenanceStopped"),
        "seed {seed}: {events:?}"
    );
    let to = NODES.iter().find(|n| **n != from).unwrap();
    let (ok, out, err) = n1.cli(&["volume", "attach", VOLUME, "--node", to]);
    assert!(ok, "{err}");
    assert!(
        tools::qemu_equal(&data, out.trim()),
        "seed {seed}: data differs at the end"
    );
    let rs = n1.replicas(VOLUME);
    assert!(rs.iter().all(|r| r["mode"] == "RW"), "seed {seed}: {rs:?}");
}
