//! A model-based property test of the whole chain, and a concurrency test.

use std::sync::Arc;
use std::thread;

use proptest::prelude::*;

use super::tests::{BS, new_replica, pattern, read_all, read_blocks, work_tmp};
use super::*;

const BLOCKS: u64 = 16;

#[derive(Debug, Clone)]
enum Op {
    Write { block: u64, n: u64, fill: u8 },
    Trim { block: u64, n: u64 },
    Zero { block: u64, n: u64 },
    Snapshot,
    Remove(usize),
    Revert(usize),
    Flush,
    Reopen,
}

fn range() -> impl Strategy<Value = (u64, u64)> {
    (0..BLOCKS, 1..=4u64).prop_map(|(b, n)| (b, n.min(BLOCKS - b)))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (range(), 1..=255u8).prop_map(|((block, n), fill)| Op::Write { block, n, fill }),
        1 => range().prop_map(|(block, n)| Op::Trim { block, n }),
        1 => range().prop_map(|(block, n)| Op::Zero { block, n }),
        2 => Just(Op::Snapshot),
        1 => any::<usize>().prop_map(Op::Remove),
        1 => any::<usize>().prop_map(Op::Revert),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

/// What the volume should read as, and each snapshot's content.
struct Model {
    current: Vec<u8>,
    snapshots: Vec<(String, Vec<u8>)>,
    next_snap: usize,
    writes: u64,
}

fn run(ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
    let tmp = work_tmp();
    let mut r = new_replica(&tmp, BLOCKS);
    let mut m = Model {
        current: vec![0; BLOCKS as usize * BS],
        snapshots: Vec::new(),
        next_snap: 0,
        writes: 0,
    };
    let at = |b: u64| b as usize * BS;
    for op in ops {
        match op {
            Op::Write { block, n, fill } => {
                let data = pattern(fill, n as usize);
                r.write(block * BLOCK_SIZE, &data).unwrap();
                m.current[at(block)..at(block + n)].copy_from_slice(&data);
                m.writes += 1;
            }
            Op::Trim { block, n } | Op::Zero { block, n } => {
                if matches!(op, Op::Trim { .. }) {
                    r.trim(block * BLOCK_SIZE, n * BLOCK_SIZE).unwrap();
                } else {
                    r.write_zeroes(block * BLOCK_SIZE, n * BLOCK_SIZE).unwrap();
                }
                m.current[at(block)..at(block + n)].fill(0);
                m.writes += 1;
            }
            Op::Snapshot => {
                let name = format!("s{}", m.next_snap);
                m.next_snap += 1;
                r.snapshot(&name, true, Default::default()).unwrap();
                m.snapshots.push((name, m.current.clone()));
            }
            Op::Remove(i) if !m.snapshots.is_empty() => {
                let (name, _) = m.snapshots.remove(i % m.snapshots.len());
                r.remove_snapshot(&name).unwrap();
            }
            Op::Revert(i) if !m.snapshots.is_empty() => {
                let i = i % m.snapshots.len();
                r.revert(&m.snapshots[i].0).unwrap();
                m.current = m.snapshots[i].1.clone();
                m.snapshots.truncate(i + 1);
            }
            Op::Remove(_) | Op::Revert(_) => {}
            Op::Flush => {
                r.flush().unwrap();
                prop_assert_eq!(r.info().revision, m.writes);
            }
            Op::Reopen => {
                r.flush().unwrap();
                let dir = r.dir().to_path_buf();
                drop(r);
                r = Replica::open(&dir, &ReplicaOptions::default()).unwrap();
                prop_assert_eq!(r.info().revision, m.writes);
            }
        }
        prop_assert!(read_all(&r) == m.current, "content differs after {:?}", op);
    }
    let info = r.info();
    let snaps: Vec<&str> = info
        .chain
        .iter()
        .filter(|l| l.read_only)
        .map(|l| l.name.as_str())
        .collect();
    let model: Vec<&str> = m.snapshots.iter().map(|(n, _)| n.as_str()).collect();
    prop_assert_eq!(snaps, model);
    let rep = r.verify().unwrap();
    prop_assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    // Each snapshot still reads as it did when taken.
    for (i, (name, content)) in m.snapshots.iter().enumerate().rev() {
        if i + 1 == m.snapshots.len() || i % 2 == 0 {
            r.revert(name).unwrap();
            prop_assert!(read_all(&r) == *content, "snapshot {} differs", name);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn chain_matches_model(ops in prop::collection::vec(op(), 1..30)) {
        run(ops)?;
    }
}

#[test]
fn concurrent_writers_readers_and_snapshots() {
    const PER: u64 = 64;
    const THREADS: u64 = 4;
    let tmp = work_tmp();
    let r = Arc::new(new_replica(&tmp, PER * THREADS));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let r = Arc::clone(&r);
        handles.push(thread::spawn(move || {
            let base = t * PER;
            let mut model = vec![0u8; PER as usize * BS];
            for i in 0..60u64 {
                let b = (i * 7 + t * 3) % (PER - 4);
                let n = 1 + i % 4;
                let lo = b as usize * BS;
                let hi = (b + n) as usize * BS;
                if i % 5 == 4 {
                    r.trim((base + b) * BLOCK_SIZE, n * BLOCK_SIZE).unwrap();
                    model[lo..hi].fill(0);
                } else {
                    let data = pattern((t * 64 + i) as u8 | 1, n as usize);
                    r.write((base + b) * BLOCK_SIZE, &data).unwrap();
                    model[lo..hi].copy_from_slice(&data);
                }
                assert!(read_blocks(&r, base + b, n as usize) == model[lo..hi]);
                if i % 10 == 0 {
                    assert!(read_blocks(&r, base, PER as usize) == model);
                }
            }
            model
        }));
    }
    {
        let r = Arc::clone(&r);
        handles.push(thread::spawn(move || {
            for k in 0..6 {
                r.snapshot(&format!("c{k}"), false, Default::default())
                    .unwrap();
                r.flush().unwrap();
                let _ = read_all(&r);
                if k % 2 == 1 {
                    r.remove_snapshot(&format!("c{}", k - 1)).unwrap();
                }
            }
            Vec::new()
        }));
    }
    let mut expect = Vec::new();
    for h in handles {
        expect.extend(h.join().unwrap());
    }
    assert!(read_all(&r) == expect);
    r.flush().unwrap();
    assert_eq!(r.info().revision, THREADS * 60);
    assert!(r.verify().unwrap().problems.is_empty());
}
