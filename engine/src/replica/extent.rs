//! The set of allocated byte ranges of one layer: merged, non-overlapping,
//! non-adjacent `[start, end)` ranges keyed by start. Memory grows with the
//! number of extents, not with the volume size.

use std::collections::BTreeMap;

/// Allocated ranges of a layer, in bytes (block-aligned by the callers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ExtentSet {
    map: BTreeMap<u64, u64>,
}

impl ExtentSet {
    /// An empty set.
    pub(super) fn new() -> ExtentSet {
        ExtentSet::default()
    }

    /// Marks `[start, end)` allocated, merging with touching ranges.
    pub(super) fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        if let Some((&ps, &pe)) = self.map.range(..=s).next_back()
            && pe >= s
        {
            s = ps;
            e = e.max(pe);
        }
        let swallowed: Vec<(u64, u64)> = self.map.range(s..=e).map(|(&a, &b)| (a, b)).collect();
        for (ks, ke) in swallowed {
            self.map.remove(&ks);
            e = e.max(ke);
        }
        self.map.insert(s, e);
    }

    /// Marks `[start, end)` unallocated, splitting ranges as needed.
    pub(super) fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        if let Some((&ps, &pe)) = self.map.range(..start).next_back()
            && pe > start
        {
            self.map.insert(ps, start);
            if pe > end {
                self.map.insert(end, pe);
            }
        }
        let inside: Vec<(u64, u64)> = self.map.range(start..end).map(|(&a, &b)| (a, b)).collect();
        for (ks, ke) in inside {
            self.map.remove(&ks);
            if ke > end {
                self.map.insert(end, ke);
            }
        }
    }

    /// The allocated parts of `[start, end)`, in order, clipped to it.
    pub(super) fn overlaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        if let Some((_, &pe)) = self.map.range(..start).next_back()
            && pe > start
        {
            out.push((start, pe.min(end)));
        }
        for (&ks, &ke) in self.map.range(start..end) {
            out.push((ks, ke.min(end)));
        }
        out
    }

    /// Whether any byte of `[start, end)` is allocated.
    #[cfg(test)]
    pub(super) fn intersects(&self, start: u64, end: u64) -> bool {
        !self.overlaps(start, end).is_empty()
    }

    /// The ranges of `self` not in `other`.
    pub(super) fn difference(&self, other: &ExtentSet) -> ExtentSet {
        let mut out = ExtentSet::new();
        for (s, e) in self.iter() {
            let mut cur = s;
            for (os, oe) in other.overlaps(s, e) {
                if os > cur {
                    out.insert(cur, os);
                }
                cur = oe;
            }
            if cur < e {
                out.insert(cur, e);
            }
        }
        out
    }

    /// Every range, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    /// Total allocated bytes.
    pub(super) fn bytes(&self) -> u64 {
        self.map.iter().map(|(&s, &e)| e - s).sum()
    }

    /// Number of ranges.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Splits `[start, end)` into the pieces covered by `set` (`true`) and the
/// gaps between them (`false`), in order.
pub(super) fn split_by(set: &ExtentSet, start: u64, end: u64) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::new();
    let mut cur = start;
    for (s, e) in set.overlaps(start, end) {
        if s > cur {
            out.push((cur, s, false));
        }
        out.push((s, e, true));
        cur = e;
    }
    if cur < end {
        out.push((cur, end, false));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_and_splits() {
        let mut s = ExtentSet::new();
        s.insert(0, 10);
        s.insert(20, 30);
        s.insert(10, 20);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(0, 30)]);
        s.remove(5, 25);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(0, 5), (25, 30)]);
        assert_eq!(s.overlaps(3, 27), vec![(3, 5), (25, 27)]);
        assert!(!s.intersects(5, 25));
        assert_eq!(s.bytes(), 10);
        s.remove(0, 100);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn difference_and_split() {
        let mut a = ExtentSet::new();
        a.insert(0, 100);
        let mut b = ExtentSet::new();
        b.insert(10, 20);
        b.insert(50, 200);
        let d = a.difference(&b);
        assert_eq!(d.iter().collect::<Vec<_>>(), vec![(0, 10), (20, 50)]);
        assert_eq!(
            split_by(&b, 0, 60),
            vec![
                (0, 10, false),
                (10, 20, true),
                (20, 50, false),
                (50, 60, true)
            ]
        );
    }

    proptest! {
        #[test]
        fn matches_a_bitmap(ops in prop::collection::vec((any::<bool>(), 0u64..64, 0u64..16), 0..40)) {
            let mut set = ExtentSet::new();
            let mut bits = [false; 80];
            for (ins, s, n) in ops {
                if ins { set.insert(s, s + n) } else { set.remove(s, s + n) }
                for b in &mut bits[s as usize..(s + n) as usize] { *b = ins; }
            }
            let mut prev_end = None;
            for (s, e) in set.iter() {
                prop_assert!(s < e);
                if let Some(p) = prev_end { prop_assert!(s > p, "ranges must not touch"); }
                prev_end = Some(e);
            }
            for (i, &b) in bits.iter().enumerate() {
                prop_assert_eq!(set.intersects(i as u64, i as u64 + 1), b);
            }
        }
    }
}
