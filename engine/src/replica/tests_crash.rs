//! Crash-safety sweeps: each chain change is interrupted at every crash
//! point in turn (see `fault.rs`), then the directory is reopened. It must
//! open, verify clean and read as before or as after the change.

use std::collections::BTreeMap;

use super::fault;
use super::tests::{BS, new_replica, pattern, read_all, snap, work_tmp};
use super::*;

/// The outcome of one interrupted run, after reopening.
struct After {
    replica: Replica,
    content: Vec<u8>,
    names: Vec<String>,
    completed: bool,
}

/// Runs `setup` then `op` on fresh replicas, crashing `op` at crash point
/// 0, 1, 2... until it gets through; calls `check` on every reopened
/// result. Returns the number of crash points exercised.
fn sweep(
    setup: impl Fn(&tempfile::TempDir) -> Replica,
    op: impl Fn(&Replica) -> Result<()>,
    check: impl Fn(u32, &After),
) -> u32 {
    for n in 0..500 {
        let tmp = work_tmp();
        let r = setup(&tmp);
        fault::arm(n);
        let res = op(&r);
        let fired = fault::fired();
        fault::disarm();
        let dir = r.dir().to_path_buf();
        drop(r);
        let replica = Replica::open(&dir, &ReplicaOptions::default())
            .unwrap_or_else(|e| panic!("crash point {n}: reopen failed: {e}"));
        let rep = replica.verify().unwrap();
        assert!(
            rep.problems.is_empty(),
            "crash point {n}: {:?}",
            rep.problems
        );
        let after = After {
            content: read_all(&replica),
            names: replica.info().chain.into_iter().map(|l| l.name).collect(),
            replica,
            completed: res.is_ok(),
        };
        check(n, &after);
        // Leftovers are gone after the reopen.
        for e in fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(
                !name.ends_with(".tmp") && !name.ends_with(".partial"),
                "crash point {n}: leftover {name}"
            );
        }
        if !fired {
            assert!(res.is_ok(), "no crash injected but the operation failed");
            return n;
        }
    }
    panic!("operation never completed");
}

fn base(tmp: &tempfile::TempDir) -> Replica {
    let r = new_replica(tmp, 32);
    r.write(0, &pattern(1, 12)).unwrap();
    snap(&r, "s1");
    r.write(4 * BLOCK_SIZE, &pattern(50, 2)).unwrap();
    r.write(16 * BLOCK_SIZE, &pattern(70, 3)).unwrap();
    snap(&r, "s2");
    r.write(10 * BLOCK_SIZE, &pattern(90, 8)).unwrap();
    r.trim(0, BLOCK_SIZE).unwrap();
    r
}

/// `base`, flushed: on a filesystem without holes only flushed writes are
/// in the head's allocation map, so a reopen shows exactly these.
fn base_flushed(tmp: &tempfile::TempDir) -> Replica {
    let r = base(tmp);
    r.flush().unwrap();
    r
}

/// Runs `f` pretending the filesystem does not report holes (replicas
/// keep allocation maps), for every replica created or reopened in it.
fn without_holes(f: impl FnOnce()) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            fault::set_hide_holes(false);
        }
    }
    let _reset = Reset;
    fault::set_hide_holes(true);
    f();
}

fn base_content() -> Vec<u8> {
    let tmp = work_tmp();
    read_all(&base(&tmp))
}

#[test]
fn snapshot_survives_a_crash_anywhere() {
    snapshot_sweep(base);
}

#[test]
fn snapshot_survives_a_crash_anywhere_without_holes() {
    without_holes(|| snapshot_sweep(base_flushed));
}

fn snapshot_sweep(setup: fn(&tempfile::TempDir) -> Replica) {
    let want = base_content();
    let points = sweep(
        setup,
        |r| r.snapshot("s3", true, BTreeMap::new()).map(|_| ()),
        |n, a| {
            assert!(a.content == want, "crash point {n}: content changed");
            let done = a.names.iter().any(|x| x == "s3");
            assert!(
                !a.completed || done,
                "crash point {n}: completed snapshot lost"
            );
            let expect: &[&str] = if done {
                &["s1", "s2", "s3", "volume-head-004"]
            } else {
                &["s1", "s2", "volume-head-003"]
            };
            assert_eq!(a.names, expect, "crash point {n}");
        },
    );
    assert!(points >= 5, "only {points} crash points");
}

#[test]
fn remove_snapshot_survives_a_crash_anywhere() {
    remove_snapshot_sweep(base);
}

#[test]
fn remove_snapshot_survives_a_crash_anywhere_without_holes() {
    without_holes(|| remove_snapshot_sweep(base_flushed));
}

fn remove_snapshot_sweep(setup: fn(&tempfile::TempDir) -> Replica) {
    let want = base_content();
    for victim in ["s1", "s2"] {
        let points = sweep(
            setup,
            |r| r.remove_snapshot(victim),
            |n, a| {
                assert!(a.content == want, "crash point {n}: content changed");
                let gone = !a.names.iter().any(|x| x == victim);
                assert!(
                    !a.completed || gone,
                    "crash point {n}: completed removal lost"
                );
                assert_eq!(a.names.len(), if gone { 2 } else { 3 });
            },
        );
        assert!(points >= 3, "only {points} crash points removing {victim}");
    }
}

#[test]
fn revert_survives_a_crash_anywhere() {
    revert_sweep(base);
}

#[test]
fn revert_survives_a_crash_anywhere_without_holes() {
    without_holes(|| revert_sweep(base_flushed));
}

fn revert_sweep(setup: fn(&tempfile::TempDir) -> Replica) {
    let want = base_content();
    let tmp = work_tmp();
    let r = setup(&tmp);
    r.revert("s1").unwrap();
    let reverted = read_all(&r);
    drop(r);
    sweep(
        setup,
        |r| r.revert("s1"),
        |n, a| {
            let done = a.names == ["s1", "volume-head-004"];
            assert!(
                done || a.names == ["s1", "s2", "volume-head-003"],
                "{n}: {:?}",
                a.names
            );
            assert!(
                !a.completed || done,
                "crash point {n}: completed revert lost"
            );
            assert!(
                &a.content == if done { &reverted } else { &want },
                "crash point {n}"
            );
        },
    );
}

#[test]
fn expand_survives_a_crash_anywhere() {
    expand_sweep(base);
}

#[test]
fn expand_survives_a_crash_anywhere_without_holes() {
    without_holes(|| expand_sweep(base_flushed));
}

fn expand_sweep(setup: fn(&tempfile::TempDir) -> Replica) {
    let want = base_content();
    let new_size = 48 * BLOCK_SIZE;
    let seen = std::cell::Cell::new([0u32; 2]);
    let points = sweep(
        setup,
        |r| r.expand(new_size),
        |n, a| {
            let size = a.replica.size();
            let grown = size == new_size;
            assert!(grown || size == 32 * BLOCK_SIZE, "crash point {n}: {size}");
            assert!(
                !a.completed || grown,
                "crash point {n}: completed expansion lost"
            );
            assert_eq!(a.names, ["s1", "s2", "volume-head-003"], "crash point {n}");
            assert!(a.content[..want.len()] == want[..], "crash point {n}");
            assert!(a.content[want.len()..].iter().all(|&b| b == 0));
            let head = &a.replica.info().chain[2];
            assert_eq!(head.size, size, "crash point {n}: head not expanded");
            let mut s = seen.get();
            s[usize::from(grown)] += 1;
            seen.set(s);
        },
    );
    assert!(points >= 5, "only {points} crash points");
    let [old, new] = seen.get();
    // Crashes after the replica.json rename are completed by open.
    assert!(old >= 2 && new >= 3, "states seen: old {old}, new {new}");
}

/// A rebuild target whose chain partly differs from the source's.
fn install_setup(tmp: &tempfile::TempDir, src: &Replica) -> Replica {
    let dst = Replica::create(
        &tmp.path().join("dst"),
        32 * BLOCK_SIZE,
        &Default::default(),
    )
    .unwrap();
    // Same s1 as the source (same data, same checksum).
    dst.write(0, &pattern(1, 12)).unwrap();
    snap(&dst, "s1");
    // A different s2 and an extra x.
    dst.write(8 * BLOCK_SIZE, &pattern(33, 4)).unwrap();
    snap(&dst, "s2");
    dst.write(20 * BLOCK_SIZE, &pattern(44, 4)).unwrap();
    snap(&dst, "x");
    dst.write(30 * BLOCK_SIZE, &pattern(200, 1)).unwrap();
    // Zeroes the head got while being rebuilt: over the target's own data
    // (real zeros) and where only the source has data (a hole until the
    // install writes zeros there).
    dst.write_zeroes(4 * BLOCK_SIZE, 2 * BLOCK_SIZE).unwrap();
    dst.trim(12 * BLOCK_SIZE, BLOCK_SIZE).unwrap();
    dst.trim(16 * BLOCK_SIZE, 2 * BLOCK_SIZE).unwrap();
    // Flushed, so a reopen without holes (maps) shows it all too.
    dst.flush().unwrap();
    for l in src
        .info()
        .chain
        .iter()
        .filter(|l| l.read_only && l.name != "s1")
    {
        dst.stage_layer(l).unwrap();
        for e in src.layer_extents(&l.name).unwrap() {
            let mut buf = vec![0u8; e.len as usize];
            src.read_layer(&l.name, e.offset, &mut buf).unwrap();
            dst.write_staged(&l.name, e.offset, &buf).unwrap();
        }
    }
    dst
}

#[test]
fn install_chain_survives_a_crash_anywhere() {
    install_chain_sweep();
}

#[test]
fn install_chain_survives_a_crash_anywhere_without_holes() {
    without_holes(install_chain_sweep);
}

fn install_chain_sweep() {
    let src_tmp = work_tmp();
    let src = base(&src_tmp);
    snap(&src, "s3");
    let layers: Vec<LayerInfo> = src
        .info()
        .chain
        .into_iter()
        .filter(|l| l.read_only)
        .collect();
    let head_block = |mut c: Vec<u8>| {
        c[30 * BS..31 * BS].copy_from_slice(&pattern(200, 1));
        c[4 * BS..6 * BS].fill(0);
        c[12 * BS..13 * BS].fill(0);
        c[16 * BS..18 * BS].fill(0);
        c
    };
    let new = head_block(read_all(&src));
    let mut s1_only = vec![0u8; 32 * BS];
    s1_only[..12 * BS].copy_from_slice(&pattern(1, 12));
    let intermediate = head_block(s1_only);
    let old = {
        let tmp = work_tmp();
        read_all(&install_setup(&tmp, &src))
    };
    let seen = std::cell::Cell::new([0u32; 3]);
    let see = |i: usize| {
        let mut s = seen.get();
        s[i] += 1;
        seen.set(s);
    };
    let points = sweep(
        |tmp| install_setup(tmp, &src),
        |r| r.install_chain(&layers),
        |n, a| {
            let head = "volume-head-004".to_string();
            if a.names == ["s1", "s2", "s3", head.as_str()] {
                assert!(
                    a.content == new,
                    "crash point {n}: new chain, wrong content"
                );
                see(2);
                for (l, got) in layers.iter().zip(a.replica.info().chain) {
                    assert_eq!(l.checksum, got.checksum, "crash point {n}");
                }
            } else if a.names == ["s1", head.as_str()] {
                assert!(!a.completed);
                assert!(
                    a.content == intermediate,
                    "crash point {n}: intermediate content"
                );
                see(1);
            } else {
                assert!(!a.completed);
                assert_eq!(a.names, ["s1", "s2", "x", head.as_str()], "crash point {n}");
                assert!(
                    a.content == old,
                    "crash point {n}: old chain, wrong content"
                );
                see(0);
            }
        },
    );
    assert!(points >= 6, "only {points} crash points");
    let [o, i, w] = seen.get();
    assert!(
        o > 0 && i > 0 && w > 0,
        "states seen: old {o}, intermediate {i}, new {w}"
    );
}

#[test]
fn direct_io_fallback_when_refused() {
    fault::set_refuse_direct(true);
    let tmp = work_tmp();
    let r = new_replica(&tmp, 16);
    assert!(!r.info().direct_io);
    let data = pattern(3, 2);
    let mut unaligned = vec![0u8; data.len() + 1];
    unaligned[1..].copy_from_slice(&data);
    r.write(BLOCK_SIZE, &unaligned[1..]).unwrap();
    snap(&r, "s1");
    let dir = r.dir().to_path_buf();
    drop(r);
    let r = Replica::open(&dir, &ReplicaOptions::default()).unwrap();
    fault::set_refuse_direct(false);
    assert!(!r.info().direct_io);
    assert!(read_all(&r)[BS..3 * BS] == data[..]);
    // Without the pretence the same directory opens with O_DIRECT where the
    // filesystem supports it, and the data is the same.
    drop(r);
    let r = Replica::open(&dir, &ReplicaOptions::default()).unwrap();
    assert!(read_all(&r)[BS..3 * BS] == data[..]);
    assert!(r.verify().unwrap().problems.is_empty());
}
