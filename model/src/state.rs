//! The model's state: what the store, the nodes, the engines, the replicas
//! and the network hold at one instant. Everything is small and `Copy` so
//! the checker can hash and store millions of states.

/// Engines in the model: engine `i` runs on node `i`.
pub const ENGINES: usize = 2;
/// Replicas in the model: replica `r` lives on node `r`; node 2 runs no
/// engine and is never frozen or cut off (the third, healthy node).
pub const REPLICAS: usize = 3;

/// A set of small indices (replicas, or write ids) as a bit mask.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Set(pub u8);

impl Set {
    /// The empty set.
    pub const EMPTY: Set = Set(0);

    /// The set of every index below `n`.
    pub fn all(n: usize) -> Set {
        Set(((1u16 << n) - 1) as u8)
    }

    /// Whether `i` is in the set.
    pub fn has(self, i: usize) -> bool {
        self.0 & (1 << i) != 0
    }

    /// The set with `i` added.
    pub fn with(self, i: usize) -> Set {
        Set(self.0 | (1 << i))
    }

    /// The set with `i` removed.
    pub fn without(self, i: usize) -> Set {
        Set(self.0 & !(1 << i))
    }

    /// Union.
    pub fn union(self, other: Set) -> Set {
        Set(self.0 | other.0)
    }

    /// Intersection.
    pub fn intersect(self, other: Set) -> Set {
        Set(self.0 & other.0)
    }

    /// Difference: what `self` has and `other` lacks.
    pub fn minus(self, other: Set) -> Set {
        Set(self.0 & !other.0)
    }

    /// Whether every element of `self` is in `other`.
    pub fn subset_of(self, other: Set) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The elements, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..8).filter(move |i| self.has(*i))
    }
}

/// The store (`epochs/<volume>` and `insync/<volume>`; the embedded store
/// or etcd: every change below is one compare-and-swap).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Store {
    /// `epochs/<volume>`: the last epoch taken (`Cluster::next_epoch`).
    pub epoch: u8,
    /// Ghost: how many epochs were taken. Equal to `epoch` while
    /// `next_epoch` is a compare-and-swap; it orders engine starts even
    /// when a planted bug lets two starts share an epoch number.
    pub takes: u8,
    /// Ghost: which engine took the last epoch (for the planted race).
    pub last_taker: u8,
    /// `insync/<volume>` members (`model/insync.rs`, `InSync::members`).
    pub members: Set,
    /// `insync/<volume>` generation (`InSync::generation`).
    pub generation: u8,
}

/// A node's liveness lease, as the store and the node itself see it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Lease {
    /// Renewed in time.
    Held,
    /// Not renewed: the node will self-fence at TTL − 3 s
    /// (`controller/lease_fence.rs`), the store still holds the key.
    Lost,
    /// The store let the key expire: another node may take over.
    Expired,
}

/// One of the two nodes that run engines.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Node {
    pub lease: Lease,
    /// Cut off from the store and every other node (a full isolation
    /// nemesis); its own replica is reachable only from itself.
    pub isolated: bool,
    /// SIGSTOP: the agent takes no step, its replica server answers nothing.
    pub frozen: bool,
}

/// An engine's run state (`Engine` + the agent's view of it).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Run {
    /// No engine (never started, detached, or stopped after a fence).
    Stopped,
    /// Serving.
    Running,
    /// `Engine::suspend` on lease loss: no client request reaches a replica.
    Suspended,
    /// Refused by a replica for a newer epoch, or `Engine::fence`: every
    /// request fails from now on.
    Fenced,
}

/// A replica slot's mode in an engine (`engine/src/engine/mode.rs`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Mode {
    /// Not part of this engine.
    Absent,
    ReadWrite,
    /// Being rebuilt: receives writes, serves no reads.
    WriteOnly,
    /// Failed, timed out, or started out as not in sync (`stale`).
    Error,
}

/// The one client write an engine has in flight.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Write {
    /// The write's id (a bit in `Replica::writes`).
    pub id: u8,
    /// Replicas it was sent to (RW and WO slots).
    pub sent: Set,
    /// Replicas that took it.
    pub ok: Set,
    /// Replicas that failed or timed out.
    pub failed: Set,
    /// A replica refused it for a newer epoch.
    pub refused: bool,
    /// Its answers were acted on (failed slots ERR); it waits only for the
    /// smaller in-sync set to be recorded.
    pub settled: bool,
}

impl Write {
    /// Every replica it was sent to answered.
    pub fn answered(&self) -> bool {
        self.sent.subset_of(self.ok.union(self.failed)) || self.refused
    }
}

/// A rebuild in progress: `target` is WO, copying from `source`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Rebuild {
    pub target: u8,
    pub source: u8,
}

/// One engine of the volume.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Engine {
    pub run: Run,
    /// The epoch it took at start.
    pub epoch: u8,
    /// Ghost: the order of its start among all epoch takes.
    pub serial: u8,
    /// The newest in-sync generation it knows (`Engine::generation`).
    pub generation: u8,
    pub slots: [Mode; REPLICAS],
    /// A replica left RW and the smaller set is not recorded yet
    /// (`Membership::shrinks` ahead of `recorded`, `engine/insync.rs`).
    pub unrecorded_shrink: bool,
    /// Replicas that turned RW through this engine's rebuild and are not
    /// recorded as members yet (nothing waits for those).
    pub unrecorded_joins: Set,
    pub write: Option<Write>,
    pub rebuild: Option<Rebuild>,
}

impl Engine {
    /// An engine that was never started.
    pub const STOPPED: Engine = Engine {
        run: Run::Stopped,
        epoch: 0,
        serial: 0,
        generation: 0,
        slots: [Mode::Absent; REPLICAS],
        unrecorded_shrink: false,
        unrecorded_joins: Set::EMPTY,
        write: None,
        rebuild: None,
    };

    /// The slots in `mode`.
    pub fn in_mode(&self, mode: Mode) -> Set {
        (0..REPLICAS)
            .filter(|r| self.slots[*r] == mode)
            .fold(Set::EMPTY, Set::with)
    }

    /// Whether the engine can still act on replicas (not stopped, not fenced).
    pub fn alive(&self) -> bool {
        matches!(self.run, Run::Running | Run::Suspended)
    }
}

/// One replica (`engine/src/replica`): what it persisted.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Replica {
    /// The replica's process and disk answer.
    pub up: bool,
    /// The highest epoch that claimed it (`state.rs`, `Record::epoch`).
    pub epoch: u8,
    /// Ghost: the highest start serial that claimed it.
    pub claimed_serial: u8,
    /// The in-sync generation it last joined (branch `gen`:
    /// `Replica::join_generation`).
    pub generation: u8,
    /// The writes it holds (abstract data: write ids).
    pub writes: Set,
}

/// A write on its way from an engine to a replica (TCP buffers, a
/// replica server's queue): it can arrive late, after its engine gave up
/// on it or was superseded.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub struct Message {
    pub engine: u8,
    pub epoch: u8,
    /// Ghost: the sending engine's start serial.
    pub serial: u8,
    pub replica: u8,
    pub write: u8,
}

/// Ghost flags: what the properties look at that no component keeps.
#[derive(Clone, Copy, Debug, Default, Hash, PartialEq, Eq)]
pub struct Ghost {
    /// A replica took a write from an engine started before the one that
    /// last claimed it (property 1).
    pub stale_write_accepted: bool,
    /// An engine served from a replica outside the in-sync set (property 2).
    pub served_outside_set: bool,
    /// A rebuild installed a source of an older generation over a target
    /// of a newer one (property 4).
    pub rebuild_over_newer: bool,
    /// Writes acknowledged and then given up by the operator's salvage.
    pub given_up: Set,
    /// Sanity: an engine started while another one was still alive.
    pub takeover: bool,
    /// Sanity: a rebuild completed.
    pub rebuilt: bool,
    /// Sanity: an engine was fenced by a replica's refusal.
    pub fenced_by_refusal: bool,
    /// Sanity: the operator salvaged.
    pub salvaged: bool,
    /// The open risk ARCHITECTURE.md names: an engine whose epoch was
    /// superseded read from a replica the new engine never claimed.
    pub superseded_read: bool,
}

/// The whole model state.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct State {
    pub store: Store,
    pub nodes: [Node; ENGINES],
    pub engines: [Engine; ENGINES],
    pub replicas: [Replica; REPLICAS],
    /// In-flight writes, sorted (a set: order of arrival is chosen by the
    /// checker).
    pub network: Vec<Message>,
    /// The next write id.
    pub next_write: u8,
    /// Writes acknowledged to the client.
    pub acked: Set,
    pub ghost: Ghost,
}

impl State {
    /// A volume just created: three replicas, all members of generation 1,
    /// no engine yet.
    pub fn initial() -> State {
        State {
            store: Store {
                epoch: 0,
                takes: 0,
                last_taker: 0,
                members: Set::all(REPLICAS),
                generation: 1,
            },
            nodes: [Node {
                lease: Lease::Held,
                isolated: false,
                frozen: false,
            }; ENGINES],
            engines: [Engine::STOPPED; ENGINES],
            replicas: [Replica {
                up: true,
                epoch: 0,
                claimed_serial: 0,
                generation: 1,
                writes: Set::EMPTY,
            }; REPLICAS],
            network: Vec::new(),
            next_write: 0,
            acked: Set::EMPTY,
            ghost: Ghost::default(),
        }
    }

    fn isolated(&self, node: usize) -> bool {
        node < ENGINES && self.nodes[node].isolated
    }

    fn frozen(&self, node: usize) -> bool {
        node < ENGINES && self.nodes[node].frozen
    }

    /// Whether an agent on `node` reaches replica `r` (node 2 stands for
    /// the operator's agent or any healthy one).
    pub fn reaches(&self, node: usize, r: usize) -> bool {
        self.replicas[r].up
            && !self.frozen(r)
            && !self.frozen(node)
            && (node == r || (!self.isolated(node) && !self.isolated(r)))
    }

    /// Whether the agent on `node` can write the store now: it is neither
    /// frozen nor cut off and holds its lease.
    pub fn store_reachable(&self, node: usize) -> bool {
        node >= ENGINES
            || (self.nodes[node].lease == Lease::Held
                && !self.nodes[node].isolated
                && !self.nodes[node].frozen)
    }

    /// Acknowledged writes the operator has not given up.
    pub fn owed(&self) -> Set {
        self.acked.minus(self.ghost.given_up)
    }
}
