//! The nemesis suite's client: one long NBD session per attachment
//! (`tests/nbd_session.py`, libnbd: plain writes, a flush only when asked,
//! every failure reported), driven by a thread that writes unique blocks
//! to random slots and flushes every few writes, recording each operation
//! and its outcome in the shared [`History`].
//!
//! Not qemu-io: its interactive `flush` prints nothing when it fails, so a
//! flush that never reached the server counted as acknowledged (and the
//! writes it covered as durable), and its default write-through mode
//! flushes every write, so nothing was ever unflushed at a fault.

use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::history::{self, History, Outcome, Target};

/// Writes between two flushes.
const FLUSH_EVERY: u64 = 8;
/// How long one operation may take before its outcome is Unknown (longer
/// than any freeze the suite applies).
const OP_TIMEOUT: Duration = Duration::from_secs(90);

/// One `nbd_session.py` process on an NBD URI, fed one command at a time:
/// it reads its next command only when the last one finished, and then
/// prints its prompt ([`PROMPT`], without a newline) — the end of the
/// command's answer.
struct Session {
    child: Child,
    stdin: ChildStdin,
    output: Receiver<String>,
}

const PROMPT: &str = "nbd> ";

impl Session {
    fn open(uri: &str) -> Result<Session, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("nbd_session.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(uri)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stdin = child.stdin.take().ok_or("nbd session stdin")?;
        let mut stdout = child.stdout.take().ok_or("nbd session stdout")?;
        let (tx, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0
                    || tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        let mut s = Session {
            child,
            stdin,
            output,
        };
        let opened = s.answer().and_then(|_| s.run("length"));
        match opened {
            Some(out) if out.starts_with("length ") => Ok(s),
            other => {
                s.kill();
                Err(format!(
                    "could not open {uri}: {other:?} (needs Debian's python3-libnbd)"
                ))
            }
        }
    }

    /// Runs `cmd`; its output, or None when the session gave no answer in
    /// time (then it is killed) or exited.
    fn run(&mut self, cmd: &str) -> Option<String> {
        if writeln!(self.stdin, "{cmd}").is_err() || self.stdin.flush().is_err() {
            return None;
        }
        self.answer()
    }

    /// Everything the session prints up to its next prompt.
    fn answer(&mut self) -> Option<String> {
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut out = String::new();
        loop {
            if let Some(text) = out.strip_suffix(PROMPT) {
                return Some(text.to_string());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => out.push_str(&chunk),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    self.kill();
                    return None;
                }
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the test tells a writer, and what the writer reports back.
#[derive(Debug, Default)]
struct State {
    pause: bool,
    stop: bool,
    /// Between two operations (true while paused).
    idle: bool,
    target: Option<Target>,
    acked: u64,
    /// Failed or unanswered.
    failed: u64,
    /// The last operation's command and output, for diagnostics.
    last: String,
}

/// A thread writing through one NBD session until stopped.
pub struct Writer {
    /// Writer number, in the blocks it writes.
    pub id: u32,
    /// The NBD URI it writes to.
    pub uri: String,
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// Where a writer's thread records and what it writes.
pub struct Plan {
    pub history: Arc<Mutex<History>>,
    pub seed: u64,
    pub size: u64,
    /// Where the payload files go (the session reads `write FILE OFFSET`).
    pub dir: PathBuf,
}

impl Writer {
    /// Opens a session on `uri` and starts writing. Panics if the session
    /// cannot open it.
    pub fn start(id: u32, uri: &str, plan: Plan) -> Writer {
        let session = Session::open(uri).unwrap_or_else(|e| panic!("writer {id}: {e}"));
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let shared = Arc::clone(&state);
        let thread = std::thread::spawn(move || run(id, session, plan, &shared));
        Writer {
            id,
            uri: uri.to_string(),
            state,
            thread: Some(thread),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (m, cv) = &*self.state;
        let mut s = m.lock().unwrap();
        let r = f(&mut s);
        cv.notify_all();
        r
    }

    /// Waits until the writer is between two operations and holds it there.
    /// Panics after `timeout` (an operation that never ends).
    pub fn pause(&self, timeout: Duration) {
        let (m, cv) = &*self.state;
        let mut s = m.lock().unwrap();
        s.pause = true;
        cv.notify_all();
        let deadline = Instant::now() + timeout;
        while !s.idle {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "writer {} still busy after {timeout:?}",
                self.id
            );
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }

    /// Lets a paused writer go on.
    pub fn resume(&self) {
        self.with(|s| s.pause = false);
    }

    /// From the next write on, writes go to an engine of this kind.
    pub fn retarget(&self, target: Target) {
        self.with(|s| s.target = Some(target));
    }

    /// (acknowledged, failed or unanswered) operations so far.
    pub fn outcomes(&self) -> (u64, u64) {
        self.with(|s| (s.acked, s.failed))
    }

    /// The last operation's command and output.
    pub fn last(&self) -> String {
        self.with(|s| s.last.clone())
    }

    /// Waits until more than `after` operations failed or went unanswered
    /// (panics after `timeout`).
    pub fn wait_failure(&self, after: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.outcomes().1 <= after {
            assert!(
                Instant::now() < deadline,
                "no operation of writer {} failed in {timeout:?} (acknowledged, failed: {:?}; last output: {})",
                self.id,
                self.outcomes(),
                self.with(|s| s.last.clone())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops after the operation in progress and closes the session.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.with(|s| {
            s.stop = true;
            s.pause = false;
        });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run(id: u32, mut session: Session, plan: Plan, state: &(Mutex<State>, Condvar)) {
    let (m, cv) = state;
    let mut rng = rand::rngs::StdRng::seed_from_u64(plan.seed ^ (u64::from(id) << 32));
    let mut writes = 0u64;
    let mut last = Target::Current;
    loop {
        let target = {
            let mut s = m.lock().unwrap();
            while s.pause && !s.stop {
                s.idle = true;
                cv.notify_all();
                s = cv.wait(s).unwrap();
            }
            s.idle = false;
            if s.stop {
                break;
            }
            s.target.unwrap_or(Target::Current)
        };
        if target != last {
            // The first operation towards a new kind of engine is a write.
            last = target;
            writes = 1;
        }
        let (ok, text) = if writes > 0 && writes.is_multiple_of(FLUSH_EVERY) {
            writes += 1;
            flush(&mut session, id, &plan)
        } else {
            writes += 1;
            write(
                &mut session,
                id,
                &plan,
                target,
                rng.random_range(0..history::SLOTS),
            )
        };
        {
            let mut s = m.lock().unwrap();
            if ok {
                s.acked += 1;
            } else {
                s.failed += 1;
            }
            s.last = text;
            cv.notify_all();
        }
        // A little room for the rest of a two-core machine; after a
        // failure, no busy loop against a dead connection.
        let pause = if ok { 5 } else { 200 };
        std::thread::sleep(Duration::from_millis(pause));
    }
    drop(session);
    let mut s = m.lock().unwrap();
    s.idle = true;
    cv.notify_all();
}

/// One write: whether it was acknowledged, and the command and its output.
fn write(session: &mut Session, id: u32, plan: &Plan, target: Target, slot: u64) -> (bool, String) {
    let seq = plan.history.lock().unwrap().begin_write(slot, id, target);
    let file = payload_file(&plan.dir, seq);
    std::fs::write(&file, history::block(plan.seed, slot, id, seq)).unwrap();
    let off = history::slot_offset(plan.size, slot);
    let cmd = format!("write {} {off}", file.display());
    let out = session.run(&cmd);
    let _ = std::fs::remove_file(&file);
    let outcome = match &out {
        Some(o) if o.starts_with("wrote 4096 bytes") => Outcome::Acked,
        Some(o) if o.starts_with("write failed") => Outcome::Failed,
        _ => Outcome::Unknown,
    };
    plan.history.lock().unwrap().end_write(seq, outcome);
    (
        outcome == Outcome::Acked,
        format!("{cmd} (seq {seq}): {out:?}"),
    )
}

/// One flush, covering this writer's acknowledged writes: whether it was
/// acknowledged, and its output.
fn flush(session: &mut Session, id: u32, plan: &Plan) -> (bool, String) {
    let covered = plan.history.lock().unwrap().unflushed(id);
    let out = session.run("flush");
    // Only an explicit success counts: a flush without an answer may or
    // may not have happened, and covers nothing.
    let ok = out.as_ref().is_some_and(|o| o.trim_end() == "flushed");
    plan.history.lock().unwrap().end_flush(&covered, ok);
    (ok, format!("flush: {out:?}"))
}

fn payload_file(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("w{seq}"))
}
