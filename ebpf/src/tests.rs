//! The embedded object against the reader's structs (no privileges needed).

use crate::shape::{expected_sizes, shape};
use crate::{ATTACHMENTS, OBJECT};

#[test]
fn embedded_object_has_the_maps_the_reader_expects() {
    let s = shape(OBJECT).expect("parse the embedded object");
    let want = expected_sizes();
    for (name, (k, v)) in &want {
        let m = s
            .maps
            .get(*name)
            .unwrap_or_else(|| panic!("map {name} missing from the object: {:?}", s.maps));
        assert_eq!(
            (m.key_size as usize, m.value_size as usize),
            (*k, *v),
            "key/value size of map {name}"
        );
    }
    assert_eq!(
        s.maps.len(),
        want.len(),
        "maps in the object vs expected: {:?}",
        s.maps.keys().collect::<Vec<_>>()
    );
}

#[test]
fn embedded_object_has_every_attached_program() {
    let s = shape(OBJECT).expect("parse the embedded object");
    for (prog, _, _) in ATTACHMENTS {
        assert_eq!(
            s.programs.get(*prog).map(String::as_str),
            Some("BtfTracePoint"),
            "program {prog}: {:?}",
            s.programs
        );
    }
    assert_eq!(s.programs.len(), ATTACHMENTS.len(), "{:?}", s.programs);
}

#[test]
fn histogram_bounds_are_powers_of_two_microseconds() {
    use crate::Hist;
    assert_eq!(Hist::upper_bound_seconds(0), Some(1e-6));
    assert_eq!(Hist::upper_bound_seconds(10), Some(1024e-6));
    assert_eq!(
        Hist::upper_bound_seconds(crate::layout::HIST_SLOTS - 1),
        None
    );
    let mut h = Hist::default();
    h.slots[3] = 9;
    h.slots[12] = 1;
    assert_eq!(h.quantile_upper_seconds(0.5), Some(8e-6));
    assert_eq!(h.quantile_upper_seconds(1.0), Some(4096e-6));
    // Slot 12 holds 2048..4096 µs: at least 2 ms, not at least 3 ms.
    assert_eq!(h.at_least_seconds(0.002), 1);
    assert_eq!(h.at_least_seconds(0.003), 0);
    assert_eq!(h.at_least_seconds(0.0), 10);
}
