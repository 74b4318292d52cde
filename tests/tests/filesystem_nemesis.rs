//! A real filesystem and a real database on a volume under nemeses (issue
//! 18, item 3): what a guest fsynced survives replica kills, a frozen
//! engine's node and an isolated one, and a takeover that "crashes" the
//! guest in between.
//!
//! **Cluster.** Three agents in network namespaces the test makes
//! (`vigil_tests::netns`), a real etcd; `node-down-timeout` 15 s; one
//! 256 MiB volume with 3 replicas.
//!
//! **Guest.** The volume's export through `nbdfuse`, a loop device on it,
//! ext4 (`vigil_tests::fsvolume`). On it, a writer creates, appends to,
//! renames and deletes files, fsyncing each file and its directory, and an
//! SQLite process commits 20-row transactions (rollback journal,
//! `synchronous=EXTRA`); see `vigil_tests::nemesis::fswriter`.
//!
//! **Nemeses**, one per round, each block a permutation (seed printed;
//! `VIGIL_SEED` replays; `VIGIL_FS_NEMESIS_ROUNDS`, default 3):
//! - `kill-replica`: `kill -9` of a node holding only a replica, restarted
//!   after 1-3 s; the filesystem keeps working throughout;
//! - `freeze-engine`: SIGSTOP of the engine's node; once NODE_DOWN shows,
//!   the volume is attached on another node, the guest crashes (nbdfuse
//!   killed: every I/O still waiting fails) and the frozen node thaws;
//! - `isolate-engine`: the engine's node cut from everything (etcd, the
//!   guest, the other nodes), then the same takeover; the cut heals.
//!
//! After each takeover the guest "reboots" on the new attachment: mount
//! (the journal replays) and unmount, then `e2fsck -fn` must find nothing
//! to fix; mounted again, every file whose fsyncs returned must hold what
//! was written (the operation in flight may have happened or not, an
//! append partly), and the database must pass `PRAGMA integrity_check`
//! with every committed transaction and at most the one in flight, whole.
//! At the end the guest unmounts cleanly and the same checks run.
//! Summary line: `filesystem nemesis summary: {json}`.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use vigil_tests::agent::wait_until;
use vigil_tests::doctor::wait_node_down;
use vigil_tests::fsvolume::FsStack;
use vigil_tests::keep_logs::LogsOnPanic;
use vigil_tests::nemesis::fswriter::{self, Files, FsOutcome, FsWriter, SqlWriter};
use vigil_tests::netns::{Lab, Peer, lab_cluster};
use vigil_tests::{Agent, Etcd};

const NODES: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nemesis {
    KillReplica,
    FreezeEngine,
    IsolateEngine,
}

impl Nemesis {
    const ALL: [Nemesis; 3] = [
        Nemesis::KillReplica,
        Nemesis::FreezeEngine,
        Nemesis::IsolateEngine,
    ];
    fn name(self) -> &'static str {
        match self {
            Nemesis::KillReplica => "kill-replica",
            Nemesis::FreezeEngine => "freeze-engine",
            Nemesis::IsolateEngine => "isolate-engine",
        }
    }
}

/// The guest: its filesystem stack and the two writers on it.
struct Guest {
    stack: FsStack,
    files: FsWriter,
    sql: SqlWriter,
}

struct Run {
    guest: Option<Guest>,
    agents: Vec<Agent>,
    _etcd: Etcd,
    rng: StdRng,
    seed: u64,
    stacks: u32,
    fs_ops: u64,
    sql_commits: u64,
    fscks: u32,
    applied: BTreeMap<&'static str, u32>,
    violations: Vec<String>,
    root: LogsOnPanic,
    lab: Lab,
}

fn node_index(name: &str) -> usize {
    name[1..].parse::<usize>().unwrap() - 1
}

impl Run {
    fn volume(&self, asker: usize) -> Value {
        self.agents[asker].json(&["volume", "get", "fsv"])
    }

    /// Attaches fsv on node `to`, or takes the attachment recovery made
    /// elsewhere than `gone`; returns the endpoint.
    fn attach(&self, to: usize, gone: Option<usize>) -> String {
        let a = &self.agents[to];
        let deadline = Instant::now() + Duration::from_secs(45);
        let mut last = String::new();
        while Instant::now() < deadline {
            let (ok, out, err) = a.cli(&["volume", "attach", "fsv", "--node", &a.name]);
            if ok {
                return out.trim().to_string();
            }
            last = err;
            let v = self.volume(to);
            if let (Some(g), Some(node), Some(uri)) =
                (gone, v["attached_node"].as_str(), v["endpoint"].as_str())
                && v["state"] == "attached"
                && node_index(node) != g
            {
                return uri.to_string();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("attach fsv on {} refused for 45 s: {last}", a.name);
    }

    /// Mounts a fresh stack on `uri` (mkfs first when `format`), and
    /// starts the writers from `files` and `batches`.
    fn boot(&mut self, uri: &str, format: bool, files: Files, batches: u64) {
        self.stacks += 1;
        let mut stack =
            FsStack::attach(uri, &self.root.path().join(format!("guest{}", self.stacks)));
        if format {
            stack.mkfs();
        }
        stack.mount();
        let seed = self.seed ^ u64::from(self.stacks);
        let files = FsWriter::start(&fswriter::files_dir(&stack.mnt), files, seed);
        let sql = SqlWriter::start(&stack.mnt.join("db.sqlite"), batches);
        self.guest = Some(Guest { stack, files, sql });
    }

    /// The guest's machine dies; its writers' outcomes.
    fn crash_guest(&mut self) -> (FsOutcome, u64) {
        let g = self.guest.take().unwrap();
        g.stack.crash();
        let out = g.files.stop();
        let committed = g.sql.kill();
        eprintln!(
            "  guest crashed: {} file operations durable, in flight: {:?} ({}); {committed} transactions committed",
            out.ops,
            out.in_flight,
            out.error.as_deref().unwrap_or("stopped")
        );
        (out, committed)
    }

    /// The guest boots on `uri` after a crash: journal replay, fsck, the
    /// checks; then the writers go on.
    fn reboot(&mut self, uri: &str, out: FsOutcome, committed: u64, what: &str) {
        self.stacks += 1;
        let mut stack =
            FsStack::attach(uri, &self.root.path().join(format!("guest{}", self.stacks)));
        stack.mount();
        stack.umount();
        let (files, batches) = self.check(&mut stack, &out, committed, what);
        self.stacks -= 1;
        stack.close();
        self.boot(uri, false, files, batches);
    }

    /// fsck (unmounted), then mount and check files and database; leaves
    /// it mounted. Returns where the writers go on from.
    fn check(
        &mut self,
        stack: &mut FsStack,
        out: &FsOutcome,
        committed: u64,
        what: &str,
    ) -> (Files, u64) {
        self.fscks += 1;
        let (clean, report) = stack.fsck();
        if !clean {
            self.violation(format!("{what}: e2fsck -fn found problems:\n{report}"));
        }
        stack.mount();
        let (found, files) = fswriter::check_files(&fswriter::files_dir(&stack.mnt), out);
        for v in found {
            self.violation(format!("{what}: {v}"));
        }
        let (found, batches) = fswriter::check_sql(&stack.mnt.join("db.sqlite"), committed);
        for v in found {
            self.violation(format!("{what}: {v}"));
        }
        self.fs_ops += out.ops;
        self.sql_commits = self.sql_commits.max(committed);
        eprintln!(
            "  {what}: fsck clean: {clean}; {} files checked; database holds {batches} transactions",
            out.files.durable.len()
        );
        (files, batches)
    }

    fn violation(&mut self, v: String) {
        eprintln!("  VIOLATION {v}");
        self.violations.push(v);
    }

    fn engine_node(&self, asker: usize) -> usize {
        let v = self.volume(asker);
        node_index(v["attached_node"].as_str().unwrap_or_else(|| panic!("{v}")))
    }

    /// Waits until `doctor` on `asker` reports NODE_DOWN for node `n`.
    fn wait_node_down(&self, n: usize, asker: usize) {
        wait_node_down(
            &self.agents[asker],
            &self.agents[n].name,
            Duration::from_secs(40),
        );
    }

    /// Every node ready, fsv attached, healthy, 3 RW replicas (asking
    /// `asker`, whose store connection is known good).
    fn wait_healthy(&self, asker: usize) {
        wait_until("fsv healthy", Duration::from_secs(150), || {
            let a = &self.agents[asker];
            let ready = self.agents.iter().all(|n| {
                let (ok, out, _) = a.cli(&["-o", "json", "node", "get", &n.name]);
                ok && serde_json::from_str::<Value>(&out).is_ok_and(|v| v["ready"] == true)
            });
            let v = self.volume(asker);
            let rs = v["replicas"].as_array().cloned().unwrap_or_default();
            ready
                && v["state"] == "attached"
                && v["robustness"] == "healthy"
                && rs.len() == 3
                && rs.iter().all(|r| r["mode"] == "RW")
        });
    }

    fn apply(&mut self, nemesis: Nemesis, asker: usize) -> usize {
        let e = self.engine_node(asker);
        let t = (e + self.rng.random_range(1..NODES)) % NODES;
        let (en, tn) = (self.agents[e].name.clone(), self.agents[t].name.clone());
        std::thread::sleep(Duration::from_millis(self.rng.random_range(2000..4000)));
        match nemesis {
            Nemesis::KillReplica => {
                let others: Vec<usize> = (0..NODES).filter(|&i| i != e).collect();
                let r = *others.choose(&mut self.rng).unwrap();
                eprintln!(
                    "  kill -9 {} (a replica; engine on {en}), restart it",
                    self.agents[r].name
                );
                self.agents[r].kill9();
                std::thread::sleep(Duration::from_millis(self.rng.random_range(1000..3000)));
                self.agents[r].start_again();
                self.agents[r].wait_live();
                let g = self.guest.as_ref().unwrap();
                if g.files.failed() {
                    let g = self.guest.take().unwrap();
                    let out = g.files.stop();
                    panic!("the filesystem failed while only a replica was killed: {out:?}");
                }
                e
            }
            Nemesis::FreezeEngine | Nemesis::IsolateEngine => {
                let freeze = nemesis == Nemesis::FreezeEngine;
                eprintln!(
                    "  {} {en} (engine), attach on {tn}, the guest crashes and boots there",
                    if freeze { "SIGSTOP" } else { "isolate" }
                );
                if freeze {
                    self.agents[e].signal(libc::SIGSTOP);
                } else {
                    let mut peers = vec![Peer::Host(self.lab.ctl_ip())];
                    peers.extend(
                        (0..NODES)
                            .filter(|&i| i != e)
                            .map(|i| Peer::Host(self.lab.node_ip(i))),
                    );
                    self.lab.cut(e, &peers);
                }
                self.wait_node_down(e, t);
                let uri = self.attach(t, Some(e));
                let (out, committed) = self.crash_guest();
                if freeze {
                    self.agents[e].signal(libc::SIGCONT);
                } else {
                    self.lab.heal(e);
                }
                let what = format!("after {} of {en} (guest rebooted on {tn})", nemesis.name());
                self.reboot(&uri, out, committed, &what);
                t
            }
        }
    }
}

#[test]
fn fsynced_files_and_committed_transactions_survive_kills_takeovers_and_isolation() {
    let started = Instant::now();
    let seed = std::env::var("VIGIL_SEED")
        .ok()
        .map(|s| s.trim().parse::<u64>().expect("VIGIL_SEED is a u64"))
        .unwrap_or_else(rand::random);
    let rounds: usize = std::env::var("VIGIL_FS_NEMESIS_ROUNDS")
        .ok()
        .map(|s| {
            s.trim()
                .parse()
                .expect("VIGIL_FS_NEMESIS_ROUNDS is a number")
        })
        .unwrap_or(Nemesis::ALL.len());
    eprintln!("seed {seed} (replay with VIGIL_SEED={seed}), {rounds} rounds");
    let root = LogsOnPanic::new("vigil-filesystem-nemesis-logs");
    let (lab, etcd, agents) = lab_cluster(root.path(), NODES);
    agents[0].set("volume-attachment-recovery-policy", "immediate");
    agents[0].set("node-down-timeout", "15");
    let v = agents[0].json(&[
        "volume",
        "create",
        "fsv",
        "--size",
        "256MiB",
        "--replicas",
        "3",
    ]);
    assert_eq!(v["state"], "detached", "{v}");
    let mut run = Run {
        guest: None,
        agents,
        _etcd: etcd,
        rng: StdRng::seed_from_u64(seed),
        seed,
        stacks: 0,
        fs_ops: 0,
        sql_commits: 0,
        fscks: 0,
        applied: BTreeMap::new(),
        violations: Vec::new(),
        root,
        lab,
    };
    let first = run.rng.random_range(0..NODES);
    let uri = run.attach(first, None);
    run.boot(&uri, true, Files::default(), 0);
    let mut schedule = Vec::new();
    while schedule.len() < rounds {
        let mut block = Nemesis::ALL;
        block.shuffle(&mut run.rng);
        schedule.extend(block);
    }
    // Ask a node that is neither frozen nor cut: the engine's node after a
    // takeover is the new one.
    let mut asker = first;
    for (i, nemesis) in schedule.into_iter().take(rounds).enumerate() {
        eprintln!(
            "round {}/{rounds}: {} ({:.0} s)",
            i + 1,
            nemesis.name(),
            started.elapsed().as_secs_f64()
        );
        asker = run.apply(nemesis, asker);
        run.wait_healthy(asker);
        *run.applied.entry(nemesis.name()).or_default() += 1;
    }
    // A clean shutdown of the guest, then the same checks.
    let g = run.guest.take().unwrap();
    let out = g.files.stop();
    assert!(
        out.error.is_none(),
        "the file writer failed at the end: {out:?}"
    );
    let committed = g.sql.kill();
    let mut stack = g.stack;
    stack.umount();
    run.check(&mut stack, &out, committed, "at the end");
    stack.close();
    let nemeses: Vec<String> = run
        .applied
        .iter()
        .map(|(n, k)| format!("\"{n}\":{k}"))
        .collect();
    eprintln!(
        "filesystem nemesis summary: {{\"seed\":{seed},\"rounds\":{rounds},\"nemeses\":{{{}}},\"file_ops_durable\":{},\"sql_commits\":{},\"fscks\":{},\"violations\":{},\"seconds\":{:.0}}}",
        nemeses.join(","),
        run.fs_ops,
        run.sql_commits,
        run.fscks,
        run.violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        run.violations.is_empty(),
        "{} violations (seed {seed}; replay with VIGIL_SEED={seed}):\n{}",
        run.violations.len(),
        run.violations.join("\n")
    );
}
