//! The fuzz corpus, replayed as an ordinary test: every file committed
//! under `fuzz/corpus/<target>/` (minimized by `bench/fuzz.sh`) and every
//! seed goes through the same target body the fuzzer runs
//! (`vigil_engine::fuzzing`), which panics when a decoder panics, answers
//! neither a valid value nor a typed error, or breaks a round trip. No
//! fuzzer is needed: this runs in every CI run.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use vigil_engine::fuzzing::{Outcome, metadata, seeds, target};

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name)
}

/// Replays `name`'s corpus and seeds; returns (files replayed, accepted,
/// refused).
fn replay(name: &str) -> (usize, usize, usize) {
    let t = target(name).unwrap_or_else(|| panic!("no fuzz target {name}"));
    let dir = corpus_dir(name);
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
            .path();
        if path.is_file() {
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            inputs.push((path.display().to_string(), bytes));
        }
    }
    inputs.sort();
    let files = inputs.len();
    for (i, s) in seeds(name).into_iter().enumerate() {
        inputs.push((format!("seed {i}"), s));
    }
    let (mut accepted, mut refused) = (0, 0);
    let mut failed = Vec::new();
    for (what, bytes) in &inputs {
        match catch_unwind(AssertUnwindSafe(|| (t.run)(bytes))) {
            Ok(Outcome::Accepted) => accepted += 1,
            Ok(Outcome::Refused) => refused += 1,
            Err(_) => failed.push(what.clone()),
        }
    }
    assert!(failed.is_empty(), "{name}: inputs that fail: {failed:?}");
    eprintln!("{name}: {files} corpus files + seeds: {accepted} accepted, {refused} refused");
    (files, accepted, refused)
}

/// A target's corpus exists, replays without a failure, and reaches both
/// a valid value and a typed refusal (so neither path went untested).
fn check(name: &str) {
    let (files, accepted, refused) = replay(name);
    assert!(
        files > 0,
        "{name}: no corpus in {}",
        corpus_dir(name).display()
    );
    assert!(accepted > 0, "{name}: no input decoded into a valid value");
    assert!(refused > 0, "{name}: no input was refused");
}

#[test]
fn nbd_handshake_corpus() {
    check("nbd_handshake");
}

#[test]
fn nbd_transmission_corpus() {
    check("nbd_transmission");
}

#[test]
fn protocol_frame_corpus() {
    check("protocol_frame");
}

#[test]
fn protocol_handshake_corpus() {
    check("protocol_handshake");
}

#[test]
fn replica_metadata_corpus() {
    check("replica_metadata");
    metadata::remove_fixture();
}

/// Every target has a test above.
#[test]
fn every_target_is_replayed() {
    let names: Vec<&str> = vigil_engine::fuzzing::TARGETS
        .iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(
        names,
        [
            "nbd_handshake",
            "nbd_transmission",
            "protocol_frame",
            "protocol_handshake",
            "replica_metadata"
        ]
    );
}
