//! The real NBD clients, run as processes. A missing tool fails the test
//! with the package to install; it never skips.

use std::path::Path;
use std::process::Command;

/// Runs `tool args`, asserting success; returns stdout.
pub fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {tool}: {e} (install it: the test script apt-installs qemu-utils, libnbd-bin, fio)")
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `tool args`; returns (success, stdout+stderr).
pub fn try_run(tool: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Writes `len` bytes of seeded pseudo-random data to `path`.
pub fn random_file(path: &Path, len: usize, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut buf = vec![0u8; len];
    rng.fill_bytes(&mut buf);
    std::fs::write(path, buf).unwrap();
}

/// `qemu-img convert -n` a raw file into an NBD URI.
pub fn qemu_write(file: &Path, uri: &str) {
    run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            file.to_str().unwrap(),
            uri,
        ],
    );
}

/// `qemu-img compare` a raw file with an NBD URI (same size); true if equal.
pub fn qemu_equal(file: &Path, uri: &str) -> bool {
    let (ok, text) = try_run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            file.to_str().unwrap(),
            uri,
        ],
    );
    if !ok {
        eprintln!("qemu-img compare: {text}");
    }
    ok
}

/// Writes 4 KiB blocks and flushes through NBD with qemu-io, in a loop on
/// a thread, until stopped (or dropped): load for tests that need an
/// engine busy writing while something else happens.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Writer {
    /// Starts writing to `endpoint` (an `nbd://` URI); each round is eight
    /// writes and a flush in one qemu-io run. Failed rounds are ignored:
    /// the tests using it inject faults on purpose.
    pub fn start(endpoint: &str) -> Writer {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let endpoint = endpoint.to_string();
        let thread = std::thread::spawn(move || {
            let mut round = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let mut args = vec!["-f".to_string(), "raw".to_string()];
                for i in 0..8u64 {
                    let off = ((round * 8 + i) % 4096) * 4096;
                    args.push("-c".into());
                    args.push(format!("write -P {} {off} 4k", (round % 250) + 1));
                }
                args.push("-c".into());
                args.push("flush".into());
                args.push(endpoint.clone());
                let _ = Command::new("qemu-io").args(&args).output();
                round += 1;
            }
            round
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops after the round in progress; returns the rounds run.
    pub fn stop(mut self) -> u64 {
        self.halt()
    }

    fn halt(&mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A qemu-io session kept open on `uri`, fed commands over time: one NBD
/// connection whose requests may be queued while its server is frozen.
pub struct QemuIoSession {
    child: std::process::Child,
}

impl QemuIoSession {
    /// Starts `qemu-io -f raw URI` reading commands from a pipe.
    pub fn open(uri: &str) -> QemuIoSession {
        let child = Command::new("qemu-io")
            .args(["-f", "raw", uri])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run qemu-io: {e} (install qemu-utils)"));
        QemuIoSession { child }
    }

    /// Sends one command, then gives it 700 ms to run before the test's
    /// next step.
    pub fn send(&mut self, cmd: &str) {
        use std::io::Write;
        if let Some(stdin) = self.child.stdin.as_mut() {
            let sent = writeln!(stdin, "{cmd}").and_then(|()| stdin.flush());
            assert!(sent.is_ok(), "qemu-io exited before {cmd:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(700));
    }

    /// Closes its input and returns everything it printed.
    pub fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let out = match self.child.wait_with_output() {
            Ok(out) => out,
            Err(e) => panic!("qemu-io: {e}"),
        };
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        text
    }
}
