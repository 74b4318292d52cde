//! Offline expansion: the new range reads zeros and takes writes, snapshot
//! layers keep their size, reopen keeps everything, and an expansion
//! interrupted after its commit is finished by `open`.

use super::fault;
use super::meta::{LayerMeta, ReplicaMeta};
use super::tests::{BS, new_replica, pattern, read_all, read_blocks, snap, work_tmp};
use super::*;

const OLD: u64 = 16;
const NEW: u64 = 40;

fn reopen(r: Replica) -> Replica {
    let dir = r.dir().to_path_buf();
    drop(r);
    Replica::open(&dir, &ReplicaOptions::default()).unwrap()
}

fn assert_clean(r: &Replica) {
    let rep = r.verify().unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

/// Layer name and size, bottom to head.
fn sizes(r: &Replica) -> Vec<(String, u64)> {
    r.info()
        .chain
        .into_iter()
        .map(|l| (l.name, l.size))
        .collect()
}

fn head_file_len(r: &Replica) -> u64 {
    let head = r.info().chain.pop().unwrap().name;
    fs::metadata(meta::layer_path(r.dir(), &head))
        .unwrap()
        .len()
}

#[test]
fn expand_reads_zeros_takes_writes_and_survives_reopen() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, OLD);
    let old = pattern(1, OLD as usize);
    r.write(0, &old).unwrap();
    // The old end is the limit before expanding.
    let mut buf = vec![0u8; BS];
    assert!(r.read(OLD * BLOCK_SIZE, &mut buf).is_err());

    r.expand(NEW * BLOCK_SIZE).unwrap();
    assert_eq!(r.size(), NEW * BLOCK_SIZE);
    assert_eq!(r.info().size, NEW * BLOCK_SIZE);
    assert_eq!(sizes(&r), [("volume-head-001".into(), NEW * BLOCK_SIZE)]);
    assert_eq!(head_file_len(&r), NEW * BLOCK_SIZE);
    assert!(read_blocks(&r, 0, OLD as usize) == old);
    assert!(read_blocks(&r, OLD, (NEW - OLD) as usize) == vec![0; (NEW - OLD) as usize * BS]);
    // The new range takes writes, including across the old end and up to
    // the new one; beyond the new end is still refused.
    let across = pattern(60, 4);
    r.write((OLD - 2) * BLOCK_SIZE, &across).unwrap();
    let tail = pattern(90, 2);
    r.write((NEW - 2) * BLOCK_SIZE, &tail).unwrap();
    assert!(read_blocks(&r, OLD - 2, 4) == across);
    assert!(read_blocks(&r, NEW - 2, 2) == tail);
    let e = r.write(NEW * BLOCK_SIZE, &tail).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    r.flush().unwrap();
    assert_clean(&r);
    let before = read_all(&r);

    let r = reopen(r);
    assert_eq!(r.size(), NEW * BLOCK_SIZE);
    assert!(read_all(&r) == before);
    assert_clean(&r);
}

#[test]
fn shrinking_is_refused_and_the_same_size_is_a_no_op() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, OLD);
    r.write(0, &pattern(5, 3)).unwrap();
    let e = r.expand((OLD - 1) * BLOCK_SIZE).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("replicas only grow"), "{e}");
    for bad in [0, OLD * BLOCK_SIZE + 1] {
        let e = r.expand(bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
    }
    let meta_before = fs::read(r.dir().join(meta::REPLICA_FILE)).unwrap();
    let info_before = r.info();
    r.expand(OLD * BLOCK_SIZE).unwrap();
    assert_eq!(r.info(), info_before);
    assert_eq!(
        fs::read(r.dir().join(meta::REPLICA_FILE)).unwrap(),
        meta_before
    );
    assert_eq!(r.size(), OLD * BLOCK_SIZE);
    assert_clean(&r);
}

/// A chain s1 and s2 (OLD blocks each) and a head with data of its own.
fn chain_before_expand(tmp: &tempfile::TempDir) -> Replica {
    let r = new_replica(tmp, OLD);
    r.write(0, &pattern(1, 8)).unwrap();
    snap(&r, "s1");
    r.write(4 * BLOCK_SIZE, &pattern(30, 8)).unwrap();
    snap(&r, "s2");
    r.write(10 * BLOCK_SIZE, &pattern(60, 6)).unwrap();
    r
}

/// [`chain_before_expand`] expanded to NEW blocks.
fn expanded_chain(tmp: &tempfile::TempDir) -> Replica {
    let r = chain_before_expand(tmp);
    r.expand(NEW * BLOCK_SIZE).unwrap();
    r
}

#[test]
fn expand_with_snapshots_keeps_them_and_verifies_clean() {
    let tmp = work_tmp();
    let r = chain_before_expand(&tmp);
    let before = read_all(&r);
    let (s1, s2) = {
        let c = r.info().chain;
        (c[0].clone(), c[1].clone())
    };
    r.expand(NEW * BLOCK_SIZE).unwrap();

    // Snapshots keep their size, files and checksums; only the head grew.
    let (o, n) = (OLD * BLOCK_SIZE, NEW * BLOCK_SIZE);
    assert_eq!(
        sizes(&r),
        [
            ("s1".into(), o),
            ("s2".into(), o),
            ("volume-head-003".into(), n)
        ]
    );
    let chain = r.info().chain;
    assert_eq!(chain[0].checksum, s1.checksum);
    assert_eq!(chain[1].checksum, s2.checksum);
    assert_eq!(
        fs::metadata(meta::layer_path(r.dir(), "s1")).unwrap().len(),
        o
    );
    assert_clean(&r);

    // The new range falls through the smaller snapshots to zeros.
    let all = read_all(&r);
    assert!(all[..OLD as usize * BS] == before[..]);
    assert!(all[OLD as usize * BS..].iter().all(|&b| b == 0));
    let mut raw = vec![1u8; BS];
    r.read_layer("s1", (NEW - 1) * BLOCK_SIZE, &mut raw)
        .unwrap();
    assert_eq!(raw, vec![0; BS]);
    // Writes there land in the head; trims there do not disturb the rest.
    r.write(20 * BLOCK_SIZE, &pattern(120, 5)).unwrap();
    r.trim(22 * BLOCK_SIZE, BLOCK_SIZE).unwrap();
    let mut want = pattern(120, 5);
    want[2 * BS..3 * BS].fill(0);
    assert!(read_blocks(&r, 20, 5) == want);
    assert!(read_blocks(&r, 0, OLD as usize) == before);
    assert_clean(&r);

    let r = reopen(r);
    assert_clean(&r);
    assert_eq!(sizes(&r)[0], ("s1".into(), o));
    assert!(read_blocks(&r, 20, 5) == want);
}

#[test]
fn snapshot_after_expand_has_the_new_size() {
    let tmp = work_tmp();
    let r = expanded_chain(&tmp);
    let data = pattern(200, 3);
    r.write(30 * BLOCK_SIZE, &data).unwrap();
    let s3 = snap(&r, "s3");
    assert_eq!(s3.size, NEW * BLOCK_SIZE);
    assert_eq!(sizes(&r)[3], ("volume-head-004".into(), NEW * BLOCK_SIZE));
    assert_clean(&r);
    let content = read_all(&r);

    // Merging a smaller snapshot into a bigger one keeps the data.
    r.remove_snapshot("s2").unwrap();
    assert!(read_all(&r) == content);
    assert_clean(&r);
    // Reverting to a pre-expansion snapshot keeps the volume size: the new
    // head spans it and the range above the snapshot reads zeros.
    r.revert("s1").unwrap();
    assert_eq!(r.size(), NEW * BLOCK_SIZE);
    assert_eq!(sizes(&r)[1].1, NEW * BLOCK_SIZE);
    assert!(read_blocks(&r, 30, 3) == vec![0; 3 * BS]);
    r.write(30 * BLOCK_SIZE, &data).unwrap();
    assert!(read_blocks(&r, 30, 3) == data);
    let r = reopen(r);
    assert_clean(&r);
    assert!(read_blocks(&r, 30, 3) == data);
}

/// Runs `expand` to the crash point `n` (counting from its first durable
/// step), leaving the directory as a crash there would.
fn crash_expand_at(r: &Replica, n: u32) {
    fault::arm(n);
    let res = r.expand(NEW * BLOCK_SIZE);
    let fired = fault::fired();
    fault::disarm();
    assert!(fired && res.is_err(), "crash point {n} not reached");
}

/// Crash points of `expand`: 0–1 replace replica.json (step 1), 2 extends
/// the head file (step 2), 3–4 replace the head's meta (step 3).
const AFTER_STEP_1: u32 = 2;
const AFTER_STEP_2: u32 = 3;

fn check_completed_by_open(r: Replica, old_content: &[u8]) {
    let r = reopen(r);
    assert_eq!(r.size(), NEW * BLOCK_SIZE);
    assert_eq!(
        sizes(&r),
        [
            ("s1".into(), OLD * BLOCK_SIZE),
            ("s2".into(), OLD * BLOCK_SIZE),
            ("volume-head-003".into(), NEW * BLOCK_SIZE)
        ]
    );
    assert_eq!(head_file_len(&r), NEW * BLOCK_SIZE);
    assert_clean(&r);
    let all = read_all(&r);
    assert!(all[..old_content.len()] == *old_content);
    assert!(all[old_content.len()..].iter().all(|&b| b == 0));
    r.write((NEW - 1) * BLOCK_SIZE, &pattern(9, 1)).unwrap();
    let r = reopen(r);
    assert!(read_blocks(&r, NEW - 1, 1) == pattern(9, 1));
    assert_clean(&r);
}

#[test]
fn open_completes_an_expansion_interrupted_after_step_1() {
    let tmp = work_tmp();
    let r = chain_before_expand(&tmp);
    let old = read_all(&r);
    crash_expand_at(&r, AFTER_STEP_1);
    // On disk: replica.json committed, the head untouched.
    let dir = r.dir().to_path_buf();
    assert_eq!(ReplicaMeta::load(&dir).unwrap().size, NEW * BLOCK_SIZE);
    let hm = LayerMeta::load(&dir, "volume-head-003", u64::MAX).unwrap();
    assert_eq!(hm.size, OLD * BLOCK_SIZE);
    assert_eq!(head_file_len(&r), OLD * BLOCK_SIZE);
    // The open replica still works at the old size meanwhile.
    assert_eq!(r.size(), OLD * BLOCK_SIZE);
    assert!(read_all(&r) == old);
    check_completed_by_open(r, &old);
}

#[test]
fn open_completes_an_expansion_interrupted_after_step_2() {
    let tmp = work_tmp();
    let r = chain_before_expand(&tmp);
    let old = read_all(&r);
    crash_expand_at(&r, AFTER_STEP_2);
    // On disk: replica.json committed, the head file extended, its meta not.
    let dir = r.dir().to_path_buf();
    assert_eq!(ReplicaMeta::load(&dir).unwrap().size, NEW * BLOCK_SIZE);
    let hm = LayerMeta::load(&dir, "volume-head-003", u64::MAX).unwrap();
    assert_eq!(hm.size, OLD * BLOCK_SIZE);
    assert_eq!(head_file_len(&r), NEW * BLOCK_SIZE);
    check_completed_by_open(r, &old);
}

#[test]
fn failed_expand_is_finished_by_calling_it_again() {
    for point in [AFTER_STEP_1, AFTER_STEP_2] {
        let tmp = work_tmp();
        let r = chain_before_expand(&tmp);
        let old = read_all(&r);
        crash_expand_at(&r, point);
        // replica.json already says NEW: going back is a shrink.
        let e = r.expand(OLD * BLOCK_SIZE).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{point}");
        r.expand(NEW * BLOCK_SIZE).unwrap();
        assert_eq!(r.size(), NEW * BLOCK_SIZE);
        assert_clean(&r);
        assert!(read_all(&r)[..old.len()] == old[..]);
        check_completed_by_open(r, &old);
    }
}
