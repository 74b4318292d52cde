//! The state record: slots, torn writes, lowered values, conversions of
//! older formats (version 1 and the one before epochs).

#![allow(clippy::unwrap_used)]

use super::*;

/// A version-1 slot (`vgstate1`, 40 bytes), as builds before the
/// generation wrote it.
fn v1_slot(seq: u64, epoch: u64, revision: u64) -> [u8; V1_SLOT] {
    let mut b = [0u8; V1_SLOT];
    b[..8].copy_from_slice(V1_MAGIC);
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..24].copy_from_slice(&epoch.to_le_bytes());
    b[24..32].copy_from_slice(&revision.to_le_bytes());
    let sum = crc(&b[..32]);
    b[32..].copy_from_slice(&sum.to_le_bytes());
    b
}

fn values(r: &Record) -> (u64, u64, u64) {
    (r.epoch, r.revision, r.generation)
}

#[test]
fn survives_a_torn_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let sf = StateFile::create(&path).unwrap();
    sf.persist_revision(5).unwrap();
    sf.persist_revision(9).unwrap();
    sf.persist_revision(7).unwrap(); // never backwards
    drop(sf);
    let (sf, rec) = StateFile::open(&path).unwrap();
    assert_eq!(rec.revision, 9);
    assert_eq!(sf.current().revision, 9);
    drop(sf);
    // Damage the newest slot (the second write went to slot 1): the
    // other one still holds a valid, older record.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xff; 4], SLOT as u64 + 20).unwrap();
    let (_, rec) = StateFile::open(&path).unwrap();
    assert_eq!(rec.revision, 5);
    f.write_all_at(&[0xff; 4], 20).unwrap();
    assert!(matches!(
        StateFile::open(&path),
        Err(crate::replica::ReplicaError::Corrupt { .. })
    ));
}

#[test]
fn a_torn_generation_write_leaves_the_previous_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let sf = StateFile::create(&path).unwrap();
    sf.persist_generation(4).unwrap(); // slot 0
    sf.persist_generation(5).unwrap(); // slot 1
    drop(sf);
    // Tear slot 1 inside its generation field.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xee; 3], SLOT as u64 + 33).unwrap();
    let (sf, rec) = StateFile::open(&path).unwrap();
    assert_eq!(rec.generation, 4, "the intact, older slot wins");
    // The next write goes over the torn slot, not the good one.
    sf.persist_generation(6).unwrap();
    drop(sf);
    let (_, rec) = StateFile::open(&path).unwrap();
    assert_eq!(rec.generation, 6);
}

#[test]
fn a_lowered_revision_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let sf = StateFile::create(&path).unwrap();
    sf.persist_revision(100).unwrap();
    sf.force_revision(40).unwrap();
    drop(sf);
    let (_, rec) = StateFile::open(&path).unwrap();
    assert_eq!(
        rec.revision, 40,
        "the newest record wins, not the highest revision"
    );
}

#[test]
fn a_lowered_generation_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let sf = StateFile::create(&path).unwrap();
    sf.persist_generation(9).unwrap();
    sf.persist_generation(3).unwrap();
    drop(sf);
    let (sf, rec) = StateFile::open(&path).unwrap();
    assert_eq!(
        rec.generation, 3,
        "the newest record wins, not the highest generation"
    );
    // and once more, from the other slot
    sf.persist_generation(2).unwrap();
    drop(sf);
    let (_, rec) = StateFile::open(&path).unwrap();
    assert_eq!(rec.generation, 2);
}

#[test]
fn epoch_revision_and_generation_persist_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let sf = StateFile::create(&path).unwrap();
    sf.persist_revision(3).unwrap();
    sf.persist_epoch(7).unwrap();
    sf.persist_generation(11).unwrap();
    sf.persist_revision(4).unwrap();
    drop(sf);
    let (_, rec) = StateFile::open(&path).unwrap();
    assert_eq!(values(&rec), (7, 4, 11));
}

#[test]
fn a_version_1_file_is_converted_keeping_the_newest_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    // slot 1 is newer (seq 8) although its revision is lower: a lowered
    // revision must survive the conversion too.
    let mut old = Vec::new();
    old.extend_from_slice(&v1_slot(7, 2, 50));
    old.extend_from_slice(&v1_slot(8, 3, 20));
    std::fs::write(&path, &old).unwrap();
    let (sf, rec) = StateFile::open(&path).unwrap();
    assert_eq!(values(&rec), (3, 20, 0));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT as u64);
    sf.persist_generation(5).unwrap();
    drop(sf);
    let (_, rec) = StateFile::open(&path).unwrap();
    assert_eq!(values(&rec), (3, 20, 5));
}

#[test]
fn a_version_1_file_with_a_torn_slot_is_converted_from_the_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let mut torn = v1_slot(9, 4, 99);
    torn[20] ^= 0xff;
    let mut old = Vec::new();
    old.extend_from_slice(&v1_slot(8, 3, 70));
    old.extend_from_slice(&torn);
    std::fs::write(&path, &old).unwrap();
    let (_, rec) = StateFile::open(&path).unwrap();
    assert_eq!(values(&rec), (3, 70, 0));
    // both slots torn: refused, not guessed
    let mut bad = old.clone();
    bad[3] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(
        StateFile::open(&path),
        Err(crate::replica::ReplicaError::Corrupt { .. })
    ));
}

#[test]
fn a_crash_while_converting_leaves_the_version_1_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let mut old = Vec::new();
    old.extend_from_slice(&v1_slot(1, 6, 12));
    old.extend_from_slice(&v1_slot(2, 6, 13));
    std::fs::write(&path, &old).unwrap();
    for n in 0..2 {
        super::super::fault::arm(n);
        let crashed = StateFile::open(&path);
        super::super::fault::disarm();
        assert!(crashed.is_err(), "crash point {n} fired");
        assert_eq!(std::fs::read(&path).unwrap(), old, "crash point {n}");
    }
    let (_, rec) = StateFile::open(&path).unwrap();
    assert_eq!(values(&rec), (6, 13, 0));
}

#[test]
fn a_file_from_before_epochs_is_converted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revision");
    let legacy = |rev: u64| {
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&rev.to_le_bytes());
        let sum = crc(&s[..8]);
        s[8..].copy_from_slice(&sum.to_le_bytes());
        s
    };
    let mut old = Vec::new();
    old.extend_from_slice(&legacy(12));
    old.extend_from_slice(&legacy(11));
    std::fs::write(&path, &old).unwrap();
    let (sf, rec) = StateFile::open(&path).unwrap();
    assert_eq!(values(&rec), (0, 12, 0));
    sf.persist_epoch(2).unwrap();
    drop(sf);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT as u64);
    let (_, rec) = StateFile::open(&path).unwrap();
    assert_eq!(values(&rec), (2, 12, 0));
}

#[test]
fn a_ring_write_holds_blocking_writers_until_it_ends_and_a_failed_one_keeps_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let sf = std::sync::Arc::new(StateFile::create(&dir.path().join("revision")).unwrap());
    let RingWrite::Go { offset: first, .. } = sf.begin_ring(5) else {
        panic!("nothing in flight: the ring write may start");
    };
    assert!(matches!(sf.begin_ring(6), RingWrite::Busy));
    // A blocking writer waits for the ring write to end.
    let (tx, rx) = std::sync::mpsc::channel();
    let s = std::sync::Arc::clone(&sf);
    let waiter = std::thread::spawn(move || {
        s.persist_generation(4).unwrap();
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(200))
            .is_err(),
        "a blocking writer ran while a ring write was in flight"
    );
    // Failed or abandoned: not adopted, and the blocking writer goes on.
    sf.end_ring(None);
    rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
    waiter.join().unwrap();
    assert_eq!(values(&sf.current()), (0, 0, 4));
    // It wrote the slot the ring write had; the next goes to the other.
    let RingWrite::Go { offset, record, .. } = sf.begin_ring(5) else {
        panic!("free again");
    };
    assert_ne!(offset, first);
    sf.end_ring(Some(record));
    assert_eq!(values(&sf.current()), (0, 5, 4));
    assert!(matches!(sf.begin_ring(5), RingWrite::Done));
    // After a failed ring write the same slot is used again.
    let RingWrite::Go { offset: a, .. } = sf.begin_ring(6) else {
        panic!("free");
    };
    sf.end_ring(None);
    let RingWrite::Go { offset: b, .. } = sf.begin_ring(6) else {
        panic!("free");
    };
    assert_eq!(a, b);
    sf.end_ring(None);
}
