//! Randomized concurrency test of the control plane: several clients attach,
//! detach, delete and (re)create volumes, request and cancel node
//! evictions, while a chaos thread `kill -9`s and restarts agents — against
//! the embedded store with one agent and against etcd with three. After
//! every operation, and continuously from an observer, the test checks:
//!
//! (a) a volume's observed state is one its last request allows: attached
//!     or attaching on node X only if that request was "attach to X";
//!     detached only after a create or a detach; deleting or gone only
//!     after a delete;
//! (b) an engine runs only on the volume's attached node (so never on two
//!     nodes), proved by sandwiching each agent's engine list between two
//!     volume listings that show the volume unchanged; exact at the end.
//!     With etcd, every committed version also has an attached node exactly
//!     while attaching, attached or detaching, and never a different one;
//! (c) a volume created while a node's eviction is in force has no replica
//!     on that node;
//! (d) every observed state change is allowed by the model's table: from
//!     `GET /v1/volumes` polling (with `transitions` telling whether a change
//!     was missed) and, with etcd, from a watch that sees every committed
//!     version of every volume.
//!
//! The model is exact where it can be: requests on one volume are
//! serialised by a per-volume lock; each request is stamped with a logical
//! clock when it is sent and when its answer arrives, and each observation
//! when it is asked for and when it arrives, so "which requests may have
//! taken effect before this read" is known. A request that could not be
//! connected had no effect; an answered one either took effect (2xx, a
//! 504 wait timeout) or did not (other 4xx); one whose connection broke
//! (its agent was killed) may or may not have, and is kept as a possibility
//! until a later request is accepted. Checks weakened that way are counted,
//! and a floor of exact checks is asserted.
//!
//! `VIGIL_SEED` replays a seed (printed at the start and in every failure;
//! it fixes every client's choices, not the threads' interleaving);
//! `VIGIL_OPS` sets the number of client operations per test.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use vigil_tests::{Agent, Etcd};

/// Volumes in the pool.
const VOLUMES: usize = 8;
/// Concurrent client threads.
const CLIENTS: usize = 4;
/// Default client operations per test (two tests: ≥ 1,000 in all).
const DEFAULT_OPS: usize = 1000;
/// Longest a client waits for an answer (attach/detach wait 60 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// Violations kept and printed verbatim (the rest are counted).
const KEEP_VIOLATIONS: usize = 100;

/// The allowed volume transitions (agent/model/src/state.rs).
const ALLOWED: &[(&str, &str)] = &[
    ("creating", "detached"),
    ("creating", "deleting"),
    ("detached", "attaching"),
    ("detached", "deleting"),
    ("attaching", "attached"),
    ("attaching", "detaching"),
    ("attached", "detaching"),
    ("detaching", "detached"),
];

fn allowed(from: &str, to: &str) -> bool {
    from == to || ALLOWED.contains(&(from, to))
}

// ---------------------------------------------------------------- HTTP --

/// What became of one HTTP request.
#[derive(Debug)]
enum Reply {
    /// No connection: the agent never saw it.
    NotSent,
    /// Sent, but no complete answer: it may or may not have taken effect.
    Lost(String),
    /// Status and JSON body.
    Got(u16, Value),
}

/// One HTTP/1.1 request on loopback, `Connection: close`.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>, timeout: Duration) -> Reply {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(_) => return Reply::NotSent,
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = s.write_all(req.as_bytes()) {
        return Reply::Lost(format!("write: {e}"));
    }
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf) {
        return Reply::Lost(format!("read: {e}"));
    }
    let text = String::from_utf8_lossy(&buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Reply::Lost(format!("incomplete answer ({} bytes)", buf.len()));
    };
    let status: u16 = match head.split(' ').nth(1).and_then(|c| c.parse().ok()) {
        Some(c) => c,
        None => return Reply::Lost(format!("bad status line: {head:?}")),
    };
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(body.len());
    if body.len() < length {
        return Reply::Lost(format!("short body: {} of {length} bytes", body.len()));
    }
    let value = if body.trim().is_empty() {
        Value::Null
    } else {
        match serde_json::from_str(body) {
            Ok(v) => v,
            Err(e) => return Reply::Lost(format!("bad JSON ({e}): {body}")),
        }
    };
    Reply::Got(status, value)
}

// --------------------------------------------------------------- model --

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Create,
    Attach(String),
    Detach,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Sent, no answer yet.
    Pending,
    /// Took effect (or, for a no-op, was accepted).
    Accepted,
    /// Answered with a refusal, or never sent: no effect.
    Refused,
    /// The connection broke: effect unknown.
    Ambiguous,
}

/// One request on one volume, stamped with the logical clock.
#[derive(Debug, Clone)]
struct Req {
    kind: Kind,
    start: u64,
    end: u64,
    outcome: Outcome,
}

/// The requests whose effect may be the volume's desired state during an
/// observation taken between ticks `s` and `e`: every request overlapping
/// it (except refused ones), the last accepted one that ended before it,
/// and any ambiguous ones in between. `None` is "never created".
fn possible(reqs: &[Req], s: u64, e: u64) -> Vec<Option<Kind>> {
    let mut out: Vec<Option<Kind>> = Vec::new();
    let mut add = |k: Option<Kind>| {
        if !out.contains(&k) {
            out.push(k);
        }
    };
    for r in reqs {
        if r.outcome != Outcome::Refused && r.start <= e && r.end >= s {
            add(Some(r.kind.clone()));
        }
    }
    let mut found = false;
    for r in reqs.iter().rev().filter(|r| r.end < s) {
        match r.outcome {
            Outcome::Refused | Outcome::Pending => {}
            Outcome::Ambiguous => add(Some(r.kind.clone())),
            Outcome::Accepted => {
                add(Some(r.kind.clone()));
                found = true;
                break;
            }
        }
    }
    if !found {
        add(None);
    }
    out
}

/// An observed volume: state and attached node; `None` when absent.
type Obs = Option<(String, Option<String>)>;

/// Whether the observed volume is one the request `p` can leave.
fn consistent(p: &Option<Kind>, obs: &Obs) -> bool {
    let Some((state, node)) = obs else {
        return matches!(p, None | Some(Kind::Delete));
    };
    match (state.as_str(), p) {
        ("creating", Some(Kind::Create)) => true,
        ("detached", Some(Kind::Create | Kind::Detach)) => true,
        ("attaching" | "attached", Some(Kind::Attach(n))) => node.as_deref() == Some(n.as_str()),
        ("detaching", Some(Kind::Detach)) => true,
        ("deleting", Some(Kind::Delete)) => true,
        _ => false,
    }
}

#[derive(Debug, Default)]
struct Stats {
    /// (op, outcome) → count.
    ops: BTreeMap<(String, String), u64>,
    /// Volume checks against the model with a single possible last request.
    exact: u64,
    /// ... with several (a request in flight or ambiguous).
    weakened: u64,
    /// ... of which the volume was attached or attaching.
    attached_exact: u64,
    /// Observed state changes checked against the table (HTTP polling).
    transitions_checked: u64,
    /// Observed changes where `transitions` jumped by more than one.
    transitions_jumped: u64,
    /// Committed volume versions checked from the etcd watch.
    watch_versions: u64,
    /// Engine observations proved on the attached node / not provable.
    engine_checked: u64,
    engine_skipped: u64,
    /// (create, node evicted throughout) pairs checked.
    evicted_create_checks: u64,
    /// Observations that could not reach any agent.
    observe_failed: u64,
    kills: u64,
}

#[derive(Debug, Default)]
struct EvictState {
    /// Bumped before every eviction request on the node is sent.
    generation: u64,
    /// An eviction request was answered OK and no cancel was sent since.
    evicted: bool,
}

struct Shared {
    seed: u64,
    etcd: bool,
    nodes: Vec<String>,
    ports: Vec<u16>,
    volumes: Vec<String>,
    clock: AtomicU64,
    history: Mutex<Vec<Vec<Req>>>,
    volume_locks: Vec<Mutex<()>>,
    evict_locks: Vec<Mutex<()>>,
    evictions: Mutex<Vec<EvictState>>,
    /// (first violations, how many in all).
    violations: Mutex<(Vec<String>, usize)>,
    stats: Mutex<Stats>,
    ops_left: AtomicUsize,
    stop_chaos: AtomicBool,
    stop_observer: AtomicBool,
    /// HTTP observer: name → (created_at, state, transitions).
    seen: Mutex<BTreeMap<String, (f64, String, u64)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, SeqCst)
    }

    /// Records a violation (the first [`KEEP_VIOLATIONS`] verbatim).
    fn violation(&self, what: String) {
        let msg = format!("[seed {}] {what}", self.seed);
        let mut v = lock(&self.violations);
        v.1 += 1;
        if v.0.len() < KEEP_VIOLATIONS {
            eprintln!("VIOLATION {msg}");
            v.0.push(msg);
        }
    }

    fn stats(&self) -> MutexGuard<'_, Stats> {
        lock(&self.stats)
    }

    /// Sends a request to a random agent, trying others while none
    /// accepts the connection (up to ~15 s). `NotSent` only if none did.
    fn send(&self, rng: &mut StdRng, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut i = rng.random_range(0..self.ports.len());
        loop {
            match http(self.ports[i], method, path, body, REQUEST_TIMEOUT) {
                Reply::NotSent if Instant::now() < deadline => {
                    i = (i + 1) % self.ports.len();
                    std::thread::sleep(Duration::from_millis(100));
                }
                r => return r,
            }
        }
    }

    /// `GET /v1/volumes` from any agent, stamped: (start, end, list).
    fn observe(&self, first: usize) -> Option<(u64, u64, Vec<Value>)> {
        for k in 0..self.ports.len() {
            let port = self.ports[(first + k) % self.ports.len()];
            let s = self.tick();
            let r = http(port, "GET", "/v1/volumes", None, Duration::from_secs(10));
            let e = self.tick();
            if let Reply::Got(200, Value::Array(list)) = r {
                return Some((s, e, list));
            }
        }
        self.stats().observe_failed += 1;
        None
    }

    /// Checks one listing taken between ticks `s` and `e` against the
    /// model (invariant a).
    fn check_listing(&self, who: &str, s: u64, e: u64, list: &[Value]) {
        for v in list {
            let name = v["name"].as_str().unwrap_or("?");
            if !self.volumes.iter().any(|n| n == name) {
                self.violation(format!("{who}: unknown volume {name} listed: {v}"));
            }
        }
        let history = lock(&self.history);
        let mut exact = 0;
        let mut weakened = 0;
        let mut attached_exact = 0;
        let mut bad = Vec::new();
        for (i, name) in self.volumes.iter().enumerate() {
            let obs: Obs = list.iter().find(|v| v["name"] == name.as_str()).map(|v| {
                (
                    v["state"].as_str().unwrap_or("?").to_string(),
                    v["attached_node"].as_str().map(str::to_string),
                )
            });
            let poss = possible(&history[i], s, e);
            if poss.len() == 1 {
                exact += 1;
                if matches!(&obs, Some((st, _)) if st.starts_with("attach")) {
                    attached_exact += 1;
                }
            } else {
                weakened += 1;
            }
            if !poss.iter().any(|p| consistent(p, &obs)) {
                let tail: Vec<&Req> = history[i].iter().rev().take(6).collect();
                bad.push(format!(
                    "{who}: volume {name} observed {obs:?} in ticks [{s}, {e}], but its possible last \
                     requests were {poss:?}; latest requests first: {tail:?}"
                ));
            }
        }
        drop(history);
        {
            let mut st = self.stats();
            st.exact += exact;
            st.weakened += weakened;
            st.attached_exact += attached_exact;
        }
        for b in bad {
            self.violation(b);
        }
    }

    /// Invariant (d) from polling: a state change with `transitions` + 1
    /// must be allowed; the counter never goes back nor stays while the
    /// state changes; a fresh volume at 0 is creating.
    fn track_transitions(&self, list: &[Value]) {
        let mut seen = lock(&self.seen);
        let mut bad = Vec::new();
        let (mut checked, mut jumped) = (0, 0);
        for v in list {
            let name = v["name"].as_str().unwrap_or("?").to_string();
            let created = v["created_at"].as_f64().unwrap_or(0.0);
            let state = v["state"].as_str().unwrap_or("?").to_string();
            let Some(t) = v["transitions"].as_u64() else {
                bad.push(format!("volume {name} has no transitions counter: {v}"));
                continue;
            };
            match seen.get(&name) {
                Some((c, ps, pt)) if *c == created => {
                    if t < *pt {
                        bad.push(format!("volume {name}: transitions went back {pt} → {t}"));
                    } else if t == *pt && state != *ps {
                        bad.push(format!(
                            "volume {name}: {ps} → {state} without counting a transition ({t})"
                        ));
                    } else if t == pt + 1 {
                        checked += 1;
                        if !allowed(ps, &state) {
                            bad.push(format!(
                                "volume {name}: observed transition {ps} → {state} ({pt} → {t}) is not allowed"
                            ));
                        }
                    } else if t > pt + 1 {
                        jumped += 1;
                    }
                }
                _ => {
                    if t == 0 && state != "creating" {
                        bad.push(format!("new volume {name} is {state} with 0 transitions"));
                    }
                }
            }
            seen.insert(name, (created, state, t));
        }
        drop(seen);
        {
            let mut st = self.stats();
            st.transitions_checked += checked;
            st.transitions_jumped += jumped;
        }
        for b in bad {
            self.violation(format!("observer: {b}"));
        }
    }

    fn record(&self, op: &str, outcome: &str) {
        *self
            .stats()
            .ops
            .entry((op.to_string(), outcome.to_string()))
            .or_default() += 1;
    }
}

/// What an answer means for the model.
fn classify(reply: &Reply) -> (Outcome, String) {
    match reply {
        Reply::NotSent => (Outcome::Refused, "unreachable".into()),
        Reply::Lost(_) => (Outcome::Ambiguous, "lost".into()),
        Reply::Got(code, body) => {
            let c = body["code"].as_str().unwrap_or("");
            match *code {
                200..=299 => (Outcome::Accepted, "ok".into()),
                // attach/detach recorded; the node has not finished yet
                504 if c.ends_with("_timeout") => (Outcome::Accepted, c.into()),
                // recorded, then changed by someone else (cannot happen with
                // per-volume serialisation; counted in the summary)
                409 if c.ends_with("_interrupted") => (Outcome::Accepted, c.into()),
                400..=499 => (Outcome::Refused, c.into()),
                _ => (Outcome::Ambiguous, format!("{code} {c}")),
            }
        }
    }
}

// -------------------------------------------------------------- client --

fn pick_kind(rng: &mut StdRng, last: Option<&Kind>, nodes: &[String]) -> Kind {
    let r = rng.random_range(0..100);
    let attach = Kind::Attach(nodes[rng.random_range(0..nodes.len())].clone());
    match last {
        None | Some(Kind::Delete) => match r {
            0..75 => Kind::Create,
            75..85 => attach,
            85..93 => Kind::Detach,
            _ => Kind::Delete,
        },
        Some(Kind::Create) => match r {
            0..50 => attach,
            50..70 => Kind::Delete,
            70..85 => Kind::Detach,
            _ => Kind::Create,
        },
        Some(Kind::Attach(_)) => match r {
            0..55 => Kind::Detach,
            55..80 => attach,
            80..93 => Kind::Delete,
            _ => Kind::Create,
        },
        Some(Kind::Detach) => match r {
            0..50 => attach,
            50..80 => Kind::Delete,
            80..90 => Kind::Detach,
            _ => Kind::Create,
        },
    }
}

fn client(sh: &Shared, id: usize) {
    let mut rng =
        StdRng::seed_from_u64(sh.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(id as u64 + 1)));
    loop {
        if sh
            .ops_left
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return;
        }
        if sh.etcd && rng.random_range(0..100) < 8 {
            eviction_op(sh, &mut rng);
        } else {
            volume_op(sh, &mut rng);
        }
        // invariants after every operation
        if let Some((s, e, list)) = sh.observe(rng.random_range(0..sh.ports.len())) {
            sh.check_listing(&format!("client {id}"), s, e, &list);
        }
        // think time, so that volumes get through creating and attaching
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
    }
}

fn volume_op(sh: &Shared, rng: &mut StdRng) {
    // a volume no other client is working on (or wait for a random one)
    let mut i = rng.random_range(0..VOLUMES);
    let mut guard = None;
    for _ in 0..VOLUMES {
        if let Ok(g) = sh.volume_locks[i].try_lock() {
            guard = Some(g);
            break;
        }
        i = (i + 1) % VOLUMES;
    }
    let _guard = guard.unwrap_or_else(|| lock(&sh.volume_locks[i]));
    let name = sh.volumes[i].clone();
    let last = {
        let h = lock(&sh.history);
        h[i].iter()
            .rev()
            .find(|r| r.outcome != Outcome::Refused)
            .map(|r| r.kind.clone())
    };
    let kind = pick_kind(rng, last.as_ref(), &sh.nodes);
    let (method, path, body, op) = match &kind {
        Kind::Create => {
            let size = ["64KiB", "256KiB", "1MiB"][rng.random_range(0..3)];
            let replicas = if sh.etcd { rng.random_range(1..=2) } else { 1 };
            (
                "POST",
                "/v1/volumes".to_string(),
                Some(json!({"name": name, "size": size, "replicas": replicas})),
                "create",
            )
        }
        Kind::Attach(node) => (
            "POST",
            format!("/v1/volumes/{name}/attach"),
            Some(json!({ "node": node })),
            "attach",
        ),
        Kind::Detach => ("POST", format!("/v1/volumes/{name}/detach"), None, "detach"),
        Kind::Delete => ("DELETE", format!("/v1/volumes/{name}"), None, "delete"),
    };
    let evict_before = (kind == Kind::Create).then(|| eviction_snapshot(sh));
    let idx = {
        let mut h = lock(&sh.history);
        let start = sh.tick();
        h[i].push(Req {
            kind: kind.clone(),
            start,
            end: u64::MAX,
            outcome: Outcome::Pending,
        });
        h[i].len() - 1
    };
    let reply = sh.send(rng, method, &path, body.as_ref());
    let (outcome, label) = classify(&reply);
    {
        let mut h = lock(&sh.history);
        h[i][idx].end = sh.tick();
        h[i][idx].outcome = outcome;
    }
    sh.record(op, &label);
    if let Reply::Lost(why) = &reply {
        eprintln!("{op} {name}: no answer ({why}); its outcome is unknown");
    }
    if outcome == Outcome::Ambiguous {
        // A request cut off by a kill may still commit (its agent's store
        // call was in flight): let it land before the next request on this
        // volume so that "last request" stays well defined.
        std::thread::sleep(Duration::from_secs(1));
    }
    let Reply::Got(code, body) = &reply else {
        return;
    };
    // the answer itself must agree with the request
    let state = body["state"].as_str().unwrap_or("");
    let node = body["attached_node"].as_str();
    let wrong = match (&kind, *code) {
        (Kind::Attach(n), 200) => state != "attached" || node != Some(n.as_str()),
        (Kind::Detach, 200) => state != "detached",
        (Kind::Create, 201) => state != "creating",
        (Kind::Delete, 202) => state != "deleting",
        _ => false,
    };
    if wrong {
        sh.violation(format!("{op} {name} answered {code} with {body}"));
    }
    // invariant (c): nothing placed on a node evicted throughout the create
    if let (Kind::Create, 201, Some(before)) = (&kind, *code, evict_before) {
        let after = eviction_snapshot(sh);
        for (j, node) in sh.nodes.iter().enumerate() {
            let (gen0, evicted) = before[j];
            if !evicted || after[j].0 != gen0 {
                continue;
            }
            sh.stats().evicted_create_checks += 1;
            for r in body["replicas"].as_array().into_iter().flatten() {
                if r["node"] == node.as_str() {
                    sh.violation(format!(
                        "volume {name} created while node {node} was evicted has replica {} on it: {body}\n\
                         nodes now: {:?}\nnode events: {:?}",
                        r["name"],
                        sh.send(rng, "GET", "/v1/nodes", None),
                        sh.send(rng, "GET", "/v1/events?kind=node", None),
                    ));
                }
            }
        }
    }
}

fn eviction_snapshot(sh: &Shared) -> Vec<(u64, bool)> {
    lock(&sh.evictions)
        .iter()
        .map(|e| (e.generation, e.evicted))
        .collect()
}

fn eviction_op(sh: &Shared, rng: &mut StdRng) {
    let j = rng.random_range(0..sh.nodes.len());
    let _g = lock(&sh.evict_locks[j]);
    let evicted_now = lock(&sh.evictions)[j].evicted;
    let want = if evicted_now {
        rng.random_range(0..100) < 25
    } else {
        rng.random_range(0..100) < 80
    };
    {
        // From now until its answer, a cancel may take effect at any time:
        // the node no longer counts as evicted.
        let mut ev = lock(&sh.evictions);
        ev[j].generation += 1;
        if !want {
            ev[j].evicted = false;
        }
    }
    let path = format!("/v1/nodes/{}", sh.nodes[j]);
    let reply = sh.send(
        rng,
        "POST",
        &path,
        Some(&json!({ "eviction_requested": want })),
    );
    let (outcome, label) = classify(&reply);
    {
        let mut ev = lock(&sh.evictions);
        ev[j].evicted = match outcome {
            Outcome::Accepted => want,
            Outcome::Refused => ev[j].evicted,
            Outcome::Ambiguous | Outcome::Pending => false,
        };
    }
    if outcome == Outcome::Ambiguous {
        // as for volumes: let a cut-off request land before the next one
        std::thread::sleep(Duration::from_secs(1));
    }
    sh.record(if want { "evict" } else { "cancel-evict" }, &label);
    if let Reply::Got(200, body) = &reply
        && body["eviction_requested"] != want
    {
        sh.violation(format!("eviction of {} answered {body}", sh.nodes[j]));
    }
}

// ------------------------------------------------------------ observer --

/// Polls volumes and engines until told to stop: invariants (a), (b), (d).
fn observer(sh: &Shared) {
    let mut rng = StdRng::seed_from_u64(sh.seed ^ 0x0b5e_47e2);
    while !sh.stop_observer.load(SeqCst) {
        let first = rng.random_range(0..sh.ports.len());
        let Some((s1, e1, l1)) = sh.observe(first) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        sh.check_listing("observer", s1, e1, &l1);
        sh.track_transitions(&l1);
        let engines: Vec<Option<Vec<String>>> = sh
            .ports
            .iter()
            .map(
                |&p| match http(p, "GET", "/v1/engines", None, Duration::from_secs(10)) {
                    Reply::Got(200, Value::Array(l)) => Some(engine_names(&l)),
                    _ => None,
                },
            )
            .collect();
        let Some((s2, e2, l2)) = sh.observe(first) else {
            continue;
        };
        sh.check_listing("observer", s2, e2, &l2);
        sh.track_transitions(&l2);
        // (b): an engine seen on node N while the volume was, before and
        // after, the same incarnation with the same transition count (so
        // unchanged throughout) must be attached to N.
        let (mut checked, mut skipped) = (0, 0);
        for (j, list) in engines.iter().enumerate() {
            for name in list.iter().flatten() {
                let find = |l: &[Value]| l.iter().find(|v| v["name"] == name.as_str()).cloned();
                let (Some(a), Some(b)) = (find(&l1), find(&l2)) else {
                    skipped += 1;
                    continue;
                };
                let same = a["created_at"] == b["created_at"]
                    && a["transitions"] == b["transitions"]
                    && a["attached_node"] == b["attached_node"];
                if !same {
                    skipped += 1;
                    continue;
                }
                checked += 1;
                if a["attached_node"] != sh.nodes[j].as_str() {
                    sh.violation(format!(
                        "observer: engine {name} runs on {} while the volume is {} on {} \
                         (unchanged before and after: transitions {})",
                        sh.nodes[j], a["state"], a["attached_node"], a["transitions"]
                    ));
                }
            }
        }
        {
            let mut st = sh.stats();
            st.engine_checked += checked;
            st.engine_skipped += skipped;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The volume names of a `GET /v1/engines` answer.
fn engine_names(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|e| {
            e["name"]
                .as_str()
                .unwrap_or_else(|| panic!("engine without a name: {e}"))
                .to_string()
        })
        .collect()
}

/// With etcd: every committed version of every volume object, in order.
fn watch_etcd(sh: &Shared, out: ChildStdout) {
    // key → (create revision, state, transitions, attached node)
    type Last = (i64, String, u64, Option<String>);
    let mut last: BTreeMap<String, Last> = BTreeMap::new();
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let Ok(resp) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        for ev in resp["Events"].as_array().into_iter().flatten() {
            let kv = &ev["kv"];
            let key =
                String::from_utf8_lossy(&base64(kv["key"].as_str().unwrap_or(""))).into_owned();
            if ev["type"].as_i64() == Some(1) {
                // a volume object goes only once deleting
                if let Some((_, st, _, _)) = last.remove(&key)
                    && st != "deleting"
                {
                    sh.violation(format!("etcd watch: {key} removed while {st}"));
                }
                continue;
            }
            let value: Value =
                match serde_json::from_slice(&base64(kv["value"].as_str().unwrap_or(""))) {
                    Ok(v) => v,
                    Err(e) => {
                        sh.violation(format!("etcd watch: {key} holds bad JSON: {e}"));
                        continue;
                    }
                };
            let created = kv["create_revision"].as_i64().unwrap_or(0);
            let state = value["status"]["state"].as_str().unwrap_or("?").to_string();
            let t = value["status"]["transitions"].as_u64().unwrap_or(u64::MAX);
            let node = value["status"]["attached_node"]
                .as_str()
                .map(str::to_string);
            let engaged = matches!(state.as_str(), "attaching" | "attached" | "detaching");
            let bad = match last.get(&key) {
                // never attached on two nodes: the attached node is set
                // exactly from attaching to detaching and never changes
                _ if engaged != node.is_some() => {
                    Some(format!("{key}: {state} with attached node {node:?}"))
                }
                Some((c, _, _, Some(pn)))
                    if *c == created && node.as_ref().is_some_and(|n| n != pn) =>
                {
                    Some(format!(
                        "{key}: attached node changed {pn} → {node:?} while {state}"
                    ))
                }
                Some((c, ps, pt, _)) if *c == created => {
                    if state == *ps && t != *pt {
                        Some(format!("{key}: stays {state} but transitions {pt} → {t}"))
                    } else if state != *ps && (t != pt + 1 || !allowed(ps, &state)) {
                        Some(format!("{key}: {ps} → {state} (transitions {pt} → {t})"))
                    } else {
                        None
                    }
                }
                Some((_, ps, _, _)) => Some(format!("{key}: recreated over a live object ({ps})")),
                None if state != "creating" || t != 0 => Some(format!(
                    "{key}: first version is {state} with {t} transitions"
                )),
                None => None,
            };
            if let Some(b) = bad {
                sh.violation(format!("etcd watch: {b}"));
            }
            sh.stats().watch_versions += 1;
            last.insert(key, (created, state, t, node));
        }
    }
}

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

// --------------------------------------------------------------- chaos --

/// `kill -9` and restart one agent at a time, never all (with several).
fn chaos(sh: &Shared, agents: &[Mutex<Agent>]) {
    let mut rng = StdRng::seed_from_u64(sh.seed ^ 0xc4a0_5eed);
    let nap = |ms: u64| {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until && !sh.stop_chaos.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    loop {
        nap(rng.random_range(3_000..8_000));
        if sh.stop_chaos.load(SeqCst) {
            return;
        }
        let j = rng.random_range(0..agents.len());
        let mut a = lock(&agents[j]);
        a.kill9();
        sh.stats().kills += 1;
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1_500)));
        a.restart();
    }
}

// ----------------------------------------------------------------- run --

fn seed() -> u64 {
    std::env::var("VIGIL_SEED")
        .ok()
        .map(|s| s.trim().parse().expect("VIGIL_SEED is a u64"))
        .unwrap_or_else(rand::random)
}

fn ops() -> usize {
    std::env::var("VIGIL_OPS")
        .ok()
        .map(|s| s.trim().parse().expect("VIGIL_OPS is a number"))
        .unwrap_or(DEFAULT_OPS)
}

/// A child process killed when the test ends, even by a panic.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

fn port_of(a: &Agent) -> u16 {
    a.endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

fn run(test: &str, agents: Vec<Agent>, etcd: Option<&Etcd>) {
    let seed = seed();
    let total = ops();
    eprintln!("seed = {seed}");
    eprintln!(
        "{test}: {total} operations, {CLIENTS} clients, {VOLUMES} volumes, {} agent(s); \
         replay with VIGIL_SEED={seed}",
        agents.len()
    );
    let started = Instant::now();
    let nodes: Vec<String> = agents.iter().map(|a| a.name.clone()).collect();
    let sh = Arc::new(Shared {
        seed,
        etcd: etcd.is_some(),
        ports: agents.iter().map(port_of).collect(),
        volumes: (0..VOLUMES).map(|i| format!("cc-vol-{i}")).collect(),
        clock: AtomicU64::new(1),
        history: Mutex::new(vec![Vec::new(); VOLUMES]),
        volume_locks: (0..VOLUMES).map(|_| Mutex::new(())).collect(),
        evict_locks: nodes.iter().map(|_| Mutex::new(())).collect(),
        evictions: Mutex::new(nodes.iter().map(|_| EvictState::default()).collect()),
        violations: Mutex::new((Vec::new(), 0)),
        stats: Mutex::new(Stats::default()),
        ops_left: AtomicUsize::new(total),
        stop_chaos: AtomicBool::new(false),
        stop_observer: AtomicBool::new(false),
        seen: Mutex::new(BTreeMap::new()),
        nodes,
    });
    let agents: Vec<Mutex<Agent>> = agents.into_iter().map(Mutex::new).collect();

    // every node ready before starting
    vigil_tests::agent::wait_until("all nodes ready", Duration::from_secs(30), || {
        match http(
            sh.ports[0],
            "GET",
            "/v1/nodes",
            None,
            Duration::from_secs(5),
        ) {
            Reply::Got(200, Value::Array(l)) => {
                l.len() == sh.nodes.len() && l.iter().all(|n| n["ready"] == true)
            }
            _ => false,
        }
    });

    let mut watcher = KillOnDrop(etcd.map(|e| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=http://127.0.0.1:{}", e.client_port))
            .args([
                "watch",
                "--prefix",
                "/vigil/volumes/",
                "--rev=1",
                "-w",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run etcdctl (apt-get install etcd-client)")
    }));
    let watch_out = watcher.0.as_mut().map(|c| c.stdout.take().unwrap());

    let (ops_time, settle_time) = std::thread::scope(|scope| {
        let watch = watch_out.map(|out| {
            let sh = &*sh;
            scope.spawn(move || watch_etcd(sh, out))
        });
        let obs = scope.spawn(|| observer(&sh));
        let chaos_t = scope.spawn(|| chaos(&sh, &agents));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let sh = &*sh;
                scope.spawn(move || client(sh, id))
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let ops_time = started.elapsed();
        sh.stop_chaos.store(true, SeqCst);
        chaos_t.join().unwrap();
        for a in &agents {
            let mut a = lock(a);
            if !a.is_running() {
                a.restart();
            }
        }
        let settle_time = settle_and_check(&sh);
        sh.stop_observer.store(true, SeqCst);
        obs.join().unwrap();
        // let the watch deliver the last versions, then end it
        std::thread::sleep(Duration::from_millis(500));
        watcher.kill();
        if let Some(w) = watch {
            w.join().unwrap();
        }
        (ops_time, settle_time)
    });

    let st = sh.stats();
    let total_ops: u64 = st.ops.values().sum();
    eprintln!("---- {test} summary (seed {seed}) ----");
    let mut by_op: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for ((op, outcome), n) in &st.ops {
        by_op.entry(op).or_default().push(format!("{outcome} {n}"));
    }
    for (op, outs) in &by_op {
        eprintln!("  {op:<13} {}", outs.join(", "));
    }
    eprintln!(
        "  operations    {total_ops} in {ops_time:.1?} (+ {settle_time:.1?} to settle); agent kills {}",
        st.kills
    );
    eprintln!(
        "  model checks  {} exact ({} on attached/attaching volumes), {} weakened by in-flight or ambiguous requests",
        st.exact, st.attached_exact, st.weakened
    );
    eprintln!(
        "  transitions   {} checked by polling, {} missed (counter jumped); {} committed versions checked from etcd",
        st.transitions_checked, st.transitions_jumped, st.watch_versions
    );
    eprintln!(
        "  engines       {} placements proved on the attached node, {} not provable (volume changed meanwhile)",
        st.engine_checked, st.engine_skipped
    );
    eprintln!(
        "  evictions     {} (create, evicted node) pairs checked; {} observations failed",
        st.evicted_create_checks, st.observe_failed
    );
    let (first, count) = &*lock(&sh.violations);
    eprintln!("  violations    {count}");
    eprintln!("  total time    {:.1?}", started.elapsed());
    assert!(
        *count == 0,
        "seed {seed}: {count} invariant violations (replay with VIGIL_SEED={seed}); the first:\n{}",
        first
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // the checks must have had something to check
    assert_eq!(total_ops as usize, total, "seed {seed}: operations run");
    let checks = st.exact + st.weakened;
    assert!(
        st.exact * 2 >= checks,
        "seed {seed}: only {} of {checks} model checks were exact",
        st.exact
    );
    assert!(
        st.attached_exact > 0,
        "seed {seed}: no attached volume was ever checked exactly"
    );
    assert!(
        st.transitions_checked > 0,
        "seed {seed}: no transition was observed"
    );
    assert!(
        st.engine_checked > 0,
        "seed {seed}: no engine placement was proved"
    );
    if etcd.is_some() {
        assert!(
            st.watch_versions > 0,
            "seed {seed}: the etcd watch saw nothing"
        );
        assert!(
            st.evicted_create_checks > 0,
            "seed {seed}: no create ran during an eviction"
        );
    }
}

/// After the operations (chaos stopped, every agent up): waits until no
/// volume is in a passing state and every engine runs exactly where its
/// volume is attached, then checks the model one last time — with nothing
/// in flight, exactly. What has not settled after 90 s is a violation.
fn settle_and_check(sh: &Shared) -> Duration {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(90);
    loop {
        let problems = settled(sh);
        if problems.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for p in problems {
                sh.violation(format!("not settled after 90 s: {p}"));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    t0.elapsed()
}

/// What is not settled yet (empty when all is).
fn settled(sh: &Shared) -> Vec<String> {
    let Some((s, e, list)) = sh.observe(0) else {
        return vec!["no agent answers GET /v1/volumes".into()];
    };
    sh.check_listing("final", s, e, &list);
    let mut problems = Vec::new();
    let mut engines: BTreeSet<(String, String)> = BTreeSet::new();
    for (j, &port) in sh.ports.iter().enumerate() {
        match http(port, "GET", "/v1/engines", None, Duration::from_secs(10)) {
            Reply::Got(200, Value::Array(l)) => {
                for name in engine_names(&l) {
                    engines.insert((name, sh.nodes[j].clone()));
                }
            }
            r => problems.push(format!("engines of {}: {r:?}", sh.nodes[j])),
        }
    }
    for v in &list {
        let name = v["name"].as_str().unwrap_or("?");
        let state = v["state"].as_str().unwrap_or("?");
        if !matches!(state, "detached" | "attached") {
            problems.push(format!("volume {name} is still {state}: {v}"));
        }
        if state == "attached" {
            let node = v["attached_node"].as_str().unwrap_or("?");
            if !engines.contains(&(name.to_string(), node.to_string())) {
                problems.push(format!(
                    "volume {name} is attached to {node}, whose agent runs no engine for it"
                ));
            }
        }
    }
    for (name, node) in &engines {
        let attached_here = list.iter().any(|v| {
            v["name"] == name.as_str()
                && v["state"] == "attached"
                && v["attached_node"] == node.as_str()
        });
        if !attached_here {
            problems.push(format!(
                "engine {name} runs on {node}, where its volume is not attached"
            ));
        }
    }
    problems
}

#[test]
fn embedded_single_agent() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start(root.path(), "n1");
    run("embedded_single_agent", vec![a], None);
}

#[test]
fn etcd_three_agents() {
    let root = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(root.path());
    let url = etcd.store_url();
    let agents: Vec<Agent> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Agent::start_with(root.path(), n, "test-cluster-token", &["--store", &url]))
        .collect();
    run("etcd_three_agents", agents, Some(&etcd));
}
