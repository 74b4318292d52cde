//! Fuzz target `replica_metadata`: the body is `vigil_engine::fuzzing`'s (see docs/fuzzing.md).

fn main() {
    let target =
        vigil_engine::fuzzing::target("replica_metadata").expect("target replica_metadata exists");
    vigil_engine::fuzzing::prepare();
    afl::fuzz!(|data: &[u8]| {
        (target.run)(data);
    });
}
