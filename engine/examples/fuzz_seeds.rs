//! Writes the seeds of every fuzz target to `<dir>/<target>/seed-NNN`.
//!
//! Usage: `cargo run -p vigil-engine --features fuzzing --example fuzz_seeds -- DIR [TARGET]`

use std::path::PathBuf;
use std::process::ExitCode;

use vigil_engine::fuzzing::{TARGETS, seeds};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: fuzz_seeds DIR [TARGET]");
        return ExitCode::from(2);
    };
    let only = args.next();
    for t in TARGETS {
        if only.as_deref().is_some_and(|o| o != t.name) {
            continue;
        }
        let out = dir.join(t.name);
        if let Err(e) = std::fs::create_dir_all(&out) {
            eprintln!("create {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        let all = seeds(t.name);
        for (i, s) in all.iter().enumerate() {
            let path = out.join(format!("seed-{i:03}"));
            if let Err(e) = std::fs::write(&path, s) {
                eprintln!("write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        println!("{}: {} seeds in {}", t.name, all.len(), out.display());
    }
    vigil_engine::fuzzing::metadata::remove_fixture();
    ExitCode::SUCCESS
}
