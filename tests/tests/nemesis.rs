//! The nemesis suite (issue 17, Jepsen-style): a writer keeps writing
//! while agents are killed, frozen and the volume is moved, and a checker
//! holds every read-back against the history of what clients were told.
//!
//! **Cluster.** A real etcd, three agents n1..n3 on 127.0.0.1,
//! `volume-attachment-recovery-policy=immediate`, `node-down-timeout` 15 s
//! (the liveness lease is 10 s), one 16 MiB volume `v` with 3 replicas.
//!
//! **Writer.** One long qemu-io session per attachment writes unique 4 KiB
//! blocks (slot, writer, sequence number, seed, filler, hash; see
//! `vigil_tests::nemesis::history`) to 64 slots spread over the volume,
//! flushing every 8 writes. Every write's outcome (acknowledged, failed,
//! unknown) and every flush's is in the history; a successful flush makes
//! the writes that connection had acknowledged before it *durable*.
//!
//! **Nemeses**, one per round; each block of four rounds is a permutation
//! of all four, drawn from the seed (printed; `VIGIL_SEED` replays):
//! - `kill-replica`: `kill -9` of an agent holding only a replica, restart
//!   after 1–4 s;
//! - `freeze-engine`: SIGSTOP of the engine's agent; the next write is sent
//!   to it frozen (it waits in its socket); once NODE_DOWN shows, the volume
//!   is attached on another node and written there; then SIGCONT, and the
//!   volume is checked at once, before the newer engine's writer goes on.
//!   Every write sent to the frozen engine must fail and never be read back;
//! - `kill-engine`: `kill -9` of the engine's agent, attach elsewhere once
//!   NODE_DOWN shows, write there, restart the killed agent;
//! - `move`: `vigil volume detach v` with the client still writing (its
//!   failed writes were refused by the fenced engine and must never be read
//!   back), then attach on another node.
//!
//! After each round, once the volume is attached, healthy and every node
//! ready, the writer pauses and the whole volume is read through its
//! endpoint (nbdcopy) and checked (`History::check`): each slot holds
//! zeros or exactly one write's block of that slot; no slot is older than
//! its durable write; no write sent to a frozen engine, and no failed write
//! sent to a detaching one, is read back; no write to a frozen engine was
//! acknowledged; bytes outside the slots are zeros. A failed write to the
//! current engine (e.g. in flight when it was killed) may be read back:
//! a failed write leaves its blocks undefined.
//!
//! **At the end**, the volume is detached (its engine flushes), every agent
//! is stopped and each of the volume's replica directories is read whole
//! with the engine's own replica reader (`Replica::open`, every layer of
//! its chain): each replica must be byte-for-byte equal to the last image
//! read through the endpoint, which passed the checker.
//!
//! `VIGIL_NEMESIS_ROUNDS` (default 6) sets the rounds; `bench/nemesis.py`
//! runs many. The report (rounds, nemeses, writes, violations) is printed
//! after every round and at the end as a line `nemesis summary: {json}`;
//! any violation fails the test.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::{check, doctor};
use vigil_tests::nemesis::{self, History, Plan, Target, Writer};
use vigil_tests::{Agent, Etcd};

const SIZE: u64 = 16 << 20;
const NODES: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Nemesis {
    KillReplica,
    FreezeEngine,
    KillEngine,
    Move,
}

impl Nemesis {
    const ALL: [Nemesis; 4] = [
        Nemesis::KillReplica,
        Nemesis::FreezeEngine,
        Nemesis::KillEngine,
        Nemesis::Move,
    ];

    fn name(self) -> &'static str {
        match self {
            Nemesis::KillReplica => "kill-replica",
            Nemesis::FreezeEngine => "freeze-engine",
            Nemesis::KillEngine => "kill-engine",
            Nemesis::Move => "move",
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

/// Three agents, etcd and the run's state. Fields drop in order: the
/// writer, the agents, then etcd, then the directory.
struct Run {
    writer: Option<Writer>,
    agents: Vec<Agent>,
    down: [bool; NODES],
    _etcd: Etcd,
    history: Arc<Mutex<History>>,
    rng: StdRng,
    seed: u64,
    round: u32,
    writers: u32,
    applied: BTreeMap<&'static str, u32>,
    violations: Vec<String>,
    indeterminate: u64,
    root: tempfile::TempDir,
}

impl Run {
    fn start(seed: u64) -> Run {
        let root = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(root.path());
        let store = etcd.store_url();
        let agents: Vec<Agent> = (1..=NODES)
            .map(|i| Agent::start_with(root.path(), &format!("n{i}"), "tok", &["--store", &store]))
            .collect();
        for a in &agents {
            a.wait_live();
        }
        agents[0].set("volume-attachment-recovery-policy", "immediate");
        agents[0].set("node-down-timeout", "15");
        let v = agents[0].json(&[
            "volume",
            "create",
            "v",
            "--size",
            "16MiB",
            "--replicas",
            "3",
        ]);
        assert_eq!(v["state"], "detached", "{v}");
        std::fs::create_dir_all(root.path().join("payloads")).unwrap();
        let mut run = Run {
            writer: None,
            agents,
            down: [false; NODES],
            _etcd: etcd,
            history: Arc::new(Mutex::new(History::default())),
            rng: StdRng::seed_from_u64(seed),
            seed,
            round: 0,
            writers: 0,
            applied: BTreeMap::new(),
            violations: Vec::new(),
            indeterminate: 0,
            root,
        };
        let first = run.rng.random_range(0..NODES);
        let uri = run.attach(first);
        run.writer = Some(run.writer_on(&uri));
        run
    }

    /// A running agent other than `except`.
    fn live(&self, except: Option<usize>) -> &Agent {
        (0..NODES)
            .find(|&i| !self.down[i] && Some(i) != except)
            .map(|i| &self.agents[i])
            .expect("a running agent")
    }

    fn volume(&self) -> Value {
        self.live(None).json(&["volume", "get", "v"])
    }

    /// Index of the node whose engine serves v.
    fn engine_node(&self) -> usize {
        let v = self.volume();
        let node = v["attached_node"].as_str().unwrap_or_else(|| panic!("{v}"));
        node[1..].parse::<usize>().unwrap() - 1
    }

    /// Another node than `n`, at random.
    fn other(&mut self, n: usize) -> usize {
        (n + self.rng.random_range(1..NODES)) % NODES
    }

    /// Attaches v on node `to` (asking that node); returns the endpoint.
    fn attach(&self, to: usize) -> String {
        let a = &self.agents[to];
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            let (ok, out, err) = a.cli(&["volume", "attach", "v", "--node", &a.name]);
            if ok {
                return out.trim().to_string();
            }
            last = err;
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
                dir: self.root.path().join("payloads"),
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

    /// Waits until `doctor` on `asker` reports NODE_DOWN for node `n`.
    fn wait_node_down(&self, n: usize, asker: usize) {
        let object = format!("node/{}", self.agents[n].name);
        wait_until(
            &format!("NODE_DOWN for {object}"),
            Duration::from_secs(40),
            || {
                check(&doctor(&self.agents[asker]).1, "NODE_DOWN").is_some_and(|c| {
                    c["items"]
                        .as_array()
                        .is_some_and(|items| items.iter().any(|i| i["object"] == object))
                })
            },
        );
    }

    fn apply(&mut self, nemesis: Nemesis) {
        let e = self.engine_node();
        let t = self.other(e);
        let (en, tn) = (self.agents[e].name.clone(), self.agents[t].name.clone());
        match nemesis {
            Nemesis::KillReplica => {
                eprintln!("  kill -9 {tn} (replica only; engine on {en}), restart it");
                self.sleep_between(500, 2000);
                self.kill(t);
                self.sleep_between(1000, 4000);
                self.restart(t);
            }
            Nemesis::FreezeEngine => {
                eprintln!("  SIGSTOP {en} (engine), attach on {tn}, write there, SIGCONT {en}");
                let old = self.writer.take().unwrap();
                old.pause(Duration::from_secs(30));
                let frozen = Instant::now();
                self.agents[e].signal(libc::SIGSTOP);
                wait_stopped(self.agents[e].pid());
                let (acked, failed) = old.outcomes();
                old.retarget(Target::Frozen);
                old.resume();
                self.wait_node_down(e, t);
                let uri = self.attach(t);
                eprintln!(
                    "  attached on {tn} {:.1} s after the freeze",
                    frozen.elapsed().as_secs_f64()
                );
                self.writer = Some(self.writer_on(&uri));
                self.sleep_between(1500, 3000);
                // The newer engine's writer holds still across the thaw, so
                // the check below sees whatever the thawed engine did to the
                // slots the newer one wrote.
                self.writer.as_ref().unwrap().pause(Duration::from_secs(30));
                self.agents[e].signal(libc::SIGCONT);
                wait_until(
                    "the frozen engine's queued write is answered after the thaw",
                    Duration::from_secs(60),
                    || {
                        let (a, f) = old.outcomes();
                        a + f > acked + failed
                    },
                );
                std::thread::sleep(Duration::from_secs(1));
                let (a, f) = old.outcomes();
                eprintln!(
                    "  writes to the thawed engine: {} acknowledged, {} failed",
                    a - acked,
                    f - failed
                );
                old.stop();
                self.check_through_endpoint(&format!(
                    "right after {en} was thawed (round {})",
                    self.round
                ));
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
                let uri = self.attach(t);
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
                let uri = self.attach(t);
                self.writer = Some(self.writer_on(&uri));
            }
        }
        *self.applied.entry(nemesis.name()).or_default() += 1;
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
                .all(|a| self.live(None).json(&["node", "get", &a.name])["ready"] == true);
            let last = self.volume();
            let replicas = last["replicas"].as_array().cloned().unwrap_or_default();
            if nodes_ready
                && last["state"] == "attached"
                && last["robustness"] == "healthy"
                && replicas.len() == NODES
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
        let image = nemesis::read_through(&writer.uri, &self.root.path().join("image"));
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
        let last = nemesis::read_through(&uri, &self.root.path().join("image"));
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
        assert_eq!(replicas.len(), NODES, "{replicas:?}");
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
fn acknowledged_writes_survive_kills_freezes_and_moves() {
    let started = Instant::now();
    let seed = env_u64("VIGIL_SEED").unwrap_or_else(rand::random);
    let rounds = env_u64("VIGIL_NEMESIS_ROUNDS").unwrap_or(6) as u32;
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
