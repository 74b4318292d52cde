//! The on-disk metadata target: the fuzzer's bytes become one metadata file
//! of an otherwise sound replica directory, which the real
//! [`Replica::open`] then reads — `replica.json` (the replica record: format,
//! size, head), a layer's `.meta` (the head's or a snapshot's: name,
//! parent, size, flags, labels, checksum) or `revision` (the state record:
//! revision, epoch, in-sync generation, in any of its three formats).
//!
//! The decoders are private to the replica store; going through `open`
//! reaches every one of them, and their cross-checks (the chain's parent
//! links, sizes against the volume, the head against the snapshots) too.
//!
//! Input layout: byte 0 chooses the file (modulo [`FILES`]), the rest is
//! its content.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::Outcome;
use crate::replica::{ErrorKind, Replica, ReplicaInfo, ReplicaOptions};
use crate::size::{BLOCK_SIZE, check_volume_size};

/// The template replica's size.
const SIZE: u64 = 1 << 20;
/// The files an input can replace, by byte 0 (modulo their count).
pub const FILES: [&str; 4] = [
    "replica.json",
    "volume-head-002.img.meta",
    "volume-snap-s1.img.meta",
    "revision",
];

/// A file of the template replica, restored before every input.
#[derive(Debug)]
enum Content {
    Bytes(Vec<u8>),
    /// A layer file: sparse, of this length (its data does not matter to
    /// the metadata).
    Sparse(u64),
}

/// A sound replica (a snapshot under the head, a claimed epoch, a joined
/// generation, a revision) whose files are rewritten before each input.
#[derive(Debug)]
struct Fixture {
    root: PathBuf,
    dir: PathBuf,
    files: Vec<(String, Content)>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

fn opts() -> ReplicaOptions {
    ReplicaOptions { direct_io: false }
}

/// Where fixtures live: tmpfs when there is one (every input rewrites files).
fn base_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

impl Fixture {
    fn create() -> Result<Fixture, String> {
        let root = base_dir().join(format!("vigil-fuzz-metadata-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
        let dir = root.join("replica");
        {
            let r = Replica::create(&dir, SIZE, &opts()).map_err(|e| e.to_string())?;
            let labels = [("origin".to_string(), "fuzz".to_string())].into();
            r.snapshot("s1", true, labels).map_err(|e| e.to_string())?;
            r.layer_checksum("s1").map_err(|e| e.to_string())?;
            r.claim(5).map_err(|e| e.to_string())?;
            r.join_generation(3).map_err(|e| e.to_string())?;
            r.set_revision(9).map_err(|e| e.to_string())?;
            r.flush().map_err(|e| e.to_string())?;
        }
        let mut files = Vec::new();
        let entries = fs::read_dir(&dir).map_err(|e| format!("list {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let content = if name.ends_with(".img") {
                let len = fs::metadata(&path).map_err(|e| e.to_string())?.len();
                Content::Sparse(len)
            } else {
                Content::Bytes(fs::read(&path).map_err(|e| e.to_string())?)
            };
            files.push((name, content));
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        for f in FILES {
            if !files.iter().any(|(n, _)| n == f) {
                return Err(format!("the template replica has no {f}"));
            }
        }
        Ok(Fixture { root, dir, files })
    }

    /// Puts every template file back as it was and removes anything else
    /// (files `open` may have added, converted or cleaned up).
    fn reset(&self) -> std::io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !self.files.iter().any(|(n, _)| *n == name) {
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    fs::remove_dir_all(path)?;
                } else {
                    fs::remove_file(path)?;
                }
            }
        }
        for (name, content) in &self.files {
            let path = self.dir.join(name);
            match content {
                Content::Bytes(b) => fs::write(&path, b)?,
                Content::Sparse(len) => fs::File::create(&path)?.set_len(*len)?,
            }
        }
        Ok(())
    }
}

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        Fixture::create().unwrap_or_else(|e| panic!("fuzz harness: template replica: {e}"))
    })
}

/// Makes the template replica (before the fuzzer forks, so every child
/// reuses it).
pub fn prepare() {
    fixture();
}

/// Removes the template replica's directory (a test calls it when done; a
/// fuzzing run leaves it for `bench/fuzz.sh` to remove).
pub fn remove_fixture() {
    if let Some(f) = FIXTURE.get() {
        let _ = fs::remove_dir_all(&f.root);
    }
}

/// Fuzzes the metadata files through [`Replica::open`].
///
/// Properties: open returns a replica or a `Corrupt` error (never a panic,
/// never another kind: every file is there and readable); an open replica
/// is sound — a chain from a bottom layer without a parent up to a
/// writable head, each layer the parent of the next, read-only below the
/// head, sizes positive multiples of 4096 within a valid volume size, the
/// head spanning the volume; and reopening it (after whatever `open`
/// converted or completed) gives the same replica.
pub fn replica_metadata(data: &[u8]) -> Outcome {
    let f = fixture();
    let (which, content) = match data.split_first() {
        Some((b, rest)) => (FILES[*b as usize % FILES.len()], rest),
        None => (FILES[0], data),
    };
    f.reset()
        .unwrap_or_else(|e| panic!("fuzz harness: reset the template replica: {e}"));
    fs::write(f.dir.join(which), content)
        .unwrap_or_else(|e| panic!("fuzz harness: write {which}: {e}"));
    let info = match Replica::open(&f.dir, &opts()) {
        Ok(r) => r.info(),
        Err(e) => {
            assert_eq!(
                e.kind(),
                ErrorKind::Corrupt,
                "open with a fuzzed {which}: {e}"
            );
            return Outcome::Refused;
        }
    };
    check_sound(&info, which);
    match Replica::open(&f.dir, &opts()) {
        Ok(again) => assert_eq!(again.info(), info, "reopen after a fuzzed {which}"),
        Err(e) => panic!("{which}: opened once, then not again: {e}"),
    }
    Outcome::Accepted
}

fn check_sound(info: &ReplicaInfo, which: &str) {
    assert!(
        check_volume_size(info.size).is_ok(),
        "{which}: volume size {}",
        info.size
    );
    let Some((head, below)) = info.chain.split_last() else {
        panic!("{which}: opened with an empty chain");
    };
    assert!(!head.read_only, "{which}: read-only head");
    assert_eq!(
        head.size, info.size,
        "{which}: the head does not span the volume"
    );
    assert!(
        below.iter().all(|l| l.read_only),
        "{which}: writable snapshot"
    );
    for (i, l) in info.chain.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| info.chain[p].name.as_str());
        assert_eq!(l.parent.as_deref(), parent, "{which}: parent of {}", l.name);
        assert!(
            l.size > 0 && l.size.is_multiple_of(BLOCK_SIZE) && l.size <= info.size,
            "{which}: layer {} of {} bytes",
            l.name,
            l.size
        );
        assert!(
            !info.chain[..i].iter().any(|o| o.name == l.name),
            "{which}: layer {} twice",
            l.name
        );
    }
}

/// Seeds: each metadata file as the template has it, and the state record
/// in its two older formats (converted on open).
pub(super) fn seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let mut seeds = Vec::new();
    for (i, name) in FILES.iter().enumerate() {
        if let Some((_, Content::Bytes(b))) = f.files.iter().find(|(n, _)| n == name) {
            seeds.push([&[i as u8][..], b].concat());
        }
    }
    let state = FILES.len() as u8 - 1;
    let crc = |b: &[u8]| {
        let mut d = crc64fast_nvme::Digest::new();
        d.write(b);
        d.sum64().to_le_bytes()
    };
    // Version 1: two 40-byte slots, "vgstate1", seq, epoch, revision, CRC.
    let mut v1 = vec![state];
    for seq in [1u64, 2] {
        let mut slot = b"vgstate1".to_vec();
        for n in [seq, 5, 9 + seq] {
            slot.extend_from_slice(&n.to_le_bytes());
        }
        let sum = crc(&slot);
        slot.extend_from_slice(&sum);
        v1.extend_from_slice(&slot);
    }
    seeds.push(v1);
    // Before epochs: two 16-byte slots, revision and its CRC.
    let mut legacy = vec![state];
    for rev in [7u64, 8] {
        legacy.extend_from_slice(&rev.to_le_bytes());
        legacy.extend_from_slice(&crc(&rev.to_le_bytes()));
    }
    seeds.push(legacy);
    // Refused: an empty replica.json, a state file of no known format.
    seeds.push(vec![0]);
    seeds.push([&[state][..], b"vgstate2"].concat());
    seeds
}
