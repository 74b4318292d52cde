//! `replica_ops DIR SEED ROUND EPOCH`: an endless, seeded run of replica
//! store operations for `tests/tests/replica_power_cut.rs`, which kills it
//! (`kill -9`) at a random moment and cuts the power of the disk under it.
//!
//! Opens (or creates) two replicas of the engine's own store
//! (`vigil_engine::replica`): `DIR/t`, the replica under test, and
//! `DIR/r2`, a rebuild target. Claims `t` with `EPOCH`, then loops over
//! writes of unique blocks into 64 slots (the nemesis history's blocks),
//! flushes, snapshots, merges (the oldest snapshot removed), reverts (to
//! the newest), expansions, in-sync generation and epoch updates, and
//! rebuilds of `r2` from `t` (every read-only layer staged and the chain
//! installed). Every operation is announced on stdout before it starts
//! (`…B` lines) and again once it returned (the bare letter), so the test
//! knows what may and what must have reached the disk:
//!
//! `W slot seq` · `F` · `SB name`/`S name` · `MB name`/`M name` ·
//! `RB name`/`R name` · `XB size`/`X size` · `GB g`/`G g` · `CB e`/`C e` ·
//! `IB`/`I [[name, checksum], ...]`
//!
//! Any error is printed as `ERR …` and ends the run with status 1.

#![allow(clippy::unwrap_used)] // a test tool: a broken pipe may end it

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vigil_engine::replica::{Replica, ReplicaError, ReplicaOptions};
use vigil_tests::nemesis::history;

/// The first size of both replicas; the slots stay within it.
pub const SIZE: u64 = 16 << 20;
/// Expansions stop here.
const MAX_SIZE: u64 = 32 << 20;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

fn check<T>(what: &str, r: Result<T, ReplicaError>) -> T {
    r.unwrap_or_else(|e| {
        say(&format!("ERR {what}: {e}"));
        std::process::exit(1)
    })
}

fn open_or_create(dir: &Path) -> Replica {
    let opts = ReplicaOptions::default();
    if dir.join("replica.json").exists() {
        check("open", Replica::open(dir, &opts))
    } else {
        let _ = std::fs::remove_dir_all(dir);
        check("create", Replica::create(dir, SIZE, &opts))
    }
}

fn snapshots(r: &Replica) -> Vec<String> {
    r.info()
        .chain
        .into_iter()
        .filter(|l| l.read_only)
        .map(|l| l.name)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: replica_ops DIR SEED ROUND EPOCH");
        std::process::exit(2);
    }
    let dir = Path::new(&args[1]);
    let seed: u64 = args[2].parse().unwrap();
    let round: u32 = args[3].parse().unwrap();
    let mut epoch: u64 = args[4].parse().unwrap();
    let t = open_or_create(&dir.join("t"));
    let r2 = open_or_create(&dir.join("r2"));
    say(&format!("CB {epoch}"));
    check("claim", t.claim(epoch));
    say(&format!("C {epoch}"));
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(round) << 40));
    let mut seq = u64::from(round) * 1_000_000;
    let mut n = 0u32;
    loop {
        n += 1;
        match rng.random_range(0..100) {
            0..60 => {
                let slot = rng.random_range(0..history::SLOTS);
                seq += 1;
                say(&format!("W {slot} {seq}"));
                let block = history::block(seed, slot, round, seq);
                check("write", t.write(history::slot_offset(SIZE, slot), &block));
            }
            60..74 => {
                check("flush", t.flush());
                say("F");
            }
            74..80 => {
                let name = format!("s{round}-{n}");
                say(&format!("SB {name}"));
                check("snapshot", t.snapshot(&name, true, BTreeMap::new()));
                say(&format!("S {name}"));
            }
            80..85 => {
                let snaps = snapshots(&t);
                if snaps.len() < 2 {
                    continue;
                }
                say(&format!("MB {}", snaps[0]));
                check("merge", t.remove_snapshot(&snaps[0]));
                say(&format!("M {}", snaps[0]));
            }
            85..88 => {
                let Some(name) = snapshots(&t).pop() else {
                    continue;
                };
                say(&format!("RB {name}"));
                check("revert", t.revert(&name));
                say(&format!("R {name}"));
            }
            88..90 => {
                let size = t.size() + (1 << 20);
                if size > MAX_SIZE {
                    continue;
                }
                say(&format!("XB {size}"));
                check("expand", t.expand(size));
                say(&format!("X {size}"));
            }
            90..93 => {
                let g = t.in_sync_generation() + 1;
                say(&format!("GB {g}"));
                check("join generation", t.join_generation(g));
                say(&format!("G {g}"));
            }
            93..95 => {
                epoch += 1;
                say(&format!("CB {epoch}"));
                check("claim", t.claim(epoch));
                say(&format!("C {epoch}"));
            }
            _ => rebuild(&t, &r2),
        }
    }
}

/// Rebuilds `r2` from `t`: every read-only layer of `t` staged into `r2`
/// (its allocated extents copied), then the chain installed.
fn rebuild(t: &Replica, r2: &Replica) {
    let layers: Vec<_> = t.info().chain.into_iter().filter(|l| l.read_only).collect();
    if layers.is_empty() {
        return;
    }
    if r2.size() < t.size() {
        check("expand the rebuild target", r2.expand(t.size()));
    }
    say("IB");
    for l in &layers {
        check("stage", r2.stage_layer(l));
        for e in check("layer extents", t.layer_extents(&l.name)) {
            let mut buf = vec![0u8; e.len as usize];
            check("read layer", t.read_layer(&l.name, e.offset, &mut buf));
            check("write staged", r2.write_staged(&l.name, e.offset, &buf));
        }
    }
    check("install", r2.install_chain(&layers));
    let sums: Vec<[String; 2]> = layers
        .iter()
        .map(|l| {
            let sum = l
                .checksum
                .as_ref()
                .map(|c| c.value.clone())
                .unwrap_or_default();
            [l.name.clone(), sum]
        })
        .collect();
    say(&format!("I {}", serde_json::to_string(&sums).unwrap()));
}
