//! Fuzz target `nbd_transmission`: the body is `vigil_engine::fuzzing`'s (see docs/fuzzing.md).

fn main() {
    let target =
        vigil_engine::fuzzing::target("nbd_transmission").expect("target nbd_transmission exists");
    vigil_engine::fuzzing::prepare();
    afl::fuzz!(|data: &[u8]| {
        (target.run)(data);
    });
}
