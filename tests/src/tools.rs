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
