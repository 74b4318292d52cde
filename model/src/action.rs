//! The nondeterministic steps, each named for the real code it stands for.

/// One step of some component or of the environment.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Action {
    /// `controller/volumes.rs::open_engine` on node `engine`: take the next
    /// epoch (`Cluster::next_epoch`), read the in-sync set, open and claim
    /// every reachable member (`Agent::open_backend` → `Replica::claim`),
    /// start (`Engine::start`), record the RW set before serving
    /// (`controller/in_sync.rs::record_now`) and have the members persist
    /// its generation (branch `gen`: `Engine::join_generation`).
    Start { engine: u8 },
    /// The planted race of `Bugs::equal_epoch_from_other_engine`: a start
    /// whose `next_epoch` lost the compare yet took the epoch the other
    /// engine took last.
    StartRacing { engine: u8 },
    /// `Engine::write` (`engine/io.rs`): send the client's next write to
    /// every RW and WO replica.
    Write { engine: u8 },
    /// A replica server receives a write: `Replica::admit` under the
    /// message's epoch, then the write lands.
    Deliver { msg: u8 },
    /// A message is lost (connection reset).
    Drop { msg: u8 },
    /// The engine stops waiting for a replica's answer (the 8 s I/O
    /// timeout); the message may still arrive later.
    Timeout { engine: u8, replica: u8 },
    /// Every answer is in: a refusal fences the engine
    /// (`fence_for_newer`); failures mark slots ERR (`Engine::fail`, a
    /// shrink); the write is acknowledged when at least one RW replica took
    /// it and no shrink is unrecorded (`wait_membership_recorded`).
    Complete { engine: u8 },
    /// `controller/in_sync.rs::keep_recorded` → `record_now` →
    /// `Cluster::record_in_sync`: the engine's RW set becomes the in-sync
    /// set (a new generation if it differs), then its members persist the
    /// generation (`Engine::join_generation`).
    Record { engine: u8 },
    /// `engine/monitor.rs::ping_all`: a slot whose replica does not answer
    /// goes ERR; one that refuses for a newer epoch fences the engine.
    Ping { engine: u8, replica: u8 },
    /// A read served from an RW replica (`Engine::read`).
    Read { engine: u8, replica: u8 },
    /// `engine/rebuild.rs::start_rebuild`: claim the target, refuse a
    /// target of a newer generation (branch `gen`:
    /// `Engine::refuse_newer_generation`), add it WO.
    RebuildStart { engine: u8, target: u8 },
    /// `copy_chain` + install + `switch_to_rw`: the target's chain becomes
    /// the source's, and it turns RW (a growth, recorded later).
    RebuildFinish { engine: u8 },
    /// Volume detach, or the agent stopping a fenced engine.
    Stop { engine: u8 },
    /// `api/salvage.rs::salvage` with `--accept-data-loss`, as branch `gen`
    /// designs it: take an epoch, probe (and so claim) the reachable
    /// replicas for their generations, record `{replica}` as the only
    /// member numbered above all of them.
    Salvage { replica: u8 },
    /// A replica's process or disk stops answering (its data stays).
    Fail { replica: u8 },
    /// It answers again, with the data it had.
    Return { replica: u8 },
    /// The node is cut off from the store and the other nodes; it stops
    /// renewing its lease.
    Isolate { node: u8 },
    /// The partition heals.
    Heal { node: u8 },
    /// SIGSTOP: the agent takes no step and renews nothing.
    Freeze { node: u8 },
    /// SIGCONT.
    Thaw { node: u8 },
    /// `controller/lease_fence.rs::run` at TTL − 3 s: every engine of the
    /// node is suspended (`Engine::suspend`).
    SelfFence { node: u8 },
    /// The store lets the node's liveness key expire — never before the
    /// node self-fenced, unless it was frozen (it could not).
    Expire { node: u8 },
    /// A lease renewal (or a new grant) succeeds.
    Renew { node: u8 },
    /// `lease_fence.rs::resume_owned`: a suspended engine resumes if
    /// `epochs/<volume>` still holds its epoch, else it is fenced.
    Resume { engine: u8 },
}
