//! Power loss under the replica store itself (issue 18, item 2): seeded
//! crash rounds of writes, flushes, snapshots, merges, reverts, rebuild
//! installs, expansions, and epoch and in-sync generation updates, on a
//! disk that keeps nothing the store did not fsync.
//!
//! Each round starts `replica_ops` (`tests/src/bin/replica_ops.rs`) on a
//! `PowerCutFs` disk (`tests/faults/powercut_fs.py`: file data reaches the
//! disk only on fsync of the file, names only on fsync of their
//! directory); it runs random operations on two replicas of the engine's
//! store and announces each before it starts and once it returned. After
//! 0.1-1.2 s the test kills it (`kill -9`) and cuts the power: every
//! unsynced byte and name change is gone. Then, opening both replicas in
//! this process:
//! - both open and `verify` clean (files present, sized, checksums match);
//! - every slot of `t` reads a write the history allows: the last one
//!   before the last completed flush, snapshot or revert, or one written
//!   after it (unflushed writes may be lost, never torn, never zeros over
//!   flushed data);
//! - every snapshot whose creation returned reads (through the chain below
//!   it) exactly what the volume held when it was taken; a merge that
//!   returned left its snapshot gone; a revert that returned shows the
//!   snapshot's content;
//! - the size is the old or the new one of an expansion in flight, the new
//!   one once it returned; the epoch and the in-sync generation are at
//!   least the last that returned and at most the last begun;
//! - the rebuild target `r2` holds the installed chain (names and
//!   checksums) once an install returned.
//!
//! What was read becomes the history's new state for the next round.
//! Seed printed; `VIGIL_SEED` replays; `VIGIL_REPLICA_POWER_CUT_ROUNDS`
//! (default 40). Summary line: `replica power cut summary: {json}`.

#![allow(clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vigil_engine::replica::{Replica, ReplicaOptions};
use vigil_tests::faults::PowerCutFs;
use vigil_tests::nemesis::history::{self, Found, SLOTS};

/// The replicas' first size (`replica_ops`' SIZE): the slots lie in it.
const SIZE: u64 = 16 << 20;

/// What the history allows and requires, across rounds.
struct Model {
    /// Per slot, the sequence numbers it may read (0: zeros).
    allowed: Vec<BTreeSet<u64>>,
    /// Per slot, the last write (what the volume holds if nothing is lost).
    last: Vec<u64>,
    /// Each snapshot's content, as `last` was when it was taken.
    views: BTreeMap<String, Vec<u64>>,
    size: u64,
    epoch: u64,
    generation: u64,
}

/// What one round's announcements left in flight or completed.
#[derive(Default)]
struct Round {
    merged: Vec<String>,
    merge_begun: Option<String>,
    size_begun: Option<u64>,
    epoch_begun: Option<u64>,
    generation_begun: Option<u64>,
    installed: Option<Vec<[String; 2]>>,
    /// The last announcement, for the summary: which operation was cut.
    last_kind: String,
}

impl Model {
    fn new() -> Model {
        Model {
            allowed: vec![BTreeSet::from([0]); SLOTS as usize],
            last: vec![0; SLOTS as usize],
            views: BTreeMap::new(),
            size: SIZE,
            epoch: 0,
            generation: 0,
        }
    }

    /// Applies one announcement of `replica_ops`.
    fn apply(&mut self, line: &str, r: &mut Round, counts: &mut BTreeMap<String, u32>) {
        let mut w = line.split_whitespace();
        let kind = w.next().unwrap_or("").to_string();
        let arg = w.next().unwrap_or("").to_string();
        let num = || arg.parse::<u64>().unwrap();
        r.last_kind = kind.clone();
        if !kind.ends_with('B') {
            *counts.entry(kind.clone()).or_default() += 1;
        }
        match kind.as_str() {
            "W" => {
                let slot: usize = arg.parse().unwrap();
                let seq: u64 = w.next().unwrap().parse().unwrap();
                self.last[slot] = seq;
                self.allowed[slot].insert(seq);
            }
            "F" => self.settle(),
            "SB" => {}
            "S" => {
                // A snapshot syncs the head first: everything before it is
                // durable, and the snapshot holds exactly that.
                self.settle();
                self.views.insert(arg, self.last.clone());
            }
            "MB" => r.merge_begun = Some(arg),
            "M" => {
                self.views.remove(&arg);
                r.merge_begun = None;
                r.merged.push(arg);
            }
            "RB" => {
                let view = self.views[&arg].clone();
                for (slot, seq) in view.into_iter().enumerate() {
                    self.allowed[slot].insert(seq);
                }
            }
            "R" => {
                self.last = self.views[&arg].clone();
                self.settle();
            }
            "XB" => r.size_begun = Some(num()),
            "X" => {
                self.size = num();
                r.size_begun = None;
            }
            "CB" => r.epoch_begun = Some(num()),
            "C" => {
                self.epoch = num();
                r.epoch_begun = None;
            }
            "GB" => r.generation_begun = Some(num()),
            "G" => {
                self.generation = num();
                r.generation_begun = None;
            }
            "IB" => r.installed = None,
            "I" => {
                r.installed = Some(serde_json::from_str(line[2..].trim()).unwrap());
            }
            _ => panic!("replica_ops said {line:?}"),
        }
    }

    /// Everything written so far is durable.
    fn settle(&mut self) {
        for (slot, seq) in self.last.iter().enumerate() {
            self.allowed[slot] = BTreeSet::from([*seq]);
        }
    }
}

/// Reads slot `slot` as the chain shows it at layer `top` (an index into
/// the chain): from the topmost layer at or below it that holds the slot.
fn read_at(r: &Replica, seed: u64, top: usize, slot: u64, errs: &mut Vec<String>) -> u64 {
    let chain = r.info().chain;
    let off = history::slot_offset(SIZE, slot);
    for l in chain[..=top].iter().rev() {
        let held = r
            .layer_extents(&l.name)
            .unwrap()
            .iter()
            .any(|e| e.offset <= off && off < e.offset + e.len);
        if held {
            let mut buf = vec![0u8; history::BLOCK];
            r.read_layer(&l.name, off, &mut buf).unwrap();
            return decoded(seed, &buf, slot, &format!("layer {}", l.name), errs);
        }
    }
    0
}

fn decoded(seed: u64, buf: &[u8], slot: u64, what: &str, errs: &mut Vec<String>) -> u64 {
    match history::decode(seed, buf) {
        Found::Zero => 0,
        Found::Write { slot: s, seq } if s == slot => seq,
        other => {
            errs.push(format!("slot {slot} in {what} holds {other:?}"));
            u64::MAX
        }
    }
}

/// `r2` opens and verifies clean, and holds the installed chain once an
/// install returned (in flight, any of the chains it passes through).
fn check_rebuild_target(dir: &Path, r: &Round, errs: &mut Vec<String>) {
    let r2 = open(dir);
    let report = r2.verify().unwrap();
    if !report.problems.is_empty() {
        errs.push(format!("r2 verifies with problems: {:?}", report.problems));
    }
    if let Some(want) = &r.installed {
        let got: Vec<[String; 2]> = r2
            .info()
            .chain
            .into_iter()
            .filter(|l| l.read_only)
            .map(|l| [l.name, l.checksum.map(|c| c.value).unwrap_or_default()])
            .collect();
        if &got != want {
            errs.push(format!("r2 holds {got:?} after installing {want:?}"));
        }
    }
}

fn open(dir: &Path) -> Replica {
    Replica::open(dir, &ReplicaOptions::default())
        .unwrap_or_else(|e| panic!("{} does not open after the cut: {e}", dir.display()))
}

#[test]
fn replica_store_survives_power_cuts() {
    let started = Instant::now();
    let seed = std::env::var("VIGIL_SEED")
        .ok()
        .map(|s| s.trim().parse::<u64>().expect("VIGIL_SEED is a u64"))
        .unwrap_or_else(rand::random);
    let rounds: u32 = std::env::var("VIGIL_REPLICA_POWER_CUT_ROUNDS")
        .ok()
        .map(|s| s.trim().parse().expect("a number of rounds"))
        .unwrap_or(40);
    eprintln!("seed {seed} (replay with VIGIL_SEED={seed}), {rounds} rounds");
    let mut rng = StdRng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let fs = PowerCutFs::mount(root.path(), "disk");
    let dir = fs.path.join("store");
    std::fs::create_dir_all(&dir).unwrap();
    // The directory is ours, not the store's: make it durable (a cut
    // would undo its creation and everything under it).
    std::fs::File::open(&fs.path).unwrap().sync_all().unwrap();
    let mut model = Model::new();
    let mut violations: Vec<String> = Vec::new();
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let mut cut_in: BTreeMap<String, u32> = BTreeMap::new();
    for round in 1..=rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_replica_ops"))
            .arg(&dir)
            .arg(seed.to_string())
            .arg(round.to_string())
            .arg((model.epoch + 1).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(100..1200)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let lines = reader.join().unwrap();
        fs.cut();
        if let Some(err) = lines.iter().find(|l| l.starts_with("ERR")) {
            panic!("round {round}: replica_ops failed ({status}): {err}");
        }
        let mut r = Round::default();
        for line in &lines {
            model.apply(line, &mut r, &mut counts);
        }
        *cut_in.entry(r.last_kind.clone()).or_default() += 1;
        let what = format!("round {round} (cut after {:?})", lines.last());
        if !dir.join("t").join("replica.json").exists() {
            assert!(lines.is_empty(), "{what}: t vanished");
            continue;
        }

        let t = open(&dir.join("t"));
        let mut errs = Vec::new();
        let report = t.verify().unwrap();
        if !report.problems.is_empty() {
            errs.push(format!("t verifies with problems: {:?}", report.problems));
        }
        // The content of every slot.
        let mut read = vec![0u64; SLOTS as usize];
        for slot in 0..SLOTS {
            let mut buf = vec![0u8; history::BLOCK];
            t.read(history::slot_offset(SIZE, slot), &mut buf).unwrap();
            let seq = decoded(seed, &buf, slot, "the volume", &mut errs);
            read[slot as usize] = seq;
            if seq != u64::MAX && !model.allowed[slot as usize].contains(&seq) {
                errs.push(format!(
                    "slot {slot} reads write {seq}; allowed {:?}",
                    model.allowed[slot as usize]
                ));
            }
        }
        // Snapshots: a completed one intact, a merged one gone.
        let chain = t.info().chain;
        let names: Vec<String> = chain.iter().map(|l| l.name.clone()).collect();
        let mut views = BTreeMap::new();
        for (i, l) in chain.iter().enumerate().filter(|(_, l)| l.read_only) {
            let view: Vec<u64> = (0..SLOTS)
                .map(|s| read_at(&t, seed, i, s, &mut errs))
                .collect();
            if let Some(want) = model.views.get(&l.name)
                && *want != view
            {
                errs.push(format!(
                    "snapshot {} reads {view:?}, it held {want:?}",
                    l.name
                ));
            }
            views.insert(l.name.clone(), view);
        }
        // Every snapshot known to exist (taken this round or found after
        // the last cut, not merged since) is still there, unless its merge
        // was in flight (it may have committed before the cut).
        for s in model.views.keys() {
            let merging = r.merge_begun.as_ref() == Some(s);
            if !merging && !names.contains(s) {
                errs.push(format!("snapshot {s} was taken but is gone: {names:?}"));
            }
        }
        for s in &r.merged {
            if names.contains(s) {
                errs.push(format!("snapshot {s} was merged but is back: {names:?}"));
            }
        }
        // Size, epoch, generation.
        let size = t.size();
        if size != model.size && Some(size) != r.size_begun {
            errs.push(format!(
                "size {size}, expected {} or {:?}",
                model.size, r.size_begun
            ));
        }
        let epoch = t.epoch();
        if epoch < model.epoch || epoch > r.epoch_begun.unwrap_or(model.epoch) {
            errs.push(format!(
                "epoch {epoch}, expected {} up to {:?}",
                model.epoch, r.epoch_begun
            ));
        }
        let generation = t.in_sync_generation();
        if generation != model.generation && Some(generation) != r.generation_begun {
            errs.push(format!(
                "in-sync generation {generation}, expected {} or {:?}",
                model.generation, r.generation_begun
            ));
        }
        // The rebuild target (created after t: the first round may be cut
        // before it exists).
        if !dir.join("r2").join("replica.json").exists() {
            assert!(lines.is_empty(), "{what}: r2 vanished");
        } else {
            check_rebuild_target(&dir.join("r2"), &r, &mut errs);
        }
        for e in &errs {
            eprintln!("  VIOLATION {what}: {e}");
        }
        violations.extend(errs.into_iter().map(|e| format!("{what}: {e}")));
        // What was read is the state the next round starts from.
        model.last = read;
        model.settle();
        model.views = views;
        model.size = size;
        model.epoch = epoch;
        model.generation = generation;
        if round % 10 == 0 {
            eprintln!(
                "round {round}/{rounds}: chain {names:?}, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let json = |m: &BTreeMap<String, u32>| {
        m.iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    eprintln!(
        "replica power cut summary: {{\"seed\":{seed},\"rounds\":{rounds},\"completed\":{{{}}},\"cut_after\":{{{}}},\"disk\":{},\"violations\":{},\"seconds\":{:.0}}}",
        json(&counts),
        json(&cut_in),
        fs.stats().trim(),
        violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        violations.is_empty(),
        "{} violations (seed {seed}; replay with VIGIL_SEED={seed}):\n{}",
        violations.len(),
        violations.join("\n")
    );
}
