//! The committed object matches its source: rebuilt with the pinned clang
//! (clang-14, as tests/run.sh installs), it has the same programs and the
//! same maps (type, key and value sizes, capacity) as the object embedded
//! in the crate. Bytes are not compared: clang records the build directory
//! in the debug info, so two checkouts never produce identical files.

use std::path::Path;
use std::process::Command;

use vigil_ebpf::shape::shape;

const CLANG: &str = "clang-14";

#[test]
fn committed_object_matches_a_rebuild_from_source() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("bpf/vigil.bpf.c");
    let out = tempfile_path();
    let status = Command::new(CLANG)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!("run {CLANG} (install clang-14 llvm-14 libbpf-dev; tests/run.sh does): {e}")
        });
    assert!(status.success(), "{CLANG} failed on {}", src.display());
    let rebuilt = std::fs::read(&out).expect("read the rebuilt object");
    let _ = std::fs::remove_file(&out);
    let fresh = shape(&rebuilt).expect("parse the rebuilt object");
    let committed = shape(vigil_ebpf::OBJECT).expect("parse the committed object");
    assert_eq!(
        fresh, committed,
        "bpf/vigil.bpf.o is out of date: rebuild it with the command at the top of bpf/vigil.bpf.c"
    );
}

fn tempfile_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vigil-bpf-rebuild-{}.o", std::process::id()))
}
