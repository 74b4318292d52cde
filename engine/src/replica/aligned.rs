//! A zeroed heap buffer aligned to 4096 bytes, as O_DIRECT requires.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Memory alignment (and length granularity) O_DIRECT needs.
pub(super) const ALIGN: usize = 4096;

/// Largest bounce buffer we allocate; bigger transfers go in chunks.
pub(super) const CHUNK: usize = 1 << 20;

/// An owned, zero-initialised buffer whose start is aligned to [`ALIGN`].
pub(super) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes, capped at [`CHUNK`] (callers work in
    /// chunks), at least one block of capacity.
    pub(super) fn new(len: usize) -> AlignedBuf {
        let len = len.min(CHUNK);
        let cap = len.max(1).next_multiple_of(ALIGN);
        // cap <= CHUNK + ALIGN, far below isize::MAX, and ALIGN is a power
        // of two, so this layout is always valid.
        let layout = match Layout::from_size_align(cap, ALIGN) {
            Ok(l) => l,
            Err(_) => unreachable!("bounce buffer layout of {cap} bytes is valid"),
        };
        // SAFETY: `layout` has a non-zero size (cap >= ALIGN).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len, layout }
    }

    /// The buffer's bytes.
    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size() >= len` initialised (zeroed
        // at allocation) bytes owned by `self`, borrowed immutably here.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The buffer's bytes, mutably.
    pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated by `alloc_zeroed` with exactly `layout`
        // and is freed only here, once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Whether `buf` can be handed to O_DIRECT as is.
pub(super) fn is_aligned(buf: &[u8]) -> bool {
    (buf.as_ptr() as usize).is_multiple_of(ALIGN) && buf.len().is_multiple_of(ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let mut b = AlignedBuf::new(3 * ALIGN);
        assert!(is_aligned(b.as_slice()));
        assert_eq!(b.as_slice().len(), 3 * ALIGN);
        assert!(b.as_slice().iter().all(|&x| x == 0));
        b.as_mut_slice()[5] = 7;
        assert_eq!(b.as_slice()[5], 7);
        let big = AlignedBuf::new(10 * CHUNK);
        assert_eq!(big.as_slice().len(), CHUNK);
    }
}
