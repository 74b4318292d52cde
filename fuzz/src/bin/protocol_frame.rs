//! Fuzz target `protocol_frame`: the body is `vigil_engine::fuzzing`'s (see docs/fuzzing.md).

fn main() {
    let target =
        vigil_engine::fuzzing::target("protocol_frame").expect("target protocol_frame exists");
    vigil_engine::fuzzing::prepare();
    afl::fuzz!(|data: &[u8]| {
        (target.run)(data);
    });
}
