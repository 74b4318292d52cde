//! What each action does: `Protocol::next_state`. Every transition
//! mirrors the real function named on its `Action` variant; the comments
//! say where the model abstracts.

use crate::Protocol;
use crate::action::Action;
use crate::state::{
    ENGINES, Engine, Lease, Message, Mode, REPLICAS, Rebuild, Run, Set, State, Write,
};

impl Protocol {
    /// The state after `action`, or `None` when it is not enabled.
    pub(crate) fn step(&self, s: &State, action: Action) -> Option<State> {
        let mut s = s.clone();
        match action {
            Action::Start { engine } => self.start(&mut s, engine as usize, false)?,
            Action::StartRacing { engine } => self.start(&mut s, engine as usize, true)?,
            Action::Write { engine } => write(&mut s, engine as usize)?,
            Action::Deliver { msg } => deliver(&mut s, msg as usize)?,
            Action::Drop { msg } => {
                let m = s.network.remove(msg as usize);
                answer(&mut s, m, Answer::Failed);
            }
            Action::Timeout { engine, replica } => {
                let e = &mut s.engines[engine as usize];
                let w = e.write.as_mut()?;
                w.failed = w.failed.with(replica as usize);
            }
            Action::Complete { engine } => self.complete(&mut s, engine as usize)?,
            Action::Record { engine } => self.record(&mut s, engine as usize)?,
            Action::Ping { engine, replica } => ping(&mut s, engine as usize, replica as usize),
            Action::Read { engine, replica } => read(&mut s, engine as usize, replica as usize),
            Action::RebuildStart { engine, target } => {
                self.rebuild_start(&mut s, engine as usize, target as usize)?
            }
            Action::RebuildFinish { engine } => rebuild_finish(&mut s, engine as usize)?,
            Action::Stop { engine } => {
                // The client's write in flight fails unacknowledged; what it
                // sent may still arrive.
                let e = &mut s.engines[engine as usize];
                *e = Engine {
                    epoch: e.epoch,
                    serial: e.serial,
                    ..Engine::STOPPED
                };
            }
            Action::Salvage { replica } => salvage(&mut s, replica as usize),
            Action::Fail { replica } => s.replicas[replica as usize].up = false,
            Action::Return { replica } => s.replicas[replica as usize].up = true,
            Action::Isolate { node } => {
                let n = &mut s.nodes[node as usize];
                n.isolated = true;
                if n.lease == Lease::Held {
                    n.lease = Lease::Lost;
                }
            }
            Action::Heal { node } => s.nodes[node as usize].isolated = false,
            Action::Freeze { node } => {
                let n = &mut s.nodes[node as usize];
                n.frozen = true;
                if n.lease == Lease::Held {
                    n.lease = Lease::Lost;
                }
            }
            Action::Thaw { node } => s.nodes[node as usize].frozen = false,
            Action::SelfFence { node } => {
                // `Engine::suspend` takes the I/O gate: requests in flight
                // finish first; the model lets their answers arrive later.
                s.engines[node as usize].run = Run::Suspended;
                s.engines[node as usize].rebuild = None;
                abandon_rebuild(&mut s.engines[node as usize]);
            }
            Action::Expire { node } => s.nodes[node as usize].lease = Lease::Expired,
            Action::Renew { node } => s.nodes[node as usize].lease = Lease::Held,
            Action::Resume { engine } => {
                let e = &mut s.engines[engine as usize];
                // `resume_owned` compares the epoch number only.
                e.run = if s.store.epoch == e.epoch {
                    Run::Running
                } else {
                    Run::Fenced
                };
            }
        }
        normalize(&mut s);
        Some(s)
    }

    /// `open_engine`: epoch, in-sync set, claims, start, first record.
    fn start(&self, s: &mut State, i: usize, racing: bool) -> Option<()> {
        let epoch = if racing {
            // Both starts read epoch N and wrote N + 1 without a compare:
            // this one gets the number the other engine got.
            if !self.bugs.equal_epoch_from_other_engine
                || s.store.last_taker as usize == i
                || s.store.epoch == 0
            {
                return None;
            }
            s.store.epoch
        } else {
            s.store.epoch + 1
        };
        let other = &s.engines[1 - i];
        if other.alive() {
            s.ghost.takeover = true;
        }
        s.store.epoch = epoch;
        s.store.takes += 1;
        s.store.last_taker = i as u8;
        let serial = s.store.takes;
        let members = s.store.members;
        let mut e = Engine {
            run: Run::Running,
            epoch,
            serial,
            ..Engine::STOPPED
        };
        for r in 0..REPLICAS {
            e.slots[r] = if !members.has(r) || !s.reaches(i, r) {
                // Not a member: opened as ERR `stale`, rebuilt later.
                // A member that does not answer: ERR too.
                Mode::Error
            } else if s.replicas[r].epoch > epoch {
                // `Replica::claim` refuses a lower epoch: the start fails.
                return None;
            } else {
                claim(s, r, epoch, serial);
                Mode::ReadWrite
            };
        }
        let rw = e.in_mode(Mode::ReadWrite);
        if rw.is_empty() {
            // No member answers: the volume waits (or needs salvage).
            return None;
        }
        if !rw.subset_of(members) {
            s.ghost.served_outside_set = true;
        }
        // The generation it starts with: the newest its replicas report.
        e.generation = rw
            .iter()
            .map(|r| s.replicas[r].generation)
            .max()
            .unwrap_or(0);
        s.engines[i] = e;
        // `record_now` before the engine serves.
        self.record_members(s, i);
        Some(())
    }

    /// `Action::Complete`: act on every answer of the write in flight.
    fn complete(&self, s: &mut State, i: usize) -> Option<()> {
        let e = &mut s.engines[i];
        let mut w = e.write?;
        if !w.answered() {
            return None;
        }
        if w.refused {
            // `fence_for_newer`: every request fails from now on.
            e.run = Run::Fenced;
            e.write = None;
            s.ghost.fenced_by_refusal = true;
            return Some(());
        }
        if !w.settled {
            for r in w.failed.iter() {
                fail_slot(e, r);
            }
            // Only RW replicas count towards the acknowledgement.
            w.ok = w.ok.minus(w.failed).intersect(e.in_mode(Mode::ReadWrite));
            w.settled = true;
            if w.ok.is_empty() {
                // No RW replica took it: an I/O error, nothing acknowledged.
                e.write = None;
                return Some(());
            }
        } else if e.unrecorded_shrink {
            return None;
        }
        if e.unrecorded_shrink && !self.bugs.ack_before_shrink_recorded {
            // `wait_membership_recorded`: held until `Record`.
            e.write = Some(w);
            return Some(());
        }
        s.acked = s.acked.with(w.id as usize);
        e.write = None;
        Some(())
    }

    /// `Action::Record`: the recorder writes the engine's RW set.
    fn record(&self, s: &mut State, i: usize) -> Option<()> {
        let e = &s.engines[i];
        if !e.alive()
            || !s.store_reachable(i)
            || (!e.unrecorded_shrink && e.unrecorded_joins.is_empty())
        {
            return None;
        }
        if self.fixes.record_checks_epoch && s.store.epoch != e.epoch {
            // The fix this model suggests: a superseded engine's recorder
            // finds a newer epoch and fences the engine instead.
            s.engines[i].run = Run::Fenced;
            return Some(());
        }
        self.record_members(s, i);
        Some(())
    }

    /// `record_now` → `Cluster::record_in_sync` → `Engine::join_generation`.
    fn record_members(&self, s: &mut State, i: usize) {
        let rw = s.engines[i].in_mode(Mode::ReadWrite);
        // Never recorded empty; the same set is a no-op.
        if !rw.is_empty() && rw != s.store.members {
            s.store.members = rw;
            s.store.generation += 1;
        }
        if rw.is_empty() && self.fixes.empty_record_releases_nothing {
            // Nothing recorded: a write waiting for the shrink fails.
            let e = &mut s.engines[i];
            if e.write.is_some_and(|w| w.settled) {
                e.write = None;
            }
        }
        let generation = s.store.generation;
        let e = &mut s.engines[i];
        e.unrecorded_shrink = false;
        e.unrecorded_joins = Set::EMPTY;
        e.generation = e.generation.max(generation);
        if generation < e.generation {
            return;
        }
        // Each RW member persists the generation, admitted under the
        // engine's epoch; one that does not answer goes ERR, a refusal
        // fences.
        for r in rw.iter() {
            if !s.reaches(i, r) {
                fail_slot(&mut s.engines[i], r);
            } else if s.replicas[r].epoch > s.engines[i].epoch {
                s.engines[i].run = Run::Fenced;
                s.ghost.fenced_by_refusal = true;
                return;
            } else {
                s.replicas[r].generation = generation;
            }
        }
    }

    /// `start_rebuild`: claim, generation check, add WO.
    fn rebuild_start(&self, s: &mut State, i: usize, t: usize) -> Option<()> {
        let (epoch, serial, generation) = {
            let e = &s.engines[i];
            (e.epoch, e.serial, e.generation)
        };
        if s.replicas[t].epoch > epoch {
            // The claim is refused: a newer engine owns the target.
            s.engines[i].run = Run::Fenced;
            s.ghost.fenced_by_refusal = true;
            return Some(());
        }
        claim(s, t, epoch, serial);
        if s.replicas[t].generation > generation && !self.bugs.rebuild_ignores_generation {
            // `refuse_newer_generation`: the target stays untouched (ERR).
            return None;
        }
        let e = &mut s.engines[i];
        let rw = e.in_mode(Mode::ReadWrite);
        // The real source prefers the local replica.
        let source = if rw.has(i) { i } else { rw.iter().next()? };
        e.slots[t] = Mode::WriteOnly;
        e.rebuild = Some(Rebuild {
            target: t as u8,
            source: source as u8,
        });
        Some(())
    }
}

/// `Replica::claim`: persist the higher epoch.
fn claim(s: &mut State, r: usize, epoch: u8, serial: u8) {
    let rep = &mut s.replicas[r];
    rep.epoch = rep.epoch.max(epoch);
    rep.claimed_serial = rep.claimed_serial.max(serial);
}

/// `Engine::fail`: the slot goes ERR; leaving RW is a shrink the recorder
/// must write down before anything more is acknowledged.
fn fail_slot(e: &mut Engine, r: usize) {
    if e.slots[r] == Mode::ReadWrite {
        e.unrecorded_shrink = true;
    }
    if e.slots[r] != Mode::Absent {
        e.slots[r] = Mode::Error;
    }
    e.unrecorded_joins = e.unrecorded_joins.without(r);
}

/// A rebuild whose target or source left its mode fails: the target ERR.
fn abandon_rebuild(e: &mut Engine) {
    for r in 0..REPLICAS {
        if e.slots[r] == Mode::WriteOnly && e.rebuild.is_none() {
            e.slots[r] = Mode::Error;
        }
    }
}

fn normalize(s: &mut State) {
    for e in s.engines.iter_mut() {
        if let Some(rb) = e.rebuild
            && (e.run != Run::Running
                || e.slots[rb.target as usize] != Mode::WriteOnly
                || e.slots[rb.source as usize] != Mode::ReadWrite)
        {
            e.rebuild = None;
        }
        abandon_rebuild(e);
        if e.run == Run::Fenced {
            e.write = None;
        }
    }
    s.network.sort();
}

/// `Engine::write`: one message per RW and WO replica.
fn write(s: &mut State, i: usize) -> Option<()> {
    let id = s.next_write;
    s.next_write += 1;
    let e = &mut s.engines[i];
    let targets = e.in_mode(Mode::ReadWrite).union(e.in_mode(Mode::WriteOnly));
    e.write = Some(Write {
        id,
        sent: targets,
        ok: Set::EMPTY,
        failed: Set::EMPTY,
        refused: false,
        settled: false,
    });
    for r in targets.iter() {
        s.network.push(Message {
            engine: i as u8,
            epoch: e.epoch,
            serial: e.serial,
            replica: r as u8,
            write: id,
        });
    }
    Some(())
}

enum Answer {
    Ok,
    Failed,
    Refused,
}

/// The replica's answer reaches the engine, if it still waits for it.
fn answer(s: &mut State, m: Message, a: Answer) {
    let e = &mut s.engines[m.engine as usize];
    if e.serial != m.serial {
        return;
    }
    let Some(w) = e.write.as_mut() else { return };
    if w.id != m.write || w.settled || w.failed.has(m.replica as usize) {
        return;
    }
    let r = m.replica as usize;
    match a {
        Answer::Ok => w.ok = w.ok.with(r),
        Answer::Failed => w.failed = w.failed.with(r),
        Answer::Refused => w.refused = true,
    }
}

/// A replica server takes a write: `Replica::admit`, then it lands.
fn deliver(s: &mut State, idx: usize) -> Option<()> {
    let m = s.network[idx];
    let r = m.replica as usize;
    if !s.reaches(m.engine as usize, r) {
        return None;
    }
    s.network.remove(idx);
    let rep = &mut s.replicas[r];
    if rep.epoch > m.epoch {
        answer(s, m, Answer::Refused);
        return Some(());
    }
    if m.serial < rep.claimed_serial {
        s.ghost.stale_write_accepted = true;
    }
    rep.writes = rep.writes.with(m.write as usize);
    answer(s, m, Answer::Ok);
    Some(())
}

/// `ping_all`: no answer → ERR; a refusal → fenced.
fn ping(s: &mut State, i: usize, r: usize) {
    if !s.reaches(i, r) {
        fail_slot(&mut s.engines[i], r);
    } else if s.replicas[r].epoch > s.engines[i].epoch {
        s.engines[i].run = Run::Fenced;
        s.ghost.fenced_by_refusal = true;
    }
}

/// A read from an RW replica: admitted, or a refusal fences.
fn read(s: &mut State, i: usize, r: usize) {
    let e = &s.engines[i];
    if s.replicas[r].epoch > e.epoch {
        s.engines[i].run = Run::Fenced;
        s.ghost.fenced_by_refusal = true;
        return;
    }
    let superseded = s.store.takes > e.serial;
    if superseded {
        s.ghost.superseded_read = true;
    } else if !s.store.members.has(r) && !e.unrecorded_joins.has(r) {
        s.ghost.served_outside_set = true;
    }
}

/// The copy and install: the target's chain becomes the source's.
fn rebuild_finish(s: &mut State, i: usize) -> Option<()> {
    let e = &s.engines[i];
    let rb = e.rebuild?;
    let (t, src) = (rb.target as usize, rb.source as usize);
    if !s.reaches(i, t) || !s.reaches(i, src) {
        return None;
    }
    if s.replicas[t].epoch > e.epoch || s.replicas[src].epoch > e.epoch {
        s.engines[i].run = Run::Fenced;
        s.ghost.fenced_by_refusal = true;
        return Some(());
    }
    // Older over newer: the target joined a generation the engine (whose
    // data the source holds) never knew, or it holds an acknowledged write
    // the source lacks — the install would destroy it.
    if s.replicas[t].generation > e.generation
        || !s
            .owed()
            .intersect(s.replicas[t].writes)
            .minus(s.replicas[src].writes)
            .is_empty()
    {
        s.ghost.rebuild_over_newer = true;
    }
    if e.serial < s.replicas[t].claimed_serial {
        s.ghost.stale_write_accepted = true;
    }
    // Everything the target held is replaced by the source's chain; the
    // writes it took as WO are on the source too (else the source failed
    // and the rebuild with it).
    s.replicas[t].writes = s.replicas[src].writes;
    let e = &mut s.engines[i];
    e.slots[t] = Mode::ReadWrite;
    e.unrecorded_joins = e.unrecorded_joins.with(t);
    e.rebuild = None;
    s.ghost.rebuilt = true;
    Some(())
}

/// The operator's accept-loss salvage of replica `r`.
fn salvage(s: &mut State, r: usize) {
    s.store.epoch += 1;
    s.store.takes += 1;
    s.store.last_taker = ENGINES as u8;
    let (epoch, serial) = (s.store.epoch, s.store.takes);
    let mut highest = s.store.generation;
    for q in 0..REPLICAS {
        if s.reaches(ENGINES, q) {
            claim(s, q, epoch, serial);
            highest = highest.max(s.replicas[q].generation);
        }
    }
    s.store.members = Set::EMPTY.with(r);
    s.store.generation = highest + 1;
    s.ghost.given_up = s.ghost.given_up.union(s.acked.minus(s.replicas[r].writes));
    s.ghost.salvaged = true;
}
