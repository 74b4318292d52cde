//! Runs the checker over the protocol as designed and with each planted bug.

use std::time::Instant;

use stateright::{Checker, Model};
use vigil_model_check::{Protocol, depth_from_env};

#[test]
fn explore() {
    let depth = depth_from_env();
    let started = Instant::now();
    let checker = Protocol::default()
        .checker()
        .threads(2)
        .target_max_depth(depth)
        .spawn_bfs()
        .join();
    println!(
        "depth {depth}: {} states, {} unique, max depth {}, {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed().as_secs_f64()
    );
    for (name, path) in checker.discoveries() {
        println!("== {name}\n{path}");
    }
}
