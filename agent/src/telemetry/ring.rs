//! A bounded ring of text lines: the most recent ones, bounded both by
//! count and by total bytes, so memory stays fixed however chatty the
//! agent gets.

use std::collections::VecDeque;
use std::sync::Mutex;

/// The newest lines, at most `max_lines` of them and `max_bytes` in total.
#[derive(Debug)]
pub struct LineRing {
    inner: Mutex<Inner>,
    max_lines: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    lines: VecDeque<String>,
    bytes: usize,
}

impl LineRing {
    /// An empty ring; bounds of 0 are raised to 1.
    pub const fn new(max_lines: usize, max_bytes: usize) -> LineRing {
        LineRing {
            inner: Mutex::new(Inner {
                lines: VecDeque::new(),
                bytes: 0,
            }),
            max_lines: if max_lines == 0 { 1 } else { max_lines },
            max_bytes: if max_bytes == 0 { 1 } else { max_bytes },
        }
    }

    /// Appends a line, dropping the oldest ones to stay within bounds. A
    /// line longer than the byte bound is cut (at a character boundary).
    pub fn push(&self, mut line: String) {
        if line.len() > self.max_bytes {
            let mut cut = self.max_bytes;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        // A panic elsewhere while logging must not silence the ring.
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while !r.lines.is_empty()
            && (r.lines.len() >= self.max_lines || r.bytes + line.len() > self.max_bytes)
        {
            if let Some(old) = r.lines.pop_front() {
                r.bytes -= old.len();
            }
        }
        r.bytes += line.len();
        r.lines.push_back(line);
    }

    /// The newest `limit` lines, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<String> {
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let skip = r.lines.len().saturating_sub(limit);
        r.lines.iter().skip(skip).cloned().collect()
    }

    /// Lines and bytes held.
    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (r.lines.len(), r.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines_within_the_count() {
        let ring = LineRing::new(3, 1 << 20);
        for i in 0..10 {
            ring.push(format!("line {i}"));
        }
        assert_eq!(ring.recent(100), ["line 7", "line 8", "line 9"]);
        assert_eq!(ring.recent(2), ["line 8", "line 9"]);
        assert!(ring.recent(0).is_empty());
    }

    #[test]
    fn keeps_the_newest_lines_within_the_bytes() {
        let ring = LineRing::new(1000, 10);
        for s in ["aaaa", "bbbb", "cccc"] {
            ring.push(s.to_string());
        }
        assert_eq!(ring.recent(10), ["bbbb", "cccc"]);
        assert_eq!(ring.usage(), (2, 8));
    }

    #[test]
    fn cuts_an_oversized_line_at_a_character_boundary() {
        let ring = LineRing::new(10, 5);
        ring.push("ab".into());
        ring.push("ééé".into()); // 6 bytes
        assert_eq!(ring.recent(10), ["éé"]);
        assert_eq!(ring.usage(), (1, 4));
    }

    #[test]
    fn stays_bounded_under_load() {
        let ring = LineRing::new(5000, 2 << 20);
        let line = "x".repeat(1000);
        for _ in 0..20_000 {
            ring.push(line.clone());
        }
        let (n, bytes) = ring.usage();
        assert!(n <= 5000 && bytes <= 2 << 20, "{n} lines, {bytes} bytes");
    }
}
