//! The nemesis suite (issue 17, Jepsen-style): a writer keeps writing
//! while agents are killed, frozen, cut off from each other and the store,
//! and the volume is moved, migrated and evicted; a checker holds every
//! read-back against the history of what clients were told.
//!
//! **Cluster.** Four agents n1..n4, each in a network namespace the test
//! makes (`vigil_tests::netns`: veth pairs on a private bridge, addresses
//! 10.77.0.11-14; nothing leaves the namespaces), a real etcd and the
//! test's clients in a fifth (10.77.0.1).
//! `volume-attachment-recovery-policy=immediate`, `node-down-timeout` 15 s
//! (the liveness lease is 10 s), one 16 MiB volume `v` with 3 replicas.
//!
//! **Writer.** One long NBD session per attachment (libnbd,
//! `tests/nbd_session.py`: writes without FUA, flushes only when asked)
//! writes unique 4 KiB
//! blocks (slot, writer, sequence number, seed, filler, hash; see
//! `vigil_tests::nemesis::history`) to 64 slots spread over the volume,
//! flushing every 8 writes. Every write's outcome (acknowledged, failed,
//! unknown) and every flush's is in the history; a successful flush makes
//! the writes that connection had acknowledged before it *durable*.
//!
//! **Nemeses**, one per round; each block of rounds is a permutation of
//! all of them, drawn from the seed (printed; `VIGIL_SEED` replays). *e* is
//! the engine's node, *t* another node, *r* a node holding a replica:
//! - `kill-replica`: `kill -9` of r (not e), restart after 1-4 s;
//! - `freeze-engine`: SIGSTOP of e; the next write is sent to it frozen;
//!   once NODE_DOWN shows, v is attached on t and written there; SIGCONT,
//!   and v is checked at once, before the newer writer goes on. Every write
//!   sent to the frozen engine must fail and never be read back;
//! - `short-freeze`: SIGSTOP of e for 1-4 s (less than the lease): the
//!   engine keeps the volume and the writer goes on;
//! - `kill-engine`: `kill -9` of e, attach on t once NODE_DOWN shows,
//!   write there, restart e;
//! - `move`: `vigil volume detach v` with the client still writing, then
//!   attach on t (a failed write to the detaching engine is undefined, as
//!   any failed write; see `Target::Detaching`);
//! - `partition-store`: e cut from etcd only (it still reaches its client
//!   and replicas): its engine suspends before its lease can expire; once
//!   NODE_DOWN shows, v is attached on t and written there; then the cut
//!   heals, and every write sent to e after the takeover must fail;
//! - `partition-replicas`: e cut from every other node (not from etcd or
//!   its client) for 3-8 s — but one replica node, when e holds none —:
//!   its engine drops the replicas it cannot reach and goes on with what it
//!   has; they are rebuilt after the heal;
//! - `isolate-engine`: e cut from everything (etcd, its client, the other
//!   nodes); v is attached on t and written there; after the heal every
//!   write sent to e during the cut must fail;
//! - `isolate-replica`: r (not e) cut from everything for 2-6 s;
//! - `migrate`: live migration of v to t (`vigil volume migrate`), a second
//!   writer on the target while it forwards, then `--confirm` (two rounds
//!   in three) or `--rollback`; every write sent to the side that lost must
//!   fail and never be read back;
//! - `evict`: `vigil node evict r` while writing, until the eviction
//!   completes (its replica rebuilt on the spare node), then `--cancel`.
//!
//! After each round, once the volume is attached, healthy and every node
//! ready, the writer pauses and the whole volume is read through its
//! endpoint (nbdcopy) and checked (`History::check`): each slot holds
//! zeros or exactly one write's block of that slot; no slot is older than
//! its durable write; no write sent to a frozen, cut-off or fenced engine
//! is read back; no such write was acknowledged; bytes outside the slots
//! are zeros. A failed write to the current engine (e.g. in flight when it
//! was killed) may be read back: a failed write leaves its blocks
//! undefined.
//!
//! **At the end**, the volume is detached (its engine flushes), every agent
//! is stopped and each of the volume's replica directories is read whole
//! with the engine's own replica reader (`Replica::open`, every layer of
//! its chain): each replica must be byte-for-byte equal to the last image
//! read through the endpoint, which passed the checker.
//!
//! `VIGIL_NEMESIS_ROUNDS` (default 11: each nemesis once) sets the rounds;
//! `bench/nemesis.py` runs many. The report (rounds, nemeses, writes,
//! violations) is printed after every round and at the end as a line
//! `nemesis summary: {json}`; any violation fails the test. On a failure
//! the agents' and etcd's logs are copied to /tmp/vigil-nemesis-logs.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{doctor, wait_node_down};
use vigil_tests::keep_logs::LogsOnPanic;
use vigil_tests::nemesis::{self, History, Plan, Target, Writer};
use vigil_tests::netns::{Lab, Peer, lab_cluster};
use vigil_tests::{Agent, Etcd};

const SIZE: u64 = 16 << 20;
const NODES: usize = 4;
const REPLICAS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Nemesis {
    KillReplica,
    FreezeEngine,
    ShortFreeze,
    KillEngine,
    Move,
    PartitionStore,
    PartitionReplicas,
    IsolateEngine,
    IsolateReplica,
    Migrate,
    Evict,
}

impl Nemesis {
    const ALL: [Nemesis; 11] = [
        Nemesis::KillReplica,
        Nemesis::FreezeEngine,
        Nemesis::ShortFreeze,
        Nemesis::KillEngine,
        Nemesis::Move,
        Nemesis::PartitionStore,
        Nemesis::PartitionReplicas,
        Nemesis::IsolateEngine,
        Nemesis::IsolateReplica,
        Nemesis::Migrate,
        Nemesis::Evict,
    ];

    fn name(self) -> &'static str {
        match self {
            Nemesis::KillReplica => "kill-replica",
            Nemesis::FreezeEngine => "freeze-engine",
            Nemesis::ShortFreeze => "short-freeze",
            Nemesis::KillEngine => "kill-engine",
            Nemesis::Move => "move",
            Nemesis::PartitionStore => "partition-store",
            Nemesis::PartitionReplicas => "partition-replicas",
            Nemesis::IsolateEngine => "isolate-engine",
            Nemesis::IsolateReplica => "isolate-replica",
            Nemesis::Migrate => "migrate",
            Nemesis::Evict => "evict",
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|s| {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is a u64"))
    })
}

/// The agents, etcd, the namespaces and the run's state. Fields drop in
/// order: the writer, the agents, etcd, the directory (its logs copied
/// first on a failure), then the namespaces.
struct Run {
    writer: Option<Writer>,
    agents: Vec<Agent>,
    down: [bool; NODES],
    /// Nodes cut off by a partition now (their API may not answer).
    cut: [bool; NODES],
    etcd: Etcd,
    history: Arc<Mutex<History>>,
    rng: StdRng,
    seed: u64,
    round: u32,
    writers: u32,
    applied: BTreeMap<&'static str, u32>,
    violations: Vec<String>,
    indeterminate: u64,
    root: LogsOnPanic,
    lab: Lab,
}

impl Run {
    fn start(seed: u64) -> Run {
        let root = LogsOnPanic::new("vigil-nemesis-logs");
        let (lab, etcd, agents) = lab_cluster(root.path(), NODES);
        agents[0].set("volume-attachment-recovery-policy", "immediate");
        agents[0].set("node-down-timeout", "15");
        let v = agents[0].json(&[
            "volume",
            "create",
            "v",
            "--size",
            "16MiB",
            "--replicas",
            &REPLICAS.to_string(),
        ]);
        assert_eq!(v["state"], "detached", "{v}");
        std::fs::create_dir_all(root.path().join("payloads")).unwrap();
        let mut run = Run {
            writer: None,
            agents,
            down: [false; NODES],
            cut: [false; NODES],
            etcd,
            history: Arc::new(Mutex::new(History::default())),
            rng: StdRng::seed_from_u64(seed),
            seed,
            round: 0,
            writers: 0,
            applied: BTreeMap::new(),
            violations: Vec::new(),
            indeterminate: 0,
            root,
            lab,
        };
        let first = run.rng.random_range(0..NODES);
        let uri = run.attach(first, None);
        run.writer = Some(run.writer_on(&uri));
        run
    }

    fn path(&self) -> &std::path::Path {
        self.root.path()
    }

    /// A running agent other than `except` that is not cut off.
    fn live(&self, except: Option<usize>) -> &Agent {
        (0..NODES)
            .find(|&i| !self.down[i] && !self.cut[i] && Some(i) != except)
            .map(|i| &self.agents[i])
            .expect("a running agent")
    }

    /// `vigil -o json ARGS` answered by any running agent that is not
    /// cut off: an agent whose partition just healed may take a while to
    /// reach the store again (its connections time out first).
    fn query(&self, args: &[&str]) -> Value {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut errors = Vec::new();
        loop {
            for i in (0..NODES).filter(|&i| !self.down[i] && !self.cut[i]) {
                let (ok, out, err) = self.agents[i].cli(&full);
                if ok {
                    return serde_json::from_str(&out)
                        .unwrap_or_else(|e| panic!("vigil {args:?}: bad JSON ({e}): {out}"));
                }
                errors.push(format!("{}: {}", self.agents[i].name, err.trim()));
            }
            assert!(
                Instant::now() < deadline,
                "no agent answered vigil {args:?} for 60 s: {}",
                errors.join("; ")
            );
            errors.clear();
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn volume(&self) -> Value {
        self.query(&["volume", "get", "v"])
    }

    fn node_index(name: &str) -> usize {
        name[1..].parse::<usize>().unwrap() - 1
    }

    /// Index of the node whose engine serves v.
    fn engine_node(&self) -> usize {
        let v = self.volume();
        let node = v["attached_node"].as_str().unwrap_or_else(|| panic!("{v}"));
        Run::node_index(node)
    }

    /// Nodes holding a replica of v.
    fn replica_nodes(&self) -> Vec<usize> {
        let v = self.volume();
        v["replicas"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|r| Run::node_index(r["node"].as_str().unwrap()))
            .collect()
    }

    /// Another node than `n`, at random.
    fn other(&mut self, n: usize) -> usize {
        (n + self.rng.random_range(1..NODES)) % NODES
    }

    /// A node holding a replica of v other than `n`, at random.
    fn replica_node_except(&mut self, n: usize) -> usize {
        let mut nodes: Vec<usize> = self
            .replica_nodes()
            .into_iter()
            .filter(|&r| r != n)
            .collect();
        nodes.sort_unstable();
        *nodes
            .choose(&mut self.rng)
            .expect("a replica on another node")
    }

    /// Attaches v on node `to` (asking that node); returns the endpoint.
    /// When the attachment-recovery controller was faster and attached v
    /// on a node other than `gone` (the node v is leaving), that
    /// attachment is taken.
    fn attach(&self, to: usize, gone: Option<usize>) -> String {
        let a = &self.agents[to];
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            let (ok, out, err) = a.cli(&["volume", "attach", "v", "--node", &a.name]);
            if ok {
                return out.trim().to_string();
            }
            last = err;
            if let Some(g) = gone {
                let v = a.json(&["volume", "get", "v"]);
                let elsewhere = v["attached_node"]
                    .as_str()
                    .is_some_and(|n| Run::node_index(n) != g);
                if v["state"] == "attached"
                    && elsewhere
                    && let Some(uri) = v["endpoint"].as_str()
                {
                    eprintln!("  recovery attached v on {} first", v["attached_node"]);
                    return uri.to_string();
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("attach v on {} refused for 45 s: {last}", a.name);
    }

    fn writer_on(&mut self, uri: &str) -> Writer {
        self.writers += 1;
        Writer::start(
            self.writers,
            uri,
            Plan {
                history: Arc::clone(&self.history),
                seed: self.seed,
                size: SIZE,
                dir: self.path().join("payloads"),
            },
        )
    }

    fn sleep_between(&mut self, lo_ms: u64, hi_ms: u64) {
        std::thread::sleep(Duration::from_millis(self.rng.random_range(lo_ms..hi_ms)));
    }

    fn kill(&mut self, n: usize) {
        self.agents[n].kill9();
        self.down[n] = true;
    }

    fn restart(&mut self, n: usize) {
        self.agents[n].start_again();
        self.agents[n].wait_live();
        self.down[n] = false;
    }

    /// Cuts node `n` from `peers`.
    fn cut_off(&mut self, n: usize, peers: &[Peer]) {
        self.lab.cut(n, peers);
        self.cut[n] = true;
    }

    fn heal(&mut self, n: usize) {
        self.lab.heal(n);
        self.cut[n] = false;
    }

    /// Every other node, and etcd and the test's clients: full isolation.
    fn everyone_but(&self, n: usize) -> Vec<Peer> {
        let mut peers = vec![Peer::Host(self.lab.ctl_ip())];
        peers.extend(
            (0..NODES)
                .filter(|&i| i != n)
                .map(|i| Peer::Host(self.lab.node_ip(i))),
        );
        peers
    }

    /// Waits until `doctor` on `asker` reports NODE_DOWN for node `n`.
    fn wait_node_down(&self, n: usize, asker: usize) {
        wait_node_down(
            &self.agents[asker],
            &self.agents[n].name,
            Duration::from_secs(40),
        );
    }

    /// Makes e unreachable with `lose` (a freeze, a full isolation) so
    /// that nothing sent after it can reach e before the takeover: the
    /// old writer is held between two writes across it, and every write
    /// after it goes to an engine that lost the volume (`Target::Frozen`).
    fn lose_engine(&mut self, e: usize, lose: impl FnOnce(&mut Run)) {
        let old = self.writer.as_ref().unwrap();
        old.pause(Duration::from_secs(30));
        lose(self);
        let old = self.writer.as_ref().unwrap();
        old.retarget(Target::Frozen);
        old.resume();
        self.down[e] = true;
    }

    /// The takeover after e became unreachable: once others see e down,
    /// every write the old writer sends is to an engine that lost the
    /// volume (`Target::Frozen`; set earlier by [`Run::lose_engine`] when
    /// nothing could reach e since); v is attached on t and written there;
    /// then `wake` (thaw, heal) runs, the newer writer holding still,
    /// until the old writer's pending write is answered; then v is checked
    /// at once.
    fn take_over(&mut self, e: usize, t: usize, started: Instant, wake: impl FnOnce(&mut Run)) {
        let (en, tn) = (self.agents[e].name.clone(), self.agents[t].name.clone());
        let old = self.writer.take().unwrap();
        let (acked, failed) = old.outcomes();
        self.wait_node_down(e, t);
        // From here on, anything sent to e was sent after the volume was
        // given up as lost there: it must fail. (Not paused first: its
        // write in progress may be held by a suspended engine.)
        old.retarget(Target::Frozen);
        let uri = self.attach(t, Some(e));
        eprintln!(
            "  attached on {tn} {:.1} s after {en} was lost",
            started.elapsed().as_secs_f64()
        );
        self.writer = Some(self.writer_on(&uri));
        self.sleep_between(1500, 3000);
        // The newer engine's writer holds still across the wake-up, so the
        // check below sees whatever the old engine did to the slots the
        // newer one wrote.
        self.writer.as_ref().unwrap().pause(Duration::from_secs(30));
        wake(self);
        let (a0, f0) = old.outcomes();
        wait_until(
            "the old engine's pending write is answered after the wake-up",
            Duration::from_secs(120),
            || {
                let (a, f) = old.outcomes();
                a + f > a0 + f0
            },
        );
        std::thread::sleep(Duration::from_secs(1));
        let (a, f) = old.outcomes();
        eprintln!(
            "  writes to the old engine: {} acknowledged, {} failed ({} and {} of them after the wake-up)",
            a - acked,
            f - failed,
            a - a0,
            f - f0
        );
        eprintln!("  the old writer's last operation: {}", old.last());
        old.stop();
        self.check_through_endpoint(&format!(
            "right after {en} came back (round {})",
            self.round
        ));
    }

    fn apply(&mut self, nemesis: Nemesis) {
        let e = self.engine_node();
        let t = self.other(e);
        let (en, tn) = (self.agents[e].name.clone(), self.agents[t].name.clone());
        match nemesis {
            Nemesis::KillReplica => {
                let r = self.replica_node_except(e);
                let rn = self.agents[r].name.clone();
                eprintln!("  kill -9 {rn} (a replica; engine on {en}), restart it");
                self.sleep_between(500, 2000);
                self.kill(r);
                self.sleep_between(1000, 4000);
                self.restart(r);
            }
            Nemesis::FreezeEngine => {
                eprintln!("  SIGSTOP {en} (engine), attach on {tn}, write there, SIGCONT {en}");
                let frozen = Instant::now();
                self.lose_engine(e, |run| {
                    run.agents[e].signal(libc::SIGSTOP);
                    wait_stopped(run.agents[e].pid());
                });
                self.take_over(e, t, frozen, |run| {
                    run.agents[e].signal(libc::SIGCONT);
                    run.down[e] = false;
                });
            }
            Nemesis::ShortFreeze => {
                eprintln!("  SIGSTOP {en} (engine) for less than its lease, SIGCONT");
                self.sleep_between(500, 2000);
                self.agents[e].signal(libc::SIGSTOP);
                wait_stopped(self.agents[e].pid());
                self.sleep_between(1000, 4000);
                self.agents[e].signal(libc::SIGCONT);
                self.sleep_between(1000, 2000);
                assert_eq!(
                    self.engine_node(),
                    e,
                    "a freeze shorter than the lease moved the volume"
                );
            }
            Nemesis::KillEngine => {
                eprintln!("  kill -9 {en} (engine), attach on {tn}, restart {en}");
                self.sleep_between(500, 2000);
                let old = self.writer.take().unwrap();
                let failed = old.outcomes().1;
                self.kill(e);
                old.wait_failure(failed, Duration::from_secs(30));
                old.stop();
                self.wait_node_down(e, t);
                let uri = self.attach(t, Some(e));
                self.writer = Some(self.writer_on(&uri));
                self.sleep_between(1000, 3000);
                self.restart(e);
            }
            Nemesis::Move => {
                eprintln!("  detach from {en} while writing, attach on {tn}");
                self.sleep_between(500, 2000);
                let old = self.writer.take().unwrap();
                old.retarget(Target::Detaching);
                let failed = old.outcomes().1;
                let (ok, _, err) = self.agents[t].cli(&["volume", "detach", "v"]);
                assert!(ok, "detach v: {err}");
                wait_until("v detached", Duration::from_secs(30), || {
                    self.volume()["state"] == "detached"
                });
                old.wait_failure(failed, Duration::from_secs(30));
                old.stop();
                let uri = self.attach(t, None);
                self.writer = Some(self.writer_on(&uri));
            }
            Nemesis::PartitionStore => {
                eprintln!("  cut {en} (engine) from etcd, attach on {tn}, heal");
                self.sleep_between(500, 2000);
                let peers = [Peer::Port(self.lab.ctl_ip(), self.etcd.client_port)];
                let since = Instant::now();
                self.cut_off(e, &peers);
                self.take_over(e, t, since, |run| run.heal(e));
            }
            Nemesis::PartitionReplicas => {
                // When e holds no replica itself, one replica node stays
                // reachable: losing every replica restarts the engine
                // (salvage), and its clients' connections with it — a
                // full loss that isolate-engine covers with a takeover.
                let replicas = self.replica_nodes();
                let mut cut: Vec<usize> = (0..NODES).filter(|&i| i != e).collect();
                if !replicas.contains(&e) {
                    let spared = *replicas.choose(&mut self.rng).expect("a replica");
                    cut.retain(|&i| i != spared);
                }
                let names: Vec<String> = cut.iter().map(|&i| self.agents[i].name.clone()).collect();
                eprintln!(
                    "  cut {en} (engine) from {}, heal after 3-8 s",
                    names.join(", ")
                );
                self.sleep_between(500, 2000);
                let peers: Vec<Peer> = cut
                    .iter()
                    .map(|&i| Peer::Host(self.lab.node_ip(i)))
                    .collect();
                self.lab.cut(e, &peers);
                self.sleep_between(3000, 8000);
                self.lab.heal(e);
            }
            Nemesis::IsolateEngine => {
                eprintln!("  isolate {en} (engine), attach on {tn}, heal");
                self.sleep_between(500, 2000);
                let peers = self.everyone_but(e);
                let since = Instant::now();
                self.lose_engine(e, |run| run.cut_off(e, &peers));
                self.take_over(e, t, since, |run| {
                    run.heal(e);
                    run.down[e] = false;
                });
            }
            Nemesis::IsolateReplica => {
                let r = self.replica_node_except(e);
                let rn = self.agents[r].name.clone();
                eprintln!("  isolate {rn} (a replica; engine on {en}) for 2-6 s");
                self.sleep_between(500, 2000);
                let peers = self.everyone_but(r);
                self.cut_off(r, &peers);
                self.sleep_between(2000, 6000);
                self.heal(r);
            }
            Nemesis::Migrate => self.migrate(e, t),
            Nemesis::Evict => {
                let r = *self.replica_nodes().choose(&mut self.rng).unwrap();
                let rn = self.agents[r].name.clone();
                eprintln!("  evict {rn} (a replica; engine on {en}) while writing, then cancel");
                self.sleep_between(500, 2000);
                let asker = &self.agents[t];
                let (ok, _, err) = asker.cli(&["node", "evict", &rn]);
                assert!(ok, "evict {rn}: {err}");
                wait_until(
                    &format!("eviction of {rn} completed"),
                    Duration::from_secs(120),
                    || self.query(&["node", "get", &rn])["eviction"]["phase"] == "completed",
                );
                let (ok, _, err) = asker.cli(&["node", "evict", &rn, "--cancel"]);
                assert!(ok, "cancel the eviction of {rn}: {err}");
                assert!(
                    !self.replica_nodes().contains(&r),
                    "{rn} still holds a replica after its eviction completed"
                );
            }
        }
        *self.applied.entry(nemesis.name()).or_default() += 1;
    }

    /// Live migration from e to t with a writer on each side; confirmed
    /// two times in three, else rolled back.
    fn migrate(&mut self, e: usize, t: usize) {
        let (en, tn) = (self.agents[e].name.clone(), self.agents[t].name.clone());
        let confirm = self.rng.random_range(0..3) < 2;
        eprintln!(
            "  migrate v {en} -> {tn}, write on both, {}",
            if confirm { "confirm" } else { "roll back" }
        );
        self.sleep_between(500, 2000);
        // One writer at a time while both engines could take a write:
        // the checker orders writes by when they were sent.
        let source = self.writer.take().unwrap();
        source.pause(Duration::from_secs(30));
        let (ok, out, err) =
            self.agents[e].cli(&["-o", "json", "volume", "migrate", "v", "--to", &tn]);
        assert!(ok, "migrate v --to {tn}: {err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let uri = v["migration"]["target_endpoint"]
            .as_str()
            .unwrap_or_else(|| panic!("no target endpoint: {v}"))
            .to_string();
        let target = self.writer_on(&uri);
        self.sleep_between(1000, 3000);
        let step = if confirm { "--confirm" } else { "--rollback" };
        // The target's writer goes on across the switch.
        let (ok, _, err) = self.agents[t].cli(&["volume", "migrate", "v", step]);
        assert!(ok, "migrate v {step}: {err}");
        let (keep, lose) = if confirm {
            (target, source)
        } else {
            target.pause(Duration::from_secs(30));
            (source, target)
        };
        // The side that lost: every write from now on must fail.
        lose.pause(Duration::from_secs(30));
        lose.retarget(Target::Frozen);
        let failed = lose.outcomes().1;
        lose.resume();
        lose.wait_failure(failed, Duration::from_secs(30));
        lose.stop();
        keep.resume();
        self.writer = Some(keep);
        wait_until("the migration is gone", Duration::from_secs(60), || {
            self.volume()["migration"].is_null()
        });
    }
    /// Waits until every node is ready and v is attached, healthy, with
    /// three RW replicas.
    fn wait_healthy(&self) {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(150);
        loop {
            let nodes_ready = self
                .agents
                .iter()
                .all(|a| self.query(&["node", "get", &a.name])["ready"] == true);
            let last = self.volume();
            let replicas = last["replicas"].as_array().cloned().unwrap_or_default();
            if nodes_ready
                && last["state"] == "attached"
                && last["robustness"] == "healthy"
                && replicas.len() == REPLICAS
                && replicas.iter().all(|r| r["mode"] == "RW")
            {
                break;
            }
            if Instant::now() > deadline {
                let (code, report) = doctor(self.live(None));
                panic!(
                    "v not healthy after 150 s (round {}): {last}\ndoctor ({code}): {report}",
                    self.round
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!(
            "  healthy again after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// Adds violations not seen before (a rule about the history, e.g. an
    /// acknowledged write to a frozen engine, is found by every check).
    fn record(&mut self, found: Vec<String>) {
        for v in found {
            if !self.violations.contains(&v) {
                eprintln!("  VIOLATION {v}");
                self.violations.push(v);
            }
        }
    }

    /// Pauses the writer, reads v through its endpoint and checks it.
    fn check_through_endpoint(&mut self, what: &str) {
        let writer = self.writer.as_ref().unwrap();
        writer.pause(Duration::from_secs(60));
        let image = nemesis::read_through(&writer.uri, &self.path().join("image"));
        let history = self.history.lock().unwrap();
        let found = history.check(self.seed, &image, what);
        self.indeterminate = self
            .indeterminate
            .max(history.indeterminate_read_back(self.seed, &image));
        drop(history);
        writer.resume();
        self.record(found);
    }

    /// Stops the writer, detaches v, stops every agent and compares each
    /// replica's contents with the last image read through the endpoint.
    fn finish(&mut self) {
        let writer = self.writer.take().unwrap();
        writer.pause(Duration::from_secs(60));
        let uri = writer.uri.clone();
        writer.stop();
        let last = nemesis::read_through(&uri, &self.path().join("image"));
        let found =
            self.history
                .lock()
                .unwrap()
                .check(self.seed, &last, "final read through the endpoint");
        self.record(found);
        let (ok, _, err) = self.live(None).cli(&["volume", "detach", "v"]);
        assert!(ok, "detach v: {err}");
        wait_until("v detached", Duration::from_secs(30), || {
            self.volume()["state"] == "detached"
        });
        let replicas: Vec<(String, PathBuf)> = self.volume()["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let name = r["name"].as_str().unwrap().to_string();
                let dir = PathBuf::from(r["disk_path"].as_str().unwrap())
                    .join("replicas")
                    .join(&name);
                (format!("{name} on {}", r["node"].as_str().unwrap()), dir)
            })
            .collect();
        assert_eq!(replicas.len(), REPLICAS, "{replicas:?}");
        for a in &mut self.agents {
            a.stop();
        }
        for (name, dir) in replicas {
            let image = nemesis::read_replica(&dir);
            if image == last {
                eprintln!("  replica {name}: equal to the volume");
                continue;
            }
            let differ = image
                .chunks(4096)
                .zip(last.chunks(4096))
                .filter(|(a, b)| a != b)
                .count();
            let mut found =
                self.history
                    .lock()
                    .unwrap()
                    .check(self.seed, &image, &format!("replica {name}"));
            found.push(format!(
                "replica {name} differs from the volume read through its endpoint in {differ} blocks of 4 KiB"
            ));
            self.record(found);
        }
    }

    fn report(&self, rounds: u32, elapsed: Duration) -> String {
        let c = self.history.lock().unwrap().counts();
        let nemeses: Vec<String> = self
            .applied
            .iter()
            .map(|(n, k)| format!("\"{n}\":{k}"))
            .collect();
        format!(
            "{{\"seed\":{},\"rounds\":{rounds},\"nemeses\":{{{}}},\"writes_acked\":{},\"writes_failed\":{},\"writes_unknown\":{},\"writes_to_frozen_engine\":{},\"flushes_acked\":{},\"flushes_failed\":{},\"failed_writes_read_back_max\":{},\"violations\":{},\"seconds\":{:.0}}}",
            self.seed,
            nemeses.join(","),
            c.acked,
            c.failed,
            c.unknown,
            c.to_frozen,
            c.flushes_acked,
            c.flushes_failed,
            self.indeterminate,
            self.violations.len(),
            elapsed.as_secs_f64()
        )
    }
}

/// Waits until every thread of `pid` is stopped (state T).
fn wait_stopped(pid: u32) {
    wait_until(
        &format!("process {pid} stopped"),
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('T')))
                .unwrap_or(false)
        },
    );
}

#[test]
fn acknowledged_writes_survive_kills_freezes_partitions_and_moves() {
    let started = Instant::now();
    let seed = env_u64("VIGIL_SEED").unwrap_or_else(rand::random);
    let rounds = env_u64("VIGIL_NEMESIS_ROUNDS").unwrap_or(Nemesis::ALL.len() as u64) as u32;
    eprintln!("seed {seed} (replay with VIGIL_SEED={seed}), {rounds} rounds");
    let mut run = Run::start(seed);
    run.wait_healthy();
    let mut schedule = Vec::new();
    while schedule.len() < rounds as usize {
        let mut block = Nemesis::ALL;
        block.shuffle(&mut run.rng);
        schedule.extend(block);
    }
    for (round, nemesis) in schedule.into_iter().take(rounds as usize).enumerate() {
        run.round = round as u32 + 1;
        run.history.lock().unwrap().round = run.round;
        eprintln!(
            "round {}/{rounds}: {} ({:.0} s)",
            run.round,
            nemesis.name(),
            started.elapsed().as_secs_f64()
        );
        run.apply(nemesis);
        run.wait_healthy();
        run.check_through_endpoint(&format!("after round {} ({})", run.round, nemesis.name()));
        // The report so far: a long run that stops early still has one.
        eprintln!(
            "nemesis summary: {}",
            run.report(run.round, started.elapsed())
        );
    }
    run.finish();
    let summary = run.report(rounds, started.elapsed());
    eprintln!("nemesis summary: {summary}");
    assert!(
        run.violations.is_empty(),
        "{} violations (seed {seed}; replay with VIGIL_SEED={seed}):\n{}",
        run.violations.len(),
        run.violations.join("\n")
    );
}
