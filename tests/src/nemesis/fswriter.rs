//! Writers on a filesystem mounted on a volume (see `crate::fsvolume`),
//! and what a crash may and may not do to what they made durable.
//!
//! [`FsWriter`] creates, appends to, renames and deletes files, fsyncing
//! each file and, for the name changes, the directory: once an operation's
//! fsyncs returned, the operation is durable and [`Files`] holds the
//! result. The one operation in flight when the filesystem failed is kept
//! as [`InFlight`]; after a crash it may have happened or not (an append
//! may be partly there), nothing else may differ.
//!
//! [`SqlWriter`] commits transactions of a fixed number of rows to an
//! SQLite database (rollback journal, `synchronous=EXTRA`) and prints each
//! commit once it returned. (EXTRA, not FULL: in rollback-journal mode a
//! commit *is* the journal's unlink, and only EXTRA fsyncs the directory
//! after it; under FULL, SQLite documents that the last commit before a
//! power loss may roll back — the first run of this test showed exactly
//! that, one commit short.) after a crash the database must pass
//! `PRAGMA integrity_check` and hold every committed transaction and at
//! most the one in flight, whole.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// The files the writer made durable: name → content.
#[derive(Debug, Clone, Default)]
pub struct Files {
    pub durable: BTreeMap<String, Vec<u8>>,
    /// Next file number (names are never reused).
    pub next: u64,
}

/// The operation the filesystem failed in.
#[derive(Debug, Clone)]
pub enum InFlight {
    Create(String),
    Append { name: String },
    Rename { from: String, to: String },
    Delete(String),
}

/// How a writer ended.
#[derive(Debug)]
pub struct FsOutcome {
    pub files: Files,
    pub in_flight: Option<InFlight>,
    /// The error that stopped it (None: stopped by the test).
    pub error: Option<String>,
    /// Operations made durable.
    pub ops: u64,
}

/// A thread writing files under one directory until stopped or failed.
pub struct FsWriter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<FsOutcome>>,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn payload(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let mut v = vec![0u8; rng.random_range(1..=max)];
    rng.fill_bytes(&mut v);
    v
}

impl FsWriter {
    /// Starts writing under `dir` (made if missing), from `files`.
    pub fn start(dir: &Path, files: Files, seed: u64) -> FsWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let dir = dir.to_path_buf();
        let thread = std::thread::spawn(move || write_files(&dir, files, seed, &flag));
        FsWriter {
            stop,
            thread: Some(thread),
        }
    }

    /// Whether the writer stopped by itself (an error).
    pub fn failed(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops after the operation in progress; how it ended.
    pub fn stop(mut self) -> FsOutcome {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("writer thread")
            .join()
            .expect("writer thread panicked")
    }
}

fn write_files(dir: &Path, mut files: Files, seed: u64, stop: &AtomicBool) -> FsOutcome {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ops = 0u64;
    let fail = |files: Files, op: InFlight, e: std::io::Error, ops: u64| FsOutcome {
        files,
        in_flight: Some(op),
        error: Some(e.to_string()),
        ops,
    };
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| fsync_dir(dir)) {
        return fail(files, InFlight::Create(String::new()), e, ops);
    }
    while !stop.load(Ordering::SeqCst) {
        let names: Vec<String> = files.durable.keys().cloned().collect();
        let pick = rng.random_range(0..100);
        let op = if names.len() < 8 || (pick < 40 && names.len() < 150) {
            files.next += 1;
            InFlight::Create(format!("f{}", files.next))
        } else if pick < 70 {
            InFlight::Append {
                name: names[rng.random_range(0..names.len())].clone(),
            }
        } else if pick < 90 {
            files.next += 1;
            InFlight::Rename {
                from: names[rng.random_range(0..names.len())].clone(),
                to: format!("r{}", files.next),
            }
        } else {
            InFlight::Delete(names[rng.random_range(0..names.len())].clone())
        };
        let done: std::io::Result<()> = match &op {
            InFlight::Create(name) => {
                let data = payload(&mut rng, 64 << 10);
                (|| {
                    let mut f = File::create(dir.join(name))?;
                    f.write_all(&data)?;
                    f.sync_all()?;
                    fsync_dir(dir)
                })()
                .map(|()| {
                    files.durable.insert(name.clone(), data);
                })
            }
            InFlight::Append { name } => {
                let data = payload(&mut rng, 16 << 10);
                (|| {
                    let mut f = OpenOptions::new().append(true).open(dir.join(name))?;
                    f.write_all(&data)?;
                    f.sync_all()
                })()
                .map(|()| {
                    if let Some(c) = files.durable.get_mut(name) {
                        c.extend_from_slice(&data);
                    }
                })
            }
            InFlight::Rename { from, to } => std::fs::rename(dir.join(from), dir.join(to))
                .and_then(|()| fsync_dir(dir))
                .map(|()| {
                    if let Some(c) = files.durable.remove(from) {
                        files.durable.insert(to.clone(), c);
                    }
                }),
            InFlight::Delete(name) => std::fs::remove_file(dir.join(name))
                .and_then(|()| fsync_dir(dir))
                .map(|()| {
                    files.durable.remove(name);
                }),
        };
        match done {
            Ok(()) => ops += 1,
            Err(e) => return fail(files, op, e, ops),
        }
    }
    FsOutcome {
        files,
        in_flight: None,
        error: None,
        ops,
    }
}

/// Checks the files under `dir` against a writer's outcome after a crash
/// and the journal's replay; returns the violations and the files as they
/// are now (the in-flight operation resolved one way or the other), to go
/// on from.
pub fn check_files(dir: &Path, outcome: &FsOutcome) -> (Vec<String>, Files) {
    let mut violations = Vec::new();
    let mut now = outcome.files.clone();
    let read = |name: &str| std::fs::read(dir.join(name)).ok();
    let involved: Vec<&str> = match &outcome.in_flight {
        Some(InFlight::Create(n)) | Some(InFlight::Delete(n)) => vec![n.as_str()],
        Some(InFlight::Append { name }) => vec![name.as_str()],
        Some(InFlight::Rename { from, to }) => vec![from.as_str(), to.as_str()],
        None => vec![],
    };
    for (name, content) in &outcome.files.durable {
        if involved.contains(&name.as_str()) {
            continue;
        }
        match read(name) {
            None => violations.push(format!("{name}: fsynced, now missing")),
            Some(found) if &found != content => violations.push(format!(
                "{name}: fsynced with {} bytes, now {} bytes that differ",
                content.len(),
                found.len()
            )),
            Some(_) => {}
        }
    }
    match &outcome.in_flight {
        None => {}
        Some(InFlight::Create(name)) => {
            // Not fsynced: absent, or present with whatever reached the disk.
            if let Some(found) = read(name).filter(|_| !name.is_empty()) {
                now.durable.insert(name.clone(), found);
            }
        }
        Some(InFlight::Append { name }) => {
            let before = &outcome.files.durable[name];
            match read(name) {
                Some(found) if found.starts_with(before) => {
                    now.durable.insert(name.clone(), found);
                }
                Some(found) => violations.push(format!(
                    "{name}: an append was in flight; the {} bytes fsynced before it are no longer its start ({} bytes now)",
                    before.len(),
                    found.len()
                )),
                None => violations.push(format!("{name}: fsynced, missing after an append")),
            }
        }
        Some(InFlight::Rename { from, to }) => {
            let content = &outcome.files.durable[from];
            match (read(from), read(to)) {
                (Some(a), None) if &a == content => {}
                (None, Some(b)) if &b == content => {
                    now.durable.remove(from);
                    now.durable.insert(to.clone(), b);
                }
                (a, b) => violations.push(format!(
                    "rename {from} -> {to} in flight: found {from}: {:?} bytes, {to}: {:?} bytes; expected exactly one, with the {} fsynced bytes",
                    a.map(|v| v.len()),
                    b.map(|v| v.len()),
                    content.len()
                )),
            }
        }
        Some(InFlight::Delete(name)) => match read(name) {
            None => {
                now.durable.remove(name);
            }
            Some(found) if found == outcome.files.durable[name] => {}
            Some(found) => violations.push(format!(
                "{name}: a delete was in flight; it holds {} bytes that differ from what was fsynced",
                found.len()
            )),
        },
    }
    (violations, now)
}

/// Rows per transaction.
pub const SQL_BATCH: u64 = 20;

const SQL_SCRIPT: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("pragma journal_mode=delete")
db.execute("pragma synchronous=extra")
db.execute("create table if not exists t(id integer primary key, batch integer, v blob)")
batch = int(sys.argv[2])
while True:
    db.execute("begin")
    for _ in range(int(sys.argv[3])):
        db.execute("insert into t(batch, v) values (?, randomblob(2000))", (batch,))
    db.execute("commit")
    print(batch, flush=True)
    batch += 1
"#;

/// An SQLite writer process committing batches of rows.
pub struct SqlWriter {
    child: Child,
    /// Batches whose commit returned.
    committed: Arc<AtomicU64>,
}

impl SqlWriter {
    /// Starts committing to `db`, batches numbered from `first`.
    pub fn start(db: &Path, first: u64) -> SqlWriter {
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", SQL_SCRIPT])
            .arg(db)
            .arg(first.to_string())
            .arg(SQL_BATCH.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run python3 (sqlite3 module)");
        let committed = Arc::new(AtomicU64::new(first));
        let count = Arc::clone(&committed);
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(b) = line.trim().parse::<u64>() {
                    count.store(b + 1, Ordering::SeqCst);
                }
            }
        });
        SqlWriter { child, committed }
    }

    /// Batches committed so far (numbered from 0).
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// Kills it (mid-transaction, as likely as not); the batches
    /// committed.
    pub fn kill(mut self) -> u64 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader may still hold the last line: give it a moment.
        std::thread::sleep(std::time::Duration::from_millis(100));
        self.committed()
    }
}

impl Drop for SqlWriter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SQL_CHECK: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(db.execute("pragma integrity_check").fetchone()[0])
print(db.execute("select count(*) from t").fetchone()[0])
for (b, n) in db.execute("select batch, count(*) from t group by batch having count(*) != ?", (int(sys.argv[2]),)):
    print("partial batch", b, n)
"#;

/// Checks the database after a crash: integrity, every committed batch
/// there, at most one more, none partial. Returns the violations and the
/// number of batches it holds.
pub fn check_sql(db: &Path, committed: u64) -> (Vec<String>, u64) {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", SQL_CHECK])
        .arg(db)
        .arg(SQL_BATCH.to_string())
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut violations = Vec::new();
    if !out.status.success() {
        violations.push(format!(
            "sqlite: cannot open or read the database: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return (violations, committed);
    }
    let mut lines = text.lines();
    let integrity = lines.next().unwrap_or("");
    if integrity != "ok" {
        violations.push(format!("sqlite: integrity_check says {integrity}"));
    }
    let rows: u64 = lines.next().unwrap_or("").trim().parse().unwrap_or(0);
    for partial in lines {
        violations.push(format!("sqlite: {partial} (a transaction half there)"));
    }
    let batches = rows / SQL_BATCH;
    if batches < committed {
        violations.push(format!(
            "sqlite: {batches} batches of rows, but {committed} commits returned"
        ));
    }
    if batches > committed + 1 {
        violations.push(format!(
            "sqlite: {batches} batches of rows, but only {committed} commits returned (at most one more may have landed)"
        ));
    }
    (violations, batches)
}

/// The path of the writers' files under a mount point.
pub fn files_dir(mnt: &Path) -> PathBuf {
    mnt.join("files")
}
