//! The nemesis suite's history and checker: every write a client sent,
//! what the client was told, which writes a flush covered, and the rules a
//! volume's contents must satisfy given that history.
//!
//! Each write puts a unique 4 KiB block into one of [`SLOTS`] slots: a
//! header (magic, slot, writer, sequence number, seed) and filler derived
//! from them, closed by an FNV-1a hash. A block read back therefore names
//! the one write that produced it, or is all zeros (never written), or is
//! garbage (torn, misdirected or corrupted).

use std::collections::BTreeMap;

/// Bytes of one block (one write).
pub const BLOCK: usize = 4096;
/// Slots the writers choose from.
pub const SLOTS: u64 = 64;
const MAGIC: &[u8; 8] = b"VIGILNEM";

/// Offset of `slot` in a volume of `size` bytes: the slots are spread over
/// the whole volume, one every `size / SLOTS` bytes.
pub fn slot_offset(size: u64, slot: u64) -> u64 {
    slot * (size / SLOTS)
}

/// The block write `seq` of `writer` puts into `slot`.
pub fn block(seed: u64, slot: u64, writer: u32, seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    b[0..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&slot.to_le_bytes());
    b[16..20].copy_from_slice(&writer.to_le_bytes());
    b[20..28].copy_from_slice(&seq.to_le_bytes());
    b[28..36].copy_from_slice(&seed.to_le_bytes());
    // xorshift64 filler, seeded from the header: no two writes share it.
    let mut x = seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (slot << 48) | 1;
    for chunk in b[36..BLOCK - 8].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let h = fnv1a(&b[..BLOCK - 8]);
    b[BLOCK - 8..].copy_from_slice(&h.to_le_bytes());
    b
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in data {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What a block read back holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// All zeros: never written.
    Zero,
    /// Exactly the block of write `seq` to `slot`.
    Write { slot: u64, seq: u64 },
    /// Anything else: torn, corrupted, or from no write of this run.
    Garbage,
}

/// Decodes one block read back.
pub fn decode(seed: u64, b: &[u8]) -> Found {
    if b.iter().all(|&x| x == 0) {
        return Found::Zero;
    }
    if b.len() != BLOCK || &b[0..8] != MAGIC {
        return Found::Garbage;
    }
    let word = |r: std::ops::Range<usize>| {
        let mut a = [0u8; 8];
        a[..r.len()].copy_from_slice(&b[r]);
        u64::from_le_bytes(a)
    };
    let (slot, writer, seq) = (word(8..16), word(16..20) as u32, word(20..28));
    if block(seed, slot, writer, seq) == b {
        Found::Write { slot, seq }
    } else {
        Found::Garbage
    }
}

/// What the client was told about an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent, no answer yet.
    Pending,
    /// Acknowledged.
    Acked,
    /// The client got an error.
    Failed,
    /// No answer ever (the client was killed or timed out).
    Unknown,
}

/// Which engine a write was sent to, and so what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The volume's engine. A failed write may or may not have reached
    /// the replicas (e.g. its engine was killed mid-write): it may be
    /// read back, if nothing flushed is older than it.
    Current,
    /// An engine being detached: it fences (waits for requests in flight,
    /// flushes, refuses the rest) before it stops. An acknowledgement is
    /// fine; a failed write is undefined, as to the current engine: the
    /// 200-round run found one that landed (in flight when the detach
    /// began, answered with an error), which no rule of the issue forbids
    /// — it landed before any newer engine claimed the replicas, and
    /// rule 3 still catches one landing over a newer durable write. It is
    /// counted with the other failed writes read back.
    Detaching,
    /// An engine frozen before this write was sent, while a newer engine
    /// took the volume: the write must fail and must never be read back.
    Frozen,
}

/// One write of the history.
#[derive(Debug, Clone)]
pub struct Write {
    pub seq: u64,
    pub slot: u64,
    pub writer: u32,
    pub round: u32,
    pub target: Target,
    pub outcome: Outcome,
    /// A successful flush on the same connection was sent after its ack.
    pub flushed: bool,
}

/// Every operation of a run, in the order they were sent.
#[derive(Debug, Default)]
pub struct History {
    /// The round now running, recorded with each write.
    pub round: u32,
    next_seq: u64,
    writes: BTreeMap<u64, Write>,
    /// Flushes sent, acknowledged, failed.
    pub flushes: [u64; 3],
}

/// Counts of a history, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Writes answered (those in flight are not counted).
    pub acked: u64,
    pub failed: u64,
    pub unknown: u64,
    pub to_frozen: u64,
    pub flushes_acked: u64,
    pub flushes_failed: u64,
}

impl History {
    /// Records a write about to be sent; returns its sequence number.
    pub fn begin_write(&mut self, slot: u64, writer: u32, target: Target) -> u64 {
        self.next_seq += 1;
        let seq = self.next_seq;
        let round = self.round;
        self.writes.insert(
            seq,
            Write {
                seq,
                slot,
                writer,
                round,
                target,
                outcome: Outcome::Pending,
                flushed: false,
            },
        );
        seq
    }

    /// Records what the client was told about write `seq`.
    pub fn end_write(&mut self, seq: u64, outcome: Outcome) {
        if let Some(w) = self.writes.get_mut(&seq) {
            w.outcome = outcome;
        }
    }

    /// Writes of `writer` acknowledged and not yet covered by a flush: what
    /// a flush sent now covers.
    pub fn unflushed(&self, writer: u32) -> Vec<u64> {
        self.writes
            .values()
            .filter(|w| w.writer == writer && w.outcome == Outcome::Acked && !w.flushed)
            .map(|w| w.seq)
            .collect()
    }

    /// Records a flush's outcome; an acknowledged one makes `covered` durable.
    pub fn end_flush(&mut self, covered: &[u64], ok: bool) {
        self.flushes[0] += 1;
        if ok {
            self.flushes[1] += 1;
            for seq in covered {
                if let Some(w) = self.writes.get_mut(seq) {
                    w.flushed = true;
                }
            }
        } else {
            self.flushes[2] += 1;
        }
    }

    /// The counts for the report.
    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            flushes_acked: self.flushes[1],
            flushes_failed: self.flushes[2],
            ..Counts::default()
        };
        for w in self.writes.values() {
            match w.outcome {
                Outcome::Acked => c.acked += 1,
                Outcome::Failed => c.failed += 1,
                Outcome::Unknown => c.unknown += 1,
                Outcome::Pending => {}
            }
            if w.target == Target::Frozen {
                c.to_frozen += 1;
            }
        }
        c
    }

    /// Checks an image of the whole volume (`image.len()` is its size)
    /// against the history; returns the violations, each a sentence.
    ///
    /// Rules, per slot, where *durable* is the newest write to the slot that
    /// was acknowledged and then covered by an acknowledged flush:
    /// 1. the block is zeros or exactly one write's block, of this slot;
    /// 2. zeros only if no write to the slot is durable;
    /// 3. the write read back is not older than the durable one;
    /// 4. it is not a write sent to a frozen engine (see [`Target`]).
    ///
    /// And everywhere: bytes outside the slots are zeros (nothing writes
    /// there); every write sent to a frozen engine failed.
    pub fn check(&self, seed: u64, image: &[u8], what: &str) -> Vec<String> {
        let mut violations = Vec::new();
        let size = image.len() as u64;
        let mut durable: BTreeMap<u64, u64> = BTreeMap::new();
        for w in self.writes.values() {
            if w.outcome == Outcome::Acked && w.flushed {
                durable.insert(w.slot, w.seq);
            }
            if w.target == Target::Frozen && w.outcome == Outcome::Acked {
                violations.push(format!(
                    "write {} (slot {}, round {}) was sent to a frozen engine after a newer one took the volume, and acknowledged",
                    w.seq, w.slot, w.round
                ));
            }
        }
        for slot in 0..SLOTS {
            let off = slot_offset(size, slot) as usize;
            let found = decode(seed, &image[off..off + BLOCK]);
            let floor = durable.get(&slot).copied();
            match found {
                Found::Garbage => violations.push(format!(
                    "{what}: slot {slot} holds a block no write produced (torn or corrupted): {:02x?}...",
                    &image[off..off + 16]
                )),
                Found::Zero => {
                    if let Some(d) = floor {
                        violations.push(format!(
                            "{what}: slot {slot} reads zeros, but write {d} to it was acknowledged and flushed"
                        ));
                    }
                }
                Found::Write { slot: s, seq } => {
                    let Some(w) = self.writes.get(&seq).filter(|w| w.slot == slot && s == slot)
                    else {
                        violations.push(format!(
                            "{what}: slot {slot} holds write {seq} of slot {s}, which was never sent there"
                        ));
                        continue;
                    };
                    if let Some(d) = floor.filter(|&d| seq < d) {
                        violations.push(format!(
                            "{what}: slot {slot} reads write {seq} ({:?}, round {}), older than write {d}, acknowledged and flushed",
                            w.outcome, w.round
                        ));
                    }
                    if w.target == Target::Frozen {
                        violations.push(format!(
                            "{what}: slot {slot} reads write {seq} ({:?}, round {}), sent to a frozen engine: it must never land",
                            w.outcome, w.round
                        ));
                    }
                }
            }
        }
        let slot_starts: Vec<usize> = (0..SLOTS).map(|s| slot_offset(size, s) as usize).collect();
        for (i, chunk) in image.chunks(BLOCK).enumerate() {
            let off = i * BLOCK;
            if !slot_starts.contains(&off) && chunk.iter().any(|&b| b != 0) {
                violations.push(format!(
                    "{what}: bytes at offset {off}, outside every slot, are not zeros"
                ));
                break;
            }
        }
        violations
    }

    /// Failed or unanswered writes to the current engine that are read
    /// back in `image`: allowed (a failed write's blocks are undefined),
    /// counted for the report.
    pub fn indeterminate_read_back(&self, seed: u64, image: &[u8]) -> u64 {
        let size = image.len() as u64;
        (0..SLOTS)
            .filter(|&slot| {
                let off = slot_offset(size, slot) as usize;
                match decode(seed, &image[off..off + BLOCK]) {
                    Found::Write { seq, .. } => self
                        .writes
                        .get(&seq)
                        .is_some_and(|w| w.outcome != Outcome::Acked),
                    _ => false,
                }
            })
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 1 << 20;

    fn put(image: &mut [u8], seed: u64, slot: u64, writer: u32, seq: u64) {
        let off = slot_offset(image.len() as u64, slot) as usize;
        image[off..off + BLOCK].copy_from_slice(&block(seed, slot, writer, seq));
    }

    #[test]
    fn blocks_decode_to_their_write_and_nothing_else() {
        let b = block(7, 3, 1, 42);
        assert_eq!(decode(7, &b), Found::Write { slot: 3, seq: 42 });
        assert_eq!(decode(8, &b), Found::Garbage, "another run's seed");
        let mut torn = b.clone();
        torn[2048..].copy_from_slice(&block(7, 3, 1, 43)[2048..]);
        assert_eq!(decode(7, &torn), Found::Garbage);
        assert_eq!(decode(7, &[0u8; BLOCK]), Found::Zero);
    }

    #[test]
    fn a_lost_flushed_write_is_a_violation_an_unflushed_one_is_not() {
        let mut h = History::default();
        let a = h.begin_write(5, 1, Target::Current);
        h.end_write(a, Outcome::Acked);
        let covered = h.unflushed(1);
        h.end_flush(&covered, true);
        let b = h.begin_write(5, 1, Target::Current);
        h.end_write(b, Outcome::Acked);
        let mut image = vec![0u8; SIZE];
        assert_eq!(h.check(9, &image, "t").len(), 1, "zeros: a is lost");
        put(&mut image, 9, 5, 1, a);
        assert!(h.check(9, &image, "t").is_empty(), "b was never flushed");
        put(&mut image, 9, 5, 1, b);
        assert!(h.check(9, &image, "t").is_empty());
    }

    #[test]
    fn a_write_to_a_frozen_engine_must_fail_and_never_land() {
        let mut h = History::default();
        let a = h.begin_write(2, 1, Target::Frozen);
        h.end_write(a, Outcome::Failed);
        let mut image = vec![0u8; SIZE];
        assert!(h.check(9, &image, "t").is_empty());
        put(&mut image, 9, 2, 1, a);
        assert_eq!(h.check(9, &image, "t").len(), 1);
        h.end_write(a, Outcome::Acked);
        assert_eq!(h.check(9, &image, "t").len(), 2);
    }

    #[test]
    fn a_failed_write_to_the_current_engine_may_land_but_not_below_a_flush() {
        let mut h = History::default();
        let a = h.begin_write(2, 1, Target::Current);
        h.end_write(a, Outcome::Failed);
        let b = h.begin_write(2, 2, Target::Current);
        h.end_write(b, Outcome::Acked);
        let mut image = vec![0u8; SIZE];
        put(&mut image, 9, 2, 1, a);
        assert!(h.check(9, &image, "t").is_empty());
        assert_eq!(h.indeterminate_read_back(9, &image), 1);
        let covered = h.unflushed(2);
        h.end_flush(&covered, true);
        assert_eq!(h.check(9, &image, "t").len(), 1, "older than b, flushed");
    }

    #[test]
    fn bytes_outside_the_slots_are_a_violation() {
        let h = History::default();
        let mut image = vec![0u8; SIZE];
        image[BLOCK] = 1;
        assert_eq!(h.check(9, &image, "t").len(), 1);
    }
}
