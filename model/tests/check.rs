//! The model checked breadth-first: the protocol with the fix the model
//! suggests holds every invariant to the depth explored; the code as it is
//! does not (a superseded engine's in-sync recorder); each planted bug is
//! caught by the property it breaks. Every run prints the states explored
//! and the depth, and every counterexample its path.

use std::time::Instant;

use stateright::{Checker, HasDiscoveries, Model};
use vigil_model_check::properties::{
    ACKED_ON_MEMBERS, INVARIANTS, ONE_WRITER, REBUILD_NEWER_WINS, SERVES_FROM_SET,
};
use vigil_model_check::{Bugs, Fixes, Limits, Protocol, checker_depth, steps_from_env};

/// The protocol as designed, with the fix the model suggests.
fn fixed() -> Protocol {
    Protocol {
        fixes: Fixes {
            record_checks_epoch: true,
            empty_record_releases_nothing: true,
        },
        ..Protocol::default()
    }
}

/// Limits for a hunt: fewer writes keep the breadth-first search small
/// enough to reach the depth of the counterexample.
fn hunt_limits(writes: u8) -> Limits {
    Limits {
        writes,
        ..Limits::default()
    }
}

/// Checks every state within `steps` actions of the start (stopping early
/// once any of `stop_at` is found).
fn explore(p: Protocol, steps: usize, stop_at: &[&'static str]) -> impl Checker<Protocol> {
    let started = Instant::now();
    let mut builder = p
        .checker()
        .threads(2)
        .target_max_depth(checker_depth(steps));
    if !stop_at.is_empty() {
        builder = builder.finish_when(HasDiscoveries::AnyOf(stop_at.iter().copied().collect()));
    }
    let checker = builder.spawn_bfs().join();
    println!(
        "{p:?}\n  {steps} steps: {} states generated, {} unique, {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        started.elapsed().as_secs_f64()
    );
    checker
}

/// Asserts the checker found a counterexample to `property`, prints it.
fn expect_counterexample(checker: &impl Checker<Protocol>, property: &'static str) {
    let Some(path) = checker.discovery(property) else {
        panic!("no counterexample to \"{property}\" within the bound");
    };
    println!(
        "counterexample to \"{property}\" ({} steps):",
        path.clone().into_actions().len()
    );
    for action in path.clone().into_actions() {
        println!("  {action:?}");
    }
    println!("  last state: {:?}", path.last_state());
}

#[test]
fn protocol_holds_every_invariant() {
    // Every `always` property holds in every state within the depth, and
    // every `sometimes` is reached: writes are acknowledged, takeovers,
    // fences, rebuilds and salvages happen.
    let checker = explore(fixed(), steps_from_env(), &[]);
    checker.assert_properties();
}

#[test]
fn finding_superseded_recorder_overwrites_the_in_sync_set() {
    // The code as it is: `record_in_sync` compares the in-sync object's
    // revision but not the volume's epoch, and the recorder
    // (`keep_recorded`) runs on while its engine is suspended. A node cut
    // off long enough for a takeover marks the replicas it cannot reach
    // ERR; once it can write the store again, its recorder replaces the
    // newer engine's set with its own replica before `resume_owned` fences
    // it.
    let p = Protocol {
        limits: hunt_limits(0),
        ..Protocol::default()
    };
    let checker = explore(p, 10, &[SERVES_FROM_SET, ACKED_ON_MEMBERS]);
    expect_counterexample(&checker, SERVES_FROM_SET);
}

#[test]
fn finding_a_write_waiting_for_a_shrink_is_acknowledged_after_its_last_replica_failed() {
    // The code as it is: a write taken only by replica 0 waits for a
    // shrink to be recorded; replica 0 fails too; `record_now` finds no RW
    // replica, `record_in_sync` records nothing (never an empty set), and
    // `membership_recorded` releases the write, which is acknowledged —
    // while the recorded set still names a replica that lacks it.
    let p = Protocol {
        fixes: Fixes {
            record_checks_epoch: true,
            ..Fixes::default()
        },
        limits: Limits {
            epochs: 1,
            writes: 1,
            ..Limits::default()
        },
        ..Protocol::default()
    };
    let checker = explore(p, 11, &[ACKED_ON_MEMBERS]);
    expect_counterexample(&checker, ACKED_ON_MEMBERS);
    // With the second fix the same space is clean.
    let checker = explore(
        Protocol {
            limits: p.limits,
            ..fixed()
        },
        11,
        &[],
    );
    assert!(checker.discovery(ACKED_ON_MEMBERS).is_none());
}

#[test]
fn planted_equal_epoch_from_another_engine_is_caught() {
    let p = Protocol {
        bugs: Bugs {
            equal_epoch_from_other_engine: true,
            ..Bugs::default()
        },
        limits: hunt_limits(1),
        ..fixed()
    };
    let checker = explore(p, 8, &[ONE_WRITER]);
    expect_counterexample(&checker, ONE_WRITER);
}

#[test]
fn planted_ack_before_shrink_recorded_is_caught() {
    let p = Protocol {
        bugs: Bugs {
            ack_before_shrink_recorded: true,
            ..Bugs::default()
        },
        limits: hunt_limits(1),
        ..fixed()
    };
    let checker = explore(p, 8, &[ACKED_ON_MEMBERS]);
    expect_counterexample(&checker, ACKED_ON_MEMBERS);
}

#[test]
fn planted_rebuild_ignoring_generation_is_caught() {
    // The generation rule is what stops this rebuild: on the code as it
    // is, a superseded engine's recorder can make its own replica the
    // member of a generation the newer engine never heard of (see the
    // finding above); without the rule, the newer engine rebuilds over it.
    let p = Protocol {
        bugs: Bugs {
            rebuild_ignores_generation: true,
            ..Bugs::default()
        },
        limits: hunt_limits(0),
        ..Protocol::default()
    };
    let checker = explore(p, 11, &[REBUILD_NEWER_WINS]);
    expect_counterexample(&checker, REBUILD_NEWER_WINS);
}

#[test]
fn generation_rule_holds_on_the_code_as_it_is() {
    // The same search without the planted bug: the rule holds even where
    // the in-sync set went wrong.
    let p = Protocol {
        limits: hunt_limits(0),
        ..Protocol::default()
    };
    let checker = explore(p, 11, &[]);
    assert!(checker.is_done());
    assert!(checker.discovery(REBUILD_NEWER_WINS).is_none());
    assert!(checker.discovery(ONE_WRITER).is_none());
    assert_eq!(INVARIANTS.len(), 4);
}
