//! Rebuild tests: copying a chain between replicas with layer_extents /
//! read_layer / stage_layer / write_staged / install_chain.

use super::tests::{BS, new_replica, pattern, read_all, read_blocks, snap, work_tmp};
use super::*;

fn read_only_layers(r: &Replica) -> Vec<LayerInfo> {
    r.info().chain.into_iter().filter(|l| l.read_only).collect()
}

fn copy_layer(src: &Replica, dst: &Replica, info: &LayerInfo) {
    dst.stage_layer(info).unwrap();
    for e in src.layer_extents(&info.name).unwrap() {
        let mut buf = vec![0u8; e.len as usize];
        src.read_layer(&info.name, e.offset, &mut buf).unwrap();
        dst.write_staged(&info.name, e.offset, &buf).unwrap();
    }
}

/// Copies every layer whose checksum the target lacks; returns how many
/// were skipped because they already matched.
fn sync_chain(src: &Replica, dst: &Replica) -> usize {
    let layers = read_only_layers(src);
    let mut skipped = 0;
    for l in &layers {
        let have = dst.layer_checksum(&l.name).ok();
        if have.is_some() && have == l.checksum {
            skipped += 1;
        } else {
            copy_layer(src, dst, l);
        }
    }
    dst.install_chain(&layers).unwrap();
    skipped
}

fn names(r: &Replica) -> Vec<String> {
    r.info().chain.into_iter().map(|l| l.name).collect()
}

#[test]
fn stage_and_install_round_trip() {
    let tmp = work_tmp();
    let src = new_replica(&tmp, 32);
    src.write(0, &pattern(1, 16)).unwrap();
    snap(&src, "s1");
    src.write(4 * BLOCK_SIZE, &pattern(40, 4)).unwrap();
    src.trim(12 * BLOCK_SIZE, 2 * BLOCK_SIZE).unwrap();
    snap(&src, "s2");
    src.write(20 * BLOCK_SIZE, &pattern(80, 4)).unwrap();
    snap(&src, "s3");

    let dst = Replica::create(
        &tmp.path().join("dst"),
        32 * BLOCK_SIZE,
        &Default::default(),
    )
    .unwrap();
    // The target's head receives live writes during a rebuild; they stay.
    dst.write(30 * BLOCK_SIZE, &pattern(200, 1)).unwrap();
    assert_eq!(sync_chain(&src, &dst), 0);
    let mut expect = read_all(&src);
    expect[30 * BS..31 * BS].copy_from_slice(&pattern(200, 1));
    assert!(read_all(&dst) == expect);
    assert_eq!(names(&dst), ["s1", "s2", "s3", "volume-head-001"]);
    for (a, b) in read_only_layers(&src).iter().zip(read_only_layers(&dst)) {
        assert_eq!(a.checksum, b.checksum);
        assert_eq!(a.allocated_bytes, b.allocated_bytes);
        assert_eq!(a.parent, b.parent);
    }
    assert!(dst.verify().unwrap().problems.is_empty());
    assert!(!tmp.path().join("dst/volume-snap-s1.img.partial").exists());

    // The source moves on: s2 is merged into s3 (changing s3), s4 is new.
    src.remove_snapshot("s2").unwrap();
    src.write(8 * BLOCK_SIZE, &pattern(90, 2)).unwrap();
    snap(&src, "s4");
    // Only s1 matches already; s3 must be replaced in place, s2 dropped.
    assert_eq!(sync_chain(&src, &dst), 1);
    let mut expect = read_all(&src);
    expect[30 * BS..31 * BS].copy_from_slice(&pattern(200, 1));
    assert!(read_all(&dst) == expect);
    assert_eq!(names(&dst), ["s1", "s3", "s4", "volume-head-001"]);
    assert!(!tmp.path().join("dst/volume-snap-s2.img").exists());
    assert!(dst.verify().unwrap().problems.is_empty());
    // Installing the same chain again copies nothing.
    assert_eq!(sync_chain(&src, &dst), 3);

    let dir = dst.dir().to_path_buf();
    drop(dst);
    let dst = Replica::open(&dir, &Default::default()).unwrap();
    assert!(read_all(&dst) == expect);
    assert_eq!(names(&dst), ["s1", "s3", "s4", "volume-head-001"]);
    assert!(dst.verify().unwrap().problems.is_empty());

    // An empty list leaves the head alone on the bottom.
    dst.install_chain(&[]).unwrap();
    assert_eq!(names(&dst), ["volume-head-001"]);
    assert!(read_blocks(&dst, 30, 1) == pattern(200, 1));
    assert!(read_blocks(&dst, 0, 1) == vec![0u8; BS]);
}

#[test]
fn install_refuses_unknown_and_mismatched_layers() {
    let tmp = work_tmp();
    let src = new_replica(&tmp, 16);
    src.write(0, &pattern(1, 4)).unwrap();
    let s1 = snap(&src, "s1");
    let dst = Replica::create(
        &tmp.path().join("dst"),
        16 * BLOCK_SIZE,
        &Default::default(),
    )
    .unwrap();
    // Neither staged nor present.
    let e = dst.install_chain(std::slice::from_ref(&s1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    // Staged with different data: the checksum catches it, naming the file.
    dst.stage_layer(&s1).unwrap();
    dst.write_staged("s1", 0, &pattern(2, 4)).unwrap();
    match dst.install_chain(std::slice::from_ref(&s1)).unwrap_err() {
        ReplicaError::Corrupt { path, .. } => assert!(path.ends_with("volume-snap-s1.img.partial")),
        other => panic!("expected Corrupt, got {other}"),
    }
    assert_eq!(names(&dst), ["volume-head-001"]);
    // Writing to an unknown staged layer or out of range.
    assert_eq!(
        dst.write_staged("nope", 0, &pattern(1, 1))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        dst.write_staged("s1", 16 * BLOCK_SIZE, &pattern(1, 1))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    // The failed install left the staged layer writable: fix it, install.
    dst.write_staged("s1", 0, &pattern(1, 4)).unwrap();
    dst.install_chain(std::slice::from_ref(&s1)).unwrap();
    assert!(read_all(&dst) == read_all(&src));
    assert_eq!(
        dst.write_staged("s1", 0, &pattern(1, 1))
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // Re-staging replaces the partial file; then it installs.
    copy_layer(&src, &dst, &s1);
    dst.install_chain(std::slice::from_ref(&s1)).unwrap();
    assert!(read_all(&dst) == read_all(&src));
    // Duplicate names are refused.
    let e = dst.install_chain(&[s1.clone(), s1]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn staged_leftovers_vanish_on_open() {
    let tmp = work_tmp();
    let r = new_replica(&tmp, 16);
    let info = LayerInfo {
        name: "incoming".into(),
        parent: None,
        size: 16 * BLOCK_SIZE,
        created_unix: 0,
        user_created: false,
        labels: Default::default(),
        read_only: true,
        checksum: None,
        allocated_bytes: 0,
    };
    r.stage_layer(&info).unwrap();
    r.write_staged("incoming", 0, &pattern(1, 1)).unwrap();
    let partial = r.dir().join("volume-snap-incoming.img.partial");
    assert!(partial.exists());
    let dir = r.dir().to_path_buf();
    drop(r);
    let r = Replica::open(&dir, &Default::default()).unwrap();
    assert!(!partial.exists());
    assert_eq!(names(&r), ["volume-head-001"]);
}

/// A rebuild target receives zeroes and trims in its fresh head before the
/// source's chain is installed under it (issue 17): they must read as zeros
/// from the target alone once the chain is there, and after a reopen.
#[test]
fn zeroes_before_install_stay_zeros() {
    let tmp = work_tmp();
    let src = new_replica(&tmp, 32);
    src.write(0, &pattern(1, 16)).unwrap();
    snap(&src, "s1");
    src.write(20 * BLOCK_SIZE, &pattern(60, 8)).unwrap();
    snap(&src, "s2");

    let dst = Replica::create(
        &tmp.path().join("dst"),
        32 * BLOCK_SIZE,
        &Default::default(),
    )
    .unwrap();
    // Step 1 of a rebuild: the target gets a snapshot, so a fresh head.
    snap(&dst, "rebuild-1");
    // The guest zeroes and trims over data the source's snapshots hold;
    // the source applies them too (real zeros over its lower data).
    for r in [&src, &dst] {
        r.write_zeroes(2 * BLOCK_SIZE, 3 * BLOCK_SIZE).unwrap();
        r.trim(10 * BLOCK_SIZE, 2 * BLOCK_SIZE).unwrap();
        r.trim(22 * BLOCK_SIZE, 4 * BLOCK_SIZE).unwrap();
        // Zeroes over a range nothing holds, then new data over part of it.
        r.write_zeroes(28 * BLOCK_SIZE, 4 * BLOCK_SIZE).unwrap();
        r.write(30 * BLOCK_SIZE, &pattern(200, 1)).unwrap();
    }
    let want = read_all(&src);
    assert!(want[2 * BS..5 * BS].iter().all(|&b| b == 0));
    assert!(want[0..2 * BS] == pattern(1, 2)[..]);

    sync_chain(&src, &dst);
    assert_eq!(names(&dst), ["s1", "s2", "volume-head-002"]);
    let got = read_all(&dst);
    for (block, (g, w)) in got.chunks(BS).zip(want.chunks(BS)).enumerate() {
        assert!(
            g == w,
            "block {block} differs from the source after install"
        );
    }
    // Where nothing lies below, the zeroes stay holes (no space used).
    let head = dst.info().chain.pop().unwrap();
    assert_eq!(head.allocated_bytes, (3 + 2 + 4 + 1) * BLOCK_SIZE);
    assert!(dst.verify().unwrap().problems.is_empty());

    let dir = dst.dir().to_path_buf();
    drop(dst);
    let dst = Replica::open(&dir, &Default::default()).unwrap();
    assert!(read_all(&dst) == want, "content changed across a reopen");
}
