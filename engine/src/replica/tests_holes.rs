//! Replicas on a filesystem that does not report holes (FUSE without an
//! lseek handler, NFS before 4.2): `fault::set_hide_holes` makes the probe
//! and `SEEK_DATA` answer as such a filesystem does, while the data files
//! stay real sparse files. The crash sweeps run there too
//! (`tests_crash.rs`, `*_without_holes`).

use std::fs;

use super::fault;
use super::tests::{BS, pattern, read_all, read_blocks, snap, work_tmp};
use super::*;

/// Sets the pretence for this thread; undone on drop, even on a panic.
struct NoHoles;

impl NoHoles {
    fn on() -> NoHoles {
        fault::set_hide_holes(true);
        NoHoles
    }
}

impl Drop for NoHoles {
    fn drop(&mut self) {
        fault::set_hide_holes(false);
    }
}

fn reopen(r: Replica) -> Replica {
    let dir = r.dir().to_path_buf();
    drop(r);
    Replica::open(&dir, &ReplicaOptions::default()).unwrap()
}

fn head_meta(r: &Replica) -> serde_json::Value {
    let head = r.info().chain.last().unwrap().name.clone();
    let bytes = fs::read(meta::meta_path(r.dir(), &head)).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The bug this guards against: reopened on such a filesystem, the head
/// counted as fully written and hid the snapshot below it, so data flushed
/// before the snapshot read back as zeros.
#[test]
fn flushed_data_below_the_head_survives_a_reopen() {
    let _no_holes = NoHoles::on();
    let tmp = work_tmp();
    let r = Replica::create(&tmp.path().join("r"), 16 * BLOCK_SIZE, &Default::default()).unwrap();
    r.write(0, &pattern(1, 4)).unwrap();
    snap(&r, "s1");
    r.write(2 * BLOCK_SIZE, &pattern(9, 1)).unwrap();
    r.flush().unwrap();
    let mut want = vec![0u8; 16 * BS];
    want[..4 * BS].copy_from_slice(&pattern(1, 4));
    want[2 * BS..3 * BS].copy_from_slice(&pattern(9, 1));
    assert!(read_all(&r) == want);

    let r = reopen(r);
    assert!(
        read_all(&r) == want,
        "data below the head hidden after reopen"
    );
    assert!(r.verify().unwrap().problems.is_empty());
    // The allocation is exact, not "everything": a rebuild copies 4 blocks
    // of s1 and the head holds 1.
    let info = r.info();
    assert_eq!(info.chain[0].allocated_bytes, 4 * BLOCK_SIZE);
    assert_eq!(info.chain[1].allocated_bytes, BLOCK_SIZE);
    assert_eq!(r.layer_extents("s1").unwrap().len(), 1);
}

/// A write that was not flushed is not in the map: after a restart it
/// reads as the data below it (a lost unflushed write), never as zeros.
#[test]
fn unflushed_write_reads_as_the_data_below_not_zeros() {
    let _no_holes = NoHoles::on();
    let tmp = work_tmp();
    let r = Replica::create(&tmp.path().join("r"), 8 * BLOCK_SIZE, &Default::default()).unwrap();
    r.write(0, &pattern(1, 2)).unwrap();
    snap(&r, "s1");
    r.write(0, &pattern(5, 1)).unwrap();
    r.flush().unwrap();
    r.write(BLOCK_SIZE, &pattern(7, 1)).unwrap();
    let r = reopen(r);
    assert_eq!(read_blocks(&r, 0, 1), pattern(5, 1), "flushed write lost");
    assert_eq!(
        read_blocks(&r, 1, 1),
        pattern(2, 1),
        "an unflushed write must read as the old data"
    );
}

/// Maps are written only where they are needed: on a filesystem with
/// holes the metadata carries none, and a head map left from a mount
/// without holes is dropped when holes are back (it would go stale).
#[test]
fn maps_only_without_holes_and_dropped_when_holes_return() {
    let tmp = work_tmp();
    let r = Replica::create(&tmp.path().join("a"), 8 * BLOCK_SIZE, &Default::default()).unwrap();
    r.write(0, &pattern(1, 1)).unwrap();
    r.flush().unwrap();
    assert!(head_meta(&r).get("allocated").is_none());

    let no_holes = NoHoles::on();
    let r = Replica::create(&tmp.path().join("b"), 8 * BLOCK_SIZE, &Default::default()).unwrap();
    assert_eq!(head_meta(&r)["allocated"], serde_json::json!([]));
    r.write(3 * BLOCK_SIZE, &pattern(3, 1)).unwrap();
    snap(&r, "s1");
    r.write(BLOCK_SIZE, &pattern(2, 1)).unwrap();
    r.flush().unwrap();
    assert_eq!(
        head_meta(&r)["allocated"],
        serde_json::json!([[BLOCK_SIZE, 2 * BLOCK_SIZE]])
    );
    let want = read_all(&r);
    drop(no_holes);

    let r = reopen(r);
    assert!(head_meta(&r).get("allocated").is_none(), "stale map kept");
    assert!(read_all(&r) == want);
    assert!(r.verify().unwrap().problems.is_empty());
}

/// A damaged map is refused with a clear error naming the file, never
/// trusted and never a panic.
#[test]
fn malformed_map_is_corrupt() {
    let _no_holes = NoHoles::on();
    for bad in [
        serde_json::json!([[0, 1]]),
        serde_json::json!([[4096, 0]]),
        serde_json::json!([[0, 8192], [4096, 12288]]),
        serde_json::json!([[0, 4096], [4096, 8192]]),
        serde_json::json!([[0, 1u64 << 40]]),
        serde_json::json!("everything"),
    ] {
        let tmp = work_tmp();
        let r =
            Replica::create(&tmp.path().join("r"), 8 * BLOCK_SIZE, &Default::default()).unwrap();
        let head = r.info().chain[0].name.clone();
        let dir = r.dir().to_path_buf();
        drop(r);
        let path = meta::meta_path(&dir, &head);
        let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        m["allocated"] = bad.clone();
        fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        match Replica::open(&dir, &ReplicaOptions::default()) {
            Err(ReplicaError::Corrupt { path: p, .. }) => assert_eq!(p, path, "{bad}"),
            Err(e) => panic!("{bad}: wrong error {e}"),
            Ok(_) => panic!("{bad}: a malformed map was accepted"),
        }
    }
}

/// A rebuild from a replica without holes to one with (and back) moves
/// only allocated data and lands the same content and checksums.
#[test]
fn rebuild_across_filesystems_with_and_without_holes() {
    let tmp = work_tmp();
    let src = {
        let _no_holes = NoHoles::on();
        let r = Replica::create(
            &tmp.path().join("src"),
            32 * BLOCK_SIZE,
            &Default::default(),
        )
        .unwrap();
        r.write(4 * BLOCK_SIZE, &pattern(4, 3)).unwrap();
        snap(&r, "s1");
        r.write(20 * BLOCK_SIZE, &pattern(20, 2)).unwrap();
        snap(&r, "s2");
        reopen(r)
    };
    let dst = Replica::create(
        &tmp.path().join("dst"),
        32 * BLOCK_SIZE,
        &Default::default(),
    )
    .unwrap();
    let layers: Vec<LayerInfo> = src
        .info()
        .chain
        .into_iter()
        .filter(|l| l.read_only)
        .collect();
    let mut copied = 0;
    for l in &layers {
        dst.stage_layer(l).unwrap();
        for e in src.layer_extents(&l.name).unwrap() {
            let mut buf = vec![0u8; e.len as usize];
            src.read_layer(&l.name, e.offset, &mut buf).unwrap();
            dst.write_staged(&l.name, e.offset, &buf).unwrap();
            copied += e.len;
        }
    }
    assert_eq!(copied, 5 * BLOCK_SIZE, "only allocated blocks are copied");
    dst.install_chain(&layers).unwrap();
    assert!(read_all(&dst) == read_all(&src));
    let dst = reopen(dst);
    assert!(read_all(&dst) == read_all(&src));
    for (a, b) in src.info().chain.iter().zip(dst.info().chain.iter()) {
        assert_eq!(a.checksum, b.checksum, "layer {}", a.name);
    }
    // And the other way: installed on a replica without holes, reopened.
    let _no_holes = NoHoles::on();
    let back = Replica::create(
        &tmp.path().join("back"),
        32 * BLOCK_SIZE,
        &Default::default(),
    )
    .unwrap();
    back.write(30 * BLOCK_SIZE, &pattern(30, 1)).unwrap();
    for l in &layers {
        back.stage_layer(l).unwrap();
        for e in dst.layer_extents(&l.name).unwrap() {
            let mut buf = vec![0u8; e.len as usize];
            dst.read_layer(&l.name, e.offset, &mut buf).unwrap();
            back.write_staged(&l.name, e.offset, &buf).unwrap();
        }
    }
    back.install_chain(&layers).unwrap();
    let mut want = read_all(&src);
    want[30 * BS..31 * BS].copy_from_slice(&pattern(30, 1));
    let back = reopen(back);
    assert!(read_all(&back) == want, "installed chain or head data lost");
    assert!(back.verify().unwrap().problems.is_empty());
}
