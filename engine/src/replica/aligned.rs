//! A heap buffer aligned to 4096 bytes, as O_DIRECT requires.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Memory alignment (and length granularity) O_DIRECT needs.
pub(crate) const ALIGN: usize = 4096;

/// Largest bounce buffer we allocate; bigger transfers go in chunks.
pub(super) const CHUNK: usize = 1 << 20;

/// Largest exact buffer ([`AlignedBuf::zeroed`], [`AlignedBuf::copy_of`]):
/// above any request the protocols carry (32 MiB); a longer one is cut.
pub(super) const MAX_LEN: usize = 64 << 20;

/// The allocation for `len` bytes: at least one block, whole blocks.
fn layout_for(len: usize) -> Layout {
    let cap = len.clamp(1, MAX_LEN).next_multiple_of(ALIGN);
    // cap <= MAX_LEN, far below isize::MAX, and ALIGN is a power of two,
    // so this layout is always valid.
    match Layout::from_size_align(cap, ALIGN) {
        Ok(l) => l,
        Err(_) => unreachable!("aligned buffer layout of {cap} bytes is valid"),
    }
}

/// An owned, zero-initialised buffer whose start is aligned to [`ALIGN`].
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes, capped at [`CHUNK`] (callers work in
    /// chunks), at least one block of capacity.
    pub(super) fn new(len: usize) -> AlignedBuf {
        Self::zeroed(len.min(CHUNK))
    }

    /// A zeroed buffer of exactly `len` bytes (at most [`MAX_LEN`]): where a
    /// read lands in one piece.
    pub(crate) fn zeroed(len: usize) -> AlignedBuf {
        let len = len.min(MAX_LEN);
        let layout = layout_for(len);
        // SAFETY: `layout` has a non-zero size (at least ALIGN).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len, layout }
    }

    /// A buffer of exactly `len` bytes (at most [`MAX_LEN`]) whose content
    /// is not initialised: the caller must fill every byte (a read into
    /// it, [`AlignedBuf::zero`]) before anything reads it.
    ///
    /// # Safety
    /// No byte may be read (through [`AlignedBuf::as_slice`], `AsRef`, or
    /// a `Bytes` made from it) before it was written.
    pub(super) unsafe fn uninit(len: usize) -> AlignedBuf {
        let len = len.min(MAX_LEN);
        let layout = layout_for(len);
        // SAFETY: `layout` has a non-zero size (at least ALIGN).
        let raw = unsafe { alloc::alloc(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, len, layout }
    }

    /// Writes zeros over `[start, end)` (clamped to the buffer), without
    /// reading it: how an uninitialised buffer's holes get their bytes.
    pub(super) fn zero(&mut self, start: usize, end: usize) {
        let end = end.min(self.len);
        if start >= end {
            return;
        }
        // SAFETY: `start < end <= len <= layout.size()`: the range lies in
        // the allocation `self` owns exclusively (`&mut self`).
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(start), 0, end - start) }
    }

    /// An aligned copy of `data` (at most [`MAX_LEN`] bytes): what an
    /// O_DIRECT write of unaligned memory needs. Only the tail past `data`
    /// up to the next block is zeroed.
    pub(super) fn copy_of(data: &[u8]) -> AlignedBuf {
        // Callers check the length; cutting here only keeps memory safe.
        let data = &data[..data.len().min(MAX_LEN)];
        let layout = layout_for(data.len());
        // SAFETY: `layout` has a non-zero size (at least ALIGN).
        let raw = unsafe { alloc::alloc(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        // SAFETY: the allocation holds `layout.size() >= data.len()` bytes,
        // is fresh (no overlap with `data`), and every byte of it is written
        // here before any is read: `data`, then zeros up to the end.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), ptr.as_ptr(), data.len());
            std::ptr::write_bytes(ptr.as_ptr().add(data.len()), 0, layout.size() - data.len());
        }
        AlignedBuf {
            ptr,
            len: data.len(),
            layout,
        }
    }

    /// The start of the buffer, for the kernel to read from or write to.
    pub(super) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The buffer's bytes.
    pub(super) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size() >= len` bytes owned by
        // `self`, borrowed immutably here, and initialised: zeroed or copied
        // at allocation, or (`uninit`) written in full by its caller first.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The buffer's bytes, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

// SAFETY: the buffer is plain owned heap memory (like a `Vec<u8>`); the
// raw pointer is never shared outside `&self`/`&mut self` borrows, except
// with the kernel by a ring operation that owns the buffer until it ends.
unsafe impl Send for AlignedBuf {}
// SAFETY: `&AlignedBuf` only gives out `&[u8]`.
unsafe impl Sync for AlignedBuf {}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated by `alloc` or `alloc_zeroed` with
        // exactly `layout` and is freed only here, once.
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
