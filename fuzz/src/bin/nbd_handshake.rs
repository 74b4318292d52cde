//! Fuzz target `nbd_handshake`: the body is `vigil_engine::fuzzing`'s (see docs/fuzzing.md).

fn main() {
    let target =
        vigil_engine::fuzzing::target("nbd_handshake").expect("target nbd_handshake exists");
    vigil_engine::fuzzing::prepare();
    afl::fuzz!(|data: &[u8]| {
        (target.run)(data);
    });
}
