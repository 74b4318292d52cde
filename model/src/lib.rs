//! A model of vigil's one-writer and in-sync protocol, checked with
//! `stateright`: two engines (engine `i` on node `i`), three replicas, the
//! store's `epochs/<volume>` and `insync/<volume>`, the nodes' leases, and
//! a network that delivers writes late. Every interleaving of the actions
//! in [`action::Action`] is explored breadth-first to a bounded depth, and
//! the four invariants of issue 18 are checked in every state reached
//! ([`properties`]). `docs/model-check.md` says what is modelled, what is
//! abstracted away and how each action maps to a real function.
//!
//! The crate depends on nothing of ours: it describes the protocol, it
//! does not run it. When the real code changes the rule an action names,
//! change the action here.

pub mod action;
pub mod properties;
pub mod state;
mod step;

use stateright::{Model, Property};

use action::Action;
use state::{ENGINES, Lease, Mode, REPLICAS, Run, State};

/// Bugs the tests plant to show the checker catches them. All off: the
/// protocol as designed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bugs {
    /// (a) A replica accepts an equal epoch from another engine. The real
    /// `Replica::claim` takes an equal epoch as a no-op — sound only
    /// because `Cluster::next_epoch` is a compare-and-swap, so an equal
    /// epoch is the same engine. Planted as that compare missing: two
    /// racing starts both write N + 1, and the replica takes the second
    /// engine's claim as the first's.
    pub equal_epoch_from_other_engine: bool,
    /// (b) The engine acknowledges a write before the smaller in-sync set
    /// is recorded (`wait_membership_recorded` skipped).
    pub ack_before_shrink_recorded: bool,
    /// (c) A rebuild ignores the generation check
    /// (`refuse_newer_generation` skipped).
    pub rebuild_ignores_generation: bool,
}

/// The two changes this model found the real code needed, both now in it
/// (`Cluster::record_in_sync` compares the epoch; `Engine::
/// wait_membership_recorded` fails a write with no RW replica left and
/// `in_sync::record_now` releases nothing on an empty set). Off: the code
/// before them — the suite keeps showing that the checker finds both.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fixes {
    /// The in-sync recorder writes the set only while `epochs/<volume>`
    /// still holds its engine's epoch (one compare in the same
    /// transaction); a superseded engine is fenced instead.
    pub record_checks_epoch: bool,
    /// A record that finds no RW replica left (the set is never recorded
    /// empty, so nothing is written) does not release the writes waiting
    /// for the shrink: they fail instead of being acknowledged.
    pub empty_record_releases_nothing: bool,
}

/// Bounds on the counters, so the state space is finite.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Epochs taken (engine starts and salvages).
    pub epochs: u8,
    /// Client writes.
    pub writes: u8,
    /// In-sync generations.
    pub generations: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            epochs: 3,
            writes: 2,
            generations: 4,
        }
    }
}

/// The model: the protocol with its bugs, fixes and bounds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Protocol {
    pub bugs: Bugs,
    pub fixes: Fixes,
    pub limits: Limits,
}

impl Protocol {
    /// Every action that may be enabled in `s` (the step itself may still
    /// decline, returning no state).
    fn enabled(&self, s: &State, out: &mut Vec<Action>) {
        for i in 0..ENGINES {
            let node = s.nodes[i];
            let e = &s.engines[i];
            let other = &s.engines[1 - i];
            let n = i as u8;
            if !node.frozen {
                // A start needs the store, and the other engine gone: stopped,
                // fenced, or its node's lease expired (attachment recovery).
                let other_gone = !other.alive() || s.nodes[1 - i].lease == Lease::Expired;
                if !e.alive() && s.store_reachable(i) && other_gone {
                    out.push(Action::Start { engine: n });
                    if self.bugs.equal_epoch_from_other_engine {
                        out.push(Action::StartRacing { engine: n });
                    }
                }
                if e.run == Run::Running && e.write.is_none() && s.next_write < self.limits.writes {
                    out.push(Action::Write { engine: n });
                }
                if let Some(w) = e.write {
                    if e.alive() && w.answered() {
                        out.push(Action::Complete { engine: n });
                    }
                    if !w.settled {
                        // The I/O timeout: only where the message cannot
                        // arrive now (a slow replica that answers later is
                        // the same as one cut off and healed after).
                        let waiting = w.sent.minus(w.ok.union(w.failed));
                        for r in waiting.iter().filter(|r| !s.reaches(i, *r)) {
                            out.push(Action::Timeout {
                                engine: n,
                                replica: r as u8,
                            });
                        }
                    }
                }
                if e.alive() {
                    out.push(Action::Record { engine: n });
                    for r in 0..REPLICAS {
                        // A ping that is answered changes nothing.
                        let answered = s.reaches(i, r) && s.replicas[r].epoch <= e.epoch;
                        if matches!(e.slots[r], Mode::ReadWrite | Mode::WriteOnly) && !answered {
                            out.push(Action::Ping {
                                engine: n,
                                replica: r as u8,
                            });
                        }
                    }
                }
                if e.run == Run::Running {
                    for r in 0..REPLICAS {
                        // Only reads the properties look at: by a
                        // superseded engine, from a non-member, or refused.
                        let telling = s.store.takes > e.serial
                            || !s.store.members.has(r)
                            || s.replicas[r].epoch > e.epoch;
                        if e.slots[r] == Mode::ReadWrite && s.reaches(i, r) && telling {
                            out.push(Action::Read {
                                engine: n,
                                replica: r as u8,
                            });
                        }
                        // A rebuild starts and ends with the I/O gate held
                        // exclusively: never with a write in flight.
                        if e.slots[r] == Mode::Error
                            && e.rebuild.is_none()
                            && e.write.is_none()
                            && s.reaches(i, r)
                        {
                            out.push(Action::RebuildStart {
                                engine: n,
                                target: r as u8,
                            });
                        }
                    }
                    if e.rebuild.is_some() && e.write.is_none() {
                        out.push(Action::RebuildFinish { engine: n });
                    }
                }
                if e.run == Run::Fenced || (e.alive() && s.store_reachable(i)) {
                    out.push(Action::Stop { engine: n });
                }
                if e.run == Run::Running && node.lease != Lease::Held {
                    out.push(Action::SelfFence { node: n });
                }
                if e.run == Run::Suspended && s.store_reachable(i) {
                    out.push(Action::Resume { engine: n });
                }
                if node.lease != Lease::Held && !node.isolated {
                    out.push(Action::Renew { node: n });
                }
                out.push(if node.isolated {
                    Action::Heal { node: n }
                } else {
                    Action::Isolate { node: n }
                });
            }
            out.push(if node.frozen {
                Action::Thaw { node: n }
            } else {
                Action::Freeze { node: n }
            });
            if node.lease == Lease::Lost && (e.run != Run::Running || node.frozen) {
                out.push(Action::Expire { node: n });
            }
        }
        for (idx, m) in s.network.iter().enumerate() {
            if s.reaches(m.engine as usize, m.replica as usize) {
                out.push(Action::Deliver { msg: idx as u8 });
            }
            // Lost, once nobody waits for it (a message lost while
            // awaited is a timeout that never arrives late).
            let awaited = s.engines[m.engine as usize].serial == m.serial
                && s.engines[m.engine as usize].write.is_some_and(|w| {
                    w.id == m.write && !w.settled && !w.failed.has(m.replica as usize)
                });
            if !awaited {
                out.push(Action::Drop { msg: idx as u8 });
            }
        }
        for r in 0..REPLICAS {
            let rep = s.replicas[r];
            out.push(if rep.up {
                Action::Fail { replica: r as u8 }
            } else {
                Action::Return { replica: r as u8 }
            });
            // The operator salvages only a volume that does not serve: no
            // engine alive on a node whose lease the store still holds.
            let serving =
                (0..ENGINES).any(|i| s.engines[i].alive() && s.nodes[i].lease != Lease::Expired);
            if !serving && !s.store.members.has(r) && s.reaches(ENGINES, r) {
                out.push(Action::Salvage { replica: r as u8 });
            }
        }
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State::initial()]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        self.enabled(state, actions);
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        self.step(state, action)
    }

    fn within_boundary(&self, state: &State) -> bool {
        state.store.takes <= self.limits.epochs && state.store.generation <= self.limits.generations
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::all()
    }
}

/// Steps the suite explores from the initial state: every state reachable
/// in at most this many actions is checked. `VIGIL_MODEL_DEPTH` overrides
/// it (memory grows about tenfold per two steps: 12 needs a few GiB).
pub const DEFAULT_STEPS: usize = 10;

/// The steps to explore: `VIGIL_MODEL_DEPTH` or [`DEFAULT_STEPS`].
pub fn steps_from_env() -> usize {
    std::env::var("VIGIL_MODEL_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(DEFAULT_STEPS)
}

/// stateright's `target_max_depth` for `steps`: it counts the initial
/// state as depth 1 and does not check states at the target depth itself.
pub fn checker_depth(steps: usize) -> usize {
    steps + 2
}
